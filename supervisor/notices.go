package supervisor

import (
	"context"
	"sync"
)

// Notices carries "the stack changed" (a container started, died, changed
// health, or was probed healthy) from the agent's loop to whoever shows
// the stack live: the console's status is sent at once then, not at its
// next tick. A nil *Notices tells nobody.
type Notices struct {
	mu   sync.Mutex
	subs map[chan struct{}]bool
}

// NewNotices makes a Notices with no subscriber.
func NewNotices() *Notices { return &Notices{subs: map[chan struct{}]bool{}} }

// Notify tells every subscriber, without waiting: one already told and not
// yet listening is told once.
func (n *Notices) Notify() {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Subscribe returns a channel told of each change until ctx ends; nil (a
// channel never told) on a nil Notices.
func (n *Notices) Subscribe(ctx context.Context) <-chan struct{} {
	if n == nil {
		return nil
	}
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	n.subs[ch] = true
	n.mu.Unlock()
	context.AfterFunc(ctx, func() {
		n.mu.Lock()
		delete(n.subs, ch)
		n.mu.Unlock()
	})
	return ch
}
