package installer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/backupfile"
	"github.com/cartodb/carto-appliance/config"
)

// writeBackupFile writes a backup with one config file, by carto-appliance
// made, and returns its path.
func writeBackupFile(t *testing.T, made string) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := backupfile.NewWriter(&buf, backupfile.Header{ApplianceVersion: made, CartoVersion: "2025.11.3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add("config/appliance.yaml", 0o600, 9, strings.NewReader("domain: x")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "b.cbk")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A restore refuses, with nothing left on the node, a file that is not a
// backup, one a newer carto-appliance wrote, and an installed node.
func TestRestoreRefusals(t *testing.T) {
	prev := ApplianceVersion
	t.Cleanup(func() { ApplianceVersion = prev })
	ApplianceVersion = "1.0.0"
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, []byte("not a backup at all"), 0o600)
	for _, c := range []struct{ name, file, want string }{
		{"not a backup", junk, "nothing was changed"},
		{"newer carto-appliance", writeBackupFile(t, "1.2.0"), "written by carto-appliance 1.2.0, newer than this one (1.0.0)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
			_, err := Restore(t.Context(), RestoreOptions{Options: Options{Paths: paths}, File: c.file})
			var in *InputError
			if !errors.As(err, &in) || in.Input != InputBackup || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an InputError naming the backup with %q", err, c.want)
			}
			for _, d := range []string{paths.ConfigDir, paths.StateDir} {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a refused restore left %s", d)
				}
			}
		})
	}
	paths := installed(t, config.Config{})
	_, err := Restore(t.Context(), RestoreOptions{Options: Options{Paths: paths}, File: writeBackupFile(t, "1.0.0")})
	if err == nil || !strings.Contains(err.Error(), "this node is installed") {
		t.Errorf("restore onto an installed node: %v", err)
	}
}

// The next scheduled backup is due backup.every after the newest; none
// is when backup.every is not set.
func TestScheduledBackupDue(t *testing.T) {
	paths := installed(t, config.Config{})
	if due := ScheduledBackupDue(paths); !due.IsZero() {
		t.Errorf("due %v without backup.every", due)
	}
	dir := t.TempDir()
	paths = installed(t, config.Config{Backup: config.BackupConfig{Every: "6h", Dir: dir}})
	if due := ScheduledBackupDue(paths); due.IsZero() || time.Since(due) < 0 {
		t.Errorf("the first backup is due %v, want now", due)
	}
	for _, n := range []string{"carto-backup-20261201T000000Z.cbk", "carto-backup-20261203T120000Z.cbk", "other.txt"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o600)
	}
	if due, want := ScheduledBackupDue(paths), time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC); !due.Equal(want) {
		t.Errorf("due %v, want %v", due, want)
	}
}

// The console's password is kept as a bcrypt hash in appliance.yaml; a
// short one is refused with the file unchanged.
func TestSetConsolePassword(t *testing.T) {
	paths := installed(t, config.Config{})
	before, _ := os.ReadFile(paths.File(config.ConfigFileName))
	var in *InputError
	if _, err := SetConsolePassword(t.Context(), paths, []byte("short")); !errors.As(err, &in) || in.Input != InputConsolePassword {
		t.Fatalf("a short password: %v", err)
	}
	if after, _ := os.ReadFile(paths.File(config.ConfigFileName)); !bytes.Equal(before, after) {
		t.Error("a refused password changed appliance.yaml")
	}
	url, err := SetConsolePassword(t.Context(), paths, []byte("a long enough password"))
	if err != nil {
		t.Fatal(err)
	}
	// With the router's certificate, HTTPS, on loopback by default;
	// without one (TLS offloaded), plain HTTP.
	if url != "https://127.0.0.1:9443/" {
		t.Errorf("the console's URL: %q", url)
	}
	os.Remove(filepath.Join(paths.ConfigDir, config.CertsDirName, config.ServerCertFile))
	if url := consoleURL(paths, installedConfig(t, paths).Console); url != "http://127.0.0.1:9443/" {
		t.Errorf("the console's URL without a certificate: %q", url)
	}
	cfg := installedConfig(t, paths)
	if !strings.HasPrefix(cfg.Console.PasswordHash, "$2") || strings.Contains(cfg.Console.PasswordHash, "long enough") {
		t.Errorf("hash %q", cfg.Console.PasswordHash)
	}
}

// A passphrase file with nothing in it never yields an unencrypted
// scheduled backup: the backup is refused, nothing written.
func TestScheduledBackupRefusesAnEmptyPassphrase(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(pass, []byte("\n"), 0o600)
	paths := installed(t, config.Config{Backup: config.BackupConfig{Every: "1h", Dir: dir, PassphraseFile: pass}})
	if _, err := TakeScheduledBackup(t.Context(), paths); err == nil || !strings.Contains(err.Error(), "first line is empty") {
		t.Fatalf("got %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files left in backup.dir: %v", entries)
	}
}

// A restore onto an engine that holds the backup's project (an uninstall
// that kept its volumes) is refused with nothing changed; one that fails
// once begun (here its converge: the backup lacks the customer package)
// is undone: the stack and its volumes removed, the firewall rules
// cleared, the config and state dirs as they were.
func TestRestoreUndo(t *testing.T) {
	prev := ApplianceVersion
	t.Cleanup(func() { ApplianceVersion = prev })
	ApplianceVersion = "1.0.0"
	f, _ := fakes(t)
	file := writeBackupFile(t, "1.0.0")
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	// A config dir with a file of the operator's in it, before the
	// restore: it stays, and so does the dir.
	os.MkdirAll(paths.ConfigDir, 0o755)
	os.WriteFile(filepath.Join(paths.ConfigDir, "notes.txt"), []byte("mine"), 0o600)
	gone := func(t *testing.T) {
		t.Helper()
		entries, _ := os.ReadDir(paths.ConfigDir)
		if len(entries) != 1 || entries[0].Name() != "notes.txt" {
			t.Errorf("the config dir holds %v, want only notes.txt", entries)
		}
		if _, err := os.Stat(paths.StateDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the state dir the restore made is still there (%v)", err)
		}
	}

	f.LeftoverNames = []string{"volume carto_workspace-db"}
	_, err := Restore(t.Context(), RestoreOptions{Options: Options{Paths: paths}, File: file})
	var in *InputError
	if !errors.As(err, &in) || in.Input != InputBackup || !strings.Contains(err.Error(), "volume carto_workspace-db") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("a restore onto a kept project: %v", err)
	}
	gone(t)
	if len(f.Downs) != 0 {
		t.Errorf("a refused restore removed the kept project: %v", f.Log)
	}

	f.LeftoverNames = nil
	_, err = Restore(t.Context(), RestoreOptions{Options: Options{Paths: paths}, File: file})
	if err == nil || !strings.Contains(err.Error(), "the restore was undone") {
		t.Fatalf("a restore failing at its converge: %v", err)
	}
	gone(t)
	if len(f.Downs) != 1 || !f.Downs[0].RemoveVolumes || f.DownOf[0] != "carto" || !slices.Contains(f.Log, "firewall clear") {
		t.Errorf("the undo did not remove the stack with its volumes and the firewall rules: %v", f.Log)
	}
}
