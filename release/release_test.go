package release

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestParseVersionAndCompare(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"2025.10.2", "2025.11.1", -1},
		{"2025.11", "2025.11.0", 0},
		{"v2025.11.3", "2025.11.3", 0},
		{"2025.11.10", "2025.11.9", 1},
	}
	for _, c := range cases {
		a, err := ParseVersion(c.a)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := ParseVersion(c.b)
		if got := a.Compare(b); got != c.want {
			t.Errorf("%s vs %s = %d, want %d", c.a, c.b, got, c.want)
		}
	}
	for _, bad := range []string{"", "2025.x", "2025..1", "-1", "2025.11.3-rc1"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseManifestRefusesUnknownFields(t *testing.T) {
	_, err := ParseManifest([]byte("version: 1.0\nmin_upgrade_from: 1.0\nmin_customer_package_version: 1.0\nimages: [a]\nimagez: [b]\n"))
	if err == nil || !strings.Contains(err.Error(), "imagez") {
		t.Fatalf("want an error naming imagez, got %v", err)
	}
}

// FuzzParseVersion: no panic, and a parsed version prints back to one that
// compares equal.
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"2025.11.3", "v1", "1.2.3.4", "", "..", "1.-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			return
		}
		w, err := ParseVersion(v.String())
		if err != nil || v.Compare(w) != 0 {
			t.Fatalf("%q -> %q does not round-trip: %v", s, v.String(), err)
		}
	})
}

// FuzzParseManifest: any input is refused with an error or accepted as a
// valid manifest; never a panic.
func FuzzParseManifest(f *testing.F) {
	f.Add("version: 2025.11.3\nmin_upgrade_from: 2025.6.2\nmin_customer_package_version: 2025.6.2\nimages: [a]\n")
	f.Add("version: [\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseManifest([]byte(s))
		if err == nil && len(m.Images) == 0 {
			t.Fatal("accepted a manifest without images")
		}
	})
}

func testFiles(version string) fstest.MapFS {
	return fstest.MapFS{
		ManifestFile: {Data: []byte("version: " + version + "\nmin_upgrade_from: 2025.1.1\nmin_customer_package_version: 2025.1.1\n" +
			"images: [router]\nrequirements:\n  cpus: {min: 1, recommended: 2}\n  memory_gib: {min: 1, recommended: 2}\n  disk_gib: {min: 1, recommended: 2}\n")},
		ComposeFile:     {Data: []byte("services:\n  router:\n    image: ${DOCKER_REGISTRY_BASE_PATH}/router:${CARTO_SELFHOSTED_VERSION}\n")},
		EnvTemplateFile: {Data: []byte("CARTO_SELFHOSTED_VERSION=\n")},
	}
}

func TestLoadWriteDirAndDigest(t *testing.T) {
	t.Parallel()
	r, err := Load(testFiles("2025.11.3"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Load(testFiles("2025.12.1"))
	if r.Digest() == other.Digest() || !strings.HasPrefix(r.Digest(), "sha256:") {
		t.Fatalf("digests %s and %s: want distinct sha256 digests", r.Digest(), other.Digest())
	}
	dir := filepath.Join(t.TempDir(), "releases", "2025.11.3")
	if err := r.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	back, err := LoadDir(dir, r.Digest())
	if err != nil {
		t.Fatal(err)
	}
	if back.Digest() != r.Digest() || back.Manifest.Version != "2025.11.3" {
		t.Errorf("read back %s %s, want %s", back.Manifest.Version, back.Digest(), r.Digest())
	}
	// Written once: a second write is refused, the first kept whole.
	if err := other.WriteDir(dir); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteDir = %v, want ErrExist", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Errorf("the releases dir holds %d entries, want only the release (no temporary left)", len(entries))
	}
	// A changed file is refused, naming the dir.
	if err := os.WriteFile(filepath.Join(dir, ComposeFile), []byte("services: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir, r.Digest()); err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "changed or damaged") {
		t.Errorf("LoadDir of a changed release = %v, want a refusal naming %s", err, dir)
	}
	// A missing file too.
	os.Remove(filepath.Join(dir, EnvTemplateFile))
	if _, err := LoadDir(dir, ""); err == nil || !strings.Contains(err.Error(), EnvTemplateFile) {
		t.Errorf("LoadDir without env.tpl = %v, want an error naming it", err)
	}
}

func TestWriteDirNeedsManifestBytes(t *testing.T) {
	t.Parallel()
	r := &Release{Manifest: Manifest{Version: "1.0"}}
	if err := r.WriteDir(filepath.Join(t.TempDir(), "x")); err == nil {
		t.Error("a release with no manifest file was written")
	}
}
