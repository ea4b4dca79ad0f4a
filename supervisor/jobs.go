package supervisor

// The agent's long work (a converge, a certificate renewal, a licence
// check, and later an upgrade) runs as named jobs beside the loop: the
// loop only starts them and hears when they end, so that it keeps
// following the engine and feeding the systemd watchdog whatever a job
// waits for (the converge lock, a slow ACME CA, the licence server).

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Job kinds the agent runs.
const (
	jobConverge     = "converge"
	jobRenew        = "certificate-renewal"
	jobLicenseCheck = "license-check"
	jobBackup       = "backup"
	// jobProbe, followed by the service's name: one probe per service.
	jobProbe = "probe-"
)

// Job is one piece of work of a kind; at most one job of a kind runs at
// once.
type Job struct {
	Name string
	// Interruptible jobs are cancelled as soon as the agent stops (a
	// licence check: the next start asks again). The others are waited
	// for, up to the runner's bound: a converge cut in the middle leaves
	// the stack half converged until the next start.
	Interruptible bool
	Run           func(ctx context.Context) error
}

// Runner runs jobs, each kind at most once at a time, and drains them on
// Stop.
type Runner struct {
	logf func(string, ...any)

	mu      sync.Mutex
	running map[string]*runningJob
	stopped bool
	wg      sync.WaitGroup
}

type runningJob struct {
	Job
	started time.Time
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewRunner returns a runner that logs through logf.
func NewRunner(logf func(string, ...any)) *Runner {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Runner{logf: logf, running: map[string]*runningJob{}}
}

// Start runs j in its own goroutine unless a job of its kind runs or the
// runner stopped; it reports whether j started. ctx gives the job its
// values, not its end: a job ends by itself, or when Stop cancels it.
func (r *Runner) Start(ctx context.Context, j Job) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || r.running[j.Name] != nil {
		return false
	}
	jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	rj := &runningJob{Job: j, started: time.Now(), cancel: cancel, done: make(chan struct{})}
	r.running[j.Name] = rj
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(rj.done)
		defer cancel()
		err := j.Run(jctx)
		r.mu.Lock()
		delete(r.running, j.Name)
		r.mu.Unlock()
		if err != nil && jctx.Err() != nil {
			r.logf("event=job-cancelled job=%s took=%s", j.Name, time.Since(rj.started).Round(time.Millisecond))
		}
	}()
	return true
}

// Running reports whether a job of that kind runs.
func (r *Runner) Running(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running[name] != nil
}

// Stop starts no more jobs, cancels the interruptible ones and waits for
// the others up to bound, logging each it waits for; those still running
// then are cancelled and given grace to return. It returns the names of
// the jobs it had to cancel past the bound.
func (r *Runner) Stop(bound, grace time.Duration) (cut []string) {
	r.mu.Lock()
	r.stopped = true
	jobs := make([]*runningJob, 0, len(r.running))
	for _, j := range r.running {
		jobs = append(jobs, j)
	}
	r.mu.Unlock()
	sort.Slice(jobs, func(a, b int) bool { return jobs[a].Name < jobs[b].Name })

	deadline, cancelDeadline := context.WithTimeout(context.Background(), bound)
	defer cancelDeadline()
	for _, j := range jobs {
		if j.Interruptible {
			j.cancel()
			continue
		}
		r.logf("event=job-draining job=%s running_for=%s bound=%s", j.Name, time.Since(j.started).Round(time.Millisecond), bound)
	}
	for _, j := range jobs {
		if j.Interruptible {
			continue
		}
		select {
		case <-j.done:
			r.logf("event=job-drained job=%s took=%s", j.Name, time.Since(j.started).Round(time.Millisecond))
		case <-deadline.Done():
			cut = append(cut, j.Name)
		}
	}
	for _, name := range cut {
		r.logf("event=job-cut job=%s err=%q", name, "still running at the stop bound: cancelled; the next start converges again")
	}
	for _, j := range jobs {
		j.cancel()
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		r.logf("event=job-abandoned err=%q", "jobs did not return after cancellation")
	}
	return cut
}
