package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// withUmask runs f with the process umask set to mask. The umask is process
// wide, so tests using it do not run in parallel.
func withUmask(t *testing.T, mask int, f func()) {
	t.Helper()
	old := syscall.Umask(mask)
	defer syscall.Umask(old)
	f()
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// onlyFiles fails if dir holds anything but the named entries (no temp
// files left behind).
func onlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for _, e := range ents {
		if !want[e.Name()] {
			t.Errorf("unexpected entry %q left in %s", e.Name(), dir)
		}
	}
}

func TestWriteModeIgnoresUmask(t *testing.T) {
	for _, tc := range []struct {
		umask int
		perm  os.FileMode
	}{
		{0, 0o600},
		{0o077, 0o644},
		{0o022, 0o640},
	} {
		withUmask(t, tc.umask, func() {
			dir := t.TempDir()
			p := filepath.Join(dir, ".env")
			if err := Write(p, []byte("A=1\n"), tc.perm); err != nil {
				t.Fatal(err)
			}
			if got := mode(t, p); got != tc.perm {
				t.Errorf("umask %04o: mode %04o, want %04o", tc.umask, got, tc.perm)
			}
			// A changed file: both the new file and .prev get perm.
			if err := Write(p, []byte("A=2\n"), tc.perm); err != nil {
				t.Fatal(err)
			}
			if got := mode(t, p); got != tc.perm {
				t.Errorf("umask %04o after change: mode %04o, want %04o", tc.umask, got, tc.perm)
			}
			if got := mode(t, p+PrevSuffix); got != tc.perm {
				t.Errorf("umask %04o: .prev mode %04o, want %04o", tc.umask, got, tc.perm)
			}
		})
	}
}

func TestWriteNewFileHasNoPrev(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "customer.env")
	if err := Write(p, []byte("A=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, p); got != "A=1\n" {
		t.Errorf("content %q", got)
	}
	onlyFiles(t, dir, "customer.env")
}

func TestWriteKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, ".env")
	for _, v := range []string{"v1", "v2", "v3"} {
		if err := Write(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := mustRead(t, p); got != "v3" {
		t.Errorf("content %q, want v3", got)
	}
	if got := mustRead(t, p+PrevSuffix); got != "v2" {
		t.Errorf(".prev content %q, want v2 (only the version just replaced is kept)", got)
	}
	onlyFiles(t, dir, ".env", ".env.prev")
}

func TestWriteIdenticalIsNoop(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, ".env")
	if err := Write(p, []byte("same"), 0o600); err != nil {
		t.Fatal(err)
	}
	past := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(p, past, past); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("same"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(past) {
		t.Errorf("mtime changed to %v on an identical write", fi.ModTime())
	}
	onlyFiles(t, dir, ".env") // no .prev for a no-op
}

func TestWriteIdenticalFixesMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, ".env")
	if err := os.WriteFile(p, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, p); got != 0o600 {
		t.Errorf("mode %04o, want 0600", got)
	}
}

func TestWriteFailureLeavesOriginal(t *testing.T) {
	t.Run("path is a directory", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "conf")
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		err := Write(p, []byte("x"), 0o600)
		if err == nil {
			t.Fatal("no error writing over a directory")
		}
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not name the path", err)
		}
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			t.Errorf("directory gone: %v", err)
		}
		onlyFiles(t, dir, "conf")
	})

	t.Run("missing parent directory", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "nope", ".env")
		err := Write(p, []byte("x"), 0o600)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Fatalf("error %v does not name %s", err, p)
		}
	})

	t.Run(".prev cannot be written", func(t *testing.T) {
		// Works as root too: a non-empty directory named .prev makes the
		// rename of the kept copy fail.
		dir := t.TempDir()
		p := filepath.Join(dir, ".env")
		if err := Write(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(p+PrevSuffix, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		err := Write(p, []byte("new"), 0o600)
		if err == nil {
			t.Fatal("no error")
		}
		if !strings.Contains(err.Error(), "previous version") || !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not say what failed", err)
		}
		if got := mustRead(t, p); got != "old" {
			t.Errorf("original changed to %q", got)
		}
		onlyFiles(t, dir, ".env", ".env.prev")
	})

	t.Run("directory not writable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root ignores directory permissions")
		}
		dir := t.TempDir()
		p := filepath.Join(dir, ".env")
		if err := Write(p, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(dir, 0o700)
		if err := Write(p, []byte("new"), 0o600); err == nil {
			t.Fatal("no error")
		}
		if got := mustRead(t, p); got != "old" {
			t.Errorf("original changed to %q", got)
		}
		onlyFiles(t, dir, ".env")
	})
}

func TestWriteRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := Write("rel.env", []byte("A=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, filepath.Join(dir, "rel.env")); got != "A=1\n" {
		t.Errorf("content %q", got)
	}
}
