package release

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/license/licensetest"
	"github.com/cartodb/carto-appliance/release/releasetest"
)

// builtTestKeys is testKeys as the build made it, before TestMain adds the
// tests' key so that every build of the tests can fetch a test channel.
var builtTestKeys map[string]ed25519.PublicKey

func TestMain(m *testing.M) {
	builtTestKeys = maps.Clone(testKeys)
	testKeys[releasetest.KeyName] = releasetest.Key.Public().(ed25519.PublicKey)
	os.Exit(m.Run())
}

// Production builds trust no test key; test builds trust the tests' key.
func TestTrustedKeys(t *testing.T) {
	pub := releasetest.Key.Public().(ed25519.PublicKey)
	for name, k := range productionKeys {
		if name == releasetest.KeyName || k.Equal(pub) || k.Equal(licensetest.Key.Public()) {
			t.Errorf("production key %s is a test key", name)
		}
		if len(k) != ed25519.PublicKeySize {
			t.Errorf("key %s: %d bytes", name, len(k))
		}
	}
	if len(productionKeys) == 0 {
		t.Error("no production release key")
	}
	if _, ok := builtTestKeys[releasetest.KeyName]; ok != licensetestBuild {
		t.Errorf("this build (licensetest %v) trusts the tests' release key: %v", licensetestBuild, ok)
	}
}

var now = time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)

// testRelease is a release with every image pinned, as a channel's are.
func testRelease(t testing.TB, version, minFrom string) *Release {
	t.Helper()
	r, err := Load(fstest.MapFS{
		ManifestFile: {Data: []byte("version: \"" + version + "\"\nmin_upgrade_from: \"" + minFrom + "\"\nmin_customer_package_version: 2025.1.1\n" +
			"min_appliance_version: 1.2.0\nimages: [router, api]\nimage_digests:\n  router: sha256:" + strings.Repeat("ab", 32) + "\n  api: sha256:" + strings.Repeat("01", 32) + "\n" +
			"requirements:\n  cpus: {min: 1, recommended: 2}\n  memory_gib: {min: 1, recommended: 2}\n  disk_gib: {min: 1, recommended: 2}\n")},
		ComposeFile:     {Data: []byte("services:\n  router:\n    image: ${DOCKER_REGISTRY_BASE_PATH}/router:${CARTO_SELFHOSTED_VERSION}\n")},
		EnvTemplateFile: {Data: []byte("CARTO_SELFHOSTED_VERSION=" + version + "\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustSign(t testing.TB, r *Release) []byte {
	t.Helper()
	sig, err := Sign(r, releasetest.KeyName, releasetest.Key)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func wantUntrusted(t *testing.T, what string, err error, says string) {
	t.Helper()
	if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), says) {
		t.Errorf("%s: %v, want ErrUntrusted saying %q", what, err, says)
	}
}

func TestSignVerify(t *testing.T) {
	t.Parallel()
	r := testRelease(t, "2025.11.3", "2025.6.2")
	sig := mustSign(t, r)
	if err := Verify(r, sig); err != nil {
		t.Fatal(err)
	}

	// Any changed byte of any file is refused.
	for name, change := range map[string]func(c *Release){
		ManifestFile:    func(c *Release) { c.RawManifest = append(c.RawManifest, '\n') },
		ComposeFile:     func(c *Release) { c.Compose = []byte(strings.Replace(string(c.Compose), "router:", "routeR:", 1)) },
		EnvTemplateFile: func(c *Release) { c.EnvTemplate = append([]byte("X=1\n"), c.EnvTemplate...) },
	} {
		c := *r
		change(&c)
		wantUntrusted(t, "tampered "+name, Verify(&c, sig), "not the ones signed")
	}
}

func TestVerifyRefusals(t *testing.T) {
	t.Parallel()
	r := testRelease(t, "2025.11.3", "2025.6.2")
	file := func(key, digest string, sig []byte) []byte {
		b, _ := json.Marshal(sigFile{Key: key, Digest: digest, Signature: base64.StdEncoding.EncodeToString(sig)})
		return b
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte(ReleaseContext + r.Digest())
	licenceFile, err := license.Sign(license.License{ID: "l", Customer: "c", TenantID: "t", Issued: now, Expires: now.AddDate(1, 0, 0), Layouts: []string{"standard"}, Nodes: 1}, licensetest.KeyName, licensetest.Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		sig  []byte
		says string
	}{
		{"not JSON", []byte("<html>"), "not a signature file"},
		{"empty", []byte(`{}`), "lacks its key"},
		{"unknown field", []byte(`{"key":"k","digest":"d","signature":"s","extra":1}`), "not a signature file"},
		{"an empty file", nil, "not a signature file"},
		{"unknown key", file("someone-else", r.Digest(), ed25519.Sign(other, msg)), `key "someone-else", which this carto-appliance does not trust`},
		{"another key under a trusted name", file(releasetest.KeyName, r.Digest(), ed25519.Sign(other, msg)), "does not verify"},
		{"signature of other content", file(releasetest.KeyName, r.Digest(), ed25519.Sign(releasetest.Key, []byte(ReleaseContext+"sha256:00"))), "does not verify"},
		// Domain separation: the trusted key's signature of the same
		// digest made for another use does not verify as a release's.
		{"the digest signed bare, as a licence signs", file(releasetest.KeyName, r.Digest(), ed25519.Sign(releasetest.Key, []byte(r.Digest()))), "does not verify"},
		{"the digest signed as an index", file(releasetest.KeyName, r.Digest(), ed25519.Sign(releasetest.Key, []byte(IndexContext+r.Digest()))), "does not verify"},
		{"a licence file", licenceFile, "not a signature file"},
	} {
		wantUntrusted(t, tc.name, Verify(r, tc.sig), tc.says)
	}
	bad := strings.Replace(string(mustSign(t, r)), `"signature": "`, `"signature": "!`, 1)
	wantUntrusted(t, "not base64", Verify(r, []byte(bad)), "not base64")

	// A licence key's signature over the release's signed message, in a
	// release signature file: refused as a key releases do not trust.
	lic := file(licensetest.KeyName, r.Digest(), ed25519.Sign(licensetest.Key, msg))
	wantUntrusted(t, "a licence key", Verify(r, lic), "does not trust")
	// Even were the licence key trusted for releases, a licence's own
	// signature (over bare JSON) is no release signature.
	keys := map[string]ed25519.PublicKey{licensetest.KeyName: licensetest.Key.Public().(ed25519.PublicKey)}
	var env struct{ Payload, Signature, Key string }
	json.Unmarshal(licenceFile, &env)
	lsig, _ := base64.StdEncoding.DecodeString(env.Signature)
	wantUntrusted(t, "a licence's signature", verify(ReleaseContext, r.Digest(), file(licensetest.KeyName, r.Digest(), lsig), keys), "does not verify")
	// And a release's signature is no index's.
	s := mustSign(t, r)
	wantUntrusted(t, "a release signature as an index's", VerifyIndex([]byte(r.Digest()), s), "not the one signed")
	wantUntrusted(t, "a release signature as an index's", verify(IndexContext, r.Digest(), s, trustedKeys()), "does not verify")
}

func TestSignRefusesBadInput(t *testing.T) {
	t.Parallel()
	r := testRelease(t, "2025.11.3", "2025.6.2")
	for _, tc := range []struct {
		name string
		key  ed25519.PrivateKey
	}{{"", releasetest.Key}, {"a b", releasetest.Key}, {"k", nil}} {
		if _, err := Sign(r, tc.name, tc.key); err == nil {
			t.Errorf("signed with name %q and a %d-byte key", tc.name, len(tc.key))
		}
	}
	if _, err := Sign(&Release{}, "k", releasetest.Key); err == nil {
		t.Error("signed a release with no manifest file")
	}
}

func TestManifestDigestsAndApplianceVersion(t *testing.T) {
	t.Parallel()
	base := "version: 1.0\nmin_upgrade_from: 1.0\nmin_customer_package_version: 1.0\nimages: [a, b]\n" +
		"requirements:\n  cpus: {min: 1, recommended: 2}\n  memory_gib: {min: 1, recommended: 2}\n  disk_gib: {min: 1, recommended: 2}\n"
	good := "sha256:" + strings.Repeat("0f", 32)
	m, err := ParseManifest([]byte(base + "min_appliance_version: v1.4\nimage_digests: {a: " + good + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.MissingDigests(); len(got) != 1 || got[0] != "b" {
		t.Errorf("MissingDigests = %v, want [b]", got)
	}
	for extra, says := range map[string]string{
		"min_appliance_version: 1.x\n":                            "min_appliance_version",
		"image_digests: {c: " + good + "}\n":                      `"c" is not among images`,
		"image_digests: {a: sha256:abc}\n":                        "image_digests.a",
		"image_digests: {a: " + strings.ToUpper(good[7:]) + "}\n": "image_digests.a",
	} {
		if _, err := ParseManifest([]byte(base + extra)); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%q: %v, want an error saying %q", extra, err, says)
		}
	}
}
