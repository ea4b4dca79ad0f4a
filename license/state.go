package license

import (
	"fmt"
	"time"
)

// State is what a licence means now.
type State string

const (
	Valid    State = "valid"
	Expiring State = "expiring" // valid, expiring within ExpiryWarning
	Grace    State = "grace"    // the licence server has not answered lately; valid until the grace ends
	Expired  State = "expired"  // past its expiry, revoked, or the grace ended
	Invalid  State = "invalid"  // missing, tampered, or not for this tenant or layout
)

// DefaultGrace is how long a licence stays valid while the licence server
// gives no trusted answer.
const DefaultGrace = 14 * 24 * time.Hour

// MaxGraceDays bounds the grace period an installation may set: a longer
// one would let a revoked licence run for months behind a blocked server.
const MaxGraceDays = 90

// MaxGrace is MaxGraceDays as a duration.
const MaxGrace = MaxGraceDays * 24 * time.Hour

// Online is what the licence server said, kept between checks.
type Online struct {
	// ID is the licence the record is about: a new licence starts afresh.
	ID string `json:"id"`
	// Checked is the last time the server gave a trusted answer.
	Checked time.Time `json:"checked,omitzero"`
	// Revoked is the server's word that the licence is no longer good.
	Revoked bool `json:"revoked,omitempty"`
	// FailingSince is the first failed check after the last trusted
	// answer, and Error the last failure (unreachable, or an answer that
	// was not trusted: unsigned, badly signed, replayed, stale).
	FailingSince time.Time `json:"failing_since,omitzero"`
	Error        string    `json:"error,omitempty"`
}

// Status is a licence's state with what status shows of it.
type Status struct {
	State       State      `json:"state"`
	Reason      string     `json:"reason,omitempty"`
	ID          string     `json:"id,omitempty"`
	Customer    string     `json:"customer,omitempty"`
	TenantID    string     `json:"tenant_id,omitempty"`
	Channel     string     `json:"channel,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	DaysLeft    int        `json:"days_left"`
	AirGap      bool       `json:"air_gap"`
	LastChecked *time.Time `json:"last_checked,omitempty"`
	GraceEndsAt *time.Time `json:"grace_ends_at,omitempty"`
}

// Evaluate is the licence's state now: l as parsed (or the parse error),
// for u, with the licence server's last word. grace 0 (or less) means
// DefaultGrace; more than MaxGrace counts as MaxGrace.
func Evaluate(l *License, parseErr error, u Usage, online Online, grace time.Duration, now time.Time) Status {
	if parseErr != nil {
		return Status{State: Invalid, Reason: parseErr.Error()}
	}
	grace = min(grace, MaxGrace)
	if grace <= 0 {
		grace = DefaultGrace
	}
	s := Status{
		ID: l.ID, Customer: l.Customer, TenantID: l.TenantID, Channel: l.Channel, AirGap: l.AirGap,
		ExpiresAt: &l.Expires, DaysLeft: int(l.Expires.Sub(now).Hours() / 24),
	}
	if online.ID == l.ID && !online.Checked.IsZero() {
		s.LastChecked = &online.Checked
	}
	if err := l.Check(u, now); err != nil {
		s.State, s.Reason = Invalid, err.Error()
		if l.fits(u) == nil && !now.Before(l.Expires) {
			s.State = Expired
		}
		return s
	}
	if !l.AirGap && online.ID == l.ID {
		if online.Revoked {
			s.State, s.Reason = Expired, "CARTO's licence server says it was revoked: contact CARTO support"
			return s
		}
		if !online.FailingSince.IsZero() {
			since := online.Checked
			if since.IsZero() {
				since = online.FailingSince
			}
			end := since.Add(grace)
			s.GraceEndsAt = &end
			if !now.Before(end) {
				s.State, s.Reason = Expired, fmt.Sprintf("no trusted answer from the licence server since %s (%s); the grace period ended on %s: let the appliance reach it (proxy, firewall) and run `carto-appliance license check`", since.Format(time.DateOnly), online.Error, end.Format(time.DateOnly))
				return s
			}
			s.State, s.Reason = Grace, fmt.Sprintf("no trusted answer from the licence server (%s): valid until %s unless it answers", online.Error, end.Format(time.DateOnly))
			return s
		}
	}
	if l.Expires.Sub(now) < ExpiryWarning {
		s.State, s.Reason = Expiring, fmt.Sprintf("it expires on %s: ask CARTO for a renewed licence", l.Expires.Format(time.DateOnly))
		return s
	}
	s.State = Valid
	return s
}
