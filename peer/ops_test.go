package peer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a node's ops that record what they were asked.
type recorder struct {
	mu       sync.Mutex
	backups  []BackupRequest
	restores []RestoreRequest
	err      error         // what the ops fail with; nil: they succeed
	delay    time.Duration // how long an op runs
	deadline bool          // whether an op's ctx had a deadline
}

func (rec *recorder) ops() Ops {
	return Ops{Status: okStatus, Backup: rec.backup, Restore: rec.restore}
}

func (rec *recorder) run(ctx context.Context) error {
	_, hasDeadline := ctx.Deadline()
	rec.mu.Lock()
	rec.deadline = rec.deadline || hasDeadline
	rec.mu.Unlock()
	select {
	case <-time.After(rec.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return rec.err
}

func (rec *recorder) backup(ctx context.Context, r BackupRequest) (*Backup, error) {
	rec.mu.Lock()
	rec.backups = append(rec.backups, r)
	rec.mu.Unlock()
	if err := rec.run(ctx); err != nil {
		return nil, err
	}
	return &Backup{Name: "pre-upgrade-" + r.To, Bytes: 12345}, nil
}

func (rec *recorder) restore(ctx context.Context, r RestoreRequest) error {
	rec.mu.Lock()
	rec.restores = append(rec.restores, r)
	rec.mu.Unlock()
	return rec.run(ctx)
}

func (rec *recorder) calls() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.backups) + len(rec.restores)
}

func TestBackupRoundTrip(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	c, addr := serve(t, Serve(testSecret(1), rec.ops()), testSecret(1))
	req := BackupRequest{From: "2025.10.1", To: "2025.11.1"}
	got, err := c.Backup(context.Background(), addr, req)
	if err != nil {
		t.Fatal(err)
	}
	if *got != (Backup{Name: "pre-upgrade-2025.11.1", Bytes: 12345}) {
		t.Errorf("got %+v", got)
	}
	if len(rec.backups) != 1 || rec.backups[0] != req {
		t.Errorf("the node was asked %+v, want [%+v]", rec.backups, req)
	}
	// The handler imposes no deadline of its own on a backup: a dump may
	// take minutes.
	if rec.deadline {
		t.Error("the backup op's ctx has a deadline")
	}
}

func TestRestoreRoundTrip(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	c, addr := serve(t, Serve(testSecret(1), rec.ops()), testSecret(1))
	req := RestoreRequest{Name: "pre-upgrade-2025.11.1"}
	if err := c.Restore(context.Background(), addr, req); err != nil {
		t.Fatal(err)
	}
	if len(rec.restores) != 1 || rec.restores[0] != req {
		t.Errorf("the node was asked %+v, want [%+v]", rec.restores, req)
	}
	if rec.deadline {
		t.Error("the restore op's ctx has a deadline")
	}
}

// A rehearsal's findings come back as the node wrote them; findings that
// are not a JSON object are an error, not an answer.
func TestRehearseRoundTrip(t *testing.T) {
	t.Parallel()
	var asked []RehearseRequest
	found := json.RawMessage(`{"from":"2025.10.1","ok":true}`)
	ops := Ops{Rehearse: func(ctx context.Context, r RehearseRequest) (json.RawMessage, error) {
		asked = append(asked, r)
		return found, nil
	}}
	c, addr := serve(t, Serve(testSecret(1), ops), testSecret(1))
	req := RehearseRequest{From: "2025.10.1", To: "2025.11.1"}
	got, err := c.Rehearse(context.Background(), addr, req)
	if err != nil || string(got) != string(found) || len(asked) != 1 || asked[0] != req {
		t.Fatalf("got %s %v; the node was asked %+v", got, err, asked)
	}
	found = json.RawMessage(`"rehearsed"`)
	if _, err := c.Rehearse(context.Background(), addr, req); err == nil || !strings.Contains(err.Error(), "not a JSON object") {
		t.Errorf("findings that are not an object: %v", err)
	}
}

func TestServeStatus(t *testing.T) {
	t.Parallel()
	c, addr := serve(t, Serve(testSecret(1), (&recorder{}).ops()), testSecret(1))
	got, err := c.Status(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if got.Role != testStatus.Role || got.Version != testStatus.Version {
		t.Errorf("got %+v", got)
	}
}

func TestOpsTamperedRequestBody(t *testing.T) {
	t.Parallel()
	secret := testSecret(1)
	rec := &recorder{}
	real := Serve(secret, rec.ops())
	// A man in the middle: rewrites the body, keeps the headers (the MAC
	// among them).
	proxy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
			return
		}
		body = bytes.ReplaceAll(body, []byte("2025.11.1"), []byte("2099.99.9"))
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		real.ServeHTTP(w, r)
	})
	c, addr := serve(t, proxy, secret)

	_, err := c.Backup(context.Background(), addr, BackupRequest{From: "2025.10.1", To: "2025.11.1"})
	if !errors.Is(err, ErrNotPeer) || !strings.Contains(err.Error(), "it refused our request") {
		t.Errorf("backup: got %v, want ErrNotPeer for a refusal", err)
	}
	err = c.Restore(context.Background(), addr, RestoreRequest{Name: "pre-upgrade-2025.11.1"})
	if !errors.Is(err, ErrNotPeer) || !strings.Contains(err.Error(), "it refused our request") {
		t.Errorf("restore: got %v, want ErrNotPeer for a refusal", err)
	}
	if n := rec.calls(); n != 0 {
		t.Errorf("the node ran %d ops for altered requests", n)
	}
}

func TestRestoreTamperedStatusCode(t *testing.T) {
	t.Parallel()
	// The response MAC does not cover the status code: a man in the
	// middle turning a failed restore's 500 into a 200 must not make it
	// a success.
	secret := testSecret(1)
	real := Serve(secret, (&recorder{err: errors.New("no backup named x")}).ops())
	proxy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		real.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(http.StatusOK)
		w.Write(rec.Body.Bytes())
	})
	c, addr := serve(t, proxy, secret)
	err := c.Restore(context.Background(), addr, RestoreRequest{Name: "x"})
	if err == nil || !strings.Contains(err.Error(), "decoding its answer") {
		t.Fatalf("got %v, want a decoding error", err)
	}
}

func TestOpsError(t *testing.T) {
	t.Parallel()
	long := errors.New(strings.Repeat("é", 1000))
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"message passed on", errors.New("pg_dump: disk full"), "pg_dump: disk full"},
		{"long message capped", long, "éé…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, addr := serve(t, Serve(testSecret(1), (&recorder{err: tt.err}).ops()), testSecret(1))
			_, berr := c.Backup(context.Background(), addr, BackupRequest{From: "1", To: "2"})
			rerr := c.Restore(context.Background(), addr, RestoreRequest{Name: "b"})
			for _, err := range []error{berr, rerr} {
				if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "asking "+addr+":") {
					t.Fatalf("got %v, want an error naming the node and containing %q", err, tt.want)
				}
				if !strings.Contains(err.Error(), "500 Internal Server Error") {
					t.Errorf("error %q does not give the node's answer", err)
				}
				if errors.Is(err, ErrNotPeer) || errors.Is(err, ErrUnreachable) {
					t.Errorf("a failing op is reported as %v", err)
				}
				if len(err.Error()) > 500 {
					t.Errorf("error is %d bytes", len(err.Error()))
				}
			}
		})
	}
}

func TestOpsWrongSecret(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	c, addr := serve(t, Serve(testSecret(1), rec.ops()), testSecret(2))
	if _, err := c.Backup(context.Background(), addr, BackupRequest{From: "1", To: "2"}); !errors.Is(err, ErrNotPeer) {
		t.Errorf("backup: got %v, want ErrNotPeer", err)
	}
	if err := c.Restore(context.Background(), addr, RestoreRequest{Name: "b"}); !errors.Is(err, ErrNotPeer) {
		t.Errorf("restore: got %v, want ErrNotPeer", err)
	}
	if n := rec.calls(); n != 0 {
		t.Errorf("the node ran %d ops for another layout", n)
	}
}

func TestOpsUnreachable(t *testing.T) {
	t.Parallel()
	c := &Client{Secret: testSecret(1), Port: freePort(t)}
	if _, err := c.Backup(context.Background(), "127.0.0.1", BackupRequest{}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("backup: got %v, want ErrUnreachable", err)
	}
	if err := c.Restore(context.Background(), "127.0.0.1", RestoreRequest{Name: "b"}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("restore: got %v, want ErrUnreachable", err)
	}
}

func TestOpsClientHasNoTimeout(t *testing.T) {
	t.Parallel()
	// http.Client.Timeout would cut a dump whatever the caller's ctx
	// allows.
	if defaultOpsHTTP.Timeout != 0 {
		t.Errorf("the default client for ops has a %v timeout", defaultOpsHTTP.Timeout)
	}
	if (&Client{}).opsHTTP() != defaultOpsHTTP {
		t.Error("a Client without OpsHTTP does not use the default client for ops")
	}
	if defaultOpsHTTP.Transport != transport || defaultOpsHTTP.CheckRedirect == nil {
		t.Error("the default client for ops does not share the peers' transport or follows redirects")
	}

	// An op slower than the status client's timeout completes: ops do not
	// go through it.
	rec := &recorder{delay: 300 * time.Millisecond}
	c, addr := serve(t, Serve(testSecret(1), rec.ops()), testSecret(1))
	c.HTTP = &http.Client{Timeout: 100 * time.Millisecond}
	if _, err := c.Backup(context.Background(), addr, BackupRequest{From: "1", To: "2"}); err != nil {
		t.Fatalf("a backup slower than the status timeout: %v", err)
	}
	if _, err := c.Status(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
}

func TestOpsCallerDeadline(t *testing.T) {
	t.Parallel()
	// The caller's ctx is what bounds an op; when it ends, the node's op
	// is cancelled too.
	rec := &recorder{delay: time.Minute}
	c, addr := serve(t, Serve(testSecret(1), rec.ops()), testSecret(1))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Backup(ctx, addr, BackupRequest{From: "1", To: "2"})
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrUnreachable for the deadline", err)
	}
}

func TestOpsBadRequest(t *testing.T) {
	t.Parallel()
	now := time.Now()
	secret := testSecret(1)
	rec := &recorder{}
	h := &handler{secret: secret, ops: rec.ops(), now: func() time.Time { return now }}
	tests := []struct {
		path, body string
	}{
		{BackupPath, ""},
		{BackupPath, "{not json"},
		{BackupPath, `{"from":"1","to":2}`},
		{BackupPath, `{"from":"1","to":"2","wipe":true}`},
		{BackupPath, `{"from":"1","to":"2"}{}`},
		{RestorePath, `["b"]`},
		{RestorePath, `{"name":"b"} x`},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, signedBody(secret, http.MethodPost, tt.path, now, []byte(tt.body)))
		if w.Code != http.StatusBadRequest || !strings.HasPrefix(w.Body.String(), "bad request: ") {
			t.Errorf("%s %q: got %d %q, want 400", tt.path, tt.body, w.Code, w.Body)
		}
		if w.Header().Get(headerMAC) == "" {
			t.Errorf("%s %q: a 400 to a peer is not signed", tt.path, tt.body)
		}
	}
	if n := rec.calls(); n != 0 {
		t.Errorf("the node ran %d ops for malformed requests", n)
	}
}

func TestOpsRoutes(t *testing.T) {
	t.Parallel()
	now := time.Now()
	secret := testSecret(1)
	all := (&recorder{}).ops()
	statusOnly := Ops{Status: okStatus}
	tests := []struct {
		ops          Ops
		method, path string
		body         string
		want         int
		allow        string
	}{
		{all, http.MethodPost, BackupPath, `{"from":"1","to":"2"}`, http.StatusOK, ""},
		{all, http.MethodPost, RestorePath, `{"name":"b"}`, http.StatusOK, ""},
		{all, http.MethodGet, BackupPath, "", http.StatusMethodNotAllowed, http.MethodPost},
		{all, http.MethodPut, RestorePath, `{"name":"b"}`, http.StatusMethodNotAllowed, http.MethodPost},
		{all, http.MethodPost, StatusPath, "", http.StatusMethodNotAllowed, http.MethodGet},
		{statusOnly, http.MethodPost, BackupPath, `{"from":"1","to":"2"}`, http.StatusNotFound, ""},
		{statusOnly, http.MethodGet, RestorePath, "", http.StatusNotFound, ""},
		{Ops{Backup: all.Backup}, http.MethodGet, StatusPath, "", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		h := &handler{secret: secret, ops: tt.ops, now: func() time.Time { return now }}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, signedBody(secret, tt.method, tt.path, now, []byte(tt.body)))
		if w.Code != tt.want || w.Header().Get("Allow") != tt.allow {
			t.Errorf("%s %s: got %d Allow %q, want %d Allow %q", tt.method, tt.path, w.Code, w.Header().Get("Allow"), tt.want, tt.allow)
		}
		if w.Header().Get(headerMAC) == "" {
			t.Errorf("%s %s: authenticated answer without MAC", tt.method, tt.path)
		}
		// Unauthenticated, every path looks the same.
		w = httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
		if w.Code != http.StatusUnauthorized {
			t.Errorf("%s %s unauthenticated: got %d, want 401", tt.method, tt.path, w.Code)
		}
	}
}

func TestOpsReplayRefused(t *testing.T) {
	t.Parallel()
	now := time.Now()
	secret := testSecret(1)
	rec := &recorder{}
	h := &handler{secret: secret, ops: rec.ops(), now: func() time.Time { return now }}
	body := []byte(`{"name":"b"}`)
	first := signedBody(secret, http.MethodPost, RestorePath, now, body)
	replay := httptest.NewRequest(http.MethodPost, RestorePath, bytes.NewReader(body))
	replay.Header = first.Header.Clone()

	w := httptest.NewRecorder()
	h.ServeHTTP(w, first)
	if w.Code != http.StatusOK {
		t.Fatalf("first: got %d %q", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, replay)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("replay: got %d, want 401", w.Code)
	}
	if n := rec.calls(); n != 1 {
		t.Errorf("the node restored %d times, want 1", n)
	}

	// A replayed status is harmless and still answered.
	get := signedRequest(secret, http.MethodGet, StatusPath, now)
	for i := range 2 {
		w = httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, StatusPath, nil)
		r.Header = get.Header.Clone()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Errorf("status #%d: got %d", i+1, w.Code)
		}
	}
}

func TestNoncesForgetOutsideWindow(t *testing.T) {
	t.Parallel()
	var n nonces
	if !n.add("a", 100, 0) || n.add("a", 100, 50) {
		t.Fatal("a nonce is not remembered within its window")
	}
	if !n.add("b", 300, 101) {
		t.Fatal("b refused")
	}
	if len(n.seen) != 1 {
		t.Errorf("%d nonces remembered past their window, want 1", len(n.seen))
	}
}

func TestOpsBodyTooLarge(t *testing.T) {
	t.Parallel()
	now := time.Now()
	secret := testSecret(1)
	rec := &recorder{}
	h := &handler{secret: secret, ops: rec.ops(), now: func() time.Time { return now }}
	big := []byte(`{"name":"` + strings.Repeat("x", maxBody) + `"}`)
	for _, declared := range []bool{true, false} {
		r := signedBody(secret, http.MethodPost, RestorePath, now, big)
		if !declared {
			r.ContentLength = -1 // chunked: only reading finds out
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("length declared %v: got %d, want 413", declared, w.Code)
		}
	}
	if n := rec.calls(); n != 0 {
		t.Errorf("the node ran %d ops for oversized requests", n)
	}

	// Over HTTP, the client refuses before sending.
	c, addr := serve(t, Serve(secret, rec.ops()), secret)
	err := c.Restore(context.Background(), addr, RestoreRequest{Name: strings.Repeat("x", maxBody)})
	if err == nil || !strings.Contains(err.Error(), "larger than 1 MiB") {
		t.Errorf("got %v, want the client to refuse", err)
	}
	if n := rec.calls(); n != 0 {
		t.Errorf("the node ran %d ops for oversized requests", n)
	}
	// A body just under the limit goes through.
	req := RestoreRequest{Name: strings.Repeat("x", maxBody-len(`{"name":""}`))}
	if err := c.Restore(context.Background(), addr, req); err != nil {
		t.Errorf("a 1 MiB request: %v", err)
	}
}

func TestOpsSlowBody(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	h := Serve(testSecret(1), rec.ops()).(*handler)
	h.bodyTimeout = 200 * time.Millisecond
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	// A host that announces a body and never sends it gets an answer and
	// loses the connection once the body's time is up.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "POST "+RestorePath+" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"na")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("got %d, want 400", resp.StatusCode)
	}
	if n := rec.calls(); n != 0 {
		t.Errorf("the node ran %d ops for a stalled body", n)
	}
}

func TestOpsOutliveBodyDeadline(t *testing.T) {
	t.Parallel()
	// Once the body is read, its deadline is lifted: an op running past
	// it keeps its ctx.
	rec := &recorder{delay: 500 * time.Millisecond}
	h := Serve(testSecret(1), rec.ops()).(*handler)
	h.bodyTimeout = 100 * time.Millisecond
	c, addr := serve(t, h, testSecret(1))
	if _, err := c.Backup(context.Background(), addr, BackupRequest{From: "1", To: "2"}); err != nil {
		t.Fatalf("a backup longer than the body's deadline: %v", err)
	}
}

func TestOpsPort(t *testing.T) {
	t.Parallel()
	// Errors name the node as host:port, like Status's.
	_, err := (&Client{Secret: testSecret(1), Port: 70000}).Backup(context.Background(), "10.0.0.2", BackupRequest{})
	if err == nil || !strings.Contains(err.Error(), `asking "10.0.0.2" to back up its database`) {
		t.Errorf("got %v", err)
	}
	err = (&Client{Port: 1}).Restore(context.Background(), "10.0.0.2", RestoreRequest{Name: "b"})
	if err == nil || !strings.Contains(err.Error(), `asking 10.0.0.2:1 to restore its backup "b": no join secret`) {
		t.Errorf("got %v", err)
	}
}

func TestRequestMACFormat(t *testing.T) {
	t.Parallel()
	// The MAC's input, spelled out: nodes of different versions must
	// agree on it.
	secret, body := testSecret(1), []byte(`{"name":"b"}`)
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, secret)
	io.WriteString(m, "carto-peer-req\n1700000000\n"+strings.Repeat("0f", 16)+"\nPOST /v1/database/restore\n"+hex.EncodeToString(sum[:]))
	got := requestMAC(secret, "1700000000", strings.Repeat("0f", 16), http.MethodPost, RestorePath, body)
	if !hmac.Equal(got, m.Sum(nil)) {
		t.Fatal("the request MAC's input changed")
	}
	// A GET hashes the empty body.
	empty := sha256.Sum256(nil)
	m = hmac.New(sha256.New, secret)
	io.WriteString(m, "carto-peer-req\n1\nn\nGET /v1/status\n"+hex.EncodeToString(empty[:]))
	if !hmac.Equal(requestMAC(secret, "1", "n", http.MethodGet, StatusPath, nil), m.Sum(nil)) {
		t.Fatal("the request MAC of a GET changed")
	}
}
