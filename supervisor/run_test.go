package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/stack"
)

// fakeEngine answers the loop with an idle project; lose ends its watch
// as an engine restart does.
type fakeEngine struct {
	lose chan error
	// hang makes ServiceStates wait for its context, as an engine
	// shutting down holds a request.
	hang bool
	// events are the project's container events (nil: none come).
	events chan stack.ContainerEvent
	// passes is what ProbeStarted answers; probes counts its calls.
	passes *stack.Probed
	probes atomic.Int64
}

func (f *fakeEngine) Watch(ctx context.Context, project string) (<-chan stack.ContainerEvent, <-chan error) {
	if f.events != nil {
		return f.events, f.lose
	}
	return make(chan stack.ContainerEvent), f.lose
}

func (f *fakeEngine) ProbeStarted(context.Context, string, *types.HealthCheckConfig) (*stack.Probed, error) {
	f.probes.Add(1)
	return f.passes, nil
}

func (f *fakeEngine) ServiceStates(ctx context.Context, _ string) (map[string]stack.ServiceHealth, error) {
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return map[string]stack.ServiceHealth{}, nil
}

func (f *fakeEngine) Revive(context.Context, string, string) (bool, error) { return false, nil }
func (f *fakeEngine) Close() error                                         { return nil }

// loopUnderTest runs the loop on an empty node with a fake engine and a
// converge (apply) the test controls.
type loopUnderTest struct {
	sup      *sup
	log      logLines
	healthy  atomic.Int64
	ready    atomic.Bool
	applies  atomic.Int64
	release  chan struct{}
	engines  chan *fakeEngine
	cancel   context.CancelFunc
	done     chan error
	applyCtx chan context.Context
}

func startLoop(t *testing.T, stopBound time.Duration) *loopUnderTest {
	t.Helper()
	dir := t.TempDir()
	l := &loopUnderTest{release: make(chan struct{}), engines: make(chan *fakeEngine, 4), done: make(chan error, 1), applyCtx: make(chan context.Context, 4)}
	l.sup = newSup(Options{
		Paths:     config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")},
		Logf:      l.log.logf,
		Healthy:   func() { l.healthy.Add(1) },
		Ready:     func() { l.ready.Store(true) },
		Resync:    5 * time.Millisecond,
		StopBound: stopBound,
	})
	l.sup.dial = func(ctx context.Context) (engine, error) {
		select {
		case e := <-l.engines:
			return e, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// A converge that waits (for the converge lock, images, health) until
	// the test releases it.
	l.sup.apply = func(ctx context.Context, o installer.Options) (*installer.Result, error) {
		l.applies.Add(1)
		l.applyCtx <- ctx
		select {
		case <-l.release:
			return &installer.Result{Applied: &stack.ApplyResult{}}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() { l.done <- l.sup.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
			t.Error("the loop did not end")
		}
	})
	return l
}

// healthyKeepsComing waits until the loop reported healthy n more times.
func (l *loopUnderTest) healthyKeepsComing(t *testing.T, n int64) {
	t.Helper()
	from := l.healthy.Load()
	eventuallyTrue(t, func() bool { return l.healthy.Load() >= from+n })
}

func TestLoopKeepsReportingHealthyDuringAConverge(t *testing.T) {
	l := startLoop(t, time.Second)
	l.engines <- &fakeEngine{}
	<-l.applyCtx // the start-up converge runs, and blocks
	l.healthyKeepsComing(t, 10)
	if l.ready.Load() {
		t.Error("ready before the first converge ended")
	}
	if !l.sup.jobs.Running(jobConverge) {
		t.Error("the converge is not a running job")
	}
	close(l.release)
	eventuallyTrue(t, l.ready.Load)
	l.healthyKeepsComing(t, 3)
	if !l.log.has("event=converged") {
		t.Errorf("no converged line:\n%s", l.log.String())
	}
}

// An engine that holds a request (shutting down) does not hold the loop:
// each call is bounded, and the watchdog keeps being fed.
func TestLoopBoundsEngineCalls(t *testing.T) {
	prev := engineCallBound
	engineCallBound = 50 * time.Millisecond
	t.Cleanup(func() { engineCallBound = prev })
	l := startLoop(t, time.Second)
	// A stack to look at.
	dir := l.sup.opts.Paths.ConfigDir
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, stack.ComposeFileName), []byte("name: carto\nservices:\n  web:\n    image: example.invalid/web:1\n"), 0o600)
	os.WriteFile(filepath.Join(dir, config.EnvFileName), nil, 0o600)
	l.engines <- &fakeEngine{hang: true}
	<-l.applyCtx
	close(l.release)
	eventuallyTrue(t, l.ready.Load)
	eventuallyTrue(t, func() bool { return l.log.has("event=inspect-failed") })
	l.healthyKeepsComing(t, 5)
}

// The engine restarting under a converge: the loop reconnects at once
// (healthy all along) and converges again once the running one ended.
func TestLoopReconnectsDuringAConvergeAndConvergesAgain(t *testing.T) {
	l := startLoop(t, time.Second)
	first := &fakeEngine{lose: make(chan error, 1)}
	l.engines <- first
	<-l.applyCtx
	first.lose <- errors.New("engine restarted")
	l.engines <- &fakeEngine{}
	eventuallyTrue(t, func() bool { return l.log.has("event=engine-lost") })
	l.healthyKeepsComing(t, 10)
	if n := l.applies.Load(); n != 1 {
		t.Errorf("%d converges at once, want the running one alone", n)
	}
	close(l.release) // lets this converge and the next one end
	eventuallyTrue(t, func() bool { return l.applies.Load() == 2 })
	eventuallyTrue(t, l.ready.Load)
}

// An upgrade whose rollback the engine's absence cut is finished by a
// converge of the agent's (installer.RecoverUpgrade runs first in it);
// while it keeps failing, the converges come ever further apart.
func TestLoopResumesARollbackTheEngineCut(t *testing.T) {
	l := startLoop(t, time.Second)
	l.engines <- &fakeEngine{}
	<-l.applyCtx
	close(l.release)
	eventuallyTrue(t, l.ready.Load)
	paths := l.sup.opts.Paths
	os.MkdirAll(paths.StateDir, 0o700)
	j := steps.Journal{Path: filepath.Join(paths.StateDir, "upgrade-journal.json"), UndoLater: func(error) bool { return true }}
	cut := errors.New("the engine is away")
	steps.Run(t.Context(), j, "upgrade 1 -> 2", []steps.Step{{Name: "converge",
		Do: func(context.Context) error { return cut }, Undo: func(context.Context) error { return cut }}}, steps.Undo)
	if !installer.UndoLeftForLater(paths) {
		t.Fatal("the journal written is not a cut rollback")
	}
	eventuallyTrue(t, func() bool { return l.log.has("event=upgrade-rollback-resumed") && l.applies.Load() == 2 })
	// This apply is a fake: the journal stays; the next try waits.
	time.Sleep(300 * time.Millisecond)
	if n := l.applies.Load(); n != 2 {
		t.Errorf("%d converges, want 2: the retry is not paced", n)
	}
}

// Stopping during a converge waits for it up to the bound, then cancels
// it; the loop's run returns.
func TestLoopStopDrainsTheConverge(t *testing.T) {
	l := startLoop(t, 300*time.Millisecond)
	l.engines <- &fakeEngine{}
	actx := <-l.applyCtx
	l.cancel()
	select {
	case <-actx.Done():
		t.Fatal("the converge was cancelled with the loop, not after the bound")
	case <-time.After(50 * time.Millisecond):
	}
	select {
	case <-l.done:
		l.done <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not return after the stop bound")
	}
	if actx.Err() == nil {
		t.Error("the converge still runs after the loop returned")
	}
	for _, want := range []string{"event=job-draining job=converge", "event=job-cut job=converge"} {
		if !l.log.has(want) {
			t.Errorf("no %q line:\n%s", want, l.log.String())
		}
	}
}

// A container started (by the engine's restart policy, or a revive) whose
// healthcheck the agent ran and saw pass is recorded for status, by its
// run; a service without a healthcheck is not probed.
func TestLoopProbesAStartedContainerAndRecordsThePass(t *testing.T) {
	l := startLoop(t, time.Second)
	dir := l.sup.opts.Paths.ConfigDir
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, stack.ComposeFileName), []byte(`name: carto
services:
  web:
    image: example.invalid/web:1
    healthcheck:
      test: ["CMD", "true"]
      interval: 5s
  worker:
    image: example.invalid/worker:1
`), 0o600)
	os.WriteFile(filepath.Join(dir, config.EnvFileName), nil, 0o600)
	run := &stack.Probed{Container: "carto-web-1", StartedAt: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)}
	eng := &fakeEngine{events: make(chan stack.ContainerEvent), passes: run}
	l.engines <- eng
	<-l.applyCtx
	close(l.release)
	eventuallyTrue(t, l.ready.Load)
	// A change of the stack under way (the lock held) probes what it
	// starts itself. The loop takes one event at a time: once the next
	// is taken, the one before was handled.
	var unlock func()
	eventuallyTrue(t, func() bool { // the loop's own passes take it too
		u, ok, err := installer.TryLockConverge(l.sup.opts.Paths)
		unlock = u
		return err == nil && ok
	})
	eng.events <- stack.ContainerEvent{Service: "web", ContainerID: "c1", Action: "start"}
	eng.events <- stack.ContainerEvent{Service: "worker", ContainerID: "w1", Action: "start"}
	if n := eng.probes.Load(); n != 0 {
		t.Errorf("probed during a change of the stack: %d", n)
	}
	unlock()
	eng.events <- stack.ContainerEvent{Service: "web", ContainerID: "c1", Action: "start"}
	eventuallyTrue(t, func() bool { return l.log.has("event=probed-healthy service=web") })
	eventuallyTrue(t, func() bool {
		st, err := installer.LoadAgentState(l.sup.opts.Paths)
		p := st.Services["web"].Probed
		return err == nil && p != nil && *p == *run
	})
	if n := eng.probes.Load(); n != 1 {
		t.Errorf("%d probes, want web's alone", n)
	}
	if l.log.has("service=worker") {
		t.Errorf("a service without a healthcheck was probed:\n%s", l.log.String())
	}
}
