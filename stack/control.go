package stack

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Dependents returns the named services and every service that depends on
// one of them, directly or through others, sorted; names the project does
// not have are left out. Stopping a service
// stops these too: none of them could run without it.
func Dependents(p *types.Project, names []string) []string {
	return closure(p, names, func(s string) []string {
		var out []string
		for name, svc := range p.Services {
			if _, ok := svc.DependsOn[s]; ok {
				out = append(out, name)
			}
		}
		return out
	})
}

// Dependencies returns the named services and every service they depend
// on, directly or through others, sorted. Starting a service starts these
// too.
func Dependencies(p *types.Project, names []string) []string {
	return closure(p, names, func(s string) []string {
		return sortedKeys(p.Services[s].DependsOn)
	})
}

func closure(p *types.Project, names []string, next func(string) []string) []string {
	seen := map[string]bool{}
	todo := append([]string(nil), names...)
	for len(todo) > 0 {
		s := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if _, ok := p.Services[s]; !ok || seen[s] {
			continue
		}
		seen[s] = true
		todo = append(todo, next(s)...)
	}
	return sortedKeys(seen)
}

// Stop stops the running containers of the named services (every service
// when names is empty), dependents first, and returns the services it
// stopped. The containers are kept: Apply starts them again.
func (e *Engine) Stop(ctx context.Context, p *types.Project, names []string, rep Reporter) ([]string, error) {
	have, _, err := e.projectContainers(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	return e.stopRunning(ctx, p, have, names, reporterOrDiscard(rep))
}

func (e *Engine) stopRunning(ctx context.Context, p *types.Project, have map[string]container.Summary, names []string, rep Reporter) ([]string, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	running := map[string]container.Summary{}
	for s, c := range have {
		if (len(names) == 0 || want[s]) && (c.State == container.StateRunning || c.State == container.StateRestarting) {
			running[s] = c
		}
	}
	var mu sync.Mutex
	var stopped []string
	err := inReverseDependencyOrder(p, running, func(s string, c container.Summary) error {
		rep.Report(Event{Service: s, Action: ActionStopping})
		if err := e.stopContainer(ctx, c.ID, graceOf(p, s)); err != nil {
			return fmt.Errorf("stopping service %s: %w", s, err)
		}
		rep.Report(Event{Service: s, Action: ActionStopped})
		mu.Lock()
		stopped = append(stopped, s)
		mu.Unlock()
		return nil
	})
	sort.Strings(stopped)
	return stopped, err
}

// inReverseDependencyOrder calls fn for each container, in parallel
// batches, a service only after everything that depends on it. Services
// unknown to the project (orphans) have no dependents and go first.
func inReverseDependencyOrder(p *types.Project, have map[string]container.Summary, fn func(service string, c container.Summary) error) error {
	remaining := map[string]bool{}
	for s := range have {
		remaining[s] = true
	}
	for len(remaining) > 0 {
		var batch []string
		for s := range remaining {
			if !hasDependent(p, s, remaining) {
				batch = append(batch, s)
			}
		}
		if len(batch) == 0 { // a cycle cannot come from compose-go; go on anyway
			batch = sortedKeys(remaining)
		}
		sort.Strings(batch)
		var wg sync.WaitGroup
		errs := make([]error, len(batch))
		for i, s := range batch {
			wg.Go(func() { errs[i] = fn(s, have[s]) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		for _, s := range batch {
			delete(remaining, s)
		}
	}
	return nil
}

// graceOf is how long a service gets to stop before it is killed.
func graceOf(p *types.Project, service string) time.Duration {
	if p != nil {
		if svc, ok := p.Services[service]; ok {
			return stopTimeout(svc)
		}
	}
	return 10 * time.Second
}

// Signal sends a signal to a service's running container, e.g. HUP for the
// router to load a new certificate without dropping a connection. It
// reports whether a running container got it.
func (e *Engine) Signal(ctx context.Context, project, service, signal string) (bool, error) {
	have, _, err := e.projectContainers(ctx, project)
	if err != nil {
		return false, err
	}
	c, ok := have[service]
	if !ok || c.State != container.StateRunning {
		return false, nil
	}
	if _, err := e.api.ContainerKill(ctx, c.ID, client.ContainerKillOptions{Signal: signal}); err != nil {
		return false, fmt.Errorf("sending %s to %s: %w", signal, service, err)
	}
	return true, nil
}

// stopAttempts bounds stopContainer's tries; stopSlack is how long past a
// container's grace period a stop may take before it is tried again.
const (
	stopAttempts = 3
	stopSlack    = 30 * time.Second
)

// stopContainer stops a container and checks that it stays stopped. Each
// stop is bounded: Docker 20.10 has been seen to leave a stop waiting for
// good on a container that had just started, its restart policy bringing
// it back. A container still running after a stop is killed and looked
// at again, a bounded number of times.
func (e *Engine) stopContainer(ctx context.Context, id string, grace time.Duration) error {
	secs := int(grace.Seconds())
	var last error
	for range stopAttempts {
		sctx, cancel := context.WithTimeout(ctx, grace+stopSlack)
		_, err := e.api.ContainerStop(sctx, id, client.ContainerStopOptions{Timeout: &secs})
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		insp, ierr := e.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if ierr != nil {
			return ierr
		}
		st := insp.Container.State
		if st == nil || (!st.Running && !st.Restarting) {
			return nil
		}
		last = fmt.Errorf("the container is still %s after a stop", st.Status)
		if _, err := e.api.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: "KILL"}); err != nil && !cerrdefs.IsConflict(err) {
			last = err
		}
	}
	return fmt.Errorf("%w (%d tries)", last, stopAttempts)
}
