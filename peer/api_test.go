package peer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

var testStatus = Status{
	Role:      "data",
	Version:   "2025.10.1",
	Healthy:   false,
	Services:  7,
	Unhealthy: []string{"sql-api"},
	Time:      time.Date(2025, 10, 1, 12, 0, 0, 0, time.UTC),
}

func testSecret(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func okStatus(context.Context) (*Status, error) {
	st := testStatus
	return &st, nil
}

// serve starts h on 127.0.0.1 and returns a client for it (other secret if
// given) and the address to ask.
func serve(t *testing.T, h http.Handler, secret []byte) (*Client, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return &Client{Secret: secret, Port: p}, host
}

// signedRequest builds a request to the handler without a body,
// authenticated for time at.
func signedRequest(secret []byte, method, path string, at time.Time) *http.Request {
	return signedBody(secret, method, path, at, nil)
}

// signedBody builds a request to the handler with body, authenticated for
// time at with a fresh nonce.
func signedBody(secret []byte, method, path string, at time.Time, body []byte) *http.Request {
	r := httptest.NewRequest(method, path, bytes.NewReader(body))
	signRequest(r, secret, at, freshNonce(), body)
	return r
}

func freshNonce() string {
	var n [nonceLen / 2]byte
	rand.Read(n[:])
	return hex.EncodeToString(n[:])
}

func TestStatusRoundTrip(t *testing.T) {
	t.Parallel()
	c, addr := serve(t, Handler(testSecret(1), okStatus), testSecret(1))
	got, err := c.Status(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if got.Role != testStatus.Role || got.Version != testStatus.Version || got.Healthy ||
		got.Services != 7 || len(got.Unhealthy) != 1 || got.Unhealthy[0] != "sql-api" || !got.Time.Equal(testStatus.Time) {
		t.Fatalf("got %+v, want %+v", got, testStatus)
	}
}

func TestStatusFillsTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	h := &handler{secret: testSecret(1), now: func() time.Time { return now },
		ops: Ops{Status: func(context.Context) (*Status, error) { return &Status{Role: "app"}, nil }}}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, signedRequest(testSecret(1), http.MethodGet, StatusPath, now))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"time":"2030-01-02T03:04:05Z"`) {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
}

func TestStatusWrongSecret(t *testing.T) {
	t.Parallel()
	c, addr := serve(t, Handler(testSecret(1), okStatus), testSecret(2))
	_, err := c.Status(context.Background(), addr)
	if !errors.Is(err, ErrNotPeer) {
		t.Fatalf("got %v, want ErrNotPeer", err)
	}
	if !strings.Contains(err.Error(), "installed with another join token") {
		t.Errorf("error %q lacks the hint", err)
	}
}

func TestHandlerRefuses(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	secret := testSecret(1)
	h := &handler{secret: secret, ops: Ops{Status: okStatus}, now: func() time.Time { return now }}

	tests := []struct {
		name string
		req  func() *http.Request
	}{
		{"no auth headers", func() *http.Request { return httptest.NewRequest(http.MethodGet, StatusPath, nil) }},
		{"stale by 3 minutes", func() *http.Request {
			return signedRequest(secret, http.MethodGet, StatusPath, now.Add(-3*time.Minute))
		}},
		{"3 minutes ahead", func() *http.Request {
			return signedRequest(secret, http.MethodGet, StatusPath, now.Add(3*time.Minute))
		}},
		{"other secret", func() *http.Request { return signedRequest(testSecret(2), http.MethodGet, StatusPath, now) }},
		{"signed for another path", func() *http.Request {
			r := signedRequest(secret, http.MethodGet, "/v1/other", now)
			r.URL.Path = StatusPath
			return r
		}},
		{"signed for another method", func() *http.Request {
			r := signedRequest(secret, http.MethodPost, StatusPath, now)
			r.Method = http.MethodGet
			return r
		}},
		{"body changed after signing", func() *http.Request {
			r := signedBody(secret, http.MethodGet, StatusPath, now, []byte("a"))
			r.Body = io.NopCloser(strings.NewReader("b"))
			return r
		}},
		{"time changed after signing", func() *http.Request {
			r := signedRequest(secret, http.MethodGet, StatusPath, now)
			r.Header.Set(headerTime, strconv.FormatInt(now.Unix()+1, 10))
			return r
		}},
		{"short nonce", func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, StatusPath, nil)
			signRequest(r, secret, now, "0f0f", nil)
			return r
		}},
		{"non-hex nonce", func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, StatusPath, nil)
			signRequest(r, secret, now, strings.Repeat("zz", 16), nil)
			return r
		}},
		{"unauthenticated unknown path", func() *http.Request { return httptest.NewRequest(http.MethodGet, "/v1/other", nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, tt.req())
			if w.Code != http.StatusUnauthorized || w.Body.String() != "unauthorized\n" {
				t.Fatalf("got %d %q, want 401 \"unauthorized\\n\"", w.Code, w.Body)
			}
			if w.Header().Get(headerMAC) != "" {
				t.Error("a refusal carries a MAC")
			}
		})
	}
}

func TestHandlerShortSecretRefusesAll(t *testing.T) {
	t.Parallel()
	h := Handler(nil, okStatus)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, signedRequest(nil, http.MethodGet, StatusPath, time.Now()))
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("got %d, want 401", w.Code)
	}
}

func TestHandlerRoutes(t *testing.T) {
	t.Parallel()
	now := time.Now()
	secret := testSecret(1)
	h := &handler{secret: secret, ops: Ops{Status: okStatus}, now: func() time.Time { return now }}
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, StatusPath, http.StatusOK},
		{http.MethodGet, "/v1/other", http.StatusNotFound},
		{http.MethodPost, StatusPath, http.StatusMethodNotAllowed},
		{http.MethodHead, StatusPath, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, signedRequest(secret, tt.method, tt.path, now.Add(-time.Minute)))
		if w.Code != tt.want {
			t.Errorf("%s %s: got %d, want %d", tt.method, tt.path, w.Code, tt.want)
		}
		if w.Header().Get(headerMAC) == "" {
			t.Errorf("%s %s: authenticated answer without MAC", tt.method, tt.path)
		}
	}
}

func TestStatusTamperedResponse(t *testing.T) {
	t.Parallel()
	secret := testSecret(1)
	real := Handler(secret, okStatus)
	tests := []struct {
		name   string
		tamper func(h http.Header, body []byte) []byte
	}{
		{"version flipped after signing", func(_ http.Header, b []byte) []byte {
			return bytes.Replace(b, []byte(testStatus.Version), []byte("2099.1.1"), 1)
		}},
		{"MAC removed", func(h http.Header, b []byte) []byte { h.Del(headerMAC); return b }},
		{"MAC not hex", func(h http.Header, b []byte) []byte { h.Set(headerMAC, "zz"); return b }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A man in the middle: passes the request on, rewrites the
			// answer.
			proxy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rec := httptest.NewRecorder()
				real.ServeHTTP(rec, r)
				body := tt.tamper(rec.Header(), rec.Body.Bytes())
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.WriteHeader(rec.Code)
				w.Write(body)
			})
			c, addr := serve(t, proxy, secret)
			_, err := c.Status(context.Background(), addr)
			if !errors.Is(err, ErrNotPeer) {
				t.Fatalf("got %v, want ErrNotPeer", err)
			}
		})
	}
}

func TestStatusReplayedResponse(t *testing.T) {
	t.Parallel()
	// An answer recorded for one request, with its valid MAC, served for
	// another: the nonce differs, so it must be refused.
	secret := testSecret(1)
	rec := httptest.NewRecorder()
	Handler(secret, okStatus).ServeHTTP(rec, signedRequest(secret, http.MethodGet, StatusPath, time.Now()))
	if rec.Code != http.StatusOK {
		t.Fatalf("recording: %d", rec.Code)
	}
	replay := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(headerMAC, rec.Header().Get(headerMAC))
		w.Write(rec.Body.Bytes())
	})
	c, addr := serve(t, replay, secret)
	if _, err := c.Status(context.Background(), addr); !errors.Is(err, ErrNotPeer) {
		t.Fatalf("got %v, want ErrNotPeer", err)
	}
}

// freePort is a port that was just free: nothing listens on it.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestStatusUnreachable(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	c := &Client{Secret: testSecret(1), Port: port}
	_, err := c.Status(context.Background(), "127.0.0.1")
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
	if want := "node at 127.0.0.1:" + strconv.Itoa(port) + " is unreachable: "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
}

func TestStatusTimeoutIsUnreachable(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	slow := func(ctx context.Context) (*Status, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return okStatus(ctx)
	}
	c, addr := serve(t, Handler(testSecret(1), slow), testSecret(1))
	defer close(release)
	c.HTTP = &http.Client{Timeout: 100 * time.Millisecond}
	if _, err := c.Status(context.Background(), addr); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
}

func TestStatusCancelledIsNotUnreachable(t *testing.T) {
	t.Parallel()
	c, addr := serve(t, Handler(testSecret(1), okStatus), testSecret(1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Status(ctx, addr)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnreachable) {
		t.Fatalf("got %v, want context.Canceled only", err)
	}
}

func TestStatusFuncError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		err     error
		want    string
		maxBody int
	}{
		{"message passed on", errors.New("docker engine is not running"), "docker engine is not running", 400},
		{"long message capped", errors.New(strings.Repeat("é", 1000)), "éé…", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fail := func(context.Context) (*Status, error) { return nil, tt.err }
			c, addr := serve(t, Handler(testSecret(1), fail), testSecret(1))
			_, err := c.Status(context.Background(), addr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if errors.Is(err, ErrNotPeer) || errors.Is(err, ErrUnreachable) {
				t.Errorf("a failing peer is reported as %v", err)
			}
			if len(err.Error()) > tt.maxBody {
				t.Errorf("error is %d bytes, more than %d", len(err.Error()), tt.maxBody)
			}
		})
	}
}

func TestStatusBadJSON(t *testing.T) {
	t.Parallel()
	secret := testSecret(1)
	// A node holding the secret that answers garbage, properly signed.
	bad := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := []byte("{not json")
		w.Header().Set(headerMAC, hexMAC(secret, r.Header.Get(headerNonce), body))
		w.Write(body)
	})
	c, addr := serve(t, bad, secret)
	_, err := c.Status(context.Background(), addr)
	if err == nil || !strings.Contains(err.Error(), "decoding its answer") || errors.Is(err, ErrNotPeer) {
		t.Fatalf("got %v, want a decoding error", err)
	}
}

func TestStatusOversizedAnswer(t *testing.T) {
	t.Parallel()
	huge := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, io.LimitReader(zeros{}, 2<<20))
	})
	c, addr := serve(t, huge, testSecret(1))
	if _, err := c.Status(context.Background(), addr); !errors.Is(err, ErrNotPeer) {
		t.Fatalf("got %v, want ErrNotPeer", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func hexMAC(secret []byte, nonce string, body []byte) string {
	return hex.EncodeToString(responseMAC(secret, nonce, body))
}

func TestClientAddress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr string
		port int
		want string
	}{
		{"10.0.0.2", 0, "10.0.0.2:9710"},
		{"::1", 0, "[::1]:9710"},
		{"[fd00::2]", 0, "[fd00::2]:9710"},
		{"10.0.0.2", 19710, "10.0.0.2:19710"},
	}
	for _, tt := range tests {
		got, err := (&Client{Port: tt.port}).hostport(tt.addr)
		if err != nil || got != tt.want {
			t.Errorf("hostport(%q) = %q, %v; want %q", tt.addr, got, err, tt.want)
		}
	}
	for _, bad := range []struct {
		addr string
		port int
	}{{"", 0}, {"[]", 0}, {"10.0.0.2", 70000}, {"10.0.0.2", -1}} {
		if _, err := (&Client{Secret: testSecret(1), Port: bad.port}).Status(context.Background(), bad.addr); err == nil {
			t.Errorf("Status(%q) with port %d succeeded", bad.addr, bad.port)
		}
	}
}

func TestClientWithoutSecret(t *testing.T) {
	t.Parallel()
	_, err := (&Client{}).Status(context.Background(), "127.0.0.1")
	if err == nil || !strings.Contains(err.Error(), "no join secret") {
		t.Fatalf("got %v", err)
	}
}

func TestStatusIPv6Loopback(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: Handler(testSecret(1), okStatus)}}
	srv.Start()
	defer srv.Close()
	c := &Client{Secret: testSecret(1), Port: l.Addr().(*net.TCPAddr).Port}
	if _, err := c.Status(context.Background(), "::1"); err != nil {
		t.Fatal(err)
	}
}
