package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// A fence keeps one container (the router) from opening new connections to
// an address about to go away, while a service is rolled: a rule in the
// container's own network namespace resets its TCP connection attempts to
// that one address, so connect() fails at once ("connection refused") and
// nginx passes the request to the service's next address. Connections
// already open are not touched: a long request to the old container ends
// normally while that container drains.
//
// Why this exists: Docker's DNS drops a container's name only when the
// container stops, at the very moment its address goes away; a router that
// cached the name (nginx keeps answers for their TTL) would otherwise send
// requests to a dead address, each hanging until proxy_connect_timeout.
// Docker takes a container out of DNS first only in swarm mode, which a
// single-VM appliance does not run. A route (unreachable) would also fence,
// but it cuts the open connections too.
//
// The rule is put in by the host's iptables run in the container's network
// namespace (nsenter, util-linux): the container need not have iptables.

// fenceRule is the filter table rule that fences addr.
func fenceRule(addr netip.Addr) ([]string, error) {
	if !addr.Is4() {
		return nil, fmt.Errorf("fencing %s: only IPv4 container addresses are fenced", addr)
	}
	return []string{"OUTPUT", "-d", addr.String() + "/32", "-p", "tcp", "--syn",
		"-m", "comment", "--comment", fenceComment, "-j", "REJECT", "--reject-with", "tcp-reset"}, nil
}

// fenceComment marks the fences, so that those a crash left behind can be
// found and lifted.
const fenceComment = "carto-appliance-fence"

// Fence makes new TCP connections from the network namespace of process pid
// to addr fail at once. Fencing twice is one fence.
func Fence(ctx context.Context, pid int, addr netip.Addr) error {
	rule, err := fenceRule(addr)
	if err != nil {
		return err
	}
	if _, err := nsIptables(ctx, pid, append([]string{"-C"}, rule...)...); err == nil {
		return nil
	}
	_, err = nsIptables(ctx, pid, append([]string{"-I"}, rule...)...)
	return err
}

// Unfence lifts the fence; none (or no such process any more) is not an
// error.
func Unfence(ctx context.Context, pid int, addr netip.Addr) error {
	rule, err := fenceRule(addr)
	if err != nil {
		return err
	}
	for {
		if _, err := nsIptables(ctx, pid, append([]string{"-C"}, rule...)...); err != nil {
			return nil
		}
		if _, err := nsIptables(ctx, pid, append([]string{"-D"}, rule...)...); err != nil {
			return err
		}
	}
}

// ClearFences lifts every fence in the network namespace of process pid.
func ClearFences(ctx context.Context, pid int) error {
	for _, bin := range []string{"nsenter", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil // nothing can have been fenced
		}
	}
	out, err := nsIptables(ctx, pid, "-S", "OUTPUT")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, fenceComment) || !strings.HasPrefix(l, "-A ") {
			continue
		}
		// -S prints each rule as the arguments that made it; the
		// comment is one word, so splitting on blanks gives them back.
		args := strings.Fields(l)
		args[0] = "-D"
		if _, err := nsIptables(ctx, pid, args...); err != nil {
			return err
		}
	}
	return nil
}

// Neighbours are the IPv4 addresses the network namespace of process pid
// has link-layer entries for: the hosts it has talked to lately, among
// them an address that went away while it was talking to it (a container
// that died before anyone read its address, whose stale entry now sends
// connection attempts nowhere).
func Neighbours(ctx context.Context, pid int) ([]netip.Addr, error) {
	out, err := nsRun(ctx, pid, "ip", "-4", "neigh", "show")
	if err != nil {
		return nil, err
	}
	return parseNeighbours(out), nil
}

// parseNeighbours reads `ip -4 neigh show`: "ADDR dev IF [lladdr MAC] STATE".
func parseNeighbours(out string) []netip.Addr {
	var addrs []netip.Addr
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if a, err := netip.ParseAddr(f[0]); err == nil && a.Is4() && !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// nsIptables runs iptables in the network namespace of process pid.
func nsIptables(ctx context.Context, pid int, args ...string) (string, error) {
	return nsRun(ctx, pid, append([]string{"iptables", "-w"}, args...)...)
}

// nsRun runs a command in the network namespace of process pid.
func nsRun(ctx context.Context, pid int, cmd ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--target", strconv.Itoa(pid), "--net", "--"}, cmd...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s in the network namespace of process %d: %s", strings.Join(cmd, " "), pid, strings.TrimSpace(string(out)+" "+err.Error()))
	}
	return string(out), nil
}
