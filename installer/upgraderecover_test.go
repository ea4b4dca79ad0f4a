//go:build licensetest

package installer

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/stack"
)

// interrupt makes the upgrade journal read as a process killed as step
// started: that step running, the ones after it pending, no outcome.
func interrupt(t *testing.T, paths config.Paths, step string) {
	t.Helper()
	r := upgradeJournal(t, paths)
	i := slices.IndexFunc(r.Steps, func(s steps.StepRecord) bool { return s.Name == step })
	if i < 0 {
		t.Fatalf("no step %s in %+v", step, r.Steps)
	}
	r.Outcome, r.Error, r.EndedAt = "", "", r.EndedAt.AddDate(-1, 0, 0)
	for k := range r.Steps {
		switch {
		case k == i:
			r.Steps[k].State = steps.Running
		case k > i:
			r.Steps[k].State = steps.Pending
		default:
			r.Steps[k].State = steps.Done
		}
	}
	writeJournal(t, paths, r)
}

func writeJournal(t *testing.T, paths config.Paths, r *steps.Record) {
	t.Helper()
	// Resolve writes what it is given: an outcome-less record is written
	// as is by Note.
	if err := upgradeJournalOf(paths).Note(r, ""); err != nil {
		t.Fatal(err)
	}
}

func withoutPrev(m map[string]string) map[string]string {
	maps.DeleteFunc(m, func(k, _ string) bool { return strings.HasSuffix(k, ".prev") })
	return m
}

// A process killed once the new release ran (here: while verifying) is
// rolled back by the next converge (the agent's, at its start): the config
// dir, the pin, and the database from the backup, restored while only the
// database runs; the journal says where it stopped and what was done.
func TestRecoverRollsBackAnUpgradeKilledAfterItsConverge(t *testing.T) {
	paths, f := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "new-service", ""))
	beforeConfig := withoutPrev(dirSnapshot(t, paths.ConfigDir))
	beforeState, _ := loadState(paths.StateDir)
	if _, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}}); err != nil {
		t.Fatal(err)
	}
	interrupt(t, paths, "verify")
	f.Log, f.Applies = nil, nil

	res, err := Apply(t.Context(), Options{Paths: paths})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) == 0 || !strings.Contains(res.Warnings[0], "stopped during its verify step") || !strings.Contains(res.Warnings[0], "rolled back, CARTO 2025.11.3 runs again") || !strings.Contains(res.Warnings[0], "the database from the backup") {
		t.Errorf("warnings: %q", res.Warnings)
	}
	if after := withoutPrev(dirSnapshot(t, paths.ConfigDir)); !sameFiles(beforeConfig, after) {
		t.Errorf("the config dir is not as before the upgrade:\nbefore %v\nafter %v", slices.Sorted(maps.Keys(beforeConfig)), slices.Sorted(maps.Keys(after)))
	}
	if st, _ := loadState(paths.StateDir); st.Release == nil || st.Release.Version != beforeState.Release.Version || st.Version != "2025.11.3" || st.History[len(st.History)-1].Action != "apply" {
		t.Errorf("state: %+v", st)
	}
	// The database came up alone, was restored, then the stack converged.
	calls := f.calls("")
	drop := slices.IndexFunc(calls, func(c string) bool { return strings.Contains(c, "DROP DATABASE") })
	restore := slices.IndexFunc(calls, func(c string) bool { return strings.HasPrefix(c, "exec workspace-postgres pg_restore -U") })
	if drop < 0 || restore < drop {
		t.Fatalf("no drop then restore in %v", calls)
	}
	alone := slices.IndexFunc(f.Applies, func(o stack.ApplyOptions) bool { return len(o.Held) > 0 && !slices.Contains(o.Held, databaseService) })
	if alone != 0 || !slices.Contains(f.Applies[0].Held, "maps-api") {
		t.Errorf("the first apply did not run the database alone: %+v", f.Applies)
	}
	r := upgradeJournal(t, paths)
	if r.Outcome != steps.RolledBack || !strings.Contains(r.Error, "stopped during the verify step") {
		t.Errorf("journal: %s %q %v", r.Outcome, r.Error, r.Steps)
	}
	if us := upgradeStatus(paths); us == nil || us.Step != "verify" || us.Outcome != steps.RolledBack {
		t.Errorf("status's upgrade: %+v", us)
	}
	// Recovered once: the next converge has nothing to recover.
	f.Log = nil
	if res, err := Apply(t.Context(), Options{Paths: paths}); err != nil || len(res.Warnings) != 0 || slices.ContainsFunc(f.calls(""), func(c string) bool { return strings.Contains(c, "pg_restore") }) {
		t.Errorf("a second apply: %+v %v %v", res, err, f.calls(""))
	}
	// And the upgrade can be run again.
	if res, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}}); err != nil || res.Upgrade.To != "2026.1.0" {
		t.Errorf("upgrading again: %+v %v", res, err)
	}
}

// Killed after verifying, only its record left: the upgrade is completed.
func TestRecoverCompletesAVerifiedUpgrade(t *testing.T) {
	paths, f := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""))
	if _, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}}); err != nil {
		t.Fatal(err)
	}
	st, _ := loadState(paths.StateDir)
	st.Version, st.History = "2025.11.3", st.History[:len(st.History)-1]
	saveState(paths.StateDir, st)
	interrupt(t, paths, "record")
	f.Log = nil

	rec, err := RecoverUpgrade(t.Context(), Options{Paths: paths})
	if err != nil || rec == nil || !rec.Finished || rec.Step != "record" || !strings.Contains(rec.String(), "it was completed") {
		t.Fatalf("recovered: %+v %v", rec, err)
	}
	if st, _ := loadState(paths.StateDir); st.Release.Version != "2026.1.0" || st.Version != "2026.1.0" || st.History[len(st.History)-1].Action != "upgrade" {
		t.Errorf("state: %+v", st)
	}
	if slices.ContainsFunc(f.calls(""), func(c string) bool { return strings.Contains(c, "pg_restore") }) {
		t.Error("a completed upgrade restored the database")
	}
	if r := upgradeJournal(t, paths); r.Outcome != steps.Succeeded {
		t.Errorf("journal: %s", r.Outcome)
	}
}

// Killed before its commit: nothing of the new release was written, and
// nothing is put back; a backup the process left half written is removed
// by the next upgrade.
func TestRecoverAnUpgradeKilledBeforeItsCommit(t *testing.T) {
	paths, f := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""))
	before := withoutPrev(dirSnapshot(t, paths.ConfigDir))
	partial := filepath.Join(paths.StateDir, backupsDirName, "20260101T000000Z-upgrade-2025.11.3-to-2026.1.0")
	os.MkdirAll(partial, 0o700)
	os.WriteFile(filepath.Join(partial, backupPartialFile), nil, 0o600)
	os.WriteFile(filepath.Join(partial, backupDumpFile), []byte("PGDMP-cut"), 0o600)
	r := &steps.Record{Action: "upgrade 2025.11.3 -> 2026.1.0", Details: []byte(`{"from":"2025.11.3","to":"2026.1.0","backup":"` + partial + `"}`)}
	for _, name := range []string{"engine-proxy", "stage", "pull", "verify-images", "backup", "firewall", "commit", "converge", "reload-router", "verify", "record"} {
		state := steps.Pending
		if name == "firewall" {
			state = steps.Running
		}
		r.Steps = append(r.Steps, steps.StepRecord{Name: name, State: state})
	}
	writeJournal(t, paths, r)
	f.Log = nil

	rec, err := RecoverUpgrade(t.Context(), Options{Paths: paths})
	if err != nil || rec == nil || rec.Finished || rec.Restored != "nothing had been changed" {
		t.Fatalf("recovered: %+v %v", rec, err)
	}
	if slices.ContainsFunc(f.calls(""), func(c string) bool { return strings.HasPrefix(c, "apply") || strings.Contains(c, "pg_restore") }) {
		t.Errorf("calls: %v", f.calls(""))
	}
	if !sameFiles(before, withoutPrev(dirSnapshot(t, paths.ConfigDir))) {
		t.Error("the config dir changed")
	}
	if r := upgradeJournal(t, paths); r.Outcome != steps.RolledBack {
		t.Errorf("journal: %s", r.Outcome)
	}
	res, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) || len(res.Upgrade.Backups) != 1 {
		t.Errorf("the partial backup is still there (%v), backups %v", err, res.Upgrade.Backups)
	}
}

// A recovery that fails (the engine refuses) leaves the journal
// unfinished, saying why, and changes course at the next try: the node is
// never left half way by the recovery itself.
func TestRecoverFailingIsTriedAgain(t *testing.T) {
	paths, f := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""))
	if _, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}}); err != nil {
		t.Fatal(err)
	}
	interrupt(t, paths, "converge")
	if us := upgradeStatus(paths); us == nil || !us.Interrupted || us.Step != "converge" {
		t.Errorf("status of a stopped upgrade: %+v", us)
	}
	unlock, err := lockConverge(t.Context(), paths)
	if err != nil {
		t.Fatal(err)
	}
	if us := upgradeStatus(paths); us == nil || us.Interrupted {
		t.Errorf("status of an upgrade a process runs: %+v", us)
	}
	unlock()
	f.ApplyErrs = []error{errors.New("engine gone")}
	if _, err := Apply(t.Context(), Options{Paths: paths}); err == nil || !strings.Contains(err.Error(), "engine gone") || !strings.Contains(err.Error(), "stopped during its converge step") {
		t.Fatalf("err = %v", err)
	}
	if r := upgradeJournal(t, paths); !r.Unfinished() || !strings.Contains(r.Error, "tried again") || r.Interrupted() != "converge" {
		t.Errorf("journal after a failed recovery: %q %q %v", r.Outcome, r.Error, r.Steps)
	}
	if _, err := Apply(t.Context(), Options{Paths: paths}); err != nil {
		t.Fatal(err)
	}
	if st, _ := loadState(paths.StateDir); st.Release.Version != "2025.11.3" {
		t.Errorf("pinned after the second try: %s", st.Release.Version)
	}
	if r := upgradeJournal(t, paths); r.Outcome != steps.RolledBack {
		t.Errorf("journal: %s", r.Outcome)
	}
}
