package testbed

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// bcryptMaxPassword is how much of a password bcrypt uses: 72 bytes.
const bcryptMaxPassword = 72

// testCA is a throwaway certificate authority for the registry's TLS.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA() (*testCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "carto-appliance test CA", Organization: []string{"carto-appliance e2e"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// issue returns a PEM server certificate and key for the given IPs and DNS
// names, signed by the CA.
func (ca *testCA) issue(ips []net.IP, names []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  ips,
		DNSNames:     names,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// serviceAccountKey is a GCP service-account key file, fields in the order
// GCP writes them.
type serviceAccountKey struct {
	Type                    string `json:"type"`
	ProjectID               string `json:"project_id"`
	PrivateKeyID            string `json:"private_key_id"`
	PrivateKey              string `json:"private_key"`
	ClientEmail             string `json:"client_email"`
	ClientID                string `json:"client_id"`
	AuthURI                 string `json:"auth_uri"`
	TokenURI                string `json:"token_uri"`
	AuthProviderX509CertURL string `json:"auth_provider_x509_cert_url"`
	ClientX509CertURL       string `json:"client_x509_cert_url"`
	UniverseDomain          string `json:"universe_domain"`
}

// newKeyJSON returns a realistic (about 2.3 KB) service-account key.json
// for a fresh random project. The project id is the only varying field in
// the first 72 bytes, which is all of the password the registry checks (see
// htpasswdLine), so two keys from newKeyJSON differ where it matters.
func newKeyJSON() ([]byte, error) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		return nil, err
	}
	project := "carto-testbed-" + randomHex(3)
	account := "carto-selfhosted@" + project + ".iam.gserviceaccount.com"
	clientID, _ := rand.Int(rand.Reader, new(big.Int).Exp(big.NewInt(10), big.NewInt(20), nil))
	k := serviceAccountKey{
		Type:                    "service_account",
		ProjectID:               project,
		PrivateKeyID:            randomHex(20),
		PrivateKey:              string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		ClientEmail:             account,
		ClientID:                fmt.Sprintf("1%020d", clientID),
		AuthURI:                 "https://accounts.google.com/o/oauth2/auth",
		TokenURI:                "https://oauth2.googleapis.com/token",
		AuthProviderX509CertURL: "https://www.googleapis.com/oauth2/v1/certs",
		ClientX509CertURL:       "https://www.googleapis.com/robot/v1/metadata/x509/" + account,
		UniverseDomain:          "googleapis.com",
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(k); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// htpasswdLine returns the registry's htpasswd entry for user with the
// whole of password as its password.
//
// Checked against Debian's docker-registry 2.8.2 (distribution, go1.19):
// bcrypt reads only the first 72 bytes of a password, and the registry's
// CompareHashAndPassword neither refuses nor reports a longer one: it
// accepts any password whose first 72 bytes match. A key.json is about
// 2.3 KB, so a wrong key that shares the right one's first 72 bytes is let
// in (verified: a key differing only from byte 100 on got 200). Neither
// tool can hash the whole key anyway: golang.org/x/crypto/bcrypt's
// GenerateFromPassword refuses more than 72 bytes (ErrPasswordTooLong) and
// `htpasswd -B` refuses more than 256 ("password too long"). So we hash the
// first 72 bytes, which is exactly what the registry compares, and make
// test keys differ there (newKeyJSON's project id).
//
// The cost is bcrypt's minimum: the registry checks the hash on every
// request of a push or pull (hundreds), and this is a test bed.
func htpasswdLine(user string, password []byte) ([]byte, error) {
	p := password
	if len(p) > bcryptMaxPassword {
		p = p[:bcryptMaxPassword]
	}
	h, err := bcrypt.GenerateFromPassword(p, bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "%s:%s\n", user, h), nil
}

func writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
