package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// signAny is sign for any kind of key.
func signAny(t *testing.T, tmpl *x509.Certificate, parent *issuer, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = serial()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.cert, pub, parent.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// Server certificates that browsers refuse are refused with the reason,
// whether the weak key is the leaf's or an intermediate's.
func TestCheckCustomKeyStrength(t *testing.T) {
	const domain = "carto.corp.example"
	root := sign(t, caTmpl("Corp Root"), nil, newKey(t))
	ecKey := func(c elliptic.Curve) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	rsaKey := func(bits int) crypto.Signer {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		want string // "" for accepted
	}{
		{"ECDSA P-256", ecKey(elliptic.P256()), ""},
		{"ECDSA P-384", ecKey(elliptic.P384()), ""},
		{"RSA-2048", rsaKey(2048), ""},
		{"ECDSA P-521", ecKey(elliptic.P521()), "the certificate's key is ECDSA on P-521: browsers accept only the P-256 and P-384 curves"},
		{"RSA-1024", rsaKey(1024), "the certificate's key is RSA-1024: browsers refuse RSA keys under 2048 bits"},
		{"Ed25519", edKey, "the certificate's key is Ed25519: browsers do not accept Ed25519 server certificates"},
	} {
		leaf := signAny(t, leafTmpl(domain), root, tc.key.Public())
		der, _ := x509.MarshalPKCS8PrivateKey(tc.key)
		_, err := CheckCustom(pemBlock("CERTIFICATE", leaf.Raw), pemBlock("PRIVATE KEY", der), certPEM(root), domain, now)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}

	// A weak intermediate is refused too, named.
	interKey := rsaKey(1024)
	inter := &issuer{cert: signAny(t, caTmpl("Weak Issuing CA"), root, interKey.Public())}
	leafKey := newKey(t)
	leafT := leafTmpl(domain)
	leafT.SerialNumber = serial()
	der, err := x509.CreateCertificate(rand.Reader, leafT, inter.cert, &leafKey.PublicKey, interKey)
	if err != nil {
		t.Fatal(err)
	}
	_, err = CheckCustom(append(pemBlock("CERTIFICATE", der), pemBlock("CERTIFICATE", inter.cert.Raw)...), keyPEM(t, leafKey), nil, domain, now)
	if err == nil || !strings.Contains(err.Error(), `chain certificate 2 ("Weak Issuing CA" issued by "Corp Root") is RSA-1024`) {
		t.Errorf("a weak intermediate: %v", err)
	}
}

// ecParams is the EC PARAMETERS block `openssl ecparam -name prime256v1`
// writes: the curve's OID.
var ecParams = pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})

// A key file that starts with EC parameters (openssl's default output) is
// read; parameters alone are refused with what to do.
func TestKeyWithECParameters(t *testing.T) {
	const domain = "carto.corp.example"
	root := sign(t, caTmpl("Corp Root"), nil, newKey(t))
	k := newKey(t)
	leaf := sign(t, leafTmpl(domain), root, k)
	sec1, _ := x509.MarshalECPrivateKey(k)
	withParams := append(append([]byte(nil), ecParams...), pemBlock("EC PRIVATE KEY", sec1)...)
	if _, err := CheckCustom(certPEM(leaf), withParams, nil, domain, now); err != nil {
		t.Errorf("a key after EC parameters: %v", err)
	}
	if _, err := CheckCustom(certPEM(leaf), ecParams, nil, domain, now); err == nil || !strings.Contains(err.Error(), "the key holds only EC parameters, no private key") {
		t.Errorf("EC parameters alone: %v", err)
	}

	// openssl's own output, when openssl is here.
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	keyFile, csrFile, certFile, extFile := filepath.Join(dir, "key.pem"), filepath.Join(dir, "csr.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "ext.cnf")
	os.WriteFile(extFile, []byte("subjectAltName=DNS:"+domain+"\nbasicConstraints=CA:FALSE\n"), 0o600)
	for _, args := range [][]string{
		{"ecparam", "-name", "prime256v1", "-genkey", "-out", keyFile},
		{"req", "-new", "-key", keyFile, "-out", csrFile, "-subj", "/CN=" + domain},
		{"x509", "-req", "-in", csrFile, "-signkey", keyFile, "-out", certFile, "-days", "30", "-extfile", extFile},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	key, _ := os.ReadFile(keyFile)
	cert, _ := os.ReadFile(certFile)
	if !strings.HasPrefix(string(key), "-----BEGIN EC PARAMETERS-----") {
		t.Fatalf("openssl ecparam -genkey wrote:\n%s", key)
	}
	if _, err := parseKey(key, "the key"); err != nil {
		t.Errorf("openssl ecparam -genkey output: %v", err)
	}
	if _, err := CheckCustom(cert, key, nil, domain, mustParse(t, cert).NotBefore.Add(1)); err != nil {
		t.Errorf("openssl's certificate and key: %v", err)
	}
}

func mustParse(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	c, err := parseCerts(b, "cert")
	if err != nil {
		t.Fatal(err)
	}
	return c[0]
}
