// Package host owns what the appliance changes on the machine itself,
// outside the Docker engine's containers: the agent's systemd unit
// (kardianos/service and systemctl), the Docker engine's proxy drop-in,
// trust dir and restart, and installing Docker from the distribution's
// packages. Each is behind a small interface with a fake for unit tests.
// The host firewall is firewall/'s.
package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kardianos/service"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/packaging/systemd"
)

// ServiceUnit is the systemd unit the agent runs as.
const ServiceUnit = systemd.UnitName

// DefaultBinary is where install.sh puts the binary (SPEC §3).
const DefaultBinary = "/usr/local/bin/carto-appliance"

// PackageBinary is where the deb and rpm packages put it.
const PackageBinary = "/usr/bin/carto-appliance"

// DefaultBinaryPath is what the unit runs when not told: the running binary
// when it is in one of the standard places, else the first of those that
// exists. A binary elsewhere (a download dir) may not be there tomorrow.
func DefaultBinaryPath() string {
	places := []string{DefaultBinary, PackageBinary}
	if self, err := os.Executable(); err == nil {
		if self, err = filepath.EvalSymlinks(self); err == nil && slices.Contains(places, self) {
			return self
		}
	}
	for _, p := range places {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return DefaultBinary
}

// DefaultServiceStartTimeout bounds InstallService's wait for the agent to
// report ready when ServiceOptions.StartTimeout is 0. The agent reports
// ready after its first converge, a no-op on an installed stack.
const DefaultServiceStartTimeout = 5 * time.Minute

// ErrNoSystemd is returned when systemd does not manage this machine: the
// agent cannot be registered, and the stack is not kept up by anyone.
var ErrNoSystemd = errors.New("systemd does not manage this machine")

// SettingError is a setting of the agent's unit that cannot be used,
// named by what it is ("config_dir", "state_dir", "binary"): how the
// operator gives it is the command line's business.
type SettingError struct {
	Setting string
	Err     error
}

func (e *SettingError) Error() string { return e.Err.Error() }
func (e *SettingError) Unwrap() error { return e.Err }

// ServiceOptions are InstallService's inputs.
type ServiceOptions struct {
	// Paths are the config and state dirs the agent is started with;
	// relative ones are made absolute. Default: DefaultConfigDir,
	// DefaultStateDir.
	Paths config.Paths
	// Binary is the carto-appliance executable the unit runs. Default:
	// the running one in DefaultBinary or PackageBinary, else the one of
	// those that exists.
	Binary string
	// StartTimeout bounds the wait for the agent to report ready. Default:
	// DefaultServiceStartTimeout.
	StartTimeout time.Duration
}

// ServiceState is the agent's unit as systemd sees it.
type ServiceState struct {
	Unit string `json:"unit"`
	// Installed is false when systemd knows no such unit.
	Installed bool `json:"installed"`
	// Enabled: started at boot.
	Enabled bool `json:"enabled"`
	// Active is systemd's ActiveState (active, activating, deactivating,
	// inactive, failed) and Sub its SubState (running, auto-restart, dead,
	// ...).
	Active string `json:"active"`
	Sub    string `json:"sub"`
	// Result is how the last run ended: success, exit-code, signal,
	// watchdog, ...
	Result string `json:"result,omitempty"`
	// MainPID is the agent's process ID while it runs.
	MainPID int `json:"main_pid,omitempty"`
	// Restarts counts systemd's automatic restarts of the agent
	// (NRestarts).
	Restarts int `json:"restarts"`
	// Status is the agent's last STATUS= message.
	Status string `json:"status,omitempty"`
	// UnitFile is the unit file's path.
	UnitFile string `json:"unit_file,omitempty"`
}

// Running reports whether the agent is up and has reported ready.
func (s ServiceState) Running() bool { return s.Active == "active" }

// InstallService registers the agent as a systemd service, enables it and
// starts it, and waits (bounded by StartTimeout) until it reports ready.
// It is idempotent: an installed unit is left alone when it already says
// what opts say, and rewritten (and a running agent restarted) when not.
func InstallService(ctx context.Context, opts ServiceOptions) error {
	m, err := newSystemdManager(true)
	if err != nil {
		return err
	}
	return installService(ctx, m, opts)
}

// CheckService checks, changing nothing, that InstallService can run:
// systemd manages this machine, we are root, and opts' paths and binary
// can go in the unit. Install calls it before it changes anything.
func CheckService(opts ServiceOptions) error {
	if _, err := newSystemdManager(true); err != nil {
		return err
	}
	_, err := opts.resolve()
	return err
}

// UninstallService stops the agent and removes its unit. The stack keeps
// running: its containers belong to the Docker engine, not to the unit.
// Nothing installed is not an error.
func UninstallService(ctx context.Context, paths config.Paths) error {
	m, err := newSystemdManager(true)
	if err != nil {
		return err
	}
	return uninstallService(ctx, m, paths)
}

// ServiceStatus reports the agent's unit. A missing unit is not an error:
// Installed is false.
func ServiceStatus(ctx context.Context) (ServiceState, error) {
	m, err := newSystemdManager(false)
	if err != nil {
		return ServiceState{Unit: ServiceUnit}, err
	}
	return serviceState(ctx, m)
}

// serviceManager is the machine's service manager as these workflows use
// it: kardianos/service for the unit file, systemctl and journalctl for the
// rest. Tests fake it.
type serviceManager interface {
	unitPath() string
	// install writes the unit file, which must not exist, enables the unit
	// and reloads systemd.
	install(cfg *service.Config) error
	// uninstall disables the unit, removes its file and reloads systemd;
	// it does not stop the unit.
	uninstall(cfg *service.Config) error
	// command runs a program (systemctl, journalctl) and returns its
	// standard output; its error carries the standard error.
	command(ctx context.Context, name string, args ...string) (string, error)
}

// installService does InstallService's work on m.
func installService(ctx context.Context, m serviceManager, opts ServiceOptions) error {
	opts, err := opts.resolve()
	if err != nil {
		return err
	}
	want, err := renderUnit(opts)
	if err != nil {
		return err
	}
	path := m.unitPath()
	have, err := os.ReadFile(path)
	changed := false
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// kardianos/service refuses to install over an existing file
		// ("Init already exists"): only a new unit goes through it.
		if err := m.install(serviceConfig(opts)); err != nil {
			return fmt.Errorf("installing %s: %w", ServiceUnit, err)
		}
	case err != nil:
		return fmt.Errorf("reading %s: %w", path, err)
	case bytes.Equal(have, want):
		// Already what opts say: leave it alone.
	default:
		if err := atomicfile.Write(path, want, 0o644); err != nil {
			return fmt.Errorf("updating %s: %w", ServiceUnit, err)
		}
		if _, err := m.command(ctx, "systemctl", "daemon-reload"); err != nil {
			return fmt.Errorf("reloading systemd after updating %s: %w", path, err)
		}
		changed = true
	}

	sctx, cancel := context.WithTimeoutCause(ctx, opts.StartTimeout, errStartTimeout)
	defer cancel()
	if changed {
		// A running agent keeps the settings it started with until it
		// restarts.
		if _, err := m.command(sctx, "systemctl", "try-restart", ServiceUnit); err != nil {
			return startError(ctx, m, opts, "restarting", err)
		}
	}
	// For a Type=notify unit this returns once the agent sent READY=1.
	if _, err := m.command(sctx, "systemctl", "enable", "--now", ServiceUnit); err != nil {
		return startError(ctx, m, opts, "starting", err)
	}
	return waitActive(sctx, m, opts)
}

var errStartTimeout = errors.New("start timeout")

// waitActive confirms that the unit is active, waiting while systemd still
// reports it activating.
func waitActive(ctx context.Context, m serviceManager, opts ServiceOptions) error {
	for {
		st, err := serviceState(ctx, m)
		switch {
		case err != nil:
			return startError(ctx, m, opts, "checking", err)
		case st.Running():
			return nil
		case st.Active == "failed", st.Sub == "auto-restart", st.Active == "inactive":
			return startError(ctx, m, opts, "starting", fmt.Errorf("the agent is %s (%s, result %s)", st.Active, st.Sub, st.Result))
		}
		select {
		case <-ctx.Done():
			return startError(ctx, m, opts, "starting", context.Cause(ctx))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// startError explains a failed start with the agent's last log lines and
// where to read more.
func startError(ctx context.Context, m serviceManager, opts ServiceOptions, doing string, err error) error {
	if errors.Is(err, errStartTimeout) {
		return fmt.Errorf("%s did not report ready within %s (the agent converges the stack first); it keeps starting in the background: follow it with journalctl -u %s -f",
			ServiceUnit, opts.StartTimeout, systemd.Name)
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	logs, _ := m.command(lctx, "journalctl", "-u", ServiceUnit, "-n", "15", "--no-pager", "-o", "cat")
	msg := fmt.Sprintf("%s %s: %v", doing, ServiceUnit, err)
	if logs = strings.TrimSpace(logs); logs != "" {
		msg += "\nlast lines of the agent's log:\n" + logs
	}
	return fmt.Errorf("%s\nsee journalctl -u %s and systemctl status %s", msg, systemd.Name, systemd.Name)
}

// uninstallService does UninstallService's work on m.
func uninstallService(ctx context.Context, m serviceManager, paths config.Paths) error {
	paths = paths.WithDefaults()
	path := m.unitPath()
	_, err := os.Stat(path)
	haveFile := err == nil
	st, err := serviceState(ctx, m)
	if err != nil {
		return err
	}
	if haveFile || st.Installed {
		// kardianos/service's Uninstall does not stop the unit. With
		// KillMode=process only the agent is signalled; the stack runs on.
		if st.Active != "inactive" && st.Active != "failed" {
			if _, err := m.command(ctx, "systemctl", "stop", ServiceUnit); err != nil {
				return fmt.Errorf("stopping %s: %w; see journalctl -u %s", ServiceUnit, err, systemd.Name)
			}
		}
		if haveFile {
			if err := m.uninstall(&service.Config{Name: systemd.Name}); err != nil {
				return fmt.Errorf("removing %s: %w", ServiceUnit, err)
			}
		} else if _, err := m.command(ctx, "systemctl", "disable", ServiceUnit); err != nil {
			// A unit from elsewhere (a package's): stopped, and not
			// started at boot any more.
			return fmt.Errorf("disabling %s (%s, not written by carto-appliance): %w", ServiceUnit, st.UnitFile, err)
		}
		// Forget a failed state, so that the unit is gone from
		// systemctl --failed; a unit that never failed makes this fail.
		m.command(ctx, "systemctl", "reset-failed", ServiceUnit)
	}
	if err := os.Remove(path + atomicfile.PrevSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the previous unit file: %w", err)
	}
	// Nothing supervises the stack any more: the supervisor's record of
	// its restarts would only mislead status.
	if err := os.Remove(filepath.Join(paths.StateDir, config.AgentStateFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the agent's state: %w", err)
	}
	return nil
}

// serviceState reads the unit's state from systemctl show. (kardianos's
// Status answers "not installed" for a unit that is reloading or
// deactivating and drops the failure's cause.)
func serviceState(ctx context.Context, m serviceManager) (ServiceState, error) {
	out, err := m.command(ctx, "systemctl", "show", ServiceUnit, "--no-pager",
		"-p", "LoadState,UnitFileState,ActiveState,SubState,Result,MainPID,NRestarts,StatusText,FragmentPath")
	if err != nil {
		return ServiceState{Unit: ServiceUnit}, fmt.Errorf("reading the state of %s: %w", ServiceUnit, err)
	}
	return parseServiceState(out), nil
}

// parseServiceState reads systemctl show's KEY=VALUE lines.
func parseServiceState(out string) ServiceState {
	st := ServiceState{Unit: ServiceUnit}
	for line := range strings.Lines(out) {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r\n"), "=")
		if !ok {
			continue
		}
		switch k {
		case "LoadState":
			st.Installed = v != "" && v != "not-found"
		case "UnitFileState":
			st.Enabled = v == "enabled"
		case "ActiveState":
			st.Active = v
		case "SubState":
			st.Sub = v
		case "Result":
			st.Result = v
		case "MainPID":
			st.MainPID, _ = strconv.Atoi(v)
		case "NRestarts":
			st.Restarts, _ = strconv.Atoi(v)
		case "StatusText":
			st.Status = v
		case "FragmentPath":
			st.UnitFile = v
		}
	}
	return st
}

// resolve fills in the defaults, makes the paths absolute and checks that
// they can be written in the unit.
func (o ServiceOptions) resolve() (ServiceOptions, error) {
	o.Paths = o.Paths.WithDefaults()
	if o.Binary == "" {
		o.Binary = DefaultBinaryPath()
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = DefaultServiceStartTimeout
	}
	for _, p := range []struct {
		setting, what string
		path          *string
	}{{"config_dir", "the config dir", &o.Paths.ConfigDir}, {"state_dir", "the state dir", &o.Paths.StateDir}, {"binary", "the binary", &o.Binary}} {
		abs, err := filepath.Abs(*p.path)
		if err != nil {
			return o, &SettingError{Setting: p.setting, Err: fmt.Errorf("%s %q: %w", p.what, *p.path, err)}
		}
		// systemd expands % and $ in ExecStart even inside quotes, and
		// the template's quoting does not escape backslashes.
		if i := strings.IndexFunc(abs, func(r rune) bool { return r < 0x20 || r == 0x7f || strings.ContainsRune(`%$\"`, r) }); i >= 0 {
			return o, &SettingError{Setting: p.setting, Err: fmt.Errorf("%s %q: the path has %q, which a systemd unit cannot carry; use a path without %%, $, \\, \" or control characters", p.what, *p.path, abs[i:i+1])}
		}
		*p.path = abs
	}
	fi, err := os.Stat(o.Binary)
	switch {
	case err != nil:
		return o, &SettingError{Setting: "binary", Err: fmt.Errorf("the unit would run %s: %w; install the binary there (install.sh puts it in %s, the packages in %s) or name another", o.Binary, err, DefaultBinary, PackageBinary)}
	case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
		return o, &SettingError{Setting: "binary", Err: fmt.Errorf("the unit would run %s, which is not an executable file; chmod 0755 it or name another", o.Binary)}
	}
	return o, nil
}

// agentArgs are the agent's command line after the binary.
func (o ServiceOptions) agentArgs() []string {
	return []string{"agent", "--config-dir", o.Paths.ConfigDir, "--state-dir", o.Paths.StateDir}
}

const serviceDescription = "CARTO Self-Hosted appliance agent"

// serviceConfig is kardianos/service's configuration for the resolved
// opts, with our unit template (its built-in one is Type=simple with
// RestartSec=120).
func serviceConfig(o ServiceOptions) *service.Config {
	return &service.Config{
		Name:        systemd.Name,
		DisplayName: serviceDescription,
		Description: serviceDescription,
		Executable:  o.Binary,
		Arguments:   o.agentArgs(),
		Option:      service.KeyValue{"SystemdScript": systemd.UnitTemplate},
	}
}

// renderUnit is the unit file kardianos/service writes for the resolved
// opts. It expands the three actions the template uses exactly as
// kardianos's engine does (cmdEscape: spaces to \x20; cmd: double quotes
// with \" inside); a template with any other action is an error here, so a
// change to the template cannot silently diverge from what gets installed
// (the golden test and the fresh-VM scenario compare both).
func renderUnit(o ServiceOptions) ([]byte, error) {
	cfg := serviceConfig(o)
	var args strings.Builder
	for _, a := range cfg.Arguments {
		args.WriteString(` "` + strings.ReplaceAll(a, `"`, `\"`) + `"`)
	}
	r := strings.NewReplacer(
		"{{Description}}", cfg.Description,
		"{{Path | cmdEscape}}", strings.ReplaceAll(cfg.Executable, " ", `\x20`),
		"{{range Arguments}} {{. | cmd}}{{end}}", args.String(),
	)
	out := r.Replace(systemd.UnitTemplate)
	if i := strings.Index(out, "{{"); i >= 0 {
		end := min(len(out), i+40)
		return nil, fmt.Errorf("rendering %s: the template has an action renderUnit does not know: %q", ServiceUnit, out[i:end])
	}
	return []byte(out), nil
}

// systemdManager is the real machine's systemd.
type systemdManager struct{}

// newSystemdManager checks that systemd runs this machine (and that we are
// root, when the workflow changes it).
func newSystemdManager(needRoot bool) (serviceManager, error) {
	if !SystemdRunning() {
		return nil, fmt.Errorf("%w (no /run/systemd/system), so the agent cannot run as %s: install without the agent and keep the stack up yourself", ErrNoSystemd, ServiceUnit)
	}
	if sys := service.ChosenSystem(); sys == nil || sys.String() != "linux-systemd" {
		return nil, fmt.Errorf("%w: kardianos/service detected %v", ErrNoSystemd, sys)
	}
	if needRoot && os.Geteuid() != 0 {
		return nil, fmt.Errorf("changing %s needs root: run with sudo", ServiceUnit)
	}
	return systemdManager{}, nil
}

func (systemdManager) unitPath() string { return "/etc/systemd/system/" + ServiceUnit }

func (systemdManager) install(cfg *service.Config) error {
	svc, err := service.New(noProgram{}, cfg)
	if err != nil {
		return err
	}
	return svc.Install()
}

func (systemdManager) uninstall(cfg *service.Config) error {
	svc, err := service.New(noProgram{}, cfg)
	if err != nil {
		return err
	}
	return svc.Uninstall()
}

func (systemdManager) command(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(os.Environ(), "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		msg := strings.TrimSpace(errOut.String())
		if msg == "" {
			msg = strings.TrimSpace(out.String())
		}
		if msg != "" {
			return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return out.String(), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// noProgram satisfies service.Interface; the agent is run by systemd, not
// through kardianos's Run.
type noProgram struct{}

func (noProgram) Start(service.Service) error { return nil }
func (noProgram) Stop(service.Service) error  { return nil }
