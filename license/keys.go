package license

import (
	"crypto/ed25519"
	"encoding/base64"
	"maps"
)

// productionKeys are the public keys CARTO's licences are signed with, by
// name. Their private keys stay with the release team (make
// license-keygen makes a pair; the public half goes here). Nothing at run
// time adds a key: a licence from any other key is refused.
var productionKeys = map[string]ed25519.PublicKey{
	"carto-2026": mustKey("iWLA0E3fBLsogL2v8HnM+9I/sMszI25jVMo4WqEuV6k="),
}

// productionAnswerKeys are the public keys CARTO's licence server signs
// its answers with (SignAnswer), by name. They are not licence keys: the
// server's private key lives on an online machine, and a thief of it must
// not be able to mint licences; nor can a licence key vouch for an answer.
var productionAnswerKeys = map[string]ed25519.PublicKey{
	"carto-licensing-2026": mustKey("FIpjaVPtgnDz6p7u7UxxSX1G85+qpIqDhLJmIwkEMDI="),
}

// testKeys and testAnswerKeys are added by builds with the licensetest tag
// (keys_test_build.go): the tests' own keys, never in a release build.
var (
	testKeys       = map[string]ed25519.PublicKey{}
	testAnswerKeys = map[string]ed25519.PublicKey{}
)

func trustedKeys() map[string]ed25519.PublicKey {
	keys := maps.Clone(productionKeys)
	maps.Copy(keys, testKeys)
	return keys
}

func trustedAnswerKeys() map[string]ed25519.PublicKey {
	keys := maps.Clone(productionAnswerKeys)
	maps.Copy(keys, testAnswerKeys)
	return keys
}

func mustKey(b64 string) ed25519.PublicKey {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != ed25519.PublicKeySize {
		panic("license: a compiled-in public key is not a base64 ed25519 key")
	}
	return ed25519.PublicKey(b)
}
