package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/release/releasetest"
)

var now = func() time.Time { return time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC) }

// releaseDir writes a release directory as the release team's build
// leaves it: every image pinned.
func releaseDir(t *testing.T, version, env string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		release.ManifestFile: "version: \"" + version + "\"\nmin_upgrade_from: 2025.6.2\nmin_customer_package_version: 2025.6.2\nimages: [router]\n" +
			"image_digests: {router: sha256:" + strings.Repeat("ab", 32) + "}\n" +
			"requirements:\n  cpus: {min: 1, recommended: 2}\n  memory_gib: {min: 1, recommended: 2}\n  disk_gib: {min: 1, recommended: 2}\n",
		release.ComposeFile:     "services:\n  router:\n    image: ${DOCKER_REGISTRY_BASE_PATH}/router:${CARTO_SELFHOSTED_VERSION}\n",
		release.EnvTemplateFile: env,
	}
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run([]string{"keygen", "-name", "carto-release-2099", "-out", dir}, &out, now); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "carto-release-2099.key")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", err, fi)
	}
	b, _ := os.ReadFile(path)
	name, seed, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	if name != "carto-release-2099" || strings.Contains(out.String(), seed) {
		t.Errorf("key file %q; printed %q (the private key must not be)", name, out.String())
	}
	if !strings.Contains(out.String(), `"carto-release-2099": mustKey("`) || !strings.Contains(out.String(), "productionKeys") {
		t.Errorf("printed %q, want the line for release/keys.go", out.String())
	}
	if err := run([]string{"keygen", "-name", "carto-release-2099", "-out", dir}, &out, now); err == nil || !strings.Contains(err.Error(), "never overwritten") {
		t.Errorf("second keygen: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, b) {
		t.Error("the key was overwritten")
	}
	if err := run([]string{"keygen", "-name", "../x", "-out", dir}, &out, now); err == nil {
		t.Error("keygen took a name with a path")
	}
}

func TestPublish(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "channels")
	if err := run([]string{"keygen", "-name", "carto-release-2099", "-out", dir}, &bytes.Buffer{}, now); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "carto-release-2099.key")
	from := releaseDir(t, "2025.11.3", "A=1\n")
	var out bytes.Buffer
	if err := run([]string{"publish", "-key", key, "-from", from, "-channel-dir", root, "-channel", "stable"}, &out, now); err != nil {
		t.Fatal(err)
	}
	// A fresh key is in no build's keys.go: said, not hidden.
	if !strings.Contains(out.String(), "published CARTO 2025.11.3 in channel stable") || !strings.Contains(out.String(), "does not trust key carto-release-2099") {
		t.Errorf("publish printed %q", out.String())
	}
	for _, f := range []string{"index.json", "index.json.sig", "2025.11.3/manifest.yaml", "2025.11.3/docker-compose.yml", "2025.11.3/env.tpl", "2025.11.3/release.sig"} {
		if _, err := os.Stat(filepath.Join(root, "stable", f)); err != nil {
			t.Error(err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(root, "stable", "index.json"))
	idx, err := release.ParseIndex(b)
	if err != nil || len(idx.Releases) != 1 || idx.Releases[0].Version != "2025.11.3" {
		t.Fatalf("index %s: %v", b, err)
	}

	// The same version with other content is refused.
	if err := run([]string{"publish", "-key", key, "-from", releaseDir(t, "2025.11.3", "A=2\n"), "-channel-dir", root}, &out, now); err == nil || !strings.Contains(err.Error(), "never changes") {
		t.Errorf("republishing other content: %v", err)
	}
	// A release with an image not pinned is refused.
	unpinned := releaseDir(t, "2025.12.1", "")
	m, _ := os.ReadFile(filepath.Join(unpinned, release.ManifestFile))
	os.WriteFile(filepath.Join(unpinned, release.ManifestFile), []byte(strings.Replace(string(m), "image_digests: {router: sha256:"+strings.Repeat("ab", 32)+"}\n", "", 1)), 0o600)
	if err := run([]string{"publish", "-key", key, "-from", unpinned, "-channel-dir", root}, &out, now); err == nil || !strings.Contains(err.Error(), "image_digests") {
		t.Errorf("publishing unpinned images: %v", err)
	}
	if err := run([]string{"publish", "-key", key, "-from", from}, &out, now); err == nil {
		t.Error("published without -channel-dir")
	}
}

// The tests' key publishes only test channels.
func TestPublishTestKey(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "test.key")
	os.WriteFile(key, []byte(releasetest.KeyName+" "+base64.StdEncoding.EncodeToString(releasetest.Key.Seed())+"\n"), 0o600)
	from := releaseDir(t, "2025.11.3", "")
	root := filepath.Join(dir, "channels")
	if err := run([]string{"publish", "-key", key, "-from", from, "-channel-dir", root}, &bytes.Buffer{}, now); err == nil || !strings.Contains(err.Error(), "tests' release key") {
		t.Errorf("publish with the tests' key: %v", err)
	}
	if _, err := os.Stat(root); err == nil {
		t.Error("a refused publish wrote the channel")
	}
	if err := run([]string{"publish", "-key", key, "-from", from, "-channel-dir", root, "-channel", "test", "-allow-test-key"}, &bytes.Buffer{}, now); err != nil {
		t.Fatal(err)
	}
	idx, _ := os.ReadFile(filepath.Join(root, "test", release.IndexFile))
	sig, _ := os.ReadFile(filepath.Join(root, "test", release.IndexSigFile))
	// Trusted by test builds only.
	if err := release.VerifyIndex(idx, sig); (err == nil) != licensetestBuild {
		t.Errorf("the test channel's index, in a build with licensetest %v: %v", licensetestBuild, err)
	}
}

// publish-appliance lists release.sh's binaries, by the platform in their
// names, in the channel's signed index.
func TestPublishAppliance(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "channels")
	if err := run([]string{"keygen", "-name", "carto-release-2099", "-out", dir}, &bytes.Buffer{}, now); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "carto-release-2099.key")
	amd := filepath.Join(dir, "carto-appliance_linux_amd64")
	os.WriteFile(amd, []byte("an amd64 binary"), 0o755)
	var out bytes.Buffer
	if err := run([]string{"publish-appliance", "-key", key, "-version", "1.4.0", "-channel-dir", root, amd}, &out, now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "published carto-appliance 1.4.0 for linux_amd64 in channel stable") {
		t.Errorf("publish-appliance printed %q", out.String())
	}
	b, _ := os.ReadFile(filepath.Join(root, "stable", release.IndexFile))
	idx, err := release.ParseIndex(b)
	if err != nil || len(idx.Appliances) != 1 || idx.Appliances[0].Binaries["linux_amd64"].Size != 15 {
		t.Fatalf("index %s: %v", b, err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "stable", release.AppliancePath("1.4.0", "linux_amd64"))); string(got) != "an amd64 binary" {
		t.Errorf("the published binary holds %q", got)
	}
	other := filepath.Join(dir, "carto-appliance")
	os.WriteFile(other, []byte("x"), 0o755)
	for _, args := range [][]string{
		{"-key", key, "-version", "1.5.0", "-channel-dir", root, other},    // no platform in the name
		{"-key", key, "-version", "1.5.0", "-channel-dir", root},           // no binary
		{"-key", key, "-version", "1.5.0", "-channel-dir", root, amd, amd}, // twice
		{"-key", key, "-version", "1.x", "-channel-dir", root, amd},
	} {
		if err := run(append([]string{"publish-appliance"}, args...), &out, now); err == nil {
			t.Errorf("publish-appliance %v: no error", args)
		}
	}
}
