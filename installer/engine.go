package installer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/host"
	"github.com/cartodb/carto-appliance/preflight"
	"github.com/cartodb/carto-appliance/proxy"
)

// hostEngine is the Docker engine's settings on this machine; unit tests
// put a fake in its place.
var hostEngine host.Engine = host.Local{}

// configureEngineProxy gives the Docker engine the proxy settings (a
// docker.service drop-in and the proxy CA) and restarts it when the
// operator agrees. It returns notes for the operator.
func configureEngineProxy(ctx context.Context, paths config.Paths, d *desired, confirm func(string) bool) ([]string, error) {
	p := d.cfg.Proxy
	if !hostEngine.Systemd() {
		if p.Enabled() {
			return []string{"the Docker engine is not managed by systemd here: give it HTTP_PROXY/HTTPS_PROXY yourself so that it can pull through the proxy"}, nil
		}
		return nil, nil
	}
	wantDropIn := proxy.DockerDropIn(p, strings.Split(d.env.Get("NO_PROXY"), ","))
	var wantCA []byte
	if p.CACert != "" {
		wantCA = d.certs[proxy.CAFileName]
		if wantCA == nil {
			var err error
			if wantCA, err = os.ReadFile(filepath.Join(paths.ConfigDir, config.CertsDirName, p.CACert)); err != nil {
				return nil, fmt.Errorf("reading the proxy CA for the Docker engine: %w", err)
			}
		}
	}
	changed, err := hostEngine.SetProxy(wantDropIn, wantCA)
	if err != nil {
		return nil, err
	}
	if !changed {
		return nil, nil
	}
	dropIn := host.ProxyDropIn
	reason := fmt.Sprintf("the Docker engine must restart to use the new proxy settings (%s); every container restarts with it", dropIn)
	if confirm == nil || !confirm(reason) {
		return []string{fmt.Sprintf("the Docker engine's proxy settings are in %s and apply at its next restart: systemctl daemon-reload && systemctl restart docker", dropIn)}, nil
	}
	if err := hostEngine.Restart(ctx); err != nil {
		return nil, err
	}
	return []string{"restarted the Docker engine with the new proxy settings"}, nil
}

// reconnect replaces eng with a fresh connection, waiting (bounded) for an
// engine that is restarting to answer again.
func reconnect(ctx context.Context, eng stackEngine) (stackEngine, error) {
	eng.Close()
	deadline := time.Now().Add(90 * time.Second)
	for {
		next, err := connectEngine(ctx)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return next, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ensureDocker installs Docker when no engine answers and every other
// preflight check passes: nothing is installed for an install that would
// fail anyway.
func ensureDocker(ctx context.Context, paths config.Paths, d *desired, ignore []string) error {
	if eng, err := connectEngine(ctx); err == nil {
		eng.Close()
		return nil
	}
	if _, err := runPreflight(ctx, paths, d, append(slices.Clone(ignore), "docker")); err != nil {
		return err
	}
	rel, err := preflight.LocalOSRelease()
	if err != nil {
		return fmt.Errorf("installing Docker: reading /etc/os-release: %w", err)
	}
	return hostEngine.InstallDocker(ctx, rel)
}
