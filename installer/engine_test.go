package installer

import (
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/host"
	"github.com/cartodb/carto-appliance/proxy"
)

func fakeEngine(t *testing.T) *host.FakeEngine {
	t.Helper()
	f := &host.FakeEngine{}
	prev := hostEngine
	hostEngine = f
	t.Cleanup(func() { hostEngine = prev })
	return f
}

// The engine is restarted only when its proxy settings changed and the
// operator agreed; otherwise the note says how to do it.
func TestConfigureEngineProxy(t *testing.T) {
	f := fakeEngine(t)
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	d := &desired{env: envfile.NewEnv("NO_PROXY", "localhost,maps-api")}
	d.cfg.Proxy = proxy.Settings{URL: "https://proxy.corp:3129", CACert: proxy.CAFileName}
	d.certs = map[string][]byte{proxy.CAFileName: []byte("CA")}
	var asked string
	no := func(reason string) bool { asked = reason; return false }
	notes, err := configureEngineProxy(t.Context(), paths, d, no)
	if err != nil || f.Restarts != 0 || len(notes) != 1 || !strings.Contains(notes[0], "systemctl restart docker") {
		t.Fatalf("declined: notes %q err %v restarts %d", notes, err, f.Restarts)
	}
	if !strings.Contains(asked, "every container restarts") || !strings.Contains(string(f.DropIn), "proxy.corp:3129") || string(f.CA) != "CA" {
		t.Errorf("asked %q, drop-in %q, CA %q", asked, f.DropIn, f.CA)
	}
	// Unchanged settings: nothing asked, nothing restarted.
	asked = ""
	if notes, err := configureEngineProxy(t.Context(), paths, d, no); err != nil || notes != nil || asked != "" {
		t.Errorf("unchanged: notes %q err %v asked %q", notes, err, asked)
	}
	// Cleared and agreed: the engine restarts once.
	d.cfg.Proxy, d.certs = proxy.Settings{}, nil
	notes, err = configureEngineProxy(t.Context(), paths, d, func(string) bool { return true })
	if err != nil || f.Restarts != 1 || f.CA != nil || !strings.Contains(notes[0], "restarted the Docker engine") {
		t.Errorf("agreed: notes %q err %v restarts %d CA %q", notes, err, f.Restarts, f.CA)
	}
}

func TestConfigureEngineProxyWithoutSystemd(t *testing.T) {
	f := fakeEngine(t)
	f.NoSystemd = true
	d := &desired{}
	d.cfg.Proxy = proxy.Settings{URL: "http://proxy.corp:3128"}
	notes, err := configureEngineProxy(t.Context(), config.Paths{}, d, func(string) bool { return true })
	if err != nil || f.DropIn != nil || f.Restarts != 0 || len(notes) != 1 || !strings.Contains(notes[0], "give it HTTP_PROXY/HTTPS_PROXY yourself") {
		t.Errorf("notes %q err %v", notes, err)
	}
}
