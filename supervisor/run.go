// Package supervisor is the agent: it keeps the installed stack converged
// and running (SPEC §6). It converges at start, follows the Docker events
// stream, brings back a container that dies or turns unhealthy with a
// growing backoff, reports crash loops in the state dir for `status`, and
// reconnects and converges again after the Docker engine restarts. In acme
// mode it also answers the CA's challenges on the HTTP port, and renews.
// Converges, renewals and licence checks are jobs (jobs.go) beside the
// loop, drained on stop; the loop itself never waits on them.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/stack"
)

// Options configures Run.
type Options struct {
	Paths config.Paths
	// Ready is called once, after the engine answered and the first
	// converge ended (whatever its outcome: the stack's state is reported
	// in status, and an agent that never gets ready would be restarted by
	// systemd in a loop).
	Ready func()
	// Healthy is called on every pass of the loop (also while the engine
	// is away or a job runs), for the systemd watchdog.
	Healthy func()
	// Logf receives one line per thing the supervisor does.
	Logf func(format string, args ...any)
	// Resync is how often every service is checked even without events;
	// 0 means 10 s.
	Resync time.Duration
	// Changed tells the loop that the agent's API changed the installed
	// settings or the stack: the loop looks at once (the front, the
	// project, a resync) rather than at its next pass.
	Changed <-chan struct{}
	// StopBound is how long Run waits, once ctx ends, for a converge or
	// renewal under way before it cancels it; 0 means DefaultStopBound.
	StopBound time.Duration
	// Front answers the HTTP port in acme mode, shared with the API;
	// nil: Run makes its own.
	Front *Front
	// Notices, when set, is told of each container event and healthy
	// probe (the console shows the stack live with it).
	Notices *Notices
}

// DefaultStopBound leaves room in systemd's TimeoutStopSec (30 s) for the
// API's own drain and the exit.
const DefaultStopBound = 20 * time.Second

// errEngineGone ends one watch session: the engine stopped answering.
var errEngineGone = errors.New("the Docker engine connection ended")

// engine is what the loop needs of the Docker engine (a *stack.Engine; a
// fake in tests).
type engine interface {
	Watch(ctx context.Context, project string) (<-chan stack.ContainerEvent, <-chan error)
	ServiceStates(ctx context.Context, project string) (map[string]stack.ServiceHealth, error)
	Revive(ctx context.Context, project, service string) (bool, error)
	ProbeStarted(ctx context.Context, id string, hc *types.HealthCheckConfig) (*stack.Probed, error)
	Close() error
}

// Run supervises until ctx ends, then drains its jobs (up to
// Options.StopBound); cancellation is not an error.
func Run(ctx context.Context, opts Options) error {
	return newSup(opts).run(ctx)
}

func newSup(opts Options) *sup {
	opts.Paths = opts.Paths.WithDefaults()
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.Resync == 0 {
		opts.Resync = 10 * time.Second
	}
	if opts.StopBound == 0 {
		opts.StopBound = DefaultStopBound
	}
	if opts.Front == nil {
		opts.Front = NewFront(opts.Paths, opts.Logf)
	}
	return &sup{
		opts:      opts,
		trackers:  map[string]*tracker{},
		probed:    map[string]stack.Probed{},
		probes:    make(chan probeResult, 16),
		jobs:      NewRunner(opts.Logf),
		converged: make(chan struct{}, 16),
		dial: func(ctx context.Context) (engine, error) {
			eng, err := stack.Connect(ctx)
			if err != nil {
				return nil, err
			}
			return eng, nil
		},
		apply: installer.Apply,
	}
}

func (s *sup) run(ctx context.Context) error {
	defer s.opts.Front.Close()
	defer s.jobs.Stop(s.opts.StopBound, 5*time.Second)
	// Before anything else, even before the engine answers: the router
	// it restarts by its restart policy must find the allow-list there.
	s.enforceFirewall(ctx)
	peersDone := make(chan struct{})
	go func() {
		defer close(peersDone)
		s.servePeers(ctx)
	}()
	defer func() { <-peersDone }()
	for ctx.Err() == nil {
		eng, err := s.connect(ctx)
		if err != nil {
			break // ctx ended
		}
		// After an engine restart too: what the engine brought back by
		// its restart policies is checked against the installed settings.
		s.loadSettings()
		s.startConverge(ctx)
		err = s.watch(ctx, eng)
		eng.Close()
		if ctx.Err() == nil {
			s.opts.Logf("event=engine-lost err=%q action=reconnect", err)
		}
	}
	return nil
}

type sup struct {
	opts     Options
	project  string
	trackers map[string]*tracker // by service; owned by the loop
	// probed is, by service, the container run whose healthcheck the
	// agent ran itself and saw pass (probe jobs send them on probes);
	// owned by the loop.
	probed map[string]stack.Probed
	probes chan probeResult

	// The compose project of the last pass and the stamp of the files it
	// came from: loading it is most of an idle pass's work.
	loaded      *types.Project
	loadedStamp string

	certWarned int // the expiry warning threshold last logged

	jobs *Runner
	// converged hears from each converge job as it ends; buffered, as the
	// loop may be reconnecting then. The loop starts converges only after
	// the previous one ended, so it never fills.
	converged chan struct{}
	// convergeAgain asks for one more converge once the running one ends
	// (the engine restarted under it); owned by the loop.
	convergeAgain bool
	ready         bool // Ready was called; owned by the loop
	certPending   bool // a certificate check waits for the converge; owned by the loop
	// undoRetry paces the converges that finish an upgrade's rollback the
	// engine's absence cut (installer.UndoLeftForLater); owned by the loop.
	undoRetry backoffTimer

	dial  func(context.Context) (engine, error)
	apply func(context.Context, installer.Options) (*installer.Result, error)

	// backupFailed is when the last scheduled backup failed (unix
	// nanoseconds; 0: it did not), written by its job.
	backupFailed atomic.Int64
}

// loadProject loads the installed compose project, again only when its
// files changed since the last pass.
func (s *sup) loadProject(ctx context.Context) (*types.Project, error) {
	stamp, err := filesStamp(s.opts.Paths.ConfigDir, stack.ComposeFileName, config.EnvFileName)
	if err != nil {
		return nil, err
	}
	stamp = s.project + stamp
	if s.loaded != nil && stamp == s.loadedStamp {
		return s.loaded, nil
	}
	p, err := stack.Load(ctx, s.opts.Paths.ConfigDir, s.project)
	if err != nil {
		return nil, err
	}
	s.loaded, s.loadedStamp = p, stamp
	return p, nil
}

// filesStamp identifies the files' current contents by size and
// modification time (atomic writes replace the file, so both change).
func filesStamp(dir string, names ...string) (string, error) {
	var stamp strings.Builder
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&stamp, "|%s:%d:%d", name, fi.Size(), fi.ModTime().UnixNano())
	}
	return stamp.String(), nil
}

// connect waits for the engine, retrying on a bounded backoff, until ctx
// ends.
func (s *sup) connect(ctx context.Context) (engine, error) {
	delay := 500 * time.Millisecond
	for {
		dctx, cancel := context.WithTimeout(ctx, engineCallBound)
		eng, err := s.dial(dctx)
		cancel()
		if err == nil {
			return eng, nil
		}
		s.alive()
		s.opts.Logf("event=engine-wait err=%q retry_in=%s", err, delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// loadSettings reads which compose project the loop follows and brings
// the front in line with the settings, before a converge: in acme mode, a
// certificate the converge renews is validated on the port the front
// answers.
func (s *sup) loadSettings() {
	cfg, found, err := config.Load(filepath.Join(s.opts.Paths.ConfigDir, config.ConfigFileName))
	if err == nil && found {
		s.project = cfg.Defaults().Project
	}
	s.opts.Front.Sync()
}

// startConverge starts a converge job, or, when one runs, asks for another
// once it ends: the one running may have started before what calls for
// this one (an engine restart).
func (s *sup) startConverge(ctx context.Context) {
	if !s.jobs.Start(ctx, Job{Name: jobConverge, Run: s.converge}) {
		s.convergeAgain = true
	}
}

// converge applies the installed configuration (a no-op when the stack
// already matches it). It is a job: it may wait minutes for the converge
// lock, the images or the services' health.
func (s *sup) converge(ctx context.Context) error {
	defer func() {
		select {
		case s.converged <- struct{}{}:
		default: // cannot happen (see converged); never block the drain
		}
	}()
	// Again at each converge (after an engine restart too), whatever
	// the converge's outcome.
	s.enforceFirewall(ctx)
	if _, _, err := config.Load(filepath.Join(s.opts.Paths.ConfigDir, config.ConfigFileName)); err != nil {
		s.opts.Logf("event=converge-failed err=%q", err)
		return err
	}
	start := time.Now()
	res, err := s.apply(ctx, installer.Options{Paths: s.opts.Paths, DeferACME: true})
	if err != nil {
		s.opts.Logf("event=converge-failed took=%s err=%q", time.Since(start).Round(time.Millisecond), oneLine(err))
		return err
	}
	if a := res.Applied; a != nil {
		s.opts.Logf("event=converged took=%s created=%d recreated=%d started=%d unchanged=%d",
			time.Since(start).Round(time.Millisecond), len(a.Created), len(a.Recreated), len(a.Started), len(a.Unchanged))
	}
	s.logWarnings(res)
	return nil
}

// convergeEnded is the loop's part of a converge's end: ready at the
// first, the front and the project as the converge left the settings, a
// certificate check that waited, and a resync at once.
func (s *sup) convergeEnded(ctx context.Context, retry *time.Timer) {
	if !s.ready {
		s.ready = true
		if s.opts.Ready != nil {
			s.opts.Ready()
		}
	}
	if s.convergeAgain {
		s.convergeAgain = false
		s.loadSettings()
		s.startConverge(ctx)
		return
	}
	s.loadSettings()
	if s.certPending {
		s.certPending = false
		s.checkCertificate(ctx)
	}
	retry.Reset(0)
}

// logWarnings puts what an apply of the agent's own would have told an
// operator at the terminal into the journal: e.g. that the appliance's CA
// is being replaced and until when clients must trust the new file.
func (s *sup) logWarnings(res *installer.Result) {
	for _, w := range res.Warnings {
		s.opts.Logf("event=apply-warning err=%q", w)
	}
}

// enforceFirewall applies the router's allow-list (network.allowed_sources).
func (s *sup) enforceFirewall(ctx context.Context) {
	if err := installer.EnforceFirewall(ctx, s.opts.Paths); err != nil {
		s.opts.Logf("event=firewall-failed err=%q", oneLine(err))
	}
}

// watch follows the project's events and resyncs periodically until the
// engine connection ends or ctx does.
func (s *sup) watch(ctx context.Context, eng engine) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, errs := eng.Watch(wctx, s.project)
	tick := time.NewTicker(s.opts.Resync)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	certTick := time.NewTicker(certCheckEvery)
	defer certTick.Stop()
	frontTick := time.NewTicker(frontEvery)
	defer frontTick.Stop()
	licenseTick := time.NewTicker(licenseCheckEvery)
	defer licenseTick.Stop()
	s.checkLicense(ctx)
	s.checkCertificate(ctx)
	s.resync(ctx, eng, retry)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.converged:
			s.convergeEnded(ctx, retry)
		case <-s.opts.Changed:
			s.loadSettings()
			retry.Reset(0)
		case err := <-errs:
			return fmt.Errorf("%w: %v", errEngineGone, err)
		case ev, ok := <-events:
			if !ok {
				return errEngineGone
			}
			s.opts.Notices.Notify()
			switch {
			case ev.Action == "die", ev.Action == "oom", strings.HasPrefix(ev.Action, "health_status: unhealthy"):
				s.opts.Logf("event=container-%s service=%s", strings.ReplaceAll(ev.Action, ": ", "-"), ev.Service)
				// Let the engine's own restart policy act first.
				retry.Reset(time.Second)
			case ev.Action == "start":
				s.startProbe(ctx, eng, ev)
			}
		case p := <-s.probes:
			s.probed[p.service] = p.run
			s.opts.Logf("event=probed-healthy service=%s took=%s", p.service, time.Since(p.run.StartedAt).Round(time.Millisecond))
			s.save(time.Now())
			s.opts.Notices.Notify()
		case <-retry.C:
			s.resync(ctx, eng, retry)
		case <-tick.C:
			s.resync(ctx, eng, retry)
			s.scheduledBackup(ctx)
		case <-certTick.C:
			s.checkCertificate(ctx)
		case <-frontTick.C:
			s.opts.Front.Sync()
		case <-licenseTick.C:
			s.checkLicense(ctx)
		}
	}
}

// resync revives every service that is down or unhealthy, when its backoff
// allows, arms retry for the earliest one still waiting, records the state
// for status, and reports the loop healthy.
func (s *sup) resync(ctx context.Context, eng engine, retry *time.Timer) {
	// The watchdog is about this loop being alive, not the stack being
	// healthy: a stack it cannot fix is reported, and killing the agent
	// would not help.
	defer s.alive()
	// The converge recreates and starts containers itself; the pass at
	// its end looks.
	if s.jobs.Running(jobConverge) {
		return
	}
	// An install or config apply under way stops and starts containers on
	// purpose: reviving them meanwhile would fight it. The next pass looks.
	unlock, ok, err := installer.TryLockConverge(s.opts.Paths)
	if err != nil || !ok {
		if err != nil {
			s.opts.Logf("event=resync-skipped err=%q", oneLine(err))
		}
		retry.Reset(time.Second)
		return
	}
	defer unlock()
	if installer.UndoLeftForLater(s.opts.Paths) {
		// A converge recovers it first (installer.RecoverUpgrade); one
		// that fails is tried again ever further apart.
		if s.undoRetry.due(time.Now()) {
			s.opts.Logf("event=upgrade-rollback-resumed")
			s.startConverge(ctx)
		}
		return
	}
	s.undoRetry = backoffTimer{}
	cfgProject, err := s.loadProject(ctx)
	if err != nil {
		s.opts.Logf("event=resync-failed err=%q", oneLine(err))
		return
	}
	heldNames, err := installer.HeldServices(s.opts.Paths)
	if err != nil {
		s.opts.Logf("event=resync-failed err=%q", oneLine(err))
		return
	}
	held := stack.Dependents(cfgProject, heldNames)
	cctx, cancel := context.WithTimeout(ctx, engineCallBound)
	states, err := eng.ServiceStates(cctx, s.project)
	cancel()
	if err != nil {
		s.opts.Logf("event=inspect-failed err=%q", oneLine(err))
		return
	}
	now := time.Now()
	var earliest time.Time
	for _, name := range sortedServices(cfgProject.Services) {
		h, ok := states[name]
		if !ok || slices.Contains(held, name) {
			continue // not created (converging creates it) or stopped by the operator
		}
		t := s.tracker(name)
		t.observe(now, h.ContainerID, h.RestartCount)
		if !h.NeedsRevival {
			continue
		}
		if ok, next := t.due(now); !ok {
			if earliest.IsZero() || next.Before(earliest) {
				earliest = next
			}
			continue
		}
		// Each revive is bounded and the watchdog fed before it: a
		// pass that revives several services must not starve it.
		s.alive()
		cctx, cancel := context.WithTimeout(ctx, reviveBound)
		restarted, err := eng.Revive(cctx, s.project, name)
		cancel()
		if err != nil {
			s.opts.Logf("event=revive-failed service=%s err=%q", name, oneLine(err))
			continue
		}
		if restarted {
			t.record(now)
			s.opts.Logf("event=restarted service=%s restarts_in_window=%d next_allowed_in=%s crash_loop=%v", name, len(t.restarts), t.backoff(), t.crashLoop(now))
			if earliest.IsZero() || t.next.Before(earliest) {
				earliest = t.next
			}
		}
	}
	if !earliest.IsZero() {
		retry.Reset(max(time.Until(earliest), 100*time.Millisecond))
	}
	s.save(now)
}

// engineCallBound bounds each Docker engine call of the loop: an engine
// shutting down (systemctl restart docker stops every container first)
// may hold a request without answering, and a loop stuck in it longer
// than the watchdog (WatchdogSec=30) gets the agent killed. A call cut
// is retried at the next pass, or after the reconnect.
var engineCallBound = 15 * time.Second

// reviveBound bounds one revive: a restart waits up to the container's
// stop grace (10 s by default) before the kill, then starts it; fed
// before each, the watchdog (30 s) still never starves.
var reviveBound = 25 * time.Second

// certCheckEvery is how often the router's certificate is looked at: a
// self-signed one is renewed a month before it expires, so an hour is
// plenty.
const certCheckEvery = time.Hour

// checkCertificate renews a self-signed or ACME certificate that is due
// (an apply issues or obtains it and reloads the router) and logs a custom
// one's expiry warnings, each threshold once. The renewal is a job beside
// the loop: an ACME CA may take minutes to answer, or time out, and the
// loop must keep feeding the watchdog meanwhile (its resyncs wait for the
// apply's lock, as they do for an install).
func (s *sup) checkCertificate(ctx context.Context) {
	if s.jobs.Running(jobConverge) {
		// The converge may renew it itself; look once it ended.
		s.certPending = true
		return
	}
	c, err := installer.CheckCertificate(ctx, s.opts.Paths, time.Now())
	switch {
	case err != nil:
		s.opts.Logf("event=certificate-check-failed err=%q", oneLine(err))
	case c.Renew:
		if s.jobs.Running(jobRenew) {
			return
		}
		s.opts.Logf("event=certificate-renewing reason=%q", c.Why)
		s.jobs.Start(ctx, Job{Name: jobRenew, Run: func(ctx context.Context) error {
			start := time.Now()
			res, err := s.apply(ctx, installer.Options{Paths: s.opts.Paths})
			if err != nil {
				s.opts.Logf("event=certificate-renew-failed took=%s err=%q", time.Since(start).Round(time.Millisecond), oneLine(err))
				return err
			}
			s.logWarnings(res)
			s.opts.Logf("event=certificate-renewed took=%s", time.Since(start).Round(time.Millisecond))
			return nil
		}})
	case c.Warning != "" && c.Threshold != s.certWarned:
		s.certWarned = c.Threshold
		s.opts.Logf("event=certificate-expiring err=%q", c.Warning)
	}
}

// licenseCheckEvery is how often the licence server is asked; the grace
// period (days) leaves room for many failed checks.
const licenseCheckEvery = 6 * time.Hour

// checkLicense asks the licence server beside the loop (it may be slow or
// away) and logs the licence's state. Whatever it is, nothing of the stack
// changes: an expired licence is reported, never enforced on a running
// stack.
func (s *sup) checkLicense(ctx context.Context) {
	s.jobs.Start(ctx, Job{Name: jobLicenseCheck, Interruptible: true, Run: func(ctx context.Context) error {
		st, err := installer.CheckLicense(ctx, s.opts.Paths)
		switch {
		case err != nil:
			s.opts.Logf("event=license-check-failed err=%q", oneLine(err))
		case st.State == license.Valid:
			s.opts.Logf("event=license-checked state=valid expires=%s", st.ExpiresAt.Format(time.DateOnly))
		default:
			grace := ""
			if st.GraceEndsAt != nil {
				grace = " grace_ends=" + st.GraceEndsAt.Format(time.DateOnly)
			}
			s.opts.Logf("event=license-checked state=%s%s err=%q action=none", st.State, grace, st.Reason+" (the stack keeps running)")
		}
		return err
	}})
}

// backupRetry is how long after a failed scheduled backup the next try
// comes: each try dumps the database.
const backupRetry = 10 * time.Minute

// scheduledBackup takes the backup appliance.yaml's backup section asks
// for, when due, beside the loop (a dump takes a while); the next is due
// backup.every after it. A failed one is logged and tried again
// backupRetry later.
func (s *sup) scheduledBackup(ctx context.Context) {
	if s.jobs.Running(jobBackup) {
		return
	}
	if due := installer.ScheduledBackupDue(s.opts.Paths); due.IsZero() || time.Now().Before(due) {
		return
	}
	if failed := s.backupFailed.Load(); failed != 0 && time.Since(time.Unix(0, failed)) < backupRetry {
		return
	}
	s.jobs.Start(ctx, Job{Name: jobBackup, Interruptible: true, Run: func(ctx context.Context) error {
		b, err := installer.TakeScheduledBackup(ctx, s.opts.Paths)
		if err != nil {
			s.backupFailed.Store(time.Now().UnixNano())
			s.opts.Logf("event=backup-failed err=%q action=retry-in-%s", oneLine(err), backupRetry)
			return err
		}
		s.backupFailed.Store(0)
		s.opts.Logf("event=backup-taken path=%q database=%t removed=%d", b.Path, b.Result.Database, len(b.Removed))
		return nil
	}})
}

// probeResult is a probe job's pass, for the loop.
type probeResult struct {
	service string
	run     stack.Probed
}

// probeBound bounds one probe job: the engine has its own verdict on a
// container by then (its checks come every interval; CARTO's is 5 s),
// and a service still failing its test is the engine's to judge.
const probeBound = 2 * time.Minute

// startProbe runs a started container's healthcheck beside the loop until
// it passes or the engine has a verdict (stack.ProbeStarted), so that a
// container the engine's restart policy or a revive brought back is
// reported healthy as soon as its test passes, not at the engine's first
// check an interval later. A change of the stack under way (the agent's
// converge, an op, a command run beside it) probes what it starts itself.
func (s *sup) startProbe(ctx context.Context, eng engine, ev stack.ContainerEvent) {
	if s.jobs.Running(jobConverge) {
		return
	}
	unlock, free, err := installer.TryLockConverge(s.opts.Paths)
	if err != nil || !free {
		return
	}
	unlock()
	p, err := s.loadProject(ctx)
	if err != nil {
		return // the next resync says why
	}
	svc, ok := p.Services[ev.Service]
	if !ok || svc.HealthCheck == nil {
		return
	}
	hc := svc.HealthCheck
	s.jobs.Start(ctx, Job{Name: jobProbe + ev.Service, Interruptible: true, Run: func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, probeBound)
		defer cancel()
		run, err := eng.ProbeStarted(ctx, ev.ContainerID, hc)
		if err != nil {
			s.opts.Logf("event=probe-failed service=%s err=%q", ev.Service, oneLine(err))
			return err
		}
		if run != nil {
			select {
			case s.probes <- probeResult{service: ev.Service, run: *run}:
			case <-ctx.Done():
			}
		}
		return nil
	}})
}

func (s *sup) alive() {
	if s.opts.Healthy != nil {
		s.opts.Healthy()
	}
}

func (s *sup) tracker(name string) *tracker {
	t, ok := s.trackers[name]
	if !ok {
		t = &tracker{}
		s.trackers[name] = t
	}
	return t
}

func (s *sup) save(now time.Time) {
	st := installer.AgentState{UpdatedAt: now.UTC(), Services: map[string]installer.AgentServiceState{}}
	for name, t := range s.trackers {
		if t.total == 0 {
			continue
		}
		a := installer.AgentServiceState{Restarts: t.total, LastRestart: t.last.UTC(), CrashLoop: t.crashLoop(now)}
		if a.CrashLoop {
			a.NextAttempt, a.Backoff = t.next.UTC(), t.backoff().String()
		}
		st.Services[name] = a
	}
	for name, p := range s.probed {
		a := st.Services[name]
		a.Probed = &p
		st.Services[name] = a
	}
	if err := installer.SaveAgentState(s.opts.Paths, st); err != nil {
		s.opts.Logf("event=state-save-failed err=%q", err)
	}
}

func sortedServices[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " | ")
}
