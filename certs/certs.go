// Package certs owns the router's TLS material (SPEC §7): a local CA and
// the server certificate it issues for the domain (self-signed mode), the
// checks a customer's own certificate must pass (custom mode), and what
// status shows of a certificate. It works on PEM bytes and never writes
// files: the installer decides where they go.
package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// Lifetimes. Browsers refuse server certificates valid for more than 398
// days. The CA's life bounds how long a copy of its key stays useful; it
// is replaced well before it ends (NeedsRotation), so it need not outlive
// many server certificates.
const (
	CALifetime     = 3 * 365 * 24 * time.Hour
	ServerLifetime = 397 * 24 * time.Hour
	// RenewBefore is how long before expiry a self-signed certificate is
	// replaced.
	RenewBefore = 30 * 24 * time.Hour
	// CARotateBefore is how long before its end the CA is replaced.
	CARotateBefore = 90 * 24 * time.Hour
	// CAOverlap is how long a replaced CA keeps serving the router while
	// the new one is published beside it: time to have clients trust the
	// new CA file.
	CAOverlap = 60 * 24 * time.Hour
)

// Pair is a server certificate (leaf first, then its chain) and its
// private key, PEM.
type Pair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// CA is the appliance's own certificate authority (self-signed mode). It
// is name-constrained to the one domain (or address) it serves, so that
// its key cannot make certificates that clients trusting it accept for
// any other name.
type CA struct {
	Cert    *x509.Certificate
	key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA creates a CA for the domain (a DNS name or an IP address) and
// nothing else.
func NewCA(domain string, now time.Time) (*CA, error) {
	if domain == "" {
		return nil, errors.New("creating the CA: no domain to constrain it to")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	// The serial in the name tells a new CA from the one it replaces in
	// clients' trust stores and in `openssl x509 -subject`.
	sn := serial()
	tmpl := caTemplate(domain, now)
	tmpl.SerialNumber = sn
	tmpl.Subject = pkix.Name{CommonName: "CARTO self-hosted CA for " + domain, Organization: []string{"carto-appliance"}, SerialNumber: sn.Text(16)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating the CA: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyPEM, err := marshalKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// caTemplate is a CA certificate for domain only: name constraints
// (critical, so that a client that cannot read them refuses the CA rather
// than ignores them) permit the domain and its subdomains, or the one
// address, and exclude every other kind of name as the CA/Browser Forum's
// technically constrained CAs do (an empty DNS name, or the whole address
// space). It may only issue server certificates, and no other CA.
func caTemplate(domain string, now time.Time) *x509.Certificate {
	tmpl := &x509.Certificate{
		NotBefore:                   now.Add(-time.Hour),
		NotAfter:                    now.Add(CALifetime),
		IsCA:                        true,
		BasicConstraintsValid:       true,
		MaxPathLenZero:              true,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:                 []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		PermittedDNSDomainsCritical: true,
	}
	if ip := net.ParseIP(domain); ip != nil {
		bits := 8 * len(ip)
		if v4 := ip.To4(); v4 != nil {
			ip, bits = v4, 32
		}
		tmpl.PermittedIPRanges = []*net.IPNet{{IP: ip, Mask: net.CIDRMask(bits, bits)}}
		tmpl.ExcludedDNSDomains = []string{""}
	} else {
		tmpl.PermittedDNSDomains = []string{strings.ToLower(domain)}
		tmpl.ExcludedIPRanges = []*net.IPNet{
			{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
		}
	}
	return tmpl
}

// LoadCA reads a CA written by NewCA (or an older, unconstrained one:
// NeedsRotation says it must be replaced).
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCerts(certPEM, "the CA certificate")
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyPEM, "the CA key")
	if err != nil {
		return nil, err
	}
	if !samePublicKey(certs[0].PublicKey, key.Public()) {
		return nil, errors.New("the CA key does not belong to the CA certificate")
	}
	if !certs[0].IsCA {
		return nil, errors.New("the CA certificate is not a CA")
	}
	return &CA{Cert: certs[0], key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// NeedsRotation says whether the CA must be replaced, and why: it has no
// name constraints (made before they existed: its key could sign for any
// domain), it is constrained to another domain, it lives longer than
// CALifetime, or it ends within CARotateBefore.
func (ca *CA) NeedsRotation(domain string, now time.Time) (bool, string) {
	c := ca.Cert
	have := constraintsOf(c)
	switch {
	case len(c.PermittedDNSDomains) == 0 && len(c.PermittedIPRanges) == 0:
		return true, "it has no name constraints, so its key could sign certificates for any domain"
	case !c.PermittedDNSDomainsCritical:
		return true, "its name constraints are not marked critical"
	case strings.Join(have, " ") != strings.Join(constraintsOf(caTemplate(domain, now)), " "):
		return true, fmt.Sprintf("it is constrained to %s, not %s", strings.Join(have, ", "), domain)
	case c.NotAfter.Sub(c.NotBefore) > CALifetime+2*time.Hour:
		return true, fmt.Sprintf("it is valid until %s, longer than %d days", c.NotAfter.UTC().Format(time.DateOnly), CALifetime/(24*time.Hour))
	case c.NotAfter.Sub(now) < CARotateBefore:
		return true, fmt.Sprintf("it ends on %s", c.NotAfter.UTC().Format(time.DateOnly))
	}
	return false, ""
}

// constraintsOf are a CA's name constraints as text, permitted names
// first: "carto.example.com", "excluded 0.0.0.0/0", ...
func constraintsOf(c *x509.Certificate) []string {
	var out []string
	out = append(out, c.PermittedDNSDomains...)
	for _, n := range c.PermittedIPRanges {
		out = append(out, n.String())
	}
	for _, d := range c.ExcludedDNSDomains {
		if d == "" {
			d = "any DNS name"
		}
		out = append(out, "excluded "+d)
	}
	for _, n := range c.ExcludedIPRanges {
		out = append(out, "excluded "+n.String())
	}
	return out
}

// HandOver is until when the CA, being replaced, keeps serving domain
// while the new CA is published beside it: CAOverlap from now, sooner
// when it ends first (its last certificate must still be renewable), and
// now when clients trusting it would not accept a certificate of its for
// domain (constrained to another one, expired).
func (ca *CA) HandOver(domain string, now time.Time) time.Time {
	end := earliest(now.Add(CAOverlap), ca.Cert.NotAfter.Add(-RenewBefore))
	if !end.After(now) {
		return now
	}
	probe, err := ca.issue(domain, now)
	if err != nil {
		return now
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := probe.Verify(x509.VerifyOptions{DNSName: domain, Roots: roots, CurrentTime: now}); err != nil {
		return now
	}
	return end
}

// Issue makes a server certificate for domain (a DNS name or an IP
// address), chained to the CA, valid for ServerLifetime but never beyond
// the CA's end.
func (ca *CA) Issue(domain string, now time.Time) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	der, err := ca.sign(domain, now, key)
	if err != nil {
		return Pair{}, err
	}
	keyPEM, err := marshalKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{CertPEM: append(pemBlock("CERTIFICATE", der), pemBlock("CERTIFICATE", ca.Cert.Raw)...), KeyPEM: keyPEM}, nil
}

// issue is a leaf for domain, parsed (HandOver's probe).
func (ca *CA) issue(domain string, now time.Time) (*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := ca.sign(domain, now, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func (ca *CA) sign(domain string, now time.Time, key *ecdsa.PrivateKey) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     earliest(now.Add(ServerLifetime), ca.Cert.NotAfter),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	// An address gets no common name: OpenSSL checks a common name that
	// looks like a host name against the CA's DNS constraints, which
	// exclude every DNS name for an address.
	if ip := net.ParseIP(domain); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.Subject = pkix.Name{CommonName: domain}
		tmpl.DNSNames = []string{domain}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issuing the server certificate for %s: %w", domain, err)
	}
	return der, nil
}

// NeedsRenewal says whether a self-signed pair must be issued again, and
// why: it is missing or unreadable, not from ca, not for domain, or
// expires within RenewBefore.
func NeedsRenewal(p Pair, ca *CA, domain string, now time.Time) (bool, string) {
	certs, err := parseCerts(p.CertPEM, "the server certificate")
	if err != nil {
		return true, err.Error()
	}
	leaf := certs[0]
	switch {
	case leaf.CheckSignatureFrom(ca.Cert) != nil:
		return true, "it was not issued by the appliance's CA"
	case leaf.VerifyHostname(domain) != nil:
		return true, fmt.Sprintf("it does not cover %s", domain)
	case leaf.NotAfter.Sub(now) < RenewBefore:
		return true, fmt.Sprintf("it expires on %s", leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	return false, ""
}

func earliest(t time.Time, others ...time.Time) time.Time {
	for _, o := range others {
		if o.Before(t) {
			t = o
		}
	}
	return t
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func marshalKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a private key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

// parseCerts reads every CERTIFICATE block of a PEM file, in order.
func parseCerts(data []byte, what string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s has a %q block where certificates are expected", what, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d cannot be read: %v", what, len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s is not PEM: expected a -----BEGIN CERTIFICATE----- block (convert DER with: openssl x509 -inform der -in FILE -out FILE.pem)", what)
	}
	if len(bytes.TrimSpace(rest)) > 0 && bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, fmt.Errorf("%s has a damaged PEM block after certificate %d", what, len(out))
	}
	return out, nil
}

// parseKey reads a private key (PKCS#8, PKCS#1 or SEC 1), refusing one
// protected by a passphrase: the router cannot ask for it. An EC
// PARAMETERS block before the key (what `openssl ecparam -genkey` writes)
// is skipped: the key names its curve itself.
func parseKey(data []byte, what string) (crypto.Signer, error) {
	b, rest := pem.Decode(data)
	params := false
	for b != nil && b.Type == "EC PARAMETERS" {
		params = true
		b, rest = pem.Decode(rest)
	}
	switch {
	case b == nil && params:
		return nil, fmt.Errorf("%s holds only EC parameters, no private key: it was made with `openssl ecparam` without -genkey; make a key with `openssl ecparam -name prime256v1 -genkey -noout -out KEY` and a certificate for it", what)
	case b == nil:
		return nil, fmt.Errorf("%s is not PEM: expected a -----BEGIN PRIVATE KEY----- block", what)
	}
	if b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, fmt.Errorf("%s is protected by a passphrase, which the router cannot ask for: remove it (openssl pkey -in KEY -out KEY.plain)", what)
	}
	var key any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("%s is a %q block, not a private key", what, b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s cannot be read: %v", what, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s is of a kind the router cannot use", what)
	}
	return signer, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}
