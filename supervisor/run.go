// Package supervisor is the agent: it keeps the installed stack converged
// and running (SPEC §6). It converges at start, follows the Docker events
// stream, brings back a container that dies or turns unhealthy with a
// growing backoff, reports crash loops in the state dir for `status`, and
// reconnects and converges again after the Docker engine restarts. In acme
// mode it also answers the CA's challenges on the HTTP port, and renews.
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
	// converge ran (whatever its outcome: the stack's state is reported in
	// status, and an agent that never gets ready would be restarted by
	// systemd in a loop).
	Ready func()
	// Healthy is called on every pass of the loop (also while the engine
	// is away), for the systemd watchdog.
	Healthy func()
	// Logf receives one line per thing the supervisor does.
	Logf func(format string, args ...any)
	// Resync is how often every service is checked even without events;
	// 0 means 10 s.
	Resync time.Duration
}

// errEngineGone ends one watch session: the engine stopped answering.
var errEngineGone = errors.New("the Docker engine connection ended")

// Run supervises until ctx ends; cancellation is not an error.
func Run(ctx context.Context, opts Options) error {
	opts.Paths = opts.Paths.WithDefaults()
	s := &sup{opts: opts, trackers: map[string]*tracker{}}
	if s.opts.Logf == nil {
		s.opts.Logf = func(string, ...any) {}
	}
	if s.opts.Resync == 0 {
		s.opts.Resync = 10 * time.Second
	}
	defer s.front.close()
	// Before anything else, even before the engine answers: the router
	// it restarts by its restart policy must find the allow-list there.
	s.enforceFirewall(ctx)
	ready := false
	for ctx.Err() == nil {
		eng, err := s.connect(ctx)
		if err != nil {
			break // ctx ended
		}
		s.converge(ctx)
		if !ready && s.opts.Ready != nil {
			s.opts.Ready()
			ready = true
		}
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

	// The compose project of the last pass and the stamp of the files it
	// came from: loading it is most of an idle pass's work.
	loaded      *types.Project
	loadedStamp string

	certWarned int         // the expiry warning threshold last logged
	renewing   atomic.Bool // a certificate renewal runs in the background
	licensing  atomic.Bool // a licence check runs in the background

	front front // the HTTP port in acme mode; owned by the loop
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
func (s *sup) connect(ctx context.Context) (*stack.Engine, error) {
	delay := 500 * time.Millisecond
	for {
		eng, err := stack.Connect(ctx)
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

// converge applies the installed configuration (a no-op when the stack
// already matches it).
func (s *sup) converge(ctx context.Context) {
	// Again at each converge (after an engine restart too), whatever
	// the converge's outcome.
	s.enforceFirewall(ctx)
	cfg, _, err := config.Load(filepath.Join(s.opts.Paths.ConfigDir, config.ConfigFileName))
	if err != nil {
		s.opts.Logf("event=converge-failed err=%q", err)
		return
	}
	s.project = cfg.Defaults().Project
	// Before the apply: in acme mode, a certificate it renews is validated
	// on the port the front answers.
	s.syncFront()
	start := time.Now()
	res, err := installer.Apply(ctx, installer.Options{Paths: s.opts.Paths, DeferACME: true})
	if err != nil {
		s.opts.Logf("event=converge-failed took=%s err=%q", time.Since(start).Round(time.Millisecond), oneLine(err))
		return
	}
	a := res.Applied
	s.opts.Logf("event=converged took=%s created=%d recreated=%d started=%d unchanged=%d",
		time.Since(start).Round(time.Millisecond), len(a.Created), len(a.Recreated), len(a.Started), len(a.Unchanged))
	s.logWarnings(res)
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
func (s *sup) watch(ctx context.Context, eng *stack.Engine) error {
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
		case err := <-errs:
			return fmt.Errorf("%w: %v", errEngineGone, err)
		case ev, ok := <-events:
			if !ok {
				return errEngineGone
			}
			switch {
			case ev.Action == "die", ev.Action == "oom", strings.HasPrefix(ev.Action, "health_status: unhealthy"):
				s.opts.Logf("event=container-%s service=%s", strings.ReplaceAll(ev.Action, ": ", "-"), ev.Service)
				// Let the engine's own restart policy act first.
				retry.Reset(time.Second)
			}
		case <-retry.C:
			s.resync(ctx, eng, retry)
		case <-tick.C:
			s.resync(ctx, eng, retry)
		case <-certTick.C:
			s.checkCertificate(ctx)
		case <-frontTick.C:
			s.syncFront()
		case <-licenseTick.C:
			s.checkLicense(ctx)
		}
	}
}

// resync revives every service that is down or unhealthy, when its backoff
// allows, arms retry for the earliest one still waiting, records the state
// for status, and reports the loop healthy.
func (s *sup) resync(ctx context.Context, eng *stack.Engine, retry *time.Timer) {
	// The watchdog is about this loop being alive, not the stack being
	// healthy: a stack it cannot fix is reported, and killing the agent
	// would not help.
	defer s.alive()
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
	states, err := eng.ServiceStates(ctx, s.project)
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
		restarted, err := eng.Revive(ctx, s.project, name)
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

// certCheckEvery is how often the router's certificate is looked at: a
// self-signed one is renewed a month before it expires, so an hour is
// plenty.
const certCheckEvery = time.Hour

// checkCertificate renews a self-signed or ACME certificate that is due
// (an apply issues or obtains it and reloads the router) and logs a custom
// one's expiry warnings, each threshold once. The renewal runs beside the
// loop: an ACME CA may take minutes to answer, or time out, and the loop
// must keep feeding the watchdog meanwhile (its resyncs wait for the
// apply's lock, as they do for an install).
func (s *sup) checkCertificate(ctx context.Context) {
	c, err := installer.CheckCertificate(ctx, s.opts.Paths, time.Now())
	switch {
	case err != nil:
		s.opts.Logf("event=certificate-check-failed err=%q", oneLine(err))
	case c.Renew:
		if !s.renewing.CompareAndSwap(false, true) {
			return
		}
		s.opts.Logf("event=certificate-renewing reason=%q", c.Why)
		go func() {
			defer s.renewing.Store(false)
			start := time.Now()
			res, err := installer.Apply(ctx, installer.Options{Paths: s.opts.Paths})
			if err != nil {
				s.opts.Logf("event=certificate-renew-failed took=%s err=%q", time.Since(start).Round(time.Millisecond), oneLine(err))
				return
			}
			s.logWarnings(res)
			s.opts.Logf("event=certificate-renewed took=%s", time.Since(start).Round(time.Millisecond))
		}()
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
	if !s.licensing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.licensing.Store(false)
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
	}()
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
