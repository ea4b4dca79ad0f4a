package stack

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"
)

// ApplyOptions configures Apply.
type ApplyOptions struct {
	Pull PullOptions
	// Reporter receives one event per step; nil discards.
	Reporter Reporter
	// WaitTimeout bounds the wait for one service to become healthy or to
	// complete; 0 means 5 minutes.
	WaitTimeout time.Duration
	// Redact, when set, is applied to container log lines before they go
	// into an error: a failing service may print its settings, secrets
	// included.
	Redact func(string) string
	// Held are services the operator stopped: Apply keeps them, and every
	// service that depends on them, stopped (stopping them if they run)
	// and creates or recreates none of them.
	Held []string
}

// ApplyResult says what Apply changed, by service name.
type ApplyResult struct {
	Created   []string `json:"created,omitempty"`
	Recreated []string `json:"recreated,omitempty"`
	Started   []string `json:"started,omitempty"`
	Unchanged []string `json:"unchanged,omitempty"`
	Removed   []string `json:"removed,omitempty"` // orphans: containers of services no longer in the project
	Stopped   []string `json:"stopped,omitempty"` // held services that were running
	Held      []string `json:"held,omitempty"`    // services kept stopped (ApplyOptions.Held and their dependents)
}

// Changed reports whether Apply touched any container.
func (r *ApplyResult) Changed() bool {
	return len(r.Created)+len(r.Recreated)+len(r.Started)+len(r.Removed)+len(r.Stopped) > 0
}

// ServiceError is a service that failed to start, become healthy or
// complete, with the last lines of its log.
type ServiceError struct {
	Service string
	Reason  string
	Logs    []string
}

func (e *ServiceError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "service %s %s", e.Service, e.Reason)
	if len(e.Logs) > 0 {
		fmt.Fprintf(&b, "; its last log lines:\n")
		for _, l := range e.Logs {
			fmt.Fprintf(&b, "  %s | %s\n", e.Service, l)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// Apply converges the engine to the project: every image present (nothing
// is stopped before all are), networks and volumes created, and each service
// created, recreated or started only when needed, in depends_on order, then
// awaited until healthy (services with a healthcheck), completed with exit 0
// (one-shot services) or running. A second Apply with the same project
// touches nothing. Named volumes are never removed.
func (e *Engine) Apply(ctx context.Context, p *types.Project, opts ApplyOptions) (*ApplyResult, error) {
	rep := reporterOrDiscard(opts.Reporter)
	if opts.Pull.Reporter == nil {
		opts.Pull.Reporter = rep
	}
	if err := e.Pull(ctx, p, opts.Pull); err != nil {
		return nil, err
	}
	imageIDs := map[string]string{}
	for _, s := range p.Services {
		if _, ok := imageIDs[s.Image]; ok {
			continue
		}
		img, err := e.api.ImageInspect(ctx, s.Image)
		if err != nil {
			return nil, fmt.Errorf("inspecting image %s: %w", s.Image, err)
		}
		imageIDs[s.Image] = img.ID
	}
	netIDs, err := e.ensureNetworks(ctx, p)
	if err != nil {
		return nil, err
	}
	if err := e.ensureVolumes(ctx, p); err != nil {
		return nil, err
	}
	if err := e.endRollsCutShort(ctx, p.Name); err != nil {
		return nil, err
	}
	existing, extras, err := e.projectContainers(ctx, p.Name)
	if err != nil {
		return nil, err
	}

	res := &ApplyResult{}
	var mu sync.Mutex // guards res
	record := func(list *[]string, name string) {
		mu.Lock()
		*list = append(*list, name)
		mu.Unlock()
	}

	for svc, c := range existing {
		if _, ok := p.Services[svc]; ok {
			continue
		}
		rep.Report(Event{Service: svc, Action: ActionRemoving})
		if err := e.removeContainer(ctx, c.ID, 10*time.Second); err != nil {
			return res, fmt.Errorf("removing orphan container of service %s: %w", svc, err)
		}
		record(&res.Removed, svc)
	}

	for _, c := range extras {
		svc := c.Labels[labelService]
		rep.Report(Event{Service: svc, Action: ActionRemoving, Detail: "duplicate container " + c.ID[:12]})
		if err := e.removeContainer(ctx, c.ID, 10*time.Second); err != nil {
			return res, fmt.Errorf("removing a duplicate container of service %s: %w", svc, err)
		}
	}

	held := map[string]bool{}
	if len(opts.Held) > 0 {
		res.Held = Dependents(p, opts.Held)
		for _, s := range res.Held {
			held[s] = true
		}
		if res.Stopped, err = e.stopRunning(ctx, p, existing, res.Held, rep); err != nil {
			return res, err
		}
	}

	timeout := opts.WaitTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	c := &converger{
		e: e, p: p, rep: rep, timeout: timeout, redact: opts.Redact,
		imageIDs: imageIDs, netIDs: netIDs, existing: existing,
		started: map[string]chan struct{}{}, ready: map[string]chan struct{}{},
		ids: map[string]string{}, errs: map[string]error{}, probed: map[string]string{},
		rolled: map[string]bool{},
	}
	defer c.fences.lift(context.WithoutCancel(ctx))
	for name := range p.Services {
		c.started[name] = make(chan struct{})
		c.ready[name] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for _, name := range serviceNames(p) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if held[name] {
				// Nothing that is not held depends on it (Dependents).
				rep.Report(Event{Service: name, Action: ActionHeld, Detail: "stopped by the operator"})
				c.finish(name, nil)
				return
			}
			outcome, err := c.converge(ctx, name)
			c.finish(name, err)
			switch outcome {
			case outcomeCreated:
				record(&res.Created, name)
			case outcomeRecreated:
				record(&res.Recreated, name)
			case outcomeStarted:
				record(&res.Started, name)
			case outcomeUnchanged:
				record(&res.Unchanged, name)
			}
		}()
	}
	wg.Wait()
	if err := c.firstError(); err != nil {
		return res, err
	}
	// Services found healthy by our own probe: wait for the engine to agree
	// (at most one healthcheck interval), so status right after shows it.
	g, gctx := errgroup.WithContext(ctx)
	for name, id := range c.probed {
		g.Go(func() error { return c.awaitEngineHealthy(gctx, name, id) })
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	for _, l := range [][]string{res.Created, res.Recreated, res.Started, res.Unchanged, res.Removed, res.Stopped, res.Held} {
		sort.Strings(l)
	}
	return res, nil
}

type outcome int

const (
	outcomeNone outcome = iota
	outcomeCreated
	outcomeRecreated
	outcomeStarted
	outcomeUnchanged
)

// converger walks one project's services in dependency order: one goroutine
// per service waits for its dependencies' conditions, converges the service,
// then waits for it to be ready. started/ready channels are closed exactly
// once by finish; errs holds why a service failed.
type converger struct {
	e        *Engine
	p        *types.Project
	rep      Reporter
	timeout  time.Duration
	redact   func(string) string
	imageIDs map[string]string
	netIDs   map[string]string
	existing map[string]container.Summary

	mu      sync.Mutex // guards ids, errs and the closing of the channels
	started map[string]chan struct{}
	ready   map[string]chan struct{}
	ids     map[string]string // service -> container ID after converge
	errs    map[string]error
	probed  map[string]string // service -> container found healthy by our own probe
	rolled  map[string]bool   // services rolled new-before-old (roll.go)
	fences  fences

	handoverMu sync.Mutex // one port handover at a time: it owns the project's nat chain
}

// markRolled records that the service's new container was awaited ready
// before its old one left: converge does not wait for it again.
func (c *converger) markRolled(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rolled[name] = true
}

func (c *converger) wasRolled(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rolled[name]
}

var errDependency = errors.New("a dependency failed")

func (c *converger) finish(name string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errs[name] = err
	}
	select {
	case <-c.started[name]:
	default:
		close(c.started[name])
	}
	close(c.ready[name])
}

func (c *converger) markStarted(name, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids[name] = id
	close(c.started[name])
}

func (c *converger) failed(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errs[name]
}

// firstError returns the root cause: a service's own failure rather than the
// "dependency failed" of the services waiting on it.
func (c *converger) firstError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var dep error
	for _, name := range sortedKeys(c.errs) {
		err := c.errs[name]
		if !errors.Is(err, errDependency) {
			return err
		}
		dep = err
	}
	return dep
}

func (c *converger) converge(ctx context.Context, name string) (outcome, error) {
	s := c.p.Services[name]
	if err := c.awaitDependencies(ctx, s); err != nil {
		c.rep.Report(Event{Service: name, Action: ActionFailed, Detail: err.Error()})
		return outcomeNone, err
	}
	out, id, err := c.ensureContainer(ctx, s)
	if err != nil {
		c.rep.Report(Event{Service: name, Action: ActionFailed, Detail: err.Error()})
		return out, err
	}
	c.markStarted(name, id)
	if c.wasRolled(name) {
		return out, nil // awaited healthy before the old container left
	}
	if err := c.awaitReady(ctx, s, id); err != nil {
		c.rep.Report(Event{Service: name, Action: ActionFailed, Detail: err.Error()})
		return out, err
	}
	return out, nil
}

func (c *converger) awaitDependencies(ctx context.Context, s types.ServiceConfig) error {
	for _, dep := range sortedKeys(s.DependsOn) {
		cond := s.DependsOn[dep].Condition
		ch := c.ready[dep]
		if cond == types.ServiceConditionStarted || cond == "" {
			ch = c.started[dep]
		}
		if ch == nil {
			return fmt.Errorf("service %s depends on %s, which is not part of this node's stack", s.Name, dep)
		}
		if cond != types.ServiceConditionStarted && cond != "" {
			c.rep.Report(Event{Service: s.Name, Action: ActionWaiting, Detail: fmt.Sprintf("for %s (%s)", dep, cond)})
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
		if err := c.failed(dep); err != nil {
			return fmt.Errorf("service %s not started: %w (%s)", s.Name, errDependency, dep)
		}
	}
	return nil
}

// expectedLabels are the labels compose would put on the service's
// container (pkg/compose/create.go prepareLabels).
func (c *converger) expectedLabels(s types.ServiceConfig) (map[string]string, error) {
	hash, err := ServiceHash(s)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{}
	for k, v := range s.Labels {
		labels[k] = v
	}
	for k, v := range s.CustomLabels {
		labels[k] = v
	}
	labels[labelConfigHash] = hash
	labels[labelNumber] = "1"
	labels[labelImage] = c.imageIDs[s.Image]
	var deps []string
	for _, d := range sortedKeys(s.DependsOn) {
		deps = append(deps, fmt.Sprintf("%s:%s:%t", d, s.DependsOn[d].Condition, s.DependsOn[d].Restart))
	}
	labels[labelDependsOn] = strings.Join(deps, ",")
	return labels, nil
}

// upToDate is compose's mustRecreate turned around: same config hash, same
// image, and attached to the project's network.
func (c *converger) upToDate(s types.ServiceConfig, have container.Summary, want map[string]string) bool {
	if have.Labels[labelConfigHash] != want[labelConfigHash] || have.Labels[labelImage] != want[labelImage] {
		return false
	}
	if have.State != container.StateRunning || have.NetworkSettings == nil {
		return true // compose checks networks of running containers only
	}
	for key := range s.Networks {
		found := false
		for _, n := range have.NetworkSettings.Networks {
			if n != nil && n.NetworkID == c.netIDs[key] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func isOneShot(s types.ServiceConfig) bool {
	return s.Restart == "" || s.Restart == "no"
}

func (c *converger) ensureContainer(ctx context.Context, s types.ServiceConfig) (outcome, string, error) {
	want, err := c.expectedLabels(s)
	if err != nil {
		return outcomeNone, "", fmt.Errorf("hashing service %s: %w", s.Name, err)
	}
	have, exists := c.existing[s.Name]
	if exists && c.upToDate(s, have, want) {
		// A recreate or roll cut short between the old container's
		// removal and the rename leaves the new one under its temporary
		// name: compose and the operator know it by the service's.
		if name := containerName(c.p.Name, s.Name); !slices.Contains(have.Names, "/"+name) {
			// A roll's new container may not have its restart policy yet
			// (roll.go): given again, whatever it has.
			if err := c.e.restartPolicy(ctx, have.ID, restartPolicy(s.Restart)); err != nil {
				return outcomeNone, "", fmt.Errorf("service %s: %w", s.Name, err)
			}
			if _, err := c.e.api.ContainerRename(ctx, have.ID, client.ContainerRenameOptions{NewName: name}); err != nil {
				return outcomeNone, "", fmt.Errorf("naming service %s's container %s: %w", s.Name, name, err)
			}
		}
		switch {
		case have.State == container.StateRunning:
			c.rep.Report(Event{Service: s.Name, Action: ActionUnchanged})
			return outcomeUnchanged, have.ID, nil
		case isOneShot(s) && have.State == container.StateExited && strings.HasPrefix(have.Status, "Exited (0)"):
			c.rep.Report(Event{Service: s.Name, Action: ActionUnchanged, Detail: "completed"})
			return outcomeUnchanged, have.ID, nil
		default:
			c.rep.Report(Event{Service: s.Name, Action: ActionStarting})
			if _, err := c.e.api.ContainerStart(ctx, have.ID, client.ContainerStartOptions{}); err != nil {
				return outcomeNone, "", fmt.Errorf("starting service %s: %w", s.Name, err)
			}
			return outcomeStarted, have.ID, nil
		}
	}
	cfg, err := toCreateConfig(c.p, s, want)
	if err != nil {
		return outcomeNone, "", err
	}
	name := containerName(c.p.Name, s.Name)
	if !exists {
		c.rep.Report(Event{Service: s.Name, Action: ActionCreating})
		id, err := c.e.create(ctx, name, cfg)
		if err != nil {
			return outcomeNone, "", fmt.Errorf("creating service %s: %w", s.Name, err)
		}
		if err := c.e.start(ctx, id); err != nil {
			return outcomeCreated, id, fmt.Errorf("starting service %s: %w", s.Name, err)
		}
		return outcomeCreated, id, nil
	}
	if have.State == container.StateRunning {
		switch {
		case rollable(s):
			return c.roll(ctx, s, have, cfg, name)
		case c.handoverable(s, cfg):
			c.handoverMu.Lock()
			defer c.handoverMu.Unlock()
			return c.handover(ctx, s, have, cfg, name)
		}
	}
	return c.recreate(ctx, s, have, cfg, name)
}

// recreate replaces the service's container the plain way, as compose does:
// the old one stopped, then the new one started.
func (c *converger) recreate(ctx context.Context, s types.ServiceConfig, have container.Summary, cfg *createConfig, name string) (outcome, string, error) {
	// Create the replacement first, under a temporary name, so that a config
	// the engine refuses leaves the old container running.
	c.rep.Report(Event{Service: s.Name, Action: ActionRecreating})
	tmp := have.ID[:12] + "_" + name
	id, err := c.e.create(ctx, tmp, cfg)
	if err != nil {
		return outcomeNone, "", fmt.Errorf("recreating service %s: %w (the old container is still running)", s.Name, err)
	}
	if err := c.e.removeContainer(ctx, have.ID, stopTimeout(s)); err != nil {
		c.e.api.ContainerRemove(context.WithoutCancel(ctx), id, client.ContainerRemoveOptions{Force: true})
		return outcomeNone, "", fmt.Errorf("recreating service %s: removing the old container: %w", s.Name, err)
	}
	if _, err := c.e.api.ContainerRename(ctx, id, client.ContainerRenameOptions{NewName: name}); err != nil {
		return outcomeRecreated, id, fmt.Errorf("recreating service %s: renaming %s: %w", s.Name, tmp, err)
	}
	if err := c.e.start(ctx, id); err != nil {
		return outcomeRecreated, id, fmt.Errorf("starting service %s: %w", s.Name, err)
	}
	return outcomeRecreated, id, nil
}

func stopTimeout(s types.ServiceConfig) time.Duration {
	if s.StopGracePeriod != nil {
		return time.Duration(*s.StopGracePeriod)
	}
	return 10 * time.Second
}

func (e *Engine) create(ctx context.Context, name string, cfg *createConfig) (string, error) {
	res, err := e.api.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: name, Config: cfg.Config, HostConfig: cfg.HostConfig, NetworkingConfig: cfg.Networking,
	})
	if err != nil {
		return "", err
	}
	return res.ID, nil
}

func (e *Engine) start(ctx context.Context, id string) error {
	_, err := e.api.ContainerStart(ctx, id, client.ContainerStartOptions{})
	return err
}

func (e *Engine) removeContainer(ctx context.Context, id string, grace time.Duration) error {
	secs := int(grace.Seconds())
	if _, err := e.api.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stopping container %s: %w", id[:12], err)
	}
	// Force: a restart policy (or another tool) may have started it again
	// between the stop and the removal.
	if _, err := e.api.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("removing container %s: %w", id[:12], err)
	}
	return nil
}

// awaitReady waits until the service is healthy (it has a healthcheck),
// exited 0 (a one-shot service) or running, polling the engine.
func (c *converger) awaitReady(ctx context.Context, s types.ServiceConfig, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hasHealth := s.HealthCheck != nil && !s.HealthCheck.Disable
	oneShot := isOneShot(s) && !hasHealth
	probeCmd := probeCommand(s.HealthCheck)
	var lastProbe time.Time
	reported := false
	for {
		insp, err := c.e.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return c.serviceError(s.Name, id, fmt.Sprintf("not ready after %s", c.timeout))
			}
			return fmt.Errorf("inspecting service %s: %w", s.Name, err)
		}
		st := insp.Container.State
		switch {
		case oneShot && st.Status == container.StateExited:
			if st.ExitCode != 0 {
				return c.serviceError(s.Name, id, fmt.Sprintf("exited with code %d (it must exit 0)", st.ExitCode))
			}
			c.rep.Report(Event{Service: s.Name, Action: ActionCompleted})
			return nil
		case oneShot:
		case st.Status == container.StateExited || st.Status == container.StateDead:
			return c.serviceError(s.Name, id, fmt.Sprintf("exited with code %d", st.ExitCode))
		case !hasHealth && st.Running:
			c.rep.Report(Event{Service: s.Name, Action: ActionRunning})
			return nil
		case hasHealth && st.Health != nil && st.Health.Status == container.Healthy:
			c.rep.Report(Event{Service: s.Name, Action: ActionHealthy})
			return nil
		case hasHealth && st.Running && probeCmd != nil && time.Since(lastProbe) >= probeEvery && c.probeOK(ctx, s, id, probeCmd, &lastProbe):
			c.rep.Report(Event{Service: s.Name, Action: ActionHealthy})
			c.markProbed(s.Name, id)
			return nil
		case hasHealth && st.Health != nil && st.Health.Status == container.Unhealthy:
			reason := "is unhealthy"
			if n := len(st.Health.Log); n > 0 {
				reason += fmt.Sprintf(" (last check: exit %d %q)", st.Health.Log[n-1].ExitCode, strings.TrimSpace(st.Health.Log[n-1].Output))
			}
			return c.serviceError(s.Name, id, reason)
		}
		if !reported && hasHealth {
			c.rep.Report(Event{Service: s.Name, Action: ActionWaiting, Detail: "for its healthcheck"})
			reported = true
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return c.serviceError(s.Name, id, fmt.Sprintf("not ready after %s", c.timeout))
			}
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *converger) probeOK(ctx context.Context, s types.ServiceConfig, id string, cmd []string, last *time.Time) bool {
	*last = time.Now()
	return c.e.probe(ctx, id, cmd, s.HealthCheck)
}

func (c *converger) markProbed(name, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probed[name] = id
}

// serviceError builds a ServiceError with the container's last log lines,
// redacted.
func (c *converger) serviceError(service, id, reason string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lines, _ := c.e.tail(ctx, id, 20)
	if c.redact != nil {
		for i := range lines {
			lines[i] = c.redact(lines[i])
		}
	}
	return &ServiceError{Service: service, Reason: reason, Logs: lines}
}
