package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestLoginSetsSessionCookie(t *testing.T) {
	t.Parallel()
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secure=%t", secure), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, secure)
			resp := h.loginAs(testPassword, "198.51.100.7:4000")
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
				t.Fatalf("got %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
			}
			ck := resp.Cookies()[0]
			wantName := "carto-console"
			if secure {
				wantName = "__Host-carto-console"
			}
			if ck.Name != wantName || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Secure != secure || ck.Domain != "" {
				t.Errorf("cookie %+v: want %s, HttpOnly, SameSite=Strict, Path=/, Secure=%t, no Domain", ck, wantName, secure)
			}
			if len(ck.Value) != 43 { // 32 bytes, base64 unpadded
				t.Errorf("session id %q is not 32 random bytes", ck.Value)
			}
			if !h.audit.has("event=console-login ", "ip=198.51.100.7") {
				t.Errorf("no login audit line in %q", h.audit.all())
			}
			if resp := h.get("/", ck); resp.StatusCode != http.StatusOK {
				t.Errorf("GET / with the session: %d, want 200", resp.StatusCode)
			}
		})
	}
}

func TestWrongPasswordRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	const guess = "not-the-password-xyz"
	resp := h.loginAs(guess, "")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
	if len(resp.Cookies()) != 0 {
		t.Errorf("a refused login set cookies: %v", resp.Cookies())
	}
	if b := body(t, resp); !strings.Contains(b, "Wrong password.") {
		t.Errorf("the login page does not say the password is wrong:\n%s", b)
	}
	if !h.audit.has("event=console-login-failed", "ip=192.0.2.1", "failures=1") {
		t.Errorf("no failed-login audit line in %q", h.audit.all())
	}
	for _, l := range h.audit.all() {
		if strings.Contains(l, guess) || strings.Contains(l, testPassword) {
			t.Errorf("an audit line holds a password: %q", l)
		}
	}
}

func TestLoginLockout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	const attacker, other = "203.0.113.9:1111", "203.0.113.10:2222"
	for i := range maxFailuresPerIP {
		if resp := h.loginAs("wrong password!", attacker); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d, want 401", i+1, resp.StatusCode)
		}
	}
	h.clock.advance(time.Minute)
	// The 6th attempt is refused before the password is looked at: even
	// the right one.
	resp := h.loginAs(testPassword, attacker)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("6th attempt: status %d, want 429", resp.StatusCode)
	}
	if got := resp.Header.Get("Retry-After"); got != "240" {
		t.Errorf("Retry-After %q, want 240 (the first failure leaves the window in 4 minutes)", got)
	}
	if len(resp.Cookies()) != 0 {
		t.Error("a locked-out login set a cookie")
	}
	if !h.audit.has("event=console-login-locked", "ip=203.0.113.9", "retry_after=240s") {
		t.Errorf("no lockout audit line in %q", h.audit.all())
	}
	if resp := h.loginAs(testPassword, other); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("another address: status %d, want 303", resp.StatusCode)
	}
	h.clock.advance(4 * time.Minute)
	if resp := h.loginAs(testPassword, attacker); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after the window: status %d, want 303", resp.StatusCode)
	}
}

func TestLoginGlobalCap(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	for i := range maxFailures {
		remote := fmt.Sprintf("[2001:db8:%x::1]:443", i)
		if resp := h.loginAs("wrong password!", remote); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d, want 401", i+1, resp.StatusCode)
		}
	}
	resp := h.loginAs(testPassword, "192.0.2.200:1")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("past the global cap: status %d Retry-After %q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestLoginSuccessForgivesFailures(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	for range maxFailuresPerIP - 1 {
		h.loginAs("wrong password!", "")
	}
	if resp := h.loginAs(testPassword, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("status %d, want 303", resp.StatusCode)
	}
	for range maxFailuresPerIP - 1 {
		h.loginAs("wrong password!", "")
	}
	if resp := h.loginAs(testPassword, ""); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("failures before a success still count: status %d, want 303", resp.StatusCode)
	}
}

func TestClientIPGroupsIPv6By64(t *testing.T) {
	t.Parallel()
	for remote, want := range map[string]string{
		"192.0.2.1:80":             "192.0.2.1",
		"[::ffff:192.0.2.1]:80":    "192.0.2.1",
		"[2001:db8:1:2:3::4]:443":  "2001:db8:1:2::/64",
		"[2001:db8:1:2:ff::9]:443": "2001:db8:1:2::/64",
	} {
		r := &http.Request{RemoteAddr: remote}
		if got := clientIP(r); got != want {
			t.Errorf("clientIP(%s) = %s, want %s", remote, got, want)
		}
	}
}

func TestWithoutSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/", http.StatusSeeOther},
		{"GET", "/settings", http.StatusSeeOther},
		{"GET", "/upgrade", http.StatusSeeOther},
		{"GET", "/logs?service=router", http.StatusSeeOther},
		{"GET", "/support-bundle", http.StatusSeeOther},
		{"GET", "/events/status", http.StatusUnauthorized},
		{"GET", "/events/upgrade", http.StatusUnauthorized},
		{"GET", "/logs?service=router&follow=1", http.StatusUnauthorized},
		{"POST", "/settings", http.StatusUnauthorized},
		{"POST", "/upgrade", http.StatusUnauthorized},
		{"POST", "/certificate/renew", http.StatusUnauthorized},
		{"POST", "/logout", http.StatusUnauthorized},
	} {
		resp := h.request(tc.method, tc.path, url.Values{}, nil, "")
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
		if tc.want == http.StatusSeeOther && resp.Header.Get("Location") != "/login" {
			t.Errorf("%s %s: sent to %q, want /login", tc.method, tc.path, resp.Header.Get("Location"))
		}
	}
	// A made-up session id is no session.
	forged := &http.Cookie{Name: "carto-console", Value: randomToken()}
	if resp := h.get("/", forged); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a forged session: status %d, want 303", resp.StatusCode)
	}
	if n := h.backend.called(""); n != 0 {
		t.Errorf("the backend was called %d times without a session: %q", n, h.backend.calls)
	}
	if resp := h.get("/login", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /login: status %d, want 200", resp.StatusCode)
	}
	if resp := h.get("/static/console.css", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /static/console.css: status %d, want 200", resp.StatusCode)
	}
}

func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, false)
		s := h.login()
		h.clock.advance(sessionIdle - time.Second)
		if resp := h.get("/", s.cookie); resp.StatusCode != http.StatusOK {
			t.Fatalf("before the idle timeout: status %d, want 200", resp.StatusCode)
		}
		h.clock.advance(sessionIdle - time.Second) // the page above reset it
		if resp := h.get("/", s.cookie); resp.StatusCode != http.StatusOK {
			t.Fatalf("active session: status %d, want 200", resp.StatusCode)
		}
		h.clock.advance(sessionIdle)
		if resp := h.get("/", s.cookie); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("idle session: status %d, want 303 to /login", resp.StatusCode)
		}
	})
	t.Run("lifetime", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, false)
		s := h.login()
		for elapsed := time.Duration(0); elapsed < sessionLifetime-20*time.Minute; elapsed += 20 * time.Minute {
			h.clock.advance(20 * time.Minute)
			if resp := h.get("/settings", s.cookie); resp.StatusCode != http.StatusOK {
				t.Fatalf("after %s: status %d, want 200", elapsed, resp.StatusCode)
			}
		}
		h.clock.advance(20 * time.Minute)
		if resp := h.get("/settings", s.cookie); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("past 12 h: status %d, want 303", resp.StatusCode)
		}
	})
}

func TestCSRF(t *testing.T) {
	t.Parallel()
	actions := []struct {
		path string
		form url.Values
		call string
	}{
		{"/settings", url.Values{"pairs": {"router.https_port=8443"}}, "SetSettings"},
		{"/certificate/renew", nil, "RenewCertificate"},
		{"/upgrade", url.Values{"to": {"2026.1.0"}}, "Upgrade"},
	}
	refusals := []struct {
		name    string
		token   func(s *loggedIn) string
		headers map[string]string
	}{
		{"no token", func(*loggedIn) string { return "" }, nil},
		{"wrong token", func(*loggedIn) string { return randomToken() }, nil},
		{"another session's token", nil, nil},
		{"cross-origin", func(s *loggedIn) string { return s.csrf }, map[string]string{"Origin": "https://evil.example"}},
		{"cross-site fetch", func(s *loggedIn) string { return s.csrf }, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"foreign referer", func(s *loggedIn) string { return s.csrf }, map[string]string{"Referer": "https://evil.example/page"}},
	}
	for _, a := range actions {
		for _, rf := range refusals {
			t.Run(a.path+"/"+rf.name, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, false)
				s := h.login()
				token := ""
				if rf.token != nil {
					token = rf.token(s)
				} else {
					token = h.login().csrf
				}
				form := url.Values{}
				for k, v := range a.form {
					form[k] = v
				}
				form.Set(csrfField, token)
				r := newFormRequest(a.path, form, s.cookie, rf.headers)
				resp := do(h, r)
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("status %d, want 403", resp.StatusCode)
				}
				if n := h.backend.called(a.call); n != 0 {
					t.Errorf("%s was called %d times", a.call, n)
				}
				if !h.audit.has("event=console-csrf-refused", "path="+a.path) {
					t.Errorf("no audit line for the refusal in %q", h.audit.all())
				}
			})
		}
		t.Run(a.path+"/accepted", func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, false)
			s := h.login()
			form := url.Values{}
			for k, v := range a.form {
				form[k] = v
			}
			form.Set(csrfField, s.csrf)
			// Same-origin forms of a no-referrer page say "Origin: null".
			r := newFormRequest(a.path, form, s.cookie, map[string]string{"Origin": "null", "Sec-Fetch-Site": "same-origin"})
			if resp := do(h, r); resp.StatusCode != http.StatusSeeOther {
				t.Errorf("status %d, want 303", resp.StatusCode)
			}
			waitFor(t, func() bool { return h.backend.called(a.call) == 1 })
		})
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	s := h.login()
	other := h.login()
	if resp := h.post("/logout", nil, &loggedIn{cookie: s.cookie, csrf: "bad"}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("logout without the right token: status %d, want 403", resp.StatusCode)
	}
	resp := h.post("/logout", nil, s)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("logout: %d to %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	if ck := resp.Cookies(); len(ck) != 1 || ck[0].MaxAge >= 0 || ck[0].Value != "" {
		t.Errorf("logout cookies %v: want the session cookie deleted", ck)
	}
	if resp := h.get("/", s.cookie); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the old session after logout: status %d, want 303", resp.StatusCode)
	}
	if resp := h.post("/certificate/renew", nil, s); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a POST with the old session: status %d, want 401", resp.StatusCode)
	}
	if resp := h.get("/", other.cookie); resp.StatusCode != http.StatusOK {
		t.Errorf("another session after logout: status %d, want 200", resp.StatusCode)
	}
	if !h.audit.has("event=console-logout", "ip=192.0.2.1") {
		t.Errorf("no logout audit line in %q", h.audit.all())
	}
}

func TestLoginReplacesSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	s := h.login()
	resp := h.request(http.MethodPost, "/login", url.Values{"password": {testPassword}}, s.cookie, "")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("status %d, want 303", resp.StatusCode)
	}
	if resp.Cookies()[0].Value == s.cookie.Value {
		t.Error("a login kept the session id the browser came with")
	}
	if resp := h.get("/", s.cookie); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the session before the login: status %d, want 303", resp.StatusCode)
	}
}

func TestHashPassword(t *testing.T) {
	t.Parallel()
	if _, err := HashPassword([]byte("short-pw")); !errors.Is(err, ErrPasswordTooShort) {
		t.Errorf("a short password: %v, want ErrPasswordTooShort", err)
	}
	// 11 characters in more than 12 bytes is still short.
	if _, err := HashPassword([]byte("ééééééééééé")); !errors.Is(err, ErrPasswordTooShort) {
		t.Errorf("11 characters: %v, want ErrPasswordTooShort", err)
	}
	if _, err := HashPassword([]byte(strings.Repeat("x", 73))); !errors.Is(err, ErrPasswordTooLong) {
		t.Errorf("a 73-byte password: %v, want ErrPasswordTooLong", err)
	}
	if passwordCost != 12 {
		t.Errorf("the password cost is %d, want 12", passwordCost)
	}
	pw := []byte("a long enough password")
	hash, err := hashPassword(pw, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if bcrypt.CompareHashAndPassword(hash, pw) != nil {
		t.Error("the hash does not match its password")
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	t.Parallel()
	if _, err := New(Options{Password: testHash()}); err == nil {
		t.Error("New without a backend: no error")
	}
	if _, err := New(Options{Password: []byte(testPassword), Backend: newFakeBackend()}); err == nil || !strings.Contains(err.Error(), "bcrypt") {
		t.Errorf("New with a plain-text password: %v, want an error naming bcrypt", err)
	}
	if _, err := New(Options{Password: testHash(), Backend: newFakeBackend()}); err != nil {
		t.Errorf("New: %v", err)
	}
}

// With a sessions file, a login outlives the server (the agent's
// restart): same cookie, same CSRF token. The file holds no cookie value;
// a new password, a logout or the idle limit ends the session all the same.
func TestSessionsOutliveTheServer(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "console-sessions.json")
	h := newHarness(t, true)
	restart := func(password []byte) *harness {
		t.Helper()
		c, err := newConsole(Options{Password: password, Backend: h.backend, Logf: h.audit.logf, Now: h.clock.Now, Secure: true, SessionsFile: file})
		if err != nil {
			t.Fatal(err)
		}
		return &harness{t: t, c: c, handler: c.routes(), backend: h.backend, clock: h.clock, audit: h.audit}
	}
	h = restart(testHash())
	s := h.login()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("the sessions file is %v", fi.Mode().Perm())
	}
	if strings.Contains(string(b), s.cookie.Value) {
		t.Error("the sessions file holds the session's cookie")
	}

	h = restart(testHash())
	if resp := h.get("/", s.cookie); resp.StatusCode != http.StatusOK {
		t.Fatalf("after a restart: %d, want 200", resp.StatusCode)
	}
	if resp := h.post("/settings", url.Values{"set": {"a=b"}}, s); resp.StatusCode == http.StatusForbidden {
		t.Errorf("the CSRF token after a restart: %d", resp.StatusCode)
	}

	// Idle past the limit while the server was down.
	h.clock.advance(sessionIdle + time.Minute)
	if resp := restart(testHash()).get("/", s.cookie); resp.StatusCode == http.StatusOK {
		t.Error("an idle session came back after a restart")
	}

	// A new password ends every session.
	h.clock.advance(-sessionIdle - time.Minute)
	h = restart(testHash())
	s = h.login()
	other, _ := bcrypt.GenerateFromPassword([]byte("another-password-42"), bcrypt.MinCost)
	if resp := restart(other).get("/", s.cookie); resp.StatusCode == http.StatusOK {
		t.Error("a session outlived a new password")
	}

	// A logout is kept too.
	h = restart(testHash())
	s = h.login()
	h.post("/logout", nil, s)
	if resp := restart(testHash()).get("/", s.cookie); resp.StatusCode == http.StatusOK {
		t.Error("a session came back after its logout and a restart")
	}
}
