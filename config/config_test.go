package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/proxy"
)

var (
	tier1Nodes = map[string]string{"app": "10.0.0.2", "data": "10.0.0.3"}
	tier2Nodes = map[string]string{"web": "10.0.0.1", "app": "10.0.0.2", "data": "10.0.0.3"}
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" means valid
	}{
		{"zero is the default", Config{}, ""},
		{"full", Config{Domain: "carto.example.com", Registry: "registry.example.com:5000/carto", Project: "carto-2", Router: RouterConfig{HTTPPort: 8080, HTTPSPort: 8443, BindAddress: "10.0.0.5"}}, ""},
		{"tier1 app", Config{Layout: "tier1", Role: "app", Nodes: tier1Nodes}, ""},
		{"tier1 data", Config{Layout: "tier1", Role: "data", Nodes: tier1Nodes}, ""},
		{"tier1 without role", Config{Layout: "tier1", Nodes: tier1Nodes}, "role \"\": a tier1 node is one of data, app"},
		{"tier1 web role", Config{Layout: "tier1", Role: "web", Nodes: tier1Nodes}, "role \"web\""},
		{"tier1 node missing", Config{Layout: "tier1", Role: "app", Nodes: map[string]string{"app": "10.0.0.2"}}, "no address for the data node"},
		{"tier1 node by name", Config{Layout: "tier1", Role: "app", Nodes: map[string]string{"app": "10.0.0.2", "data": "db.corp"}}, "nodes data=\"db.corp\""},
		{"tier1 loopback", Config{Layout: "tier1", Role: "app", Nodes: map[string]string{"app": "127.0.0.1", "data": "10.0.0.3"}}, "nodes app=\"127.0.0.1\""},
		{"tier1 same address", Config{Layout: "tier1", Role: "app", Nodes: map[string]string{"app": "10.0.0.2", "data": "10.0.0.2"}}, "data and app are both 10.0.0.2"},
		{"tier1 extra node", Config{Layout: "tier1", Role: "app", Nodes: map[string]string{"app": "10.0.0.2", "data": "10.0.0.3", "web": "10.0.0.4"}}, "nodes \"web\": a tier1 layout has the roles data, app only"},
		{"tier1 data with allow-list", Config{Layout: "tier1", Role: "data", Nodes: tier1Nodes, Network: NetworkConfig{AllowedSources: []string{"10.0.0.0/8"}}}, "the data node publishes no router"},
		{"tier1 data with acme", Config{Layout: "tier1", Role: "data", Nodes: tier1Nodes, TLS: TLSConfig{Mode: TLSACME, ACME: &ACMEConfig{Email: "a@example.com"}}}, "the data node serves no router"},
		{"tier1 bad peer port", Config{Layout: "tier1", Role: "data", Nodes: tier1Nodes, Peer: PeerConfig{Port: 70000}}, "peer.port 70000"},
		{"tier2 web", Config{Layout: "tier2", Role: "web", Nodes: tier2Nodes}, ""},
		{"tier2 web missing", Config{Layout: "tier2", Role: "web", Nodes: tier1Nodes}, "no address for the web node"},
		{"unknown layout", Config{Layout: "tier3"}, "layout \"tier3\": use one of standard, tier1, tier2"},
		{"standard with nodes", Config{Nodes: tier1Nodes}, "role and nodes are for the tier layouts"},
		{"bad domain", Config{Domain: "https://carto.example.com"}, "domain \"https://carto.example.com\""},
		{"bad registry", Config{Registry: "https://gcr.io/x"}, "registry \"https://gcr.io/x\""},
		{"bad project", Config{Project: "Carto"}, "project \"Carto\""},
		{"port range", Config{Router: RouterConfig{HTTPSPort: 70000}}, "router.https_port 70000"},
		{"same ports", Config{Router: RouterConfig{HTTPPort: 443}}, "both 443"},
		{"bad bind", Config{Router: RouterConfig{BindAddress: "eth0"}}, "router.bind_address \"eth0\""},
		{"proxy", Config{Proxy: proxy.Settings{URL: "https://proxy:3129", NoProxy: []string{".corp"}, CACert: proxy.CAFileName}, Warehouses: []string{"snowflake"}}, ""},
		{"proxy with password", Config{Proxy: proxy.Settings{URL: "http://u:p@proxy:3128"}}, "password authentication is not supported"},
		{"proxy bad no_proxy", Config{Proxy: proxy.Settings{URL: "http://proxy:3128", NoProxy: []string{"http://x"}}}, "no-proxy entry"},
		{"proxy CA elsewhere", Config{Proxy: proxy.Settings{URL: "http://proxy:3128", CACert: "/etc/ca.pem"}}, "proxy.ca_cert"},
		{"no_proxy without url", Config{Proxy: proxy.Settings{NoProxy: []string{"x"}}}, "need proxy.url"},
		{"unknown warehouse", Config{Warehouses: []string{"oracle"}}, "warehouse \"oracle\""},
		{"acme", Config{TLS: TLSConfig{Mode: TLSACME, ACME: &ACMEConfig{Email: "ops@example.com"}}}, ""},
		{"acme without e-mail", Config{TLS: TLSConfig{Mode: TLSACME}}, "tls.acme.email: acme mode needs the e-mail address the CA writes to about the certificates"},
		{"acme over plain http", Config{TLS: TLSConfig{Mode: TLSACME, ACME: &ACMEConfig{Email: "ops@example.com", Directory: "http://ca.corp/dir"}}}, "tls.acme.directory \"http://ca.corp/dir\": give the ACME directory's https:// URL"},
		{"acme settings kept in another mode", Config{TLS: TLSConfig{Mode: TLSSelfSigned, ACME: &ACMEConfig{Directory: "http://x"}}}, ""},
	}
	for _, c := range cases {
		err := c.cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestLoadConfigRefusesUnknownKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "appliance.yaml")
	os.WriteFile(path, []byte("layout: standard\ndomian: carto.example.com\n"), 0o600)
	_, _, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), "domian") || !strings.Contains(err.Error(), path) {
		t.Fatalf("want an error naming the file and the unknown key, got %v", err)
	}
}

func TestConfigRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "appliance.yaml")
	in := Config{Domain: "carto.example.com", Router: RouterConfig{HTTPSPort: 8443}}
	if err := Save(path, in); err != nil {
		t.Fatal(err)
	}
	out, found, err := Load(path)
	if err != nil || !found || !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip: %+v %v %v, want %+v", out, found, err, in)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("appliance.yaml mode %v, want 0600", fi.Mode().Perm())
	}
	if _, found, err := Load(filepath.Join(t.TempDir(), "none.yaml")); found || err != nil {
		t.Errorf("missing file: found=%v err=%v", found, err)
	}
}

func TestUpgradeSettings(t *testing.T) {
	for _, tc := range []struct {
		up    UpgradeConfig
		field string // "" when valid
		want  string
	}{
		{UpgradeConfig{}, "", ""},
		{UpgradeConfig{ChannelURL: "https://mirror.corp/carto", Channel: "lts-2026"}, "", ""},
		{UpgradeConfig{ChannelURL: "http://mirror.corp/carto"}, "upgrade.channel_url", "https only: use https://mirror.corp/carto"},
		{UpgradeConfig{ChannelURL: "https://u:secret@mirror.corp/"}, "upgrade.channel_url", "remove the user name and password"},
		{UpgradeConfig{ChannelURL: "mirror.corp"}, "upgrade.channel_url", "not a URL"},
		{UpgradeConfig{Channel: "Stable"}, "upgrade.channel", "lowercase"},
		{UpgradeConfig{Channel: "../x"}, "upgrade.channel", "lowercase"},
		{UpgradeConfig{KeepBackups: 5}, "", ""},
		{UpgradeConfig{KeepBackups: -1}, "upgrade.keep_backups", "keep 1 to 100"},
		{UpgradeConfig{KeepBackups: 101}, "upgrade.keep_backups", "keep 1 to 100"},
	} {
		err := Config{Upgrade: tc.up}.Validate()
		var fe *FieldError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%+v: %v", tc.up, err)
		case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want %s with %q", tc.up, err, tc.field, tc.want)
		case err != nil && strings.Contains(err.Error(), "secret"):
			t.Errorf("the error shows the password: %v", err)
		}
	}
	if c := (UpgradeConfig{}); c.BaseURL() != DefaultChannelURL || c.ChannelName() != DefaultChannel || c.Backups() != DefaultKeepBackups {
		t.Errorf("defaults: %s %s", c.BaseURL(), c.ChannelName())
	}
}

func TestLayoutRolesAndOrder(t *testing.T) {
	app := Config{Layout: LayoutTier1, Role: RoleApp, Nodes: tier1Nodes}
	data := Config{Layout: LayoutTier1, Role: RoleData, Nodes: tier1Nodes}
	std := Config{}
	for _, c := range []struct {
		name      string
		got, want []string
	}{
		{"app runs app and web", app.ServiceRoles(), []string{"app", "web"}},
		{"data runs data", data.ServiceRoles(), []string{"data"}},
		{"standard runs all", std.ServiceRoles(), []string{"data", "app", "web"}},
		{"app depends on data", app.Dependencies(), []string{"data"}},
		{"data depends on none", data.Dependencies(), nil},
		{"data's dependents", data.Dependents(), []string{"app"}},
		{"app's peers", app.Peers(), []string{"10.0.0.3"}},
		{"data's peers", data.Peers(), []string{"10.0.0.2"}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if !app.ServesRouter() || data.ServesRouter() || !std.ServesRouter() {
		t.Errorf("ServesRouter: app %v data %v standard %v, want true false true", app.ServesRouter(), data.ServesRouter(), std.ServesRouter())
	}
	web := Config{Layout: LayoutTier2, Role: RoleWeb, Nodes: tier2Nodes}
	app2 := Config{Layout: LayoutTier2, Role: RoleApp, Nodes: tier2Nodes}
	data2 := Config{Layout: LayoutTier2, Role: RoleData, Nodes: tier2Nodes}
	if !web.ServesRouter() || app2.ServesRouter() || !slices.Equal(app2.ServiceRoles(), []string{"app"}) || !slices.Equal(web.Dependencies(), []string{"data", "app"}) {
		t.Errorf("tier2: web serves router %v, app %v runs %v, web depends on %v", web.ServesRouter(), app2.ServesRouter(), app2.ServiceRoles(), web.Dependencies())
	}
	if data2.Clients() != "app" || app2.Clients() != "web" || web.Clients() != "" || app.Clients() != "" {
		t.Errorf("clients: data %q app %q web %q tier1 app %q", data2.Clients(), app2.Clients(), web.Clients(), app.Clients())
	}
	if !app2.ChecksLicenseOnline() || web.ChecksLicenseOnline() || data2.ChecksLicenseOnline() || !std.ChecksLicenseOnline() {
		t.Error("the licence is checked online by the app node (and the standard node) only")
	}
	if app.Address() != "10.0.0.2" || app.NodeCount() != 2 || std.NodeCount() != 1 || app.PeerPort() != DefaultPeerPort {
		t.Errorf("Address %q NodeCount %d/%d PeerPort %d", app.Address(), app.NodeCount(), std.NodeCount(), app.PeerPort())
	}
}
