package installer

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/internal/testca"
)

// customCert writes a certificate for hosts and its key, from a throwaway
// CA, and returns their paths.
func customCert(t *testing.T, hosts ...string) (cert, key string) {
	t.Helper()
	ca, err := testca.NewCA("customer CA")
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := ca.Issue(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(cert, c, 0o600)
	os.WriteFile(key, k, 0o600)
	return cert, key
}

func routerCert(t *testing.T, paths config.Paths) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(paths.ConfigDir, config.CertsDirName, routerMountDir, config.ServerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A customer's certificate is checked, installed where the router reads
// it, and the router reloaded (HUP) rather than recreated: nothing else is
// touched.
func TestImportCertificate(t *testing.T) {
	paths, f := applied(t, config.Config{})
	cert, key := customCert(t, "carto.example.com")
	res, err := ImportCertificate(t.Context(), Options{Paths: paths}, TLSInput{CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(cert)
	if got := routerCert(t, paths); !bytes.Contains(got, bytes.TrimSpace(want)) {
		t.Error("the router does not see the imported certificate")
	}
	if cfg := installedConfig(t, paths); cfg.TLS.Mode != config.TLSCustom {
		t.Errorf("tls.mode %q", cfg.TLS.Mode)
	}
	if res.Applied.Changed() || !slices.Equal(f.Signals, []string{routerService + " HUP"}) {
		t.Errorf("applied %+v, signals %q", res.Applied, f.Signals)
	}
	if r := lastRun(t, paths); r.Action != "certs import" || r.Outcome != steps.Succeeded {
		t.Errorf("journal %+v", r)
	}

	// A custom certificate is renewed by its issuer.
	_, err = RenewCertificate(t.Context(), Options{Paths: paths})
	if err == nil || !strings.Contains(err.Error(), "certs import") {
		t.Errorf("renew custom: %v", err)
	}

	// Back to the appliance's CA: a certificate from it, the router
	// reloaded again.
	if _, err := UseSelfSigned(t.Context(), Options{Paths: paths}); err != nil {
		t.Fatal(err)
	}
	if got := routerCert(t, paths); bytes.Contains(got, bytes.TrimSpace(want)) {
		t.Error("the imported certificate is still served")
	}
	if cs, err := GetCertificateStatus(paths); err != nil || cs.Mode != config.TLSSelfSigned || cs.Info == nil || cs.Warning != "" {
		t.Errorf("status %+v %v", cs, err)
	}
	if len(f.Signals) != 2 {
		t.Errorf("signals %q", f.Signals)
	}
	f.allClosed(t)
}

// A certificate that does not fit is refused, naming the input and why,
// before anything changes or the engine is asked anything.
func TestImportCertificateRefusals(t *testing.T) {
	paths, f := applied(t, config.Config{})
	before := dirSnapshot(t, paths.ConfigDir)
	other, otherKey := customCert(t, "other.example.com")
	cert, _ := customCert(t, "carto.example.com")
	cases := []struct {
		name string
		in   TLSInput
		want Input
		text string
	}{
		{"another domain", TLSInput{CertFile: other, KeyFile: otherKey}, InputTLSCert, other},
		{"another certificate's key", TLSInput{CertFile: cert, KeyFile: otherKey}, InputTLSCert, cert},
		{"no key", TLSInput{CertFile: cert}, InputTLSCert, "the certificate and its key"},
		{"missing key file", TLSInput{CertFile: cert, KeyFile: filepath.Join(t.TempDir(), "none.key")}, InputTLSKey, "the key"},
	}
	for _, c := range cases {
		_, err := ImportCertificate(t.Context(), Options{Paths: paths}, c.in)
		if inputOf(err) != c.want || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: %v (input %q), want %q naming %q", c.name, err, inputOf(err), c.want, c.text)
		}
	}
	if len(f.Log) != 0 || !sameFiles(before, dirSnapshot(t, paths.ConfigDir)) {
		t.Errorf("a refused certificate changed something: %q", f.Log)
	}
}

// Offload recreates the router without its HTTPS port (no reload needed)
// and leaves nothing to renew; back to self-signed, a renewal issues a new
// certificate and reloads the router.
func TestOffloadAndRenew(t *testing.T) {
	paths, f := applied(t, config.Config{})
	res, err := OffloadTLS(t.Context(), Options{Paths: paths})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Applied.Recreated, routerService) || len(f.Signals) != 0 {
		t.Errorf("offload: %+v, signals %q", res.Applied, f.Signals)
	}
	if compose := readFile(t, filepath.Join(paths.ConfigDir, "docker-compose.yml")); strings.Contains(compose, "ROUTER_HTTPS_PORT") {
		t.Errorf("the router still publishes 443:\n%s", compose)
	}
	if cs, _ := GetCertificateStatus(paths); cs.Mode != config.TLSOffload || !strings.Contains(cs.Note, "load balancer") {
		t.Errorf("status %+v", cs)
	}
	before := dirSnapshot(t, paths.ConfigDir)
	if _, err := RenewCertificate(t.Context(), Options{Paths: paths}); err == nil || !strings.Contains(err.Error(), "no certificate here to renew") {
		t.Errorf("renew offloaded: %v", err)
	}
	if !sameFiles(before, dirSnapshot(t, paths.ConfigDir)) {
		t.Error("a refused renewal changed the config dir")
	}

	if _, err := UseSelfSigned(t.Context(), Options{Paths: paths}); err != nil {
		t.Fatal(err)
	}
	first := routerCert(t, paths)
	signals := len(f.Signals)
	res, err = RenewCertificate(t.Context(), Options{Paths: paths})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first, routerCert(t, paths)) {
		t.Error("the renewal did not issue a new certificate")
	}
	if len(f.Signals) != signals+1 || res.Applied.Changed() {
		t.Errorf("renew: signals %q, applied %+v", f.Signals, res.Applied)
	}
	if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "a renewal was asked for") }) {
		t.Errorf("warnings %q", res.Warnings)
	}
	f.allClosed(t)
}
