package stack

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/templates"
)

var update = flag.Bool("update", false, "rewrite golden files")

func testRelease(t *testing.T) *release.Release {
	t.Helper()
	rel, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// writeProject renders the release for env and loads it as the engine does.
func writeProject(t *testing.T, env map[string]string, dotenv string) (string, []byte) {
	t.Helper()
	rel := testRelease(t)
	out, err := RenderCompose(rel.Compose, RenderOptions{Version: rel.Manifest.Version, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ComposeFileName), out, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(dotenv), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, out
}

const testDotenv = `DOCKER_REGISTRY_BASE_PATH="registry.test:5000/carto"
CARTO_SELFHOSTED_VERSION="2025.11.3"
POSTGRES_ADMIN_USER="postgres"
POSTGRES_ADMIN_PASSWORD="pa$$word"
POSTGRES_ADMIN_DB="postgres"
`

// The generated compose file is a golden file: a change to the template or
// the renderer shows up in review as a diff of what operators get.
func TestRenderComposeGolden(t *testing.T) {
	rel := testRelease(t)
	got, err := RenderCompose(rel.Compose, RenderOptions{Version: "2025.11.3", Env: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "docker-compose.golden.yml")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./stack -run Golden -update)", err)
	}
	if string(got) != string(want) {
		t.Errorf("generated compose file differs from %s; if intended, rerun with -update", golden)
	}
	if strings.Contains(string(got), "x-carto") {
		t.Error("x-carto-* keys leaked into the generated file")
	}
}

func TestRenderComposeDropsEmbeddedDatabases(t *testing.T) {
	dir, _ := writeProject(t, map[string]string{"LOCAL_POSTGRES_SCALE": "0", "LOCAL_REDIS_SCALE": "0"}, testDotenv)
	p, err := Load(context.Background(), dir, "carto")
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"workspace-postgres", "valkey"} {
		if _, ok := p.Services[gone]; ok {
			t.Errorf("service %s still in the project with its scale set to 0", gone)
		}
		for name, s := range p.Services {
			if _, ok := s.DependsOn[gone]; ok {
				t.Errorf("service %s still depends on dropped %s", name, gone)
			}
		}
	}
	if _, ok := p.Services["workspace-migrations"]; !ok {
		t.Error("workspace-migrations dropped with the embedded database; it must run against the external one")
	}
}

// With TLS offloaded, the router publishes its HTTP port only; with the
// agent on the HTTP port (acme mode), its HTTPS port only.
func TestRenderComposeRouterPorts(t *testing.T) {
	rel := testRelease(t)
	cases := []struct {
		opts RenderOptions
		want []uint32
	}{
		{RenderOptions{}, []uint32{8080, 8443}},
		{RenderOptions{TLSOffload: true}, []uint32{8080}},
		{RenderOptions{HTTPByAgent: true}, []uint32{8443}},
	}
	for _, tc := range cases {
		tc.opts.Version = rel.Manifest.Version
		out, err := RenderCompose(rel.Compose, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, ComposeFileName), out, 0o644)
		os.WriteFile(filepath.Join(dir, ".env"), []byte(testDotenv), 0o600)
		p, err := Load(context.Background(), dir, "carto")
		if err != nil {
			t.Fatal(err)
		}
		var targets []uint32
		for _, port := range p.Services["router-http"].Ports {
			targets = append(targets, port.Target)
		}
		if fmt.Sprint(targets) != fmt.Sprint(tc.want) {
			t.Errorf("%+v: the router publishes %v, want %v", tc.opts, targets, tc.want)
		}
	}
}

func TestRenderComposeRoles(t *testing.T) {
	rel := testRelease(t)
	cases := map[string][]string{
		RoleData: {"valkey", "workspace-postgres"},
		RoleWeb:  {"http-cache", "router-http", "router-metrics"},
	}
	for role, want := range cases {
		out, err := RenderCompose(rel.Compose, RenderOptions{Role: role, Version: "1", Env: map[string]string{}})
		if err != nil {
			t.Fatalf("role %s: %v", role, err)
		}
		for _, svc := range want {
			if !strings.Contains(string(out), "\n  "+svc+":\n") {
				t.Errorf("role %s: service %s missing", role, svc)
			}
		}
		if role == RoleData && strings.Contains(string(out), "maps-api") {
			t.Errorf("role data runs maps-api")
		}
		if !strings.Contains(string(out), LabelRole+": "+role) {
			t.Errorf("role %s: role label missing", role)
		}
	}
	if _, err := RenderCompose(rel.Compose, RenderOptions{Role: "nope", Version: "1"}); err == nil {
		t.Error("unknown role accepted")
	}
}

// A tier1 data node publishes Postgres and Valkey on its private address
// only; the app node runs the app and web services, no database, and
// nothing of it waits for one.
func TestRenderComposeTierNodes(t *testing.T) {
	rel := testRelease(t)
	data, err := RenderCompose(rel.Compose, RenderOptions{Role: RoleData, Version: "1", Env: map[string]string{}, PeerAddress: "10.0.0.3"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"- 10.0.0.3:5432:5432", "- 10.0.0.3:6379:6379", LabelRole + ": data"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("data node: %q missing in\n%s", want, data)
		}
	}
	app, err := RenderCompose(rel.Compose, RenderOptions{Role: RoleApp, ServiceRoles: []string{RoleApp, RoleWeb}, Version: "1", Env: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{"router-http", "maps-api", "workspace-migrations"} {
		if !strings.Contains(string(app), "\n  "+svc+":\n") {
			t.Errorf("app node: service %s missing", svc)
		}
	}
	for _, gone := range []string{"\n  workspace-postgres:\n", "\n  valkey:\n", "workspace-postgres:\n        condition", "10.0.0.2:"} {
		if strings.Contains(string(app), gone) {
			t.Errorf("app node: %q still in the compose file:\n%s", gone, app)
		}
	}
	std, err := RenderCompose(rel.Compose, RenderOptions{Version: "1", Env: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(std), ":5432:5432") {
		t.Error("the standard node publishes Postgres")
	}
}

// A tier2 web node runs the router with a forwarder, under each app
// service's name, relaying its port to the app node's published one; the
// tier2 app node publishes those ports on its private address.
func TestRenderComposeTier2(t *testing.T) {
	rel := testRelease(t)
	web, err := RenderCompose(rel.Compose, RenderOptions{Role: RoleWeb, Version: "1", Env: map[string]string{},
		Forward: &Forward{To: "10.0.0.2", Roles: []string{RoleApp}, Carrier: "router-http", Binary: "/usr/local/bin/carto-appliance"}})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Image      string         `yaml:"image"`
			Entrypoint []string       `yaml:"entrypoint"`
			Networks   map[string]any `yaml:"networks"`
			Volumes    []string       `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(web, &doc); err != nil {
		t.Fatal(err)
	}
	for name, port := range map[string]string{"workspace-www": "13001", "maps-api": "13004", "notifier": "13007"} {
		f, ok := doc.Services[ForwarderPrefix+name]
		if !ok {
			t.Errorf("no forwarder for %s", name)
			continue
		}
		if want := []string{forwarderBinary, "forward", "--listen", ":3000", "--to", "10.0.0.2:" + port}; !slices.Equal(f.Entrypoint, want) {
			t.Errorf("%s's forwarder runs %v, want %v", name, f.Entrypoint, want)
		}
		if f.Image != doc.Services["router-http"].Image || !strings.Contains(fmt.Sprint(f.Networks), name) || !slices.Equal(f.Volumes, []string{"/usr/local/bin/carto-appliance:" + forwarderBinary + ":ro"}) {
			t.Errorf("%s's forwarder: %+v", name, f)
		}
	}
	if _, ok := doc.Services["maps-api"]; ok {
		t.Error("the web node runs maps-api")
	}
	if _, ok := doc.Services[ForwarderPrefix+"sql-worker"]; ok {
		t.Error("a forwarder for a service the router never reaches")
	}
	app, err := RenderCompose(rel.Compose, RenderOptions{Role: RoleApp, Version: "1", Env: map[string]string{}, PeerAddress: "10.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(app), "- 10.0.0.2:13004:3000") || strings.Contains(string(app), "router-http") {
		t.Errorf("tier2 app node:\n%s", app)
	}
	if _, err := RenderCompose([]byte("services:\n  a:\n    x-carto-role: app\n    x-carto-peer-port: \"x:1\"\n    image: i\n"), RenderOptions{Version: "1"}); err == nil {
		t.Error("a bad x-carto-peer-port was accepted")
	}
}

func TestPeerPorts(t *testing.T) {
	rel := testRelease(t)
	for role, want := range map[string][]int{RoleData: {5432, 6379}, RoleApp: {13001, 13002, 13003, 13004, 13005, 13006, 13007}, RoleWeb: nil} {
		got, err := PeerPorts(rel.Compose, role)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: %v, %v; want %v", role, got, err, want)
		}
	}
}

func TestRenderComposeRefusesBrokenTemplates(t *testing.T) {
	for name, tpl := range map[string]string{
		"not yaml":    "services: [",
		"no services": "volumes: {}\n",
		"no role":     "services:\n  a:\n    image: x\n",
	} {
		if _, err := RenderCompose([]byte(tpl), RenderOptions{Version: "1"}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLoadRefusesUnsupportedFields(t *testing.T) {
	dir := t.TempDir()
	compose := "services:\n  a:\n    image: x\n    privileged: true\n    devices: [\"/dev/fuse\"]\n"
	os.WriteFile(filepath.Join(dir, ComposeFileName), []byte(compose), 0o644)
	os.WriteFile(filepath.Join(dir, ".env"), nil, 0o600)
	_, err := Load(context.Background(), dir, "carto")
	if err == nil || !strings.Contains(err.Error(), `service "a"`) || !strings.Contains(err.Error(), "devices, privileged") {
		t.Fatalf("want a refusal naming the service and fields, got %v", err)
	}
}

func TestCreateConfigFromTemplate(t *testing.T) {
	dir, _ := writeProject(t, map[string]string{}, testDotenv+"ROUTER_HTTPS_PORT=\"9443\"\nROUTER_BIND_ADDRESS=\"127.0.0.1\"\n")
	p, err := Load(context.Background(), dir, "carto")
	if err != nil {
		t.Fatal(err)
	}
	router := p.Services["router-http"]
	cfg, err := toCreateConfig(p, router, map[string]string{"l": "v"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.Image != "registry.test:5000/carto/router-http:2025.11.3" {
		t.Errorf("image %q", cfg.Config.Image)
	}
	var bound []string
	for port, bs := range cfg.HostConfig.PortBindings {
		for _, b := range bs {
			bound = append(bound, b.HostIP.String()+":"+b.HostPort+"->"+port.String())
		}
	}
	if !strings.Contains(strings.Join(bound, " "), "127.0.0.1:9443->8443/tcp") {
		t.Errorf("port bindings %v lack 127.0.0.1:9443->8443/tcp", bound)
	}
	if cfg.HostConfig.LogConfig.Type != "local" || cfg.HostConfig.LogConfig.Config["max-size"] != "5M" {
		t.Errorf("log config %+v", cfg.HostConfig.LogConfig)
	}
	if cfg.HostConfig.RestartPolicy.Name != "unless-stopped" {
		t.Errorf("restart policy %+v", cfg.HostConfig.RestartPolicy)
	}
	// Short-syntax binds create a missing host dir, as with compose.
	if want := filepath.Join(dir, "certs", "router") + ":/etc/nginx/ssl:ro"; len(cfg.HostConfig.Binds) != 1 || cfg.HostConfig.Binds[0] != want {
		t.Errorf("binds %v: want [%s]", cfg.HostConfig.Binds, want)
	}
	if cfg.Config.Healthcheck == nil || cfg.Config.Healthcheck.Retries != 5 {
		t.Errorf("healthcheck %+v", cfg.Config.Healthcheck)
	}
	env := strings.Join(cfg.Config.Env, "\n")
	if !strings.Contains(env, "POSTGRES_ADMIN_PASSWORD=pa$word") {
		t.Errorf("env_file not resolved into the environment: %s", env)
	}

	valkey, err := toCreateConfig(p, p.Services["valkey"], nil)
	if err != nil {
		t.Fatal(err)
	}
	ep := valkey.Networking.EndpointsConfig["carto_default"]
	if ep == nil || !strings.Contains(strings.Join(ep.Aliases, ","), "redis") {
		t.Errorf("valkey endpoint %+v: want the redis alias on carto_default", ep)
	}
	if m := valkey.HostConfig.Mounts; len(m) != 1 || m[0].Source != "carto_valkey-data" {
		t.Errorf("valkey mounts %+v", m)
	}
	mig, _ := toCreateConfig(p, p.Services["workspace-migrations"], nil)
	if mig.HostConfig.RestartPolicy.Name != "no" {
		t.Errorf("one-shot migrations restart policy %+v", mig.HostConfig.RestartPolicy)
	}
}

// FuzzRenderCompose: a template either renders to YAML that parses again
// or is refused; never a panic.
func FuzzRenderCompose(f *testing.F) {
	rel, err := templates.Default()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(rel.Compose), "all", "0")
	f.Add("services:\n  a:\n    x-carto-role: web\n    image: i\n    depends_on: [b]\n", "web", "1")
	f.Fuzz(func(t *testing.T, tpl, role, scale string) {
		out, err := RenderCompose([]byte(tpl), RenderOptions{Role: role, Version: "1", Env: map[string]string{"LOCAL_POSTGRES_SCALE": scale}})
		if err != nil {
			return
		}
		var doc map[string]any
		if err := yaml.Unmarshal(out, &doc); err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, out)
		}
	})
}

func TestHostnames(t *testing.T) {
	names, err := Hostnames(testRelease(t).Compose)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(names, ",")
	for _, want := range []string{"maps-api", "redis", "valkey", "workspace-postgres", "router-http"} {
		if !strings.Contains(","+got+",", ","+want+",") {
			t.Errorf("hostnames %s lack %s", got, want)
		}
	}
}
