package installer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/certs"
	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
)

// writeLegacyCA puts a CA as the appliance made them before name
// constraints (ten years, any name) into the state dir, with the router's
// certificate from it and the CA file clients were given.
func writeLegacyCA(t *testing.T, paths config.Paths, domain string, at, leafAt time.Time) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "CARTO self-hosted CA for " + domain, Organization: []string{"carto-appliance"}},
		NotBefore: at.Add(-time.Hour), NotAfter: at.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	ca, err := certs.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.Issue(domain, leafAt)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(paths.CADir(), 0o700)
	certsDir := filepath.Join(paths.ConfigDir, config.CertsDirName)
	os.MkdirAll(certsDir, 0o700)
	for path, b := range map[string][]byte{
		filepath.Join(paths.CADir(), caCertFile): certPEM, filepath.Join(paths.CADir(), caKeyFile): keyPEM,
		filepath.Join(certsDir, config.ServerCertFile): pair.CertPEM, filepath.Join(certsDir, config.ServerKeyFile): pair.KeyPEM,
		filepath.Join(certsDir, config.CACertFile): certPEM,
	} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certPEM
}

func parsePEMCerts(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// An install whose CA has no name constraints rotates by itself, in two
// steps, each what the agent's hourly look starts: first the new CA is
// published beside the old one while the router keeps its certificate
// (clients that trust the old CA keep working); after the overlap the
// router gets a certificate from the new CA, the CA file holds the new one
// alone and the old key is gone. Status says when the CA ends and when it
// rotated.
func TestCARotation(t *testing.T) {
	const domain = "carto.example.com"
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	certsDir := filepath.Join(paths.ConfigDir, config.CertsDirName)
	legacy := writeLegacyCA(t, paths, domain, now.Add(-2*365*24*time.Hour), now.Add(-10*24*time.Hour))
	step := func(at time.Time) *desired {
		t.Helper()
		if p, err := planCA(paths, domain, at); err != nil || !p.changed() {
			t.Fatalf("at %s the agent's check sees nothing to do: %v", at, err)
		}
		d := &desired{cfg: config.Config{}, env: envfile.NewEnv("SELFHOSTED_DOMAIN", domain)}
		if err := planTLS(paths, d, TLSInput{}, at); err != nil {
			t.Fatal(err)
		}
		if err := d.ca.save(paths); err != nil {
			t.Fatal(err)
		}
		for name, b := range d.certs {
			if err := os.WriteFile(filepath.Join(certsDir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if p, err := planCA(paths, domain, at); err != nil || p.changed() {
			t.Fatalf("after the step there is still something to do: %v", err)
		}
		return d
	}
	if st, _ := caStatus(paths, domain, now); st == nil || !strings.Contains(st.Warning, "no name constraints") || len(st.Names) != 0 {
		t.Errorf("status of the legacy CA: %+v", st)
	}

	// Step 1: published beside the old one.
	d := step(now)
	if d.certs[config.ServerCertFile] != nil || d.certs[config.ServerKeyFile] != nil {
		t.Error("the router's certificate changed when the rotation started")
	}
	if len(d.warnings) != 1 || !strings.Contains(d.warnings[0], "no name constraints") || !strings.Contains(d.warnings[0], "before 2027-01-21") {
		t.Errorf("warnings: %v", d.warnings)
	}
	bundle := parsePEMCerts(t, d.certs[config.CACertFile])
	if len(bundle) != 2 || string(legacy) != string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: bundle[0].Raw})) || len(bundle[1].PermittedDNSDomains) != 1 {
		t.Fatalf("the CA file during the rotation: %d certificates", len(bundle))
	}
	st, err := caStatus(paths, domain, now)
	if err != nil || st.Rotating == nil || !st.Rotating.SwitchAt.Equal(now.Add(certs.CAOverlap)) || st.Warning != "" || !strings.Contains(st.Reason, "no name constraints") {
		t.Errorf("status during the rotation: %+v %v", st, err)
	}
	// The next day nothing changes.
	if p, _ := planCA(paths, domain, now.Add(24*time.Hour)); p.changed() {
		t.Error("the rotation started again")
	}

	// Step 2: the switch.
	at := now.Add(certs.CAOverlap)
	d = step(at)
	leaf := parsePEMCerts(t, d.certs[config.ServerCertFile])
	bundle = parsePEMCerts(t, d.certs[config.CACertFile])
	if len(leaf) == 0 || len(bundle) != 1 || leaf[0].CheckSignatureFrom(bundle[0]) != nil {
		t.Fatalf("after the switch: %d certificates served, %d in the CA file, or not the new CA's", len(leaf), len(bundle))
	}
	if bundle[0].Subject.CommonName != "CARTO self-hosted CA for "+domain || bundle[0].NotAfter.After(at.Add(certs.CALifetime)) {
		t.Errorf("the new CA: %s until %s", bundle[0].Subject, bundle[0].NotAfter)
	}
	for _, gone := range []string{caKeyFile + ".prev", nextCAKeyFile, nextCACertFile} {
		if _, err := os.Stat(filepath.Join(paths.CADir(), gone)); err == nil {
			t.Errorf("%s is left after the switch", gone)
		}
	}
	st, err = caStatus(paths, domain, at)
	if err != nil || st.Rotating != nil || st.Rotated == nil || !st.Rotated.Equal(at) || len(st.Names) != 1 || st.Names[0] != domain || !st.NotAfter.Equal(bundle[0].NotAfter) {
		t.Errorf("status after the rotation: %+v %v", st, err)
	}

	// A new domain: the CA cannot serve it, so a new one takes over at once.
	const moved = "maps.example.com"
	d = &desired{cfg: config.Config{}, env: envfile.NewEnv("SELFHOSTED_DOMAIN", moved)}
	if err := planTLS(paths, d, TLSInput{}, at); err != nil {
		t.Fatal(err)
	}
	leaf, bundle = parsePEMCerts(t, d.certs[config.ServerCertFile]), parsePEMCerts(t, d.certs[config.CACertFile])
	if len(bundle) != 1 || bundle[0].PermittedDNSDomains[0] != moved || leaf[0].CheckSignatureFrom(bundle[0]) != nil {
		t.Errorf("a new domain: the CA file holds %d certificates", len(bundle))
	}
	if len(d.warnings) == 0 || !strings.Contains(d.warnings[0], "switched to the new one at once") {
		t.Errorf("warnings: %v", d.warnings)
	}
}

// A crash between writing the new CA's key and its certificate leaves a
// CA that still loads (the old one), and the switch is done again.
func TestCASwitchCrash(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	old, _ := certs.NewCA("carto.example.com", now)
	next, _ := certs.NewCA("carto.example.com", now)
	os.MkdirAll(paths.CADir(), 0o700)
	os.WriteFile(filepath.Join(paths.CADir(), caCertFile), old.CertPEM, 0o644)
	os.WriteFile(filepath.Join(paths.CADir(), caKeyFile+".prev"), old.KeyPEM, 0o600)
	os.WriteFile(filepath.Join(paths.CADir(), caKeyFile), next.KeyPEM, 0o600)
	ca, err := readCA(paths.CADir(), caCertFile, caKeyFile)
	if err != nil || !ca.Cert.Equal(old.Cert) {
		t.Errorf("%v", err)
	}
}
