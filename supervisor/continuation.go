package supervisor

// An upgrade that needed a newer carto-appliance replaced the binary and
// left an intent (installer.TakeUpgradeIntent) before the agent restarted
// on the new binary. That agent continues the upgrade as it starts,
// whether or not a CLI is there to watch: the CLI that asked for it
// follows it (GET /v1/upgrade/continuation) from its first event to its
// result, as it would an op it sent.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/cartodb/carto-appliance/installer"
)

// ErrNoContinuation is returned by FollowContinuation when the agent
// continues no upgrade (none was left for it, or it restarted since).
var ErrNoContinuation = errors.New("the carto-appliance agent continues no upgrade")

// continueUpgrade takes the upgrade a self-update left for this binary
// (version) and runs it in the background, its messages kept for
// followers; nil when there is none.
func (s serverOps) continueUpgrade(version string) *relay {
	in, stale, err := installer.TakeUpgradeIntent(s.paths, version)
	if err != nil {
		s.logf("event=upgrade-continue-failed err=%q", err)
		return nil
	}
	if stale != "" {
		s.logf("event=upgrade-intent-dropped reason=%q", stale)
	}
	if in == nil {
		return nil
	}
	// Not again: were this agent still too old, it would loop.
	op := UpgradeOp{Upgrade: installer.UpgradeOptions{To: in.To, SkipDatabaseBackup: in.SkipDatabaseBackup, Bundle: in.Bundle, NoSelfUpdate: true}}
	r := newRelay()
	end := s.start("upgrade", fmt.Sprintf("upgrade-continue to=%q skip_db_backup=%t left_at=%s", in.To, in.SkipDatabaseBackup, in.At.Format("2006-01-02T15:04:05Z")))
	go func() {
		defer close(r.finished)
		defer end()
		res, err := runSending(r.send, func(o installer.Options) (*installer.Result, error) { return s.run(op, o) })
		switch {
		case err != nil:
			s.logf("event=upgrade-continued to=%q err=%q", in.To, err)
		case res != nil:
			s.logf("event=upgrade-continued to=%q version=%s", in.To, res.Version)
		}
	}()
	return r
}

// followContinuation streams the continued upgrade's messages, from the
// first, then its result.
func (s serverOps) followContinuation(w http.ResponseWriter, r *http.Request) {
	if s.cont == nil {
		writeJSON(w, http.StatusNotFound, toAPIError(fmt.Errorf("%w: see carto-appliance status for the last upgrade", ErrNoContinuation)))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	s.cont.follow(r.Context(), streamTo(w))
}

// relay keeps an operation's messages for followers that come and go:
// each gets them all, from the first, then live, until the result.
type relay struct {
	mu      sync.Mutex
	msgs    []message
	dropped int
	// wake is closed (and replaced) at each message.
	wake chan struct{}
	// finished is closed after the last message (the result).
	finished chan struct{}
}

// maxRelayed bounds the messages kept: an upgrade's steps and service
// events are a few hundred.
const maxRelayed = 10000

func newRelay() *relay {
	return &relay{wake: make(chan struct{}), finished: make(chan struct{})}
}

// send keeps m. Image pull progress is for a terminal watching live; a
// follower gets the events and the result.
func (r *relay) send(m message) {
	if m.Pull != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) >= maxRelayed && m.Event != nil {
		r.dropped++
		return
	}
	r.msgs = append(r.msgs, m)
	close(r.wake)
	r.wake = make(chan struct{})
}

// follow sends every message kept and then each new one, until the result
// was sent or ctx ends.
func (r *relay) follow(ctx context.Context, send func(message)) {
	next := 0
	for {
		r.mu.Lock()
		batch := r.msgs[next:]
		wake := r.wake
		r.mu.Unlock()
		for _, m := range batch {
			send(m)
		}
		next += len(batch)
		select {
		case <-r.finished:
			r.mu.Lock()
			rest := r.msgs[next:]
			r.mu.Unlock()
			for _, m := range rest {
				send(m)
			}
			return
		case <-wake:
		case <-ctx.Done():
			return
		}
	}
}
