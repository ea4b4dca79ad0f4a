package console

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
)

const (
	// sessionLifetime is how long a login lasts at most, and sessionIdle
	// how long it lasts without a page or action.
	sessionLifetime = 12 * time.Hour
	sessionIdle     = 30 * time.Minute
	// maxSessions bounds the store; past it the least recently used
	// session ends. A handful of operators need far fewer.
	maxSessions = 64
	// sessionSaveEvery is how stale a session's last activity may be in
	// the file: a page or action saves it at most this often.
	sessionSaveEvery = time.Minute
)

// session is a logged-in operator, as the store hands out copies of it.
type session struct {
	// id is the cookie's value; the store keeps it only hashed (key).
	id string
	// csrf is the token every form of the session carries.
	csrf    string
	created time.Time
	seen    time.Time
	// flash is the last action's outcome, shown by the next page.
	flash string
	// saved is seen as the file last has it.
	saved time.Time
}

func (s *session) expired(now time.Time) bool {
	return now.Sub(s.created) >= sessionLifetime || now.Sub(s.seen) >= sessionIdle
}

// sessions is the server-side store: the cookie holds only the id. With
// a file, the store outlives the agent (a restart, a self-update in the
// middle of an upgrade run from the console): the file holds each id only
// hashed, so that reading it does not log anyone in, and the password
// hash's fingerprint, so that a new password ends every session.
type sessions struct {
	mu    sync.Mutex
	byKey map[string]*session // by key(id); guarded by mu
	file  string              // "" keeps them in memory
	pass  string              // the password hash's fingerprint
	logf  func(string, ...any)
	// failed is the last save's error text, logged once.
	failed string
}

func newSessions() *sessions {
	return &sessions{byKey: map[string]*session{}, logf: func(string, ...any) {}}
}

// key is how the store names a session: the id's hash.
func key(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// savedSessions is the file's content.
type savedSessions struct {
	Password string         `json:"password"`
	Sessions []savedSession `json:"sessions"`
}

type savedSession struct {
	Key     string    `json:"key"`
	CSRF    string    `json:"csrf"`
	Created time.Time `json:"created"`
	Seen    time.Time `json:"seen"`
}

// loadSessions is the store kept in file for the password hash password:
// empty when there is none, it cannot be read, or it was kept for
// another password; in memory only when file is "".
func loadSessions(file string, password []byte, now time.Time, logf func(string, ...any)) *sessions {
	ss := newSessions()
	if file == "" {
		return ss
	}
	sum := sha256.Sum256(password)
	ss.file, ss.pass, ss.logf = file, hex.EncodeToString(sum[:]), logf
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return ss
	}
	var saved savedSessions
	if err == nil {
		err = json.Unmarshal(b, &saved)
	}
	if err != nil {
		logf("event=console-sessions-unreadable file=%s err=%q", file, err)
		return ss
	}
	if saved.Password != ss.pass {
		return ss // the password changed: every session ended
	}
	for _, v := range saved.Sessions {
		s := &session{csrf: v.CSRF, created: v.Created, seen: v.Seen, saved: v.Seen}
		if v.Key != "" && v.CSRF != "" && !s.expired(now) && len(ss.byKey) < maxSessions {
			ss.byKey[v.Key] = s
		}
	}
	return ss
}

// save writes the store to its file; the caller holds mu.
func (ss *sessions) save() {
	if ss.file == "" {
		return
	}
	out := savedSessions{Password: ss.pass, Sessions: []savedSession{}}
	for k, s := range ss.byKey {
		out.Sessions = append(out.Sessions, savedSession{Key: k, CSRF: s.csrf, Created: s.created, Seen: s.seen})
		s.saved = s.seen
	}
	b, err := json.Marshal(out)
	if err == nil {
		err = atomicfile.Write(ss.file, b, 0o600)
	}
	// Not fatal: the sessions then end with the agent, as without a file.
	if err != nil {
		if err.Error() != ss.failed {
			ss.logf("event=console-sessions-unsaved file=%s err=%q", ss.file, err)
		}
		ss.failed = err.Error()
		return
	}
	ss.failed = ""
}

func (ss *sessions) create(now time.Time) session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var oldest string
	for k, s := range ss.byKey {
		if s.expired(now) {
			delete(ss.byKey, k)
		} else if oldest == "" || s.seen.Before(ss.byKey[oldest].seen) {
			oldest = k
		}
	}
	if len(ss.byKey) >= maxSessions && oldest != "" {
		delete(ss.byKey, oldest)
	}
	s := &session{id: randomToken(), csrf: randomToken(), created: now, seen: now}
	ss.byKey[key(s.id)] = s
	ss.save()
	return *s
}

// get is the live session id names; touch resets its idle time.
func (ss *sessions) get(id string, now time.Time, touch bool) (session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	k := key(id)
	s, ok := ss.byKey[k]
	if !ok {
		return session{}, false
	}
	if s.expired(now) {
		delete(ss.byKey, k)
		ss.save()
		return session{}, false
	}
	if touch {
		s.seen = now
		if now.Sub(s.saved) >= sessionSaveEvery {
			ss.save()
		}
	}
	out := *s
	out.id = id // a session loaded from the file knows only its key
	return out, true
}

func (ss *sessions) alive(id string, now time.Time) bool {
	_, ok := ss.get(id, now, false)
	return ok
}

func (ss *sessions) delete(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if _, ok := ss.byKey[key(id)]; ok {
		delete(ss.byKey, key(id))
		ss.save()
	}
}

func (ss *sessions) setFlash(id, msg string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s, ok := ss.byKey[key(id)]; ok {
		s.flash = msg
	}
}

func (ss *sessions) takeFlash(id string) string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.byKey[key(id)]
	if !ok {
		return ""
	}
	msg := s.flash
	s.flash = ""
	return msg
}
