package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/backupfile"
	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/firewall"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/stack"
)

// A backup (SPEC §12) is what brings a fresh VM to this node's state:
// the config dir whole (settings, the customer package, the licence, the
// router's certificate and key), the state that goes with it (the pinned
// release, the appliance's CA, the licence's last check, a tier layout's
// join token) and the embedded database, dumped consistently while the
// stack serves, with its roles. Its file format, checks and encryption
// are backupfile's. What is this machine's alone is left out: the agent's
// view, the journals of past runs, the upgrade backups, the firewall's
// saved rules (applied again from the settings).

// The backup's entries: config/<path>, state/<path>, database/<file>.
const (
	backupConfigPrefix = "config/"
	backupStatePrefix  = "state/"
	backupDBPrefix     = "database/"
)

// stateLeftOut are the state dir's entries a backup leaves out.
var stateLeftOut = []string{
	backupsDirName, "appliance-previous", ScheduledBackupsDirName, "agent.sock", "agent.lock", convergeLockName,
	agentStateFileName, journalFileName, upgradeJournalFileName, selfUpdateJournalFileName,
	upgradeIntentFileName, upgradeIntentFileName + ".taken", firewall.FileName,
}

// BackupOptions are what a backup is taken with.
type BackupOptions struct {
	Paths config.Paths
	// Passphrase encrypts the backup (its router key and secrets);
	// empty: not encrypted (the file is 0600 and holds them in clear).
	Passphrase []byte
}

// BackupResult says what a backup holds.
type BackupResult struct {
	Header backupfile.Header `json:"header"`
	// Database says the embedded database is in it; otherwise Notes say
	// why not (external, or on the data node of a tier layout).
	Database bool     `json:"database"`
	Notes    []string `json:"notes,omitempty"`
}

// Backup writes the node's backup to w; nothing on the node changes. It
// waits for a change of the stack under way (the converge lock), so that
// the files and the database it holds go together.
func Backup(ctx context.Context, w io.Writer, opts BackupOptions) (*BackupResult, error) {
	paths := opts.Paths.WithDefaults()
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return nil, err
	}
	st, err := loadState(paths.StateDir)
	if err != nil {
		return nil, err
	}
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return nil, err
	}
	defer unlock()
	work, err := os.MkdirTemp(paths.StateDir, ".backup-")
	if err != nil {
		return nil, fmt.Errorf("making room for the database's dump: %w", err)
	}
	defer os.RemoveAll(work)
	res := &BackupResult{}
	if err := dumpForBackup(ctx, paths, cfg, work, res); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	bw, err := backupfile.NewWriter(w, backupfile.Header{
		ApplianceVersion: ApplianceVersion, CartoVersion: st.Version, Created: time.Now().UTC(), Host: host,
	}, opts.Passphrase)
	if err != nil {
		return nil, err
	}
	for _, tree := range []struct{ prefix, dir string }{
		{backupConfigPrefix, paths.ConfigDir}, {backupStatePrefix, paths.StateDir}, {backupDBPrefix, work},
	} {
		if err := addTree(bw, tree.prefix, tree.dir, tree.dir == paths.StateDir); err != nil {
			return nil, fmt.Errorf("writing the backup: %w", err)
		}
	}
	if err := bw.Close(); err != nil {
		return nil, fmt.Errorf("writing the backup: %w", err)
	}
	res.Header = bw.Header()
	return res, nil
}

// dumpForBackup dumps the embedded database and its roles into dir, when
// it runs on this node.
func dumpForBackup(ctx context.Context, paths config.Paths, cfg config.Config, dir string, res *BackupResult) error {
	u, closeRun, err := installedRun(ctx, paths, "backup")
	if err != nil {
		return err
	}
	defer closeRun()
	if _, embedded := u.project.Services[databaseService]; !embedded {
		note := "the database is external: back it up with your database's own tools"
		if cfg.Distributed() {
			note = fmt.Sprintf("the database runs on the data node (%s): its backup holds it", cfg.Nodes[config.RoleData])
		}
		res.Notes = append(res.Notes, note)
		return nil
	}
	if err := u.dumpDatabase(ctx, dir); errors.Is(err, stack.ErrNotRunning) {
		// The dump is taken by the database itself, consistent while
		// CARTO runs: it must be up.
		return fmt.Errorf("backing up the database: %w: start the stack (carto-appliance start) and take the backup again", err)
	} else if err != nil {
		return fmt.Errorf("backing up the database: %w", err)
	}
	if err := u.dumpGlobals(ctx, dir); err != nil {
		return fmt.Errorf("backing up the database: %w", err)
	}
	res.Database = true
	return nil
}

// installedRun is an upgrade run over the installed settings and stack,
// for the dump and restore code it carries.
func installedRun(ctx context.Context, paths config.Paths, action string) (*upgradeRun, func(), error) {
	d, err := planInstalled(paths, nil, TLSInput{})
	if err != nil {
		return nil, nil, err
	}
	c, err := newConvergeRun(ctx, Options{Paths: paths}, paths, d, action)
	if err != nil {
		return nil, nil, err
	}
	if c.project, err = stack.Load(ctx, paths.ConfigDir, d.cfg.Defaults().Project); err != nil {
		c.close()
		return nil, nil, err
	}
	return &upgradeRun{convergeRun: c}, c.close, nil
}

// addTree adds every regular file below dir as prefix+its slash path; in
// the state dir, what stateLeftOut names and the previous versions
// atomicfile keeps are left out.
func addTree(bw *backupfile.Writer, prefix, dir string, state bool) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		name := filepath.ToSlash(rel)
		if state && (slices.Contains(stateLeftOut, strings.Split(name, "/")[0]) || strings.HasSuffix(name, ".prev") || strings.HasPrefix(name, ".")) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return bw.Add(prefix+name, fi.Mode().Perm(), fi.Size(), f)
	})
}

// RestoreOptions are a restore's inputs.
type RestoreOptions struct {
	Options    `json:"-"`
	File       string `json:"file"`
	Passphrase []byte `json:"-"`
}

// Restore brings a fresh node to a backup's state: the same settings,
// certificates, licence, CARTO release and database rows. The whole file
// is checked first (format, integrity, passphrase, versions): a backup
// refused changes nothing. A node already installed is refused too, and
// an engine holding the backup's project (an uninstall that kept its
// volumes): a restore replaces nothing an operator did not remove
// (uninstall --purge). A restore that fails once it has begun (an image
// that cannot be pulled, a database that does not restore) is undone: its
// files, containers, volumes and firewall rules removed, the node fresh
// again for the next try.
func Restore(ctx context.Context, opts RestoreOptions) (*Result, error) {
	paths := opts.Paths.WithDefaults()
	if _, err := os.Stat(paths.File(config.ConfigFileName)); err == nil {
		return nil, inputErrorf(InputBackup, "this node is installed (%s exists): a restore brings a fresh VM to a backup's state and replaces nothing; restore on a fresh VM, or remove this installation first (carto-appliance uninstall, purging)", paths.File(config.ConfigFileName))
	}
	_, statErr := os.Stat(paths.StateDir)
	createdState := errors.Is(statErr, fs.ErrNotExist)
	staging, h, err := openBackup(ctx, paths, opts)
	if err != nil {
		if createdState {
			os.RemoveAll(paths.StateDir)
		}
		return nil, err
	}
	defer os.RemoveAll(staging)
	undo, err := beginRestore(ctx, paths, staging, createdState)
	if err != nil {
		if createdState {
			os.RemoveAll(paths.StateDir)
		}
		return nil, err
	}
	if err := placeBackup(paths, staging); err != nil {
		return nil, undo.run(ctx, err)
	}
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return nil, undo.run(ctx, err)
	}
	defer unlock()
	dump := filepath.Join(staging, strings.TrimSuffix(backupDBPrefix, "/"))
	if _, err := os.Stat(filepath.Join(dump, backupDumpFile)); err == nil {
		if err := restoreDumpAlone(ctx, opts.Options, paths, dump); err != nil {
			return nil, undo.run(ctx, fmt.Errorf("restoring the database of the backup of %s (CARTO %s, %s): %w",
				h.Host, h.CartoVersion, h.Created.Format(time.RFC3339), err))
		}
	}
	res, err := convergeInstalled(ctx, opts.Options, paths, "restore")
	if err != nil {
		return res, undo.run(ctx, err)
	}
	return res, nil
}

// restoreUndo puts a node back as it was before a restore began.
type restoreUndo struct {
	paths   config.Paths
	project string
	// before holds every path below the config and state dirs before the
	// restore placed anything; createdState: the restore made the state
	// dir.
	before       map[string]bool
	createdState bool
}

// beginRestore refuses a restore onto an engine that holds the backup's
// project already, and notes what the config and state dirs hold, for the
// undo.
func beginRestore(ctx context.Context, paths config.Paths, staging string, createdState bool) (*restoreUndo, error) {
	cfg, _, err := config.Load(filepath.Join(staging, strings.TrimSuffix(backupConfigPrefix, "/"), config.ConfigFileName))
	if err != nil {
		return nil, &InputError{Input: InputBackup, Err: fmt.Errorf("the backup's settings: %w; nothing was changed", err)}
	}
	u := &restoreUndo{paths: paths, project: cfg.Defaults().Project, before: map[string]bool{}, createdState: createdState}
	eng, err := connectEngine(ctx)
	if err != nil {
		return nil, err
	}
	left, err := eng.Leftovers(ctx, u.project)
	eng.Close()
	if err != nil {
		return nil, fmt.Errorf("looking for what the engine holds of project %s: %w", u.project, err)
	}
	if len(left) > 0 {
		return nil, inputErrorf(InputBackup, "the Docker engine holds project %s already (%s), as an uninstall that kept its data leaves it: a restore would write the backup over it; remove it (carto-appliance uninstall, purging its data; or docker rm and docker volume rm) or restore on a fresh VM; nothing was changed", u.project, strings.Join(left, ", "))
	}
	for _, root := range []string{paths.ConfigDir, paths.StateDir} {
		err := filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) && path == root {
				return nil
			}
			u.before[path] = true
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("noting what %s holds before the restore: %w", root, err)
		}
	}
	return u, nil
}

// run undoes the restore after cause, whatever ctx does (a half-undone
// node is the worst outcome): the project's containers, networks and
// volumes (all the restore's: beginRestore refused any already there), its
// firewall rules, and every file and directory it added.
func (u *restoreUndo) run(ctx context.Context, cause error) error {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	if eng, err := connectEngine(ctx); err != nil {
		errs = append(errs, err)
	} else {
		var stale *stack.StaleNetworksError
		if err := eng.Down(ctx, u.project, nil, stack.DownOptions{RemoveVolumes: true}); err != nil && !errors.As(err, &stale) {
			errs = append(errs, fmt.Errorf("removing the restored stack: %w", err))
		}
		eng.Close()
	}
	if err := firewallClear(ctx, firewallHost(u.paths), u.project); err != nil {
		errs = append(errs, fmt.Errorf("removing the firewall rules: %w", err))
	}
	roots := []string{u.paths.ConfigDir}
	if u.createdState {
		if err := os.RemoveAll(u.paths.StateDir); err != nil {
			errs = append(errs, err)
		}
	} else {
		roots = append(roots, u.paths.StateDir)
	}
	for _, root := range roots {
		var added []string
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !u.before[path] {
				added = append(added, path)
			}
			return nil
		})
		// Deepest first: a directory is empty of what was added by the
		// time it is removed.
		slices.Reverse(added)
		for _, path := range added {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w; undoing the restore failed too (%v): remove what is left of it (carto-appliance uninstall, purging) before restoring again", cause, errors.Join(errs...))
	}
	return fmt.Errorf("%w; the restore was undone (its files, containers and volumes removed): fix the cause and restore again", cause)
}

// openBackup checks and unpacks the backup into a staging dir of the
// state dir, and judges its versions; on any refusal it leaves nothing.
func openBackup(ctx context.Context, paths config.Paths, opts RestoreOptions) (string, *backupfile.Header, error) {
	f, err := os.Open(opts.File)
	if err != nil {
		return "", nil, &InputError{Input: InputBackup, Err: fmt.Errorf("reading the backup: %w", err)}
	}
	defer f.Close()
	if err := os.MkdirAll(paths.StateDir, 0o700); err != nil {
		return "", nil, fmt.Errorf("creating the state dir: %w", err)
	}
	staging, err := os.MkdirTemp(paths.StateDir, ".restore-")
	if err != nil {
		return "", nil, fmt.Errorf("making room to check the backup: %w", err)
	}
	h, err := backupfile.Open(ctx, f, opts.Passphrase, staging)
	if err == nil {
		err = judgeBackup(h)
	}
	if err != nil {
		os.RemoveAll(staging)
		if errors.Is(err, backupfile.ErrPassphrase) || errors.Is(err, backupfile.ErrCorrupt) || errors.Is(err, backupfile.ErrNotBackup) || errors.Is(err, backupfile.ErrNewerFormat) {
			err = &InputError{Input: InputBackup, Err: fmt.Errorf("the backup %s: %w; nothing was changed", opts.File, err)}
		}
		return "", nil, err
	}
	return staging, h, nil
}

// judgeBackup refuses a backup this carto-appliance cannot restore: one
// written by a newer carto-appliance (its release may need what this one
// lacks).
func judgeBackup(h *backupfile.Header) error {
	made, merr := release.ParseVersion(h.ApplianceVersion)
	have, herr := release.ParseVersion(ApplianceVersion)
	if merr == nil && herr == nil && made.Compare(have) > 0 {
		return &InputError{Input: InputBackup, Err: fmt.Errorf("the backup was written by carto-appliance %s, newer than this one (%s): install carto-appliance %s or newer, then restore; nothing was changed", h.ApplianceVersion, ApplianceVersion, h.ApplianceVersion)}
	}
	return nil
}

// placeBackup writes the backup's config and state files into place,
// marking both dirs as the appliance's.
func placeBackup(paths config.Paths, staging string) error {
	// As install makes it: the stack's files are readable where compose
	// runs, the secrets are not (their own modes, kept by the backup).
	if err := os.MkdirAll(paths.ConfigDir, 0o755); err != nil {
		return fmt.Errorf("creating the config dir: %w", err)
	}
	for _, tree := range []struct{ from, to, what string }{
		{backupConfigPrefix, paths.ConfigDir, "config dir"}, {backupStatePrefix, paths.StateDir, "state dir"},
	} {
		if err := markOwned(tree.to, tree.what); err != nil {
			return err
		}
		if err := placeTree(filepath.Join(staging, strings.TrimSuffix(tree.from, "/")), tree.to); err != nil {
			return fmt.Errorf("restoring the %s: %w", tree.what, err)
		}
	}
	return nil
}

// placeTree copies the files below src to dst with their modes; the
// directories it creates are 0700 (certs/ is, as commit makes it).
func placeTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == src {
			return filepath.SkipDir // the backup has no such part
		}
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		fi, err := d.Info()
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return atomicfile.Write(filepath.Join(dst, rel), b, fi.Mode().Perm())
	})
}

// restoreDumpAlone starts the installed release's database alone (every
// other service held: nothing may write), creates the backup's roles and
// restores its dump.
func restoreDumpAlone(ctx context.Context, opts Options, paths config.Paths, dump string) error {
	u, closeRun, err := installedRun(ctx, paths, "restore")
	if err != nil {
		return err
	}
	defer closeRun()
	u.opts = opts
	u.backup = dump
	if err := u.eng.Pull(ctx, u.project, u.pull); err != nil {
		return err
	}
	var others []string
	for _, name := range u.project.ServiceNames() {
		if name != databaseService {
			others = append(others, name)
		}
	}
	if _, err := u.eng.Apply(ctx, u.project, stack.ApplyOptions{
		Pull: u.pull, Reporter: opts.Reporter, WaitTimeout: opts.WaitTimeout, Redact: u.d.redactor(), Held: others,
	}); err != nil {
		return fmt.Errorf("starting the database alone: %w", err)
	}
	if err := u.restoreGlobals(ctx, u.project.Name); err != nil {
		return fmt.Errorf("creating the database's roles: %w", err)
	}
	return u.restoreDatabase(ctx, u.project)
}
