package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/proxy"
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

// firewallChain is the project's own chain, jumped to from DOCKER-USER
// (iptables chain names are at most 28 characters).
func firewallChain(project string) string {
	name := "CARTO-" + project
	if len(name) > 28 {
		name = name[:28]
	}
	return name
}

// dockerUserChain is where Docker lets its users filter forwarded traffic,
// before its own rules.
const dockerUserChain = "DOCKER-USER"

// FirewallFileName (state dir) is the last allow-list applied, which the
// Docker engine's ExecStartPre restores before the engine starts any
// container, so that no boot or engine restart opens the router.
const FirewallFileName = "firewall.json"

// firewallDropInName is the docker.service drop-in that restores the rules.
const firewallDropInName = "carto-firewall.conf"

// firewallRules is what one apply enforces: the project's chain and the
// iptables-restore input that replaces its rules.
type firewallRules struct {
	Chain string `json:"chain"`
	Rules string `json:"rules"`
}

// renderFirewall returns the rules that let only cfg's allowed sources
// reach the router's published ports, or nil when everyone may.
//
// Only connections Docker DNAT-ed (--ctstate DNAT) to one of the router's
// published ports (--ctorigdstport, the port before DNAT) are matched:
// DOCKER-USER sees every forwarded packet, including the containers' own
// outbound connections to ports 80 and 443 (CARTO's calls to its auth,
// Google APIs, LaunchDarkly), which must never be touched.
func renderFirewall(cfg Config) *firewallRules {
	if len(cfg.Network.AllowedSources) == 0 {
		return nil
	}
	d := cfg.Defaults()
	chain := firewallChain(d.Project)
	ports := []int{d.Router.HTTPPort}
	if !cfg.TLS.offload() {
		ports = append(ports, d.Router.HTTPSPort)
	}
	// Declaring the chain in an iptables-restore --noflush transaction
	// replaces its rules at once: never a moment with half of them.
	var rules strings.Builder
	fmt.Fprintf(&rules, "*filter\n:%s - [0:0]\n", chain)
	for _, p := range ports {
		match := fmt.Sprintf("-A %s -p tcp -m conntrack --ctstate DNAT --ctdir ORIGINAL --ctorigdstport %d", chain, p)
		for _, src := range cfg.Network.AllowedSources {
			fmt.Fprintf(&rules, "%s -s %s -j RETURN\n", match, src)
		}
		fmt.Fprintf(&rules, "%s -j DROP\n", match)
	}
	rules.WriteString("COMMIT\n")
	return &firewallRules{Chain: chain, Rules: rules.String()}
}

// applyFirewall makes the host firewall enforce cfg's allow-list, or
// removes the project's rules when everyone may. The rules are saved
// first, and the Docker engine restores them before it starts (a
// docker.service drop-in), so that the router is never open between a
// boot or an engine restart and the agent's next apply.
func applyFirewall(ctx context.Context, paths Paths, cfg Config) error {
	fw := renderFirewall(cfg)
	if fw == nil {
		return clearFirewall(ctx, paths, cfg.Defaults().Project)
	}
	if err := saveFirewall(paths, fw); err != nil {
		return err
	}
	if err := installFirewallDropIn(ctx, paths); err != nil {
		return err
	}
	return enforceFirewall(ctx, fw)
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
	if rerr := RestoreFirewall(ctx, paths); rerr != nil {
		return rerr
	}
	return err
}

// RestoreFirewall applies the rules last saved in the state dir, if any:
// what the Docker engine's drop-in runs before the engine starts.
func RestoreFirewall(ctx context.Context, paths Paths) error {
	paths = paths.WithDefaults()
	b, err := os.ReadFile(filepath.Join(paths.StateDir, FirewallFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the saved allow-list: %w", err)
	}
	var fw firewallRules
	if err := json.Unmarshal(b, &fw); err != nil || !strings.HasPrefix(fw.Chain, "CARTO-") || fw.Rules == "" {
		return fmt.Errorf("%s is not an allow-list the appliance saved; run carto-appliance config apply to write it again", filepath.Join(paths.StateDir, FirewallFileName))
	}
	return enforceFirewall(ctx, &fw)
}

func saveFirewall(paths Paths, fw *firewallRules) error {
	b, err := json.MarshalIndent(fw, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(paths.StateDir, FirewallFileName)
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, b) {
		return nil // the agent applies it at every converge
	}
	if err := os.MkdirAll(paths.StateDir, 0o700); err != nil {
		return fmt.Errorf("saving the allow-list: %w", err)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("saving the allow-list: %w", err)
	}
	return nil
}

// enforceFirewall replaces the chain's rules and makes sure forwarded
// traffic goes through them. Before the Docker engine's first start
// DOCKER-USER does not exist yet: it is created, with FORWARD's jump to
// it, and the engine keeps both (it only adds what is missing).
func enforceFirewall(ctx context.Context, fw *firewallRules) error {
	if _, err := iptables(ctx, "-n", "-L", dockerUserChain); err != nil {
		if _, err := iptables(ctx, "-N", dockerUserChain); err != nil {
			return err
		}
	}
	restore := exec.CommandContext(ctx, "iptables-restore", "-w", "--noflush")
	restore.Stdin = strings.NewReader(fw.Rules)
	if out, err := restore.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore of %s: %v: %s", fw.Chain, err, strings.TrimSpace(string(out)))
	}
	if err := ensureJump(ctx, dockerUserChain, fw.Chain); err != nil {
		return err
	}
	return ensureJump(ctx, "FORWARD", dockerUserChain)
}

// ensureJump puts a jump from chain to target first in chain, unless one
// is there.
func ensureJump(ctx context.Context, chain, target string) error {
	if _, err := iptables(ctx, "-C", chain, "-j", target); err == nil {
		return nil
	}
	_, err := iptables(ctx, "-I", chain, "1", "-j", target)
	return err
}

// clearFirewall removes the project's rules, the saved copy and the
// engine's drop-in.
func clearFirewall(ctx context.Context, paths Paths, project string) error {
	if err := removeFirewall(ctx, project); err != nil {
		return err
	}
	if err := syncFile(filepath.Join(paths.StateDir, FirewallFileName), nil, 0); err != nil {
		return fmt.Errorf("removing the saved allow-list: %w", err)
	}
	if err := os.Remove(filepath.Join(paths.StateDir, FirewallFileName+".prev")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the saved allow-list: %w", err)
	}
	return removeFirewallDropIn(ctx)
}

// firewallDropIn is the docker.service drop-in that restores the saved
// allow-list before every start of the engine. It fails closed: if the
// rules cannot be applied the engine does not start, and its status says
// why, rather than starting the router open to everyone.
func firewallDropIn(binary string, paths Paths) []byte {
	if abs, err := filepath.Abs(paths.StateDir); err == nil {
		paths.StateDir = abs
	}
	return []byte("# Written by carto-appliance (network.allowed_sources); do not edit.\n" +
		"# The router's allow-list is in force before the engine starts any container.\n" +
		"[Service]\n" +
		"ExecStartPre=" + binary + " firewall restore --state-dir " + paths.StateDir + "\n")
}

// firewallBinary is the program the drop-in runs: the installed binary,
// else this one (an install run from elsewhere, with --no-service).
func firewallBinary() string {
	if b := defaultBinary(); fileExists(b) {
		return b
	}
	if self, err := os.Executable(); err == nil {
		if self, err = filepath.EvalSymlinks(self); err == nil {
			return self
		}
	}
	return defaultBinary()
}

func installFirewallDropIn(ctx context.Context, paths Paths) error {
	if !systemdRunning() {
		return nil
	}
	path := filepath.Join(proxy.DockerDropInDir, firewallDropInName)
	want := firewallDropIn(firewallBinary(), paths)
	if have, err := os.ReadFile(path); err == nil && string(have) == string(want) {
		return nil
	}
	if err := syncFile(path, want, 0o644); err != nil {
		return fmt.Errorf("writing the Docker engine's allow-list drop-in: %w", err)
	}
	return daemonReload(ctx)
}

func removeFirewallDropIn(ctx context.Context) error {
	path := filepath.Join(proxy.DockerDropInDir, firewallDropInName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	for _, p := range []string{path, path + ".prev"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the Docker engine's allow-list drop-in: %w", err)
		}
	}
	if !systemdRunning() {
		return nil
	}
	return daemonReload(ctx)
}

func daemonReload(ctx context.Context) error {
	if out, err := exec.CommandContext(ctx, "systemctl", "daemon-reload").CombinedOutput(); err != nil {
		return fmt.Errorf("systemctl daemon-reload: %v: %s", err, strings.TrimSpace(string(out)))
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
		if _, err := iptables(ctx, "-D", dockerUserChain, "-j", chain); err != nil {
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
