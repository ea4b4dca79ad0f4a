package installer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/preflight"
	"github.com/cartodb/carto-appliance/stack"
)

// status is the engine's answer with what the appliance knows besides:
// the services the operator holds, the agent's restarts, the certificate,
// the proxy; one service not healthy makes the stack unhealthy.
func TestGetStatus(t *testing.T) {
	paths, f := applied(t, config.Config{Network: config.NetworkConfig{AllowedSources: []string{"10.0.0.0/8"}}})
	st, err := GetStatus(t.Context(), paths)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Healthy || st.Domain != "carto.example.com" || st.URL != "https://carto.example.com/" || st.Project != "carto" ||
		st.Version != carried(t).Manifest.Version || st.Certificate.Mode != config.TLSSelfSigned || !slices.Equal(st.AllowedSources, []string{"10.0.0.0/8"}) {
		t.Errorf("status %+v", st)
	}
	// No licence installed: status says so, the stack runs on.
	if st.License == nil || st.License.State != license.Invalid {
		t.Errorf("licence %+v", st.License)
	}

	if err := SaveAgentState(paths, AgentState{Services: map[string]AgentServiceState{"maps-api": {Restarts: 4, CrashLoop: true}}}); err != nil {
		t.Fatal(err)
	}
	f.Statuses = map[string]stack.ServiceStatus{"notifier": {Name: "notifier", State: "running", Health: "starting"}}
	st, err = GetStatus(t.Context(), paths)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(st.Services, func(s stack.ServiceStatus) bool { return s.Name == "maps-api" })
	if st.Healthy || i < 0 || st.Services[i].AgentRestarts != 4 || !st.Services[i].CrashLoop {
		t.Errorf("status %+v", st)
	}

	// A container the engine still calls starting, whose healthcheck the
	// agent ran and saw pass on this very run, is healthy; on another
	// run (restarted since), it is starting still.
	started := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	run := &stack.Probed{Container: "carto-notifier-1", StartedAt: started}
	if err := SaveAgentState(paths, AgentState{Services: map[string]AgentServiceState{"notifier": {Probed: run}}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		started time.Time
		health  string
	}{{started, "healthy"}, {started.Add(time.Second), "starting"}} {
		f.Statuses = map[string]stack.ServiceStatus{"notifier": {Name: "notifier", Container: "carto-notifier-1", State: "running", Health: "starting", StartedAt: c.started}}
		st, err = GetStatus(t.Context(), paths)
		if err != nil {
			t.Fatal(err)
		}
		i = slices.IndexFunc(st.Services, func(s stack.ServiceStatus) bool { return s.Name == "notifier" })
		if s := st.Services[i]; s.Health != c.health || s.HealthProbed != (c.health == "healthy") || st.Healthy != (c.health == "healthy") {
			t.Errorf("started at %s: %+v (stack healthy %v)", c.started, s, st.Healthy)
		}
	}

	f.Fail["status"] = errors.New("engine gone")
	if _, err := GetStatus(t.Context(), paths); err == nil || !strings.Contains(err.Error(), "engine gone") {
		t.Errorf("engine failure: %v", err)
	}
	f.allClosed(t)

	if _, err := GetStatus(t.Context(), config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}); !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "carto-appliance install") {
		t.Errorf("nothing installed: %v", err)
	}
}

// The services' logs come from the project, with the installed secrets
// masked.
func TestLogs(t *testing.T) {
	paths, f := applied(t, config.Config{Project: "carto2"})
	f.LogLines = []string{"maps-api | connecting with admin-pass", "maps-api | ready"}
	var out bytes.Buffer
	if err := Logs(t.Context(), paths, &out, stack.LogsOptions{Services: []string{"maps-api"}, Tail: "10"}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "admin-pass") || !strings.Contains(out.String(), "maps-api | ready") {
		t.Errorf("logs:\n%s", out.String())
	}
	if len(f.LogsOpts) != 1 || f.LogsOpts[0].Tail != "10" || !slices.Equal(f.LogsOpts[0].Services, []string{"maps-api"}) || !slices.Contains(f.Log, "logs carto2") {
		t.Errorf("asked %+v, %q", f.LogsOpts, f.Log)
	}
	f.allClosed(t)
	if err := Logs(t.Context(), config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}, &out, stack.LogsOptions{}); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("nothing installed: %v", err)
	}
}

// Uninstall removes the stack and the firewall's rules and keeps the
// data; with purge, the volumes, the config and the state go too.
func TestUninstall(t *testing.T) {
	paths, f := applied(t, config.Config{})
	if _, err := Uninstall(t.Context(), UninstallOptions{Paths: paths}); err != nil {
		t.Fatal(err)
	}
	if len(f.Downs) != 1 || f.Downs[0].RemoveVolumes || f.DownOf[0] != "carto" || len(f.calls("firewall clear")) != 1 {
		t.Errorf("down %+v, %q", f.Downs, f.Log)
	}
	if _, err := os.Stat(paths.File(config.ConfigFileName)); err != nil {
		t.Error("uninstall without purge removed the settings")
	}

	// The engine refusing: the firewall stays as it is.
	f.Fail["down"] = errors.New("engine gone")
	if _, err := Uninstall(t.Context(), UninstallOptions{Paths: paths, Purge: true}); err == nil || !strings.Contains(err.Error(), "removing the stack") {
		t.Errorf("failed down: %v", err)
	}
	if len(f.calls("firewall clear")) != 1 {
		t.Error("the firewall was cleared after a failed down")
	}
	if _, err := os.Stat(paths.ConfigDir); err != nil {
		t.Error("a failed uninstall purged the config dir")
	}

	// An empty network the engine keeps for a stale endpoint is a
	// warning: the rest of the uninstall goes on.
	f.Fail["down"] = &stack.StaleNetworksError{Networks: []string{"carto_default"}, Errs: []error{errors.New("removing network carto_default: stale")}}
	res, err := Uninstall(t.Context(), UninstallOptions{Paths: paths})
	if err != nil || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "carto_default") {
		t.Errorf("stale network: %+v, %v", res, err)
	}
	if len(f.calls("firewall clear")) != 2 {
		t.Error("the firewall was not cleared after a down that left only a stale network")
	}

	delete(f.Fail, "down")
	res, err = Uninstall(t.Context(), UninstallOptions{Paths: paths, Purge: true})
	if err != nil {
		t.Fatal(err)
	}
	if !f.Downs[len(f.Downs)-1].RemoveVolumes || len(res.Kept) != 0 {
		t.Errorf("purge: down %+v, kept %+v", f.Downs, res.Kept)
	}
	for _, d := range []string{paths.ConfigDir, paths.StateDir} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s after purge: %v", d, err)
		}
	}
	f.allClosed(t)
}

// A purge refuses a dir that is not the appliance's before it asks the
// engine anything.
func TestUninstallPurgeRefusesForeignDir(t *testing.T) {
	f, _ := fakes(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600)
	_, err := Uninstall(t.Context(), UninstallOptions{Paths: config.Paths{ConfigDir: dir, StateDir: t.TempDir()}, Purge: true})
	if inputOf(err) != InputConfigDir {
		t.Errorf("err %v", err)
	}
	if len(f.Log) != 0 {
		t.Errorf("engine asked %q", f.Log)
	}
	if _, err := os.Stat(filepath.Join(dir, "notes.txt")); err != nil {
		t.Error("a refused purge removed a file")
	}
}

// Preflight runs the checks with what install would listen on and reach,
// reports a failure without failing, and refuses an unknown check to
// ignore, naming the input.
func TestPreflight(t *testing.T) {
	fakes(t)
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	key := filepath.Join(dir, "key.json")
	os.WriteFile(key, []byte(`{"private_key_id":"0a1b2c3d4e"}`), 0o600)
	var got preflight.Options
	runChecks = func(_ context.Context, o preflight.Options) *preflight.Report {
		got = o
		return &preflight.Report{Failed: true, Checks: []preflight.Check{{ID: "memory", Status: preflight.Fail, Detail: "2 GiB", Fix: "add memory"}}}
	}
	opts := InstallOptions{Options: Options{Paths: paths}, CustomerEnv: writeCustomer(t, ""), KeyFile: key, TLSOffload: true, HTTPPort: 8080, Project: "carto2"}
	report, err := Preflight(t.Context(), opts)
	if err != nil || !report.Failed {
		t.Fatalf("report %+v, %v", report, err)
	}
	if got.Domain != "carto.example.com" || got.HTTPPort != 8080 || got.HTTPSPort != 0 || got.Project != "carto2" ||
		got.ClockURL != "https://gcr.io/v2/" || got.Egress == nil || got.Requirements != carried(t).Manifest.Requirements {
		t.Errorf("checks run with %+v", got)
	}
	opts.IgnorePreflight = []string{"memroy"}
	if _, err := Preflight(t.Context(), opts); inputOf(err) != InputIgnorePreflight || !strings.Contains(err.Error(), "memory") {
		t.Errorf("unknown check: %v", err)
	}
	if _, err := os.Stat(paths.ConfigDir); err == nil {
		t.Error("preflight wrote the config dir")
	}
}

// An install without a licence is refused before anything is checked,
// written or asked of the engine.
func TestInstallWithoutLicenceChangesNothing(t *testing.T) {
	f, _ := fakes(t)
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	key := filepath.Join(dir, "key.json")
	os.WriteFile(key, []byte(`{"private_key_id":"0a1b2c3d4e"}`), 0o600)
	checked := false
	runChecks = func(context.Context, preflight.Options) *preflight.Report { checked = true; return &preflight.Report{} }
	_, err := Install(t.Context(), InstallOptions{Options: Options{Paths: paths}, CustomerEnv: writeCustomer(t, ""), KeyFile: key})
	if !errors.Is(err, license.ErrInvalid) || inputOf(err) != InputLicense || !strings.Contains(err.Error(), "license.json") {
		t.Errorf("err %v", err)
	}
	if checked || len(f.Log) != 0 {
		t.Errorf("checked %v, engine asked %q", checked, f.Log)
	}
	for _, d := range []string{paths.ConfigDir, paths.StateDir} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s written", d)
		}
	}
}
