package installer

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/proxy"
)

// notInEnv are the appliance.yaml settings the stack does not see in .env,
// each with where it goes instead.
var notInEnv = map[string]string{
	"layout":                  "with role and nodes: the services the node runs, and the app node's database hosts (TestTierAppNodeEnv)",
	"role":                    "with layout and nodes (TestTierAppNodeEnv)",
	"nodes":                   "with layout and role (TestTierAppNodeEnv)",
	"peer.port":               "the agents' peer API",
	"backup.every":            "the agent's scheduled backups",
	"console.port":            "the agent's admin console",
	"console.bind_address":    "the agent's admin console",
	"console.password_hash":   "the agent's admin console",
	"backup.keep":             "the agent's scheduled backups",
	"backup.dir":              "the agent's scheduled backups",
	"backup.passphrase_file":  "the agent's scheduled backups",
	"project":                 "the compose project name (container names and labels)",
	"tls.acme.directory":      "the ACME client's",
	"tls.acme.email":          "the ACME client's",
	"tls.acme.ca_cert":        "the ACME client's",
	"network.allowed_sources": "the host firewall's",
	"license.server":          "the licence check's",
	"license.grace_days":      "the licence check's",
	"upgrade.channel_url":     "the upgrade check's",
	"upgrade.channel":         "the upgrade check's",
	"upgrade.keep_backups":    "the upgrade's backup retention",
}

// appliedOtherwise are the settings of notInEnv that `config apply` still
// applies (the compose project, the host firewall, the certificate, the
// node's place in a layout); the rest of notInEnv is read where it is used
// and takes effect by itself (config.Live).
var appliedOtherwise = []string{
	"layout", "role", "nodes", "peer.port", "project", "network.allowed_sources",
	"tls.acme.directory", "tls.acme.email", "tls.acme.ca_cert",
}

// samples are values that must change .env, for the fields where any
// other value would not (a mode, a list of known names).
var samples = map[string]any{
	"tls.mode":                  config.TLSOffload,
	"warehouses":                []string{"snowflake"},
	"proxy.url":                 "http://other.corp:3128",
	"proxy.ca_cert":             proxy.CAFileName,
	"proxy.reject_unauthorized": new(bool),
	"nodes":                     map[string]string{"app": "10.0.0.2", "data": "10.0.0.3"},
}

// leafFields lists every setting of t by its appliance.yaml name, with
// its index path; a section (struct or pointer to one) is walked.
func leafFields(t reflect.Type, prefix string, index []int) map[string][]int {
	out := map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if prefix != "" {
			name = prefix + "." + name
		}
		idx := append(slices.Clone(index), i)
		ft := f.Type
		if ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			for k, v := range leafFields(ft, name, idx) {
				out[k] = v
			}
			continue
		}
		out[name] = idx
	}
	return out
}

// set puts a sample value into the field at idx of v (a Config),
// allocating the sections on the way.
func set(t *testing.T, v reflect.Value, name string, idx []int) {
	t.Helper()
	for _, i := range idx[:len(idx)-1] {
		v = v.Field(i)
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
	}
	f := v.Field(idx[len(idx)-1])
	if s, ok := samples[name]; ok {
		f.Set(reflect.ValueOf(s))
		return
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString("probe.example.com")
	case reflect.Int:
		f.SetInt(8081)
	case reflect.Slice:
		f.Set(reflect.ValueOf([]string{".probe.example.com"}))
	default:
		t.Fatalf("%s: no sample for a %s: add one to samples", name, f.Type())
	}
}

// Drift guard: every appliance.yaml setting reaches .env or is listed in
// notInEnv with where it goes, so a new field cannot be added without
// deciding how the stack sees it.
func TestEveryConfigFieldReachesEnv(t *testing.T) {
	// The proxy's own settings matter only with a proxy: the base has one.
	base := config.Config{Proxy: proxy.Settings{URL: "https://proxy.corp:3129"}}
	envOf := func(c config.Config) []string {
		kv, _ := envSettings(c, []string{"maps-api"})
		return kv
	}
	want := envOf(base)
	fields := leafFields(reflect.TypeFor[config.Config](), "", nil)
	for name, idx := range fields {
		c := base
		if c.TLS.ACME != nil {
			t.Fatal("base config shares a section")
		}
		set(t, reflect.ValueOf(&c).Elem(), name, idx)
		changed := !slices.Equal(envOf(c), want)
		why, listed := notInEnv[name]
		switch {
		case !changed && !listed:
			t.Errorf("appliance.yaml %s does not reach .env: map it in envSettings, or list it in notInEnv with where it goes", name)
		case changed && listed:
			t.Errorf("appliance.yaml %s reaches .env but is listed as not (%s)", name, why)
		}
	}
	for name := range notInEnv {
		if _, ok := fields[name]; !ok {
			t.Errorf("notInEnv lists %s, which appliance.yaml does not have", name)
		}
	}

	// And the values are the ones set.
	c := config.Config{Domain: "d.example.com", Registry: "r.example.com/x", Router: config.RouterConfig{HTTPPort: 81, HTTPSPort: 444, BindAddress: "127.0.0.2"}}
	got := map[string]string{}
	kv := envOf(c)
	for i := 0; i+1 < len(kv); i += 2 {
		got[kv[i]] = kv[i+1]
	}
	for k, v := range map[string]string{
		"SELFHOSTED_DOMAIN": "d.example.com", "DOCKER_REGISTRY_BASE_PATH": "r.example.com/x",
		"ROUTER_HTTP_PORT": "81", "ROUTER_HTTPS_PORT": "444", "ROUTER_BIND_ADDRESS": "127.0.0.2",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// A tier1 app node reaches Postgres and Valkey on the data node's private
// address, directly (never through the proxy); the data node's .env names
// no other host.
func TestTierAppNodeEnv(t *testing.T) {
	nodes := map[string]string{"app": "10.0.0.2", "data": "10.0.0.3"}
	app := config.Config{Layout: config.LayoutTier1, Role: config.RoleApp, Nodes: nodes, Proxy: proxy.Settings{URL: "http://proxy.corp:3128"}}
	kv, _ := envSettings(app, []string{"maps-api"})
	got := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		got[kv[i]] = kv[i+1]
	}
	if got["WORKSPACE_POSTGRES_HOST"] != "10.0.0.3" || got["REDIS_HOST"] != "10.0.0.3" {
		t.Errorf("app node database hosts: %q %q", got["WORKSPACE_POSTGRES_HOST"], got["REDIS_HOST"])
	}
	for _, k := range []string{"NO_PROXY", "no_proxy"} {
		if !slices.Contains(strings.Split(got[k], ","), "10.0.0.3") {
			t.Errorf("%s lacks the data node: %q", k, got[k])
		}
	}
	data := app
	data.Role = config.RoleData
	kv, _ = envSettings(data, nil)
	if slices.Contains(kv, "WORKSPACE_POSTGRES_HOST") {
		t.Errorf("data node's .env names a database host: %v", kv)
	}
}

// Drift guard: config set tells the operator a live setting needs no
// apply, so none may reach .env or anything else config apply renders.
func TestLiveSettingsAreTheOnesApplyLeavesAlone(t *testing.T) {
	for _, name := range config.SettingNames() {
		_, outside := notInEnv[name]
		want := outside && !slices.Contains(appliedOtherwise, name)
		if got := config.Live(name); got != want {
			t.Errorf("config.Live(%q) = %t; want %t (in notInEnv: %t; applied otherwise: %t)", name, got, want, outside, slices.Contains(appliedOtherwise, name))
		}
	}
}
