//go:build integration

package e2e

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/e2e/testbed"
)

// buildOtherRelease builds carto-appliance from a copy of this module
// whose embedded release has the version newVersion: the binary a
// package upgrade or a re-run install.sh would put on a node.
func buildOtherRelease(t *testing.T, newVersion string) string {
	t.Helper()
	src := t.TempDir()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", path)
		if d.IsDir() {
			switch rel {
			case ".git", ".cache", "bin", "e2e":
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(src, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(src, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying the module: %v", err)
	}
	manifest := filepath.Join(src, "templates", "release", "manifest.yaml")
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	old := `version: "` + version + `"`
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no line %s", manifest, old)
	}
	if err := os.WriteFile(manifest, []byte(strings.Replace(string(b), old, `version: "`+newVersion+`"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "carto-appliance")
	build := exec.Command("go", "build", "-C", src, testbed.LicenseBuildFlags, "-o", out, "./cmd/carto-appliance")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building a carto-appliance that carries %s: %v\n%s", newVersion, err, b)
	}
	return out
}
