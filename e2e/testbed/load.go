package testbed

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/e2e/loadgen"
)

// LoadAddress is the address a load generator on this machine reaches the
// router by, as a client of another host would: not 127.0.0.1, which
// Docker serves through its userland proxy rather than the nat rules a
// router handover uses. It is an address of the documentation range put on
// the loopback interface (once; later calls find it), so that the run does
// not depend on the machine's own addresses.
var LoadAddress = netip.MustParseAddr("198.51.100.7")

// EnsureLoadAddress puts LoadAddress on this machine.
func EnsureLoadAddress(ctx context.Context) (netip.Addr, error) {
	if local(LoadAddress) {
		return LoadAddress, nil
	}
	out, err := exec.CommandContext(ctx, "ip", "address", "add", LoadAddress.String()+"/32", "dev", "lo").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "File exists") {
		return netip.Addr{}, fmt.Errorf("adding the load address %s to lo: %v: %s", LoadAddress, err, strings.TrimSpace(string(out)))
	}
	return LoadAddress, nil
}

func local(a netip.Addr) bool {
	addrs, _ := net.InterfaceAddrs()
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// RouterPaths reach every service behind the test router (images/router-http).
var RouterPaths = []string{"/", "/acc/x", "/workspace-api/x", "/api/v3/maps/x", "/api/x", "/imports/x", "/lds/x", "/notifier/x"}

// RouterLoad starts rate GET requests a second to the router at baseURL
// (https, its certificate not checked) for host, over paths
// (RouterPaths when nil); it stops by itself after 15 minutes.
func RouterLoad(ctx context.Context, baseURL, host string, paths []string, rate int) *loadgen.Load {
	if paths == nil {
		paths = RouterPaths
	}
	return loadgen.Start(ctx, loadgen.Options{
		BaseURL: baseURL, Host: host, TLS: &tls.Config{InsecureSkipVerify: true},
		Paths: paths, Rate: rate, Timeout: 20 * time.Second, MaxDuration: 15 * time.Minute,
	})
}
