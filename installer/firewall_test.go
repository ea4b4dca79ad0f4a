package installer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAllowedSourcesAreChecked(t *testing.T) {
	ok := Config{Network: NetworkConfig{AllowedSources: []string{"10.0.0.0/8", "192.0.2.10"}}}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid sources refused: %v", err)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.1-10.0.0.9", "",
		// IPv6 sources would go unenforced: the rules are IPv4's.
		"2001:db8::/32", "::1", "::ffff:192.0.2.10"} {
		c := Config{Network: NetworkConfig{AllowedSources: []string{bad}}}
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

func TestFirewallChainFitsIptables(t *testing.T) {
	for _, p := range []string{"carto", "a-very-long-project-name-for-this-node"} {
		if c := firewallChain(p); len(c) > 28 || !strings.HasPrefix(c, "CARTO-") {
			t.Errorf("%s: chain %q", p, c)
		}
	}
}

// Every rule matches only connections Docker DNAT-ed to one of the
// router's published ports: DOCKER-USER also sees the containers' own
// outbound connections to 80 and 443, which no rule may touch.
func TestFirewallRulesMatchOnlyInboundToTheRouter(t *testing.T) {
	if renderFirewall(Config{}) != nil {
		t.Fatal("rules without an allow-list")
	}
	cfg := Config{Network: NetworkConfig{AllowedSources: []string{"10.0.0.0/8", "192.0.2.10"}}}
	cfg.Router.HTTPPort, cfg.Router.HTTPSPort = 8080, 8443
	fw := renderFirewall(cfg)
	if fw.Chain != "CARTO-carto" {
		t.Errorf("chain %q", fw.Chain)
	}
	var rules []string
	for _, l := range strings.Split(fw.Rules, "\n") {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, l)
		}
	}
	if len(rules) != 6 {
		t.Fatalf("%d rules, want 3 per port:\n%s", len(rules), fw.Rules)
	}
	for _, r := range rules {
		if !strings.Contains(r, "--ctstate DNAT") || !strings.Contains(r, "--ctdir ORIGINAL") {
			t.Errorf("rule not limited to inbound DNAT-ed connections: %s", r)
		}
		if !strings.Contains(r, "--ctorigdstport 8080 ") && !strings.Contains(r, "--ctorigdstport 8443 ") {
			t.Errorf("rule not limited to the router's ports: %s", r)
		}
	}
	if !strings.HasSuffix(rules[2], "-j DROP") || !strings.Contains(rules[0], "-s 10.0.0.0/8 -j RETURN") {
		t.Errorf("allowed sources return before the drop:\n%s", fw.Rules)
	}
	// Offload publishes no HTTPS port.
	cfg.TLS.Mode = TLSOffload
	if fw := renderFirewall(cfg); strings.Contains(fw.Rules, "8443") {
		t.Errorf("offload rules name the HTTPS port:\n%s", fw.Rules)
	}
}

func TestFirewallDropInRestoresBeforeTheEngine(t *testing.T) {
	got := string(firewallDropIn("/usr/local/bin/carto-appliance", Paths{StateDir: "/var/lib/carto-appliance"}))
	if !strings.Contains(got, "[Service]\nExecStartPre=/usr/local/bin/carto-appliance firewall restore --state-dir /var/lib/carto-appliance\n") {
		t.Errorf("drop-in:\n%s", got)
	}
	// Fails closed: a "-" prefix would start the engine with the router
	// open when the rules cannot be applied.
	if strings.Contains(got, "ExecStartPre=-") {
		t.Errorf("drop-in ignores a failed restore:\n%s", got)
	}
}

func TestRestoreFirewallWithoutSavedRulesDoesNothing(t *testing.T) {
	if err := RestoreFirewall(t.Context(), Paths{StateDir: t.TempDir(), ConfigDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
}

// The agent applies the allow-list at every converge: an unchanged one is
// not written again (no .prev churn in the state dir).
func TestSaveFirewallWritesOnlyAChange(t *testing.T) {
	paths := Paths{StateDir: t.TempDir()}
	fw := &firewallRules{Chain: "CARTO-carto", Rules: "*filter\nCOMMIT\n"}
	for range 2 {
		if err := saveFirewall(paths, fw); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(paths.StateDir, FirewallFileName+".prev")); !os.IsNotExist(err) {
		t.Errorf("an unchanged allow-list was written again: %v", err)
	}
	fw.Rules = "*filter\n-A CARTO-carto -j DROP\nCOMMIT\n"
	if err := saveFirewall(paths, fw); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(paths.StateDir, FirewallFileName+".prev")); err != nil {
		t.Errorf("a changed allow-list kept no previous version: %v", err)
	}
}
