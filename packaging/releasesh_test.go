package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// release.sh refuses to publish a binary built with the test tag (which
// carries the stop hooks that kill the process at a named step), unless
// the test bed builds its own test release (RELEASE_TEST_KEY=1).
func TestReleaseShRefusesATestBuild(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "release.key")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", key).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "out")
	cmd := exec.Command("bash", "release.sh", out, "https://releases.example.invalid/carto-appliance", "9.9.9")
	cmd.Env = append(os.Environ(), "RELEASE_KEY="+key, "ARCHES=amd64", "GOFLAGS=-tags=licensetest", "CGO_ENABLED=0")
	got, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(got), "carries the test build's stop hooks") {
		t.Fatalf("release.sh of a test build: %v\n%s", err, got)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused release left %s: %v", out, err)
	}
}
