// Package console is the agent's web admin console (SPEC §13): its login
// and sessions, its pages, their live event streams and the static files
// they need. What it shows and does comes through a Backend, which the
// agent adapts from the installer; the agent owns the listener.
package console

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"time"

	"golang.org/x/crypto/bcrypt"
)

//go:embed assets
var assets embed.FS

// Options configures the console.
type Options struct {
	// Password is the bcrypt hash of the console's password (HashPassword
	// makes one). Required.
	Password []byte
	// Backend shows and does everything. Required.
	Backend Backend
	// Logf receives the audit lines (logins, logouts, lockouts, every
	// action); nil discards them. Never a password or a setting's value.
	Logf func(format string, args ...any)
	// Now is the clock of sessions and the login limit; nil: time.Now.
	Now func() time.Time
	// Secure marks the session cookie Secure (and names it __Host-...);
	// set it when the console is served over HTTPS.
	Secure bool
	// SessionsFile keeps the sessions (0600) across restarts of the
	// server; "" keeps them in memory only.
	SessionsFile string
}

// statusEvery is how often /events/status sends the status.
const statusEvery = 2 * time.Second

// maxFormBytes bounds a POSTed form: the settings form is the largest.
const maxFormBytes = 64 << 10

type console struct {
	backend  Backend
	password []byte
	logf     func(string, ...any)
	now      func() time.Time
	secure   bool
	cookie   string

	sessions *sessions
	limiter  *limiter
	upgrades *upgrades
	pages    map[string]*template.Template
	// statusEvery is statusEvery; tests shorten it.
	statusEvery time.Duration
}

// New is the console's handler, to be served at the root of its own
// listener.
func New(opts Options) (http.Handler, error) {
	c, err := newConsole(opts)
	if err != nil {
		return nil, err
	}
	return c.routes(), nil
}

func newConsole(opts Options) (*console, error) {
	if opts.Backend == nil {
		return nil, errors.New("setting up the console: no backend")
	}
	if _, err := bcrypt.Cost(opts.Password); err != nil {
		return nil, fmt.Errorf("setting up the console: the password hash is not a bcrypt hash (make one with HashPassword): %w", err)
	}
	c := &console{
		backend:     opts.Backend,
		password:    opts.Password,
		logf:        opts.Logf,
		now:         opts.Now,
		secure:      opts.Secure,
		cookie:      "carto-console",
		statusEvery: statusEvery,
	}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.secure {
		// The prefix makes browsers refuse the cookie unless it is
		// Secure, for this host only and for every path.
		c.cookie = "__Host-" + c.cookie
	}
	c.sessions = loadSessions(opts.SessionsFile, opts.Password, c.now(), c.logf)
	c.limiter = newLimiter()
	c.upgrades = &upgrades{}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c.pages = pages
	return c, nil
}

func (c *console) routes() http.Handler {
	mux := http.NewServeMux()
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux.Handle("GET /static/{file}", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("POST /logout", c.authed(c.logout))
	mux.HandleFunc("GET /{$}", c.authed(c.statusPage))
	mux.HandleFunc("GET /events/status", c.authed(c.statusEvents))
	mux.HandleFunc("GET /upgrade", c.authed(c.upgradePage))
	mux.HandleFunc("POST /upgrade", c.authed(c.startUpgrade))
	mux.HandleFunc("GET /events/upgrade", c.authed(c.upgradeEvents))
	mux.HandleFunc("GET /settings", c.authed(c.settingsPage))
	mux.HandleFunc("POST /settings", c.authed(c.setSettings))
	mux.HandleFunc("POST /certificate/renew", c.authed(c.renewCertificate))
	mux.HandleFunc("GET /support-bundle", c.authed(c.supportBundle))
	mux.HandleFunc("GET /logs", c.authed(c.logs))
	return securityHeaders(mux)
}

// securityHeaders sets what every answer carries. The policy allows no
// inline script or style: the console's JS and CSS are the embedded files.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

// pageNames are the templates under assets/templates, each rendered
// inside layout.html.
var pageNames = []string{"login", "status", "upgrade", "settings", "logs", "error"}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
}

func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "assets/templates/layout.html", "assets/templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parsing the console's %s page: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// page is what every template gets.
type page struct {
	Title string
	// Nav is the page the navigation marks as current.
	Nav string
	// CSRF is the session's token for the page's forms; empty logged out.
	CSRF string
	// Flash is the outcome of the last action, shown once.
	Flash string
	// Error is what went wrong, shown instead of (or above) the data.
	Error string
	Data  any
}

// render writes a page whole, or a plain 500 when its template fails (so
// that no half page is sent).
func (c *console) render(w http.ResponseWriter, status int, name string, p page) {
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		c.logf("event=console-render-failed page=%s err=%q", name, err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fail renders the error page; msg is shown as given (escaped).
func (c *console) fail(w http.ResponseWriter, s *session, status int, msg string) {
	p := page{Title: http.StatusText(status), Error: msg}
	if s != nil {
		p.CSRF = s.csrf
	}
	c.render(w, status, "error", p)
}
