package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// The router's port handover: while one router container replaces another,
// new connections to the published ports are sent straight to the new
// container by DNAT rules of the project's own nat chain, ahead of
// Docker's. A connection already open keeps its conntrack entry, so it stays
// with the router it started on until that router closes it gracefully; only
// new connections follow the rules. Docker's own port publishing cannot do
// this: two containers cannot publish one host port, and the gap between
// stopping one and starting the other refuses connections.
//
// Only connections that pass through the nat table's PREROUTING (from other
// hosts) and OUTPUT (from this host to one of its own non-loopback
// addresses) are handed over; connections to 127.0.0.1 go through Docker's
// userland proxy, which follows the container publishing the port.

// Redirect sends new TCP connections to HostPort (on HostIP, or on every
// local address when HostIP is unspecified) to To.
type Redirect struct {
	HostIP   netip.Addr
	HostPort int
	To       netip.AddrPort
}

// HandoverChain is the project's nat chain for the handover.
func HandoverChain(project string) string {
	name := "CARTO-HO-" + project
	if len(name) > 28 {
		name = name[:28]
	}
	return name
}

// renderRedirects is the iptables-restore input that replaces the chain's
// rules with rs at once.
func renderRedirects(chain string, rs []Redirect) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*nat\n:%s - [0:0]\n", chain)
	for _, r := range rs {
		if r.HostPort < 1 || r.HostPort > 65535 || !r.To.IsValid() || !r.To.Addr().Is4() {
			return "", fmt.Errorf("handing over port %d to %s: not an IPv4 redirect", r.HostPort, r.To)
		}
		dst := "-m addrtype --dst-type LOCAL"
		if r.HostIP.IsValid() && !r.HostIP.IsUnspecified() {
			dst = "-d " + r.HostIP.String()
		}
		fmt.Fprintf(&b, "-A %s -p tcp %s --dport %d -j DNAT --to-destination %s\n", chain, dst, r.HostPort, r.To)
	}
	b.WriteString("COMMIT\n")
	return b.String(), nil
}

// handoverJumps are the jumps into the chain: PREROUTING, and OUTPUT for
// this host's own connections to its non-loopback addresses.
func handoverJumps(chain string) [][]string {
	return [][]string{
		{"PREROUTING", "-j", chain},
		{"OUTPUT", "!", "-d", "127.0.0.0/8", "-j", chain},
	}
}

// HandOver puts rs in force for project: from the next new connection on,
// the ports go to the redirects' containers.
func HandOver(ctx context.Context, project string, rs []Redirect) error {
	chain := HandoverChain(project)
	rules, err := renderRedirects(chain, rs)
	if err != nil {
		return err
	}
	restore := exec.CommandContext(ctx, "iptables-restore", "-w", "--noflush")
	restore.Stdin = strings.NewReader(rules)
	if out, err := restore.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore of %s: %v: %s", chain, err, strings.TrimSpace(string(out)))
	}
	for _, j := range handoverJumps(chain) {
		args := append([]string{"-t", "nat", "-C"}, j...)
		if _, err := iptables(ctx, args...); err == nil {
			continue
		}
		args = append([]string{"-t", "nat", "-I", j[0], "1"}, j[1:]...)
		if _, err := iptables(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// EndHandover removes the project's handover: new connections go where
// Docker's own rules send them. Nothing to remove is not an error.
func EndHandover(ctx context.Context, project string) error {
	if _, err := exec.LookPath("iptables"); err != nil {
		return nil // nothing can have been set
	}
	chain := HandoverChain(project)
	if _, err := iptables(ctx, "-t", "nat", "-S", chain); err != nil {
		return nil // no chain
	}
	for _, j := range handoverJumps(chain) {
		for {
			if _, err := iptables(ctx, append([]string{"-t", "nat", "-D"}, j...)...); err != nil {
				break
			}
		}
	}
	if _, err := iptables(ctx, "-t", "nat", "-F", chain); err != nil {
		return err
	}
	_, err := iptables(ctx, "-t", "nat", "-X", chain)
	return err
}
