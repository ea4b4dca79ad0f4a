package certs

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestNewACMERefusals(t *testing.T) {
	good := ACMEOptions{Directory: "https://acme.example.com/dir", Email: "ops@example.com", StorageDir: t.TempDir()}
	cases := []struct {
		name   string
		edit   func(*ACMEOptions)
		domain string
		want   string
	}{
		{"plain http directory", func(o *ACMEOptions) { o.Directory = "http://acme.example.com/dir" }, "carto.example.com", "not an https:// URL"},
		{"no e-mail", func(o *ACMEOptions) { o.Email = "" }, "carto.example.com", "not an address"},
		{"an IP for a domain", func(*ACMEOptions) {}, "10.0.0.1", "needs a DNS name"},
		{"roots that are not PEM", func(o *ACMEOptions) { o.Roots = []byte("nope") }, "carto.example.com", "no PEM certificate"},
	}
	for _, tc := range cases {
		opts := good
		tc.edit(&opts)
		_, err := NewACME(opts, tc.domain)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if _, err := NewACME(good, "carto.example.com"); err != nil {
		t.Errorf("good options refused: %v", err)
	}
}

func TestInRenewalWindow(t *testing.T) {
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	ca, err := NewCA("carto.example.com", now.Add(-100*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// Issued 100 days ago for 397 days: 297 days left of 397, not due.
	pair, err := ca.Issue("carto.example.com", now.Add(-100*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		pair   Pair
		domain string
		at     time.Time
		due    bool
		why    string
	}{
		{"fresh", pair, "carto.example.com", now, false, ""},
		{"a third left", pair, "carto.example.com", now.Add(200 * 24 * time.Hour), true, "expires in"},
		{"another domain", pair, "other.example.com", now, true, "does not cover other.example.com"},
		{"none", Pair{}, "carto.example.com", now, true, "no certificate yet"},
	}
	for _, tc := range cases {
		due, why := InRenewalWindow(tc.pair, tc.domain, tc.at)
		if due != tc.due || !strings.Contains(why, tc.why) {
			t.Errorf("%s: due=%v %q, want %v %q", tc.name, due, why, tc.due, tc.why)
		}
	}
}

// The redirect goes to the configured domain whatever Host the request
// names, and is not cached.
func TestRedirectToHTTPS(t *testing.T) {
	cases := []struct {
		domain     string
		port       int
		host, path string
		want       string
	}{
		{"carto.example.com", 443, "carto.example.com", "/workspace/?a=1", "https://carto.example.com/workspace/?a=1"},
		{"carto.example.com", 443, "carto.example.com:80", "/", "https://carto.example.com/"},
		{"carto.example.com", 8443, "carto.example.com", "/x", "https://carto.example.com:8443/x"},
		{"carto.example.com", 443, "evil.example.net", "/login", "https://carto.example.com/login"},
		{"carto.example.com", 443, "evil.example.net:80", "//evil.example.net/", "https://carto.example.com//evil.example.net/"},
		{"carto.example.com", 443, "[2001:db8::1]:80", "/", "https://carto.example.com/"},
		{"carto.example.com", 443, "", "/", "https://carto.example.com/"},
		{"2001:db8::1", 443, "x", "/", "https://[2001:db8::1]/"},
		{"2001:db8::1", 8443, "x", "/", "https://[2001:db8::1]:8443/"},
	}
	for _, tc := range cases {
		req := httptest.NewRequest(http.MethodPost, "http://placeholder"+tc.path, nil)
		req.Host = tc.host
		rec := httptest.NewRecorder()
		RedirectToHTTPS(tc.domain, tc.port).ServeHTTP(rec, req)
		if rec.Code != http.StatusTemporaryRedirect || rec.Header().Get("Location") != tc.want || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("Host %s%s on port %d: %d %q (Cache-Control %q), want 307 %q", tc.host, tc.path, tc.port, rec.Code, rec.Header().Get("Location"), rec.Header().Get("Cache-Control"), tc.want)
		}
	}
	rec := httptest.NewRecorder()
	RedirectToHTTPS("bad host/", 443).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://x/", nil))
	if rec.Code != http.StatusInternalServerError || rec.Header().Get("Location") != "" {
		t.Errorf("an invalid domain: %d %q", rec.Code, rec.Header().Get("Location"))
	}
}

// Whatever the Host and path, the Location is https on the configured
// domain and port.
func FuzzRedirectToHTTPS(f *testing.F) {
	f.Add("carto.example.com", "/a?b=c")
	f.Add("[::1]:80", "//evil.example.com/")
	f.Add("evil.example.com", "/@evil.example.com")
	f.Fuzz(func(t *testing.T, host, path string) {
		req, err := http.NewRequest(http.MethodGet, "http://placeholder/", nil)
		if err != nil {
			t.Skip()
		}
		req.Host = host
		req.URL.Path = path
		rec := httptest.NewRecorder()
		RedirectToHTTPS("carto.example.com", 8443).ServeHTTP(rec, req)
		if rec.Code != http.StatusTemporaryRedirect {
			t.Fatalf("Host %q path %q: %d", host, path, rec.Code)
		}
		loc := rec.Header().Get("Location")
		u, err := url.Parse(loc)
		if err != nil {
			t.Fatalf("Location %q does not parse: %v", loc, err)
		}
		if u.Scheme != "https" || u.User != nil || u.Host != "carto.example.com:8443" {
			t.Fatalf("Host %q path %q redirected elsewhere: %q", host, path, loc)
		}
	})
}

func TestCheckRoots(t *testing.T) {
	ca, _ := NewCA("acme.corp.example", now)
	leaf, _ := ca.Issue("acme.corp.example", now)
	leafOnly, _, _ := strings.Cut(string(leaf.CertPEM), "-----END CERTIFICATE-----\n")
	leafOnly += "-----END CERTIFICATE-----\n"
	for _, tc := range []struct {
		name string
		data []byte
		want string // "" for accepted
	}{
		{"a CA", ca.CertPEM, ""},
		{"a server certificate, then its CA", leaf.CertPEM, ""},
		{"a server certificate alone", []byte(leafOnly), `holds no CA certificate ("acme.corp.example" issued by`},
		{"a key", leaf.KeyPEM, `has a "PRIVATE KEY" block where certificates are expected`},
		{"not PEM", []byte("hello"), "is not PEM"},
		{"empty", nil, "is not PEM"},
		{"too large", append(append([]byte(nil), ca.CertPEM...), make([]byte, MaxRootsSize)...), "larger than 1048576 bytes"},
	} {
		err := CheckRoots(tc.data)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// CheckRoots never panics, and what it accepts the ACME client takes.
func FuzzCheckRoots(f *testing.F) {
	ca, _ := NewCA("acme.corp.example", now)
	leaf, _ := ca.Issue("acme.corp.example", now)
	f.Add(ca.CertPEM)
	f.Add(leaf.CertPEM)
	f.Add(leaf.KeyPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if CheckRoots(data) != nil {
			return
		}
		if _, err := NewACME(ACMEOptions{Directory: "https://acme.corp.example/dir", Email: "ops@example.com", Roots: data, StorageDir: t.TempDir()}, "carto.example.com"); err != nil {
			t.Fatalf("accepted roots the ACME client refuses: %v", err)
		}
	})
}
