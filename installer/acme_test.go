package installer

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// The agent's port-80 front redirects to the installed domain, not to
// whatever Host a request names, and the redirect is not cached.
func TestACMEFrontRedirectsToTheDomain(t *testing.T) {
	paths := Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	cfg := Config{TLS: TLSConfig{Mode: TLSACME, ACME: &ACMEConfig{Email: "ops@example.com"}}}
	cfg.Router.HTTPSPort = 8443
	if err := saveConfig(paths.file(ConfigFileName), cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(paths.ConfigDir, EnvFileName), []byte("SELFHOSTED_DOMAIN=carto.example.com\n"), 0o600); err != nil {
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
