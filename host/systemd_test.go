package host

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kardianos/service"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
)

var update = flag.Bool("update", false, "rewrite testdata golden files from the current output")

// The unit for the default paths is the golden file; the fresh-VM scenario
// (e2e/service_vm_test.go) checks that kardianos/service writes exactly it.
func TestServiceUnitGolden(t *testing.T) {
	opts := ServiceOptions{Binary: DefaultBinary, Paths: config.Paths{ConfigDir: config.DefaultConfigDir, StateDir: config.DefaultStateDir}}
	got, err := renderUnit(opts)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "carto-appliance.service")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./host -run ServiceUnitGolden -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("the unit differs from %s; if the change is intended, run go test ./host -run ServiceUnitGolden -update\n--- got:\n%s", golden, got)
	}
	for _, line := range []string{
		"Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=always", "RestartSec=2",
		"After=docker.service network-online.target", "Wants=docker.service network-online.target",
		"KillMode=process", "StartLimitIntervalSec=0",
		`ExecStart=/usr/local/bin/carto-appliance "agent" "--config-dir" "/opt/carto" "--state-dir" "/var/lib/carto-appliance"`,
	} {
		if !slices.Contains(strings.Split(string(got), "\n"), line) {
			t.Errorf("the unit has no line %q", line)
		}
	}
}

func TestServiceUnitQuotesPaths(t *testing.T) {
	dir := t.TempDir()
	bin := fakeBinary(t, filepath.Join(dir, "my bin", "carto-appliance"))
	opts, err := ServiceOptions{Binary: bin, Paths: config.Paths{ConfigDir: filepath.Join(dir, "opt carto"), StateDir: "/var/lib/x"}}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	got, err := renderUnit(opts)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`ExecStart=%s "agent" "--config-dir" "%s" "--state-dir" "/var/lib/x"`,
		strings.ReplaceAll(bin, " ", `\x20`), filepath.Join(dir, "opt carto"))
	if !strings.Contains(string(got), want+"\n") {
		t.Errorf("want %s in\n%s", want, got)
	}
}

func TestServiceOptionsResolve(t *testing.T) {
	dir := t.TempDir()
	bin := fakeBinary(t, filepath.Join(dir, "carto-appliance"))
	notExec := filepath.Join(dir, "plain")
	os.WriteFile(notExec, []byte("x"), 0o644)
	t.Chdir(dir)
	tests := []struct {
		name    string
		opts    ServiceOptions
		wantErr string // substring; "" for success
		// wantSetting is the SettingError's setting, when the error is one.
		wantSetting string
		check       func(t *testing.T, o ServiceOptions)
	}{
		{name: "relative paths become absolute", opts: ServiceOptions{Binary: "carto-appliance", Paths: config.Paths{ConfigDir: "conf", StateDir: "state"}},
			check: func(t *testing.T, o ServiceOptions) {
				if o.Binary != bin || o.Paths.ConfigDir != filepath.Join(dir, "conf") || o.Paths.StateDir != filepath.Join(dir, "state") {
					t.Errorf("resolved %+v", o)
				}
				if o.StartTimeout != DefaultServiceStartTimeout {
					t.Errorf("start timeout %s", o.StartTimeout)
				}
			}},
		{name: "defaults", opts: ServiceOptions{Binary: bin},
			check: func(t *testing.T, o ServiceOptions) {
				if o.Paths != (config.Paths{ConfigDir: config.DefaultConfigDir, StateDir: config.DefaultStateDir}) {
					t.Errorf("paths %+v", o.Paths)
				}
			}},
		{name: "percent", opts: ServiceOptions{Binary: bin, Paths: config.Paths{ConfigDir: "/opt/100%"}}, wantErr: `the config dir "/opt/100%"`, wantSetting: "config_dir"},
		{name: "dollar", opts: ServiceOptions{Binary: bin, Paths: config.Paths{StateDir: "/var/$HOME"}}, wantErr: `the state dir "/var/$HOME"`, wantSetting: "state_dir"},
		{name: "newline", opts: ServiceOptions{Binary: bin, Paths: config.Paths{StateDir: "/var/a\nb"}}, wantErr: `cannot carry`},
		{name: "missing binary", opts: ServiceOptions{Binary: filepath.Join(dir, "nope")}, wantErr: "install the binary there", wantSetting: "binary"},
		{name: "binary not executable", opts: ServiceOptions{Binary: notExec}, wantErr: "not an executable file", wantSetting: "binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.opts.resolve()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tt.wantErr)
				}
				// The setting is named by what it is; the flag that gives
				// it is cmd/'s business.
				var se *SettingError
				if tt.wantSetting != "" && (!errors.As(err, &se) || se.Setting != tt.wantSetting) {
					t.Errorf("error %v names setting %+v, want %q", err, se, tt.wantSetting)
				}
				if strings.Contains(err.Error(), "--") {
					t.Errorf("error %v names a flag", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

func TestInstallServiceFresh(t *testing.T) {
	m, opts := newFakeManager(t)
	if err := installService(t.Context(), m, opts); err != nil {
		t.Fatal(err)
	}
	if m.installs != 1 {
		t.Errorf("kardianos install ran %d times", m.installs)
	}
	want, _ := renderUnit(mustResolve(t, opts))
	if got, _ := os.ReadFile(m.unitPath()); string(got) != string(want) {
		t.Errorf("unit file:\n%s\nwant:\n%s", got, want)
	}
	m.wantCalls(t, "kardianos install", "systemctl enable --now carto-appliance.service", "systemctl show")
}

func TestInstallServiceUnchangedLeavesUnitAlone(t *testing.T) {
	m, opts := newFakeManager(t)
	if err := installService(t.Context(), m, opts); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	os.Chtimes(m.unitPath(), old, old)
	m.calls = nil
	if err := installService(t.Context(), m, opts); err != nil {
		t.Fatal(err)
	}
	if m.installs != 1 {
		t.Errorf("kardianos install ran again (%d)", m.installs)
	}
	if fi, _ := os.Stat(m.unitPath()); !fi.ModTime().Equal(old) {
		t.Error("the unchanged unit file was rewritten")
	}
	m.wantCalls(t, "systemctl enable --now carto-appliance.service", "systemctl show")
}

func TestInstallServiceRewritesChangedUnit(t *testing.T) {
	m, opts := newFakeManager(t)
	if err := installService(t.Context(), m, opts); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(m.unitPath())
	m.calls = nil
	opts.Paths.StateDir = filepath.Join(t.TempDir(), "elsewhere")
	if err := installService(t.Context(), m, opts); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(m.unitPath())
	if !strings.Contains(string(after), `"--state-dir" "`+opts.Paths.StateDir+`"`) {
		t.Errorf("unit not rewritten:\n%s", after)
	}
	if prev, _ := os.ReadFile(m.unitPath() + atomicfile.PrevSuffix); string(prev) != string(before) {
		t.Error("the previous unit was not kept")
	}
	m.wantCalls(t, "systemctl daemon-reload", "systemctl try-restart carto-appliance.service",
		"systemctl enable --now carto-appliance.service", "systemctl show")
}

func TestInstallServiceStartFailureShowsTheLog(t *testing.T) {
	m, opts := newFakeManager(t)
	m.fail["systemctl enable"] = errors.New("Job for carto-appliance.service failed")
	m.journal = "event=agent-start\nError: boom\n"
	err := installService(t.Context(), m, opts)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"starting carto-appliance.service", "Job for carto-appliance.service failed", "Error: boom", "journalctl -u carto-appliance"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestInstallServiceCrashingAgent(t *testing.T) {
	m, opts := newFakeManager(t)
	m.state = "ActiveState=activating\nSubState=auto-restart\nResult=exit-code\n"
	err := installService(t.Context(), m, opts)
	if err == nil || !strings.Contains(err.Error(), "auto-restart") || !strings.Contains(err.Error(), "journalctl -u carto-appliance") {
		t.Fatalf("error %v", err)
	}
}

func TestInstallServiceStartTimeout(t *testing.T) {
	m, opts := newFakeManager(t)
	m.state = "ActiveState=activating\nSubState=start\n"
	opts.StartTimeout = 300 * time.Millisecond
	err := installService(t.Context(), m, opts)
	if err == nil || !strings.Contains(err.Error(), "did not report ready within 300ms") {
		t.Fatalf("error %v", err)
	}
}

func TestUninstallServiceStopsFirst(t *testing.T) {
	m, opts := newFakeManager(t)
	if err := installService(t.Context(), m, opts); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(m.unitPath()+atomicfile.PrevSuffix, []byte("old"), 0o644)
	agentState := filepath.Join(opts.Paths.StateDir, config.AgentStateFileName)
	os.MkdirAll(opts.Paths.StateDir, 0o700)
	if err := os.WriteFile(agentState, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.calls = nil
	if err := uninstallService(t.Context(), m, opts.Paths); err != nil {
		t.Fatal(err)
	}
	m.wantCalls(t, "systemctl show", "systemctl stop carto-appliance.service", "kardianos uninstall", "systemctl reset-failed carto-appliance.service")
	for _, p := range []string{m.unitPath(), m.unitPath() + atomicfile.PrevSuffix, agentState} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind", p)
		}
	}
}

func TestUninstallServiceNothingInstalled(t *testing.T) {
	m, opts := newFakeManager(t)
	m.state = "LoadState=not-found\nActiveState=inactive\nSubState=dead\n"
	if err := uninstallService(t.Context(), m, opts.Paths); err != nil {
		t.Fatal(err)
	}
	m.wantCalls(t, "systemctl show")
}

func TestParseServiceState(t *testing.T) {
	got := parseServiceState("LoadState=loaded\nUnitFileState=enabled\nActiveState=active\nSubState=running\nResult=success\nMainPID=4242\nNRestarts=3\nStatusText=supervising carto\nFragmentPath=/etc/systemd/system/carto-appliance.service\n")
	want := ServiceState{Unit: ServiceUnit, Installed: true, Enabled: true, Active: "active", Sub: "running", Result: "success",
		MainPID: 4242, Restarts: 3, Status: "supervising carto", UnitFile: "/etc/systemd/system/carto-appliance.service"}
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if !got.Running() {
		t.Error("not running")
	}
	if st := parseServiceState("LoadState=not-found\nActiveState=inactive\n"); st.Installed {
		t.Error("a not-found unit counts as installed")
	}
}

// fakeManager is systemd in a temp dir: kardianos's install renders the
// template from the service.Config it is given, the way kardianos does.
type fakeManager struct {
	t        *testing.T
	dir      string
	installs int
	calls    []string
	fail     map[string]error // by command-line prefix
	state    string           // systemctl show's output
	journal  string
}

func newFakeManager(t *testing.T) (*fakeManager, ServiceOptions) {
	dir := t.TempDir()
	m := &fakeManager{t: t, dir: dir, fail: map[string]error{},
		state: "LoadState=loaded\nUnitFileState=enabled\nActiveState=active\nSubState=running\nMainPID=10\n"}
	opts := ServiceOptions{
		Binary: fakeBinary(t, filepath.Join(dir, "bin", "carto-appliance")),
		Paths:  config.Paths{ConfigDir: filepath.Join(dir, "opt"), StateDir: filepath.Join(dir, "state")},
	}
	return m, opts
}

func (m *fakeManager) unitPath() string { return filepath.Join(m.dir, "carto-appliance.service") }

func (m *fakeManager) install(cfg *service.Config) error {
	m.installs++
	m.calls = append(m.calls, "kardianos install")
	if _, err := os.Stat(m.unitPath()); err == nil {
		return fmt.Errorf("Init already exists: %s", m.unitPath())
	}
	// What kardianos's engine makes of the config: the template with
	// Description, Path (cmdEscape) and Arguments (cmd).
	tmpl := cfg.Option["SystemdScript"].(string)
	var args []string
	for _, a := range cfg.Arguments {
		args = append(args, ` "`+a+`"`)
	}
	out := strings.NewReplacer("{{Description}}", cfg.Description, "{{Path | cmdEscape}}", cfg.Executable,
		"{{range Arguments}} {{. | cmd}}{{end}}", strings.Join(args, "")).Replace(tmpl)
	return os.WriteFile(m.unitPath(), []byte(out), 0o644)
}

func (m *fakeManager) uninstall(cfg *service.Config) error {
	m.calls = append(m.calls, "kardianos uninstall")
	return os.Remove(m.unitPath())
}

func (m *fakeManager) command(ctx context.Context, name string, args ...string) (string, error) {
	line := name + " " + strings.Join(args, " ")
	if name == "journalctl" {
		return m.journal, nil
	}
	m.calls = append(m.calls, line)
	for prefix, err := range m.fail {
		if strings.HasPrefix(line, prefix) {
			return "", err
		}
	}
	if strings.HasPrefix(line, "systemctl show") {
		return m.state, nil
	}
	return "", nil
}

// wantCalls checks the commands run, each by its prefix, in order; the
// same "systemctl show" repeated by a poll counts once.
func (m *fakeManager) wantCalls(t *testing.T, want ...string) {
	t.Helper()
	got := slices.Compact(slices.Clone(m.calls))
	for i := range got {
		if strings.HasPrefix(got[i], "systemctl show") {
			got[i] = "systemctl show"
		}
	}
	got = slices.Compact(got)
	if len(got) != len(want) {
		t.Fatalf("calls %q, want %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Fatalf("calls %q, want %q", got, want)
		}
	}
}

func fakeBinary(t *testing.T, path string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustResolve(t *testing.T, o ServiceOptions) ServiceOptions {
	t.Helper()
	o, err := o.resolve()
	if err != nil {
		t.Fatal(err)
	}
	return o
}
