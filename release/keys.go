package release

import (
	"crypto/ed25519"
	"encoding/base64"
	"maps"
)

// productionKeys are the public keys CARTO's releases and channel indexes
// are signed with, by name. Their private keys stay with the release team
// (make carto-release-keygen makes a pair; the public half goes here).
// They are not licence keys (license/keys.go): a thief of one cannot
// forge the other. Nothing at run time adds a key.
var productionKeys = map[string]ed25519.PublicKey{
	"carto-release-2026": mustKey("wKHqO7HtduJBLRDDBSmaaWjl7J2XrZEKRBOd9mMg9lY="),
}

// testKeys is filled by builds with the licensetest tag
// (keys_test_build.go): the tests' own key, never in a release build.
var testKeys = map[string]ed25519.PublicKey{}

func trustedKeys() map[string]ed25519.PublicKey {
	keys := maps.Clone(productionKeys)
	maps.Copy(keys, testKeys)
	return keys
}

func mustKey(b64 string) ed25519.PublicKey {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != ed25519.PublicKeySize {
		panic("release: a compiled-in public key is not a base64 ed25519 key")
	}
	return ed25519.PublicKey(b)
}
