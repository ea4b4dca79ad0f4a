package installer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cartodb/carto-appliance/certs"
	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/proxy"
	"github.com/cartodb/carto-appliance/stack"
)

// Status is the node as `carto-appliance status` shows it.
type Status struct {
	Version string `json:"version"`
	// Release is the installed release and the one this binary carries.
	Release  *ReleaseStatus        `json:"release,omitempty"`
	Layout   string                `json:"layout"`
	Role     string                `json:"role"`
	Domain   string                `json:"domain"`
	URL      string                `json:"url"`
	Project  string                `json:"project"`
	Healthy  bool                  `json:"healthy"`
	Services []stack.ServiceStatus `json:"services"`
	// Held are the services stopped by the operator (`stop`); the stack
	// is not healthy while any is.
	Held []string `json:"held,omitempty"`
	// AllowedSources are who may reach the router; empty: everyone.
	AllowedSources []string `json:"allowed_sources,omitempty"`
	// Certificate is the router's TLS certificate.
	Certificate *CertificateStatus `json:"certificate,omitempty"`
	// AgentPID is the supervising agent's process, when the status came
	// from it; 0 means nothing supervises the stack right now.
	AgentPID int `json:"agent_pid,omitempty"`
	// AgentVersion is the carto-appliance the agent runs, with AgentPID.
	AgentVersion string `json:"agent_version,omitempty"`
	// Proxy is the forward proxy the stack goes out through, if any.
	Proxy *ProxyStatus `json:"proxy,omitempty"`
	// Notes are facts the operator should know, e.g. which data warehouse
	// connections bypass the proxy.
	Notes []string `json:"notes,omitempty"`
	// License is the licence's state; an expired one never stops the
	// stack.
	License *license.Status `json:"license,omitempty"`
	// Upgrade is the last upgrade, or the one under way.
	Upgrade *UpgradeStatus `json:"upgrade,omitempty"`
	// Nodes are the tier layout's nodes (role -> address), and Peers the
	// others as this node sees them.
	Nodes map[string]string `json:"nodes,omitempty"`
	Peers []PeerState       `json:"peers,omitempty"`
	// Console is where the agent serves the admin console, when its
	// password is set.
	Console string `json:"console,omitempty"`
}

// UpgradeStatus is the last upgrade as its journal tells it.
type UpgradeStatus struct {
	// What is "upgrade FROM -> TO".
	What      string    `json:"what"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	// Outcome is succeeded, rolled-back or rollback-failed; empty while
	// under way (or when the process running it was killed).
	Outcome string `json:"outcome,omitempty"`
	// Step is the step running (under way) or the one that failed.
	Step  string `json:"step,omitempty"`
	Error string `json:"error,omitempty"`
	// Interrupted says the run has no outcome and no process runs it
	// (nothing holds the converge lock): it stopped at Step, and the
	// next converge (the agent's, config apply) finishes or rolls it
	// back.
	Interrupted bool `json:"interrupted,omitempty"`
	// RollbackCut says the run failed and its rollback was cut while the
	// Docker engine did not answer: the agent rolls it back once it does.
	RollbackCut bool `json:"rollback_cut,omitempty"`
}

// upgradeStatus reads the upgrade journal; nil when no upgrade ran.
func upgradeStatus(paths config.Paths) *UpgradeStatus {
	r, err := steps.Journal{Path: filepath.Join(paths.StateDir, upgradeJournalFileName)}.Load()
	if err != nil || r == nil {
		return nil
	}
	us := &UpgradeStatus{What: r.Action, StartedAt: r.StartedAt, EndedAt: r.EndedAt, Outcome: r.Outcome, Error: r.Error}
	for _, s := range r.Steps {
		if s.State == steps.Running || s.State == steps.Failed || s.State == steps.FailedUndone {
			us.Step = s.Name
		}
	}
	if r.Unfinished() {
		us.Step, us.RollbackCut = r.Interrupted(), undoCut(r)
		// A run under way holds the lock for its whole length.
		if unlock, ok, err := tryLockConverge(paths); err == nil && ok {
			unlock()
			us.Interrupted = true
		}
	}
	return us
}

// CertificateStatus is the certificate part of Status.
type CertificateStatus struct {
	Mode string `json:"mode"` // self-signed, custom, acme or offload
	// ACMEDirectory is where acme mode's certificates come from.
	ACMEDirectory string `json:"acme_directory,omitempty"`
	*certs.Info
	// CA is the self-signed mode's CA certificate, for clients to trust.
	CA string `json:"ca,omitempty"`
	// CAInfo is that CA: the names it may sign for, when it ends, and its
	// rotation.
	CAInfo *CAStatus `json:"ca_info,omitempty"`
	// Warning says the certificate expires soon (or did), or cannot be read.
	Warning string `json:"warning,omitempty"`
	// Note explains the offload and acme modes.
	Note string `json:"note,omitempty"`
}

func certificateStatus(paths config.Paths, cfg config.Config, now time.Time) *CertificateStatus {
	cs := &CertificateStatus{Mode: cfg.TLS.Mode}
	if cs.Mode == "" {
		cs.Mode = config.TLSSelfSigned
	}
	if cfg.TLS.Offload() {
		cs.Note = fmt.Sprintf("TLS ends at the load balancer; the router serves plain HTTP on %s:%d and nothing listens on %d", cfg.Defaults().Router.BindAddress, cfg.Defaults().Router.HTTPPort, cfg.Defaults().Router.HTTPSPort)
		return cs
	}
	switch {
	case cs.Mode == config.TLSSelfSigned:
		cs.CA = paths.CAPath()
		env, err := installedEnv(paths)
		if err == nil {
			cs.CAInfo, err = caStatus(paths, env.Get("SELFHOSTED_DOMAIN"), now)
		}
		if err != nil {
			cs.Warning = "the appliance's CA cannot be read: " + err.Error()
			return cs
		}
	case cfg.TLS.UsesACME():
		r := cfg.Defaults().Router
		cs.ACMEDirectory = cfg.TLS.ACME.DirectoryURL()
		cs.Note = fmt.Sprintf("renewed by the agent, which answers the CA's challenges and redirects to https on %s:%d", r.BindAddress, r.HTTPPort)
	}
	b, err := os.ReadFile(filepath.Join(paths.ConfigDir, config.CertsDirName, config.ServerCertFile))
	if err == nil {
		cs.Info, err = certs.Describe(b, now)
	}
	if err != nil {
		cs.Warning = "the router's certificate cannot be read: " + err.Error()
		return cs
	}
	_, cs.Warning = certs.ExpiryWarning(cs.NotAfter, now)
	if cs.Warning == "" && cs.CAInfo != nil {
		cs.Warning = cs.CAInfo.Warning
	}
	return cs
}

// ProxyStatus is the proxy part of Status.
type ProxyStatus struct {
	URL                string   `json:"url"`
	NoProxy            []string `json:"no_proxy,omitempty"`
	CACert             bool     `json:"ca_cert"`
	RejectUnauthorized bool     `json:"reject_unauthorized"`
}

// GetStatus reports the installed stack's state from the engine.
func GetStatus(ctx context.Context, paths config.Paths) (*Status, error) {
	paths = paths.WithDefaults()
	cfg, st, err := installedStatus(ctx, paths)
	if err != nil || !cfg.Distributed() {
		return st, err
	}
	// Only here, not in statusOf: a run's own status (and the one this
	// node answers its peers) never waits on another node.
	join, err := readJoin(paths)
	if err != nil {
		return nil, err
	}
	if join != nil {
		st.Peers = askPeers(ctx, cfg, join, otherRoles(cfg), st.Version, peerShowTimeout)
	}
	for _, p := range st.Peers {
		if p.Role == cfg.LicenseChecker() && !cfg.ChecksLicenseOnline() && p.Reachable {
			st.Notes = append(st.Notes, fmt.Sprintf("the licence is checked online by the %s node (%s): %s there", p.Role, p.Address, orNone(p.License)))
		}
		switch {
		case !p.Reachable:
			st.Notes = append(st.Notes, fmt.Sprintf("the %s node (%s) does not answer: %s", p.Role, p.Address, p.Error))
		case p.Skew:
			st.Notes = append(st.Notes, fmt.Sprintf("version skew: this %s node runs %s, the %s node (%s) runs %s; finish the upgrade in the layout's order (%s)",
				cfg.Role, orNone(st.Version), p.Role, p.Address, orNone(p.Version), strings.Join(cfg.LayoutRoles(), " -> ")))
		}
	}
	return st, nil
}

func orNone(v string) string {
	if v == "" {
		return "nothing"
	}
	return v
}

// installedStatus is this node's own status, from the engine.
func installedStatus(ctx context.Context, paths config.Paths) (config.Config, *Status, error) {
	cfg, project, err := loadInstalled(ctx, paths)
	if err != nil {
		return config.Config{}, nil, err
	}
	eng, err := connectEngine(ctx)
	if err != nil {
		return config.Config{}, nil, err
	}
	defer eng.Close()
	st, err := statusOf(ctx, eng, paths, cfg, project)
	return cfg, st, err
}

func statusOf(ctx context.Context, eng stackEngine, paths config.Paths, cfg config.Config, project *types.Project) (*Status, error) {
	st, err := loadState(paths.StateDir)
	if err != nil {
		return nil, err
	}
	services, err := eng.Status(ctx, project)
	if err != nil {
		return nil, err
	}
	agent, err := LoadAgentState(paths)
	if err != nil {
		return nil, err
	}
	held := stack.Dependents(project, st.Held)
	for i, s := range services {
		a := agent.Services[s.Name]
		services[i].AgentRestarts, services[i].CrashLoop = a.Restarts, a.CrashLoop
		// The engine's first check comes an interval after the start;
		// the agent's own run of the same test on this very run counts.
		if p := a.Probed; p != nil && s.State == "running" && s.Health == "starting" && p.Container == s.Container && p.StartedAt.Equal(s.StartedAt) {
			services[i].Health, services[i].HealthProbed = "healthy", true
		}
		services[i].Held = slices.Contains(held, s.Name)
	}
	d := cfg.Defaults()
	domain := project.Environment["SELFHOSTED_DOMAIN"]
	out := &Status{
		Version: st.Version, Layout: d.Layout, Role: nodeRole(cfg), Nodes: cfg.Nodes, Domain: domain,
		URL:     (&desired{cfg: cfg, env: envfile.NewEnv("SELFHOSTED_DOMAIN", domain)}).url(),
		Project: project.Name, Services: services, Healthy: true, Held: held,
	}
	out.Release = releaseStatus(st)
	out.Upgrade = upgradeStatus(paths)
	if cfg.ServesRouter() {
		out.Certificate = certificateStatus(paths, cfg, time.Now())
	}
	if lic, err := os.ReadFile(paths.File(config.LicenseFileName)); err == nil || errors.Is(err, fs.ErrNotExist) {
		st := evaluateLicense(paths, cfg, envfile.NewEnv("SELFHOSTED_TENANT_ID", project.Environment["SELFHOSTED_TENANT_ID"]), lic, time.Now())
		out.License = &st
	}
	out.AllowedSources = cfg.Network.AllowedSources
	out.Console = consoleURL(paths, cfg.Console)
	if p := cfg.Proxy; p.Enabled() {
		out.Proxy = &ProxyStatus{URL: p.URL, NoProxy: p.NoProxy, CACert: p.CACert != "", RejectUnauthorized: p.Rejects()}
		_, out.Notes = envSettings(cfg, nil)
	} else {
		out.Notes = proxy.BypassNotes(cfg.Warehouses)
	}
	if out.Release.Note != "" {
		out.Notes = append(out.Notes, out.Release.Note)
	}
	for _, s := range services {
		ok := !s.Held && !s.CrashLoop && (s.State == stack.StateCompleted || (s.State == "running" && (s.Health == "healthy" || s.Health == "none")))
		if !ok {
			out.Healthy = false
		}
	}
	return out, nil
}

// loadInstalled reads appliance.yaml and loads the generated compose project.
func loadInstalled(ctx context.Context, paths config.Paths) (config.Config, *types.Project, error) {
	cfg, found, err := config.Load(paths.File(config.ConfigFileName))
	if err != nil {
		return config.Config{}, nil, err
	}
	if _, err := os.Stat(filepath.Join(paths.ConfigDir, stack.ComposeFileName)); !found || errors.Is(err, fs.ErrNotExist) {
		return config.Config{}, nil, fmt.Errorf("%w: nothing in %s; run `carto-appliance install` first", ErrNotInstalled, paths.ConfigDir)
	}
	project, err := stack.Load(ctx, paths.ConfigDir, cfg.Defaults().Project)
	if err != nil {
		return config.Config{}, nil, err
	}
	return cfg, project, nil
}

// Logs writes the services' logs to w, prefixed by service name.
func Logs(ctx context.Context, paths config.Paths, w io.Writer, opts stack.LogsOptions) error {
	paths = paths.WithDefaults()
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return err
	}
	eng, err := connectEngine(ctx)
	if err != nil {
		return err
	}
	defer eng.Close()
	opts.Redact = installedRedactor(paths)
	return eng.Logs(ctx, cfg.Defaults().Project, w, opts)
}

// installedRedactor masks in the services' logs what a failure log masks,
// from the installed .env and key.json; a file it cannot read leaves the
// masking of secret shapes.
func installedRedactor(paths config.Paths) func(string) string {
	d := &desired{}
	if b, err := os.ReadFile(paths.File(config.EnvFileName)); err == nil {
		d.env, _ = envfile.Parse(b)
	}
	d.key, _ = os.ReadFile(paths.KeyFile())
	return d.redactor()
}

// RenderedEnv is `env render`'s output.
type RenderedEnv struct {
	Masked   []byte // the .env that apply would write, secrets masked
	Warnings []string
}

// RenderEnv renders the .env that `config apply` would write from the
// installed settings (customerEnv, when set, replaces the installed
// customer.env), with every secret masked. It changes nothing.
func RenderEnv(paths config.Paths, customerEnv string) (*RenderedEnv, error) {
	paths = paths.WithDefaults()
	cfg, _, err := config.Load(paths.File(config.ConfigFileName))
	if err != nil {
		return nil, err
	}
	if customerEnv == "" {
		customerEnv = paths.File(config.CustomerEnvFileName)
	}
	rel, err := currentRelease(paths)
	if err != nil {
		return nil, err
	}
	d, err := planEnv(cfg, rel, customerEnv)
	if err != nil {
		return nil, err
	}
	return &RenderedEnv{Masked: d.rendered.Masked().Marshal(), Warnings: d.warnings}, nil
}

// UninstallOptions configures Uninstall.
type UninstallOptions struct {
	Paths    config.Paths
	Purge    bool // also delete volumes (the embedded databases' data), the config and the state
	Reporter stack.Reporter
}

// UninstallResult is what Uninstall left behind on purpose.
type UninstallResult struct {
	// Kept lists the config or state dir a purge left because it holds
	// files the appliance did not write (those files stay too).
	Kept []Kept
	// Warnings name what could not be removed though nothing failed,
	// e.g. an empty network the engine will not let go, with the fix.
	Warnings []string
}

// Uninstall stops and removes the stack's containers and network. Data is
// kept (volumes, config dir, state dir) unless Purge is set; a purge
// refuses, before anything changes, a dir that is not the appliance's
// (CheckPurge), and deletes in each dir only what the appliance wrote.
func Uninstall(ctx context.Context, opts UninstallOptions) (*UninstallResult, error) {
	paths := opts.Paths.WithDefaults()
	if opts.Purge {
		if err := CheckPurge(paths); err != nil {
			return nil, err
		}
	}
	cfg, _, err := config.Load(paths.File(config.ConfigFileName))
	if err != nil && !opts.Purge {
		return nil, err
	}
	var project *types.Project
	if _, p, err := loadInstalled(ctx, paths); err == nil {
		project = p
	}
	eng, err := connectEngine(ctx)
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	res := &UninstallResult{}
	if err := eng.Down(ctx, cfg.Defaults().Project, project, stack.DownOptions{RemoveVolumes: opts.Purge, Reporter: opts.Reporter}); err != nil {
		stale, ok := err.(*stack.StaleNetworksError)
		if !ok {
			return nil, fmt.Errorf("removing the stack: %w", err)
		}
		for _, e := range stale.Errs {
			res.Warnings = append(res.Warnings, e.Error())
		}
	}
	if err := firewallClear(ctx, firewallHost(paths), cfg.Defaults().Project); err != nil {
		return nil, fmt.Errorf("removing the router's firewall rules: %w", err)
	}
	if !opts.Purge {
		return res, nil
	}
	for _, d := range purgeDirs(paths) {
		kept, err := d.purge()
		if err != nil {
			return res, err
		}
		if kept != nil {
			res.Kept = append(res.Kept, *kept)
		}
	}
	return res, nil
}
