//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/e2e/proxytest"
	"github.com/cartodb/carto-appliance/e2e/vm"
)

// network.allowed_sources (seed 000's allow-list, on one VM): with one test
// host's address allowed, that host reaches the router and another test
// host does not, while every CARTO service still makes its outbound calls
// to ports 443 and 80 (directly and through a proxy); the rule is in force
// from the first second the router answers after a reboot, even with a
// stack that fails to converge, survives `systemctl restart docker`, and
// uninstall removes it.
func TestAllowedSourcesInFreshVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	netw, regHost, regCA := vmNetwork(t, "fwvm")
	// CARTO's outbound calls (auth.carto.com, Google APIs, LaunchDarkly)
	// stood in by a test server on port 443 of this host, the VMs'
	// gateway, and the corporate proxy by tinyproxy on its port 80.
	gw := netw.Gateway.String()
	dest, err := proxytest.StartTestServerOnPorts(ctx, gw, 443, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dest.Close)
	px, err := proxytest.StartTinyproxyOnPort(ctx, t.TempDir(), gw, 80)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Stop)
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
			"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--registry", regHost,
			"--proxy-url", px.URL())
		if err != nil || code != 0 {
			t.Fatalf("install: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		if !strings.Contains(out, "Reachable from: "+allowed.IP()+" only") {
			t.Errorf("install did not say who may reach the router:\n%s", out)
		}
		enforced(t, 30*time.Second)
	})

	step(t, "every service still reaches port 443 directly and through a proxy on port 80", func(t *testing.T) {
		for _, via := range []string{"direct", "proxy"} {
			got := fetchFromEveryService(t, node, dest.HTTPSURL("/outbound"), via == "direct")
			if len(got) < 10 {
				t.Fatalf("%s: only %d services answered: %v", via, len(got), got)
			}
			for svc, res := range got {
				if res.Body != dest.Marker || (via == "proxy") != (res.Proxy != "") {
					t.Errorf("%s: %s reached %s with %+v, want the marker (proxy %v)", via, svc, dest.HTTPSAddr, res, via == "proxy")
				}
			}
		}
	})

	step(t, "the rule survives systemctl restart docker", func(t *testing.T) {
		node.MustExec(t, "systemctl", "restart", "docker")
		enforced(t, 120*time.Second)
	})

	step(t, "after a reboot with a stack that fails to converge, a host not listed is refused from the first second the router answers", func(t *testing.T) {
		// The agent renders the stack anew at each converge: an operator's
		// customer.env without a mandatory key makes every one fail.
		node.MustExec(t, "cp", "/opt/carto/customer.env", "/root/customer.env.good")
		node.MustExec(t, "sed", "-i", "/^WORKSPACE_POSTGRES_PASSWORD=/d", "/opt/carto/customer.env")
		ip := node.IP()
		// Each test host knocks on the router in the background through
		// the reboot, bounded to 4 minutes, and logs each knock. The sleep
		// paces the knocks (at most five a second): it waits for nothing.
		probe := fmt.Sprintf(`end=$(($(date +%%s)+240)); while [ ! -e /root/probe.stop ] && [ $(date +%%s) -lt $end ]; do `+
			`if curl -ks -o /dev/null --max-time 1 https://%s/; then echo "$(date +%%s.%%N) answered"; else echo "$(date +%%s.%%N) no answer"; fi; sleep 0.2; done`, ip)
		for _, h := range []*vm.VM{allowed, other} {
			h.MustExec(t, "sh", "-c", "rm -f /root/probe.stop /root/probe.log; setsid sh -c '"+probe+"' >/root/probe.log 2>&1 &")
		}
		rebooted := time.Now()
		if err := node.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		if node.IP() != ip {
			t.Fatalf("the VM's address changed across the reboot (%s, then %s): the probes knocked elsewhere", ip, node.IP())
		}
		knocks := func() int { return strings.Count(other.MustExec(t, "cat", "/root/probe.log"), "\n") }
		var before int
		eventually(t, 120*time.Second, func() error {
			if !strings.Contains(allowed.MustExec(t, "cat", "/root/probe.log"), "answered") {
				return fmt.Errorf("the router does not answer the allowed host")
			}
			before = knocks() // read after: every later knock came once the router answered
			return nil
		})
		// The host not listed knocks a few more times once the router
		// answers the allowed one.
		eventually(t, 60*time.Second, func() error {
			if n := knocks() - before; n < 10 {
				return fmt.Errorf("the host not listed knocked %d times since the router answered, want 10", n)
			}
			return nil
		})
		for _, h := range []*vm.VM{allowed, other} {
			h.MustExec(t, "touch", "/root/probe.stop")
		}
		if log := other.MustExec(t, "cat", "/root/probe.log"); strings.Contains(log, "answered") {
			t.Errorf("the router answered a host not listed after the reboot:\n%s", tail(log, 10))
		}
		journal := node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager", "-o", "cat",
			"--since", "@"+fmt.Sprint(rebooted.Unix()))
		if !strings.Contains(journal, "event=converge-failed") {
			t.Errorf("the agent's converge did not fail after the reboot, so this proved nothing:\n%s", tail(journal, 20))
		}
		// Docker writes a VM's /etc/hosts anew at each start, where a real
		// machine keeps it: the operator's entry for the domain goes back.
		node.MustExec(t, "sh", "-c", "echo '127.0.0.1 carto.vm.test' >> /etc/hosts")
		node.MustExec(t, "cp", "/root/customer.env.good", "/opt/carto/customer.env")
		node.MustExec(t, "carto-appliance", "config", "apply")
		enforced(t, 60*time.Second)
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

// fetchFromEveryService has every stand-in service of the stack in node
// GET u (its /fetch, from its own environment: through the proxy unless
// direct) and returns the answers by service.
func fetchFromEveryService(t *testing.T, node *vm.VM, u string, direct bool) map[string]fetchResult {
	t.Helper()
	q := "url=" + url.QueryEscape(u) + "&insecure=1"
	if direct {
		q += "&direct=1"
	}
	script := `for c in $(docker ps -q --filter label=com.docker.compose.project=carto); do
  s=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' $c)
  case $s in workspace-postgres|valkey|router-http) continue;; esac
  ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' $c)
  echo "$s $(curl -s --max-time 20 "http://$ip:3000/fetch?` + q + `" | tr -d '\n')"
done`
	out := node.MustExec(t, "sh", "-c", script)
	got := map[string]fetchResult{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		svc, body, _ := strings.Cut(line, " ")
		var res fetchResult
		if err := json.Unmarshal([]byte(body), &res); err != nil {
			t.Errorf("%s /fetch answered %q", svc, body)
			continue
		}
		got[svc] = res
	}
	return got
}
