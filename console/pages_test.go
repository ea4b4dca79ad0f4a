package console

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	s := h.login()
	for _, tc := range []struct {
		path string
		page bool
	}{
		{"/login", true},
		{"/", true},
		{"/settings", true},
		{"/upgrade", true},
		{"/logs", true},
		{"/logs?service=router", true},
		{"/static/console.js", false},
		{"/nowhere", false},
	} {
		ck := s.cookie
		if tc.path == "/login" {
			ck = nil // logged in, it sends to the status
		}
		resp := h.get(tc.path, ck)
		hd := resp.Header
		csp := hd.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", tc.path, csp)
		}
		for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
			if got := hd.Get(k); got != want {
				t.Errorf("%s: %s %q, want %q", tc.path, k, got, want)
			}
		}
		if tc.page {
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d, want 200", tc.path, resp.StatusCode)
			}
			if got := hd.Get("Cache-Control"); got != "no-store" {
				t.Errorf("%s: Cache-Control %q, want no-store", tc.path, got)
			}
			if b := body(t, resp); strings.Contains(b, "<script>") || strings.Contains(b, " style=") {
				t.Errorf("%s: inline script or style, which the policy blocks", tc.path)
			}
		}
	}
}

func TestStatusPage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	h.backend.status.Services = append(h.backend.status.Services, ServiceView{Name: `<script>alert("x")</script>`, State: "exited", Health: "none", Image: `img"><b>`})
	s := h.login()
	b := body(t, h.get("/", s.cookie))
	for _, want := range []string{
		"router", "maps-api", "carto/maps-api:2", ">7<", // restarts
		`<tr class="bad"><td>maps-api`,  // the crash loop
		"valid", "2027-01-02 00:00 UTC", // licence
		"acme", "R11", "2026-03-04 00:00 UTC", // certificate
		"upgrade 2025.6.2 -&gt; 2025.11.3", "succeeded",
		"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", "img&#34;&gt;&lt;b&gt;",
		`href="/logs?service=%3cscript%3ealert%28%22x%22%29%3c%2fscript%3e"`,
		`data-stream="/events/status"`,
	} {
		if !strings.Contains(b, want) {
			t.Errorf("the status page lacks %q", want)
		}
	}
	if strings.Contains(b, "<script>alert") || strings.Contains(b, "<b>") {
		t.Error("a service's name or image went into the page unescaped")
	}
}

func TestStatusPageBackendError(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	s := h.login()
	h.backend.mu.Lock()
	h.backend.statusErr = errors.New("the engine <does not> answer")
	h.backend.mu.Unlock()
	resp := h.get("/", s.cookie)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", resp.StatusCode)
	}
	if b := body(t, resp); !strings.Contains(b, "Reading the status: the engine &lt;does not&gt; answer") {
		t.Errorf("the page does not show the error:\n%s", b)
	}
}

func TestSettings(t *testing.T) {
	t.Parallel()
	t.Run("table", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, false)
		s := h.login()
		b := body(t, h.get("/settings", s.cookie))
		if !strings.Contains(b, "router.https_port") || !strings.Contains(b, "(secret, set)") {
			t.Errorf("the settings table lacks a setting:\n%s", b)
		}
		if strings.Contains(b, "hunter2-secret") {
			t.Error("the settings page shows a secret's value")
		}
	})
	t.Run("changed", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, false)
		s := h.login()
		resp := h.post("/settings", url.Values{"pairs": {"# a comment\r\nrouter.https_port=8443\r\n\r\ndatabase.password=s3cr3t value\n"}, "apply": {"1"}}, s)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("status %d, want 303: %s", resp.StatusCode, body(t, resp))
		}
		want := []string{"router.https_port=8443", "database.password=s3cr3t value"}
		if len(h.backend.applied) != 1 || strings.Join(h.backend.applied[0], "|") != strings.Join(want, "|") || h.backend.called("SetSettings true") != 1 {
			t.Errorf("SetSettings got %q (calls %q), want %q with apply", h.backend.applied, h.backend.calls, want)
		}
		if b := body(t, h.get("/settings", s.cookie)); !strings.Contains(b, "router.https_port: 443 -&gt; 8443") {
			t.Errorf("the page after the change does not say what changed:\n%s", b)
		}
		if !h.audit.has("event=console-settings", "names=router.https_port,database.password", "apply=true") {
			t.Errorf("no audit line in %q", h.audit.all())
		}
		for _, l := range h.audit.all() {
			if strings.Contains(l, "s3cr3t") || strings.Contains(l, "8443") {
				t.Errorf("an audit line holds a setting's value: %q", l)
			}
		}
	})
	t.Run("backend refuses", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, false)
		s := h.login()
		h.backend.setErr = errors.New(`router.https_port: "x" is not a port`)
		resp := h.post("/settings", url.Values{"pairs": {"router.https_port=x"}}, s)
		if resp.StatusCode != http.StatusUnprocessableEntity {
			t.Errorf("status %d, want 422", resp.StatusCode)
		}
		b := body(t, resp)
		if !strings.Contains(b, "Changing the settings: router.https_port: &#34;x&#34; is not a port") {
			t.Errorf("the page does not show the backend's error:\n%s", b)
		}
		if !strings.Contains(b, ">router.https_port=x</textarea>") {
			t.Error("the form lost what the operator wrote")
		}
		if len(h.backend.applied) != 0 || h.backend.called("SetSettings false") != 1 {
			t.Errorf("applied %q, calls %q: want one refused call and nothing applied", h.backend.applied, h.backend.calls)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, false)
		s := h.login()
		resp := h.post("/settings", url.Values{"pairs": {"router.https_port=1\nno-equals-secretvalue"}}, s)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("status %d, want 400", resp.StatusCode)
		}
		b := body(t, resp)
		if !strings.Contains(b, "line 2 is not NAME=VALUE") {
			t.Errorf("the page does not name the bad line:\n%s", b)
		}
		if n := h.backend.called("SetSettings"); n != 0 {
			t.Errorf("SetSettings called %d times on bad input", n)
		}
	})
}

func TestRenewCertificate(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	s := h.login()
	h.backend.renewErr = errors.New("the CA refused")
	resp := h.post("/certificate/renew", nil, s)
	if resp.StatusCode != http.StatusSeeOther || h.backend.called("RenewCertificate") != 1 {
		t.Fatalf("status %d, calls %q", resp.StatusCode, h.backend.calls)
	}
	if b := body(t, h.get("/", s.cookie)); !strings.Contains(b, "Renewing the certificate: the CA refused") {
		t.Error("the status page does not show the renewal's error")
	}
	if !h.audit.has("event=console-certificate-renew", `err="the CA refused"`) {
		t.Errorf("no audit line in %q", h.audit.all())
	}
}

func TestSupportBundle(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	s := h.login()
	resp := h.get("/support-bundle", s.cookie)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Content-Type":        "application/gzip",
		"Content-Disposition": `attachment; filename="carto-support-20260102T030405Z.tar.gz"`,
		"Cache-Control":       "no-store",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s %q, want %q", k, got, want)
		}
	}
	if b := body(t, resp); b != "tar.gz bytes" {
		t.Errorf("body %q", b)
	}
	if !h.audit.has("event=console-support-bundle", "ip=192.0.2.1") {
		t.Errorf("no audit line in %q", h.audit.all())
	}

	h.backend.bundleErr = errors.New("the disk is full")
	resp = h.get("/support-bundle", s.cookie)
	if resp.StatusCode != http.StatusInternalServerError || resp.Header.Get("Content-Disposition") != "" {
		t.Errorf("a failed bundle: status %d, Content-Disposition %q; want 500 and no attachment", resp.StatusCode, resp.Header.Get("Content-Disposition"))
	}
	if b := body(t, resp); !strings.Contains(b, "Making the support bundle: the disk is full") {
		t.Errorf("the error page does not say why:\n%s", b)
	}
}

func TestLogsValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	s := h.login()
	for _, tc := range []struct {
		query, want string
	}{
		{"service=nope", `unknown service &#34;nope&#34;: pick one of router, maps-api`},
		{"service=router&lines=0", "lines must be a number from 1 to 10000"},
		{"service=router&lines=10001", "lines must be a number from 1 to 10000"},
		{"service=router&lines=ten", "lines must be a number from 1 to 10000"},
		{"service=router&follow=maybe", "follow must be 1 or 0"},
		{"service=%3Cscript%3E", "unknown service &#34;&lt;script&gt;&#34;"},
		{"follow=1", `unknown service &#34;&#34;`},
	} {
		resp := h.get("/logs?"+tc.query, s.cookie)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", tc.query, resp.StatusCode)
		}
		if b := body(t, resp); !strings.Contains(b, tc.want) {
			t.Errorf("%s: the page lacks %q", tc.query, tc.want)
		}
	}
	if n := h.backend.called("Logs"); n != 0 {
		t.Errorf("Logs called %d times on bad input", n)
	}
	resp := h.get("/logs?service=maps-api&lines=50", s.cookie)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if b := body(t, resp); !strings.Contains(b, "line one\nline &lt;two&gt;\n</pre>") {
		t.Errorf("the page lacks the log, escaped:\n%s", b)
	}
	if h.backend.called("Logs maps-api 50 false") != 1 {
		t.Errorf("calls %q, want Logs maps-api 50 false", h.backend.calls)
	}
	if !h.audit.has("event=console-logs", "service=maps-api", "lines=50", "follow=false") {
		t.Errorf("no audit line in %q", h.audit.all())
	}
}

func TestTailBufferKeepsTheEnd(t *testing.T) {
	t.Parallel()
	tb := &tailBuffer{max: 10}
	tb.Write([]byte("first\nsecond\nthird\n"))
	if got := tb.String(); got != "third\n" || !tb.truncated {
		t.Errorf("got %q (truncated %t), want the last whole line", got, tb.truncated)
	}
}

func TestUpgradeInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	s := h.login()
	b := body(t, h.get("/upgrade", s.cookie))
	if !strings.Contains(b, `value="2026.1.0"`) {
		t.Errorf("the form does not propose the latest release:\n%s", b)
	}
	for _, to := range []string{"", "latest", "1", "2026.1.0; rm -rf /", "<b>2026</b>"} {
		resp := h.post("/upgrade", url.Values{"to": {to}}, s)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("to=%q: status %d, want 400", to, resp.StatusCode)
		}
		if b := body(t, resp); strings.Contains(b, "<b>2026") {
			t.Errorf("to=%q went into the page unescaped", to)
		}
	}
	if n := h.backend.called("Upgrade "); n != 0 {
		t.Errorf("Upgrade called %d times on bad input", n)
	}
}

func TestCheckVersion(t *testing.T) {
	t.Parallel()
	for v, ok := range map[string]bool{
		"2025.11.3": true, "v1.2": true, "1.2.3-rc.1": true, "2026.1.0+build.7": true,
		"": false, "1": false, "1.2.3.4.5": false, "1.2.3-": false, "../1.2": false, strings.Repeat("1.", 40) + "1": false,
	} {
		if err := checkVersion(v); (err == nil) != ok {
			t.Errorf("checkVersion(%q) = %v, want ok=%t", v, err, ok)
		}
	}
}

func TestParsePairs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		text    string
		want    []string
		wantErr string
	}{
		{"a.b=1\n c = 2 \n", []string{"a.b=1", "c= 2 "}, ""},
		{"x=\n", []string{"x="}, ""},
		{"# only a comment\n\n", nil, "no setting given"},
		{"a=1\nb\n", nil, "line 2 is not NAME=VALUE"},
		{"a=1\n=2\n", nil, "line 2 is not NAME=VALUE"},
		{"a b=1", nil, `line 1: "a b" is not a setting's name`},
		{"a=1\r\na=2\r\n", nil, "line 2: a is already given on line 1"},
		{strings.Repeat("a=1\n", 1), []string{"a=1"}, ""},
	} {
		got, err := parsePairs(tc.text)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parsePairs(%q) error %v, want %q", tc.text, err, tc.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("parsePairs(%q) = %q, %v; want %q", tc.text, got, err, tc.want)
		}
	}
	var many strings.Builder
	for i := range maxPairs + 1 {
		many.WriteString("s" + strings.Repeat("x", i) + "=1\n")
	}
	if _, err := parsePairs(many.String()); err == nil || !strings.Contains(err.Error(), "at most 100") {
		t.Errorf("too many settings: %v", err)
	}
}
