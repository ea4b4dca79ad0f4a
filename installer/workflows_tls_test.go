package installer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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

// The agent's look at the certificate: a fresh self-signed one needs
// nothing until it nears its end; a custom one warns by threshold, and
// once expired by a threshold of its own; an offloaded router has none.
func TestCheckCertificate(t *testing.T) {
	paths, _ := applied(t, config.Config{})
	now := time.Now()
	if c, err := CheckCertificate(t.Context(), paths, now); err != nil || c.Renew || c.Warning != "" {
		t.Errorf("fresh: %+v %v", c, err)
	}
	if c, err := CheckCertificate(t.Context(), paths, now.AddDate(2, 0, 0)); err != nil || !c.Renew || c.Why == "" {
		t.Errorf("two years on: %+v %v", c, err)
	}

	cert, key := customCert(t, "carto.example.com")
	if _, err := ImportCertificate(t.Context(), Options{Paths: paths}, TLSInput{CertFile: cert, KeyFile: key}); err != nil {
		t.Fatal(err)
	}
	if c, err := CheckCertificate(t.Context(), paths, now); err != nil || c.Renew || c.Threshold <= 0 || !strings.Contains(c.Warning, "renew it") {
		t.Errorf("custom, a day left: %+v %v", c, err)
	}
	if c, err := CheckCertificate(t.Context(), paths, now.Add(48*time.Hour)); err != nil || c.Threshold != -1 || !strings.Contains(c.Warning, "expired") {
		t.Errorf("custom, expired: %+v %v", c, err)
	}

	if _, err := OffloadTLS(t.Context(), Options{Paths: paths}); err != nil {
		t.Fatal(err)
	}
	if c, err := CheckCertificate(t.Context(), paths, now.AddDate(5, 0, 0)); err != nil || c != (CertificateCheck{}) {
		t.Errorf("offload: %+v %v", c, err)
	}
	if _, err := CheckCertificate(t.Context(), config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}, now); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("nothing installed: %v", err)
	}
}

// Leaving acme mode, the router publishes the HTTP port again: the
// agent's front is asked to let go of it before the converge, and only
// then.
func TestLeavingACMEReleasesTheHTTPPort(t *testing.T) {
	f, _ := fakes(t)
	paths := installed(t, config.Config{TLS: config.TLSConfig{Mode: config.TLSACME, ACME: &config.ACMEConfig{Email: "ops@example.com", Directory: "https://127.0.0.1:1/dir"}}})
	released := 0
	opts := Options{Paths: paths, ReleaseHTTPPort: func(context.Context) error {
		released++
		f.record("release http port")
		return nil
	}}
	if _, err := UseSelfSigned(t.Context(), opts); err != nil {
		t.Fatal(err)
	}
	if rel, up := slices.Index(f.Log, "release http port"), slices.Index(f.Log, "apply carto"); released != 1 || rel < 0 || rel > up {
		t.Errorf("released %d times: %q", released, f.Log)
	}
	if _, err := Apply(t.Context(), opts); err != nil || released != 1 {
		t.Errorf("not leaving acme: released %d times, %v", released, err)
	}
}
