// Package licensetest holds the tests' licence signing key: public test
// material, trusted only by binaries built with the licensetest tag.
package licensetest

import (
	"crypto/ed25519"
	"crypto/sha256"
)

// KeyName is the test key's name in licence files.
const KeyName = "carto-test"

// Key is the test signing key, from a fixed seed so that every build and
// test agrees on it.
var Key = func() ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("carto-appliance licence test key; never trusted by a release build"))
	return ed25519.NewKeyFromSeed(seed[:])
}()
