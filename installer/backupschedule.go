package installer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/boundedread"
)

// ScheduledBackupsDirName is where, in the state dir, the agent keeps
// its scheduled backups unless backup.dir says elsewhere.
const ScheduledBackupsDirName = "scheduled-backups"

// scheduled backups are named carto-backup-<UTC time>.cbk: the newest
// sorts last, and its name says when it was taken.
const (
	scheduledPrefix = "carto-backup-"
	scheduledSuffix = ".cbk"
	scheduledTime   = "20060102T150405Z"
)

// scheduledDir is where the scheduled backups go.
func scheduledDir(paths config.Paths, c config.BackupConfig) string {
	if c.Dir != "" {
		return c.Dir
	}
	return filepath.Join(paths.StateDir, ScheduledBackupsDirName)
}

// scheduledBackups are the scheduled backups in dir, oldest first.
func scheduledBackups(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if n := e.Name(); e.Type().IsRegular() && strings.HasPrefix(n, scheduledPrefix) && strings.HasSuffix(n, scheduledSuffix) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// ScheduledBackupDue is when the agent's next backup is due (backup.every
// after the newest); zero when none is scheduled or nothing is installed.
func ScheduledBackupDue(paths config.Paths) time.Time {
	paths = paths.WithDefaults()
	cfg, found, err := config.Load(paths.File(config.ConfigFileName))
	if err != nil || !found || cfg.Backup.Interval() == 0 {
		return time.Time{}
	}
	all := scheduledBackups(scheduledDir(paths, cfg.Backup))
	if len(all) == 0 {
		return time.Now() // now: the first one
	}
	newest := strings.TrimSuffix(strings.TrimPrefix(all[len(all)-1], scheduledPrefix), scheduledSuffix)
	t, err := time.Parse(scheduledTime, newest)
	if err != nil {
		return time.Now()
	}
	return t.Add(cfg.Backup.Interval())
}

// ScheduledBackup is one the agent took.
type ScheduledBackup struct {
	Path   string
	Result *BackupResult
	// Removed are the older ones backup.keep no longer keeps.
	Removed []string
}

// TakeScheduledBackup writes a backup into backup.dir (whole, or not at
// all: written aside and renamed), then removes the oldest beyond
// backup.keep.
func TakeScheduledBackup(ctx context.Context, paths config.Paths) (*ScheduledBackup, error) {
	paths = paths.WithDefaults()
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return nil, err
	}
	var pass []byte
	if f := cfg.Backup.PassphraseFile; f != "" {
		if pass, err = boundedread.Secret(f); errors.Is(err, boundedread.ErrEmptySecret) {
			// Never an unencrypted backup where an encrypted one was asked.
			return nil, fmt.Errorf("backup.passphrase_file %s: its first line is empty; write the passphrase there, or remove backup.passphrase_file for unencrypted backups", f)
		} else if err != nil {
			return nil, fmt.Errorf("reading backup.passphrase_file: %w", err)
		}
	}
	dir := scheduledDir(paths, cfg.Backup)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating backup.dir: %w", err)
	}
	path := filepath.Join(dir, scheduledPrefix+time.Now().UTC().Format(scheduledTime)+scheduledSuffix)
	tmp, err := os.CreateTemp(dir, ".partial-*")
	if err != nil {
		return nil, fmt.Errorf("writing a backup into %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name())
	res, err := Backup(ctx, tmp, BackupOptions{Paths: paths, Passphrase: pass})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return nil, fmt.Errorf("taking the scheduled backup: %w", err)
	}
	out := &ScheduledBackup{Path: path, Result: res}
	all := scheduledBackups(dir)
	for len(all) > cfg.Backup.Kept() {
		old := filepath.Join(dir, all[0])
		if err := os.Remove(old); err != nil {
			return out, fmt.Errorf("removing the backup %s beyond backup.keep: %w", old, err)
		}
		out.Removed = append(out.Removed, old)
		all = all[1:]
	}
	return out, nil
}
