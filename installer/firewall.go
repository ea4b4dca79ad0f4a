package installer

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/firewall"
	"github.com/cartodb/carto-appliance/host"
	"github.com/cartodb/carto-appliance/stack"
)

// firewallApply and firewallClear change the host firewall (iptables, and
// the engine's drop-in); unit tests put fakes in their place so that a
// workflow's test never changes the machine's firewall.
var (
	firewallApply = firewall.Apply
	firewallClear = firewall.Clear
)

// firewallHost is where the allow-list is saved and how the engine
// restores it, with applianceBinary.
func firewallHost(paths config.Paths) firewall.Host {
	return firewall.Host{StateDir: paths.StateDir, Binary: applianceBinary(), Systemd: host.SystemdRunning()}
}

// applianceBinary is the installed carto-appliance, else this one (an
// install run from elsewhere, with --no-service).
func applianceBinary() string {
	binary := host.DefaultBinaryPath()
	if !fileExists(binary) {
		if self, err := os.Executable(); err == nil {
			if self, err = filepath.EvalSymlinks(self); err == nil {
				binary = self
			}
		}
	}
	return binary
}

// nodeFirewall is what cfg lets through, or nil when everyone may reach
// what this node publishes: the router's published ports (the HTTPS one
// unless TLS is offloaded) for network.allowed_sources; on a node of a
// tier layout that others depend on, its private address for those nodes
// only.
func nodeFirewall(cfg config.Config) *firewall.Rules {
	d := cfg.Defaults()
	var allows []firewall.Allow
	if len(cfg.Network.AllowedSources) > 0 && cfg.ServesRouter() {
		ports := []int{d.Router.HTTPPort}
		if !cfg.TLS.Offload() {
			ports = append(ports, d.Router.HTTPSPort)
		}
		allows = append(allows, firewall.Allow{Ports: ports, Sources: cfg.Network.AllowedSources})
	}
	if client := cfg.Clients(); client != "" {
		allows = append(allows, firewall.Allow{Dest: cfg.Address(), Sources: []string{cfg.Nodes[client]}})
	}
	if len(allows) == 0 {
		return nil
	}
	return firewall.Render(d.Project, allows...)
}

// applyFirewall makes the host firewall enforce cfg's allow-list, or
// removes the project's rules when everyone may. The rules are saved, and
// the Docker engine restores them before it starts, so that the router is
// never open between a boot or an engine restart and the agent's next
// apply.
func applyFirewall(ctx context.Context, paths config.Paths, cfg config.Config) error {
	r := nodeFirewall(cfg)
	if r == nil {
		return firewallClear(ctx, firewallHost(paths), cfg.Defaults().Project)
	}
	return firewallApply(ctx, firewallHost(paths), r)
}

// EnforceFirewall applies the installed allow-list now: from appliance.yaml
// when it loads, else the last rules applied. The agent calls it before
// anything else at its start and before each converge, whatever the
// converge's outcome, so that a stack that fails to converge is still
// behind its allow-list.
func EnforceFirewall(ctx context.Context, paths config.Paths) error {
	paths = paths.WithDefaults()
	cfg, found, err := config.Load(paths.File(config.ConfigFileName))
	if err == nil && found {
		return applyFirewall(ctx, paths, cfg)
	}
	if rerr := firewall.Restore(ctx, paths.StateDir); rerr != nil {
		return rerr
	}
	return err
}

// RestoreFirewall applies the rules last saved in the state dir, if any:
// what the Docker engine's drop-in runs before the engine starts.
func RestoreFirewall(ctx context.Context, paths config.Paths) error {
	return firewall.Restore(ctx, paths.WithDefaults().StateDir)
}

// rollFirewall is the firewall package's side of a roll (stack.Firewall):
// the router's port handover and the fences of retiring containers.
type rollFirewall struct{}

func (rollFirewall) HandOver(ctx context.Context, project string, rs []stack.PortRedirect) error {
	out := make([]firewall.Redirect, len(rs))
	for i, r := range rs {
		out[i] = firewall.Redirect{HostIP: r.HostIP, HostPort: r.HostPort, To: r.To}
	}
	return firewall.HandOver(ctx, project, out)
}

func (rollFirewall) EndHandover(ctx context.Context, project string) error {
	return firewall.EndHandover(ctx, project)
}

func (rollFirewall) Fence(ctx context.Context, pid int, addr netip.Addr) error {
	return firewall.Fence(ctx, pid, addr)
}

func (rollFirewall) Unfence(ctx context.Context, pid int, addr netip.Addr) error {
	return firewall.Unfence(ctx, pid, addr)
}

func (rollFirewall) ClearFences(ctx context.Context, pid int) error {
	return firewall.ClearFences(ctx, pid)
}

func (rollFirewall) Neighbours(ctx context.Context, pid int) ([]netip.Addr, error) {
	return firewall.Neighbours(ctx, pid)
}
