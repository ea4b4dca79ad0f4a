package config

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// settingSamples are valid values of every setting Set may change: a new
// field fails TestEverySettingRoundTrips until it has one here.
var settingSamples = map[string]string{
	"backup.every":              "24h",
	"console.port":              "9444",
	"console.bind_address":      "10.0.0.5",
	"backup.keep":               "3",
	"backup.dir":                "/srv/carto-backups",
	"backup.passphrase_file":    "/etc/carto-backup.pass",
	"domain":                    "carto.example.com",
	"registry":                  "registry.example.com:5000/carto",
	"project":                   "carto-2",
	"router.http_port":          "8080",
	"router.https_port":         "8443",
	"router.bind_address":       "10.0.0.5",
	"proxy.url":                 "http://proxy.corp:3128",
	"proxy.no_proxy":            ".corp.example,10.0.0.0/8",
	"proxy.reject_unauthorized": "false",
	"warehouses":                "snowflake,bigquery",
	"network.allowed_sources":   "10.0.0.0/8,192.0.2.10",
	"license.server":            "https://licenses.example.com/v1/check",
	"license.grace_days":        "30",
	"upgrade.channel_url":       "https://mirror.example.com/self-hosted",
	"upgrade.channel":           "beta",
	"upgrade.keep_backups":      "5",
}

func fieldOf(t *testing.T, err error) string {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("want a *FieldError, got %v", err)
	}
	return fe.Field
}

func TestSettingNames(t *testing.T) {
	names := SettingNames()
	if !slices.IsSorted(names) {
		t.Errorf("not sorted: %v", names)
	}
	for _, want := range []string{"domain", "router.https_port", "proxy.url", "proxy.no_proxy", "network.allowed_sources", "tls.acme.email", "upgrade.channel", "peer.port"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s missing from %v", want, names)
		}
	}
	for _, n := range names {
		if strings.HasPrefix(n, "schema_version") || strings.HasSuffix(n, ".") {
			t.Errorf("not a setting: %q", n)
		}
	}
}

// Drift guard: every setting either round-trips through Set, Get, the
// file and Validate, or is refused naming the command that changes it.
func TestEverySettingRoundTrips(t *testing.T) {
	var c Config
	for _, name := range SettingNames() {
		if why := refusal(name); why != "" {
			before := c
			err := c.Set(name, "x")
			if fieldOf(t, err) != name || !strings.Contains(err.Error(), why) {
				t.Errorf("%s: refused with %v", name, err)
			}
			if !reflect.DeepEqual(c, before) {
				t.Errorf("%s: a refused setting changed the config", name)
			}
			continue
		}
		sample, ok := settingSamples[name]
		if !ok {
			t.Errorf("%s: no sample value: add one to settingSamples (and make sure Set parses its kind)", name)
			continue
		}
		if err := c.Set(name, sample); err != nil {
			t.Errorf("%s=%s: %v", name, sample, err)
			continue
		}
		if v, set, err := c.Get(name); v != sample || !set || err != nil {
			t.Errorf("%s: got %q set=%v %v, want %q", name, v, set, err, sample)
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("the samples together: %v", err)
	}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatalf("%v in:\n%s", err, b)
	}
	for name, sample := range settingSamples {
		if v, _, _ := back.Get(name); v != sample {
			t.Errorf("%s after the file: %q, want %q", name, v, sample)
		}
		if err := back.Set(name, ""); err != nil {
			t.Errorf("%s cleared: %v", name, err)
		}
		if _, set, _ := back.Get(name); set {
			t.Errorf("%s: still set after an empty value", name)
		}
	}
	if !reflect.DeepEqual(back, Config{}) {
		t.Errorf("everything cleared: %+v", back)
	}
}

// Every refusal names a setting (or a section of them) that exists.
func TestRefusalsNameSettings(t *testing.T) {
	names := SettingNames()
	for key := range setElsewhere {
		if !slices.ContainsFunc(names, func(n string) bool { return n == key || strings.HasSuffix(key, ".") && strings.HasPrefix(n, key) }) {
			t.Errorf("setElsewhere[%q] names no setting", key)
		}
	}
	for _, name := range []string{"tls.mode", "tls.acme.email", "tls.acme.directory"} {
		if !strings.Contains(refusal(name), "carto-appliance certs") {
			t.Errorf("%s: %q does not point to certs", name, refusal(name))
		}
	}
	if !strings.Contains(refusal("proxy.ca_cert"), "carto-appliance proxy set") {
		t.Errorf("proxy.ca_cert: %q", refusal("proxy.ca_cert"))
	}
	for _, name := range []string{"layout", "role", "nodes", "peer.port"} {
		if !strings.Contains(refusal(name), "set at install; changing it") && !strings.Contains(refusal(name), "set at install; changing them") {
			t.Errorf("%s: %q", name, refusal(name))
		}
	}
}

func TestGetShowsTheDefaultInForce(t *testing.T) {
	c := Config{Domain: "carto.example.com", Router: RouterConfig{HTTPSPort: 8443}}
	for _, tc := range []struct {
		name, want string
		set        bool
	}{
		{"domain", "carto.example.com", true},
		{"router.https_port", "8443", true},
		{"router.http_port", "80", false},
		{"layout", LayoutStandard, false},
		{"project", "carto", false},
		{"tls.mode", TLSSelfSigned, false},
		{"tls.acme.directory", "https://acme-v02.api.letsencrypt.org/directory", false},
		{"tls.acme.email", "", false},
		{"proxy.url", "", false},
		{"proxy.reject_unauthorized", "true", false},
		{"peer.port", "9710", false},
		{"license.server", DefaultLicenseServer, false},
		{"license.grace_days", "14", false},
		{"upgrade.channel", DefaultChannel, false},
		{"upgrade.keep_backups", "3", false},
		{"nodes", "", false},
	} {
		v, set, err := c.Get(tc.name)
		if v != tc.want || set != tc.set || err != nil {
			t.Errorf("%s: %q set=%v %v, want %q set=%v", tc.name, v, set, err, tc.want, tc.set)
		}
	}
	if c.TLS.ACME != nil {
		t.Error("Get changed the config")
	}
	tier := Config{Layout: LayoutTier1, Role: RoleApp, Nodes: tier1Nodes}
	if v, set, _ := tier.Get("nodes"); v != "app=10.0.0.2,data=10.0.0.3" || !set {
		t.Errorf("nodes: %q %v", v, set)
	}
}

func TestSetRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        []string // substrings of the error
	}{
		{"router.htps_port", "8443", []string{`no setting "router.htps_port"`, "router.https_port"}},
		{"https_port", "8443", []string{"router.https_port"}},
		{"tls", "acme", []string{"tls.mode", "tls.acme.email"}},
		{"nonsense.key", "1", []string{"the settings are", "domain", "upgrade.keep_backups"}},
		{"router.http_port", "80a", []string{"router.http_port", `"80a"`, "whole number"}},
		{"license.grace_days", "1.5", []string{"whole number"}},
		{"proxy.reject_unauthorized", "yes", []string{"true or false"}},
		{"layout", "tier1", []string{"set at install; changing it is not supported"}},
		{"tls.acme.email", "ops@example.com", []string{"carto-appliance certs acme"}},
		{"proxy.ca_cert", "proxy-ca.pem", []string{"carto-appliance proxy set"}},
	} {
		c := Config{Domain: "carto.example.com"}
		err := c.Set(tc.name, tc.value)
		if err == nil {
			t.Errorf("%s=%s accepted", tc.name, tc.value)
			continue
		}
		if fieldOf(t, err) != tc.name {
			t.Errorf("%s: error names %q", tc.name, fieldOf(t, err))
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s=%s: %q lacks %q", tc.name, tc.value, err, w)
			}
		}
		if !reflect.DeepEqual(c, Config{Domain: "carto.example.com"}) {
			t.Errorf("%s=%s changed the config: %+v", tc.name, tc.value, c)
		}
	}
	if _, _, err := (Config{}).Get("nope"); fieldOf(t, err) != "nope" {
		t.Errorf("get of an unknown setting: %v", err)
	}
}

func TestSetListsAndSections(t *testing.T) {
	var c Config
	if err := c.Set("proxy.no_proxy", " .a.example , ,10.0.0.0/8"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Proxy.NoProxy, []string{".a.example", "10.0.0.0/8"}) {
		t.Errorf("no_proxy %q", c.Proxy.NoProxy)
	}
	if err := c.Set("proxy.no_proxy", ""); err != nil || c.Proxy.NoProxy != nil {
		t.Errorf("cleared: %q %v", c.Proxy.NoProxy, err)
	}
	if err := c.Set("proxy.reject_unauthorized", "FALSE"); err != nil || c.Proxy.RejectUnauthorized == nil || *c.Proxy.RejectUnauthorized {
		t.Errorf("reject_unauthorized: %v %v", c.Proxy.RejectUnauthorized, err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{{"", "abc", 3}, {"domain", "domain", 0}, {"domian", "domain", 2}, {"kitten", "sitting", 3}} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("%q %q: %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
