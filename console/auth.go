package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

const (
	// MinPasswordLength is the shortest console password HashPassword
	// takes, in characters.
	MinPasswordLength = 12
	// maxPasswordBytes is all of a password bcrypt reads; a longer one
	// would be cut without a word.
	maxPasswordBytes = 72
	// passwordCost makes one guess cost about a quarter of a second of
	// CPU; with the login limit, guessing is hopeless.
	passwordCost = 12
)

var (
	// ErrPasswordTooShort is HashPassword's refusal of a short password.
	ErrPasswordTooShort = fmt.Errorf("the console password is too short: give at least %d characters", MinPasswordLength)
	// ErrPasswordTooLong is HashPassword's refusal of a password bcrypt
	// would cut.
	ErrPasswordTooLong = fmt.Errorf("the console password is too long: give at most %d bytes", maxPasswordBytes)
)

// HashPassword is the bcrypt hash of a console password, for
// Options.Password.
func HashPassword(pw []byte) ([]byte, error) {
	if utf8.RuneCount(pw) < MinPasswordLength {
		return nil, ErrPasswordTooShort
	}
	if len(pw) > maxPasswordBytes {
		return nil, ErrPasswordTooLong
	}
	return hashPassword(pw, passwordCost)
}

// hashPassword is HashPassword at a given cost: the tests' is bcrypt's
// lowest, as cost 12 takes seconds under the race detector.
func hashPassword(pw []byte, cost int) ([]byte, error) {
	h, err := bcrypt.GenerateFromPassword(pw, cost)
	if err != nil {
		return nil, fmt.Errorf("hashing the console password: %w", err)
	}
	return h, nil
}

// csrfField is the hidden input every form carries.
const csrfField = "csrf_token"

// handler is a page or action of a logged-in operator.
type handler func(w http.ResponseWriter, r *http.Request, s session)

// authed lets in requests with a live session: other GETs of pages are
// sent to the login page, anything else is refused with 401. A POST must
// also come from the console's own pages: same origin, and the session's
// CSRF token in its form; else 403 and nothing is done.
func (c *console) authed(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		stream := isStream(r)
		s, ok := c.session(r, !stream)
		if !ok {
			if r.Method == http.MethodGet && !stream {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in to the console, or the session expired: log in again", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			if err := sameOrigin(r); err != nil {
				c.logf("event=console-csrf-refused ip=%s path=%s reason=%q", clientIP(r), r.URL.Path, err)
				http.Error(w, "refused: "+err.Error(), http.StatusForbidden)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := r.ParseForm(); err != nil {
				http.Error(w, "reading the form: "+err.Error(), http.StatusBadRequest)
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostForm.Get(csrfField)), []byte(s.csrf)) != 1 {
				c.logf("event=console-csrf-refused ip=%s path=%s reason=%q", clientIP(r), r.URL.Path, "missing or wrong CSRF token")
				http.Error(w, "refused: the form's security token is missing or stale; reload the page and try again", http.StatusForbidden)
				return
			}
		}
		h(w, r, s)
	}
}

// isStream says r asks for an event stream. Streams neither keep a
// session alive (a tab left open is idle) nor redirect (EventSource
// cannot follow to a login page).
func isStream(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/events/") || (r.URL.Path == "/logs" && r.URL.Query().Get("follow") != "")
}

// session is r's live session, its idle time reset when touch.
func (c *console) session(r *http.Request, touch bool) (session, bool) {
	ck, err := r.Cookie(c.cookie)
	if err != nil {
		return session{}, false
	}
	return c.sessions.get(ck.Value, c.now(), touch)
}

// sameOrigin refuses a request another site made the browser send. Every
// current browser says so in Sec-Fetch-Site, which pages cannot set; older
// ones are judged by Origin, else Referer. "Origin: null" says nothing:
// browsers send it for our own forms because of Referrer-Policy
// no-referrer, and the CSRF token is checked anyway.
func sameOrigin(r *http.Request) error {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return fmt.Errorf("a %s request", site)
	}
	from := r.Header.Get("Origin")
	if from == "" || from == "null" {
		from = r.Header.Get("Referer")
	}
	if from == "" {
		return nil
	}
	u, err := url.Parse(from)
	if err != nil || !strings.EqualFold(u.Host, r.Host) {
		return fmt.Errorf("a request from %q, not from %q", from, r.Host)
	}
	return nil
}

// clientIP is who the login limit and the audit lines name: the peer's
// address (X-Forwarded-For is the client's to write), an IPv6 one by its
// /64, which one host usually holds whole.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

func (c *console) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, ok := c.session(r, false); ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	c.render(w, http.StatusOK, "login", page{Title: "Log in"})
}

func (c *console) login(w http.ResponseWriter, r *http.Request) {
	ip := clientIP(r)
	if err := sameOrigin(r); err != nil {
		c.logf("event=console-csrf-refused ip=%s path=/login reason=%q", ip, err)
		http.Error(w, "refused: "+err.Error(), http.StatusForbidden)
		return
	}
	now := c.now()
	// The attempt counts as a failure until the password is right, so
	// that parallel guesses cannot all pass the limit before any fails.
	failures, wait, ok := c.limiter.attempt(ip, now)
	if !ok {
		secs := int(wait.Seconds() + 0.999)
		c.logf("event=console-login-locked ip=%s retry_after=%ds", ip, secs)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		c.render(w, http.StatusTooManyRequests, "login", page{Title: "Log in",
			Error: fmt.Sprintf("Too many failed logins: try again in %d seconds.", secs)})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	pw := r.PostFormValue("password")
	if err := bcrypt.CompareHashAndPassword(c.password, []byte(pw)); err != nil {
		if !errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			c.logf("event=console-login-error ip=%s err=%q", ip, err)
		}
		c.logf("event=console-login-failed ip=%s failures=%d", ip, failures)
		c.render(w, http.StatusUnauthorized, "login", page{Title: "Log in", Error: "Wrong password."})
		return
	}
	c.limiter.succeeded(ip, now)
	// A new session every time: a session id planted before the login
	// is worth nothing after it.
	if ck, err := r.Cookie(c.cookie); err == nil {
		c.sessions.delete(ck.Value)
	}
	s := c.sessions.create(now)
	http.SetCookie(w, c.sessionCookie(s.id, 0))
	c.logf("event=console-login ip=%s", ip)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (c *console) logout(w http.ResponseWriter, r *http.Request, s session) {
	c.sessions.delete(s.id)
	http.SetCookie(w, c.sessionCookie("", -1))
	c.logf("event=console-logout ip=%s", clientIP(r))
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// sessionCookie carries a session id; maxAge -1 deletes it. Without
// MaxAge it ends with the browser; the server ends it sooner.
func (c *console) sessionCookie(id string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: c.cookie, Value: id, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: c.secure, SameSite: http.SameSiteStrictMode,
	}
}

// randomToken is 32 random bytes, as cookie- and form-safe text.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails: crypto/rand crashes the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}
