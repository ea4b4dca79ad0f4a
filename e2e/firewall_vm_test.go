//go:build integration

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/e2e/vm"
)

// network.allowed_sources (seed 000's allow-list, on one VM): with one test
// host's address allowed, that host reaches the router and another test
// host does not; the rule survives `systemctl restart docker` and a reboot,
// and uninstall removes it.
func TestAllowedSourcesInFreshVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	netw, regHost, regCA := vmNetwork(t, "fwvm")
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})
	allowed := vm.New(t, docker, vm.Options{Name: "allowed", Network: netw.Name})
	other := vm.New(t, docker, vm.Options{Name: "other", Network: netw.Name})
	agentJournalOnFailure(t, node)
	// reach says whether a host gets an answer from the router's HTTPS
	// and HTTP ports.
	reach := func(from *vm.VM) (https, http bool) {
		for i, u := range []string{"https://" + node.IP() + "/workspace-api/whoami", "http://" + node.IP() + "/health"} {
			_, _, code, _ := from.Exec(ctx, "curl", "-ks", "-o", "/dev/null", "--max-time", "3", u)
			if i == 0 {
				https = code == 0
			} else {
				http = code == 0
			}
		}
		return
	}
	enforced := func(t *testing.T, within time.Duration) {
		t.Helper()
		eventually(t, within, func() error {
			if s, h := reach(allowed); !s || !h {
				return fmt.Errorf("the allowed host does not reach the router (https %v, http %v)", s, h)
			}
			if s, h := reach(other); s || h {
				return fmt.Errorf("another host reaches the router (https %v, http %v)", s, h)
			}
			return nil
		})
	}

	step(t, "install with one allowed source: that host reaches the router, another does not", func(t *testing.T) {
		trustRegistry(t, node, regHost, regCA)
		stagePackage(t, node)
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "install", "--yes", "--allowed-sources", allowed.IP(),
			"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--registry", regHost)
		if err != nil || code != 0 {
			t.Fatalf("install: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		if !strings.Contains(out, "Reachable from: "+allowed.IP()+" only") {
			t.Errorf("install did not say who may reach the router:\n%s", out)
		}
		enforced(t, 30*time.Second)
	})

	step(t, "the rule survives systemctl restart docker", func(t *testing.T) {
		node.MustExec(t, "systemctl", "restart", "docker")
		enforced(t, 120*time.Second)
	})

	step(t, "the rule survives a reboot", func(t *testing.T) {
		if err := node.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		enforced(t, 120*time.Second)
		// Docker writes a VM's /etc/hosts anew at each start, where a real
		// machine keeps it: the operator's entry for the domain goes back.
		node.MustExec(t, "sh", "-c", "echo '127.0.0.1 carto.vm.test' >> /etc/hosts")
	})

	step(t, "allowing everyone again removes the rule; uninstall leaves none", func(t *testing.T) {
		node.MustExec(t, "carto-appliance", "install", "--yes", "--allowed-sources", "")
		eventually(t, 30*time.Second, func() error {
			if s, _ := reach(other); !s {
				return fmt.Errorf("the other host still cannot reach the router")
			}
			return nil
		})
		node.MustExec(t, "carto-appliance", "install", "--yes", "--allowed-sources", allowed.IP())
		node.MustExec(t, "carto-appliance", "uninstall")
		if out := node.MustExec(t, "iptables", "-S"); strings.Contains(out, "CARTO-") {
			t.Errorf("rules left after uninstall:\n%s", out)
		}
	})
}
