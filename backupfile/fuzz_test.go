package backupfile

import (
	"bytes"
	"context"
	"testing"
)

func FuzzOpen(f *testing.F) {
	files := []file{
		{"config/appliance.yaml", 0o600, []byte("domain: carto.example.com\n")},
		{"empty", 0o644, nil},
	}
	f.Add(build(f, "", files))
	f.Add(build(f, "p", files))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		h, dir, err := restore(t, base, data, []byte("p"))
		if err == nil && h == nil {
			t.Fatal("Open returned neither a header nor an error")
		}
		if err == nil && dir == "" {
			t.Fatal("no restore directory")
		}
		assertInside(t, base)
	})
}

// TestFuzzSeedsOpen guards the seeds: a fuzz target whose seeds fail to
// open explores only the error paths.
func TestFuzzSeedsOpen(t *testing.T) {
	for _, pass := range []string{"", "p"} {
		data := build(t, pass, []file{{"a", 0o600, []byte("x")}})
		if _, err := Open(context.Background(), bytes.NewReader(data), []byte("p"), t.TempDir()); err != nil {
			t.Fatalf("encrypted=%t: %v", pass != "", err)
		}
	}
}
