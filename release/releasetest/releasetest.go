// Package releasetest holds the tests' release signing key: public test
// material, trusted only by binaries built with the licensetest tag (the
// tag the e2e binaries are built with, for licences and releases alike).
package releasetest

import (
	"crypto/ed25519"
	"crypto/sha256"
)

// KeyName is the test release key's name in signature files.
const KeyName = "carto-release-test"

// Key signs the tests' releases and channel indexes, from a fixed seed so
// that every build and test agrees on it. It is not the tests' licence
// key: a key is trusted for licences or for releases, never both.
var Key = fromSeed("carto-appliance release test key; never trusted by a release build")

func fromSeed(s string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(s))
	return ed25519.NewKeyFromSeed(seed[:])
}
