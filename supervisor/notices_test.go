package supervisor

import (
	"context"
	"testing"
	"time"
)

// Every subscriber is told; one not listening is told once, not blocked
// on; one whose context ended is told no more; a nil Notices is inert.
func TestNotices(t *testing.T) {
	n := NewNotices()
	ctx, cancel := context.WithCancel(t.Context())
	a, b := n.Subscribe(t.Context()), n.Subscribe(ctx)
	n.Notify()
	n.Notify() // coalesced with the first
	for name, ch := range map[string]<-chan struct{}{"a": a, "b": b} {
		select {
		case <-ch:
		default:
			t.Errorf("%s not told", name)
		}
		select {
		case <-ch:
			t.Errorf("%s told twice for two notices not listened to", name)
		default:
		}
	}
	cancel()
	// The removal runs in its own goroutine, soon after.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		n.mu.Lock()
		left := len(n.subs)
		n.mu.Unlock()
		if left == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers after one's context ended, want 1", left)
		}
	}
	n.Notify()
	select {
	case <-b:
		t.Error("told after its context ended")
	default:
	}
	var none *Notices
	none.Notify()
	if none.Subscribe(t.Context()) != nil {
		t.Error("a nil Notices gave a channel")
	}
}
