package keyfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateThenRead(t *testing.T) {
	dir := t.TempDir()
	pub, path, err := Generate(dir, "carto-test-1")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 || path != filepath.Join(dir, "carto-test-1.key") {
		t.Fatalf("key file %s: %v %v", path, fi.Mode(), err)
	}
	name, key, err := Read(path)
	if err != nil || name != "carto-test-1" || !pub.Equal(key.Public()) {
		t.Fatalf("read back %q, %v", name, err)
	}
	before, _ := os.ReadFile(path)
	if _, _, err := Generate(dir, "carto-test-1"); err == nil || !strings.Contains(err.Error(), "never overwritten") {
		t.Errorf("a second keygen: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("the existing key was changed")
	}
	for _, bad := range []string{"", "a/b", "a b", "-x"} {
		if _, _, err := Generate(dir, bad); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	garbage := filepath.Join(dir, "garbage.key")
	os.WriteFile(garbage, []byte("carto-x notbase64!\n"), 0o600)
	if _, _, err := Read(garbage); err == nil || !strings.Contains(err.Error(), "not a key file") {
		t.Errorf("a garbage key file: %v", err)
	}
}
