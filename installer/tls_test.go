package installer

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/certs"
	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
)

// planTLS issues a certificate once, keeps it while it is good, issues it
// again on request, and refuses what it cannot serve, naming the fix.
func TestPlanTLS(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	newDesired := func(mode string) *desired {
		return &desired{cfg: config.Config{TLS: config.TLSConfig{Mode: mode}}, env: envfile.NewEnv("SELFHOSTED_DOMAIN", "carto.example.com"),
			customer: []byte("SELFHOSTED_DOMAIN=carto.example.com\n"), key: []byte("{}")}
	}
	// The plans are written by the real commit, as an install does, so
	// that the next plan reads what commit left.
	commit := func(d *desired) {
		t.Helper()
		if err := commit(paths, d, nil); err != nil {
			t.Fatal(err)
		}
	}

	first := newDesired("")
	if err := planTLS(paths, first, TLSInput{}, now); err != nil {
		t.Fatal(err)
	}
	if first.ca == nil || !first.ca.newCur || first.certs[config.ServerCertFile] == nil || first.certs[config.ServerKeyFile] == nil || first.certs[config.CACertFile] == nil || len(first.warnings) != 0 {
		t.Fatalf("a first plan issues a CA and a certificate: ca=%v certs=%d warnings=%v", first.ca != nil, len(first.certs), first.warnings)
	}
	commit(first)
	served, _ := os.ReadFile(filepath.Join(paths.ConfigDir, config.CertsDirName, routerMountDir, config.ServerCertFile))
	if !bytes.Equal(served, first.certs[config.ServerCertFile]) {
		t.Error("commit did not give the router the certificate the plan issued")
	}

	again := newDesired("")
	if err := planTLS(paths, again, TLSInput{}, now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if again.ca != nil || len(again.certs) != 0 || len(again.warnings) != 0 {
		t.Errorf("a good certificate was replaced: ca=%v certs=%d warnings=%v", again.ca != nil, len(again.certs), again.warnings)
	}

	late := newDesired("")
	if err := planTLS(paths, late, TLSInput{}, now.Add(370*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if late.certs[config.ServerCertFile] == nil || len(late.warnings) != 1 || !strings.Contains(late.warnings[0], "expires on") {
		t.Errorf("a certificate near expiry was not issued again: certs=%d warnings=%v", len(late.certs), late.warnings)
	}

	asked := newDesired("")
	if err := planTLS(paths, asked, TLSInput{Renew: true}, now); err != nil || asked.certs[config.ServerCertFile] == nil {
		t.Errorf("a renewal on request: %v, certs=%d", err, len(asked.certs))
	}

	for _, tc := range []struct {
		name string
		mode string
		in   TLSInput
		want string
	}{
		{"a certificate without its key", "", TLSInput{CertFile: "/x.crt"}, "the certificate and its key go together"},
		{"a missing certificate file", "", TLSInput{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"}, "the certificate: open /nonexistent.crt"},
		{"an unknown mode", "acme-ish", TLSInput{}, `tls.mode "acme-ish": use self-signed, custom, acme or offload`},
		{"renewing a custom certificate", config.TLSCustom, TLSInput{Renew: true}, "its issuer renews it"},
		{"renewing with TLS offloaded", config.TLSOffload, TLSInput{Renew: true}, "offloaded to the load balancer"},
	} {
		err := planTLS(paths, newDesired(tc.mode), tc.in, now)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}

	// Custom mode serves what was imported, and says so when it is gone.
	os.Remove(filepath.Join(paths.ConfigDir, config.CertsDirName, config.ServerCertFile))
	if err := planTLS(paths, newDesired(config.TLSCustom), TLSInput{}, now); err == nil || !strings.Contains(err.Error(), "import the certificate again") {
		t.Errorf("custom mode without a certificate: %v", err)
	}
}

// A wrong --ignore-preflight is an error naming the checks, not a report
// the command cannot print.
func TestPreflightRefusesUnknownIgnore(t *testing.T) {
	dir := t.TempDir()
	customer, key := filepath.Join(dir, "customer.env"), filepath.Join(dir, "key.json")
	os.WriteFile(customer, []byte("SELFHOSTED_TENANT_ID=onp-x\nSELFHOSTED_DOMAIN=carto.example.com\nCARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION=2025.10.7\nPOSTGRES_ADMIN_PASSWORD=secret123\nWORKSPACE_POSTGRES_PASSWORD=secret456\n"), 0o600)
	os.WriteFile(key, []byte(`{"type":"service_account"}`), 0o600)
	report, err := Preflight(t.Context(), InstallOptions{
		Options:     Options{Paths: config.Paths{ConfigDir: filepath.Join(dir, "c"), StateDir: filepath.Join(dir, "s")}},
		CustomerEnv: customer, KeyFile: key, IgnorePreflight: []string{"nope"},
	})
	if err == nil || report != nil || !strings.Contains(err.Error(), `preflight check "nope" to ignore: no such check`) {
		t.Errorf("report %v, err %v", report, err)
	}
}

// Two ways of doing TLS at once are refused before anything is read.
func TestInstallRefusesTwoTLSModes(t *testing.T) {
	dir := t.TempDir()
	_, err := Preflight(t.Context(), InstallOptions{
		Options:    Options{Paths: config.Paths{ConfigDir: filepath.Join(dir, "c"), StateDir: filepath.Join(dir, "s")}},
		TLSOffload: true, ACME: ACMEInput{Email: "ops@example.com"},
	})
	if err == nil || !strings.Contains(err.Error(), "a certificate, TLS offload and ACME each choose how TLS works: give one of them") {
		t.Errorf("offload and acme together: %v", err)
	}
}

// The ACME client trusts an internal CA's roots and the proxy's CA, each
// alone or both, whatever their final newlines.
func TestACMEClientRoots(t *testing.T) {
	now := time.Now()
	a, _ := certs.NewCA("a.example.com", now)
	b, _ := certs.NewCA("b.example.com", now)
	cfg := config.Config{TLS: config.TLSConfig{Mode: config.TLSACME, ACME: &config.ACMEConfig{Email: "ops@example.com", Directory: "https://ca.corp/dir"}}}
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	for _, tc := range []struct {
		name           string
		roots, proxyCA []byte
		want           int
	}{{"none", nil, nil, 0}, {"an internal CA", a.CertPEM, nil, 1}, {"the proxy's CA", nil, b.CertPEM, 1}, {"both", bytes.TrimSpace(a.CertPEM), b.CertPEM, 2}} {
		if _, err := acmeClient(paths, cfg, "carto.example.com", tc.roots, tc.proxyCA); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		n, rest := 0, joinPEM(tc.roots, tc.proxyCA)
		for {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			n++
		}
		if n != tc.want {
			t.Errorf("%s: %d certificates trusted, want %d", tc.name, n, tc.want)
		}
	}
}
