package license

import (
	"math"
	"testing"
	"time"
)

// A grace period out of bounds, as an overflowing grace_days made it
// (negative, or huge), is the default or the maximum: never an instant
// expiry, never years of grace.
func TestEvaluateBoundsGrace(t *testing.T) {
	l := sample()
	since := now.Add(-time.Hour)
	days := 106752 // a day more than a Duration holds
	overflowed := time.Duration(days) * 24 * time.Hour
	online := Online{ID: "lic-1", Checked: since, FailingSince: since, Error: "timeout"}
	cases := []struct {
		name  string
		grace time.Duration
		want  time.Duration
	}{
		{"default", 0, DefaultGrace},
		{"one day", 24 * time.Hour, 24 * time.Hour},
		{"negative (an overflowed product)", overflowed, DefaultGrace},
		{"beyond the maximum", 1000 * 24 * time.Hour, MaxGrace},
		{"the longest duration", math.MaxInt64, MaxGrace},
		{"the most negative", math.MinInt64, DefaultGrace},
	}
	for _, tc := range cases {
		s := Evaluate(&l, nil, here, online, tc.grace, now)
		if s.State != Grace || s.GraceEndsAt == nil || !s.GraceEndsAt.Equal(since.Add(tc.want)) {
			t.Errorf("%s: %s, grace ends %v, want %v", tc.name, s.State, s.GraceEndsAt, since.Add(tc.want))
		}
	}
}

// Whatever the dates and grace, the grace ends between one day and
// MaxGrace after the last answer, and a licence is in grace only before
// that end.
func FuzzEvaluate(f *testing.F) {
	f.Add(int64(-3*86400), int64(-2*86400), int64(0), int64(DefaultGrace), int64(365*86400), false)
	f.Add(int64(0), int64(0), int64(math.MaxInt32), int64(math.MaxInt64), int64(math.MinInt64), true)
	// Times as JSON holds them (license-check.json, the licence): years 1 to 9999.
	const lo, span = -62135596800, 315537897600
	at := func(s int64) time.Time {
		if s < 0 {
			s = -(s + 1)
		}
		return time.Unix(lo+s%span, 0).UTC()
	}
	f.Fuzz(func(t *testing.T, checked, failing, nowS, grace, expires int64, revoked bool) {
		now := at(nowS)
		l := sample()
		l.Issued, l.Expires = time.Unix(lo, 0).UTC(), at(expires)
		online := Online{ID: l.ID, Checked: at(checked), FailingSince: at(failing), Revoked: revoked, Error: "x"}
		s := Evaluate(&l, nil, here, online, time.Duration(grace), now)
		if s.GraceEndsAt != nil {
			since := online.Checked
			if since.IsZero() {
				since = online.FailingSince
			}
			d := s.GraceEndsAt.Sub(since)
			if d < 24*time.Hour || d > MaxGrace {
				t.Fatalf("grace of %s after the last answer", d)
			}
		}
		if s.State == Grace && (s.GraceEndsAt == nil || !now.Before(*s.GraceEndsAt)) {
			t.Fatalf("in grace at %s, grace ends %v", now, s.GraceEndsAt)
		}
		if (s.State == Valid || s.State == Expiring || s.State == Grace) && !now.Before(l.Expires) {
			t.Fatalf("%s at %s, expired on %s", s.State, now, l.Expires)
		}
	})
}
