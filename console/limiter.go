package console

import (
	"slices"
	"sync"
	"time"
)

const (
	loginWindow = 5 * time.Minute
	// maxFailuresPerIP failed logins per window from one address lock it
	// out until the oldest leaves the window.
	maxFailuresPerIP = 5
	// maxFailures caps failed logins from all addresses together: an
	// attacker with many addresses (an IPv6 range) gets no more guesses,
	// and the operator waits at most a window.
	maxFailures = 50
)

// limiter counts failed logins.
type limiter struct {
	mu   sync.Mutex
	byIP map[string][]time.Time // guarded by mu; oldest first
	all  []time.Time            // guarded by mu; oldest first
}

func newLimiter() *limiter {
	return &limiter{byIP: map[string][]time.Time{}}
}

// attempt records a login attempt from ip as a failure until succeeded
// says otherwise, and says how many failures ip has now; when the limit
// is reached it records nothing and says how long to wait.
func (l *limiter) attempt(ip string, now time.Time) (failures int, wait time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.prune(now)
	if f := l.byIP[ip]; len(f) >= maxFailuresPerIP {
		return len(f), f[0].Add(loginWindow).Sub(now), false
	}
	if len(l.all) >= maxFailures {
		return len(l.byIP[ip]), l.all[0].Add(loginWindow).Sub(now), false
	}
	l.byIP[ip] = append(l.byIP[ip], now)
	l.all = append(l.all, now)
	return len(l.byIP[ip]), 0, true
}

// succeeded takes back the attempt made at from ip, and forgives ip's
// earlier failures: the operator knows the password.
func (l *limiter) succeeded(ip string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.byIP, ip)
	if i := slices.Index(l.all, at); i >= 0 {
		l.all = slices.Delete(l.all, i, i+1)
	}
}

// prune forgets failures older than the window; the global cap bounds
// what is left.
func (l *limiter) prune(now time.Time) {
	recent := func(t time.Time) bool { return now.Sub(t) < loginWindow }
	l.all = slices.DeleteFunc(l.all, func(t time.Time) bool { return !recent(t) })
	for ip, f := range l.byIP {
		f = slices.DeleteFunc(f, func(t time.Time) bool { return !recent(t) })
		if len(f) == 0 {
			delete(l.byIP, ip)
		} else {
			l.byIP[ip] = f
		}
	}
}
