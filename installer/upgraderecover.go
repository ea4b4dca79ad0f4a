package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/stack"
)

// upgradeDetails are what the upgrade journal keeps beside its steps for
// another process to finish or roll back a run whose process stopped.
type upgradeDetails struct {
	// Kind is "" for an upgrade, rollbackKind for a rollback (From is
	// then the release it goes back to).
	Kind   string `json:"kind,omitempty"`
	From   string `json:"from"`
	To     string `json:"to"`
	Backup string `json:"backup,omitempty"`
	// Dumped says the backup holds the database.
	Dumped bool `json:"database_dumped,omitempty"`
}

func (u *upgradeRun) details() any {
	return upgradeDetails{From: u.from.Manifest.Version, To: u.d.release.Manifest.Version, Backup: u.backup, Dumped: u.dumped}
}

// observeSteps reports a journaled workflow's steps as progress.
func observeSteps(rep stack.Reporter, action string) func(step, state string) {
	if rep == nil {
		return nil
	}
	return func(step, state string) {
		rep.Report(stack.Event{Service: action, Action: stack.ActionStep, Detail: step + " " + state})
	}
}

func upgradeJournalOf(paths config.Paths) steps.Journal {
	return steps.Journal{Path: filepath.Join(paths.StateDir, upgradeJournalFileName)}
}

// Recovered is what RecoverUpgrade did with an upgrade whose process
// stopped before it ended.
type Recovered struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Step is the step the process stopped in.
	Step string `json:"step"`
	// Finished says the upgrade had been verified and was completed;
	// otherwise it was rolled back.
	Finished bool `json:"finished"`
	// Restored says what the rollback put back.
	Restored string `json:"restored,omitempty"`
	// Rollback says the run was a rollback (From is the release it went
	// back to), which is always completed.
	Rollback bool `json:"rollback,omitempty"`
	// EngineAway says the run's own rollback was cut by the Docker
	// engine's absence (not a stopped process) and is finished here.
	EngineAway bool `json:"engine_away,omitempty"`
}

func (r *Recovered) String() string {
	if r.Rollback {
		return fmt.Sprintf("the rollback %s -> %s stopped during its %s step: it was completed", r.To, r.From, r.Step)
	}
	if r.Finished {
		return fmt.Sprintf("the upgrade %s -> %s stopped during its %s step, after CARTO %s was verified healthy: it was completed", r.From, r.To, r.Step, r.To)
	}
	if r.EngineAway {
		return fmt.Sprintf("the upgrade %s -> %s failed and its rollback was cut in the %s step while the Docker engine did not answer: it was rolled back now, CARTO %s runs again (%s)", r.From, r.To, r.Step, r.From, r.Restored)
	}
	return fmt.Sprintf("the upgrade %s -> %s stopped during its %s step (the process was killed, crashed, or the machine restarted): it was rolled back, CARTO %s runs again (%s)", r.From, r.To, r.Step, r.From, r.Restored)
}

// UndoLeftForLater reports whether the last upgrade failed and its
// rollback, cut while the Docker engine did not answer, waits for a
// recovery (RecoverUpgrade, which any apply runs): the agent runs one
// when it finds this.
func UndoLeftForLater(paths config.Paths) bool {
	r, err := upgradeJournalOf(paths.WithDefaults()).Load()
	return err == nil && r != nil && undoCut(r)
}

// undoCut reports whether r is a run left unfinished by an undo that
// failed (steps.Journal.UndoLater), not by a process that stopped.
func undoCut(r *steps.Record) bool {
	return r.Unfinished() && slices.ContainsFunc(r.Steps, func(s steps.StepRecord) bool { return s.State == steps.UndoFailed })
}

// RecoverUpgrade finishes or rolls back an upgrade whose process stopped
// (killed, crashed, the machine restarted) before it ended, so that the
// node is on exactly one release: one verified healthy on the new release
// is completed; any other is rolled back from its backup (settings,
// pinned release, and the database when the new release may have
// migrated it), then the previous release converged. Nil when there is
// nothing to recover. A recovery that fails leaves the journal unfinished,
// with why, to be tried again (the agent does at its start).
func RecoverUpgrade(ctx context.Context, opts Options) (*Recovered, error) {
	paths := opts.Paths.WithDefaults()
	r, err := upgradeJournalOf(paths).Load()
	if err != nil || r == nil || !r.Unfinished() {
		return nil, err
	}
	// An upgrade holds the lock for its whole run: once this process has
	// it, an unfinished journal is one whose process is gone.
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return recoverUpgradeLocked(ctx, opts, paths)
}

func recoverUpgradeLocked(ctx context.Context, opts Options, paths config.Paths) (*Recovered, error) {
	j := upgradeJournalOf(paths)
	r, err := j.Load()
	if err != nil || r == nil || !r.Unfinished() {
		return nil, err
	}
	var det upgradeDetails
	if err := json.Unmarshal(r.Details, &det); err != nil || det.From == "" {
		return nil, fmt.Errorf("the upgrade journal %s records no upgrade this carto-appliance can recover (%v): restore the node from a backup in %s by hand",
			j.Path, err, filepath.Join(paths.StateDir, backupsDirName))
	}
	rec := &Recovered{From: det.From, To: det.To, Step: r.Interrupted(), Rollback: det.Kind == rollbackKind, EngineAway: undoCut(r)}
	why := fmt.Sprintf("the process stopped during the %s step (killed, crashed, or the machine restarted)", rec.Step)
	if rec.EngineAway {
		// The step's own record keeps the engine's error.
		why = fmt.Sprintf("the rollback was cut in the %s step while the Docker engine did not answer", rec.Step)
	}
	fail := func(err error) (*Recovered, error) {
		err = fmt.Errorf("recovering the upgrade %s -> %s that stopped during its %s step: %w", det.From, det.To, rec.Step, err)
		j.Note(r, err.Error()+"; it is tried again at the agent's next start or the next upgrade")
		return nil, err
	}
	switch {
	case det.Kind == rollbackKind:
		// A rollback is completed: it only puts back what its backup
		// holds, again.
		if _, _, err := rollBackFromBackup(ctx, opts, paths, det, true); err != nil {
			return fail(err)
		}
		rec.Finished = true
		return rec, j.Resolve(r, steps.Succeeded, why+"; completed afterwards")
	case stepDone(r, "verify") && !rec.EngineAway:
		// Verified healthy on the new release: only its record was left.
		// (A rollback cut midway is finished, whatever step failed: it
		// may have put the database back already.)
		if _, err := convergeInstalled(ctx, opts, paths, "upgrade"); err != nil {
			return fail(err)
		}
		rec.Finished = true
		return rec, j.Resolve(r, steps.Succeeded, why+"; completed afterwards")
	case !r.Reached("commit"):
		// Nothing of the new release was committed (the allow-list the
		// firewall step applied is the installed settings').
		rec.Restored = "nothing had been changed"
	default:
		_, restored, err := rollBackFromBackup(ctx, opts, paths, det, r.Reached("converge"))
		if err != nil {
			return fail(err)
		}
		rec.Restored = restored
	}
	return rec, j.Resolve(r, steps.RolledBack, why+"; rolled back afterwards")
}

func stepDone(r *steps.Record, name string) bool {
	i := slices.IndexFunc(r.Steps, func(s steps.StepRecord) bool { return s.Name == name })
	return i >= 0 && r.Steps[i].State == steps.Done
}

// rollBackFromBackup puts the node back as the backup holds it: the
// config dir's files and the pinned release, then (when the new release
// may have migrated it) the database from the dump, with every other
// service stopped meanwhile, then the previous release converged.
func rollBackFromBackup(ctx context.Context, opts Options, paths config.Paths, det upgradeDetails, converged bool) (*Result, string, error) {
	if det.Backup == "" {
		return nil, "", errors.New("the journal names no backup to roll back from")
	}
	if err := restoreConfigDir(filepath.Join(det.Backup, backupConfigDir), paths.ConfigDir); err != nil {
		return nil, "", err
	}
	if err := restorePin(paths, det.Backup); err != nil {
		return nil, "", err
	}
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return nil, "", err
	}
	if err := publishMounts(paths, cfg); err != nil {
		return nil, "", err
	}
	what := "settings and images put back"
	if converged && det.Dumped {
		if err := restoreDatabaseFromBackup(ctx, opts, paths, det.Backup); err != nil {
			return nil, "", err
		}
		what = "settings, images and the database from the backup put back"
	}
	res, err := convergeInstalled(ctx, opts, paths, "rollback")
	if err != nil {
		return res, "", err
	}
	return res, what + "; the backup stays in " + det.Backup, nil
}

// convergeInstalled runs the installed settings' plan, for a caller that
// holds the converge lock.
func convergeInstalled(ctx context.Context, opts Options, paths config.Paths, action string) (*Result, error) {
	d, err := planInstalled(paths, nil, TLSInput{})
	if err != nil {
		return nil, err
	}
	return runLocked(ctx, opts, paths, d, action, nil)
}

// restoreDatabaseFromBackup brings the installed release's database
// service up alone (every other service stopped: nothing may write), and
// restores the dump into it.
func restoreDatabaseFromBackup(ctx context.Context, opts Options, paths config.Paths, backup string) error {
	if ok, err := restoreRemoteDatabase(ctx, opts, paths, backup); ok || err != nil {
		return err
	}
	d, err := planInstalled(paths, nil, TLSInput{})
	if err != nil {
		return err
	}
	c, err := newConvergeRun(ctx, opts, paths, d, "rollback")
	if err != nil {
		return err
	}
	defer c.close()
	p, err := stack.Load(ctx, paths.ConfigDir, d.cfg.Defaults().Project)
	if err != nil {
		return err
	}
	var others []string
	for _, name := range p.ServiceNames() {
		if name != databaseService {
			others = append(others, name)
		}
	}
	if _, err := c.eng.Apply(ctx, p, stack.ApplyOptions{
		Pull: stack.PullOptions{Policy: stack.PullMissing, Auth: c.pull.Auth}, Reporter: opts.Reporter,
		WaitTimeout: opts.WaitTimeout, Redact: d.redactor(), Held: others,
	}); err != nil {
		return fmt.Errorf("starting the database alone to restore it: %w", err)
	}
	u := &upgradeRun{convergeRun: c, backup: backup}
	return u.restoreDatabase(ctx, p)
}

// restoreRemoteDatabase is restoreDatabaseFromBackup on an app node whose
// backup has the database's dump on the data node; ok is false for a
// backup without one.
func restoreRemoteDatabase(ctx context.Context, opts Options, paths config.Paths, backup string) (ok bool, err error) {
	rd, err := readRemoteDump(backup)
	if err != nil || rd == nil {
		return false, err
	}
	d, err := planInstalled(paths, nil, TLSInput{})
	if err != nil {
		return true, err
	}
	c, err := newConvergeRun(ctx, opts, paths, d, "rollback")
	if err != nil {
		return true, err
	}
	defer c.close()
	p, err := stack.Load(ctx, paths.ConfigDir, d.cfg.Defaults().Project)
	if err != nil {
		return true, err
	}
	return true, restoreOnDataNode(ctx, c.eng, opts, paths, d.cfg, p, rd)
}

// restoreConfigDir writes the appliance's files of the config dir back as
// the backup holds them, each with the mode it has (0600 for a file the
// run being undone removed); one of the appliance's that the backup lacks
// was written by that run, and is removed. Other files are the
// operator's: they stay as they are.
func restoreConfigDir(from, to string) error {
	want := map[string]bool{}
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() || !d.Type().IsRegular() || !ownedConfigFile(rel) {
			return nil // the operator's, or published from certs/ below
		}
		want[rel] = true
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		mode := fs.FileMode(0o600)
		if fi, err := os.Stat(dst); err == nil {
			mode = fi.Mode().Perm()
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		return atomicfile.Write(dst, b, mode)
	})
	if err != nil {
		return fmt.Errorf("putting the config dir back from the backup: %w", err)
	}
	owned := slices.Clone(configOwnedFiles)
	certs, _ := os.ReadDir(filepath.Join(to, config.CertsDirName))
	for _, e := range certs {
		if e.Type().IsRegular() {
			owned = append(owned, filepath.Join(config.CertsDirName, e.Name()))
		}
	}
	for _, rel := range owned {
		if !want[rel] {
			if err := os.Remove(filepath.Join(to, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("putting the config dir back from the backup: %w", err)
			}
		}
	}
	return nil
}

// ownedConfigFile reports whether a file of the config dir (relative) is
// one the appliance writes and a backup puts back: its own files at the
// top, and certs/' files (not the directories under certs/ mounted into
// the services, which publishMounts writes from them).
func ownedConfigFile(rel string) bool {
	return slices.Contains(configOwnedFiles, rel) || rel == MarkerFileName || filepath.Dir(rel) == config.CertsDirName
}

// restorePin puts back the release pinned when the backup was taken,
// keeping the rest of the state (history, held services).
func restorePin(paths config.Paths, backup string) error {
	// The backup's state.json is read as the state dir's is.
	was, err := loadState(backup)
	if err != nil {
		return err
	}
	if was.Release == nil {
		return fmt.Errorf("the backed-up state in %s pins no release: put the node back by hand from that backup", backup)
	}
	st, err := loadState(paths.StateDir)
	if err != nil {
		return err
	}
	st.Release = was.Release
	return saveState(paths.StateDir, st)
}
