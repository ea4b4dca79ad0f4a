package testbed

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// TestReleaseKey signs the test bed's releases (packaging/release.sh's
// RELEASE_KEY): public test material, from a fixed seed so that release.sh
// can recognise it and refuse it unless RELEASE_TEST_KEY=1.
var TestReleaseKey = func() ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("carto-appliance release test key; never signs a real release"))
	return ed25519.NewKeyFromSeed(seed[:])
}()

// WriteTestReleaseKey writes TestReleaseKey to path as release.sh takes it:
// PKCS #8 PEM.
func WriteTestReleaseKey(path string) error {
	der, err := x509.MarshalPKCS8PrivateKey(TestReleaseKey)
	if err != nil {
		return fmt.Errorf("encoding the test release key: %w", err)
	}
	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// releaseEnv is what release.sh needs to sign with the test key at keyPath.
func releaseEnv(keyPath string) []string {
	return []string{"RELEASE_KEY=" + keyPath, "RELEASE_TEST_KEY=1"}
}
