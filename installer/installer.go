// Package installer is the appliance's core workflows: install, config
// apply, status, logs, env render and uninstall. It decides what the node
// should run (appliance.yaml + customer.env + the release) and drives the
// stack engine to it. It never prints: callers get results, errors and
// events.
package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/peer"
	"github.com/cartodb/carto-appliance/preflight"
	"github.com/cartodb/carto-appliance/proxy"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/stack"
)

// Options are the settings shared by every workflow that changes the stack.
type Options struct {
	Paths config.Paths
	// Reporter receives the engine's events; nil discards.
	Reporter stack.Reporter
	// Progress receives the image pulls' JSON-message stream; nil discards.
	Progress io.Writer
	// Pull is the pull policy; default stack.PullMissing.
	Pull stack.PullPolicy
	// WaitTimeout bounds the wait for each service; 0 means the engine's default.
	WaitTimeout time.Duration
	// ConfirmEngineRestart is asked before the Docker engine is restarted
	// to take new proxy settings (which restarts every container); nil or
	// false leaves the engine alone and says how to restart it.
	ConfirmEngineRestart func(reason string) bool
	// DeferACME leaves an ACME certificate that is due, but still served,
	// to a later renewal (the agent's converges: it renews beside its loop).
	DeferACME bool
	// ReleaseHTTPPort is given by the agent running the operation: its
	// front, which answers the HTTP port in acme mode, lets go of it at
	// once when the committed settings leave acme mode. Nil (a run
	// without the agent): wait for the agent's loop to notice.
	ReleaseHTTPPort func(context.Context) error
}

// InstallOptions are install's inputs. Empty fields keep what is already
// installed (appliance.yaml, customer.env, key.json in the config dir).
type InstallOptions struct {
	// Options are how this run reports and asks, not what it installs:
	// they do not cross the agent's socket.
	Options     `json:"-"`
	CustomerEnv string     `json:"customer_env,omitempty"` // path of the customer package's customer.env
	KeyFile     string     `json:"key_file,omitempty"`     // path of the customer package's key.json
	Domain      string     `json:"domain,omitempty"`
	Registry    string     `json:"registry,omitempty"`
	HTTPPort    int        `json:"http_port,omitempty"`
	HTTPSPort   int        `json:"https_port,omitempty"`
	BindAddress string     `json:"bind_address,omitempty"`
	Project     string     `json:"project,omitempty"`
	Proxy       ProxyInput `json:"proxy"`
	// Warehouses replaces appliance.yaml's list when set.
	Warehouses []string  `json:"warehouses,omitempty"`
	TLS        TLSInput  `json:"tls"`                   // the router's certificate (custom mode)
	TLSOffload bool      `json:"tls_offload,omitempty"` // a load balancer ends TLS (offload mode)
	ACME       ACMEInput `json:"acme"`                  // certificates from an ACME CA (acme mode)
	// LicenseFile is the licence (default: license.json next to
	// CustomerEnv, or the installed one).
	LicenseFile   string `json:"license_file,omitempty"`
	LicenseServer string `json:"license_server,omitempty"` // where the licence is checked online
	// AllowedSources replaces appliance.yaml's network.allowed_sources
	// when not nil (an empty list allows everyone).
	AllowedSources []string `json:"allowed_sources"`
	// IgnorePreflight lists preflight checks whose failure only warns.
	IgnorePreflight []string `json:"ignore_preflight,omitempty"`
	// InstallDocker installs the Docker engine from the distribution's
	// packages when it is missing and every other preflight check passes.
	InstallDocker bool `json:"install_docker,omitempty"`
	// Bundle is an air-gap bundle's path: the release and its images
	// come from it, and no registry is asked.
	Bundle string `json:"bundle,omitempty"`
	// Layout, Role and Nodes place the node in a tier layout; Join is
	// the join token file the layout's data node wrote, which the other
	// nodes install with (it gives the layout and nodes).
	Layout string            `json:"layout,omitempty"`
	Role   string            `json:"role,omitempty"`
	Nodes  map[string]string `json:"nodes,omitempty"`
	Join   string            `json:"join,omitempty"`
	// ConsolePasswordFile holds the admin console's password on its first
	// line: its bcrypt hash goes into appliance.yaml, and the agent serves
	// the console (as `console set-password` does later).
	ConsolePasswordFile string `json:"console_password_file,omitempty"`
}

// ProxyInput is a proxy change given on the command line; the zero value
// changes nothing.
type ProxyInput struct {
	URL                string `json:"url,omitempty"`          // proxy URL; required to set a proxy
	NoProxy            string `json:"no_proxy,omitempty"`     // comma-separated extra NO_PROXY entries
	CACertFile         string `json:"ca_cert_file,omitempty"` // path of the proxy's CA certificate (PEM)
	RejectUnauthorized *bool  `json:"reject_unauthorized,omitempty"`
}

func (in ProxyInput) empty() bool {
	return in.URL == "" && in.NoProxy == "" && in.CACertFile == "" && in.RejectUnauthorized == nil
}

// apply validates the input and sets it on cfg; it returns the CA file's
// contents to install in certs/, if one was given.
func (in ProxyInput) apply(cfg *config.Config) ([]byte, error) {
	if in.empty() {
		return nil, nil
	}
	if in.URL == "" {
		return nil, inputErrorf(InputProxyURL, "the proxy URL is required with the other proxy settings")
	}
	u, err := proxy.ParseURL(in.URL)
	if err != nil {
		return nil, err
	}
	noProxy, err := proxy.ParseNoProxy(in.NoProxy)
	if err != nil {
		return nil, err
	}
	next := proxy.Settings{URL: u, NoProxy: noProxy, RejectUnauthorized: in.RejectUnauthorized}
	var ca []byte
	if in.CACertFile != "" {
		if ca, err = boundedread.ReadFile(in.CACertFile, boundedread.PEM); err != nil {
			return nil, &InputError{Input: InputProxyCACert, Err: fmt.Errorf("reading the proxy CA: %w", err)}
		}
		if err := proxy.CheckCA(ca, in.CACertFile); err != nil {
			return nil, err
		}
		next.CACert = proxy.CAFileName
	} else if cfg.Proxy.CACert != "" && cfg.Proxy.URL == u {
		next.CACert = cfg.Proxy.CACert // same proxy, CA kept
	}
	cfg.Proxy = next
	return ca, nil
}

// Result is what install and config apply did.
type Result struct {
	Version  string             `json:"version"`
	URL      string             `json:"url"`
	Applied  *stack.ApplyResult `json:"applied,omitempty"`
	Warnings []string           `json:"warnings,omitempty"`
	Status   *Status            `json:"status,omitempty"`
	// Preflight is the report of the checks install ran first.
	Preflight *preflight.Report `json:"preflight,omitempty"`
	// CredentialsTo is the registry host key.json goes to as the pull
	// password, and the only one: CARTO's, or the one named with
	// --registry.
	CredentialsTo string `json:"credentials_to,omitempty"`
	// Upgrade is what an upgrade did.
	Upgrade *UpgradeSummary `json:"upgrade,omitempty"`
	// Rollback is what a rollback did.
	Rollback *RollbackSummary `json:"rollback,omitempty"`
	// SelfUpdate says an upgrade replaced carto-appliance first and must
	// go on in the new binary (the agent restarts on it by itself).
	SelfUpdate *SelfUpdateSummary `json:"self_update,omitempty"`
}

// ErrNotInstalled is returned by workflows that need an installed appliance.
var ErrNotInstalled = errors.New("carto-appliance is not installed here")

// Install imports the customer package, writes appliance.yaml, renders .env
// and the compose file, and brings the stack up healthy. Nothing in the
// config dir or the engine changes until the settings are valid and every
// image is present, so a bad customer.env, key.json or flag leaves the node
// as it was. Re-running it converges.
func Install(ctx context.Context, opts InstallOptions) (*Result, error) {
	paths := opts.Paths.WithDefaults()
	// A re-run plans from where the node really is (RecoverUpgrade).
	rec, err := RecoverUpgrade(ctx, opts.Options)
	if err != nil {
		return nil, err
	}
	res, err := install(ctx, opts, paths)
	return withRecovered(res, rec), err
}

func install(ctx context.Context, opts InstallOptions, paths config.Paths) (*Result, error) {
	b, err := openBundle(ctx, opts.Bundle, opts.Reporter)
	if err != nil {
		return nil, err
	}
	if b != nil {
		if err := checkBundleInstall(paths, b); err != nil {
			return nil, err
		}
	}
	plan := func() (*desired, error) {
		d, err := planInstall(paths, opts, b)
		if err != nil {
			return nil, err
		}
		if err := planLicense(paths, d, opts.LicenseFile, opts.CustomerEnv); err != nil {
			return nil, err
		}
		if b != nil {
			d.warnings = append(d.warnings, bundleLicenseWarnings(d)...)
		}
		return d, nil
	}
	d, err := stamped(paths, plan)
	if err != nil {
		return nil, err
	}
	if opts.InstallDocker {
		if err := ensureDocker(ctx, paths, d, opts.IgnorePreflight); err != nil {
			return &Result{Warnings: d.warnings}, err
		}
	}
	report, err := runPreflight(ctx, paths, d, opts.IgnorePreflight)
	if err != nil {
		return &Result{Preflight: report, Warnings: d.warnings}, err
	}
	res, err := run(ctx, opts.Options, paths, d, plan, "install")
	if res != nil {
		res.Preflight = report
	}
	return res, err
}

// Preflight runs the checks install would run with these options, and
// changes nothing.
func Preflight(ctx context.Context, opts InstallOptions) (*preflight.Report, error) {
	paths := opts.Paths.WithDefaults()
	b, err := openBundle(ctx, opts.Bundle, opts.Reporter)
	if err != nil {
		return nil, err
	}
	d, err := planInstall(paths, opts, b)
	if err != nil {
		return nil, err
	}
	report, err := runPreflight(ctx, paths, d, opts.IgnorePreflight)
	var failed *preflight.FailedError
	if err != nil && !errors.As(err, &failed) {
		return nil, err // the options themselves are wrong
	}
	// A failed check is the report's news, not an error of the command.
	return report, nil
}

// runChecks runs the preflight checks; unit tests put a fake in its place:
// the real checks read this machine and reach the network.
var runChecks = preflight.Run

func runPreflight(ctx context.Context, paths config.Paths, d *desired, ignore []string) (*preflight.Report, error) {
	for _, id := range ignore {
		if !slices.Contains(preflight.IDs, id) {
			return nil, inputErrorf(InputIgnorePreflight, "preflight check %q to ignore: no such check; the checks are %s", id, strings.Join(preflight.IDs, ", "))
		}
	}
	r := d.cfg.Defaults().Router
	httpsPort := r.HTTPSPort
	if d.cfg.TLS.Offload() {
		httpsPort = 0 // nothing listens there
	}
	opts := preflight.Options{
		Requirements: d.release.Manifest.Requirements,
		Domain:       d.env.Get("SELFHOSTED_DOMAIN"),
		BindAddress:  r.BindAddress, HTTPPort: r.HTTPPort, HTTPSPort: httpsPort,
		Project:  d.cfg.Defaults().Project,
		DataDirs: []string{paths.ConfigDir, paths.StateDir},
		Ignore:   ignore,
	}
	if d.bundle != nil {
		// Air-gapped: nothing is reached outside; the images need room.
		opts.LoadBytes = d.bundle.Index.UnpackedSize()
	} else {
		if auth, err := d.registryAuth(); err == nil {
			opts.ClockURL = "https://" + auth.Registry + "/v2/"
		}
		opts.Egress = func(ctx context.Context) ([]string, int) { return unreachableDomains(ctx, paths, d) }
	}
	if d.cfg.Distributed() {
		opts.Requirements = roleRequirements(d.cfg, opts.Requirements)
		if !d.cfg.ServesRouter() {
			opts.HTTPPort, opts.HTTPSPort = 0, 0 // nothing listens there
		}
		if deps := d.cfg.Dependencies(); len(deps) > 0 {
			opts.Peers = func(ctx context.Context) ([]string, int) { return peerProblems(ctx, paths, d), len(deps) }
		}
	}
	if d.cfg.TLS.UsesACME() {
		opts.OwnListener = func(ctx context.Context, addr string, port int) bool {
			return servedByFront(ctx, addr, port, opts.Project)
		}
	}
	report := runChecks(ctx, opts)
	if report.Failed {
		return report, &preflight.FailedError{Report: report}
	}
	return report, nil
}

// planInstall plans an install from the installed settings and the
// options, reading the customer package (and installing the bundle's
// release when b is not nil); it changes nothing.
func planInstall(paths config.Paths, opts InstallOptions, b *release.Bundle) (*desired, error) {
	cfg, found, err := config.Load(paths.File(config.ConfigFileName))
	if err != nil {
		return nil, err
	}
	join, err := opts.applyLayout(paths, &cfg, found)
	if err != nil {
		return nil, err
	}
	if opts.Domain != "" {
		cfg.Domain = opts.Domain
	}
	if opts.Registry != "" {
		cfg.Registry = opts.Registry
	}
	if opts.HTTPPort != 0 {
		cfg.Router.HTTPPort = opts.HTTPPort
	}
	if opts.HTTPSPort != 0 {
		cfg.Router.HTTPSPort = opts.HTTPSPort
	}
	if opts.BindAddress != "" {
		cfg.Router.BindAddress = opts.BindAddress
	}
	if opts.Project != "" {
		cfg.Project = opts.Project
	}
	if opts.Warehouses != nil {
		cfg.Warehouses = opts.Warehouses
	}
	if opts.AllowedSources != nil {
		cfg.Network.AllowedSources = opts.AllowedSources
	}
	if opts.LicenseServer != "" {
		if err := config.CheckLicenseServer(opts.LicenseServer, "the licence server"); err != nil {
			return nil, &InputError{Input: InputLicenseServer, Err: err}
		}
		cfg.License.Server = opts.LicenseServer
	}
	if opts.ConsolePasswordFile != "" {
		pw, err := boundedread.Secret(opts.ConsolePasswordFile)
		if err != nil {
			return nil, &InputError{Input: InputConsolePassword, Err: err}
		}
		if cfg.Console.PasswordHash, err = hashConsolePassword(pw); err != nil {
			return nil, err
		}
	}
	chosen := 0
	for _, on := range []bool{!opts.TLS.empty(), opts.TLSOffload, opts.ACME.given()} {
		if on {
			chosen++
		}
	}
	if chosen > 1 {
		return nil, inputErrorf(InputTLSMode, "a certificate, TLS offload and ACME each choose how TLS works: give one of them")
	}
	var acmeRoots []byte
	switch {
	case !opts.TLS.empty():
		cfg.TLS.Mode = config.TLSCustom
	case opts.TLSOffload:
		cfg.TLS.Mode = config.TLSOffload
	case opts.ACME.given():
		in := opts.ACME
		if acmeRoots, err = in.apply(&cfg); err != nil {
			return nil, err
		}
	}
	ca, err := opts.Proxy.apply(&cfg)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	customer := opts.CustomerEnv
	if customer == "" {
		customer = paths.File(config.CustomerEnvFileName)
		if _, err := os.Stat(customer); err != nil {
			return nil, inputErrorf(InputCustomerEnv, "no customer.env: give the customer.env of your CARTO customer package")
		}
	}
	key := opts.KeyFile
	if key == "" {
		key = paths.KeyFile()
		if _, err := os.Stat(key); err != nil {
			return nil, inputErrorf(InputKey, "no key.json: give the key.json of your CARTO customer package")
		}
	}
	var target *release.Release
	if b != nil {
		target = b.Release
	}
	d, err := planRelease(paths, cfg, customer, key, opts.TLS, target)
	if err != nil {
		return nil, err
	}
	d.bundle = b
	d.join = join
	d.addCert(proxy.CAFileName, ca)
	d.addCert(config.ACMECAFileName, acmeRoots)
	return d, nil
}

// Apply re-renders .env and the compose file from what is installed
// (appliance.yaml, customer.env, key.json) and converges the stack:
// only services whose configuration or image changed are recreated.
func Apply(ctx context.Context, opts Options) (*Result, error) {
	return reconfigure(ctx, opts, "apply", nil)
}

// desired is everything a run writes and starts, computed from the inputs
// without touching the config dir or the engine.
type desired struct {
	cfg         config.Config
	release     *release.Release
	customerSrc string
	customer    []byte // customer.env as given
	keySrc      string
	key         []byte         // key.json as given
	pin         *PinnedRelease // the release to pin at commit (none pinned yet)
	env         envfile.Env
	envFile     []byte // the rendered .env
	rendered    *envfile.Rendered
	certs       map[string][]byte // files to install in certs/, by name
	compose     []byte            // the rendered docker-compose.yml
	warnings    []string
	ca          *caPlan   // the CA's files to write in the state dir (self-signed mode)
	acme        *acmePlan // a certificate to obtain from the ACME CA first
	license     []byte    // the licence to install (install only)
	// bundle, for an air-gap install or upgrade, holds the release and
	// its images: loaded, not pulled.
	bundle *release.Bundle
	// stamp is what the plan was made from (stamped).
	stamp string
	// join is the tier layout's join token, written to the state dir at
	// commit; nil on a standard node, and for a change of an installed
	// node (it keeps its own).
	join *peer.Join
}

func plan(paths config.Paths, cfg config.Config, customerPath, keyPath string, tls TLSInput) (*desired, error) {
	return planRelease(paths, cfg, customerPath, keyPath, tls, nil)
}

// planRelease is plan for the release target (pinned at commit) instead
// of the installed one, when target is not nil: an upgrade's plan.
func planRelease(paths config.Paths, cfg config.Config, customerPath, keyPath string, tls TLSInput, target *release.Release) (*desired, error) {
	st, err := loadState(paths.StateDir)
	if err != nil {
		return nil, err
	}
	rel, pin, err := installedRelease(paths, st)
	if err != nil {
		return nil, err
	}
	if target != nil {
		rel, pin = target, newPin(target)
	}
	d, err := planEnv(cfg, rel, customerPath)
	if err != nil {
		return nil, err
	}
	d.pin = pin
	if err := planTLS(paths, d, tls, time.Now()); err != nil {
		return nil, err
	}
	d.keySrc = keyPath
	if d.key, err = boundedread.ReadFile(keyPath, boundedread.KeyJSON); err != nil {
		return nil, &InputError{Input: InputKey, Err: fmt.Errorf("reading key.json: %w; give the key.json of your customer package", err)}
	}
	var keyDoc map[string]any
	if err := json.Unmarshal(d.key, &keyDoc); err != nil {
		return nil, inputErrorf(InputKey, "key.json %s is not a JSON object (%v): give the key.json of your CARTO customer package", keyPath, err)
	}
	ro := stack.RenderOptions{
		Role: stack.RoleAll, Version: d.release.Manifest.Version, Env: d.env.Map(), TLSOffload: d.cfg.TLS.Offload(),
		HTTPByAgent: d.cfg.TLS.UsesACME(),
	}
	if d.cfg.Distributed() {
		ro.Role, ro.ServiceRoles = nodeRole(d.cfg), d.cfg.ServiceRoles()
		if d.cfg.Clients() != "" {
			ro.PeerAddress = d.cfg.Address()
		}
		if d.cfg.Role == config.RoleWeb {
			ro.Forward = &stack.Forward{To: d.cfg.Nodes[config.RoleApp], Roles: []string{config.RoleApp}, Carrier: routerService, Binary: applianceBinary()}
		}
	}
	d.compose, err = stack.RenderCompose(d.release.Compose, ro)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// planEnv renders and checks .env from appliance.yaml, customer.env and
// the release.
func planEnv(cfg config.Config, rel *release.Release, customerPath string) (*desired, error) {
	d := &desired{cfg: cfg, release: rel, customerSrc: customerPath}
	var err error
	if d.customer, err = boundedread.ReadFile(customerPath, boundedread.EnvFile); err != nil {
		return nil, &InputError{Input: InputCustomerEnv, Err: fmt.Errorf("reading customer.env: %w; check the path given for it and that it is readable (run as root)", err)}
	}
	customerEnv, lints, err := envfile.ParseWithWarnings(d.customer)
	if err != nil {
		return nil, fmt.Errorf("reading customer.env %s: %w", customerPath, err)
	}
	for _, w := range lints {
		d.warnings = append(d.warnings, fmt.Sprintf("customer.env %s %s", customerPath, w))
	}
	hostnames, err := stack.Hostnames(rel.Compose)
	if err != nil {
		return nil, err
	}
	settings, notes := envSettings(cfg, hostnames)
	d.warnings = append(d.warnings, notes...)
	rendered, err := envfile.Render(envfile.RenderInput{
		Customer:    customerEnv,
		Version:     rel.Manifest.Version,
		EnvTemplate: rel.EnvTemplate,
		Appliance:   envfile.NewEnv(settings...),
	})
	if err != nil {
		return nil, err
	}
	if err := envfile.Check(rendered.Env, rel.Manifest); err != nil {
		return nil, fmt.Errorf("customer.env %s: %w", customerPath, err)
	}
	if err := checkCustomerInputs(cfg, rendered.Env, rel); err != nil {
		return nil, fmt.Errorf("customer.env %s: %w", customerPath, err)
	}
	for _, w := range rendered.Warnings {
		d.warnings = append(d.warnings, w.String())
	}
	d.env = rendered.Env
	d.envFile = rendered.Marshal()
	d.rendered = rendered
	return d, nil
}

// registryAuth is the key.json credential for the registry of the stack's
// images.
func (d *desired) registryAuth() (*stack.RegistryAuth, error) {
	base := d.env.Get("DOCKER_REGISTRY_BASE_PATH")
	named, err := reference.ParseNormalizedNamed(base + "/probe")
	if err != nil {
		return nil, fmt.Errorf("DOCKER_REGISTRY_BASE_PATH %q is not a registry path: %w", base, err)
	}
	return &stack.RegistryAuth{
		Registry: reference.Domain(named),
		Username: "_json_key",
		Password: string(d.key),
		Source:   d.keySrc,
	}, nil
}

func (d *desired) addCert(name string, data []byte) {
	if data == nil {
		return
	}
	if d.certs == nil {
		d.certs = map[string][]byte{}
	}
	d.certs[name] = data
}

func (d *desired) url() string {
	u := "https://" + d.env.Get("SELFHOSTED_DOMAIN")
	if p := d.cfg.Defaults().Router.HTTPSPort; p != 443 {
		u += ":" + strconv.Itoa(p)
	}
	return u + "/"
}

// redactor masks, in a text (a failing service's log line), every part of
// the settings that env render masks, the key.json's private key, and
// whatever has a secret's shape (envfile.MaskText).
func (d *desired) redactor() func(string) string {
	return envfile.NewRedactor(d.env, envfile.KeySecrets(d.key)...)
}
