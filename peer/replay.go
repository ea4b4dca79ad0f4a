package peer

import "sync"

// nonces remembers the nonces of the state-changing requests a handler
// accepted, until their time has left the clock window: from then on the
// time check refuses a replay anyway. The zero value is ready to use.
type nonces struct {
	mu   sync.Mutex
	seen map[string]int64 // nonce -> unix second after which it is forgotten; guarded by mu
}

// add records nonce, to be remembered until the unix second until, and
// reports whether it was new. now is the current unix second.
func (n *nonces) add(nonce string, until, now int64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	// Only authenticated requests get here, so the map holds what the
	// nodes of the layout asked in the last few minutes: a handful.
	// Sweeping it whole each time is cheaper than keeping it ordered.
	for k, u := range n.seen {
		if u < now {
			delete(n.seen, k)
		}
	}
	if _, ok := n.seen[nonce]; ok {
		return false
	}
	if n.seen == nil {
		n.seen = make(map[string]int64)
	}
	n.seen[nonce] = until
	return true
}
