// Package firewall owns the router's allow-list in the host firewall: the
// project's iptables chain, jumped to from DOCKER-USER (published ports
// bypass INPUT), the copy of the rules saved in the state dir, and the
// docker.service drop-in that restores that copy before the engine starts
// any container. It knows nothing of appliance.yaml: the installer says
// which project, ports and sources.
package firewall

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/proxy"
)

// FileName (state dir) is the allow-list last applied, which the Docker
// engine's drop-in restores before the engine starts, so that no boot or
// engine restart opens the router.
const FileName = "firewall.json"

// DropInName is the docker.service drop-in that restores the rules.
const DropInName = "carto-firewall.conf"

// dockerUserChain is where Docker lets its users filter forwarded traffic,
// before its own rules.
const dockerUserChain = "DOCKER-USER"

// Rules is what one apply enforces: the project's chain and the
// iptables-restore input that replaces its rules.
type Rules struct {
	Chain string `json:"chain"`
	Rules string `json:"rules"`
}

// Chain is the project's own chain (iptables chain names are at most 28
// characters).
func Chain(project string) string {
	name := "CARTO-" + project
	if len(name) > 28 {
		name = name[:28]
	}
	return name
}

// Allow is one allow-list: connections Docker DNAT-ed to one of Ports, or,
// with no Ports, to any port published on the address Dest, are let
// through only from Sources.
type Allow struct {
	Ports   []int
	Dest    string
	Sources []string
}

// Render returns the rules that enforce every allow-list: the router's
// published ports for allowed_sources, and on a node of a tier layout,
// what it publishes on its private address for the nodes that depend on
// it.
//
// Only connections Docker DNAT-ed (--ctstate DNAT) to one of those ports
// (--ctorigdstport, the port before DNAT) or that address (--ctorigdst)
// are matched: DOCKER-USER sees every forwarded packet, including the
// containers' own outbound connections to ports 80 and 443 (CARTO's calls
// to its auth, Google APIs, LaunchDarkly), which must never be touched.
func Render(project string, allows ...Allow) *Rules {
	chain := Chain(project)
	// Declaring the chain in an iptables-restore --noflush transaction
	// replaces its rules at once: never a moment with half of them.
	var rules strings.Builder
	fmt.Fprintf(&rules, "*filter\n:%s - [0:0]\n", chain)
	for _, a := range allows {
		var matches []string
		base := fmt.Sprintf("-A %s -p tcp -m conntrack --ctstate DNAT --ctdir ORIGINAL", chain)
		if a.Dest != "" {
			base += " --ctorigdst " + a.Dest
		}
		for _, p := range a.Ports {
			matches = append(matches, fmt.Sprintf("%s --ctorigdstport %d", base, p))
		}
		if len(a.Ports) == 0 && a.Dest != "" {
			matches = append(matches, base)
		}
		for _, match := range matches {
			for _, src := range a.Sources {
				fmt.Fprintf(&rules, "%s -s %s -j RETURN\n", match, src)
			}
			fmt.Fprintf(&rules, "%s -j DROP\n", match)
		}
	}
	rules.WriteString("COMMIT\n")
	return &Rules{Chain: chain, Rules: rules.String()}
}

// Host says where the rules are saved and how the engine restores them.
type Host struct {
	// StateDir holds the saved copy (FileName).
	StateDir string
	// Binary is the carto-appliance the drop-in runs.
	Binary string
	// Systemd says whether systemd manages the Docker engine here: only
	// then is there a drop-in to write.
	Systemd bool
}

// Apply saves r, writes the engine's drop-in and puts r in force. It saves
// first, so that a crash in between leaves the engine restoring r.
func Apply(ctx context.Context, h Host, r *Rules) error {
	if err := save(h.StateDir, r); err != nil {
		return err
	}
	if h.Systemd {
		if err := installDropIn(ctx, h); err != nil {
			return err
		}
	}
	return enforce(ctx, r)
}

// Restore applies the rules last saved in stateDir, if any: what the
// Docker engine's drop-in runs before the engine starts.
func Restore(ctx context.Context, stateDir string) error {
	path := filepath.Join(stateDir, FileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the saved allow-list: %w", err)
	}
	var r Rules
	if err := json.Unmarshal(b, &r); err != nil || !strings.HasPrefix(r.Chain, "CARTO-") || r.Rules == "" {
		return fmt.Errorf("%s is not an allow-list the appliance saved; run carto-appliance config apply to write it again", path)
	}
	return enforce(ctx, &r)
}

// Clear removes the project's rules, the saved copy and the engine's
// drop-in.
func Clear(ctx context.Context, h Host, project string) error {
	if err := removeChain(ctx, Chain(project)); err != nil {
		return err
	}
	path := filepath.Join(h.StateDir, FileName)
	for _, p := range []string{path, path + atomicfile.PrevSuffix} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the saved allow-list: %w", err)
		}
	}
	return removeDropIn(ctx, h.Systemd)
}

func save(stateDir string, r *Rules) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(stateDir, FileName)
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, b) {
		return nil // the agent applies it at every converge
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("saving the allow-list: %w", err)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("saving the allow-list: %w", err)
	}
	return nil
}

// enforce replaces the chain's rules and makes sure forwarded traffic goes
// through them. Before the Docker engine's first start DOCKER-USER does
// not exist yet: it is created, with FORWARD's jump to it, and the engine
// keeps both (it only adds what is missing).
func enforce(ctx context.Context, r *Rules) error {
	if _, err := iptables(ctx, "-n", "-L", dockerUserChain); err != nil {
		if _, err := iptables(ctx, "-N", dockerUserChain); err != nil {
			return err
		}
	}
	restore := exec.CommandContext(ctx, "iptables-restore", "-w", "--noflush")
	restore.Stdin = strings.NewReader(r.Rules)
	if out, err := restore.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore of %s: %v: %s", r.Chain, err, strings.TrimSpace(string(out)))
	}
	if err := ensureJump(ctx, dockerUserChain, r.Chain); err != nil {
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

// removeChain removes chain and its jumps, if any.
func removeChain(ctx context.Context, chain string) error {
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

// DropIn is the docker.service drop-in that restores the saved allow-list
// before every start of the engine. It fails closed: if the rules cannot
// be applied the engine does not start, and its status says why, rather
// than starting the router open to everyone.
func DropIn(binary, stateDir string) []byte {
	if abs, err := filepath.Abs(stateDir); err == nil {
		stateDir = abs
	}
	return []byte("# Written by carto-appliance (network.allowed_sources); do not edit.\n" +
		"# The router's allow-list is in force before the engine starts any container.\n" +
		"[Service]\n" +
		"ExecStartPre=" + binary + " firewall restore --state-dir " + stateDir + "\n")
}

func installDropIn(ctx context.Context, h Host) error {
	path := filepath.Join(proxy.DockerDropInDir, DropInName)
	want := DropIn(h.Binary, h.StateDir)
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
		return nil
	}
	if err := os.MkdirAll(proxy.DockerDropInDir, 0o755); err != nil {
		return fmt.Errorf("writing the Docker engine's allow-list drop-in: %w", err)
	}
	if err := atomicfile.Write(path, want, 0o644); err != nil {
		return fmt.Errorf("writing the Docker engine's allow-list drop-in: %w", err)
	}
	return daemonReload(ctx)
}

func removeDropIn(ctx context.Context, systemd bool) error {
	path := filepath.Join(proxy.DockerDropInDir, DropInName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	for _, p := range []string{path, path + atomicfile.PrevSuffix} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the Docker engine's allow-list drop-in: %w", err)
		}
	}
	if !systemd {
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
