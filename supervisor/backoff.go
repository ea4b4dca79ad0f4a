package supervisor

import "time"

// backoffTable spaces the supervisor's restarts of one service: the first
// comes at once (a crash is usually a one-off), then each further restart
// within the window waits longer, up to a minute, so a service that cannot
// start does not hammer the host or its database.
var backoffTable = []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute}

const (
	// window is how far back restarts count towards the backoff; a service
	// that stayed up this long starts again from the first step.
	window = 5 * time.Minute
	// crashLoopAfter restarts within the window make a crash loop, which
	// status reports.
	crashLoopAfter = 5
)

// tracker is one service's restart history. Not safe for concurrent use:
// the supervisor's loop owns it.
type tracker struct {
	restarts []time.Time // within the window, oldest first
	total    int
	last     time.Time
	next     time.Time // no restart before this

	container   string // the container the history is about
	engineCount int    // its RestartCount when last seen
}

// observe follows the container the service runs in: a new container (a
// recreate) starts a new history; restarts the engine's own policy made
// since the last look count like the supervisor's own. A container first
// seen when the agent starts may be old, so its restarts so far are
// history; one that replaced a container the agent saw was created since,
// so all of its restarts are recent: an install or apply that kept the
// agent from looking (it holds the converge lock while a new container
// crash-loops under the engine's policy) must not hide a crash loop.
func (t *tracker) observe(now time.Time, containerID string, restartCount int) {
	if containerID != t.container {
		baseline := restartCount
		if t.container != "" {
			baseline = 0
		}
		*t = tracker{container: containerID, engineCount: baseline}
	}
	for ; t.engineCount < restartCount; t.engineCount++ {
		t.prune(now)
		t.restarts = append(t.restarts, now)
		t.total++
		t.last = now
	}
}

func (t *tracker) prune(now time.Time) {
	i := 0
	for i < len(t.restarts) && now.Sub(t.restarts[i]) > window {
		i++
	}
	t.restarts = t.restarts[i:]
}

// due reports whether a restart may happen now, and if not, when.
func (t *tracker) due(now time.Time) (bool, time.Time) {
	t.prune(now)
	return !now.Before(t.next), t.next
}

// record notes a restart at now and sets when the next may come.
func (t *tracker) record(now time.Time) {
	t.prune(now)
	t.restarts = append(t.restarts, now)
	t.total++
	t.last = now
	t.next = now.Add(t.backoff())
}

// backoff is the wait before the next restart.
func (t *tracker) backoff() time.Duration {
	n := len(t.restarts)
	if n >= len(backoffTable) {
		n = len(backoffTable) - 1
	}
	return backoffTable[n]
}

// crashLoop reports whether the service keeps failing.
func (t *tracker) crashLoop(now time.Time) bool {
	t.prune(now)
	return len(t.restarts) >= crashLoopAfter
}

// backoffTimer says when a thing that keeps failing is due again: at once
// the first time, then 10 s later, doubling up to 5 min.
type backoffTimer struct {
	next  time.Time
	delay time.Duration
}

func (b *backoffTimer) due(now time.Time) bool {
	if now.Before(b.next) {
		return false
	}
	b.delay = min(max(2*b.delay, 10*time.Second), 5*time.Minute)
	b.next = now.Add(b.delay)
	return true
}
