package installer

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/stack"
	"github.com/cartodb/carto-appliance/templates"
)

// The full .env (every secret) is staged under the state dir, private,
// never in the shared temp dir; a stage a killed run left behind (here or,
// by an earlier version, in the temp dir) is removed by the next run.
func TestStageIsPrivateAndCleansUpAfterAKilledRun(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	stale := filepath.Join(paths.StateDir, stageDirPrefix+"123")
	os.MkdirAll(stale, 0o700)
	os.WriteFile(filepath.Join(stale, config.EnvFileName), []byte("POSTGRES_ADMIN_PASSWORD=s3cret\n"), 0o600)
	// Where an earlier version staged.
	legacy := filepath.Join(tmp, "carto-appliance-stage-42")
	os.MkdirAll(legacy, 0o700)
	os.WriteFile(filepath.Join(legacy, config.EnvFileName), []byte("POSTGRES_ADMIN_PASSWORD=s3cret\n"), 0o600)

	rel, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	compose, err := stack.RenderCompose(rel.Compose, stack.RenderOptions{Version: rel.Manifest.Version, Env: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := stage(paths, &desired{envFile: []byte("SELFHOSTED_DOMAIN=carto.example.com\n"), compose: compose})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(dir) != paths.StateDir {
		t.Errorf("staged in %s, not in the state dir %s", dir, paths.StateDir)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the stale stage is still there: %v", err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("stage dir: %v %v", fi.Mode(), err)
	}
	for _, name := range []string{config.EnvFileName, stack.ComposeFileName} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("staged %s: %v %v", name, fi.Mode(), err)
		}
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("the temp dir holds %v: an earlier version's stage was left", ents)
	}
	// compose-go checks the staged stack as it is.
	if _, err := stack.Load(context.Background(), dir, "carto"); err != nil {
		t.Errorf("loading the stage: %v", err)
	}
	// The next stage removes this one, as if its run had been killed.
	next, err := stage(paths, &desired{envFile: []byte("A=1\n"), compose: compose})
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := filepath.Glob(filepath.Join(paths.StateDir, stageDirPrefix+"*")); len(ents) != 1 || ents[0] != next {
		t.Errorf("stages after a second run: %v", ents)
	}
}
