package installer

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/host"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/stack"
)

// The workflows' tests drive them end to end on temporary dirs, with the
// fakes of fakeengine_test.go in place of Docker, the host's engine
// settings, its firewall and the preflight checks. They swap package
// variables: none runs in parallel.

// applied is an installation (installed) brought up once by Apply, as a
// first install leaves it.
func applied(t *testing.T, cfg config.Config) (config.Paths, *fakeStack) {
	t.Helper()
	f, _ := fakes(t)
	paths := installed(t, cfg)
	if _, err := Apply(t.Context(), Options{Paths: paths}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.Log, f.Pulls, f.Applies = nil, nil, nil
	f.mu.Unlock()
	return paths, f
}

func lastRun(t *testing.T, paths config.Paths) *steps.Record {
	t.Helper()
	return journalRecord(t, paths, journalFileName)
}

// journalRecord is the record of the journal file name in the state dir.
func journalRecord(t *testing.T, paths config.Paths, name string) *steps.Record {
	t.Helper()
	r, err := steps.Journal{Path: filepath.Join(paths.StateDir, name)}.Load()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func stepState(r *steps.Record, name string) string {
	for _, s := range r.Steps {
		if s.Name == name {
			return s.State
		}
	}
	return ""
}

func readState(t *testing.T, paths config.Paths) State {
	t.Helper()
	st, err := loadState(paths.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func installedConfig(t *testing.T, paths config.Paths) config.Config {
	t.Helper()
	cfg, found, err := config.Load(paths.File(config.ConfigFileName))
	if err != nil || !found {
		t.Fatalf("appliance.yaml: found %v, %v", found, err)
	}
	return cfg
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A first apply pulls with key.json for CARTO's registry, puts the
// firewall in force before anything publishes a port, brings every
// service up, pins the release and records the run; a second one asks the
// engine again and changes nothing.
func TestApplyConvergesThenChangesNothing(t *testing.T) {
	f, _ := fakes(t)
	paths := installed(t, config.Config{Domain: "carto.example.com"})
	res, err := Apply(t.Context(), Options{Paths: paths, Pull: stack.PullAlways})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Pulls) != 1 || f.Pulls[0].Policy != stack.PullAlways || f.Pulls[0].Auth.Registry != "gcr.io" || f.Pulls[0].Auth.Password != readFile(t, paths.KeyFile()) {
		t.Errorf("pulls %+v", f.Pulls)
	}
	// The images are all there once pulled: the converge pulls only what
	// is missing.
	if len(f.Applies) != 1 || f.Applies[0].Pull.Policy != stack.PullMissing {
		t.Errorf("applies %+v", f.Applies)
	}
	fw, up := slices.Index(f.Log, "firewall clear"), slices.Index(f.Log, "apply carto")
	if fw < 0 || up < 0 || fw > up {
		t.Errorf("the firewall must be in force before the converge: %q", f.Log)
	}
	if res.Applied == nil || !slices.Contains(res.Applied.Created, routerService) || res.Version != carried(t).Manifest.Version ||
		res.URL != "https://carto.example.com/" || res.CredentialsTo != "gcr.io" || res.Status == nil || !res.Status.Healthy {
		t.Errorf("result %+v", res)
	}
	st := readState(t, paths)
	if st.Release == nil || st.Release.Version != res.Version || st.Version != res.Version || len(st.History) != 1 || st.History[0].Action != "apply" {
		t.Errorf("state %+v", st)
	}
	if r := lastRun(t, paths); r == nil || r.Action != "apply" || r.Outcome != steps.Succeeded || stepState(r, "record") != steps.Done {
		t.Errorf("journal %+v", r)
	}
	f.allClosed(t)

	before := dirSnapshot(t, paths.ConfigDir)
	res, err = Apply(t.Context(), Options{Paths: paths})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Applies) != 2 || res.Applied.Changed() || len(res.Applied.Unchanged) != len(res.Status.Services) {
		t.Errorf("second apply: %d applies, %+v", len(f.Applies), res.Applied)
	}
	if !sameFiles(before, dirSnapshot(t, paths.ConfigDir)) {
		t.Error("a second apply changed the config dir")
	}
	if len(f.Signals) != 0 {
		t.Errorf("nothing to reload, yet %q", f.Signals)
	}
	if st := readState(t, paths); len(st.History) != 2 {
		t.Errorf("history %+v", st.History)
	}
	f.allClosed(t)
}

// A pull the registry refuses stops a change before anything is written:
// the settings, the state and the last run's journal are as they were,
// and nothing was asked to start.
func TestPullFailureChangesNothing(t *testing.T) {
	paths, f := applied(t, config.Config{})
	cfgBefore, stateBefore := dirSnapshot(t, paths.ConfigDir), dirSnapshot(t, paths.StateDir)
	f.Fail["pull"] = errors.New("pulling gcr.io/carto/router: unauthorized")
	_, err := OffloadTLS(t.Context(), Options{Paths: paths})
	if err == nil || !strings.Contains(err.Error(), "unauthorized") {
		t.Fatalf("err %v", err)
	}
	if !sameFiles(cfgBefore, dirSnapshot(t, paths.ConfigDir)) || !sameFiles(stateBefore, dirSnapshot(t, paths.StateDir)) {
		t.Error("a refused pull changed the config or state dir")
	}
	if len(f.Applies) != 0 || len(f.calls("firewall")) != 0 {
		t.Errorf("engine asked %q", f.Log)
	}
	f.allClosed(t)
}

// A converge that fails keeps what was committed (the next apply
// converges to it again) and the journal says where it stopped; the
// state records no success.
func TestConvergeFailureKeepsTheCommit(t *testing.T) {
	paths, f := applied(t, config.Config{})
	f.Fail["apply"] = &stack.ServiceError{Service: "maps-api", Reason: "did not become healthy"}
	res, err := OffloadTLS(t.Context(), Options{Paths: paths})
	var se *stack.ServiceError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "bringing the stack up") {
		t.Fatalf("err %v", err)
	}
	if res == nil || res.Version == "" {
		t.Errorf("a failed converge still says what it tried: %+v", res)
	}
	if cfg := installedConfig(t, paths); !cfg.TLS.Offload() {
		t.Errorf("tls.mode %q: the committed settings were not kept", cfg.TLS.Mode)
	}
	r := lastRun(t, paths)
	if r.Action != "certs offload" || r.Outcome != steps.Stopped || stepState(r, "commit") != steps.Done || stepState(r, "converge") != steps.Failed ||
		stepState(r, "record") != steps.Pending || !strings.Contains(r.Error, "maps-api") {
		t.Errorf("journal %+v", r)
	}
	if st := readState(t, paths); len(st.History) != 1 {
		t.Errorf("a failed run recorded: %+v", st.History)
	}
	f.allClosed(t)

	// The next apply converges to the kept settings.
	delete(f.Fail, "apply")
	res, err = Apply(t.Context(), Options{Paths: paths})
	if err != nil || !slices.Contains(res.Applied.Recreated, routerService) {
		t.Fatalf("apply after: %v %+v", err, res)
	}
}

// The allow-list is handed to the firewall, with the router's ports,
// before the converge; everyone allowed again clears it.
func TestApplyFirewall(t *testing.T) {
	f, _ := fakes(t)
	paths := installed(t, config.Config{Network: config.NetworkConfig{AllowedSources: []string{"10.0.0.0/8"}}})
	if _, err := Apply(t.Context(), Options{Paths: paths}); err != nil {
		t.Fatal(err)
	}
	if len(f.Rules) != 1 || !strings.Contains(f.Rules[0].Rules, "10.0.0.0/8") || !strings.Contains(f.Rules[0].Rules, "443") {
		t.Fatalf("rules %+v", f.Rules)
	}
	if slices.Index(f.Log, "firewall apply") > slices.Index(f.Log, "apply carto") {
		t.Errorf("order %q", f.Log)
	}
	if err := EnforceFirewall(t.Context(), paths); err != nil || len(f.Rules) != 2 {
		t.Errorf("enforce: %v, %d", err, len(f.Rules))
	}

	// A firewall that refuses stops the run before the commit.
	f.Fail["firewall"] = errors.New("iptables-restore: permission denied")
	cfgBefore := dirSnapshot(t, paths.ConfigDir)
	_, err := OffloadTLS(t.Context(), Options{Paths: paths})
	if err == nil || !strings.Contains(err.Error(), "network.allowed_sources") {
		t.Fatalf("err %v", err)
	}
	if !sameFiles(cfgBefore, dirSnapshot(t, paths.ConfigDir)) {
		t.Error("a refused firewall let the commit happen")
	}
	if r := lastRun(t, paths); r.Outcome != steps.Stopped || stepState(r, "firewall") != steps.Failed {
		t.Errorf("journal %+v", r)
	}
}

// stop holds services (and their dependents) through applies; start
// releases them (and what they depend on) and converges; restart stops
// the services and converges them back.
func TestControl(t *testing.T) {
	paths, f := applied(t, config.Config{})
	res, err := Control(t.Context(), Options{Paths: paths}, ActionStop, []string{"workspace-postgres"})
	if err != nil {
		t.Fatal(err)
	}
	held := readState(t, paths).Held
	if !slices.Contains(held, "workspace-postgres") || !slices.Contains(held, "workspace-api") || slices.Contains(held, "valkey") {
		t.Errorf("held %q", held)
	}
	if len(f.Stops) != 1 || !slices.Equal(f.Stops[0], held) || !slices.Equal(res.Applied.Held, held) || !slices.Contains(res.Applied.Stopped, "workspace-api") {
		t.Errorf("stops %q, result %+v", f.Stops, res.Applied)
	}
	if res.Status == nil || res.Status.Healthy || res.URL == "" {
		t.Errorf("a stack with held services is not healthy: %+v", res.Status)
	}
	if h, err := HeldServices(paths); err != nil || !slices.Equal(h, held) {
		t.Errorf("HeldServices %q %v", h, err)
	}

	// An apply keeps them stopped.
	if _, err := Apply(t.Context(), Options{Paths: paths}); err != nil {
		t.Fatal(err)
	}
	if a := f.Applies[len(f.Applies)-1]; !slices.Equal(a.Held, held) {
		t.Errorf("apply held %q", a.Held)
	}

	// Starting a dependent starts what it needs.
	res, err = Control(t.Context(), Options{Paths: paths}, ActionStart, []string{"workspace-api"})
	if err != nil {
		t.Fatal(err)
	}
	now := readState(t, paths).Held
	if slices.Contains(now, "workspace-postgres") || slices.Contains(now, "workspace-api") {
		t.Errorf("still held after start: %q", now)
	}
	if !slices.Contains(res.Applied.Created, "workspace-postgres") || !slices.Contains(res.Applied.Created, "workspace-api") {
		t.Errorf("start converged %+v", res.Applied)
	}
	if r := lastRun(t, paths); r.Action != "start" || r.Outcome != steps.Succeeded {
		t.Errorf("journal %+v", r)
	}

	// Restart stops the named services first, then converges.
	n := len(f.Applies)
	if _, err := Control(t.Context(), Options{Paths: paths}, ActionRestart, []string{"maps-api"}); err != nil {
		t.Fatal(err)
	}
	if last := f.Stops[len(f.Stops)-1]; !slices.Equal(last, []string{"maps-api"}) || len(f.Applies) != n+1 {
		t.Errorf("restart: stops %q, %d applies", f.Stops, len(f.Applies)-n)
	}
	if stop, up := slices.Index(f.Log, "stop maps-api"), slices.Index(f.Log[slices.Index(f.Log, "stop maps-api")+1:], "apply carto"); stop < 0 || up < 0 {
		t.Errorf("restart order %q", f.Log)
	}
	f.allClosed(t)
}

// Control refuses an unknown action or service before anything changes.
func TestControlRefusals(t *testing.T) {
	paths, f := applied(t, config.Config{})
	stateBefore := dirSnapshot(t, paths.StateDir)
	if _, err := Control(t.Context(), Options{Paths: paths}, "pause", nil); err == nil || !strings.Contains(err.Error(), "start, stop or restart") {
		t.Errorf("unknown action: %v", err)
	}
	_, err := Control(t.Context(), Options{Paths: paths}, ActionStop, []string{"mapsapi"})
	if !errors.Is(err, ErrUnknownService) || !strings.Contains(err.Error(), `"mapsapi"`) || !strings.Contains(err.Error(), "maps-api") {
		t.Errorf("unknown service: %v", err)
	}
	if _, err := Control(t.Context(), Options{Paths: config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}}, ActionStop, nil); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("nothing installed: %v", err)
	}
	if len(f.Log) != 0 || !sameFiles(stateBefore, dirSnapshot(t, paths.StateDir)) {
		t.Errorf("a refusal changed something: %q", f.Log)
	}

	// A stop the engine fails is reported, the services held all the same.
	f.Fail["stop"] = errors.New("engine gone")
	if _, err := Control(t.Context(), Options{Paths: paths}, ActionStop, []string{"maps-api"}); err == nil || !strings.Contains(err.Error(), "engine gone") {
		t.Errorf("failed stop: %v", err)
	}
	if !slices.Contains(readState(t, paths).Held, "maps-api") {
		t.Error("a failed stop did not hold the service")
	}
	f.allClosed(t)
}

// proxy set gives the proxy to the stack (.env) and to the Docker engine
// (its drop-in, the CA), restarting the engine only when the operator
// agrees, and reconnecting after; proxy clear takes both back.
func TestSetAndClearProxy(t *testing.T) {
	paths, f := applied(t, config.Config{})
	h := hostEngineFake(t)
	ca := filepath.Join(t.TempDir(), "proxy-ca.pem")
	os.WriteFile(ca, testCAPEM(t), 0o600)
	var asked []string
	yes := func(reason string) bool { asked = append(asked, reason); return true }
	res, err := SetProxy(t.Context(), Options{Paths: paths, ConfirmEngineRestart: yes}, ProxyInput{URL: "https://proxy.corp:3129", NoProxy: ".corp", CACertFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(h.DropIn), "HTTPS_PROXY=https://proxy.corp:3129") || string(h.CA) != string(testCAPEMOf(t, ca)) || h.Restarts != 1 || len(asked) != 1 {
		t.Errorf("engine: drop-in %q CA %d bytes, %d restarts, asked %q", h.DropIn, len(h.CA), h.Restarts, asked)
	}
	if !slices.Contains(res.Warnings, "restarted the Docker engine with the new proxy settings") {
		t.Errorf("warnings %q", res.Warnings)
	}
	env := readFile(t, paths.File(config.EnvFileName))
	if !strings.Contains(env, `HTTPS_PROXY="https://proxy.corp:3129"`) || !strings.Contains(env, ".corp") {
		t.Errorf(".env:\n%s", env)
	}
	if cfg := installedConfig(t, paths); cfg.Proxy.URL != "https://proxy.corp:3129" || cfg.Proxy.CACert == "" {
		t.Errorf("appliance.yaml proxy %+v", cfg.Proxy)
	}
	// The services that call out see the CA.
	if got := readFile(t, filepath.Join(paths.ConfigDir, config.CertsDirName, appMountDir, cfgProxyCA(t, paths))); got != string(testCAPEMOf(t, ca)) {
		t.Error("the proxy CA is not mounted for the services")
	}
	if len(res.Applied.Recreated) == 0 {
		t.Error("no service was recreated with the proxy")
	}
	// The engine restarted: the run went on with a new connection.
	if f.Connects < 2 {
		t.Errorf("%d connections", f.Connects)
	}
	f.allClosed(t)

	// Invalid input changes nothing and asks nothing.
	before := dirSnapshot(t, paths.ConfigDir)
	n := len(f.Log)
	_, err = SetProxy(t.Context(), Options{Paths: paths}, ProxyInput{NoProxy: ".corp"})
	if inputOf(err) != InputProxyURL {
		t.Errorf("no URL: %v", err)
	}
	_, err = SetProxy(t.Context(), Options{Paths: paths}, ProxyInput{URL: "http://u:pw@proxy.corp:3128"})
	if err == nil || strings.Contains(err.Error(), "pw@") {
		t.Errorf("credentials: %v", err)
	}
	if len(f.Log) != n || !sameFiles(before, dirSnapshot(t, paths.ConfigDir)) {
		t.Error("a refused proxy changed something")
	}

	// Cleared without the operator's agreement: the engine's settings are
	// written, its restart left to the operator.
	res, err = ClearProxy(t.Context(), Options{Paths: paths})
	if err != nil {
		t.Fatal(err)
	}
	if h.DropIn != nil || h.CA != nil || h.Restarts != 1 {
		t.Errorf("engine after clear: drop-in %q, %d restarts", h.DropIn, h.Restarts)
	}
	if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "systemctl restart docker") }) {
		t.Errorf("warnings %q", res.Warnings)
	}
	if env := readFile(t, paths.File(config.EnvFileName)); strings.Contains(env, "proxy.corp") {
		t.Errorf(".env still has the proxy:\n%s", env)
	}
	if r := lastRun(t, paths); r.Action != "proxy clear" || r.Outcome != steps.Succeeded {
		t.Errorf("journal %+v", r)
	}
}

// An engine that cannot take the proxy stops the run before the stack is
// touched; the journal says so, as the engine's settings may have changed.
func TestSetProxyEngineFailure(t *testing.T) {
	paths, f := applied(t, config.Config{})
	h := hostEngineFake(t)
	h.Err = errors.New("writing /etc/systemd/system/docker.service.d: read-only file system")
	cfgBefore := dirSnapshot(t, paths.ConfigDir)
	_, err := SetProxy(t.Context(), Options{Paths: paths}, ProxyInput{URL: "http://proxy.corp:3128"})
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("err %v", err)
	}
	if !sameFiles(cfgBefore, dirSnapshot(t, paths.ConfigDir)) || len(f.Pulls) != 0 || len(f.Applies) != 0 {
		t.Errorf("a refused engine proxy went on: %q", f.Log)
	}
	if r := lastRun(t, paths); r.Action != "proxy set" || stepState(r, "engine-proxy") != steps.Failed || r.Outcome != steps.Stopped {
		t.Errorf("journal %+v", r)
	}
	f.allClosed(t)
}

// hostEngineFake is the host.FakeEngine fakes put in place.
func hostEngineFake(t *testing.T) *host.FakeEngine {
	t.Helper()
	h, ok := hostEngine.(*host.FakeEngine)
	if !ok {
		t.Fatal("fakes was not called")
	}
	return h
}

func testCAPEMOf(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cfgProxyCA(t *testing.T, paths config.Paths) string {
	t.Helper()
	return installedConfig(t, paths).Proxy.CACert
}

// A run leaves its plan as planned: what it learns on the way (here the
// engine's restart for a new proxy) is in its result, not in the plan,
// so that the same plan can be shown, journaled or undone afterwards.
func TestRunLeavesThePlanAsPlanned(t *testing.T) {
	paths, _ := applied(t, config.Config{})
	hostEngineFake(t)
	d, err := planInstalled(paths, func(c *config.Config) ([]byte, error) {
		c.Proxy.URL = "http://proxy.corp:3128"
		return nil, nil
	}, TLSInput{})
	if err != nil {
		t.Fatal(err)
	}
	before := fmt.Sprintf("%q %v %v %d", d.warnings, slices.Sorted(maps.Keys(d.certs)), d.acme, len(d.envFile))
	res, err := runLocked(t.Context(), Options{Paths: paths, ConfirmEngineRestart: func(string) bool { return true }}, paths, d, "proxy set", nil)
	if err != nil {
		t.Fatal(err)
	}
	if after := fmt.Sprintf("%q %v %v %d", d.warnings, slices.Sorted(maps.Keys(d.certs)), d.acme, len(d.envFile)); after != before {
		t.Errorf("the run changed its plan:\n%s\n->\n%s", before, after)
	}
	if !slices.Contains(res.Warnings, "restarted the Docker engine with the new proxy settings") {
		t.Errorf("the run's own note is not in its result: %q", res.Warnings)
	}
}

// A certificate the ACME CA issued during the run (not in the plan)
// reaches the running router by a reload, as a planned one does.
func TestObtainedCertificateReloadsTheRouter(t *testing.T) {
	paths, f := applied(t, config.Config{})
	d, err := planInstalled(paths, nil, TLSInput{})
	if err != nil {
		t.Fatal(err)
	}
	got := &obtained{certs: map[string][]byte{config.ServerCertFile: []byte("new cert"), config.ServerKeyFile: []byte("new key")}}
	if _, err := runLocked(t.Context(), Options{Paths: paths}, paths, d, "certs renew", got); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(f.calls("signal"), "signal "+routerService+" HUP") {
		t.Errorf("the router was not reloaded for the issued certificate: %q", f.Log)
	}
	if b := readFile(t, filepath.Join(paths.ConfigDir, config.CertsDirName, config.ServerCertFile)); b != "new cert" {
		t.Errorf("the issued certificate was not committed: %q", b)
	}
}
