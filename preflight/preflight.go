// Package preflight owns the checks that run before anything changes on a
// node (SPEC §11): operating system and architecture, CPU, memory and disk
// against the release's requirements, the Docker engine, the router's
// ports, the domain's DNS record and the clock. Each check passes, warns or
// fails and says how to fix it. The package only reads: it never changes
// the host.
package preflight

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cartodb/carto-appliance/release"
)

// Status is a check's verdict.
type Status string

// The verdicts, from best to worst.
const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Check is one check's result.
type Check struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix says what to do; empty when the check passed.
	Fix string `json:"fix,omitempty"`
	// Inputs are the install settings Fix speaks of, by what they are
	// ("install_docker", "bind_address", "http_port"): how an operator
	// gives them (a flag, a form field) is the front end's business.
	Inputs []string `json:"inputs,omitempty"`
}

// Report is every check's result, in a fixed order.
type Report struct {
	Checks []Check `json:"checks"`
	// Failed is set when any check failed: installing would not work.
	Failed bool `json:"failed"`
}

// Failures are the failed checks.
func (r *Report) Failures() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Status == Fail {
			out = append(out, c)
		}
	}
	return out
}

// FailedError is returned by workflows that refuse to go on after a failed
// preflight; the CLI exits with 3 (nothing changed).
type FailedError struct{ Report *Report }

func (e *FailedError) Error() string {
	var b strings.Builder
	b.WriteString("preflight failed, nothing was changed:")
	for _, c := range e.Report.Failures() {
		fmt.Fprintf(&b, "\n  %s: %s\n    fix: %s", c.Title, c.Detail, c.Fix)
	}
	return b.String()
}

// Options are what the checks need to know of the install.
type Options struct {
	Requirements release.Requirements
	// Domain is SELFHOSTED_DOMAIN; empty skips the DNS check.
	Domain string
	// BindAddress and the ports are where the router will listen; a zero
	// port is not checked (nothing will listen on it).
	BindAddress         string
	HTTPPort, HTTPSPort int
	// Project is the compose project: ports its own router holds are not
	// taken.
	Project string
	// OwnListener, when set, says whether the appliance itself (its
	// agent) listens on addr:port: such a port is not taken either.
	OwnListener func(ctx context.Context, addr string, port int) bool
	// DataDirs are directories the appliance writes to (config and state);
	// their filesystems need a little space too.
	DataDirs []string
	// LoadBytes are the bytes of the images an air-gap bundle loads into
	// the engine's data directory: its filesystem needs them free.
	LoadBytes int64
	// ClockURL is an HTTPS URL (the registry) whose Date header the clock
	// is compared with; empty skips the check.
	ClockURL string
	// Egress, when set, reaches the domains CARTO needs (directly or
	// through the proxy) and returns those it could not reach, each with
	// why.
	Egress func(ctx context.Context) (unreachable []string, checked int)
	// Peers, on a node of a tier layout, asks the nodes it depends on
	// and returns those that did not answer as nodes of the layout, each
	// with why.
	Peers func(ctx context.Context) (unreachable []string, checked int)
	// Ignore lists check IDs whose failure is only a warning (the
	// operator knows better, e.g. a domain only the load balancer's DNS
	// has).
	Ignore []string
	// Host reads the machine; nil means this one.
	Host Host
}

// IDs are the checks' IDs, for --ignore-preflight.
var IDs = []string{"os", "arch", "cpu", "memory", "docker", "disk", "port-https", "port-http", "dns", "clock", "egress", "peers"}

// Run runs every check. It never fails by itself: a check that cannot tell
// warns and says why.
func Run(ctx context.Context, opts Options) *Report {
	h := opts.Host
	if h == nil {
		h = localHost{}
	}
	r := &Report{}
	add := func(c Check) {
		if c.Status == Fail && slices.Contains(opts.Ignore, c.ID) {
			c.Status, c.Detail = Warn, c.Detail+" (failure ignored, as asked)"
		}
		if c.Status == Fail {
			r.Failed = true
		}
		r.Checks = append(r.Checks, c)
	}
	add(checkOS(h))
	add(checkArch(h))
	add(checkCPUs(h, opts.Requirements.CPUs))
	add(checkMemory(h, opts.Requirements.MemoryGiB))
	docker := checkDocker(ctx, h)
	add(docker.Check)
	add(checkDisk(h, opts.Requirements.DiskGiB, docker.RootDir, opts.DataDirs, opts.LoadBytes))
	for _, p := range []struct {
		name string
		port int
	}{{"HTTPS", opts.HTTPSPort}, {"HTTP", opts.HTTPPort}} {
		if p.port == 0 {
			continue
		}
		add(checkPort(ctx, h, p.name, opts.BindAddress, p.port, opts.Project, opts.OwnListener))
	}
	if opts.Domain != "" {
		add(checkDomain(ctx, h, opts.Domain))
	}
	if opts.ClockURL != "" {
		add(checkClock(ctx, h, opts.ClockURL))
	}
	if opts.Egress != nil {
		add(checkEgress(ctx, opts.Egress))
	}
	if opts.Peers != nil {
		add(checkPeers(ctx, opts.Peers))
	}
	return r
}
