package release

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// A signature file (release.sig beside a release's files, index.json.sig
// beside a channel's index) is
//
//	{"key": NAME, "digest": D, "signature": B64(ed25519(CONTEXT || D))}
//
// where NAME is a release key (keys.go), D the signed content's digest
// ("sha256:" and 64 hex digits: Release.Digest for a release, sha256 of
// index.json's bytes for an index) and CONTEXT says what is signed
// (ReleaseContext, IndexContext). D is in the file only to tell files
// changed after signing from a bad signature: it is recomputed, never
// trusted.
const (
	// ReleaseContext separates a release's signature from every other use
	// of an ed25519 key: a licence signs bare JSON (it starts with '{'),
	// a licence server answer its own context, an index IndexContext, so
	// no signature verifies as another's, even were one key used for all.
	ReleaseContext = "carto-appliance release v1\x00"
	// IndexContext separates a channel index's signature.
	IndexContext = "carto-appliance channel index v1\x00"
)

// SigFile is the name of a release's signature file.
const SigFile = "release.sig"

// maxSig bounds a signature file (about 200 bytes).
const maxSig = 64 << 10

// ErrUntrusted is wrapped by every refusal of a signature: missing,
// malformed, by a key this binary does not trust, over other content, or
// not verifying.
var ErrUntrusted = errors.New("untrusted signature")

type sigFile struct {
	Key       string `json:"key"`
	Digest    string `json:"digest"`
	Signature string `json:"signature"` // base64 (standard)
}

// Sign makes r's signature file, signed by key, named keyName (release
// team tooling: cmd/carto-release).
func Sign(r *Release, keyName string, key ed25519.PrivateKey) ([]byte, error) {
	if r.RawManifest == nil {
		return nil, errors.New("signing a release: it has no manifest file (a release built in memory cannot be signed)")
	}
	return sign(ReleaseContext, r.Digest(), keyName, key)
}

// Verify checks sig, r's signature file, against the trusted release keys.
func Verify(r *Release, sig []byte) error {
	return verify(ReleaseContext, r.Digest(), sig, trustedKeys())
}

// SignIndex makes the signature file of a channel index's bytes.
func SignIndex(index []byte, keyName string, key ed25519.PrivateKey) ([]byte, error) {
	return sign(IndexContext, bytesDigest(index), keyName, key)
}

// VerifyIndex checks sig, the signature file of a channel index's bytes,
// against the trusted release keys.
func VerifyIndex(index, sig []byte) error {
	return verify(IndexContext, bytesDigest(index), sig, trustedKeys())
}

func bytesDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func sign(context, digest, keyName string, key ed25519.PrivateKey) ([]byte, error) {
	if keyName == "" || strings.ContainsAny(keyName, " \n\"") {
		return nil, fmt.Errorf("signing: the key's name %q is empty or holds a space or quote", keyName)
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signing: not an ed25519 private key (%d bytes)", len(key))
	}
	out, err := json.MarshalIndent(sigFile{
		Key:       keyName,
		Digest:    digest,
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, []byte(context+digest))),
	}, "", "  ")
	return append(out, '\n'), err
}

func verify(context, digest string, data []byte, keys map[string]ed25519.PublicKey) error {
	changed := "the files are not the ones signed (digest %s, signed %s): they were changed after signing, or belong to another release"
	if context == IndexContext {
		changed = "the index is not the one signed (digest %s, signed %s): it was changed after signing, or is being published (try again)"
	}
	var s sigFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return fmt.Errorf("%w: not a signature file (%v)", ErrUntrusted, err)
	}
	if s.Key == "" || s.Signature == "" || s.Digest == "" {
		return fmt.Errorf("%w: the signature file lacks its key, digest or signature", ErrUntrusted)
	}
	pub, ok := keys[s.Key]
	if !ok {
		return fmt.Errorf("%w: signed with key %q, which this carto-appliance does not trust (it trusts %s): a release from another publisher, or one this version predates", ErrUntrusted, s.Key, strings.Join(slices.Sorted(maps.Keys(keys)), ", "))
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil {
		return fmt.Errorf("%w: the signature is not base64: the signature file was altered", ErrUntrusted)
	}
	if s.Digest != digest {
		return fmt.Errorf("%w: "+changed, ErrUntrusted, digest, s.Digest)
	}
	if !ed25519.Verify(pub, []byte(context+digest), sig) {
		return fmt.Errorf("%w: the signature does not verify with key %q: the signature file was altered or not made with that key", ErrUntrusted, s.Key)
	}
	return nil
}
