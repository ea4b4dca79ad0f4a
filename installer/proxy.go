package installer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/proxy"
	"github.com/cartodb/carto-appliance/release"
)

// SetProxy sets the corporate proxy (SPEC §5.2) and converges: .env is
// rendered again and only the services whose environment changed are
// recreated; the Docker engine gets the proxy too (after confirmation, as
// it restarts every container). Invalid input changes nothing.
func SetProxy(ctx context.Context, opts Options, in ProxyInput) (*Result, error) {
	if in.URL == "" {
		return nil, inputErrorf(InputProxyURL, "proxy set needs the proxy URL")
	}
	return reconfigure(ctx, opts, "proxy set", func(cfg *config.Config) ([]byte, error) {
		return in.apply(cfg)
	})
}

// ClearProxy removes the proxy: the stack and the engine go direct again.
func ClearProxy(ctx context.Context, opts Options) (*Result, error) {
	return reconfigure(ctx, opts, "proxy clear", func(cfg *config.Config) ([]byte, error) {
		cfg.Proxy = proxy.Settings{}
		return nil, nil
	})
}

// reconfigure applies a change to the installed appliance.yaml and
// converges to it; mutate returns a proxy CA to install, if any.
func reconfigure(ctx context.Context, opts Options, action string, mutate func(*config.Config) ([]byte, error)) (*Result, error) {
	return reconfigureTLS(ctx, opts, action, mutate, TLSInput{})
}

// reconfigureTLS is reconfigure with a change of the router's certificate.
func reconfigureTLS(ctx context.Context, opts Options, action string, mutate func(*config.Config) ([]byte, error), tls TLSInput) (*Result, error) {
	paths := opts.Paths.WithDefaults()
	// Planned from where the node really is: an upgrade a stopped
	// process left is finished or rolled back first (the agent's
	// converge at its start comes here too).
	rec, err := RecoverUpgrade(ctx, opts)
	if err != nil {
		return nil, err
	}
	plan := func() (*desired, error) { return planInstalled(paths, mutate, tls) }
	d, err := stamped(paths, plan)
	if err != nil {
		return withRecovered(nil, rec), err
	}
	res, err := run(ctx, opts, paths, d, plan, action)
	return withRecovered(res, rec), err
}

// loadInstalledConfig is the installed appliance.yaml; ErrNotInstalled when
// there is none.
func loadInstalledConfig(paths config.Paths) (config.Config, error) {
	cfg, found, err := config.Load(paths.File(config.ConfigFileName))
	if err == nil && !found {
		err = fmt.Errorf("%w: no %s; run `carto-appliance install` first", ErrNotInstalled, paths.File(config.ConfigFileName))
	}
	return cfg, err
}

// planInstalled plans a run from the installed settings, changed by mutate
// when it is not nil.
func planInstalled(paths config.Paths, mutate func(*config.Config) ([]byte, error), tls TLSInput) (*desired, error) {
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return nil, err
	}
	var ca []byte
	if mutate != nil {
		if ca, err = mutate(&cfg); err != nil {
			return nil, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d, err := plan(paths, cfg, paths.File(config.CustomerEnvFileName), paths.KeyFile(), tls)
	if err != nil {
		return nil, err
	}
	d.addCert(proxy.CAFileName, ca)
	return d, nil
}

// ProxyTestOptions configures TestProxy.
type ProxyTestOptions struct {
	Paths config.Paths
	// Domains, when set, replaces the release's egress list.
	Domains []string
	// Timeout bounds each domain's check; 0 means 10 s.
	Timeout time.Duration
}

// TestProxy checks that every domain the stack needs is reachable with the
// installed proxy settings, reporting each with the reason of a failure.
func TestProxy(ctx context.Context, opts ProxyTestOptions) ([]proxy.Result, error) {
	paths := opts.Paths.WithDefaults()
	cfg, _, err := config.Load(paths.File(config.ConfigFileName))
	if err != nil {
		return nil, err
	}
	var ca []byte
	if cfg.Proxy.CACert != "" {
		if ca, err = os.ReadFile(filepath.Join(paths.ConfigDir, config.CertsDirName, cfg.Proxy.CACert)); err != nil {
			return nil, fmt.Errorf("reading the proxy CA: %w", err)
		}
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	client, err := proxy.HTTPClient(cfg.Proxy, ca, timeout)
	if err != nil {
		return nil, err
	}
	// The installed release's domains (the binary's before an install).
	rel, err := currentRelease(paths)
	if err != nil {
		return nil, err
	}
	targets, err := egressTargets(cfg, rel, opts.Domains)
	if err != nil {
		return nil, err
	}
	return proxy.Check(ctx, client, targets, 8), nil
}

// unreachableDomains checks the domains the stack needs with the planned
// proxy settings, for preflight: each required one it cannot reach, with
// the reason, and how many it checked.
func unreachableDomains(ctx context.Context, paths config.Paths, d *desired) ([]string, int) {
	ca := d.certs[proxy.CAFileName]
	if ca == nil && d.cfg.Proxy.CACert != "" {
		ca, _ = os.ReadFile(filepath.Join(paths.ConfigDir, config.CertsDirName, d.cfg.Proxy.CACert))
	}
	client, err := proxy.HTTPClient(d.cfg.Proxy, ca, 5*time.Second)
	if err != nil {
		return []string{"the proxy settings: " + err.Error()}, 0
	}
	targets, err := egressTargets(d.cfg, d.release, nil)
	if err != nil {
		return []string{err.Error()}, 0
	}
	var out []string
	checked := 0
	for _, r := range proxy.Check(ctx, client, targets, 8) {
		if r.Optional || r.Kind == proxy.KindNotCheckable {
			continue
		}
		checked++
		if !r.OK {
			out = append(out, fmt.Sprintf("%s (%s)", r.Domain, r.Kind))
		}
	}
	return out, checked
}

// egressTargets is the release's egress list: the core domains, the
// domains of the configured warehouses, and every other optional domain
// marked optional.
func egressTargets(cfg config.Config, rel *release.Release, domains []string) ([]proxy.Target, error) {
	if len(domains) > 0 {
		var t []proxy.Target
		for _, d := range domains {
			t = append(t, proxy.Target{Domain: d, Feature: "given"})
		}
		return t, nil
	}
	var t []proxy.Target
	for _, d := range rel.Manifest.Egress.Core {
		t = append(t, proxy.Target{Domain: d, Feature: "core"})
	}
	features := make([]string, 0, len(rel.Manifest.Egress.Optional))
	for f := range rel.Manifest.Egress.Optional {
		features = append(features, f)
	}
	sort.Strings(features)
	for _, f := range features {
		needed := false
		for _, w := range cfg.Warehouses {
			needed = needed || w == f
		}
		for _, d := range rel.Manifest.Egress.Optional[f] {
			t = append(t, proxy.Target{Domain: d, Feature: f, Optional: !needed})
		}
	}
	return t, nil
}
