package installer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
)

// installed plans and commits an installation in temporary dirs, as
// install does without the engine, and returns its paths.
func installed(t *testing.T, cfg config.Config) config.Paths {
	t.Helper()
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	key := filepath.Join(dir, "key.json")
	os.WriteFile(key, []byte(`{"private_key_id":"0a1b2c3d4e"}`), 0o600)
	d, err := plan(paths, cfg, writeCustomer(t, ""), key, TLSInput{})
	if err != nil {
		t.Fatal(err)
	}
	if err := commit(paths, d, nil); err != nil {
		t.Fatal(err)
	}
	return paths
}

// dirSnapshot is every file under dir with its contents.
func dirSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			b, _ := os.ReadFile(p)
			out[p] = string(b)
		}
		return nil
	})
	return out
}

func sameFiles(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestRenderEnvMasksAndChangesNothing(t *testing.T) {
	paths := installed(t, config.Config{Domain: "carto.example.com"})
	before := dirSnapshot(t, paths.ConfigDir)
	r, err := RenderEnv(paths, "")
	if err != nil {
		t.Fatal(err)
	}
	env := string(r.Masked)
	if strings.Contains(env, "admin-pass") || !strings.Contains(env, `POSTGRES_ADMIN_PASSWORD="`+envfile.Mask) || !strings.Contains(env, `SELFHOSTED_DOMAIN="carto.example.com"`) {
		t.Errorf("rendered:\n%s", env)
	}
	if !sameFiles(before, dirSnapshot(t, paths.ConfigDir)) {
		t.Error("env render changed the config dir")
	}
}

func TestCertificateStatusOfAnInstall(t *testing.T) {
	paths := installed(t, config.Config{})
	cs, err := GetCertificateStatus(paths)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Mode != config.TLSSelfSigned || cs.CA != paths.CAPath() || cs.Info == nil || cs.DaysLeft < 300 || cs.Warning != "" {
		t.Errorf("status %+v", cs)
	}
	if _, err := GetCertificateStatus(config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("nothing installed: %v", err)
	}
}

// A reconfiguration plans from what is installed; a refused change is
// refused before anything is written.
func TestPlanInstalled(t *testing.T) {
	paths := installed(t, config.Config{})
	before := dirSnapshot(t, paths.ConfigDir)
	d, err := planInstalled(paths, func(c *config.Config) ([]byte, error) {
		return ProxyInput{URL: "http://proxy.corp:3128"}.apply(c)
	}, TLSInput{})
	if err != nil {
		t.Fatal(err)
	}
	if d.env.Get("HTTP_PROXY") != "http://proxy.corp:3128" || !strings.Contains(d.env.Get("NO_PROXY"), "maps-api") {
		t.Errorf("planned HTTP_PROXY %q NO_PROXY %q", d.env.Get("HTTP_PROXY"), d.env.Get("NO_PROXY"))
	}
	_, err = planInstalled(paths, func(c *config.Config) ([]byte, error) {
		c.Router.HTTPPort = 443
		return nil, nil
	}, TLSInput{})
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "router.https_port" {
		t.Errorf("same ports: %v", err)
	}
	if !sameFiles(before, dirSnapshot(t, paths.ConfigDir)) {
		t.Error("planning changed the config dir")
	}
}

func TestAgentStateRoundTrip(t *testing.T) {
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: filepath.Join(t.TempDir(), "state")}
	if st, err := LoadAgentState(paths); err != nil || len(st.Services) != 0 {
		t.Fatalf("no state yet: %+v %v", st, err)
	}
	in := AgentState{Services: map[string]AgentServiceState{"maps-api": {Restarts: 3}}}
	if err := SaveAgentState(paths, in); err != nil {
		t.Fatal(err)
	}
	out, err := LoadAgentState(paths)
	if err != nil || out.Services["maps-api"].Restarts != 3 {
		t.Errorf("loaded %+v %v", out, err)
	}
	if fi, _ := os.Stat(filepath.Join(paths.StateDir, config.AgentStateFileName)); fi == nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("agent.json mode: %v", fi)
	}
}
