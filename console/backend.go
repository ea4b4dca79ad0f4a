package console

import (
	"context"
	"io"
	"time"
)

// Backend is everything the console shows and does. The agent adapts the
// installer's functions to it, so that every action taken in the console
// runs the same code as the CLI's; the console has no second path. Its
// methods MUST be safe for concurrent use: several operators, tabs and
// event streams call them at once.
type Backend interface {
	// Status is the node as `carto-appliance status` shows it.
	Status(ctx context.Context) (*StatusView, error)
	// Logs writes the last lines of service's log to w, then, with
	// follow, what it logs next until ctx ends.
	Logs(ctx context.Context, service string, lines int, follow bool, w io.Writer) error
	// Settings are appliance.yaml's settings, secrets masked.
	Settings(ctx context.Context) ([]SettingView, error)
	// SetSettings sets NAME=VALUE pairs, all or none, and with apply
	// converges the stack on them; it returns what changed, as text.
	SetSettings(ctx context.Context, pairs []string, apply bool) (string, error)
	// SupportBundle writes a support bundle (a .tar.gz) to w.
	SupportBundle(ctx context.Context, w io.Writer) error
	// UpgradeCheck says which release the node could upgrade to.
	UpgradeCheck(ctx context.Context) (*UpgradeView, error)
	// Upgrade upgrades to the version to, calling progress as each step
	// changes state (e.g. "backup", "running"). It may call progress from
	// any goroutine, never after it returns.
	Upgrade(ctx context.Context, to string, progress func(step, state string)) error
	// RenewCertificate renews the router's certificate now.
	RenewCertificate(ctx context.Context) error
}

// StatusView is the status page, and the JSON /events/status streams.
type StatusView struct {
	Version string `json:"version"`
	URL     string `json:"url"`
	Layout  string `json:"layout"`
	Role    string `json:"role"`
	Healthy bool   `json:"healthy"`
	// Services are every service of the node; the logs page accepts only
	// their names.
	Services    []ServiceView    `json:"services"`
	License     *LicenseView     `json:"license,omitempty"`
	Certificate *CertificateView `json:"certificate,omitempty"`
	// Upgrade is the last upgrade, or the one under way; nil when none
	// ran.
	Upgrade *UpgradeRunView `json:"upgrade,omitempty"`
	// Notes are facts the operator should know, one sentence each.
	Notes []string `json:"notes,omitempty"`
}

// ServiceView is one service's row of the status table.
type ServiceView struct {
	Name   string `json:"name"`
	State  string `json:"state"`
	Health string `json:"health"` // healthy, unhealthy, starting or none
	Image  string `json:"image"`
	// Restarts counts the engine's and the agent's restarts.
	Restarts  int  `json:"restarts"`
	CrashLoop bool `json:"crash_loop"`
	// Held says the operator stopped it.
	Held bool `json:"held,omitempty"`
}

// LicenseView is the licence's state.
type LicenseView struct {
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	Customer string `json:"customer,omitempty"`
	// ExpiresAt is zero for a licence that never expires (or unreadable).
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	DaysLeft  int       `json:"days_left"`
}

// CertificateView is the router's TLS certificate.
type CertificateView struct {
	Mode     string    `json:"mode"` // self-signed, custom, acme or offload
	Issuer   string    `json:"issuer,omitempty"`
	Subject  string    `json:"subject,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	DaysLeft int       `json:"days_left"`
	// Warning says it expires soon (or did), or cannot be read.
	Warning string `json:"warning,omitempty"`
	Note    string `json:"note,omitempty"`
}

// UpgradeRunView is an upgrade as its journal tells it.
type UpgradeRunView struct {
	What      string    `json:"what"` // "upgrade FROM -> TO"
	StartedAt time.Time `json:"started_at,omitzero"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	// Outcome is succeeded, rolled-back or rollback-failed; empty while
	// under way.
	Outcome string `json:"outcome,omitempty"`
	Step    string `json:"step,omitempty"`
	Error   string `json:"error,omitempty"`
	// Interrupted says no process runs it any more: the next converge
	// finishes or rolls it back.
	Interrupted bool `json:"interrupted,omitempty"`
	// RollbackCut says its rollback was cut while the Docker engine did
	// not answer: the agent rolls it back once it does.
	RollbackCut bool `json:"rollback_cut,omitempty"`
}

// UpgradeView is what an upgrade check found.
type UpgradeView struct {
	Current string
	// Latest is the newest release the node may upgrade to; empty when
	// none is known.
	Latest    string
	Available bool
	Notes     []string
}

// SettingView is one setting of appliance.yaml.
type SettingView struct {
	Name string // dotted yaml name, e.g. router.https_port
	// Value is never shown when Secret, whatever the Backend puts here.
	Value string
	// Set says appliance.yaml sets it; otherwise Value is the default.
	Set    bool
	Secret bool
}

// ChangeNotifier is a Backend that also says when the status may have
// changed (a container started, died or changed health): the page's live
// status is sent at once then, not at its next tick, so that a moment
// shorter than the tick (a killed container brought back within a second)
// still shows.
type ChangeNotifier interface {
	// Changes receives after each change until ctx ends; changes that
	// come while one is pending make one.
	Changes(ctx context.Context) <-chan struct{}
}
