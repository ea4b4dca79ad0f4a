//go:build licensetest

package installer

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/steps"
)

// rollback goes back over the last upgrade with its backup: settings and
// pin, the database only when asked; then there is nothing more to roll
// back.
func TestRollbackGoesBackOverTheLastUpgrade(t *testing.T) {
	paths, f := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "new-service", ""))
	beforeConfig := withoutPrev(dirSnapshot(t, paths.ConfigDir))
	if _, err := PlanRollback(paths, false); err == nil || !strings.Contains(err.Error(), "no backup of an upgrade to CARTO 2025.11.3") {
		t.Errorf("a rollback before any upgrade: %v", err)
	}
	up, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := PlanRollback(paths, true)
	if err != nil || p.From != "2026.1.0" || p.To != "2025.11.3" || p.Backup != up.Upgrade.Backups[0] || !p.HasDump {
		t.Fatalf("plan: %+v %v", p, err)
	}
	f.Log = nil
	res, err := Rollback(t.Context(), RollbackOptions{Options: Options{Paths: paths}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rollback == nil || res.Rollback.To != "2025.11.3" || res.Version != "2025.11.3" || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "the database is as CARTO 2026.1.0 left it") || !strings.Contains(res.Warnings[0], filepath.Join(p.Backup, backupDumpFile)) {
		t.Errorf("result: %+v %+v", res, res.Rollback)
	}
	if !sameFiles(beforeConfig, withoutPrev(dirSnapshot(t, paths.ConfigDir))) {
		t.Error("the config dir is not as before the upgrade")
	}
	if st, _ := loadState(paths.StateDir); st.Release.Version != "2025.11.3" || st.Version != "2025.11.3" || st.History[len(st.History)-1].Action != "rollback" {
		t.Errorf("state: %+v", st)
	}
	if slices.ContainsFunc(f.calls(""), func(c string) bool { return strings.Contains(c, "pg_restore -U") }) {
		t.Error("the database was restored unasked")
	}
	if r := upgradeJournal(t, paths); r.Action != "rollback 2026.1.0 -> 2025.11.3" || r.Outcome != steps.Succeeded {
		t.Errorf("journal: %s %s", r.Action, r.Outcome)
	}
	if _, err := Rollback(t.Context(), RollbackOptions{Options: Options{Paths: paths}}); err == nil || !strings.Contains(err.Error(), "no backup of an upgrade to CARTO 2025.11.3") {
		t.Errorf("a second rollback: %v", err)
	}

	// Upgraded again, rolled back with the database.
	if _, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}}); err != nil {
		t.Fatal(err)
	}
	f.Log = nil
	if res, err = Rollback(t.Context(), RollbackOptions{Options: Options{Paths: paths}, RestoreDatabase: true}); err != nil || len(res.Warnings) != 0 {
		t.Fatalf("with the database: %+v %v", res, err)
	}
	if !slices.ContainsFunc(f.calls(""), func(c string) bool { return strings.Contains(c, "pg_restore -U") }) {
		t.Error("the database was not restored")
	}
}

// A rollback that fails stays unfinished, and the next converge (the
// agent's at its start, config apply) completes it; --restore-database
// with no dump is refused naming the flag's input.
func TestRollbackStoppedIsCompleted(t *testing.T) {
	paths, f := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""))
	up, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyErrs = []error{errors.New("engine gone")}
	if _, err := Rollback(t.Context(), RollbackOptions{Options: Options{Paths: paths}}); err == nil || !strings.Contains(err.Error(), "config apply") {
		t.Fatalf("err = %v", err)
	}
	if r := upgradeJournal(t, paths); !r.Unfinished() || r.Interrupted() != "restore" {
		t.Fatalf("journal: %q %v", r.Outcome, r.Steps)
	}
	res, err := Apply(t.Context(), Options{Paths: paths})
	if err != nil || len(res.Warnings) == 0 || !strings.Contains(res.Warnings[0], "the rollback 2026.1.0 -> 2025.11.3 stopped during its restore step: it was completed") {
		t.Fatalf("apply: %+v %v", res, err)
	}
	if st, _ := loadState(paths.StateDir); st.Release.Version != "2025.11.3" {
		t.Errorf("pinned: %s", st.Release.Version)
	}

	os.Remove(filepath.Join(up.Upgrade.Backups[0], backupDumpFile))
	if _, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}}); err != nil {
		t.Fatal(err)
	}
	backups, _ := os.ReadDir(filepath.Join(paths.StateDir, backupsDirName))
	os.Remove(filepath.Join(paths.StateDir, backupsDirName, backups[len(backups)-1].Name(), backupDumpFile))
	if _, err := PlanRollback(paths, true); err == nil || inputOf(err) != InputRestoreDatabase {
		t.Errorf("--restore-database with no dump: %v", err)
	}
}

// upgrade.keep_backups bounds the backups kept: the oldest complete ones
// go after a successful upgrade; the operator's files and a partial one
// stay.
func TestUpgradeKeepsTheNewestBackups(t *testing.T) {
	paths, _ := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""))
	cfg, _, err := config.Load(paths.File(config.ConfigFileName))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upgrade.KeepBackups = 1
	if err := config.Save(paths.File(config.ConfigFileName), cfg); err != nil {
		t.Fatal(err)
	}
	mine := filepath.Join(paths.StateDir, backupsDirName, "my-notes")
	os.MkdirAll(mine, 0o700)
	first, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
	if err != nil || len(first.Upgrade.Removed) != 0 {
		t.Fatalf("first upgrade: %+v %v", first, err)
	}
	if _, err := Rollback(t.Context(), RollbackOptions{Options: Options{Paths: paths}}); err != nil {
		t.Fatal(err)
	}
	second, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(second.Upgrade.Removed, first.Upgrade.Backups) {
		t.Errorf("removed %v, want the first upgrade's %v", second.Upgrade.Removed, first.Upgrade.Backups)
	}
	entries, _ := os.ReadDir(filepath.Join(paths.StateDir, backupsDirName))
	var names []string
	for _, e := range entries {
		names = append(names, filepath.Join(paths.StateDir, backupsDirName, e.Name()))
	}
	if want := []string{second.Upgrade.Backups[0], mine}; !slices.Equal(slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(want))) {
		t.Errorf("backups left: %v, want %v", names, want)
	}
	// What rollback needs is there.
	if p, err := PlanRollback(paths, true); err != nil || p.Backup != second.Upgrade.Backups[0] {
		t.Errorf("plan after pruning: %+v %v", p, err)
	}
}

func TestBackupVersions(t *testing.T) {
	for name, want := range map[string][2]string{
		"20261205T100000Z-upgrade-2025.11.3-to-2026.1.0":       {"2025.11.3", "2026.1.0"},
		"20261205T100000Z-upgrade-2025.11.3-to-2026.1.0-2":     {"2025.11.3", "2026.1.0"},
		"20261205T100000Z-upgrade-2025.11.3-to-2026.1.0-rc1":   {"2025.11.3", "2026.1.0-rc1"},
		"20261205T100000Z-upgrade-2025.11.3-to-2026.1.0-rc1-3": {"2025.11.3", "2026.1.0-rc1"},
		"my-notes":                              {},
		"20261205T100000Z-upgrade--to-2026.1.0": {},
	} {
		from, to, ok := backupVersions(name)
		if ok != (want[0] != "") || from != want[0] && ok || to != want[1] && ok {
			t.Errorf("%s: %q %q %v, want %q", name, from, to, ok, want)
		}
	}
}
