package config

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/cartodb/carto-appliance/proxy"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// A version 1 file (written before schema_version existed) loads with
// every setting, and is saved again at the current version: the golden
// file is what Save writes.
func TestMigrateV1Golden(t *testing.T) {
	in, err := os.ReadFile("testdata/v1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	no := false
	want := Config{
		Layout: "standard", Domain: "carto.example.com", Registry: "registry.example.com:5000/carto", Project: "carto-2",
		Router:     RouterConfig{HTTPPort: 8080, HTTPSPort: 8443, BindAddress: "10.0.0.5"},
		Proxy:      proxy.Settings{URL: "https://proxy.corp:3129", NoProxy: []string{".corp.example"}, CACert: proxy.CAFileName, RejectUnauthorized: &no},
		Warehouses: []string{"snowflake"},
		TLS:        TLSConfig{Mode: TLSACME, ACME: &ACMEConfig{Directory: "https://ca.corp/acme/directory", Email: "ops@example.com", CACert: ACMECAFileName}},
		Network:    NetworkConfig{AllowedSources: []string{"10.0.0.0/8"}},
		License:    LicenseConfig{Server: "https://licenses.example.com/v1/check", GraceDays: 7},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("v1 loaded as\n%+v\nwant\n%+v", got, want)
	}
	out, err := got.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	golden := "testdata/v1-saved-as-v2.golden.yaml"
	if *update {
		os.WriteFile(golden, out, 0o644)
	}
	if g, _ := os.ReadFile(golden); string(g) != string(out) {
		t.Errorf("saved:\n%s\nwant (%s):\n%s", out, golden, g)
	}
	// What Save wrote loads as the same settings, without migrating.
	again, err := Parse(out)
	if err != nil || !reflect.DeepEqual(again, want) {
		t.Errorf("reloaded: %+v %v", again, err)
	}
}

func TestMigrationsArePureAndComplete(t *testing.T) {
	if len(migrations) != SchemaVersion-1 {
		t.Fatalf("%d migrations for schema version %d: every version needs its step", len(migrations), SchemaVersion)
	}
	in := []byte("domain: carto.example.com\n")
	root, _ := parseMapping(t, in)
	before := len(root.Content)
	out, err := migrate1to2(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(root.Content) != before {
		t.Error("migrate1to2 changed its input")
	}
	if v, err := schemaVersion(out); err != nil || v != 2 {
		t.Errorf("after 1→2: schema_version %d %v", v, err)
	}
}

func TestSchemaVersionChecks(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"schema_version: 3\ndomain: carto.example.com\n", "appliance.yaml schema_version 3 is newer than this carto-appliance understands (2): upgrade the binary"},
		{"schema_version: 0\n", "schema_version \"0\""},
		{"schema_version: two\n", "schema_version \"two\""},
		{"- a\n- b\n", "want settings as key: value lines"},
		{"schema_version: 1\ndomian: x\n", "domian"},
	} {
		if _, err := Parse([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error with %q", tc.in, err, tc.want)
		}
	}
	for _, ok := range []string{"", "# only a comment\n", "schema_version: 1\n", "schema_version: 2\nproject: x\n"} {
		if _, err := Parse([]byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	// The refusal names the file and changes nothing.
	path := filepath.Join(t.TempDir(), ConfigFileName)
	newer := []byte("schema_version: 9\n")
	os.WriteFile(path, newer, 0o600)
	if _, _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Load of a newer file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(newer) {
		t.Errorf("the newer file was changed: %q", b)
	}
}

func parseMapping(t *testing.T, b []byte) (*yaml.Node, error) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	return mapping(&doc)
}
