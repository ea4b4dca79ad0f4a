package installer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/release"
)

// otherRelease is the carried release with another version.
func otherRelease(t *testing.T, version string) *release.Release {
	t.Helper()
	c := carried(t)
	raw := strings.Replace(string(c.RawManifest), `version: "`+c.Manifest.Version+`"`, `version: "`+version+`"`, 1)
	r, err := release.Load(fstest.MapFS{
		release.ManifestFile:    {Data: []byte(raw)},
		release.ComposeFile:     {Data: c.Compose},
		release.EnvTemplateFile: {Data: c.EnvTemplate},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Manifest.Version != version {
		t.Fatalf("the carried manifest's version line was not found")
	}
	return r
}

func TestInstalledRelease(t *testing.T) {
	t.Parallel()
	c := carried(t)
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}

	// A first install pins the binary's release.
	r, pin, err := installedRelease(paths, State{})
	if err != nil || pin == nil || r.Digest() != c.Digest() || pin.Version != c.Manifest.Version {
		t.Fatalf("first install: %v, pin %+v", err, pin)
	}
	// So does a node installed before releases were pinned, when the
	// binary carries the installed version.
	if _, pin, err := installedRelease(paths, State{Version: c.Manifest.Version}); err != nil || pin == nil {
		t.Fatalf("unpinned node at the carried version: %v, pin %+v", err, pin)
	}
	// Another installed version is never replaced by the binary's.
	_, _, err = installedRelease(paths, State{Version: "2024.1.1"})
	if !errors.Is(err, ErrReleaseNotPinned) || !strings.Contains(err.Error(), "carto-appliance upgrade") || !strings.Contains(err.Error(), "2024.1.1") {
		t.Fatalf("unpinned node at another version: %v", err)
	}

	// A pinned release is what converges render, whatever the binary
	// carries.
	old := otherRelease(t, "2025.6.2")
	p := newPin(old)
	if err := savePin(paths, old, p); err != nil {
		t.Fatal(err)
	}
	if err := savePin(paths, old, p); err != nil {
		t.Fatalf("pinning the same release again: %v", err)
	}
	st := State{Version: "2025.6.2", Release: p}
	r, pin, err = installedRelease(paths, st)
	if err != nil || pin != nil || r.Manifest.Version != "2025.6.2" || r.Digest() != old.Digest() {
		t.Fatalf("pinned: %v, version %s, new pin %+v", err, r.Manifest.Version, pin)
	}
	rs := releaseStatus(st)
	if rs.Installed != "2025.6.2" || rs.Carried != c.Manifest.Version || !strings.Contains(rs.Note, "carto-appliance upgrade") {
		t.Errorf("status %+v: want installed 2025.6.2, carried %s and a note saying to upgrade", rs, c.Manifest.Version)
	}
	if rs := releaseStatus(State{Version: c.Manifest.Version}); rs.Note != "" {
		t.Errorf("same version: note %q, want none", rs.Note)
	}

	// A pinned release changed on disk is refused, not rendered.
	os.WriteFile(filepath.Join(paths.StateDir, p.Dir, release.EnvTemplateFile), []byte("X=1\n"), 0o600)
	if _, _, err := installedRelease(paths, st); err == nil || !strings.Contains(err.Error(), "changed or damaged") {
		t.Errorf("tampered pin: %v", err)
	}
}

func TestStateFormat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := saveState(dir, State{Version: "1"}); err != nil {
		t.Fatal(err)
	}
	st, err := loadState(dir)
	if err != nil || st.FormatVersion != stateFormat {
		t.Fatalf("saved state reads back format %d (%v), want %d", st.FormatVersion, err, stateFormat)
	}
	// A state file without a format is the first format, read as is.
	os.WriteFile(filepath.Join(dir, stateFileName), []byte(`{"version":"2025.6.2"}`), 0o600)
	if st, err := loadState(dir); err != nil || st.Version != "2025.6.2" {
		t.Fatalf("format 1: %+v %v", st, err)
	}
	// A newer one is refused rather than misread.
	os.WriteFile(filepath.Join(dir, stateFileName), []byte(`{"format_version":99}`), 0o600)
	if _, err := loadState(dir); err == nil || !strings.Contains(err.Error(), "newer than this carto-appliance") {
		t.Errorf("format 99: %v", err)
	}
}

func TestAgentStateFormat(t *testing.T) {
	t.Parallel()
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	if err := SaveAgentState(paths, AgentState{Services: map[string]AgentServiceState{"router": {Restarts: 2}}}); err != nil {
		t.Fatal(err)
	}
	st, err := LoadAgentState(paths)
	if err != nil || st.FormatVersion != agentStateFormat || st.Services["router"].Restarts != 2 {
		t.Fatalf("read back %+v %v", st, err)
	}
	os.WriteFile(filepath.Join(paths.StateDir, agentStateFileName), []byte(`{"format_version":7}`), 0o600)
	if _, err := LoadAgentState(paths); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("format 7: %v", err)
	}
}
