package supervisor

import (
	"testing"
	"time"
)

func TestBackoffGrowsAndResets(t *testing.T) {
	var tr tracker
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var waits []time.Duration
	for i := 0; i < 9; i++ {
		ok, next := tr.due(now)
		if !ok {
			now = next // wait as the supervisor would
		}
		tr.record(now)
		waits = append(waits, tr.next.Sub(now))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute, time.Minute}
	for i := range want {
		if waits[i] != want[i] {
			t.Errorf("restart %d: next after %s, want %s", i+1, waits[i], want[i])
		}
	}
	if !tr.crashLoop(now) || tr.total != 9 {
		t.Errorf("crash loop %v total %d after 9 quick restarts", tr.crashLoop(now), tr.total)
	}
	later := now.Add(window + time.Minute)
	if tr.crashLoop(later) {
		t.Error("still a crash loop after a quiet window")
	}
	if ok, _ := tr.due(later); !ok {
		t.Error("not due after a quiet window")
	}
	tr.record(later)
	if tr.next.Sub(later) != time.Second {
		t.Errorf("backoff did not reset: %s", tr.next.Sub(later))
	}
}

func TestFirstRestartIsImmediate(t *testing.T) {
	var tr tracker
	now := time.Now()
	if ok, _ := tr.due(now); !ok {
		t.Fatal("the first restart waits")
	}
	tr.record(now)
	if ok, _ := tr.due(now.Add(500 * time.Millisecond)); ok {
		t.Error("a second restart within the backoff is allowed")
	}
}

// Restarts by the engine's own policy count towards a crash loop; a new
// container (a recreate) starts a clean history.
func TestObserveEngineRestarts(t *testing.T) {
	var tr tracker
	now := time.Now()
	tr.observe(now, "c1", 3) // first sight: the count so far is history
	if tr.total != 0 {
		t.Fatalf("first sight counted %d restarts", tr.total)
	}
	tr.observe(now, "c1", 8)
	if tr.total != 5 || !tr.crashLoop(now) {
		t.Errorf("after 5 engine restarts: total %d crash loop %v", tr.total, tr.crashLoop(now))
	}
	tr.observe(now, "c2", 0)
	if tr.total != 0 || tr.crashLoop(now) {
		t.Errorf("a new container kept the old history: total %d", tr.total)
	}
	// A container that replaced one the agent saw was created since: the
	// engine's restarts of it, made while the agent did not look (an
	// apply held the lock), are recent and count.
	tr.observe(now, "c3", 6)
	if tr.total != 6 || !tr.crashLoop(now) {
		t.Errorf("a recreated container's 6 restarts: total %d crash loop %v", tr.total, tr.crashLoop(now))
	}
}
