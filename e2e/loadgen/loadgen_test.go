package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// run loads for d and returns the result.
func run(t *testing.T, opts Options, d time.Duration) Result {
	t.Helper()
	l := Start(context.Background(), opts)
	time.Sleep(d)
	res := l.Stop()
	t.Logf("%s over %s", res, res.Duration)
	for _, s := range res.Samples {
		t.Logf("  %s", s)
	}
	return res
}

// within fails unless lo <= n <= hi: timings on a shared machine are
// loose, so bounds are too.
func within(t *testing.T, what string, n, lo, hi int) {
	t.Helper()
	if n < lo || n > hi {
		t.Errorf("%s = %d, want %d..%d", what, n, lo, hi)
	}
}

func TestHealthyServer(t *testing.T) {
	var hosts sync.Map
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts.Store(r.Host, true)
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
			return
		}
		io.WriteString(w, "ok\n")
	}))
	defer srv.Close()
	res := run(t, Options{
		BaseURL: srv.URL, Host: "carto.test", TLS: &tls.Config{InsecureSkipVerify: true},
		Paths: []string{"/", "/api/x", "/moved"}, Rate: 200,
	}, time.Second)
	if res.Failed != 0 || len(res.Kinds) != 0 || len(res.Samples) != 0 {
		t.Errorf("failures against a healthy server: %s", res)
	}
	within(t, "sent in 1 s at 200/s", res.Sent, 120, 230)
	if res.P99 <= 0 || res.MaxLatency < res.P99 {
		t.Errorf("latencies: max %s p99 %s", res.MaxLatency, res.P99)
	}
	hosts.Range(func(k, _ any) bool {
		if k != "carto.test" {
			t.Errorf("Host header %q, want carto.test", k)
		}
		return true
	})
	if want := "0/"; !strings.HasPrefix(res.String(), want) || strings.Contains(res.String(), ": ") {
		t.Errorf("String() = %q", res.String())
	}
}

func TestFailuresByKindAndPath(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/bad":
			http.Error(w, "bad gateway", http.StatusBadGateway)
		case "/close":
			// A router that goes away mid-request: the connection
			// closes with no answer.
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		default:
			io.WriteString(w, "ok\n")
		}
	}))
	defer srv.Close()
	res := run(t, Options{BaseURL: srv.URL, Paths: []string{"/ok", "/bad", "/close"}, Rate: 150}, time.Second)
	within(t, "sent", res.Sent, 90, 180)
	if res.PathFailures["/ok"] != 0 {
		t.Errorf("/ok failed %d times", res.PathFailures["/ok"])
	}
	if res.Kinds["502"] != res.PathFailures["/bad"] || res.Kinds[KindEOF] != res.PathFailures["/close"] {
		t.Errorf("kinds %v do not match paths %v", res.Kinds, res.PathFailures)
	}
	within(t, "502s", res.Kinds["502"], res.Sent/3-2, res.Sent/3+2)
	within(t, "EOFs", res.Kinds[KindEOF], res.Sent/3-2, res.Sent/3+2)
	within(t, "failed", res.Failed, res.Kinds["502"]+res.Kinds[KindEOF], res.Kinds["502"]+res.Kinds[KindEOF])
	within(t, "samples", len(res.Samples), maxSamples, maxSamples)
	for _, s := range res.Samples {
		if !(s.Path == "/bad" && s.Kind == "502") && !(s.Path == "/close" && s.Kind == KindEOF) {
			t.Errorf("sample %s", s)
		}
	}
	if s := res.String(); !strings.Contains(s, "502 x") || !strings.Contains(s, "EOF x") {
		t.Errorf("String() = %q lacks the kinds", s)
	}
}

func TestRefusedAndTimedOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	res := run(t, Options{BaseURL: closed, Rate: 100}, 300*time.Millisecond)
	if res.Sent == 0 || res.Kinds[KindRefused] != res.Sent {
		t.Errorf("against a closed port: %s", res)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers never
	}))
	defer srv.Close()
	res = run(t, Options{BaseURL: srv.URL, Rate: 50, Timeout: 100 * time.Millisecond}, 300*time.Millisecond)
	if res.Sent == 0 || res.Kinds[KindTimeout] != res.Sent {
		t.Errorf("against a server that never answers: %s", res)
	}
	if res.MaxLatency < 100*time.Millisecond {
		t.Errorf("max latency %s, below the timeout", res.MaxLatency)
	}
	// A request that hung says how far it got: sent, never answered.
	if d := res.Samples[0].Detail; !strings.Contains(d, "request sent") || strings.Contains(d, "first byte") || !strings.Contains(d, "connection from 127.0.0.1:") {
		t.Errorf("a timed-out request's detail: %q", d)
	}
	if d := fmt.Sprint(run(t, Options{BaseURL: closed, Rate: 100}, 100*time.Millisecond).Samples[0]); !strings.Contains(d, "connect to "+strings.TrimPrefix(closed, "http://")) || strings.Contains(d, "request sent") {
		t.Errorf("a refused request's detail: %q", d)
	}
}

func TestOverloadedIsCountedNotQueued(t *testing.T) {
	var now, peak atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := now.Add(1)
		defer now.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(200 * time.Millisecond)
	}))
	defer srv.Close()
	res := run(t, Options{BaseURL: srv.URL, Rate: 100, MaxInFlight: 2}, 500*time.Millisecond)
	if peak.Load() > 2 {
		t.Errorf("%d requests in flight, cap 2", peak.Load())
	}
	within(t, "overloaded", res.Kinds[KindOverloaded], res.Sent-10, res.Sent-2)
	if res.Failed != res.Kinds[KindOverloaded] {
		t.Errorf("failures besides overloaded: %s", res)
	}
}

func TestStopsByItselfAtMaxDuration(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	l := Start(context.Background(), Options{BaseURL: srv.URL, Rate: 100, MaxDuration: 300 * time.Millisecond})
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("still sending 5 s after a MaxDuration of 300 ms")
	}
	res := l.Stop()
	if !res.StoppedAtLimit || res.Duration < 300*time.Millisecond || res.Duration > time.Second {
		t.Errorf("stopped at limit %v after %s", res.StoppedAtLimit, res.Duration)
	}
	within(t, "sent in 300 ms at 100/s", res.Sent, 15, 40)
	if again := l.Stop(); again.Sent != res.Sent {
		t.Errorf("a second Stop says %d sent, the first %d", again.Sent, res.Sent)
	}
}

// TestHalfTheRequestsKeepTheirConnection tells connections apart by the
// client's port the server sees.
func TestHalfTheRequestsKeepTheirConnection(t *testing.T) {
	var mu sync.Mutex
	perPort := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, port, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		perPort[port]++
		mu.Unlock()
	}))
	defer srv.Close()
	res := run(t, Options{BaseURL: srv.URL, Paths: []string{"/a", "/b", "/c"}, Rate: 200}, time.Second)
	if res.Failed != 0 {
		t.Fatalf("failures: %s", res)
	}
	single, reused, onReused := 0, 0, 0
	for _, n := range perPort {
		if n == 1 {
			single++
		} else {
			reused++
			onReused += n
		}
	}
	t.Logf("%d requests: %d connections used once, %d reused carrying %d requests", res.Sent, single, reused, onReused)
	within(t, "connections used once", single, res.Sent/2-4, res.Sent/2+4)
	within(t, "kept-alive connections", reused, 1, 8)
	within(t, "requests on kept-alive connections", onReused, res.Sent/2-4, res.Sent/2+4)
}

func TestClassify(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("get: %w", context.DeadlineExceeded):                        KindTimeout,
		fmt.Errorf("get: %w", context.Canceled):                                KindCanceled,
		&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}:                    KindRefused,
		&net.OpError{Op: "read", Err: syscall.ECONNRESET}:                      KindReset,
		fmt.Errorf("get: %w", io.ErrUnexpectedEOF):                             KindEOF,
		&net.OpError{Op: "remote error", Err: tls.AlertError(40)}:              KindTLS,
		errors.New("tls: failed to verify certificate"):                        KindTLS,
		&net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}:                    KindUnreach,
		errors.New("something else"):                                           KindOther,
		fmt.Errorf("write: %w", &net.OpError{Op: "write", Err: syscall.EPIPE}): KindBrokenPipe,
	} {
		if got := Classify(err); got != want {
			t.Errorf("Classify(%v) = %q, want %q", err, got, want)
		}
	}
}
