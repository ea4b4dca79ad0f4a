package installer

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cartodb/carto-appliance/firewall"
)

// NetworkConfig is appliance.yaml's network section.
type NetworkConfig struct {
	// AllowedSources are the IPv4 addresses and CIDRs that may reach the
	// router's published ports; empty means everyone. Enforced in the host
	// firewall's DOCKER-USER chain, which Docker leaves to its users:
	// published ports bypass INPUT rules.
	AllowedSources []string `yaml:"allowed_sources,omitempty"`
}

func validateNetwork(n NetworkConfig, bindAddress string) error {
	for _, s := range n.AllowedSources {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return fmt.Errorf("appliance.yaml network.allowed_sources %q: give an IPv4 address or CIDR, e.g. 10.0.0.0/8 or 192.0.2.10", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		// The rules are iptables (IPv4) rules: an IPv6 entry would be
		// silently unenforced, so it is refused rather than accepted.
		if !p.Addr().Is4() {
			return fmt.Errorf("appliance.yaml network.allowed_sources %q: only IPv4 sources can be enforced (the router is published on IPv4 only while an allow-list is set); give IPv4 addresses or CIDRs", s)
		}
	}
	if len(n.AllowedSources) > 0 && bindAddress != "" {
		// An IPv6 or wildcard-v6 bind is served by Docker's userland
		// proxy through INPUT, where DOCKER-USER never sees it.
		if a, err := netip.ParseAddr(bindAddress); err == nil && !a.Is4() {
			return fmt.Errorf("appliance.yaml router.bind_address %q with network.allowed_sources: the allow-list is enforced for IPv4 only; bind the router to an IPv4 address (default 0.0.0.0) or remove the allow-list", bindAddress)
		}
	}
	return nil
}

// firewallHost is where the allow-list is saved and how the engine
// restores it: with the installed binary, else this one (an install run
// from elsewhere, with --no-service).
func firewallHost(paths Paths) firewall.Host {
	binary := defaultBinary()
	if !fileExists(binary) {
		if self, err := os.Executable(); err == nil {
			if self, err = filepath.EvalSymlinks(self); err == nil {
				binary = self
			}
		}
	}
	return firewall.Host{StateDir: paths.StateDir, Binary: binary, Systemd: systemdRunning()}
}

// routerFirewall is the allow-list cfg asks for, or nil when everyone may
// reach the router: its published ports, the HTTPS one unless TLS is
// offloaded.
func routerFirewall(cfg Config) *firewall.Rules {
	if len(cfg.Network.AllowedSources) == 0 {
		return nil
	}
	d := cfg.Defaults()
	ports := []int{d.Router.HTTPPort}
	if !cfg.TLS.offload() {
		ports = append(ports, d.Router.HTTPSPort)
	}
	return firewall.Render(d.Project, ports, cfg.Network.AllowedSources)
}

// applyFirewall makes the host firewall enforce cfg's allow-list, or
// removes the project's rules when everyone may. The rules are saved, and
// the Docker engine restores them before it starts, so that the router is
// never open between a boot or an engine restart and the agent's next
// apply.
func applyFirewall(ctx context.Context, paths Paths, cfg Config) error {
	r := routerFirewall(cfg)
	if r == nil {
		return firewall.Clear(ctx, firewallHost(paths), cfg.Defaults().Project)
	}
	return firewall.Apply(ctx, firewallHost(paths), r)
}

// EnforceFirewall applies the installed allow-list now: from appliance.yaml
// when it loads, else the last rules applied. The agent calls it before
// anything else at its start and before each converge, whatever the
// converge's outcome, so that a stack that fails to converge is still
// behind its allow-list.
func EnforceFirewall(ctx context.Context, paths Paths) error {
	paths = paths.WithDefaults()
	cfg, found, err := LoadConfig(paths.file(ConfigFileName))
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
func RestoreFirewall(ctx context.Context, paths Paths) error {
	return firewall.Restore(ctx, paths.WithDefaults().StateDir)
}
