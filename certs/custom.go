package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"strings"
	"time"
)

// WarnDays are the days before expiry at which a certificate the
// appliance cannot renew by itself is reported.
var WarnDays = []int{30, 14, 7}

// CheckCustom checks a certificate the customer brings (custom mode) for
// domain and returns the pair the router will serve: the leaf, then the
// chain. chainPEM may be empty (the chain may also follow the leaf in
// certPEM). Each refusal says exactly what is wrong and how to fix it.
func CheckCustom(certPEM, keyPEM, chainPEM []byte, domain string, now time.Time) (Pair, error) {
	certs, err := parseCerts(certPEM, "the certificate")
	if err != nil {
		return Pair{}, err
	}
	if len(bytes.TrimSpace(chainPEM)) > 0 {
		chain, err := parseCerts(chainPEM, "the chain")
		if err != nil {
			return Pair{}, err
		}
		certs = append(certs, chain...)
	}
	key, err := parseKey(keyPEM, "the key")
	if err != nil {
		return Pair{}, err
	}
	leaf := certs[0]
	if !samePublicKey(leaf.PublicKey, key.Public()) {
		return Pair{}, fmt.Errorf("the key does not belong to the certificate (%s): give the key the certificate was requested with", describe(leaf))
	}
	if leaf.IsCA {
		return Pair{}, fmt.Errorf("the first certificate is a CA (%s), not a server certificate: put the server certificate first", describe(leaf))
	}
	switch {
	case now.After(leaf.NotAfter):
		return Pair{}, fmt.Errorf("the certificate expired on %s: renew it with its issuer", leaf.NotAfter.UTC().Format(time.DateOnly))
	case now.Before(leaf.NotBefore):
		return Pair{}, fmt.Errorf("the certificate is not valid before %s (check this machine's clock)", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	for i, c := range certs {
		if err := checkServerKey(c); err != nil {
			what := "the certificate's key"
			if i > 0 {
				what = fmt.Sprintf("the key of chain certificate %d (%s)", i+1, describe(c))
			}
			return Pair{}, fmt.Errorf("%s is %w", what, err)
		}
	}
	if err := leaf.VerifyHostname(domain); err != nil {
		return Pair{}, fmt.Errorf("the certificate covers %s, not %s: request one that names %s", strings.Join(names(leaf), ", "), domain, domain)
	}
	if err := checkOrder(certs); err != nil {
		return Pair{}, err
	}
	var out bytes.Buffer
	for _, c := range certs {
		out.Write(pemBlock("CERTIFICATE", c.Raw))
	}
	keyOut, err := marshalKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{CertPEM: out.Bytes(), KeyPEM: keyOut}, nil
}

// checkServerKey refuses a certificate key that browsers refuse (Chrome
// and Firefox: RSA of 2048 bits or more, ECDSA on P-256 or P-384; no
// Ed25519 in TLS certificates), with the reason: the router would serve it
// and every browser would fail the handshake.
func checkServerKey(c *x509.Certificate) error {
	const fix = "request a certificate with an ECDSA P-256 or RSA-2048 (or larger) key"
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 {
			return fmt.Errorf("RSA-%d: browsers refuse RSA keys under 2048 bits; %s", n, fix)
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA on %s: browsers accept only the P-256 and P-384 curves; %s", k.Curve.Params().Name, fix)
		}
	case ed25519.PublicKey:
		return fmt.Errorf("Ed25519: browsers do not accept Ed25519 server certificates; %s", fix)
	default:
		return fmt.Errorf("of a kind browsers do not accept (%s); %s", c.PublicKeyAlgorithm, fix)
	}
	return nil
}

// checkOrder makes sure each certificate is signed by the next one, as
// TLS clients expect; a chain in another order is refused with the order
// that would work.
func checkOrder(certs []*x509.Certificate) error {
	for i := 0; i+1 < len(certs); i++ {
		if certs[i].CheckSignatureFrom(certs[i+1]) == nil {
			continue
		}
		for j := range certs {
			if j != i && certs[i].CheckSignatureFrom(certs[j]) == nil {
				return fmt.Errorf("the chain is out of order: certificate %d (%s) is issued by certificate %d (%s), which must come right after it; order: the server certificate, then each issuer", i+1, describe(certs[i]), j+1, describe(certs[j]))
			}
		}
		return fmt.Errorf("certificate %d (%s) is not issued by the next one (%s): the chain does not belong to this certificate", i+1, describe(certs[i]), describe(certs[i+1]))
	}
	return nil
}

// ExpiryWarning is the warning due for a certificate expiring at
// notAfter: the WarnDays threshold crossed (the smallest one above the
// days left; 0 when none is) and what to say. The agent logs each
// threshold once.
func ExpiryWarning(notAfter, now time.Time) (threshold int, msg string) {
	left := notAfter.Sub(now)
	if left <= 0 {
		return 0, fmt.Sprintf("the certificate expired on %s", notAfter.UTC().Format(time.DateOnly))
	}
	days := int(left.Hours() / 24)
	for _, d := range WarnDays {
		if days < d && (threshold == 0 || d < threshold) {
			threshold = d
		}
	}
	if threshold == 0 {
		return 0, ""
	}
	return threshold, fmt.Sprintf("the certificate expires in %d days (%s): renew it", days, notAfter.UTC().Format(time.DateOnly))
}

// Info is a certificate as status shows it.
type Info struct {
	Issuer   string    `json:"issuer"`
	Subject  string    `json:"subject"`
	Names    []string  `json:"names"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft int       `json:"days_left"`
}

// Describe reads the leaf of a PEM certificate file for status.
func Describe(certPEM []byte, now time.Time) (*Info, error) {
	certs, err := parseCerts(certPEM, "the certificate")
	if err != nil {
		return nil, err
	}
	c := certs[0]
	return &Info{
		Issuer: c.Issuer.CommonName, Subject: c.Subject.CommonName, Names: names(c),
		NotAfter: c.NotAfter.UTC(), DaysLeft: int(c.NotAfter.Sub(now).Hours() / 24),
	}, nil
}

func names(c *x509.Certificate) []string {
	out := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	if len(out) == 0 && c.Subject.CommonName != "" {
		out = append(out, c.Subject.CommonName+" (common name only)")
	}
	return out
}

func describe(c *x509.Certificate) string {
	return fmt.Sprintf("%q issued by %q", c.Subject.CommonName, c.Issuer.CommonName)
}
