package console

import (
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxTailBytes bounds the log text one page holds.
const maxTailBytes = 4 << 20

// pageFor is a logged-in page, with the session's token and its last
// action's outcome.
func (c *console) pageFor(s session, title, nav string) page {
	return page{Title: title, Nav: nav, CSRF: s.csrf, Flash: c.sessions.takeFlash(s.id)}
}

func (c *console) statusPage(w http.ResponseWriter, r *http.Request, s session) {
	p := c.pageFor(s, "Status", "status")
	st, err := c.backend.Status(r.Context())
	if err != nil {
		p.Error = "Reading the status: " + err.Error()
		c.render(w, http.StatusInternalServerError, "status", p)
		return
	}
	p.Data = st
	c.render(w, http.StatusOK, "status", p)
}

// settingsData is the settings page's.
type settingsData struct {
	Settings []SettingView
	// Pairs and Apply are the form as sent, given back with its error.
	Pairs string
	Apply bool
}

func (c *console) settingsPage(w http.ResponseWriter, r *http.Request, s session) {
	c.renderSettings(w, r, http.StatusOK, c.pageFor(s, "Settings", "settings"), &settingsData{})
}

func (c *console) renderSettings(w http.ResponseWriter, r *http.Request, status int, p page, d *settingsData) {
	settings, err := c.backend.Settings(r.Context())
	if err != nil {
		p.Error = strings.TrimSpace(p.Error + " Reading the settings: " + err.Error())
		status = max(status, http.StatusInternalServerError)
	}
	d.Settings = settings
	p.Data = d
	c.render(w, status, "settings", p)
}

func (c *console) setSettings(w http.ResponseWriter, r *http.Request, s session) {
	p := c.pageFor(s, "Settings", "settings")
	d := &settingsData{Pairs: r.PostForm.Get("pairs"), Apply: r.PostForm.Get("apply") != ""}
	pairs, err := parsePairs(d.Pairs)
	if err != nil {
		p.Error = err.Error()
		c.renderSettings(w, r, http.StatusBadRequest, p, d)
		return
	}
	ip := clientIP(r)
	changed, err := c.backend.SetSettings(r.Context(), pairs, d.Apply)
	if err != nil {
		c.logf("event=console-settings ip=%s names=%s apply=%t err=%q", ip, pairNames(pairs), d.Apply, err)
		p.Error = "Changing the settings: " + err.Error()
		c.renderSettings(w, r, http.StatusUnprocessableEntity, p, d)
		return
	}
	c.logf("event=console-settings ip=%s names=%s apply=%t", ip, pairNames(pairs), d.Apply)
	if strings.TrimSpace(changed) == "" {
		changed = "Nothing changed."
	}
	c.sessions.setFlash(s.id, changed)
	http.Redirect(w, r, "/settings", http.StatusSeeOther)
}

func (c *console) renewCertificate(w http.ResponseWriter, r *http.Request, s session) {
	ip := clientIP(r)
	if err := c.backend.RenewCertificate(r.Context()); err != nil {
		c.logf("event=console-certificate-renew ip=%s err=%q", ip, err)
		c.sessions.setFlash(s.id, "Renewing the certificate: "+err.Error())
	} else {
		c.logf("event=console-certificate-renew ip=%s", ip)
		c.sessions.setFlash(s.id, "The certificate was renewed.")
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (c *console) supportBundle(w http.ResponseWriter, r *http.Request, s session) {
	name := "carto-support-" + c.now().UTC().Format("20060102T150405Z") + ".tar.gz"
	ip := clientIP(r)
	c.logf("event=console-support-bundle ip=%s", ip)
	h := w.Header()
	h.Set("Content-Type", "application/gzip")
	h.Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
	h.Set("Cache-Control", "no-store")
	cw := &countingWriter{w: w}
	err := c.backend.SupportBundle(r.Context(), cw)
	if err == nil {
		return
	}
	c.logf("event=console-support-bundle-failed ip=%s err=%q", ip, err)
	if cw.n > 0 {
		// Too late for an error page: cut the connection, so that the
		// browser says the download failed rather than keeping half a
		// bundle as if whole.
		panic(http.ErrAbortHandler)
	}
	h.Del("Content-Disposition")
	c.fail(w, &s, http.StatusInternalServerError, "Making the support bundle: "+err.Error())
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

// logsData is the logs page's.
type logsData struct {
	Services []string
	Service  string
	Lines    int
	Text     string
	// Truncated says the tail was longer than a page holds: its start is
	// cut.
	Truncated bool
}

// logs is the logs page (a service's tail) and, with follow, the stream
// of what it logs next, one event a line.
func (c *console) logs(w http.ResponseWriter, r *http.Request, s session) {
	ctx := r.Context()
	p := c.pageFor(s, "Logs", "logs")
	d := &logsData{Lines: defaultLogLines}
	p.Data = d
	st, err := c.backend.Status(ctx)
	if err != nil {
		p.Error = "Reading the services: " + err.Error()
		c.render(w, http.StatusInternalServerError, "logs", p)
		return
	}
	d.Services = serviceNames(st)
	q := r.URL.Query()
	d.Service = q.Get("service")
	if d.Service == "" && q.Get("follow") == "" {
		c.render(w, http.StatusOK, "logs", p)
		return
	}
	lines, err := parseLines(q.Get("lines"))
	follow, ferr := parseFollow(q.Get("follow"))
	if err == nil {
		err = ferr
	}
	if err == nil {
		err = checkService(d.Service, st)
	}
	if err != nil {
		p.Error = err.Error()
		c.render(w, http.StatusBadRequest, "logs", p)
		return
	}
	d.Lines = lines
	ip := clientIP(r)
	c.logf("event=console-logs ip=%s service=%s lines=%d follow=%t", ip, d.Service, lines, follow)
	if follow {
		ev := startEvents(w)
		le := &lineEvents{ev: ev}
		err := c.backend.Logs(ctx, d.Service, lines, true, le)
		if ctx.Err() != nil {
			return
		}
		le.close()
		if err != nil {
			ev.sendJSON("failure", map[string]string{"error": "reading the logs: " + err.Error()})
		}
		ev.send("end", []byte("{}"))
		return
	}
	tail := &tailBuffer{max: maxTailBytes}
	if err := c.backend.Logs(ctx, d.Service, lines, false, tail); err != nil {
		p.Error = "Reading the logs: " + err.Error()
	}
	d.Text, d.Truncated = tail.String(), tail.truncated
	c.render(w, http.StatusOK, "logs", p)
}
