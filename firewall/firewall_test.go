package firewall

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestChainFitsIptables(t *testing.T) {
	for _, p := range []string{"carto", "a-very-long-project-name-for-this-node"} {
		if c := Chain(p); len(c) > 28 || !strings.HasPrefix(c, "CARTO-") {
			t.Errorf("%s: chain %q", p, c)
		}
	}
}

// Every rule matches only connections Docker DNAT-ed to one of the
// router's published ports: DOCKER-USER also sees the containers' own
// outbound connections to 80 and 443, which no rule may touch.
func TestRulesMatchOnlyInboundToTheRouter(t *testing.T) {
	fw := Render("carto", Allow{Ports: []int{8080, 8443}, Sources: []string{"10.0.0.0/8", "192.0.2.10"}})
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
}

// A data node lets only the app node reach what it publishes on its
// private address, whatever the port.
func TestRulesLetOnlyDependentsReachThePrivateAddress(t *testing.T) {
	fw := Render("carto", Allow{Dest: "10.0.0.3", Sources: []string{"10.0.0.2"}})
	want := "-A CARTO-carto -p tcp -m conntrack --ctstate DNAT --ctdir ORIGINAL --ctorigdst 10.0.0.3 -s 10.0.0.2 -j RETURN\n" +
		"-A CARTO-carto -p tcp -m conntrack --ctstate DNAT --ctdir ORIGINAL --ctorigdst 10.0.0.3 -j DROP\n"
	if !strings.Contains(fw.Rules, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", fw.Rules, want)
	}
}

func TestDropInRestoresBeforeTheEngine(t *testing.T) {
	got := string(DropIn("/usr/local/bin/carto-appliance", "/var/lib/carto-appliance"))
	if !strings.Contains(got, "[Service]\nExecStartPre=/usr/local/bin/carto-appliance firewall restore --state-dir /var/lib/carto-appliance\n") {
		t.Errorf("drop-in:\n%s", got)
	}
	// Fails closed: a "-" prefix would start the engine with the router
	// open when the rules cannot be applied.
	if strings.Contains(got, "ExecStartPre=-") {
		t.Errorf("drop-in ignores a failed restore:\n%s", got)
	}
}

func TestRestoreWithoutSavedRulesDoesNothing(t *testing.T) {
	if err := Restore(t.Context(), t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreRefusesAFileItDidNotSave(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(`{"chain":"INPUT","rules":"*filter\n-F INPUT\nCOMMIT\n"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Restore(t.Context(), dir); err == nil || !strings.Contains(err.Error(), "config apply") {
		t.Errorf("a foreign rules file: %v", err)
	}
}

// The agent applies the allow-list at every converge: an unchanged one is
// not written again (no .prev churn in the state dir).
func TestSaveWritesOnlyAChange(t *testing.T) {
	dir := t.TempDir()
	fw := &Rules{Chain: "CARTO-carto", Rules: "*filter\nCOMMIT\n"}
	for range 2 {
		if err := save(dir, fw); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, FileName+".prev")); !os.IsNotExist(err) {
		t.Errorf("an unchanged allow-list was written again: %v", err)
	}
	fw.Rules = "*filter\n-A CARTO-carto -j DROP\nCOMMIT\n"
	if err := save(dir, fw); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName+".prev")); err != nil {
		t.Errorf("a changed allow-list kept no previous version: %v", err)
	}
}
