package installer

import (
	"strings"
	"testing"
)

func TestAllowedSourcesAreChecked(t *testing.T) {
	ok := Config{Network: NetworkConfig{AllowedSources: []string{"10.0.0.0/8", "192.0.2.10", "2001:db8::/32"}}}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid sources refused: %v", err)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.1-10.0.0.9", ""} {
		c := Config{Network: NetworkConfig{AllowedSources: []string{bad}}}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "network.allowed_sources") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestFirewallChainFitsIptables(t *testing.T) {
	for _, p := range []string{"carto", "a-very-long-project-name-for-this-node"} {
		if c := firewallChain(p); len(c) > 28 || !strings.HasPrefix(c, "CARTO-") {
			t.Errorf("%s: chain %q", p, c)
		}
	}
}
