package installer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/steps"
)

// RollbackOptions are rollback's inputs.
type RollbackOptions struct {
	Options `json:"-"`
	// RestoreDatabase puts the database back from the upgrade's backup
	// too: every change made since the upgrade is lost.
	RestoreDatabase bool `json:"restore_database,omitempty"`
}

// RollbackPlan is what a rollback would do: go back over the last upgrade
// to the release it replaced, with that upgrade's backup.
type RollbackPlan struct {
	// From is the installed version; To the one the last upgrade
	// replaced.
	From string `json:"from"`
	To   string `json:"to"`
	// Backup is the directory of the backup the last upgrade took.
	Backup string `json:"backup"`
	// HasDump says the backup holds the database (embedded Postgres).
	HasDump bool `json:"has_dump"`
}

// rollbackKind marks a rollback's record in the upgrade journal.
const rollbackKind = "rollback"

// PlanRollback finds the backup of the upgrade to the installed release;
// it changes nothing.
func PlanRollback(paths config.Paths, restoreDatabase bool) (*RollbackPlan, error) {
	paths = paths.WithDefaults()
	if _, err := loadInstalledConfig(paths); err != nil {
		return nil, err
	}
	st, err := loadState(paths.StateDir)
	if err != nil {
		return nil, err
	}
	if st.Release == nil {
		return nil, fmt.Errorf("no CARTO release is recorded as installed in %s: there is nothing to roll back", paths.StateDir)
	}
	cur := st.Release.Version
	dir := filepath.Join(paths.StateDir, backupsDirName)
	entries, _ := os.ReadDir(dir)
	// Newest first: the names start with the time they were taken.
	slices.Reverse(entries)
	for _, e := range entries {
		from, to, ok := backupVersions(e.Name())
		if !ok || to != cur || !e.IsDir() {
			continue
		}
		b := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(b, backupPartialFile)); err == nil {
			continue
		}
		if err := backupPins(b, from); err != nil {
			continue
		}
		_, err := os.Stat(filepath.Join(b, backupDumpFile))
		if err != nil {
			_, err = os.Stat(filepath.Join(b, remoteDumpFile)) // on the data node
		}
		p := &RollbackPlan{From: cur, To: from, Backup: b, HasDump: err == nil}
		if restoreDatabase && !p.HasDump {
			return nil, inputErrorf(InputRestoreDatabase, "the backup %s holds no database dump (the database is external): the appliance cannot put the database back; roll back without it, and restore your own backup of the database", b)
		}
		return p, nil
	}
	return nil, fmt.Errorf("no backup of an upgrade to CARTO %s in %s: rollback goes back over the last upgrade, with the backup it took (CARTO %s was not installed by an upgrade, or its backup was deleted)", cur, dir, cur)
}

// backupVersions reads the versions from a backup directory's name
// (<time>-upgrade-<from>-to-<to>[-n]).
func backupVersions(name string) (from, to string, ok bool) {
	_, rest, ok := strings.Cut(name, "-upgrade-")
	if !ok {
		return "", "", false
	}
	from, to, ok = strings.Cut(rest, "-to-")
	if i := strings.LastIndex(to, "-"); ok && i > 0 {
		if _, err := strconv.Atoi(to[i+1:]); err == nil {
			to = to[:i] // a second backup of the same second: name-2
		}
	}
	return from, to, ok && from != "" && to != ""
}

// backupPins checks that a backup's state pins the release version.
func backupPins(backup, version string) error {
	was, err := loadState(backup) // the backup's state.json
	if err != nil {
		return err
	}
	if was.Release == nil || was.Release.Version != version {
		return fmt.Errorf("%s does not pin %s", backup, version)
	}
	return nil
}

// Rollback goes back over the last upgrade: the settings and the pinned
// release its backup holds, the previous release's services converged
// (their images pulled again if they were removed), and, when asked, the
// database from the backup's dump. Journaled in the upgrade journal: a
// rollback whose process stopped is completed by the next converge.
func Rollback(ctx context.Context, in RollbackOptions) (*Result, error) {
	paths := in.Paths.WithDefaults()
	rec, err := RecoverUpgrade(ctx, in.Options)
	if err != nil {
		return nil, err
	}
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return nil, err
	}
	defer unlock()
	p, err := PlanRollback(paths, in.RestoreDatabase)
	if err != nil {
		return withRecovered(nil, rec), err
	}
	det := upgradeDetails{Kind: rollbackKind, From: p.To, To: p.From, Backup: p.Backup, Dumped: in.RestoreDatabase}
	action := fmt.Sprintf("rollback %s -> %s", p.From, p.To)
	j := upgradeJournalOf(paths)
	j.Details = func() any { return det }
	j.Observe = observeSteps(in.Reporter, action)
	var res *Result
	var restored string
	err = steps.Run(ctx, j, action, []steps.Step{{Name: "restore", Do: func(ctx context.Context) error {
		res, restored, err = rollBackFromBackup(ctx, in.Options, paths, det, true)
		return err
	}}}, steps.Resume)
	if err != nil {
		// Left unfinished: the settings may be half put back, and the
		// next converge (the agent's start, config apply) completes it.
		return withRecovered(res, rec), fmt.Errorf("rolling CARTO %s back to %s: %w; fix the cause, then run `carto-appliance config apply`, which completes the rollback (the backup stays in %s)", p.From, p.To, err, p.Backup)
	}
	res.Rollback = &RollbackSummary{From: p.From, To: p.To, Restored: restored}
	if !in.RestoreDatabase {
		res.Warnings = append(res.Warnings, rollbackDatabaseNote(p))
	}
	return withRecovered(res, rec), nil
}

// rollbackDatabaseNote says what became of the database when a rollback
// left it.
func rollbackDatabaseNote(p *RollbackPlan) string {
	what := fmt.Sprintf("the database is as CARTO %s left it (CARTO's migrations only go forward): if CARTO %s does not work with it, restore ", p.From, p.To)
	if !p.HasDump {
		return what + "your own backup of the external database taken before the upgrade"
	}
	return what + "the dump taken before the upgrade, " + filepath.Join(p.Backup, backupDumpFile) + " (pg_restore --clean --create), which loses what was written since"
}

// RollbackSummary is what a rollback did, in its Result.
type RollbackSummary struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Restored string `json:"restored"`
}
