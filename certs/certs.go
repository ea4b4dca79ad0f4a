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
// days; the CA lives long so that clients trust it once.
const (
	CALifetime     = 10 * 365 * 24 * time.Hour
	ServerLifetime = 397 * 24 * time.Hour
	// RenewBefore is how long before expiry a self-signed certificate is
	// replaced.
	RenewBefore = 30 * 24 * time.Hour
)

// Pair is a server certificate (leaf first, then its chain) and its
// private key, PEM.
type Pair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// CA is the appliance's own certificate authority (self-signed mode).
type CA struct {
	Cert    *x509.Certificate
	key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA creates a CA named after the domain it serves.
func NewCA(domain string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "CARTO self-hosted CA for " + domain, Organization: []string{"carto-appliance"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
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

// LoadCA reads a CA written by NewCA.
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

// Issue makes a server certificate for domain (a DNS name or an IP
// address), chained to the CA.
func (ca *CA) Issue(domain string, now time.Time) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: domain},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ServerLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(domain); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{domain}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return Pair{}, fmt.Errorf("issuing the server certificate for %s: %w", domain, err)
	}
	keyPEM, err := marshalKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{CertPEM: append(pemBlock("CERTIFICATE", der), ca.CertPEM...), KeyPEM: keyPEM}, nil
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
// protected by a passphrase: the router cannot ask for it.
func parseKey(data []byte, what string) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
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
