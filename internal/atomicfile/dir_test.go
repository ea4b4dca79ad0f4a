package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// A trust or mounted directory ends up holding exactly the files given:
// Write's .prev of a replaced file, a crashed write's temporary file, a
// file no longer wanted, a symlink and a subdirectory are all gone, and
// nothing keeps the previous content.
func TestWriteDirHoldsExactlyTheFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "trust")
	if _, err := WriteDir(dir, map[string][]byte{"ca.pem": []byte("old CA")}, 0o644); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("new dir mode %04o, want 0700", m)
	}
	// What an older version or a crash left behind.
	if err := Write(filepath.Join(dir, "ca.pem"), []byte("older CA"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ".ca.pem.tmp-123"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir, "gone.pem"), []byte("retired CA"), 0o644)
	os.Symlink("/etc/hostname", filepath.Join(dir, "link.pem"))
	os.MkdirAll(filepath.Join(dir, "sub"), 0o700)
	os.WriteFile(filepath.Join(dir, "sub", "x.pem"), []byte("x"), 0o644)

	changed, err := WriteDir(dir, map[string][]byte{"ca.pem": []byte("new CA"), "other.pem": []byte("second")}, 0o644)
	if err != nil || !changed {
		t.Fatalf("WriteDir: changed=%v err=%v", changed, err)
	}
	onlyFiles(t, dir, "ca.pem", "other.pem")
	for name, want := range map[string]string{"ca.pem": "new CA", "other.pem": "second"} {
		if got := mustRead(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
		if m := mode(t, filepath.Join(dir, name)); m != 0o644 {
			t.Errorf("%s mode %04o", name, m)
		}
	}

	// The same content again changes nothing, not even the mtime.
	fi1, _ := os.Stat(filepath.Join(dir, "ca.pem"))
	changed, err = WriteDir(dir, map[string][]byte{"ca.pem": []byte("new CA"), "other.pem": []byte("second")}, 0o644)
	fi2, _ := os.Stat(filepath.Join(dir, "ca.pem"))
	if err != nil || changed || !fi1.ModTime().Equal(fi2.ModTime()) {
		t.Errorf("a no-op WriteDir: changed=%v err=%v mtime %v -> %v", changed, err, fi1.ModTime(), fi2.ModTime())
	}

	// A wrong mode alone is a change, and corrected.
	os.Chmod(filepath.Join(dir, "other.pem"), 0o666)
	if changed, err = WriteDir(dir, map[string][]byte{"ca.pem": []byte("new CA"), "other.pem": []byte("second")}, 0o644); err != nil || !changed {
		t.Errorf("mode fix: changed=%v err=%v", changed, err)
	}
	if m := mode(t, filepath.Join(dir, "other.pem")); m != 0o644 {
		t.Errorf("mode not corrected: %04o", m)
	}

	// Nothing wanted: an empty directory.
	if changed, err = WriteDir(dir, nil, 0o644); err != nil || !changed {
		t.Errorf("emptying: changed=%v err=%v", changed, err)
	}
	onlyFiles(t, dir)
}

// A symlink with the wanted content is replaced by a file: whatever it
// points at may change under it.
func TestWriteDirReplacesASymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "target")
	os.WriteFile(target, []byte("CA"), 0o644)
	os.Symlink(target, filepath.Join(dir, "ca.pem"))
	if changed, err := WriteDir(dir, map[string][]byte{"ca.pem": []byte("CA")}, 0o644); err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "ca.pem")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("ca.pem is still not a regular file: %v %v", fi.Mode(), err)
	}
}

func TestWriteDirRefusesPaths(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"", "../x", "a/b", ".", ".."} {
		if _, err := WriteDir(dir, map[string][]byte{name: []byte("x")}, 0o644); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	onlyFiles(t, dir)
}
