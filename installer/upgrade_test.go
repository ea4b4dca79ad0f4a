//go:build licensetest

package installer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/stack"
)

// upgradeNode is a node installed with CARTO 2025.11.3 (the fake engine
// running it) following a channel of rels; the engine reports each
// release image pulled with the digest its release pins, the database
// answers pg_dump and pg_restore, and the router answers.
func upgradeNode(t *testing.T, rels ...*release.Release) (config.Paths, *fakeStack) {
	t.Helper()
	f, _ := fakes(t)
	paths := channelNode(t, "stable", rels...)
	f.DigestsFor = func(ref string) []string {
		for _, r := range rels {
			if name, ok := releaseImage(r.Manifest, ref); ok {
				return []string{"registry.example/" + name + "@" + r.Manifest.ImageDigests[name]}
			}
		}
		return nil
	}
	f.Execs = map[string]fakeExec{"psql": {Out: "8192\n"}, "pg_dump": {Out: "PGDMP-fake"}, "pg_restore": {Out: "; Archive created\n"}}
	orig := checkRouter
	checkRouter = func(context.Context, config.Config) error { return nil }
	t.Cleanup(func() { checkRouter = orig })
	if _, err := Apply(t.Context(), Options{Paths: paths}); err != nil {
		t.Fatal(err)
	}
	return paths, f
}

func upgradeJournal(t *testing.T, paths config.Paths) *steps.Record {
	t.Helper()
	return journalRecord(t, paths, upgradeJournalFileName)
}

func TestUpgradeBacksUpConvergesVerifiesAndPins(t *testing.T) {
	paths, f := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "new-service", ""))
	var progress []string
	rep := stack.ReporterFunc(func(ev stack.Event) {
		if ev.Action == stack.ActionStep {
			progress = append(progress, ev.Service+": "+ev.Detail)
		}
	})
	res, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths, Reporter: rep}})
	if err != nil {
		t.Fatal(err)
	}
	if len(progress) != 22 || progress[0] != "upgrade 2025.11.3 -> 2026.1.0: engine-proxy running" || progress[21] != "upgrade 2025.11.3 -> 2026.1.0: record done" {
		t.Errorf("progress: %q", progress)
	}
	if u := res.Upgrade; u == nil || u.From != "2025.11.3" || u.To != "2026.1.0" || len(u.Backups) != 1 {
		t.Fatalf("upgrade: %+v", res.Upgrade)
	}
	st, _ := loadState(paths.StateDir)
	if st.Release == nil || st.Release.Version != "2026.1.0" || st.Version != "2026.1.0" || st.History[len(st.History)-1].Action != "upgrade" {
		t.Errorf("state after the upgrade: %+v", st)
	}
	backup := res.Upgrade.Backups[0]
	if b, _ := os.ReadFile(filepath.Join(backup, backupDumpFile)); string(b) != "PGDMP-fake" {
		t.Errorf("the dump in the backup: %q", b)
	}
	for _, name := range []string{"config/" + config.CustomerEnvFileName, "config/" + config.ConfigFileName, backupStateFile} {
		if fi, err := os.Stat(filepath.Join(backup, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("backup file %s: %v %v", name, fi, err)
		}
	}
	if fi, _ := os.Stat(backup); fi.Mode().Perm() != 0o700 {
		t.Errorf("the backup dir is %v", fi.Mode())
	}
	j := upgradeJournal(t, paths)
	var names []string
	for _, s := range j.Steps {
		names = append(names, s.Name+":"+s.State)
	}
	if j.Outcome != steps.Succeeded || !slices.Contains(names, "backup:done") || !slices.Contains(names, "verify:done") {
		t.Errorf("journal: %s %v", j.Outcome, names)
	}
	for _, want := range []string{"exec workspace-postgres pg_dump", "exec workspace-postgres pg_restore --list", "digests "} {
		if !slices.ContainsFunc(f.calls(""), func(c string) bool { return strings.HasPrefix(c, want) }) {
			t.Errorf("no %q in %v", want, f.calls(""))
		}
	}
	if us := upgradeStatus(paths); us == nil || us.What != "upgrade 2025.11.3 -> 2026.1.0" || us.Outcome != steps.Succeeded || us.Step != "" {
		t.Errorf("status's upgrade: %+v", us)
	}
	// Again: up to date, nothing done.
	res, err = Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
	if err != nil || res.Upgrade.From != res.Upgrade.To || len(res.Warnings) == 0 || !strings.Contains(res.Warnings[0], "nothing newer") {
		t.Errorf("a second upgrade: %+v %v", res, err)
	}
}

// Refusals while preparing change nothing: no file, no journal, no backup.
func TestUpgradeRefusalsChangeNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		rel  func(t *testing.T) *release.Release
		edit func(paths config.Paths, f *fakeStack)
		want string
		is   error
	}{
		{"a newly required setting customer.env lacks", func(t *testing.T) *release.Release {
			return channelRelease(t, "2026.1.0", "2025.11.3", "", "NEW_SETTING")
		}, nil, "NEW_SETTING", nil},
		{"an image that is not the one the release pins", func(t *testing.T) *release.Release {
			return channelRelease(t, "2026.1.0", "2025.11.3", "", "")
		}, func(_ config.Paths, f *fakeStack) {
			f.DigestsFor = func(ref string) []string { return []string{"registry.example/x@sha256:" + strings.Repeat("0", 64)} }
		}, "is not the one CARTO 2026.1.0 pins", nil},
		{"an expired licence", func(t *testing.T) *release.Release {
			return channelRelease(t, "2026.1.0", "2025.11.3", "", "")
		}, func(paths config.Paths, _ *fakeStack) {
			os.WriteFile(paths.File(config.LicenseFileName), testLicense(t, func(l *license.License) {
				l.TenantID, l.Issued, l.Expires = "onp-test", time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
			}), 0o600)
		}, "upgrading to 2026.1.0", license.ErrInvalid},
		{"a database dump that does not read back", func(t *testing.T) *release.Release {
			return channelRelease(t, "2026.1.0", "2025.11.3", "", "")
		}, func(_ config.Paths, f *fakeStack) {
			f.Execs["pg_restore"] = fakeExec{Code: 1}
		}, "pg_restore cannot read it", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			paths, f := upgradeNode(t, tc.rel(t))
			if tc.edit != nil {
				tc.edit(paths, f)
			}
			beforeConfig, beforeState := dirSnapshot(t, paths.ConfigDir), dirSnapshot(t, paths.StateDir)
			_, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) || errors.Is(err, ErrUpgradeRolledBack) {
				t.Fatalf("err = %v; want %q", err, tc.want)
			}
			if !sameFiles(beforeConfig, dirSnapshot(t, paths.ConfigDir)) || !sameFiles(beforeState, dirSnapshot(t, paths.StateDir)) {
				t.Error("a refused upgrade changed files")
			}
		})
	}
}

func TestUpgradeRollsBackSettingsReleaseAndDatabase(t *testing.T) {
	paths, f := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""))
	beforeConfig := dirSnapshot(t, paths.ConfigDir)
	beforeState, _ := loadState(paths.StateDir)
	f.ApplyErrs = []error{errors.New("service maps-api: is unhealthy")}
	res, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
	if !errors.Is(err, ErrUpgradeRolledBack) || !strings.Contains(err.Error(), "maps-api") || !strings.Contains(err.Error(), "database from the backup") {
		t.Fatalf("err = %v", err)
	}
	if res == nil || res.Version != "2025.11.3" {
		t.Errorf("result: %+v", res)
	}
	// atomicfile's .prev copies hold, as always, what each write
	// replaced: the rollback's writes too.
	after := dirSnapshot(t, paths.ConfigDir)
	for _, m := range []map[string]string{beforeConfig, after} {
		maps.DeleteFunc(m, func(k, _ string) bool { return strings.HasSuffix(k, ".prev") })
	}
	if !sameFiles(beforeConfig, after) {
		t.Errorf("the rollback did not put the config dir back:\nbefore %v\nafter %v", slices.Sorted(maps.Keys(beforeConfig)), slices.Sorted(maps.Keys(after)))
	}
	if st, _ := loadState(paths.StateDir); (st.Release == nil) != (beforeState.Release == nil) || st.Version != beforeState.Version {
		t.Errorf("state after the rollback: %+v (before %+v)", st, beforeState)
	}
	calls := strings.Join(f.calls(""), "\n")
	for _, want := range []string{"DROP DATABASE IF EXISTS \"workspace\" WITH (FORCE)", "exec workspace-postgres pg_restore -U postgres -d postgres --create"} {
		if !strings.Contains(calls, want) {
			t.Errorf("no %q in:\n%s", want, calls)
		}
	}
	if j := upgradeJournal(t, paths); j.Outcome != steps.RolledBack {
		t.Errorf("journal outcome %s", j.Outcome)
	}
	if us := upgradeStatus(paths); us == nil || us.Outcome != steps.RolledBack || us.Step != "converge" || !strings.Contains(us.Error, "maps-api") {
		t.Errorf("status's upgrade: %+v", us)
	}
	// The previous release converges again.
	if _, err := Apply(t.Context(), Options{Paths: paths}); err != nil {
		t.Errorf("apply after the rollback: %v", err)
	}

	// The engine restarting under the upgrade: the rollback waits for it.
	prevPoll := engineBackPoll
	engineBackPoll = time.Millisecond
	t.Cleanup(func() { engineBackPoll = prevPoll })
	f.ApplyErrs = []error{errors.New("Cannot connect to the Docker daemon")}
	f.InfoFailures = 3
	if _, err = Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}}); !errors.Is(err, ErrUpgradeRolledBack) {
		t.Errorf("an upgrade whose engine restarted: %v", err)
	}
	if f.InfoFailures != 0 {
		t.Errorf("the rollback did not wait for the engine (%d failures left)", f.InfoFailures)
	}

	// The engine restarting during the undo's database restore: the undo
	// runs again once the engine answers, from the DROP.
	interrupted := fmt.Errorf("service workspace-postgres: %w (psql exited 2)", stack.ErrInterrupted)
	f.ApplyErrs = []error{errors.New("service maps-api: is unhealthy")}
	// dropFails makes the next n DROPs fail as the engine's restart does.
	dropFails := func(n int) {
		f.ExecErr = func(cmd []string) error {
			if n > 0 && strings.Contains(strings.Join(cmd, " "), "DROP DATABASE") {
				n--
				return interrupted
			}
			return nil
		}
	}
	dropFails(1)
	drops := func() int { return strings.Count(strings.Join(f.calls(""), "\n"), "DROP DATABASE") }
	before := drops()
	res, err = Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
	if !errors.Is(err, ErrUpgradeRolledBack) || drops()-before != 2 || !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "undone again once the engine answered") }) {
		t.Errorf("an undo the engine cut once: %v; %d DROPs; warnings %q", err, drops()-before, res.Warnings)
	}

	// An engine away for longer than engineBackWait: the rollback is
	// left to the next converge (the agent's), which finishes it.
	prevWait := engineBackWait
	engineBackWait = 20 * time.Millisecond
	f.ApplyErrs = []error{errors.New("service maps-api: is unhealthy")}
	dropFails(1000)
	_, err = Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
	engineBackWait = prevWait
	if !errors.Is(err, ErrRollbackFailed) || !strings.Contains(err.Error(), "the rollback to 2025.11.3 goes on once it does") || !UndoLeftForLater(paths) {
		t.Fatalf("an undo the engine's absence cut: %v (left for later: %v)", err, UndoLeftForLater(paths))
	}
	if j := upgradeJournal(t, paths); !j.Unfinished() || j.Interrupted() != "converge" {
		t.Errorf("journal: outcome %q, interrupted %q", j.Outcome, j.Interrupted())
	}
	if us := upgradeStatus(paths); us == nil || !us.Interrupted || !us.RollbackCut || us.Step != "converge" {
		t.Errorf("status's upgrade with the rollback cut: %+v", us)
	}
	f.ExecErr = nil
	before = drops()
	res, err = Apply(t.Context(), Options{Paths: paths})
	if err != nil || len(res.Warnings) == 0 || !strings.Contains(res.Warnings[0], "its rollback was cut in the converge step while the Docker engine did not answer: it was rolled back now") || drops()-before != 1 {
		t.Fatalf("the converge after: %v, %d DROPs, warnings %q", err, drops()-before, res.Warnings)
	}
	if j := upgradeJournal(t, paths); j.Outcome != steps.RolledBack || UndoLeftForLater(paths) {
		t.Errorf("journal after the recovery: %q", j.Outcome)
	}
	if st, _ := loadState(paths.StateDir); st.Release.Version != "2025.11.3" {
		t.Errorf("pinned after the recovery: %s", st.Release.Version)
	}

	// A rollback that fails too: exit 6's error, naming the journal.
	f.ApplyErrs = []error{errors.New("service maps-api: is unhealthy"), errors.New("engine gone")}
	_, err = Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
	if !errors.Is(err, ErrRollbackFailed) || !strings.Contains(err.Error(), upgradeJournalFileName) {
		t.Errorf("a failed rollback: %v", err)
	}
}

// A change planned before it waited for the converge lock, while an
// upgrade held it (the agent's converge at its start, behind the upgrade
// it continues after a self-update), is planned again once it holds it:
// run as planned, it would put the previous release back.
func TestAChangeThatWaitedForAnUpgradeIsPlannedAgain(t *testing.T) {
	paths, f := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "new-service", ""))
	plan := func() (*desired, error) { return planInstalled(paths, nil, TLSInput{}) }
	stale, err := stamped(paths, plan)
	if err != nil {
		t.Fatal(err)
	}
	if stale.release.Manifest.Version != "2025.11.3" {
		t.Fatalf("planned from %s", stale.release.Manifest.Version)
	}
	if _, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}}); err != nil {
		t.Fatal(err)
	}
	var applied string
	f.OnApply = func(p *types.Project, _ stack.ApplyOptions) { applied = p.Services["maps-api"].Image }
	if _, err := run(t.Context(), Options{Paths: paths}, paths, stale, plan, "apply"); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(applied, ":2026.1.0") {
		t.Errorf("the waiting change applied the previous release's maps-api: %s", applied)
	}
	if st, _ := loadState(paths.StateDir); st.Release.Version != "2026.1.0" || st.Version != "2026.1.0" {
		t.Errorf("after the waiting change: pinned %s, version %s", st.Release.Version, st.Version)
	}
	// Nothing changed meanwhile: the plan made is the one run.
	d, err := stamped(paths, plan)
	if err != nil {
		t.Fatal(err)
	}
	if again, replanned, err := fresh(paths, d, plan); err != nil || replanned || again != d {
		t.Errorf("an unchanged node planned again: %v %v", replanned, err)
	}
}
