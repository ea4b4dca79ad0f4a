package config

import "net/netip"

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
				return fieldErrorf("network.allowed_sources", "appliance.yaml network.allowed_sources %q: give an IPv4 address or CIDR, e.g. 10.0.0.0/8 or 192.0.2.10", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		// The rules are iptables (IPv4) rules: an IPv6 entry would be
		// silently unenforced, so it is refused rather than accepted.
		if !p.Addr().Is4() {
			return fieldErrorf("network.allowed_sources", "appliance.yaml network.allowed_sources %q: only IPv4 sources can be enforced (the router is published on IPv4 only while an allow-list is set); give IPv4 addresses or CIDRs", s)
		}
	}
	if len(n.AllowedSources) > 0 && bindAddress != "" {
		// An IPv6 or wildcard-v6 bind is served by Docker's userland
		// proxy through INPUT, where DOCKER-USER never sees it.
		if a, err := netip.ParseAddr(bindAddress); err == nil && !a.Is4() {
			return fieldErrorf("router.bind_address", "appliance.yaml router.bind_address %q with network.allowed_sources: the allow-list is enforced for IPv4 only; bind the router to an IPv4 address (default 0.0.0.0) or remove the allow-list", bindAddress)
		}
	}
	return nil
}
