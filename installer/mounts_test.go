package installer

import (
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/proxy"
	"github.com/cartodb/carto-appliance/stack"
	"github.com/cartodb/carto-appliance/templates"
)

// Each mounted directory holds only its services' files: the router's key
// never reaches a service, key.json never reaches the router, the proxy
// CA reaches every service reading .env, and no .prev is mounted.
func TestPublishMountsSplitsTheSecrets(t *testing.T) {
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	certsDir := filepath.Join(paths.ConfigDir, config.CertsDirName)
	os.MkdirAll(certsDir, 0o700)
	// The appliance's copies, each changed once so that a .prev exists.
	for _, name := range []string{config.KeyFileName, config.ServerCertFile, config.ServerKeyFile, config.CACertFile, proxy.CAFileName, config.ACMECAFileName} {
		for _, v := range []string{"old ", "new "} {
			if err := atomicfile.Write(filepath.Join(certsDir, name), []byte(v+name), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// What the previous version mounted everywhere stays out of the
	// mounted dirs too.
	os.MkdirAll(filepath.Join(certsDir, appMountDir), 0o700)
	os.WriteFile(filepath.Join(certsDir, appMountDir, config.KeyFileName+atomicfile.PrevSuffix), []byte("old key"), 0o600)

	proxied := config.Config{Proxy: proxy.Settings{URL: "https://proxy.corp:3129", CACert: proxy.CAFileName}}
	for _, tc := range []struct {
		name string
		cfg  config.Config
		want map[string][]string
	}{
		{"proxy with a CA", proxied, map[string][]string{
			routerMountDir: {config.ServerCertFile, config.ServerKeyFile},
			appMountDir:    {config.KeyFileName, proxy.CAFileName},
			caMountDir:     {proxy.CAFileName},
		}},
		{"no proxy", config.Config{}, map[string][]string{
			routerMountDir: {config.ServerCertFile, config.ServerKeyFile},
			appMountDir:    {config.KeyFileName},
			caMountDir:     nil,
		}},
		{"TLS offloaded", config.Config{TLS: config.TLSConfig{Mode: config.TLSOffload}}, map[string][]string{
			routerMountDir: nil,
			appMountDir:    {config.KeyFileName},
			caMountDir:     nil,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := publishMounts(paths, tc.cfg); err != nil {
				t.Fatal(err)
			}
			for dir, want := range tc.want {
				ents, err := os.ReadDir(filepath.Join(certsDir, dir))
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, e := range ents {
					got = append(got, e.Name())
					b, _ := os.ReadFile(filepath.Join(certsDir, dir, e.Name()))
					if string(b) != "new "+e.Name() {
						t.Errorf("%s/%s holds %q, not the current copy", dir, e.Name(), b)
					}
					if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 {
						t.Errorf("%s/%s mode %v", dir, e.Name(), fi.Mode())
					}
				}
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("certs/%s holds %v, want %v", dir, got, want)
				}
			}
		})
	}
}

func TestPublishMountsNeedsKeyJSON(t *testing.T) {
	paths := config.Paths{ConfigDir: t.TempDir()}
	err := publishMounts(paths, config.Config{})
	if err == nil || !strings.Contains(err.Error(), "key.json") {
		t.Errorf("publish without key.json: %v", err)
	}
	if _, err := mountedFiles(config.Config{}, func(string) ([]byte, error) { return nil, fs.ErrPermission }); err == nil {
		t.Error("an unreadable file was skipped")
	}
}

// The release's compose file mounts the directories publishMounts writes,
// each into its services only: certs/ as a whole nowhere, the router's
// directory into the router alone, key.json into the services that call
// Google Cloud (CARTO's own compose file mounts it there), a directory
// with the proxy CA at /usr/src/certs of every other service reading .env.
func TestComposeMountsEachSecretWhereItIsUsed(t *testing.T) {
	rel, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	out, err := stack.RenderCompose(rel.Compose, stack.RenderOptions{Version: rel.Manifest.Version, Env: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			EnvFile []string `yaml:"env_file"`
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	gcp := []string{"workspace-migrations", "workspace-api", "workspace-subscriber", "maps-api", "sql-worker",
		"import-api", "import-worker", "lds-api", "cdn-invalidator-sub", "router-metrics"}
	mounted := map[string][]string{} // certs dir -> services
	for name, svc := range doc.Services {
		var certsTargets []string
		for _, v := range svc.Volumes {
			src, rest, _ := strings.Cut(v, ":")
			target, _, _ := strings.Cut(rest, ":")
			if src != "./certs" && !strings.HasPrefix(src, "./certs/") {
				continue
			}
			dir := strings.TrimPrefix(src, "./certs/")
			if !slices.Contains([]string{routerMountDir, appMountDir, caMountDir}, dir) {
				t.Errorf("%s mounts %s: only certs/%s, certs/%s and certs/%s are written for containers", name, src, routerMountDir, appMountDir, caMountDir)
				continue
			}
			if !slices.Contains(mounted[dir], name) {
				mounted[dir] = append(mounted[dir], name)
			}
			certsTargets = append(certsTargets, target)
		}
		if len(svc.EnvFile) > 0 && name != routerService && !slices.Contains(certsTargets, "/usr/src/certs") {
			t.Errorf("%s reads .env but has nothing at /usr/src/certs: NODE_EXTRA_CA_CERTS names a file there", name)
		}
	}
	for dir := range maps.Keys(mounted) {
		slices.Sort(mounted[dir])
	}
	slices.Sort(gcp)
	if got := mounted[routerMountDir]; !slices.Equal(got, []string{routerService}) {
		t.Errorf("certs/%s (the router's key) is mounted into %v, want [%s]", routerMountDir, got, routerService)
	}
	if got := mounted[appMountDir]; !slices.Equal(got, gcp) {
		t.Errorf("certs/%s (key.json) is mounted into %v, want %v", appMountDir, got, gcp)
	}
	for _, name := range mounted[caMountDir] {
		if slices.Contains(gcp, name) || name == routerService {
			t.Errorf("%s mounts certs/%s besides its own", name, caMountDir)
		}
	}
}
