//go:build licensetest

package license

import (
	"crypto/ed25519"

	"github.com/cartodb/carto-appliance/license/licensetest"
)

// A test build (go build -tags licensetest: the e2e binaries, make demo)
// also trusts the tests' keys: licences signed with Key, licence server
// answers signed with ServerKey.
func init() {
	testKeys[licensetest.KeyName] = licensetest.Key.Public().(ed25519.PublicKey)
	testAnswerKeys[licensetest.ServerKeyName] = licensetest.ServerKey.Public().(ed25519.PublicKey)
}
