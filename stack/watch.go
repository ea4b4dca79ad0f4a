package stack

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// ContainerEvent is a change to one of the project's containers that the
// supervisor may have to act on.
type ContainerEvent struct {
	Service     string
	ContainerID string
	Action      string // die, oom, start, health_status: unhealthy, ...
}

// Watch streams the project's container events until ctx ends or the
// engine connection fails (the error channel then gets the reason; the
// caller reconnects).
func (e *Engine) Watch(ctx context.Context, project string) (<-chan ContainerEvent, <-chan error) {
	res := e.api.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).
		Add("type", "container").
		Add("label", labelProject+"="+project)})
	out := make(chan ContainerEvent)
	go func() {
		defer close(out)
		for m := range res.Messages {
			if m.Actor.Attributes[labelOneoff] == "True" {
				continue
			}
			ev := ContainerEvent{Service: m.Actor.Attributes[labelService], ContainerID: m.Actor.ID, Action: string(m.Action)}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, res.Err
}

// ServiceHealth is what the supervisor needs to know of one service.
type ServiceHealth struct {
	ContainerID string // "" when the service has no container
	// NeedsRevival is set when the container has stopped or turned
	// unhealthy and is not a one-shot service (restart "no"): it should
	// be running and is not.
	NeedsRevival bool
	// RestartCount is how often the engine's restart policy restarted it.
	RestartCount int
}

// ServiceState inspects one service's container.
func (e *Engine) ServiceState(ctx context.Context, project, service string) (ServiceHealth, error) {
	have, _, err := e.projectContainers(ctx, project)
	if err != nil {
		return ServiceHealth{}, err
	}
	c, ok := have[service]
	if !ok {
		return ServiceHealth{}, nil // not created: converging, not reviving, fixes that
	}
	return e.healthOf(ctx, service, c.ID)
}

// ServiceStates inspects every service's container with one listing: the
// supervisor's periodic pass.
func (e *Engine) ServiceStates(ctx context.Context, project string) (map[string]ServiceHealth, error) {
	have, _, err := e.projectContainers(ctx, project)
	if err != nil {
		return nil, err
	}
	out := make(map[string]ServiceHealth, len(have))
	for service, c := range have {
		h, err := e.healthOf(ctx, service, c.ID)
		if cerrdefs.IsNotFound(err) {
			continue // removed since the listing: the next pass sees what replaced it
		}
		if err != nil {
			return nil, err
		}
		out[service] = h
	}
	return out, nil
}

func (e *Engine) healthOf(ctx context.Context, service, id string) (ServiceHealth, error) {
	insp, err := e.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return ServiceHealth{}, fmt.Errorf("inspecting %s: %w", service, err)
	}
	ic := insp.Container
	h := ServiceHealth{ContainerID: id, RestartCount: ic.RestartCount}
	if ic.HostConfig != nil && (ic.HostConfig.RestartPolicy.Name == container.RestartPolicyDisabled || ic.HostConfig.RestartPolicy.Name == "") {
		return h, nil
	}
	st := ic.State
	unhealthy := st.Health != nil && st.Health.Status == container.Unhealthy
	h.NeedsRevival = !st.Restarting && (!st.Running || unhealthy)
	return h, nil
}

// Revive restarts a service's container when ServiceState says it needs
// it, and reports whether it did.
func (e *Engine) Revive(ctx context.Context, project, service string) (bool, error) {
	h, err := e.ServiceState(ctx, project, service)
	if err != nil || !h.NeedsRevival {
		return false, err
	}
	if _, err := e.api.ContainerRestart(ctx, h.ContainerID, client.ContainerRestartOptions{}); err != nil {
		return false, fmt.Errorf("restarting %s: %w", service, err)
	}
	return true, nil
}

// Probed is a container run whose healthcheck passed when the supervisor
// ran it itself (ProbeStarted): the container by name and the start it
// passed after, which a restart changes.
type Probed struct {
	Container string    `json:"container"`
	StartedAt time.Time `json:"started_at"`
}

// ProbeStarted runs a just started container's healthcheck itself, every
// probeEvery, until it passes (the run is returned), the engine has a
// verdict of its own, the container stops running or ctx ends (nil, with
// no error). The engine runs its first check only an interval after the
// start (5 s in CARTO's template; start_interval needs Engine 25+), and
// until then reports the container starting: the supervisor records the
// pass so that status reports the service healthy as soon as its own
// test says so, as Apply does for dependants (SPEC §15: healthy again
// within 5 s). A service without a test that can run this way gives nil.
func (e *Engine) ProbeStarted(ctx context.Context, id string, hc *types.HealthCheckConfig) (*Probed, error) {
	cmd := probeCommand(hc)
	if cmd == nil {
		return nil, nil
	}
	for {
		insp, err := e.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if ctx.Err() != nil || cerrdefs.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("inspecting the container: %w", err)
		}
		st := insp.Container.State
		if !st.Running || st.Health == nil || st.Health.Status != container.Starting {
			return nil, nil
		}
		started, err := time.Parse(time.RFC3339Nano, st.StartedAt)
		if err != nil {
			return nil, fmt.Errorf("reading the container's start %q: %w", st.StartedAt, err)
		}
		if e.probe(ctx, id, cmd, hc) {
			return &Probed{Container: strings.TrimPrefix(insp.Container.Name, "/"), StartedAt: started}, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(probeEvery):
		}
	}
}
