package console

import (
	"sync"
	"time"
)

const (
	// sessionLifetime is how long a login lasts at most, and sessionIdle
	// how long it lasts without a page or action.
	sessionLifetime = 12 * time.Hour
	sessionIdle     = 30 * time.Minute
	// maxSessions bounds the store; past it the least recently used
	// session ends. A handful of operators need far fewer.
	maxSessions = 64
)

// session is a logged-in operator, as the store hands out copies of it.
type session struct {
	id string
	// csrf is the token every form of the session carries.
	csrf    string
	created time.Time
	seen    time.Time
	// flash is the last action's outcome, shown by the next page.
	flash string
}

func (s *session) expired(now time.Time) bool {
	return now.Sub(s.created) >= sessionLifetime || now.Sub(s.seen) >= sessionIdle
}

// sessions is the server-side store: the cookie holds only the id.
type sessions struct {
	mu   sync.Mutex
	byID map[string]*session // guarded by mu
}

func newSessions() *sessions {
	return &sessions{byID: map[string]*session{}}
}

func (ss *sessions) create(now time.Time) session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var oldest *session
	for id, s := range ss.byID {
		if s.expired(now) {
			delete(ss.byID, id)
		} else if oldest == nil || s.seen.Before(oldest.seen) {
			oldest = s
		}
	}
	if len(ss.byID) >= maxSessions && oldest != nil {
		delete(ss.byID, oldest.id)
	}
	s := &session{id: randomToken(), csrf: randomToken(), created: now, seen: now}
	ss.byID[s.id] = s
	return *s
}

// get is the live session id names; touch resets its idle time.
func (ss *sessions) get(id string, now time.Time, touch bool) (session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.byID[id]
	if !ok {
		return session{}, false
	}
	if s.expired(now) {
		delete(ss.byID, id)
		return session{}, false
	}
	if touch {
		s.seen = now
	}
	return *s, true
}

func (ss *sessions) alive(id string, now time.Time) bool {
	_, ok := ss.get(id, now, false)
	return ok
}

func (ss *sessions) delete(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.byID, id)
}

func (ss *sessions) setFlash(id, msg string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s, ok := ss.byID[id]; ok {
		s.flash = msg
	}
}

func (ss *sessions) takeFlash(id string) string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.byID[id]
	if !ok {
		return ""
	}
	msg := s.flash
	s.flash = ""
	return msg
}
