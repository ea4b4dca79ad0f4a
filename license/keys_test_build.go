//go:build licensetest

package license

import (
	"crypto/ed25519"

	"github.com/cartodb/carto-appliance/license/licensetest"
)

// A test build (go build -tags licensetest: the e2e binaries, make demo)
// also trusts the tests' key.
func init() {
	testKeys[licensetest.KeyName] = licensetest.Key.Public().(ed25519.PublicKey)
}
