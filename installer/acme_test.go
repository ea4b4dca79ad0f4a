package installer

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/certs"
	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
)

// The agent's port-80 front redirects to the installed domain, not to
// whatever Host a request names, and the redirect is not cached.
func TestACMEFrontRedirectsToTheDomain(t *testing.T) {
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	cfg := config.Config{TLS: config.TLSConfig{Mode: config.TLSACME, ACME: &config.ACMEConfig{Email: "ops@example.com"}}}
	cfg.Router.HTTPSPort = 8443
	if err := config.Save(paths.File(config.ConfigFileName), cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(paths.ConfigDir, config.EnvFileName), []byte("SELFHOSTED_DOMAIN=carto.example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	front, err := ACMEFront(paths)
	if err != nil || front == nil {
		t.Fatalf("front: %v %v", front, err)
	}
	for _, host := range []string{"carto.example.com", "evil.example.net", "evil.example.net:80"} {
		req := httptest.NewRequest(http.MethodGet, "http://x/workspace/?a=1", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		front.Handler.ServeHTTP(rec, req)
		if loc := rec.Header().Get("Location"); rec.Code != http.StatusTemporaryRedirect || loc != "https://carto.example.com:8443/workspace/?a=1" || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("Host %s: %d to %q", host, rec.Code, loc)
		}
	}
}

// --acme-ca-cert takes a bounded regular PEM file holding a CA; anything
// else is refused quickly, naming the flag. appliance.yaml's
// tls.acme.ca_cert names only the appliance's own copy.
func TestACMERootsFile(t *testing.T) {
	dir := t.TempDir()
	ca, _ := certs.NewCA("acme.corp.example", time.Now())
	leaf, _ := ca.Issue("acme.corp.example", time.Now())
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	good := file("ca.pem", ca.CertPEM)
	for _, tc := range []struct {
		name, path, want string
	}{
		{"a FIFO", fifo, "the ACME CA's roots: " + fifo + " is a FIFO, not a regular file"},
		{"a device", "/dev/zero", "the ACME CA's roots: /dev/zero is a character device, not a regular file"},
		{"a directory", dir, "not a regular file"},
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"too large", file("big.pem", append(append([]byte(nil), ca.CertPEM...), make([]byte, certs.MaxRootsSize)...)), "too large: over 1 MiB"},
		{"a key", file("key.pem", leaf.KeyPEM), `"PRIVATE KEY" block`},
		{"a server certificate", file("leaf.pem", leaf.CertPEM[:bytes.Index(leaf.CertPEM, []byte("-----END"))+len("-----END CERTIFICATE-----\n")]), "holds no CA certificate"},
	} {
		done := make(chan error, 1)
		go func() {
			var cfg config.Config
			_, err := ACMEInput{CACertFile: tc.path}.apply(&cfg)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) || inputOf(err) != InputACMECACert {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: reading it hangs", tc.name)
		}
	}
	var cfg config.Config
	roots, err := ACMEInput{CACertFile: good}.apply(&cfg)
	if err != nil || !bytes.Equal(roots, ca.CertPEM) || cfg.TLS.ACME.CACert != config.ACMECAFileName {
		t.Errorf("a CA file: %v, ca_cert %q", err, cfg.TLS.ACME.CACert)
	}

	for _, path := range []string{"/etc/ssl/certs/ca-certificates.crt", "../../etc/passwd", "other.crt"} {
		c := config.Config{TLS: config.TLSConfig{Mode: config.TLSACME, ACME: &config.ACMEConfig{Email: "ops@example.com", CACert: path}}}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "appliance.yaml tls.acme.ca_cert") {
			t.Errorf("ca_cert %q: %v", path, err)
		}
	}
	c := config.Config{TLS: config.TLSConfig{Mode: config.TLSACME, ACME: &config.ACMEConfig{Email: "ops@example.com", CACert: config.ACMECAFileName}}}
	if err := c.Validate(); err != nil {
		t.Errorf("ca_cert %s: %v", config.ACMECAFileName, err)
	}
	// The installed copy is checked too when the client is made.
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	os.MkdirAll(filepath.Join(paths.ConfigDir, config.CertsDirName), 0o700)
	os.WriteFile(filepath.Join(paths.ConfigDir, config.CertsDirName, config.ACMECAFileName), leaf.KeyPEM, 0o600)
	if _, err := acmeClient(paths, c, "carto.example.com", nil, nil); err == nil || !strings.Contains(err.Error(), "appliance.yaml tls.acme.ca_cert") {
		t.Errorf("a damaged copy: %v", err)
	}
}

// planACME asks the CA only when the router needs a certificate: none
// yet, or on request; nothing is obtained while planning.
func TestPlanACMEDecides(t *testing.T) {
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	newD := func() *desired {
		return &desired{cfg: config.Config{TLS: config.TLSConfig{Mode: config.TLSACME, ACME: &config.ACMEConfig{Email: "ops@example.com", Directory: "https://127.0.0.1:1/dir"}}},
			env: envfile.NewEnv("SELFHOSTED_DOMAIN", "carto.example.com")}
	}
	d := newD()
	if err := planACME(paths, d, TLSInput{}, time.Now()); err != nil || d.acme == nil || d.acme.force || d.acme.why == "" {
		t.Errorf("no certificate yet: %+v %v", d.acme, err)
	}
	d = newD()
	if err := planACME(paths, d, TLSInput{Renew: true}, time.Now()); err != nil || d.acme == nil || !d.acme.force {
		t.Errorf("a renewal on request: %+v %v", d.acme, err)
	}
	if entries, _ := os.ReadDir(paths.ConfigDir); len(entries) != 0 {
		t.Errorf("planning wrote %v", entries)
	}
}
