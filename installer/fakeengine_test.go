package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"

	"github.com/cartodb/carto-appliance/firewall"
	"github.com/cartodb/carto-appliance/host"
	"github.com/cartodb/carto-appliance/preflight"
	"github.com/cartodb/carto-appliance/stack"
)

// fakeStack is a Docker engine in memory for the workflows' unit tests:
// it records what it was asked, in order, keeps which services run with
// which configuration (so that a second apply of the same project changes
// nothing, as the real engine's does), and fails the calls it is told to.
type fakeStack struct {
	mu sync.Mutex

	// Log is every call, in order, with the firewall's and the host
	// engine's (as "firewall apply", "firewall clear").
	Log      []string
	Connects int
	Closes   int
	Pulls    []stack.PullOptions
	Applies  []stack.ApplyOptions
	Stops    [][]string // the names of each Stop
	Signals  []string   // "service SIGNAL"
	Downs    []stack.DownOptions
	DownOf   []string // the project name of each Down
	LogsOpts []stack.LogsOptions
	Rules    []*firewall.Rules // what firewallApply was given

	// Fail makes the named call ("connect", "pull", "apply", "stop",
	// "down", "signal", "status", "logs") return an error.
	Fail map[string]error
	// ConnectFailures is how many connections fail before one succeeds.
	ConnectFailures int
	// Statuses replaces Status's answer for these services.
	Statuses map[string]stack.ServiceStatus
	// LogLines are what Logs writes, through the redactor it is given.
	LogLines []string
	// Execs answers Exec, by the command's first word; ExecFunc, when
	// set, answers first (ok false: Execs answers).
	Execs    map[string]fakeExec
	ExecFunc func(project string, cmd []string) (a fakeExec, ok bool)
	// ExecErr, when set, fails the Execs it returns an error for.
	ExecErr func(cmd []string) error
	// DigestsFor answers RepoDigests.
	DigestsFor func(ref string) []string
	// ApplyErrs are the results of the next Applies, in turn (nil:
	// succeed); after them, Applies succeed.
	ApplyErrs []error
	// OnApply, when set, sees each Apply before it is answered.
	OnApply func(p *types.Project, opts stack.ApplyOptions)

	// InfoFailures is how many Info calls fail before one answers.
	InfoFailures int
	// images are the loaded images' IDs by reference.
	images map[string]string

	running map[string]string // service -> its configuration, as applied
	// DiagnoseEnv is the environment of every container Diagnose shows.
	DiagnoseEnv []string
	// LeftoverNames answers Leftovers.
	LeftoverNames []string
}

// fakes puts a fakeStack in place of the Docker engine, a host.FakeEngine
// in place of the engine's settings, fakes in place of the host firewall
// and passing preflight checks, for the test's duration. Tests using it
// swap package variables: they must not run in parallel.
func fakes(t *testing.T) (*fakeStack, *host.FakeEngine) {
	t.Helper()
	f := &fakeStack{Fail: map[string]error{}, running: map[string]string{}}
	prevConnect, prevApply, prevClear, prevChecks := connectEngine, firewallApply, firewallClear, runChecks
	t.Cleanup(func() {
		connectEngine, firewallApply, firewallClear, runChecks = prevConnect, prevApply, prevClear, prevChecks
	})
	connectEngine = func(context.Context) (stackEngine, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.Log = append(f.Log, "connect")
		if f.ConnectFailures > 0 {
			f.ConnectFailures--
			return nil, fmt.Errorf("fake: cannot connect to the Docker daemon")
		}
		if err := f.Fail["connect"]; err != nil {
			return nil, err
		}
		f.Connects++
		return f, nil
	}
	firewallApply = func(_ context.Context, _ firewall.Host, r *firewall.Rules) error {
		f.record("firewall apply")
		f.mu.Lock()
		defer f.mu.Unlock()
		f.Rules = append(f.Rules, r)
		return f.Fail["firewall"]
	}
	firewallClear = func(context.Context, firewall.Host, string) error {
		f.record("firewall clear")
		return f.Fail["firewall"]
	}
	runChecks = func(context.Context, preflight.Options) *preflight.Report {
		return &preflight.Report{Checks: []preflight.Check{{ID: "os", Title: "Operating system", Status: preflight.Pass}}}
	}
	return f, fakeEngine(t)
}

// fakeExec is a command's answer in the fake engine.
type fakeExec struct {
	Out  string
	Code int
}

func (f *fakeStack) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Log = append(f.Log, call)
}

// calls are the log's entries that start with prefix.
func (f *fakeStack) calls(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.Log {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeStack) Pull(_ context.Context, p *types.Project, opts stack.PullOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Log = append(f.Log, "pull "+p.Name)
	f.Pulls = append(f.Pulls, opts)
	return f.Fail["pull"]
}

// Apply creates the services it does not run, recreates those whose
// configuration changed, and keeps the held ones (and their dependents)
// stopped.
func (f *fakeStack) Apply(_ context.Context, p *types.Project, opts stack.ApplyOptions) (*stack.ApplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Log = append(f.Log, "apply "+p.Name)
	f.Applies = append(f.Applies, opts)
	if f.OnApply != nil {
		f.OnApply(p, opts)
	}
	if err := f.Fail["apply"]; err != nil {
		return &stack.ApplyResult{}, err
	}
	if len(f.ApplyErrs) > 0 {
		err := f.ApplyErrs[0]
		f.ApplyErrs = f.ApplyErrs[1:]
		if err != nil {
			return &stack.ApplyResult{}, err
		}
	}
	held := stack.Dependents(p, opts.Held)
	res := &stack.ApplyResult{Held: held}
	for _, name := range p.ServiceNames() {
		if slices.Contains(held, name) {
			if _, ok := f.running[name]; ok {
				res.Stopped = append(res.Stopped, name)
				delete(f.running, name)
			}
			continue
		}
		b, err := json.Marshal(p.Services[name])
		if err != nil {
			return nil, err
		}
		have, ok := f.running[name]
		switch {
		case !ok:
			res.Created = append(res.Created, name)
		case have != string(b):
			res.Recreated = append(res.Recreated, name)
		default:
			res.Unchanged = append(res.Unchanged, name)
		}
		f.running[name] = string(b)
	}
	return res, nil
}

func (f *fakeStack) Stop(_ context.Context, p *types.Project, names []string, _ stack.Reporter) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Log = append(f.Log, "stop "+strings.Join(names, ","))
	f.Stops = append(f.Stops, slices.Clone(names))
	if err := f.Fail["stop"]; err != nil {
		return nil, err
	}
	var stopped []string
	for _, n := range names {
		if _, ok := f.running[n]; ok {
			stopped = append(stopped, n)
			delete(f.running, n)
		}
	}
	return stopped, nil
}

func (f *fakeStack) Signal(_ context.Context, project, service, signal string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Log = append(f.Log, "signal "+service+" "+signal)
	f.Signals = append(f.Signals, service+" "+signal)
	_, ok := f.running[service]
	return ok, f.Fail["signal"]
}

// Status reports the services that run as running and healthy, the
// others as missing, unless Statuses says otherwise.
func (f *fakeStack) Status(_ context.Context, p *types.Project) ([]stack.ServiceStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Log = append(f.Log, "status "+p.Name)
	if err := f.Fail["status"]; err != nil {
		return nil, err
	}
	var out []stack.ServiceStatus
	for _, name := range p.ServiceNames() {
		s := stack.ServiceStatus{Name: name, State: "missing", Health: "none"}
		if _, ok := f.running[name]; ok {
			s.State, s.Health = "running", "healthy"
		}
		if o, ok := f.Statuses[name]; ok {
			s = o
		}
		out = append(out, s)
	}
	return out, nil
}

func (f *fakeStack) Logs(_ context.Context, project string, w io.Writer, opts stack.LogsOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Log = append(f.Log, "logs "+project)
	f.LogsOpts = append(f.LogsOpts, opts)
	for _, l := range f.LogLines {
		if opts.Redact != nil {
			l = opts.Redact(l)
		}
		fmt.Fprintln(w, l)
	}
	return f.Fail["logs"]
}

func (f *fakeStack) Down(_ context.Context, project string, _ *types.Project, opts stack.DownOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Log = append(f.Log, "down "+project)
	f.Downs = append(f.Downs, opts)
	f.DownOf = append(f.DownOf, project)
	if err := f.Fail["down"]; err != nil {
		return err
	}
	clear(f.running)
	return nil
}

func (f *fakeStack) Leftovers(_ context.Context, project string) ([]string, error) {
	f.record("leftovers " + project)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.LeftoverNames, f.Fail["leftovers"]
}

// Exec records the command; Execs answers it (by its first word: its
// output and exit code), exit 0 with no output otherwise.
func (f *fakeStack) Exec(_ context.Context, project, service string, opts stack.ExecOptions) (int, error) {
	f.record("exec " + service + " " + strings.Join(opts.Cmd, " "))
	if err := f.Fail["exec"]; err != nil {
		return 0, err
	}
	if f.ExecErr != nil {
		if err := f.ExecErr(opts.Cmd); err != nil {
			return 0, err
		}
	}
	if opts.Stdin != nil {
		io.Copy(io.Discard, opts.Stdin)
	}
	a, ok := fakeExec{}, false
	if f.ExecFunc != nil {
		a, ok = f.ExecFunc(project, opts.Cmd)
	}
	if !ok {
		a = f.Execs[opts.Cmd[0]]
	}
	if opts.Stdout != nil {
		io.WriteString(opts.Stdout, a.Out)
	}
	return a.Code, nil
}

// RepoDigests answers DigestsFor(ref); none without it.
func (f *fakeStack) RepoDigests(_ context.Context, ref string) ([]string, error) {
	f.record("digests " + ref)
	if f.DigestsFor == nil {
		return nil, nil
	}
	return f.DigestsFor(ref), nil
}

// Info answers once InfoFailures (each failing call counts one down)
// are spent: an engine restarting.
// Diagnose answers a container per running service, each with
// DiagnoseEnv as its environment.
func (f *fakeStack) Diagnose(_ context.Context, project string) (*stack.Diagnostics, error) {
	f.record("diagnose")
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.Fail["diagnose"]; err != nil {
		return nil, err
	}
	d := &stack.Diagnostics{Info: map[string]any{"ServerVersion": "28.2.2"}}
	for _, svc := range slices.Sorted(maps.Keys(f.running)) {
		d.Containers = append(d.Containers, container.InspectResponse{Name: "/" + project + "-" + svc + "-1", Config: &container.Config{Env: f.DiagnoseEnv}})
	}
	return d, nil
}

func (f *fakeStack) Info(context.Context) (stack.EngineInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Log = append(f.Log, "info")
	if f.InfoFailures > 0 {
		f.InfoFailures--
		return stack.EngineInfo{}, errors.New("fake: Cannot connect to the Docker daemon")
	}
	return stack.EngineInfo{Version: "28.2.2"}, nil
}

// LoadImage reads the image file whole and records it (the engine then
// has the image id, tagged as refs); Fail["load"] fails it.
func (f *fakeStack) LoadImage(_ context.Context, r io.Reader, id string, refs []string, _ io.Writer) (bool, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.images == nil {
		f.images = map[string]string{}
	}
	loaded := !slices.Contains(slices.Collect(maps.Values(f.images)), id)
	f.Log = append(f.Log, fmt.Sprintf("load %s (%d bytes) as %s loaded=%t", id, len(b), strings.Join(refs, ","), loaded))
	if err := f.Fail["load"]; err != nil {
		return false, err
	}
	for _, ref := range refs {
		f.images[ref] = id
	}
	return loaded, nil
}

func (f *fakeStack) ImageID(_ context.Context, ref string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.images[ref], nil
}

func (f *fakeStack) UntagImage(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Log = append(f.Log, "untag "+ref)
	delete(f.images, ref)
	return nil
}

func (f *fakeStack) PortOwner(context.Context, int) (string, string, error) {
	f.record("port-owner")
	return "", "", nil
}

func (f *fakeStack) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Closes++
	return nil
}

// allClosed fails the test when a connection the workflow opened was not
// closed.
func (f *fakeStack) allClosed(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Connects != f.Closes {
		t.Errorf("%d connections to the engine, %d closed", f.Connects, f.Closes)
	}
}
