package stack

import (
	"context"
	"fmt"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// probeEvery is how often Apply runs a starting service's healthcheck
// itself. The engine runs it only every `interval` (5 s in CARTO's
// template; start_interval needs Engine 25+), so waiting for the engine's
// verdict would cost up to an interval per level of the dependency graph;
// running the same test sooner lets dependents start as soon as it passes.
const probeEvery = 500 * time.Millisecond

// probeCommand is the healthcheck's test as an exec command; nil when the
// test cannot be run this way (inherited from the image, or disabled).
func probeCommand(hc *types.HealthCheckConfig) []string {
	if hc == nil || hc.Disable || len(hc.Test) == 0 {
		return nil
	}
	switch hc.Test[0] {
	case "CMD":
		return hc.Test[1:]
	case "CMD-SHELL":
		if len(hc.Test) == 2 {
			return []string{"/bin/sh", "-c", hc.Test[1]}
		}
	}
	return nil
}

// probe runs cmd in the container and reports whether it exited 0 within
// the healthcheck's timeout.
func (e *Engine) probe(ctx context.Context, id string, cmd []string, hc *types.HealthCheckConfig) bool {
	timeout := 30 * time.Second
	if hc.Timeout != nil {
		timeout = time.Duration(*hc.Timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	code, err := e.runExec(ctx, id, cmd)
	return err == nil && code == 0
}

// runExec runs cmd in the container, detached from any terminal, and
// returns its exit code once it has ended.
func (e *Engine) runExec(ctx context.Context, id string, cmd []string) (int, error) {
	ex, err := e.api.ExecCreate(ctx, id, client.ExecCreateOptions{Cmd: cmd})
	if err != nil {
		return 0, fmt.Errorf("running %s: %w", cmd[0], err)
	}
	// A non-detached start returns when the command has ended.
	if _, err := e.api.ExecStart(ctx, ex.ID, client.ExecStartOptions{}); err != nil {
		return 0, fmt.Errorf("running %s: %w", cmd[0], err)
	}
	for {
		res, err := e.api.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
		if err != nil {
			return 0, fmt.Errorf("running %s: %w", cmd[0], err)
		}
		if !res.Running {
			return res.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("running %s: %w", cmd[0], ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// awaitEngineHealthy waits until the engine itself reports the container
// healthy, so that the status shown after an apply agrees with it.
func (c *converger) awaitEngineHealthy(ctx context.Context, name, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	for {
		insp, err := c.e.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return c.serviceError(name, id, "passed its healthcheck, but the engine did not report it healthy in time")
			}
			return err
		}
		h := insp.Container.State.Health
		switch {
		case h == nil || h.Status == container.Healthy:
			return nil
		case h.Status == container.Unhealthy || !insp.Container.State.Running:
			return c.serviceError(name, id, "turned unhealthy right after passing its healthcheck")
		}
		select {
		case <-ctx.Done():
			return c.serviceError(name, id, "passed its healthcheck, but the engine did not report it healthy in time")
		case <-time.After(250 * time.Millisecond):
		}
	}
}
