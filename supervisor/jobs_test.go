package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// logLines collects a component's log lines for assertions.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) has(prefix string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.lines, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// blocker is a job that runs until released or cancelled, and says which.
type blocker struct {
	started, release chan struct{}
	cancelled        chan bool
}

func newBlocker() *blocker {
	return &blocker{started: make(chan struct{}), release: make(chan struct{}), cancelled: make(chan bool, 1)}
}

func (b *blocker) run(ctx context.Context) error {
	close(b.started)
	select {
	case <-b.release:
		b.cancelled <- false
		return nil
	case <-ctx.Done():
		b.cancelled <- true
		return ctx.Err()
	}
}

func TestRunnerOneJobOfAKindAtOnce(t *testing.T) {
	r := NewRunner(nil)
	ctx := context.Background()
	a := newBlocker()
	if !r.Start(ctx, Job{Name: jobConverge, Run: a.run}) {
		t.Fatal("the first converge did not start")
	}
	<-a.started
	if r.Start(ctx, Job{Name: jobConverge, Run: func(context.Context) error { t.Error("a second converge ran"); return nil }}) {
		t.Error("a second converge started while one runs")
	}
	if !r.Running(jobConverge) {
		t.Error("the converge is not reported running")
	}
	other := newBlocker()
	if !r.Start(ctx, Job{Name: jobRenew, Run: other.run}) {
		t.Error("a job of another kind did not start beside the converge")
	}
	close(a.release)
	if <-a.cancelled {
		t.Error("the converge was cancelled")
	}
	eventuallyTrue(t, func() bool { return !r.Running(jobConverge) })
	again := newBlocker()
	if !r.Start(ctx, Job{Name: jobConverge, Run: again.run}) {
		t.Error("a converge did not start after the previous one ended")
	}
	close(again.release)
	close(other.release)
	r.Stop(time.Second, time.Second)
}

// The stop signal does not reach a job through the ctx it was started
// with: only Stop ends it.
func TestRunnerJobOutlivesItsStartContext(t *testing.T) {
	r := NewRunner(nil)
	ctx, cancel := context.WithCancel(context.Background())
	b := newBlocker()
	r.Start(ctx, Job{Name: jobConverge, Run: b.run})
	<-b.started
	cancel()
	select {
	case c := <-b.cancelled:
		t.Fatalf("the job ended with its start context (cancelled=%v)", c)
	case <-time.After(50 * time.Millisecond):
	}
	close(b.release)
	r.Stop(time.Second, time.Second)
}

func TestRunnerStopDrainsWithinTheBound(t *testing.T) {
	var log logLines
	r := NewRunner(log.logf)
	ctx := context.Background()
	converge := newBlocker()
	licence := newBlocker()
	r.Start(ctx, Job{Name: jobConverge, Run: converge.run})
	r.Start(ctx, Job{Name: jobLicenseCheck, Interruptible: true, Run: licence.run})
	<-converge.started
	<-licence.started
	go func() {
		// The converge ends by itself while Stop waits.
		time.Sleep(30 * time.Millisecond)
		close(converge.release)
	}()
	cut := r.Stop(5*time.Second, time.Second)
	if len(cut) != 0 {
		t.Errorf("cut %v, want none", cut)
	}
	if <-converge.cancelled {
		t.Error("the converge was cancelled though it ended within the bound")
	}
	if !<-licence.cancelled {
		t.Error("the licence check was waited for rather than cancelled")
	}
	for _, want := range []string{"event=job-draining job=converge", "event=job-drained job=converge"} {
		if !log.has(want) {
			t.Errorf("no %q line:\n%s", want, log.String())
		}
	}
	if log.has("event=job-draining job=license-check") {
		t.Errorf("the interruptible licence check was waited for:\n%s", log.String())
	}
	if r.Start(ctx, Job{Name: jobConverge, Run: func(context.Context) error { return nil }}) {
		t.Error("a job started after Stop")
	}
}

func TestRunnerStopCancelsPastTheBound(t *testing.T) {
	var log logLines
	r := NewRunner(log.logf)
	stuck := newBlocker()
	r.Start(context.Background(), Job{Name: jobRenew, Run: stuck.run})
	<-stuck.started
	start := time.Now()
	cut := r.Stop(50*time.Millisecond, time.Second)
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("Stop took %s with a 50ms bound", took)
	}
	if !slices.Equal(cut, []string{jobRenew}) {
		t.Errorf("cut %v, want [%s]", cut, jobRenew)
	}
	if !<-stuck.cancelled {
		t.Error("the job past the bound was not cancelled")
	}
	if !log.has("event=job-cut job=certificate-renewal") {
		t.Errorf("no job-cut line:\n%s", log.String())
	}
}

// A job that ignores cancellation does not hold the stop beyond grace.
func TestRunnerStopAbandonsAJobThatIgnoresCancellation(t *testing.T) {
	var log logLines
	r := NewRunner(log.logf)
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{})
	r.Start(context.Background(), Job{Name: jobConverge, Run: func(context.Context) error {
		close(started)
		<-release
		return errors.New("late")
	}})
	<-started
	start := time.Now()
	r.Stop(20*time.Millisecond, 20*time.Millisecond)
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("Stop took %s", took)
	}
	if !log.has("event=job-abandoned") {
		t.Errorf("no job-abandoned line:\n%s", log.String())
	}
}

func eventuallyTrue(t *testing.T, cond func() bool) {
	t.Helper()
	// Generous: only a failing test waits it out, and a loaded CI
	// machine once took longer than 5 s.
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
