//go:build licensetest

package release

import (
	"crypto/ed25519"

	"github.com/cartodb/carto-appliance/release/releasetest"
)

// A test build (go build -tags licensetest: the e2e binaries, make demo)
// also trusts the tests' release key, as it trusts the tests' licence key.
func init() {
	testKeys[releasetest.KeyName] = releasetest.Key.Public().(ed25519.PublicKey)
}
