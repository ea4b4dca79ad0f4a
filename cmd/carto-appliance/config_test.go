package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/supervisor"
)

// config set writes appliance.yaml itself and applies nothing unless
// asked; --apply runs config apply's operation (through the agent here).
// A bad name or value is a usage error with nothing written.
func TestConfigSetShowGet(t *testing.T) {
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "c"), StateDir: filepath.Join(dir, "s")}
	os.MkdirAll(paths.ConfigDir, 0o700)
	file := paths.File(config.ConfigFileName)
	if err := config.Save(file, config.Config{Domain: "carto.example.com"}); err != nil {
		t.Fatal(err)
	}
	applied := 0
	serveAgent(t, paths, supervisor.Workflows{
		Apply: func(context.Context, installer.Options) (*installer.Result, error) {
			applied++
			return &installer.Result{}, nil
		},
	})
	cli := func(args ...string) int {
		return run(context.Background(), append(args, "--config-dir", paths.ConfigDir, "--state-dir", paths.StateDir))
	}
	if code := cli("config", "set", "router.https_port=8443"); code != exitOK || applied != 0 {
		t.Errorf("set: exit %d, applied %d times", code, applied)
	}
	before, _ := os.ReadFile(file)
	for _, args := range [][]string{
		{"config", "set", "router.https_port=abc"},
		{"config", "set", "domain=other.example.com", "nope=1"},
		{"config", "set", "router.https_port"},
		{"config", "set"},
		{"config", "set", "layout=tier1"},
		{"config", "get", "nope"},
		{"config", "get"},
	} {
		if code := cli(args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Error("a refused set changed appliance.yaml")
	}
	for _, args := range [][]string{{"config", "show"}, {"config", "show", "--json"}, {"config", "get", "router.https_port"}, {"config", "get", "--json", "upgrade.channel"}} {
		if code := cli(args...); code != exitOK {
			t.Errorf("%v: exit %d", args, code)
		}
	}
	if code := cli("config", "set", "--apply", "--yes", "domain=other.example.com"); code != exitOK || applied != 1 {
		t.Errorf("set --apply: exit %d, applied %d times", code, applied)
	}
	// The agent reads the backup section where it uses it: nothing to apply.
	if code := cli("config", "set", "--apply", "backup.keep=3"); code != exitOK || applied != 1 {
		t.Errorf("set --apply of a live setting: exit %d, applied %d times", code, applied)
	}
	cfg, _, err := config.Load(file)
	if err != nil || cfg.Router.HTTPSPort != 8443 || cfg.Domain != "other.example.com" {
		t.Errorf("appliance.yaml: %+v %v", cfg, err)
	}
	empty := t.TempDir()
	if code := run(context.Background(), []string{"config", "set", "domain=x.example.com", "--config-dir", empty, "--state-dir", empty}); code != exitError {
		t.Errorf("set with nothing installed: exit %d", code)
	}
}

func TestPrintSettings(t *testing.T) {
	var b bytes.Buffer
	printSettings(&b, []installer.Setting{
		{Name: "domain", Value: "carto.example.com", Set: true},
		{Name: "proxy.url", Value: ""},
		{Name: "router.https_port", Value: "443"},
	})
	want := "NAME               VALUE\n" +
		"domain             carto.example.com\n" +
		"proxy.url          - (default)\n" +
		"router.https_port  443 (default)\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	printSetResult(&b, &installer.SetResult{File: "/opt/carto/appliance.yaml", Changed: true, Changes: []installer.SettingChange{
		{Name: "router.https_port", Old: installer.Setting{Value: "443"}, New: installer.Setting{Value: "8443", Set: true}},
	}}, false)
	want = "router.https_port: 443 (default) -> 8443\n" +
		"Saved /opt/carto/appliance.yaml. Run `carto-appliance config apply` to apply it.\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	console := installer.SettingChange{Name: "console.port", Old: installer.Setting{Value: "9443"}, New: installer.Setting{Value: "9444", Set: true}, Live: true}
	b.Reset()
	printSetResult(&b, &installer.SetResult{File: "/opt/carto/appliance.yaml", Changed: true, Changes: []installer.SettingChange{console}}, false)
	want = "console.port: 9443 (default) -> 9444\n" +
		"Saved /opt/carto/appliance.yaml; the agent takes it by itself (no apply needed).\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	printSetResult(&b, &installer.SetResult{File: "/opt/carto/appliance.yaml", Changed: true, Changes: []installer.SettingChange{
		console, {Name: "domain", Old: installer.Setting{Value: "a.example.com", Set: true}, New: installer.Setting{Value: "b.example.com", Set: true}},
	}}, false)
	want = "console.port: 9443 (default) -> 9444\n" +
		"domain: a.example.com -> b.example.com\n" +
		"Saved /opt/carto/appliance.yaml. Run `carto-appliance config apply` to apply domain; the agent takes the rest by itself.\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
