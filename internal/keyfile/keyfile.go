// Package keyfile owns the release team's ed25519 signing key files
// (licence, licence server and release keys alike): one line, the key's
// name and its seed in base64, in a 0600 file that is never overwritten.
package keyfile

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/cartodb/carto-appliance/internal/boundedread"
)

// name is what a key may be called: it goes into signature files and
// file names.
var name = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]*$`)

// ValidName reports whether n may name a key.
func ValidName(n string) bool { return name.MatchString(n) }

// Generate makes a key pair named n, writes the private key to
// dir/n.key and returns the public key and the file's path. An existing
// file is never overwritten.
func Generate(dir, n string) (ed25519.PublicKey, string, error) {
	if !ValidName(n) {
		return nil, "", fmt.Errorf("key name %q: use letters, digits and '-', e.g. carto-2027", n)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(dir, n+".key")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("%w (an existing key is never overwritten)", err)
	}
	_, werr := fmt.Fprintf(f, "%s %s\n", n, base64.StdEncoding.EncodeToString(priv.Seed()))
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(path) // a half-written key is no key
		return nil, "", fmt.Errorf("writing %s: %w", path, err)
	}
	return pub, path, nil
}

// Read reads a key file Generate wrote: the key's name and private key.
func Read(path string) (string, ed25519.PrivateKey, error) {
	b, err := boundedread.ReadFile(path, boundedread.KeyJSON)
	if err != nil {
		return "", nil, err
	}
	n, seed64, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	seed, err := base64.StdEncoding.DecodeString(seed64)
	if !ok || err != nil || len(seed) != ed25519.SeedSize || !ValidName(n) {
		return "", nil, fmt.Errorf("%s is not a key file from keygen", path)
	}
	return n, ed25519.NewKeyFromSeed(seed), nil
}
