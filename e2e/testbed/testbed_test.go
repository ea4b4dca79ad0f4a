package testbed

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/templates"
)

func TestNewKeyJSONIsARealisticServiceAccountKey(t *testing.T) {
	b, err := newKeyJSON()
	if err != nil {
		t.Fatal(err)
	}
	var k serviceAccountKey
	if err := json.Unmarshal(b, &k); err != nil {
		t.Fatalf("key.json is not JSON: %v", err)
	}
	if k.Type != "service_account" || k.ProjectID == "" || len(k.PrivateKeyID) != 40 || len(k.ClientID) != 21 {
		t.Errorf("unexpected fields: %+v", k)
	}
	if n := len(b); n < 2000 || n > 3000 {
		t.Errorf("key.json is %d bytes; real ones are about 2.3 KB", n)
	}
}

// The registry compares only the first 72 bytes of a password (see
// htpasswdLine): two generated keys must differ there, and the htpasswd
// hash must accept the whole key.
func TestKeysDifferWithinWhatTheRegistryChecks(t *testing.T) {
	a, err := newKeyJSON()
	if err != nil {
		t.Fatal(err)
	}
	b, err := newKeyJSON()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a[:bcryptMaxPassword], b[:bcryptMaxPassword]) {
		t.Fatalf("two keys share their first 72 bytes:\n%s", a[:bcryptMaxPassword])
	}
	line, err := htpasswdLine(RegistryUser, a)
	if err != nil {
		t.Fatal(err)
	}
	user, hash, ok := bytes.Cut(bytes.TrimSpace(line), []byte(":"))
	if !ok || string(user) != RegistryUser {
		t.Fatalf("htpasswd line %q", line)
	}
	// What the registry does with a long password: x/crypto's Compare uses
	// the first 72 bytes.
	if err := bcrypt.CompareHashAndPassword(hash, a); err != nil {
		t.Errorf("the right key does not match its hash: %v", err)
	}
	if err := bcrypt.CompareHashAndPassword(hash, b); err == nil {
		t.Error("the wrong key matches the right key's hash")
	}
}

func TestBuildContextIsDeterministic(t *testing.T) {
	build := func() []byte {
		c := newBuildContext()
		c.dir("rootfs", 0o755)
		c.file("rootfs/a", 0o755, []byte("binary"))
		c.symlink("rootfs/sh", "a")
		c.dir("rootfs/tmp", 0o1777)
		b, err := c.bytes()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	one, two := build(), build()
	if !bytes.Equal(one, two) || contentTag(one) != contentTag(two) {
		t.Fatal("the same context archived twice differs")
	}
	tr := tar.NewReader(bytes.NewReader(one))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "rootfs/tmp/" && h.Mode != 0o1777 {
			t.Errorf("tmp mode %o, want 1777", h.Mode)
		}
		if h.Name == "rootfs/sh" && (h.Typeflag != tar.TypeSymlink || h.Linkname != "a") {
			t.Errorf("sh is not a symlink to a: %+v", h)
		}
	}
	if len(names) != 4 {
		t.Errorf("entries %q", names)
	}
	if contentTag([]byte("ab"), []byte("c")) == contentTag([]byte("a"), []byte("bc")) {
		t.Error("contentTag ignores part boundaries")
	}
}

func TestReleaseDockerfile(t *testing.T) {
	got, err := releaseDockerfile("carto-testbed/standin:abc", map[string]string{
		"STANDIN_VERSION": "2025.11.3",
		"STANDIN_IMAGE":   "consumers/cdn-invalidator-sub",
		"X":               `a "b" $HOME \n`,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "FROM carto-testbed/standin:abc\n" +
		`ENV STANDIN_IMAGE="consumers/cdn-invalidator-sub" STANDIN_VERSION="2025.11.3" X="a \"b\" \$HOME \\n"` + "\n"
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for _, env := range []map[string]string{{"A-B": "x"}, {"A": "x\ny"}} {
		if _, err := releaseDockerfile("x", env); err == nil {
			t.Errorf("%q: no error", env)
		}
	}
}

func TestImagesFor(t *testing.T) {
	im := Images{Standin: "s", Postgres: "p", Valkey: "v", Router: "r"}
	for name, want := range map[string]string{
		"workspace-postgres": "p", "valkey": "v", "router-http": "r",
		"maps-api": "s", "workspace-db": "s", "consumers/cdn-invalidator-sub": "s", "router-metrics": "s",
	} {
		if got := im.For(name); got != want {
			t.Errorf("For(%q) = %q, want %q", name, got, want)
		}
	}
}

// release.sh refuses the tests' release key by its public half: the two
// must stay in step.
func TestReleaseShKnowsTheTestReleaseKey(t *testing.T) {
	der, err := x509.MarshalPKIXPublicKey(TestReleaseKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("../../packaging/release.sh")
	if err != nil {
		t.Fatal(err)
	}
	if want := "\ntest_pubkey=" + base64.StdEncoding.EncodeToString(der) + "\n"; !strings.Contains(string(script), want) {
		t.Errorf("packaging/release.sh does not say %q", strings.TrimSpace(want))
	}
}

func TestNextReleaseDiffersAsARealReleaseDoes(t *testing.T) {
	base, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	next, err := NextRelease(base, NextVersion)
	if err != nil {
		t.Fatal(err)
	}
	m, err := release.ParseManifest(next.RawManifest)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != NextVersion || next.Manifest.Version != NextVersion {
		t.Errorf("version: raw %s, parsed %s; want %s", m.Version, next.Manifest.Version, NextVersion)
	}
	// It needs a newer carto-appliance, for the self-update to be exercised.
	if m.MinApplianceVersion != NextApplianceVersion || next.Manifest.MinApplianceVersion != NextApplianceVersion {
		t.Errorf("min_appliance_version: raw %q, parsed %q; want %s", m.MinApplianceVersion, next.Manifest.MinApplianceVersion, NextApplianceVersion)
	}
	if !slices.Contains(m.Images, NextImage) || len(m.Images) != len(base.Manifest.Images)+1 || !slices.Equal(m.Images, next.Manifest.Images) {
		t.Errorf("images: %v (base %v)", m.Images, base.Manifest.Images)
	}
	var compose struct {
		Services map[string]struct {
			Image string `yaml:"image"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(next.Compose, &compose); err != nil {
		t.Fatalf("the derived compose template: %v", err)
	}
	if img := compose.Services[NextService].Image; !strings.Contains(img, "/"+NextImage+":${CARTO_SELFHOSTED_VERSION}") {
		t.Errorf("service %s runs %q", NextService, img)
	}
	if !strings.Contains(string(next.EnvTemplate), "\n"+NextEnvKey+"=${"+NextEnvKey+":-"+NextEnvDefault+"}\n") {
		t.Errorf("the env template lacks %s with its default", NextEnvKey)
	}
	if next.Digest() == base.Digest() {
		t.Error("the derived release has the base's digest")
	}
}

func TestWithDigestsPinsEveryImage(t *testing.T) {
	base, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	d := map[string]string{}
	for i, name := range base.Manifest.Images {
		d[name] = fmt.Sprintf("sha256:%064x", i+1)
	}
	pinned, err := withDigests(base, d)
	if err != nil {
		t.Fatal(err)
	}
	if missing := pinned.Manifest.MissingDigests(); len(missing) > 0 {
		t.Errorf("missing digests: %v", missing)
	}
	delete(d, "valkey")
	if _, err := withDigests(base, d); err == nil {
		t.Error("a digest missing for valkey passed")
	}
}

func TestChannelReleasesAreAnUpgradePath(t *testing.T) {
	base, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	rels, err := ChannelReleases(base)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rels {
		got = append(got, r.Release.Manifest.Version+"<"+r.Release.Manifest.MinUpgradeFrom)
	}
	want := []string{base.Manifest.Version + "<" + base.Manifest.MinUpgradeFrom, NextVersion + "<" + base.Manifest.MinUpgradeFrom,
		BrokenMigrationVersion + "<" + NextVersion, UnhealthyVersion + "<" + NextVersion}
	if !slices.Equal(got, want) {
		t.Errorf("releases (version<min_upgrade_from): %v, want %v", got, want)
	}
	if rels[3].ImageEnv["maps-api"]["STANDIN_FAIL"] != "unhealthy" || !strings.Contains(rels[2].ImageEnv["workspace-db"]["STANDIN_MIGRATE_SQL"], "no_such_column") {
		t.Errorf("the failing releases do not fail: %v %v", rels[2].ImageEnv, rels[3].ImageEnv)
	}
}
