package installer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// NetworkConfig is appliance.yaml's network section.
type NetworkConfig struct {
	// AllowedSources are the CIDRs that may reach the router's published
	// ports; empty means everyone. Enforced in the host firewall's
	// DOCKER-USER chain, which Docker leaves to its users: published ports
	// bypass INPUT rules.
	AllowedSources []string `yaml:"allowed_sources,omitempty"`
}

func validateNetwork(n NetworkConfig) error {
	for _, s := range n.AllowedSources {
		if _, err := netip.ParsePrefix(s); err != nil {
			if _, err := netip.ParseAddr(s); err != nil {
				return fmt.Errorf("appliance.yaml network.allowed_sources %q: give an address or a CIDR, e.g. 10.0.0.0/8 or 192.0.2.10", s)
			}
		}
	}
	return nil
}

// firewallChain is the project's own chain, jumped to from DOCKER-USER
// (iptables chain names are at most 28 characters).
func firewallChain(project string) string {
	name := "CARTO-" + project
	if len(name) > 28 {
		name = name[:28]
	}
	return name
}

// applyFirewall makes the host firewall let only the allowed sources reach
// the router's published ports, or removes the project's rules when
// everyone may. Connections are matched on their original destination
// port (conntrack), before Docker's DNAT hides it.
func applyFirewall(ctx context.Context, cfg Config) error {
	d := cfg.Defaults()
	chain := firewallChain(d.Project)
	if len(cfg.Network.AllowedSources) == 0 {
		return removeFirewall(ctx, d.Project)
	}
	ports := []int{d.Router.HTTPPort}
	if !cfg.TLS.offload() {
		ports = append(ports, d.Router.HTTPSPort)
	}
	// One iptables-restore transaction replaces the chain's rules: never
	// a moment with half of them, whether this is killed or not.
	var rules strings.Builder
	fmt.Fprintf(&rules, "*filter\n:%s - [0:0]\n", chain)
	for _, p := range ports {
		match := fmt.Sprintf("-A %s -p tcp -m conntrack --ctorigdstport %d --ctdir ORIGINAL", chain, p)
		for _, src := range cfg.Network.AllowedSources {
			fmt.Fprintf(&rules, "%s -s %s -j RETURN\n", match, src)
		}
		fmt.Fprintf(&rules, "%s -j DROP\n", match)
	}
	rules.WriteString("COMMIT\n")
	restore := exec.CommandContext(ctx, "iptables-restore", "-w", "--noflush")
	restore.Stdin = strings.NewReader(rules.String())
	if out, err := restore.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore of %s: %v: %s", chain, err, strings.TrimSpace(string(out)))
	}
	if _, err := iptables(ctx, "-C", "DOCKER-USER", "-j", chain); err != nil {
		if _, err := iptables(ctx, "-I", "DOCKER-USER", "-j", chain); err != nil {
			return fmt.Errorf("%w (is the Docker engine running? it creates DOCKER-USER)", err)
		}
	}
	return nil
}

// removeFirewall removes the project's chain and its jump, if any.
func removeFirewall(ctx context.Context, project string) error {
	chain := firewallChain(project)
	if _, err := exec.LookPath("iptables"); err != nil {
		return nil // nothing can have been set
	}
	if _, err := iptables(ctx, "-S", chain); err != nil {
		return nil // no chain
	}
	for {
		if _, err := iptables(ctx, "-D", "DOCKER-USER", "-j", chain); err != nil {
			break
		}
	}
	if _, err := iptables(ctx, "-F", chain); err != nil {
		return err
	}
	_, err := iptables(ctx, "-X", chain)
	return err
}

func iptables(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) || errors.Is(err, exec.ErrNotFound) {
			return "", fmt.Errorf("iptables %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)+" "+err.Error()))
		}
		return "", err
	}
	return string(out), nil
}
