package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/stack"
)

// backupsDirName holds, in the state dir, the backups upgrades take.
const backupsDirName = "backups"

// databaseService is the embedded Postgres's service, in the releases'
// compose templates; a stack without it uses an external database.
const databaseService = "workspace-postgres"

// The files of an upgrade's backup directory.
const (
	backupDumpFile   = "workspace.dump" // pg_dump's custom format
	backupConfigDir  = "config"         // the config dir's files
	backupStateFile  = stateFileName    // read back with loadState
	backupReadmeFile = "README"
	// backupPartialFile marks a backup still being written.
	backupPartialFile = ".partial"
)

// backupHeadroom is the free space a backup leaves on the state dir's
// file system beyond the dump, for the engine and the next images.
const backupHeadroom = 256 << 20

// takeBackup writes the upgrade's backup into a new directory of the
// state dir: the config dir's files (certificates and key.json
// included: the directory is 0700, its files 0600), the state, and a dump
// of the embedded database, read back to check it is whole. An external
// database is not dumped: the upgrade goes on only when told to.
func (u *upgradeRun) takeBackup(ctx context.Context) error {
	_, embedded := u.project.Services[databaseService]
	remote := u.databaseOnDataNode()
	if !embedded && !remote && !u.skipDB && !u.runsNoMigrations() {
		return inputErrorf(InputSkipDatabaseBackup, "the database is external (%s): the appliance cannot back it up, so a rollback could not put it back; back it up yourself, then upgrade again and say the database backup is yours",
			u.d.env.Get("WORKSPACE_POSTGRES_HOST"))
	}
	parent := filepath.Join(u.paths.StateDir, backupsDirName)
	removePartialBackups(parent)
	name := fmt.Sprintf("%s-upgrade-%s-to-%s", time.Now().UTC().Format("20060102T150405Z"), u.from.Manifest.Version, u.d.release.Manifest.Version)
	dir, err := newDir(parent, name)
	if err != nil {
		return fmt.Errorf("creating the backup directory: %w", err)
	}
	// Marked partial until whole: a process killed while writing it
	// leaves a directory that the next backup removes and that nothing
	// mistakes for a backup.
	partial := filepath.Join(dir, backupPartialFile)
	if err := atomicfile.Write(partial, []byte("incomplete: the process writing this backup stopped\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("creating the backup directory: %w", err)
	}
	err = u.writeBackup(ctx, dir, embedded)
	if err == nil && remote && !u.skipDB {
		err = u.dumpOnDataNode(ctx, dir)
	}
	if err != nil {
		// A backup that is not whole is no backup: nothing is left
		// that a rollback or an operator could mistake for one.
		os.RemoveAll(dir)
		return fmt.Errorf("backing up before the upgrade: %w", err)
	}
	if err := os.Remove(partial); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("backing up before the upgrade: %w", err)
	}
	u.backup = dir
	return nil
}

// pruneBackups removes the oldest complete upgrade backups beyond keep
// (the names start with the time they were taken), and says which.
func pruneBackups(stateDir string, keep int) ([]string, error) {
	parent := filepath.Join(stateDir, backupsDirName)
	entries, err := os.ReadDir(parent)
	if err != nil {
		return nil, err
	}
	var complete []string
	for _, e := range entries {
		dir := filepath.Join(parent, e.Name())
		if _, _, ok := backupVersions(e.Name()); !ok || !e.IsDir() {
			continue // not one of ours: the operator's
		}
		if _, err := os.Stat(filepath.Join(dir, backupPartialFile)); err == nil {
			continue
		}
		complete = append(complete, dir)
	}
	var removed []string
	for len(complete) > keep {
		if err := os.RemoveAll(complete[0]); err != nil {
			return removed, err
		}
		removed = append(removed, complete[0])
		complete = complete[1:]
	}
	return removed, nil
}

// removePartialBackups removes the backups a stopped process left half
// written.
func removePartialBackups(parent string) {
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		dir := filepath.Join(parent, e.Name())
		if _, err := os.Stat(filepath.Join(dir, backupPartialFile)); e.IsDir() && err == nil {
			os.RemoveAll(dir)
		}
	}
}

func (u *upgradeRun) writeBackup(ctx context.Context, dir string, embedded bool) error {
	if err := copyTree(u.paths.ConfigDir, filepath.Join(dir, backupConfigDir)); err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(u.paths.StateDir, stateFileName)); err == nil {
		if err := atomicfile.Write(filepath.Join(dir, backupStateFile), b, 0o600); err != nil {
			return err
		}
	}
	readme := fmt.Sprintf("Backup taken by carto-appliance before upgrading CARTO %s to %s, at %s.\n%s/: the config dir (%s), secrets included.\n%s: the appliance's state.\n",
		u.from.Manifest.Version, u.d.release.Manifest.Version, time.Now().UTC().Format(time.RFC3339), backupConfigDir, u.paths.ConfigDir, backupStateFile)
	if embedded {
		if err := u.dumpDatabase(ctx, dir); err != nil {
			return err
		}
		u.dumped = true
		readme += fmt.Sprintf("%s: pg_dump -Fc of the database %s (pg_restore --create restores it).\n", backupDumpFile, u.dbName())
	} else if u.runsNoMigrations() {
		readme += "No database dump: no database nor migration runs on this node.\n"
	} else if !u.databaseOnDataNode() {
		readme += "No database dump: the database is external, and its backup the operator's.\n"
	}
	return atomicfile.Write(filepath.Join(dir, backupReadmeFile), []byte(readme), 0o600)
}

func (u *upgradeRun) dbName() string {
	return orDefault(u.d.env.Get("WORKSPACE_POSTGRES_DB"), "workspace")
}
func (u *upgradeRun) dbAdmin() string {
	return orDefault(u.d.env.Get("POSTGRES_ADMIN_USER"), "postgres")
}
func (u *upgradeRun) adminDB() string { return orDefault(u.d.env.Get("POSTGRES_ADMIN_DB"), "postgres") }

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// dumpDatabase dumps the workspace database from the running embedded
// Postgres (pg_dump takes a consistent snapshot while the stack serves)
// into dir, after checking there is room for it, and reads it back.
func (u *upgradeRun) dumpDatabase(ctx context.Context, dir string) error {
	project := u.d.cfg.Defaults().Project
	var out, errOut bytes.Buffer
	code, err := u.eng.Exec(ctx, project, databaseService, stack.ExecOptions{
		Cmd:    []string{"psql", "-U", u.dbAdmin(), "-d", u.adminDB(), "-Atc", "SELECT pg_database_size(" + quoteLiteral(u.dbName()) + ")"},
		Stdout: &out, Stderr: &errOut,
	})
	if err != nil {
		return fmt.Errorf("measuring the database: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("measuring the database %s: psql exited %d: %s", u.dbName(), code, lastLine(errOut.String()))
	}
	size, err := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
	if err != nil {
		return fmt.Errorf("measuring the database %s: %q is not a size", u.dbName(), strings.TrimSpace(out.String()))
	}
	if free, err := freeBytes(dir); err == nil && free < uint64(size)+backupHeadroom {
		return fmt.Errorf("not enough disk for the backup in %s: %d MiB free, the database takes up to %d MiB and %d MiB must stay free; free up space on that file system and run the upgrade again",
			dir, free>>20, size>>20, backupHeadroom>>20)
	}

	path := filepath.Join(dir, backupDumpFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	errOut.Reset()
	code, err = u.eng.Exec(ctx, project, databaseService, stack.ExecOptions{
		Cmd:    []string{"pg_dump", "-U", u.dbAdmin(), "-Fc", "-d", u.dbName()},
		Stdout: f, Stderr: &errOut,
	})
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("dumping the database: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("dumping the database %s: pg_dump exited %d: %s", u.dbName(), code, lastLine(errOut.String()))
	}
	return u.checkDump(ctx, path)
}

// checkDump reads the dump back with pg_restore --list: a dump it cannot
// list would not restore.
func (u *upgradeRun) checkDump(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var out, errOut bytes.Buffer
	code, err := u.eng.Exec(ctx, u.d.cfg.Defaults().Project, databaseService, stack.ExecOptions{
		Cmd: []string{"pg_restore", "--list"}, Stdin: f, Stdout: &out, Stderr: &errOut,
	})
	if err != nil {
		return fmt.Errorf("checking the database dump: %w", err)
	}
	if code != 0 || out.Len() == 0 {
		return fmt.Errorf("checking the database dump %s: pg_restore cannot read it (exit %d): %s", path, code, lastLine(errOut.String()))
	}
	return nil
}

// restoreDatabase puts the workspace database back from the backup's
// dump: every other service of p is stopped first (nothing may write
// meanwhile), the database dropped and restored whole.
func (u *upgradeRun) restoreDatabase(ctx context.Context, p *types.Project) error {
	if u.remote != nil {
		if err := restoreOnDataNode(ctx, u.eng, u.opts, u.paths, u.d.cfg, p, u.remote); err != nil {
			return err
		}
		u.dbRestored = true
		return nil
	}
	var others []string
	for name := range p.Services {
		if name != databaseService {
			others = append(others, name)
		}
	}
	if _, err := u.eng.Stop(ctx, p, others, u.opts.Reporter); err != nil {
		return fmt.Errorf("stopping the services to restore the database: %w", err)
	}
	var errOut bytes.Buffer
	code, err := u.eng.Exec(ctx, p.Name, databaseService, stack.ExecOptions{
		Cmd:    []string{"psql", "-U", u.dbAdmin(), "-d", u.adminDB(), "-v", "ON_ERROR_STOP=1", "-c", "DROP DATABASE IF EXISTS " + quoteIdent(u.dbName()) + " WITH (FORCE)"},
		Stderr: &errOut,
	})
	if err != nil {
		return fmt.Errorf("restoring the database: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("restoring the database: dropping %s: psql exited %d: %s", u.dbName(), code, lastLine(errOut.String()))
	}
	f, err := os.Open(filepath.Join(u.backup, backupDumpFile))
	if err != nil {
		return fmt.Errorf("restoring the database: %w", err)
	}
	defer f.Close()
	errOut.Reset()
	code, err = u.eng.Exec(ctx, p.Name, databaseService, stack.ExecOptions{
		Cmd:   []string{"pg_restore", "-U", u.dbAdmin(), "-d", u.adminDB(), "--create", "--exit-on-error"},
		Stdin: f, Stderr: &errOut,
	})
	if err != nil {
		return fmt.Errorf("restoring the database: %w", err)
	}
	if code != 0 {
		return fmt.Errorf("restoring the database %s from %s: pg_restore exited %d: %s", u.dbName(), f.Name(), code, lastLine(errOut.String()))
	}
	u.dbRestored = true
	return nil
}

// newDir creates the directory name (0700) in parent, or name-2, name-3…
// when it exists: a backup never lands in another's directory.
func newDir(parent, name string) (string, error) {
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", err
	}
	for i := 1; ; i++ {
		dir := filepath.Join(parent, name)
		if i > 1 {
			dir += "-" + strconv.Itoa(i)
		}
		err := os.Mkdir(dir, 0o700)
		if err == nil || !errors.Is(err, fs.ErrExist) {
			return dir, err
		}
	}
}

// copyTree copies the regular files under src into dst, 0600 (0700
// directories): a backup holds secrets.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("backing up %s: %w", path, err)
		}
		return atomicfile.Write(filepath.Join(dst, rel), b, 0o600)
	})
}

func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func quoteIdent(s string) string   { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }

// lastLine is the last non-empty line of a command's error output.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return "(no message)"
}
