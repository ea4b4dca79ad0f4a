package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// issuer signs certificates for the tests: a root, an intermediate under
// it, and leaves.
type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t *testing.T, tmpl *x509.Certificate, parent *issuer, key *ecdsa.PrivateKey) *issuer {
	t.Helper()
	tmpl.SerialNumber = serial()
	signer, parentCert := key, tmpl
	if parent != nil {
		signer, parentCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &issuer{cert: c, key: key}
}

func caTmpl(name string) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: name}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(3650 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
}

func leafTmpl(names ...string) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: names[0]}, DNSNames: names, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
}

func certPEM(cs ...*issuer) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, pemBlock("CERTIFICATE", c.cert.Raw)...)
	}
	return out
}

func keyPEM(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	b, err := marshalKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCheckCustom(t *testing.T) {
	root := sign(t, caTmpl("Corp Root"), nil, newKey(t))
	inter := sign(t, caTmpl("Corp Issuing CA"), root, newKey(t))
	leafKey := newKey(t)
	leaf := sign(t, leafTmpl("carto.corp.example"), inter, leafKey)
	wildKey := newKey(t)
	wild := sign(t, leafTmpl("*.corp.example"), inter, wildKey)
	expiredT := leafTmpl("carto.corp.example")
	expiredT.NotBefore, expiredT.NotAfter = now.Add(-400*24*time.Hour), now.Add(-24*time.Hour)
	expired := sign(t, expiredT, inter, leafKey)
	futureT := leafTmpl("carto.corp.example")
	futureT.NotBefore = now.Add(48 * time.Hour)
	future := sign(t, futureT, inter, leafKey)
	otherInter := sign(t, caTmpl("Other Issuing CA"), root, newKey(t))

	legacyEncrypted := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: []byte{1, 2, 3}})
	pkcs8Encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}})

	for _, tc := range []struct {
		name   string
		cert   []byte
		key    []byte
		domain string
		want   string // the refusal; "" for accepted
		certs  int    // accepted: certificates served
	}{
		{"leaf then chain in one file", certPEM(leaf, inter), keyPEM(t, leafKey), "carto.corp.example", "", 2},
		{"chain in its own file", certPEM(leaf), keyPEM(t, leafKey), "carto.corp.example", "", 3}, // chain below
		{"a wildcard covers the domain", certPEM(wild, inter), keyPEM(t, wildKey), "carto.corp.example", "", 2},
		{"the leaf alone", certPEM(leaf), keyPEM(t, leafKey), "carto.corp.example", "", 1},
		{"DER instead of PEM", leaf.cert.Raw, keyPEM(t, leafKey), "carto.corp.example", "the certificate is not PEM", 0},
		{"a key file as the certificate", keyPEM(t, leafKey), keyPEM(t, leafKey), "carto.corp.example", `has a "PRIVATE KEY" block where certificates are expected`, 0},
		{"a key that is not PEM", certPEM(leaf), []byte("not a key"), "carto.corp.example", "the key is not PEM", 0},
		{"a passphrase-protected key (PKCS#8)", certPEM(leaf), pkcs8Encrypted, "carto.corp.example", "protected by a passphrase", 0},
		{"a passphrase-protected key (legacy)", certPEM(leaf), legacyEncrypted, "carto.corp.example", "protected by a passphrase", 0},
		{"someone else's key", certPEM(leaf), keyPEM(t, newKey(t)), "carto.corp.example", "the key does not belong to the certificate", 0},
		{"expired", certPEM(expired, inter), keyPEM(t, leafKey), "carto.corp.example", "expired on 2026-11-21", 0},
		{"not yet valid", certPEM(future, inter), keyPEM(t, leafKey), "carto.corp.example", "not valid before 2026-11-24", 0},
		{"another domain", certPEM(leaf, inter), keyPEM(t, leafKey), "maps.example.com", "covers carto.corp.example, not maps.example.com", 0},
		{"chain in the wrong order", certPEM(leaf, root, inter), keyPEM(t, leafKey), "carto.corp.example", "the chain is out of order: certificate 1", 0},
		{"a chain of another certificate", certPEM(leaf, otherInter), keyPEM(t, leafKey), "carto.corp.example", "is not issued by the next one", 0},
		{"the CA first", certPEM(inter, leaf), keyPEM(t, inter.key), "carto.corp.example", "the first certificate is a CA", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var chain []byte
			if strings.HasPrefix(tc.name, "chain in its own file") {
				chain = certPEM(inter, root)
			}
			p, err := CheckCustom(tc.cert, tc.key, chain, tc.domain, now)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want an error with %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			served, err := parseCerts(p.CertPEM, "served")
			if err != nil || len(served) != tc.certs {
				t.Fatalf("serves %d certificates (%v), want %d", len(served), err, tc.certs)
			}
			if _, err := parseKey(p.KeyPEM, "served key"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSelfSigned(t *testing.T) {
	for _, domain := range []string{"carto.example.com", "10.1.2.3", "2001:db8::7"} {
		ca, err := NewCA(domain, now)
		if err != nil {
			t.Fatal(err)
		}
		again, err := LoadCA(ca.CertPEM, ca.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		p, err := again.Issue(domain, now)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := parseCerts(p.CertPEM, "leaf")
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca.CertPEM)
		if _, err := leaf[0].Verify(x509.VerifyOptions{DNSName: domain, Roots: pool, CurrentTime: now}); err != nil {
			t.Errorf("%s: a client trusting the CA refuses the certificate: %v", domain, err)
		}
		if _, err := CheckCustom(p.CertPEM, p.KeyPEM, nil, domain, now); err != nil {
			t.Errorf("%s: the issued pair fails the custom checks: %v", domain, err)
		}
		if renew, why := NeedsRenewal(p, ca, domain, now); renew {
			t.Errorf("%s: a fresh certificate needs renewal: %s", domain, why)
		}
		if renew, why := NeedsRenewal(p, ca, domain, now.Add(ServerLifetime-RenewBefore+time.Hour)); !renew || !strings.Contains(why, "expires on") {
			t.Errorf("%s: near expiry: %v %q", domain, renew, why)
		}
		if renew, why := NeedsRenewal(p, ca, "other.example.com", now); !renew || !strings.Contains(why, "does not cover other.example.com") {
			t.Errorf("%s: another domain: %v %q", domain, renew, why)
		}
		if rotate, why := ca.NeedsRotation(domain, now); rotate {
			t.Errorf("%s: a new CA needs rotation: %s", domain, why)
		}
	}
	ca, _ := NewCA("carto.example.com", now)
	other, _ := NewCA("carto.example.com", now)
	p, _ := other.Issue("carto.example.com", now)
	if renew, why := NeedsRenewal(p, ca, "carto.example.com", now); !renew || !strings.Contains(why, "not issued by the appliance's CA") {
		t.Errorf("another CA's certificate: %v %q", renew, why)
	}
	if renew, _ := NeedsRenewal(Pair{}, ca, "carto.example.com", now); !renew {
		t.Error("no certificate at all does not need issuing")
	}
	if _, err := LoadCA(ca.CertPEM, other.KeyPEM); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("a CA with another key: %v", err)
	}
	if _, err := NewCA("", now); err == nil {
		t.Error("a CA without a domain, so without constraints, was made")
	}
	// A server certificate never outlives its CA.
	late := now.Add(CALifetime - 100*24*time.Hour)
	p, _ = ca.Issue("carto.example.com", late)
	if leaf, _ := parseCerts(p.CertPEM, "leaf"); leaf[0].NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("the certificate ends %s, after its CA (%s)", leaf[0].NotAfter, ca.Cert.NotAfter)
	}
}

func TestExpiryWarning(t *testing.T) {
	for _, tc := range []struct {
		left      time.Duration
		threshold int
		msg       string
	}{
		{40 * 24 * time.Hour, 0, ""},
		{29*24*time.Hour + time.Hour, 30, "expires in 29 days"},
		{13 * 24 * time.Hour, 14, "expires in 13 days"},
		{6 * 24 * time.Hour, 7, "expires in 6 days"},
		{-time.Hour, 0, "expired on 2026-11-22"},
	} {
		th, msg := ExpiryWarning(now.Add(tc.left), now)
		if th != tc.threshold || !strings.Contains(msg, tc.msg) || (tc.msg == "") != (msg == "") {
			t.Errorf("%s left: %d %q, want %d %q", tc.left, th, msg, tc.threshold, tc.msg)
		}
	}
}

func TestDescribe(t *testing.T) {
	ca, _ := NewCA("carto.example.com", now)
	p, _ := ca.Issue("carto.example.com", now)
	info, err := Describe(p.CertPEM, now)
	if err != nil {
		t.Fatal(err)
	}
	if info.Subject != "carto.example.com" || info.Issuer != "CARTO self-hosted CA for carto.example.com" || info.DaysLeft != 397 || len(info.Names) != 1 {
		t.Errorf("%+v", info)
	}
}

// The checks never panic, whatever the files hold, and what they accept
// is a pair browsers take: a key the router can read, of a kind and size
// browsers accept.
func FuzzCheckCustom(f *testing.F) {
	ca, _ := NewCA("carto.example.com", now)
	p, _ := ca.Issue("carto.example.com", now)
	f.Add(p.CertPEM, p.KeyPEM, ca.CertPEM, "carto.example.com")
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"), []byte{}, []byte{}, "")
	// openssl ecparam -genkey: EC parameters, then the key.
	if b, _ := pem.Decode(p.KeyPEM); b != nil {
		if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
			sec1, _ := x509.MarshalECPrivateKey(k.(*ecdsa.PrivateKey))
			f.Add(p.CertPEM, append(append([]byte(nil), ecParams...), pemBlock("EC PRIVATE KEY", sec1)...), []byte{}, "carto.example.com")
		}
	}
	f.Add(p.CertPEM, append(append([]byte(nil), ecParams...), ecParams...), []byte{}, "carto.example.com")
	f.Fuzz(func(t *testing.T, cert, key, chain []byte, domain string) {
		pair, err := CheckCustom(cert, key, chain, domain, now)
		if err != nil {
			return
		}
		if len(pair.CertPEM) == 0 || len(pair.KeyPEM) == 0 {
			t.Fatal("accepted with nothing to serve")
		}
		if _, err := parseKey(pair.KeyPEM, "served key"); err != nil {
			t.Fatalf("the served key does not read back: %v", err)
		}
		served, err := parseCerts(pair.CertPEM, "served")
		if err != nil {
			t.Fatalf("the served certificates do not read back: %v", err)
		}
		for _, c := range served {
			if err := checkServerKey(c); err != nil {
				t.Fatalf("accepted a key browsers refuse: %v", err)
			}
		}
	})
}
