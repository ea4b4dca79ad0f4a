package config

import (
	"path/filepath"
	"time"
)

// BackupConfig is appliance.yaml's backup section: the backups the agent
// takes by itself (`carto-appliance backup` takes one at any time).
type BackupConfig struct {
	// Every is how often the agent takes a backup (a Go duration, e.g.
	// 24h, at least 1m); empty: never.
	Every string `yaml:"every,omitempty"`
	// Keep is how many of them are kept (the newest); 0 means
	// DefaultKeepScheduledBackups.
	Keep int `yaml:"keep,omitempty"`
	// Dir is where they are written (absolute); empty: the state dir's
	// scheduled-backups. Another disk, or a mounted share, survives the VM.
	Dir string `yaml:"dir,omitempty"`
	// PassphraseFile (absolute) holds the passphrase they are encrypted
	// with; empty: not encrypted (the files are 0600).
	PassphraseFile string `yaml:"passphrase_file,omitempty"`
}

// DefaultKeepScheduledBackups is how many scheduled backups are kept.
const DefaultKeepScheduledBackups = 7

// minBackupEvery bounds how often backups are taken: each holds a dump.
const minBackupEvery = time.Minute

// Interval is how often the agent takes a backup; 0: never.
func (c BackupConfig) Interval() time.Duration {
	d, _ := time.ParseDuration(c.Every)
	return d
}

// Kept is how many scheduled backups are kept.
func (c BackupConfig) Kept() int {
	if c.Keep == 0 {
		return DefaultKeepScheduledBackups
	}
	return c.Keep
}

func validateBackup(c BackupConfig) error {
	if c.Every != "" {
		d, err := time.ParseDuration(c.Every)
		if err != nil || d < minBackupEvery {
			return fieldErrorf("backup.every", "appliance.yaml backup.every %q: give a duration of at least 1m, e.g. 24h or 6h", c.Every)
		}
	}
	if c.Keep < 0 || c.Keep > maxKeepBackups {
		return fieldErrorf("backup.keep", "appliance.yaml backup.keep %d: keep between 1 and %d backups", c.Keep, maxKeepBackups)
	}
	for _, p := range []struct{ field, path string }{{"backup.dir", c.Dir}, {"backup.passphrase_file", c.PassphraseFile}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return fieldErrorf(p.field, "appliance.yaml %s %q: give an absolute path", p.field, p.path)
		}
	}
	return nil
}
