package host

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/proxy"
)

// The engine trusts every file in its SSL_CERT_DIR: after a CA change the
// directory holds the new CA alone (no .prev of the old one, nothing a
// crash or an older version left), and clearing the CA removes it.
func TestEngineTrustDirHoldsOnlyTheCurrentCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "carto-proxy-ca")
	entries := func() map[string]string {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			out[e.Name()] = string(b)
		}
		return out
	}
	only := func(want string) {
		t.Helper()
		got := entries()
		if len(got) != 1 || got[proxy.CAFileName] != want {
			t.Errorf("trust dir holds %v, want only %s = %q", got, proxy.CAFileName, want)
		}
	}

	if changed, err := syncTrustDir(dir, []byte("CA one")); err != nil || !changed {
		t.Fatalf("first CA: changed=%v err=%v", changed, err)
	}
	only("CA one")
	if changed, err := syncTrustDir(dir, []byte("CA two")); err != nil || !changed {
		t.Fatalf("CA change: changed=%v err=%v", changed, err)
	}
	only("CA two")

	// What the previous version left: the old CA kept as a .prev, and a
	// temporary file of a write cut short.
	if err := atomicfile.Write(filepath.Join(dir, proxy.CAFileName), []byte("CA three"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "."+proxy.CAFileName+".tmp-1"), []byte("CA half"), 0o644)
	if changed, err := syncTrustDir(dir, []byte("CA three")); err != nil || !changed {
		t.Fatalf("stale files: changed=%v err=%v (their removal needs an engine restart to count)", changed, err)
	}
	only("CA three")
	if changed, err := syncTrustDir(dir, []byte("CA three")); err != nil || changed {
		t.Errorf("same CA again: changed=%v err=%v", changed, err)
	}

	if changed, err := syncTrustDir(dir, nil); err != nil || !changed {
		t.Fatalf("clearing: changed=%v err=%v", changed, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("trust dir left after the CA was cleared: %v", err)
	}
	if changed, err := syncTrustDir(dir, nil); err != nil || changed {
		t.Errorf("clearing again: changed=%v err=%v", changed, err)
	}
}
