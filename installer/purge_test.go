package installer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/firewall"
)

// tree lists the paths under dir, relative, sorted.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var got []string
	filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			got = append(got, rel)
		}
		return nil
	})
	slices.Sort(got)
	return got
}

func touch(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		p := filepath.Join(dir, n)
		if strings.HasSuffix(n, "/") {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A purge of a dir that is not the appliance's (`--config-dir /opt`) is
// refused with the flag named and deletes nothing.
func TestCheckPurgeRefusesADirThatIsNotTheAppliances(t *testing.T) {
	root := t.TempDir()
	opt := filepath.Join(root, "opt")
	touch(t, opt, "google/chrome/chrome", "containerd/bin/containerd", "customer.env", "certs/ca.pem")
	state := filepath.Join(root, "state")
	touch(t, state, MarkerFileName, stateFileName)
	before := tree(t, opt)

	err := CheckPurge(config.Paths{ConfigDir: opt, StateDir: state})
	if err == nil || !strings.Contains(err.Error(), "the config dir "+opt+" is not carto-appliance's") || inputOf(err) != InputConfigDir || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("got %v", err)
	}
	err = CheckPurge(config.Paths{ConfigDir: state, StateDir: opt})
	if err == nil || !strings.Contains(err.Error(), "the state dir "+opt+" is not carto-appliance's") || inputOf(err) != InputStateDir {
		t.Fatalf("as the state dir: %v", err)
	}
	if got := tree(t, opt); !slices.Equal(got, before) {
		t.Errorf("%s changed: %v, was %v", opt, got, before)
	}

	// A dir installed before the marker existed is known by its files.
	old := filepath.Join(root, "old-config")
	touch(t, old, config.ConfigFileName)
	if err := CheckPurge(config.Paths{ConfigDir: old, StateDir: filepath.Join(root, "missing")}); err != nil {
		t.Errorf("a config dir with appliance.yaml, no state dir: %v", err)
	}
}

// A purge deletes what the appliance wrote and keeps the operator's files,
// and then the dir (with its marker) only when something is left.
func TestPurgeDeletesOnlyWhatTheApplianceWrote(t *testing.T) {
	root := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(root, "config"), StateDir: filepath.Join(root, "state")}
	touch(t, paths.ConfigDir, MarkerFileName, config.ConfigFileName, config.ConfigFileName+".prev", config.CustomerEnvFileName, config.EnvFileName, "..env.tmp-123", ".appliance.yaml.prev.tmp-9",
		"docker-compose.yml", config.LicenseFileName, "certs/key.json", "certs/carto.crt", "certs/carto.key.prev",
		"notes.txt", "backup/dump.sql", "certs-old/ca.pem")
	touch(t, paths.StateDir, MarkerFileName, stateFileName, agentStateFileName, config.LicenseCheckFileName, convergeLockName, "agent.lock",
		"tls/ca.key", "acme/certificates/x.crt", journalFileName, upgradeJournalFileName, selfUpdateJournalFileName, upgradeIntentFileName, "appliance-previous/carto-appliance-1.0.0", "backups/20261205T100000Z-upgrade-2025.11.3-to-2026.1.0/workspace.dump", "rehearsal-123/workspace.dump")

	if err := CheckPurge(paths); err != nil {
		t.Fatal(err)
	}
	var kept []Kept
	for _, d := range purgeDirs(paths) {
		k, err := d.purge()
		if err != nil {
			t.Fatal(err)
		}
		if k != nil {
			kept = append(kept, *k)
		}
	}
	if want := []string{MarkerFileName, "backup", "backup/dump.sql", "certs-old", "certs-old/ca.pem", "notes.txt"}; !slices.Equal(tree(t, paths.ConfigDir), want) {
		t.Errorf("config dir after purge: %v, want %v", tree(t, paths.ConfigDir), want)
	}
	if len(kept) != 1 || kept[0].Dir != paths.ConfigDir || !slices.Equal(kept[0].Foreign, []string{"backup", "certs-old", "notes.txt"}) {
		t.Errorf("kept: %+v", kept)
	}
	if _, err := os.Stat(paths.StateDir); !os.IsNotExist(err) {
		t.Errorf("the state dir, all the appliance's, is still there: %v", tree(t, paths.StateDir))
	}
	// The marker stayed with the kept files: purging again is allowed, and
	// deletes nothing more.
	if err := CheckPurge(paths); err != nil {
		t.Errorf("a second purge: %v", err)
	}
}

// What commit writes is marked as the appliance's and purged whole: a new
// file the appliance writes without a name in purge.go fails here.
func TestPurgeRemovesEverythingCommitWrites(t *testing.T) {
	root := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(root, "config"), StateDir: filepath.Join(root, "state")}
	d := &desired{customer: []byte("A=1\n"), key: []byte("{}"), license: []byte("{}"), envFile: []byte("A=1\n"), compose: []byte("services: {}\n"),
		certs: map[string][]byte{config.ServerCertFile: []byte("c"), config.ServerKeyFile: []byte("k")}}
	for range 2 { // twice, with a change: .prev files too
		if err := commit(paths, d, nil); err != nil {
			t.Fatal(err)
		}
		d.customer, d.envFile = []byte("A=2\n"), []byte("A=2\n")
	}
	if err := saveState(paths.StateDir, State{}); err != nil {
		t.Fatal(err)
	}
	// The saved allow-list, and a stage a killed run left.
	if err := os.WriteFile(filepath.Join(paths.StateDir, firewall.FileName), []byte(`{"chain":"CARTO-carto","rules":"*filter\nCOMMIT\n"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(paths.StateDir, stageDirPrefix+"killed"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{paths.ConfigDir, paths.StateDir} {
		if _, err := os.Stat(filepath.Join(dir, MarkerFileName)); err != nil {
			t.Fatalf("%s has no marker: %v", dir, err)
		}
	}
	for _, d := range purgeDirs(paths) {
		if k, err := d.purge(); err != nil || k != nil {
			t.Fatalf("purge kept %+v: %v", k, err)
		}
	}
	for _, dir := range []string{paths.ConfigDir, paths.StateDir} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s is left: %v", dir, tree(t, dir))
		}
	}
}
