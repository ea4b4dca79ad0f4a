package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// legacyCA is a CA as the appliance made them before name constraints:
// ten years, any name.
func legacyCA(t *testing.T, at time.Time) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "CARTO self-hosted CA for carto.example.com", Organization: []string{"carto-appliance"}},
		NotBefore: at.Add(-time.Hour), NotAfter: at.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := marshalKey(key)
	ca, err := LoadCA(pemBlock("CERTIFICATE", der), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// forge is what anyone holding the CA's key could sign: a server
// certificate for any names.
func forge(t *testing.T, ca *CA, cn string, dns []string, ips []net.IP) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn}, DNSNames: dns, IPAddresses: ips,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// opensslVerify runs real `openssl verify` at the tests' time; it skips
// the test when openssl is not installed.
func opensslVerify(t *testing.T, roots []*x509.Certificate, untrusted []*x509.Certificate, leaf *x509.Certificate, at time.Time) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	write := func(name string, cs []*x509.Certificate) string {
		var b []byte
		for _, c := range cs {
			b = append(b, pemBlock("CERTIFICATE", c.Raw)...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	args := []string{"verify", "-attime", strconv.FormatInt(at.Unix(), 10), "-purpose", "sslserver", "-CAfile", write("roots.pem", roots)}
	if len(untrusted) > 0 {
		args = append(args, "-untrusted", write("untrusted.pem", untrusted))
	}
	out, err := exec.Command("openssl", append(args, write("leaf.pem", []*x509.Certificate{leaf}))...).CombinedOutput()
	return string(out), err
}

// The CA's key signs nothing that a client trusting the CA accepts for
// another name: real openssl and Go refuse a forged certificate for
// another domain, an address, or a common name without alternative
// names, while the appliance's own certificate verifies.
func TestCANameConstraints(t *testing.T) {
	for _, tc := range []struct {
		domain string
		forged []*x509.Certificate
	}{
		{"carto.example.com", nil},
		{"10.1.2.3", nil},
	} {
		ca, err := NewCA(tc.domain, now)
		if err != nil {
			t.Fatal(err)
		}
		ext := false
		for _, e := range ca.Cert.Extensions {
			if e.Id.Equal([]int{2, 5, 29, 30}) {
				ext = e.Critical
			}
		}
		if !ext {
			t.Errorf("%s: the CA has no critical name constraints extension", tc.domain)
		}
		if life := ca.Cert.NotAfter.Sub(ca.Cert.NotBefore); life > CALifetime+time.Hour || life < 2*365*24*time.Hour {
			t.Errorf("%s: the CA lives %s", tc.domain, life)
		}
		p, _ := ca.Issue(tc.domain, now)
		own, _ := parseCerts(p.CertPEM, "own")
		if out, err := opensslVerify(t, []*x509.Certificate{ca.Cert}, nil, own[0], now); err != nil {
			t.Errorf("%s: openssl refuses the appliance's own certificate: %v\n%s", tc.domain, err, out)
		}
		forged := map[string]*x509.Certificate{
			"another domain":             forge(t, ca, "bank.example.net", []string{"bank.example.net"}, nil),
			"a parent domain":            forge(t, ca, "example.com", []string{"example.com"}, nil),
			"another address":            forge(t, ca, "", nil, []net.IP{net.ParseIP("192.0.2.1")}),
			"an IPv6 address":            forge(t, ca, "", nil, []net.IP{net.ParseIP("2001:db8::1")}),
			"a common name, no SAN":      forge(t, ca, "bank.example.net", nil, nil),
			"the domain and another one": forge(t, ca, "", []string{tc.domain, "bank.example.net"}, nil),
		}
		for name, leaf := range forged {
			out, err := opensslVerify(t, []*x509.Certificate{ca.Cert}, nil, leaf, now)
			if err == nil || !strings.Contains(out, "violation") {
				t.Errorf("%s: openssl verify accepted a certificate for %s: %v\n%s", tc.domain, name, err, out)
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca.Cert)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now}); err == nil && (len(leaf.DNSNames) > 0 || len(leaf.IPAddresses) > 0) {
				t.Errorf("%s: Go accepted a certificate for %s", tc.domain, name)
			}
		}
	}
}

func TestNeedsRotation(t *testing.T) {
	ca, _ := NewCA("carto.example.com", now)
	for _, tc := range []struct {
		name   string
		ca     *CA
		domain string
		at     time.Time
		why    string // "" for no rotation
	}{
		{"fresh", ca, "carto.example.com", now, ""},
		{"the domain in capitals", ca, "CARTO.example.com", now, ""},
		{"unconstrained (before name constraints)", legacyCA(t, now), "carto.example.com", now, "no name constraints"},
		{"another domain", ca, "maps.example.com", now, "constrained to carto.example.com, excluded 0.0.0.0/0, excluded ::/0, not maps.example.com"},
		{"an address instead", ca, "10.0.0.1", now, "not 10.0.0.1"},
		{"a subdomain", ca, "x.carto.example.com", now, "not x.carto.example.com"},
		{"near its end", ca, "carto.example.com", ca.Cert.NotAfter.Add(-CARotateBefore + time.Hour), "it ends on"},
		{"ended", ca, "carto.example.com", ca.Cert.NotAfter.Add(time.Hour), "it ends on"},
	} {
		rotate, why := tc.ca.NeedsRotation(tc.domain, tc.at)
		if rotate != (tc.why != "") || !strings.Contains(why, tc.why) {
			t.Errorf("%s: %v %q, want %q", tc.name, rotate, why, tc.why)
		}
	}
}

// A CA being replaced keeps serving the router for CAOverlap while the
// new one is published beside it, less when it ends sooner, and not at all
// when clients trusting it would refuse its certificate for the domain.
func TestHandOver(t *testing.T) {
	const domain = "carto.example.com"
	ca, _ := NewCA(domain, now)
	for _, tc := range []struct {
		name   string
		ca     *CA
		domain string
		at     time.Time
		want   time.Time
	}{
		{"unconstrained", legacyCA(t, now.Add(-5*365*24*time.Hour)), domain, now, now.Add(CAOverlap)},
		{"unconstrained, for a new domain", legacyCA(t, now), "maps.example.com", now, now.Add(CAOverlap)},
		{"near its end", ca, domain, ca.Cert.NotAfter.Add(-CARotateBefore), ca.Cert.NotAfter.Add(-CARotateBefore + CAOverlap)},
		{"ending within the overlap", ca, domain, ca.Cert.NotAfter.Add(-40 * 24 * time.Hour), ca.Cert.NotAfter.Add(-RenewBefore)},
		{"ended", ca, domain, ca.Cert.NotAfter.Add(time.Hour), ca.Cert.NotAfter.Add(time.Hour)},
		{"constrained to another domain", ca, "maps.example.com", now, now},
	} {
		if got := tc.ca.HandOver(tc.domain, tc.at); !got.Equal(tc.want) {
			t.Errorf("%s: hands over at %s, want %s", tc.name, got, tc.want)
		}
	}
}
