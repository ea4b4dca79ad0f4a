package installer

import (
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
)

func TestAllowedSourcesAreChecked(t *testing.T) {
	ok := config.Config{Network: config.NetworkConfig{AllowedSources: []string{"10.0.0.0/8", "192.0.2.10"}}}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid sources refused: %v", err)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.1-10.0.0.9", "",
		// IPv6 sources would go unenforced: the rules are IPv4's.
		"2001:db8::/32", "::1", "::ffff:192.0.2.10"} {
		c := config.Config{Network: config.NetworkConfig{AllowedSources: []string{bad}}}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "network.allowed_sources") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	// Docker's userland proxy serves an IPv6 bind through INPUT, where
	// DOCKER-USER never looks.
	v6 := ok
	v6.Router.BindAddress = "::"
	if err := v6.Validate(); err == nil || !strings.Contains(err.Error(), "router.bind_address") {
		t.Errorf("an IPv6 bind with an allow-list: %v", err)
	}
	v6.Network.AllowedSources = nil
	if err := v6.Validate(); err != nil {
		t.Errorf("an IPv6 bind without an allow-list: %v", err)
	}
}

// The router's published ports are what the rules guard: both, or the
// HTTP one alone when TLS is offloaded; none without an allow-list.
func TestRouterFirewallGuardsThePublishedPorts(t *testing.T) {
	if nodeFirewall(config.Config{}) != nil {
		t.Fatal("rules without an allow-list")
	}
	cfg := config.Config{Network: config.NetworkConfig{AllowedSources: []string{"10.0.0.0/8"}}}
	cfg.Router.HTTPPort, cfg.Router.HTTPSPort = 8080, 8443
	fw := nodeFirewall(cfg)
	if fw.Chain != "CARTO-carto" || !strings.Contains(fw.Rules, "--ctorigdstport 8080 ") || !strings.Contains(fw.Rules, "--ctorigdstport 8443 ") {
		t.Errorf("rules:\n%s", fw.Rules)
	}
	cfg.TLS.Mode = config.TLSOffload
	if fw := nodeFirewall(cfg); strings.Contains(fw.Rules, "8443") {
		t.Errorf("offload rules name the HTTPS port:\n%s", fw.Rules)
	}
}

// A tier1 data node lets only the app node reach its private address; the
// app node, which nothing depends on, keeps just its router's allow-list.
func TestTierNodesFirewall(t *testing.T) {
	nodes := map[string]string{"app": "10.0.0.2", "data": "10.0.0.3"}
	data := config.Config{Layout: config.LayoutTier1, Role: config.RoleData, Nodes: nodes}
	fw := nodeFirewall(data)
	if fw == nil || !strings.Contains(fw.Rules, "--ctorigdst 10.0.0.3 -s 10.0.0.2 -j RETURN\n") || !strings.Contains(fw.Rules, "--ctorigdst 10.0.0.3 -j DROP\n") {
		t.Fatalf("data node rules: %+v", fw)
	}
	app := config.Config{Layout: config.LayoutTier1, Role: config.RoleApp, Nodes: nodes}
	if fw := nodeFirewall(app); fw != nil {
		t.Errorf("app node without an allow-list has rules:\n%s", fw.Rules)
	}
	app.Network.AllowedSources = []string{"192.0.2.0/24"}
	if fw := nodeFirewall(app); fw == nil || strings.Contains(fw.Rules, "--ctorigdst 10.") || !strings.Contains(fw.Rules, "-s 192.0.2.0/24 -j RETURN") {
		t.Errorf("app node rules: %+v", fw)
	}
}
