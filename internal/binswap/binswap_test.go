package binswap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func script(version string) []byte {
	return []byte("#!/bin/sh\necho 'carto-appliance " + version + "'\n")
}

// A staged binary is checked, swapped in whole, and the old one kept;
// a staged one never swapped is a leftover once old enough.
func TestStageCheckKeepSwap(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "carto-appliance")
	os.WriteFile(exe, script("1.0.0"), 0o755)
	staged, err := Stage(exe, script("1.1.0"))
	if err != nil || filepath.Dir(staged) != dir {
		t.Fatalf("stage: %s %v", staged, err)
	}
	if err := CheckVersion(t.Context(), staged, "1.2.0"); err == nil || !strings.Contains(err.Error(), `says "carto-appliance 1.1.0"`) {
		t.Errorf("a binary of another version: %v", err)
	}
	if err := CheckVersion(t.Context(), staged, "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if got := Leftovers(exe, time.Hour); len(got) != 0 {
		t.Errorf("a fresh stage counted as a leftover: %v", got)
	}
	if got := Leftovers(exe, 0); len(got) != 1 || got[0] != staged {
		t.Errorf("leftovers: %v", got)
	}
	keep := filepath.Join(dir, "prev", "carto-appliance-1.0.0")
	os.MkdirAll(filepath.Dir(keep), 0o700)
	os.WriteFile(filepath.Join(dir, "prev", "carto-appliance-0.9.0"), nil, 0o755)
	if err := Keep(exe, keep, "carto-appliance-"); err != nil {
		t.Fatal(err)
	}
	if kept, _ := filepath.Glob(filepath.Join(dir, "prev", "*")); len(kept) != 1 || kept[0] != keep {
		t.Errorf("kept: %v", kept)
	}
	if err := Swap(staged, exe); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(exe); string(b) != string(script("1.1.0")) {
		t.Errorf("after the swap: %q", b)
	}
	if b, _ := os.ReadFile(keep); string(b) != string(script("1.0.0")) {
		t.Errorf("kept: %q", b)
	}
	if got := Leftovers(exe, 0); len(got) != 0 {
		t.Errorf("leftovers after the swap: %v", got)
	}
	if err := CheckVersion(t.Context(), filepath.Join(dir, "missing"), "1.1.0"); err == nil || !strings.Contains(err.Error(), "does not run here") {
		t.Errorf("a binary that does not run: %v", err)
	}
}
