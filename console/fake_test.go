package console

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// fakeBackend records what the console asked of it.
type fakeBackend struct {
	mu    sync.Mutex
	calls []string

	status    *StatusView
	statusErr error
	settings  []SettingView
	setErr    error
	setResult string
	// applied are the pair lists SetSettings accepted.
	applied   [][]string
	bundle    string
	bundleErr error
	logText   string
	logErr    error
	check     *UpgradeView
	// steps are reported by Upgrade; when hold is set it waits for it to
	// close after them.
	steps      []progressEvent
	hold       chan struct{}
	upgradeErr error
	renewErr   error
}

var _ Backend = (*fakeBackend)(nil)

func newFakeBackend() *fakeBackend {
	return &fakeBackend{
		status: &StatusView{
			Version: "2025.11.3", URL: "https://carto.example.com", Layout: "single", Role: "all", Healthy: true,
			Services: []ServiceView{
				{Name: "router", State: "running", Health: "healthy", Image: "carto/router:1", Restarts: 0},
				{Name: "maps-api", State: "restarting", Health: "unhealthy", Image: "carto/maps-api:2", Restarts: 7, CrashLoop: true},
			},
			License:     &LicenseView{State: "valid", Customer: "ACME", ExpiresAt: time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC), DaysLeft: 300},
			Certificate: &CertificateView{Mode: "acme", Issuer: "R11", NotAfter: time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC), DaysLeft: 60},
			Upgrade:     &UpgradeRunView{What: "upgrade 2025.6.2 -> 2025.11.3", Outcome: "succeeded"},
		},
		settings: []SettingView{
			{Name: "router.https_port", Value: "443"},
			{Name: "database.password", Value: "hunter2-secret", Set: true, Secret: true},
		},
		setResult: "router.https_port: 443 -> 8443",
		bundle:    "tar.gz bytes",
		logText:   "line one\nline <two>\n",
		check:     &UpgradeView{Current: "2025.11.3", Latest: "2026.1.0", Available: true},
	}
}

func (f *fakeBackend) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

// called counts the calls whose record starts with prefix.
func (f *fakeBackend) called(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (f *fakeBackend) Status(ctx context.Context) (*StatusView, error) {
	f.record("Status")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.statusErr != nil {
		return nil, f.statusErr
	}
	st := *f.status
	return &st, nil
}

func (f *fakeBackend) Logs(ctx context.Context, service string, lines int, follow bool, w io.Writer) error {
	f.record(fmt.Sprintf("Logs %s %d %t", service, lines, follow))
	if f.logErr != nil {
		return f.logErr
	}
	_, err := io.WriteString(w, f.logText)
	if follow && err == nil {
		// Followed logs end with the client.
		<-ctx.Done()
	}
	return err
}

func (f *fakeBackend) Settings(ctx context.Context) ([]SettingView, error) {
	f.record("Settings")
	return f.settings, nil
}

func (f *fakeBackend) SetSettings(ctx context.Context, pairs []string, apply bool) (string, error) {
	f.record(fmt.Sprintf("SetSettings %t", apply))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.setErr != nil {
		return "", f.setErr
	}
	f.applied = append(f.applied, pairs)
	return f.setResult, nil
}

func (f *fakeBackend) SupportBundle(ctx context.Context, w io.Writer) error {
	f.record("SupportBundle")
	if f.bundleErr != nil {
		return f.bundleErr
	}
	_, err := io.WriteString(w, f.bundle)
	return err
}

func (f *fakeBackend) UpgradeCheck(ctx context.Context) (*UpgradeView, error) {
	f.record("UpgradeCheck")
	return f.check, nil
}

func (f *fakeBackend) Upgrade(ctx context.Context, to string, progress func(step, state string)) error {
	f.record("Upgrade " + to)
	for _, s := range f.steps {
		progress(s.Step, s.State)
	}
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	progress("finish", "done")
	return f.upgradeErr
}

func (f *fakeBackend) RenewCertificate(ctx context.Context) error {
	f.record("RenewCertificate")
	return f.renewErr
}

const testPassword = "correct horse battery"

// testHash is testPassword's hash at bcrypt's lowest cost: the tests
// check logins, not bcrypt's slowness.
var testHash = sync.OnceValue(func() []byte {
	h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return h
})

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type auditLog struct {
	mu    sync.Mutex
	lines []string
}

func (a *auditLog) logf(format string, args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lines = append(a.lines, fmt.Sprintf(format, args...))
}

func (a *auditLog) all() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.lines)
}

// has says some audit line contains every one of parts.
func (a *auditLog) has(parts ...string) bool {
	for _, l := range a.all() {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// harness is a console on a fake backend, clock and audit log.
type harness struct {
	t       *testing.T
	c       *console
	handler http.Handler
	backend *fakeBackend
	clock   *fakeClock
	audit   *auditLog
}

func newHarness(t *testing.T, secure bool) *harness {
	t.Helper()
	h := &harness{
		t:       t,
		backend: newFakeBackend(),
		clock:   &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		audit:   &auditLog{},
	}
	c, err := newConsole(Options{Password: testHash(), Backend: h.backend, Logf: h.audit.logf, Now: h.clock.Now, Secure: secure})
	if err != nil {
		t.Fatal(err)
	}
	c.statusEvery = 20 * time.Millisecond
	h.c, h.handler = c, c.routes()
	return h
}

// request sends a request from remote (an ip:port; "" for the default)
// with cookie, and form as the body of a POST.
func (h *harness) request(method, target string, form url.Values, cookie *http.Cookie, remote string) *http.Response {
	h.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, target, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != nil {
		r.AddCookie(cookie)
	}
	if remote != "" {
		r.RemoteAddr = remote
	}
	w := httptest.NewRecorder()
	h.handler.ServeHTTP(w, r)
	return w.Result()
}

func (h *harness) get(target string, cookie *http.Cookie) *http.Response {
	return h.request(http.MethodGet, target, nil, cookie, "")
}

// post sends form with s's CSRF token.
func (h *harness) post(target string, form url.Values, s *loggedIn) *http.Response {
	if form == nil {
		form = url.Values{}
	}
	form.Set(csrfField, s.csrf)
	return h.request(http.MethodPost, target, form, s.cookie, "")
}

func (h *harness) loginAs(password, remote string) *http.Response {
	return h.request(http.MethodPost, "/login", url.Values{"password": {password}}, nil, remote)
}

// loggedIn is a session as the browser holds it.
type loggedIn struct {
	cookie *http.Cookie
	csrf   string
}

var csrfRE = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// login logs in and reads the CSRF token off the status page.
func (h *harness) login() *loggedIn {
	h.t.Helper()
	resp := h.loginAs(testPassword, "")
	if resp.StatusCode != http.StatusSeeOther {
		h.t.Fatalf("login: status %d, want 303", resp.StatusCode)
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		h.t.Fatalf("login set %d cookies, want 1", len(cookies))
	}
	s := &loggedIn{cookie: cookies[0]}
	m := csrfRE.FindStringSubmatch(body(h.t, h.get("/", s.cookie)))
	if m == nil {
		h.t.Fatal("the status page has no CSRF token")
	}
	s.csrf = m[1]
	return s
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// serve runs the harness's console on a real server, for event streams.
func (h *harness) serve() *httptest.Server {
	srv := httptest.NewServer(h.handler)
	h.t.Cleanup(srv.Close)
	return srv
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name string
	data string
}

// openEvents GETs an event stream, bounded by the test's context.
func openEvents(ctx context.Context, t *testing.T, srv *httptest.Server, path string, s *loggedIn) *bufio.Reader {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(s.cookie)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %d %s, want 200 text/event-stream", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return bufio.NewReader(resp.Body)
}

// nextEvent reads one event; the request's context bounds the wait.
func nextEvent(r *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	var data []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if data == nil && ev.name == "" {
				continue
			}
			ev.data = strings.Join(data, "\n")
			return ev, nil
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		default:
			return ev, errors.New("not an event line: " + line)
		}
	}
}

func newFormRequest(target string, form url.Values, cookie *http.Cookie, headers map[string]string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cookie != nil {
		r.AddCookie(cookie)
	}
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	return r
}

func do(h *harness, r *http.Request) *http.Response {
	w := httptest.NewRecorder()
	h.handler.ServeHTTP(w, r)
	return w.Result()
}

// waitFor polls cond for a bounded while: for what the console does in
// the background (an upgrade).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(time.Millisecond)
	}
}
