package supervisor

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
)

// The front answers the HTTP port while the settings are in acme mode, and
// Release lets go of it at once when they leave it: an operation the agent
// runs hands the port to the router without waiting for the loop.
func TestFrontReleasesThePortWhenAcmeModeEnds(t *testing.T) {
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	if err := os.MkdirAll(paths.ConfigDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if err := os.WriteFile(paths.File(config.EnvFileName), []byte("SELFHOSTED_DOMAIN=carto.example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	save := func(mode string) {
		cfg := config.Config{Router: config.RouterConfig{HTTPPort: port, HTTPSPort: port + 1, BindAddress: "127.0.0.1"}, TLS: config.TLSConfig{Mode: mode}}
		if mode == config.TLSACME {
			cfg.TLS.ACME = &config.ACMEConfig{Email: "ops@example.com"}
		}
		if err := config.Save(paths.File(config.ConfigFileName), cfg); err != nil {
			t.Fatal(err)
		}
	}
	get := func() (*http.Response, error) {
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		return c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/maps")
	}

	var logs strings.Builder
	f := NewFront(paths, func(format string, args ...any) { logs.WriteString(format + "\n") })
	defer f.Close()
	save(config.TLSACME)
	f.Sync()
	resp, err := get()
	if err != nil {
		t.Fatalf("in acme mode the front does not answer: %v", err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 != 3 || !strings.HasPrefix(loc, "https://carto.example.com") || resp.Header.Get(installer.FrontHeader) == "" {
		t.Errorf("the front answered %s, Location %q", resp.Status, loc)
	}

	save(config.TLSSelfSigned)
	if err := f.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if resp, err := get(); err == nil {
		resp.Body.Close()
		t.Errorf("after Release the front still answers: %s", resp.Status)
	}
	// The port is free for the router.
	ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("the port is not free after Release: %v", err)
	}
	ln.Close()
	if !strings.Contains(logs.String(), "event=front-closed") {
		t.Errorf("the front's closing was not logged:\n%s", logs.String())
	}
}
