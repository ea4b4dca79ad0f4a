package config

import (
	"os"
	"path/filepath"
	"testing"
)

// The console is HTTPS once the router's certificate is in the config
// dir, plain HTTP before; the URL says which.
func TestConsoleEndpoint(t *testing.T) {
	paths := Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	c := ConsoleConfig{Port: 9500, BindAddress: "10.0.0.5"}
	if e := c.Endpoint(paths); e.TLS || e.URL() != "http://10.0.0.5:9500/" {
		t.Errorf("without a certificate: %+v %s", e, e.URL())
	}
	os.MkdirAll(filepath.Join(paths.ConfigDir, CertsDirName), 0o700)
	os.WriteFile(filepath.Join(paths.ConfigDir, CertsDirName, ServerCertFile), []byte("cert"), 0o600)
	e := c.Endpoint(paths)
	if !e.TLS || e.URL() != "https://10.0.0.5:9500/" || e.KeyFile != filepath.Join(paths.ConfigDir, CertsDirName, ServerKeyFile) {
		t.Errorf("with a certificate: %+v %s", e, e.URL())
	}
	if e := (ConsoleConfig{BindAddress: "::1"}).Endpoint(paths); e.URL() != "https://[::1]:9443/" {
		t.Errorf("IPv6, default port: %s", e.URL())
	}
}
