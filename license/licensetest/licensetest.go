// Package licensetest holds the tests' signing keys: public test material,
// trusted only by binaries built with the licensetest tag.
package licensetest

import (
	"crypto/ed25519"
	"crypto/sha256"
)

// KeyName is the test licence key's name in licence files.
const KeyName = "carto-test"

// Key is the test licence signing key, from a fixed seed so that every
// build and test agrees on it.
var Key = fromSeed("carto-appliance licence test key; never trusted by a release build")

// ServerKeyName is the test licence server's key name in its answers.
const ServerKeyName = "carto-test-server"

// ServerKey signs the test licence servers' answers. It is not Key: the
// appliance trusts a key for licences or for answers, never both.
var ServerKey = fromSeed("carto-appliance licence server test key; never trusted by a release build")

func fromSeed(s string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(s))
	return ed25519.NewKeyFromSeed(seed[:])
}
