package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Service states reported by Status, beyond the engine's own (running,
// exited, restarting, created, paused, dead).
const (
	StateMissing   = "missing"   // in the project, no container
	StateCompleted = "completed" // a one-shot service that exited 0
)

// ServiceStatus is one service of the stack as the engine sees it.
type ServiceStatus struct {
	Name      string `json:"name"`
	Container string `json:"container,omitempty"`
	State     string `json:"state"`
	Health    string `json:"health"` // healthy, unhealthy, starting, or none
	// HealthProbed is set when Health is healthy because the agent ran
	// the service's healthcheck itself on this run of the container and
	// it passed, while the engine, whose first check comes an interval
	// after the start, still said starting.
	HealthProbed bool   `json:"health_probed,omitempty"`
	Image        string `json:"image"`
	Restarts     int    `json:"restarts"`
	ExitCode     int    `json:"exit_code,omitempty"`
	// Version is the appliance's io.carto.appliance.version label.
	Version   string    `json:"version,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// AgentRestarts and CrashLoop come from the supervisor (the engine's
	// own restarts are in Restarts).
	AgentRestarts int  `json:"agent_restarts"`
	CrashLoop     bool `json:"crash_loop"`
	// Held is set for a service the operator stopped (or one that depends
	// on it): it stays stopped until started again.
	Held bool `json:"held"`
}

// Status reports every service of the project (missing ones included) and
// any other container of the compose project, sorted by name.
func (e *Engine) Status(ctx context.Context, p *types.Project) ([]ServiceStatus, error) {
	have, _, err := e.projectContainers(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	var out []ServiceStatus
	seen := map[string]bool{}
	for name, c := range have {
		st, err := e.serviceStatus(ctx, name, c)
		if cerrdefs.IsNotFound(err) {
			// Removed since it was listed (a converge recreating it):
			// reported as missing, as it is right now.
			continue
		}
		if err != nil {
			return nil, err
		}
		seen[name] = true
		if s, ok := p.Services[name]; ok && isOneShot(s) && st.State == string(container.StateExited) && st.ExitCode == 0 {
			st.State = StateCompleted
		}
		out = append(out, st)
	}
	for name, s := range p.Services {
		if !seen[name] {
			out = append(out, ServiceStatus{Name: name, State: StateMissing, Health: "none", Image: s.Image})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (e *Engine) serviceStatus(ctx context.Context, name string, c container.Summary) (ServiceStatus, error) {
	insp, err := e.api.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
	if err != nil {
		return ServiceStatus{}, fmt.Errorf("inspecting the container of %s: %w", name, err)
	}
	ic := insp.Container
	st := ServiceStatus{
		Name: name, Container: strings.TrimPrefix(ic.Name, "/"), State: string(ic.State.Status),
		Health: "none", Image: c.Image, Restarts: ic.RestartCount, ExitCode: ic.State.ExitCode,
		Version: c.Labels[LabelVersion],
	}
	if ic.State.Health != nil {
		st.Health = string(ic.State.Health.Status)
	}
	if t, err := time.Parse(time.RFC3339Nano, ic.State.StartedAt); err == nil && ic.State.Running {
		st.StartedAt = t
	}
	return st, nil
}

// LogsOptions selects what Logs shows.
type LogsOptions struct {
	Services []string // empty: every service
	Follow   bool
	Since    string // as docker logs --since: a duration ("10m") or a timestamp
	Tail     string // lines per service; "" or "all"
	// Redact, when set, is applied to every line before it is written.
	Redact func(string) string `json:"-"`
}

// Logs writes the services' output to w, each line prefixed with the
// service name, until the logs end (or ctx is cancelled when following).
func (e *Engine) Logs(ctx context.Context, project string, w io.Writer, opts LogsOptions) error {
	have, _, err := e.projectContainers(ctx, project)
	if err != nil {
		return err
	}
	want := opts.Services
	if len(want) == 0 {
		want = sortedKeys(have)
	}
	width := 0
	for _, s := range want {
		if _, ok := have[s]; !ok {
			return fmt.Errorf("service %q has no container in project %s (known: %s)", s, project, strings.Join(sortedKeys(have), ", "))
		}
		width = max(width, len(s))
	}
	var mu sync.Mutex // one line at a time on w
	var wg sync.WaitGroup
	errs := make(chan error, len(want))
	for _, s := range want {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc, err := e.api.ContainerLogs(ctx, have[s].ID, client.ContainerLogsOptions{
				ShowStdout: true, ShowStderr: true, Follow: opts.Follow, Since: opts.Since, Tail: opts.Tail,
			})
			if err != nil {
				errs <- fmt.Errorf("reading the logs of %s: %w", s, err)
				return
			}
			defer rc.Close()
			pr, pw := io.Pipe()
			go func() {
				_, err := stdcopy.StdCopy(pw, pw, rc)
				pw.CloseWithError(err)
			}()
			prefix := fmt.Sprintf("%-*s | ", width, s)
			sc := bufio.NewScanner(pr)
			sc.Buffer(make([]byte, 64*1024), 1024*1024)
			for sc.Scan() {
				line := sc.Text()
				if opts.Redact != nil {
					line = opts.Redact(line)
				}
				mu.Lock()
				io.WriteString(w, prefix+line+"\n")
				mu.Unlock()
			}
			if err := sc.Err(); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("reading the logs of %s: %w", s, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if ctx.Err() != nil {
		return nil // following ends by cancellation; that is not an error
	}
	return <-errs
}

// DownOptions configures Down.
type DownOptions struct {
	RemoveVolumes bool // also delete the project's named volumes: their data is lost
	Reporter      Reporter
}

// Down stops and removes every container of the compose project, dependents
// first, then its networks and, when asked, its volumes.
//
// A network the engine will not remove only because it still counts an
// endpoint of a container that is gone (an engine fault) is not a failure
// of Down: when that is all that went wrong, the error is a
// *StaleNetworksError, which callers report as a warning.
func (e *Engine) Down(ctx context.Context, project string, p *types.Project, opts DownOptions) error {
	rep := reporterOrDiscard(opts.Reporter)
	have, extras, err := e.projectContainers(ctx, project)
	if err != nil {
		return err
	}
	// The names of the containers removed: an endpoint the engine keeps
	// after them is named after them.
	var removed []string
	for _, c := range append(slices.Collect(maps.Values(have)), extras...) {
		for _, n := range c.Names {
			removed = append(removed, strings.TrimPrefix(n, "/"))
		}
	}
	for _, c := range extras {
		if err := e.removeContainer(ctx, c.ID, 10*time.Second); err != nil {
			return fmt.Errorf("removing a duplicate container of %s: %w", c.Labels[labelService], err)
		}
	}
	err = inReverseDependencyOrder(p, have, func(s string, c container.Summary) error {
		rep.Report(Event{Service: s, Action: ActionStopping})
		if err := e.removeContainer(ctx, c.ID, graceOf(p, s)); err != nil {
			return fmt.Errorf("service %s: %w", s, err)
		}
		rep.Report(Event{Service: s, Action: ActionRemoved})
		return nil
	})
	if err != nil {
		return err
	}
	filter := make(client.Filters).Add("label", labelProject+"="+project)
	nets, err := e.api.NetworkList(ctx, client.NetworkListOptions{Filters: filter})
	if err != nil {
		return fmt.Errorf("listing networks: %w", err)
	}
	// A network that cannot go is reported, but does not keep the
	// volumes of a purge: the containers are gone, and an empty network
	// left behind harms nothing (a next install takes it over).
	var netErrs []error
	stale := &StaleNetworksError{}
	for _, n := range nets.Items {
		if err := e.removeNetwork(ctx, n.ID, n.Name, removed); err != nil {
			if ctx.Err() != nil {
				return err
			}
			if errors.Is(err, errStaleEndpoint) {
				stale.Networks = append(stale.Networks, n.Name)
				stale.Errs = append(stale.Errs, err)
				continue
			}
			netErrs = append(netErrs, err)
		}
	}
	if len(stale.Networks) > 0 {
		netErrs = append(netErrs, stale)
	}
	// errors.Join keeps even a lone error wrapped; a lone stale network
	// is returned as itself for callers to tell it from a failure.
	joined := func() error {
		if len(netErrs) == 1 {
			return netErrs[0]
		}
		return errors.Join(netErrs...)
	}
	if !opts.RemoveVolumes {
		return joined()
	}
	vols, err := e.api.VolumeList(ctx, client.VolumeListOptions{Filters: filter})
	if err != nil {
		return fmt.Errorf("listing volumes: %w", err)
	}
	for _, v := range vols.Items {
		if _, err := e.api.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("removing volume %s: %w", v.Name, err)
		}
	}
	return joined()
}

// Leftovers names the project's containers and volumes on the engine
// (volumes as "volume NAME"): what an uninstall that kept the data, or a
// stack brought up by other means, leaves behind.
func (e *Engine) Leftovers(ctx context.Context, project string) ([]string, error) {
	have, extras, err := e.projectContainers(ctx, project)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range append(slices.Collect(maps.Values(have)), extras...) {
		if len(c.Names) > 0 {
			out = append(out, strings.TrimPrefix(c.Names[0], "/"))
		}
	}
	vols, err := e.api.VolumeList(ctx, client.VolumeListOptions{Filters: make(client.Filters).Add("label", labelProject+"="+project)})
	if err != nil {
		return nil, fmt.Errorf("listing volumes: %w", err)
	}
	for _, v := range vols.Items {
		out = append(out, "volume "+v.Name)
	}
	slices.Sort(out)
	return out, nil
}

// errStaleEndpoint marks a network removal refused for an endpoint no
// container holds.
var errStaleEndpoint = errors.New("the Docker engine still records an endpoint on it although no container is attached (an engine fault)")

// StaleNetworksError names the networks Down left because the engine
// still counts an endpoint on them that no container holds (seen with
// Docker 20.10 when many containers come and go). They are empty and
// harmless, a next install takes them over, and a restart of the engine
// lets them be removed.
type StaleNetworksError struct {
	Networks []string
	Errs     []error // each names its network and the fix
}

func (e *StaleNetworksError) Error() string {
	return errors.Join(e.Errs...).Error()
}

func (e *StaleNetworksError) Unwrap() []error { return e.Errs }

// networkSettle bounds the wait for a network the project's removed
// containers still hold: the engine releases their endpoints a moment
// after it answered their removal, and under load that moment grows.
const networkSettle = 15 * time.Second

// removeNetwork removes a network of the project, waiting (bounded) for
// the endpoints of the containers just removed (by name: removed) to go;
// a container of another project still attached is named, with the fix.
func (e *Engine) removeNetwork(ctx context.Context, id, name string, removed []string) error {
	deadline := time.Now().Add(networkSettle)
	forced := false
	for {
		_, err := e.api.NetworkRemove(ctx, id, client.NetworkRemoveOptions{})
		if err == nil || cerrdefs.IsNotFound(err) {
			return nil
		}
		if !strings.Contains(err.Error(), "active endpoints") || time.Now().After(deadline) {
			if inspect, ierr := e.api.NetworkInspect(ctx, id, client.NetworkInspectOptions{}); ierr == nil && len(inspect.Network.Containers) > 0 {
				var names []string
				for _, c := range inspect.Network.Containers {
					names = append(names, c.Name)
				}
				sort.Strings(names)
				return fmt.Errorf("removing network %s: containers of no service of the stack are attached to it (%s): disconnect or remove them (docker network disconnect %s NAME) and run this again: %w", name, strings.Join(names, ", "), name, err)
			}
			if strings.Contains(err.Error(), "active endpoints") && !forced && len(removed) > 0 {
				// No container is attached, yet the engine keeps an
				// endpoint: a stale record of a container just removed
				// (seen with Docker 20.10 under load). A forced disconnect
				// by the container's name deletes such a record; the
				// containers are gone, so nothing else is disconnected.
				forced = true
				for _, c := range removed {
					e.api.NetworkDisconnect(ctx, id, client.NetworkDisconnectOptions{Container: c, Force: true})
				}
				continue
			}
			if strings.Contains(err.Error(), "active endpoints") {
				// The record outlived a forced disconnect too: the
				// engine's restart drops it.
				return fmt.Errorf("removing network %s: %w; it is empty and harmless, and `systemctl restart docker` then `docker network rm %s` removes it: %v", name, errStaleEndpoint, name, err)
			}
			return fmt.Errorf("removing network %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func hasDependent(p *types.Project, s string, among map[string]bool) bool {
	if p == nil {
		return false
	}
	for name, svc := range p.Services {
		if !among[name] || name == s {
			continue
		}
		if _, ok := svc.DependsOn[s]; ok {
			return true
		}
	}
	return false
}
