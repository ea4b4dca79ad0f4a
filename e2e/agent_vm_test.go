//go:build integration

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/e2e/vm"
	"github.com/cartodb/carto-appliance/stack"
)

// On a fresh VM, `install` (with the agent under systemd) survives what
// happens to real machines: a container killed (back healthy, counted), a
// service that keeps crashing (a crash loop in status, restarted ever
// further apart), the Docker engine restarting (the agent reconnects and
// the stack is healthy again) and a reboot (agent and stack come back
// healthy with the embedded Postgres data intact).
func TestAgentSurvivesEngineRestartAndReboot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	netw, regHost, regCA := vmNetwork(t, "agentvm")
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})
	agentJournalOnFailure(t, node)
	healthy := func(t *testing.T, within time.Duration) {
		t.Helper()
		eventually(t, within, func() error {
			if out, _, code, _ := node.Exec(ctx, "systemctl", "is-active", "carto-appliance"); code != 0 {
				return fmt.Errorf("agent %s", strings.TrimSpace(out))
			}
			out, errOut, code, _ := node.Exec(ctx, "carto-appliance", "status", "--json")
			if code != 0 || !strings.Contains(out, `"healthy": true`) {
				return fmt.Errorf("status (exit %d): %s %s", code, tail(out, 30), errOut)
			}
			return nil
		})
	}
	service := func(t *testing.T, name string) stack.ServiceStatus {
		t.Helper()
		for _, s := range vmStatus(t, node).Services {
			if s.Name == name {
				return s
			}
		}
		t.Fatalf("status has no %s", name)
		return stack.ServiceStatus{}
	}

	step(t, "install with the agent ends healthy", func(t *testing.T) {
		trustRegistry(t, node, regHost, regCA)
		stagePackage(t, node)
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "install", "--yes",
			"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--registry", regHost)
		if err != nil || code != 0 {
			t.Fatalf("install: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		healthy(t, 60*time.Second)
		vmPsql(t, node, "CREATE TABLE e2e_keep (v text); INSERT INTO e2e_keep VALUES ('kept');")
	})

	step(t, "a killed container comes back healthy, counted in status", func(t *testing.T) {
		node.MustExec(t, "docker", "kill", "carto-maps-api-1")
		eventually(t, 60*time.Second, func() error {
			if s := service(t, "maps-api"); s.State != "running" || s.Health != "healthy" || s.Restarts+s.AgentRestarts < 1 {
				return fmt.Errorf("maps-api: %+v", s)
			}
			return nil
		})
	})

	step(t, "a service that crashes forever is a crash loop in status, restarted ever further apart", func(t *testing.T) {
		// The engine's start and die events, followed live from before
		// the fault.
		node.MustExec(t, "systemd-run", "--unit", "lds-starts", "docker", "events", "--filter", "type=container", "--filter", "event=start",
			"--filter", "event=die", "--filter", "label=com.docker.compose.service=lds-api", "--format", "{{.ID}} {{.Action}} {{.TimeNano}}")
		defer node.Exec(ctx, "systemctl", "stop", "lds-starts")
		delays := func() []time.Duration {
			id := strings.TrimSpace(node.MustExec(t, "docker", "inspect", "-f", "{{.Id}}", "carto-lds-api-1"))
			var events []lifeEvent
			for line := range strings.Lines(node.MustExec(t, "journalctl", "-u", "lds-starts", "-o", "cat", "--no-pager")) {
				var cid, action string
				var ns int64
				if _, err := fmt.Sscan(line, &cid, &action, &ns); err == nil && cid == id {
					events = append(events, lifeEvent{action: action, at: time.Unix(0, ns)})
				}
			}
			return restartDelays(events)
		}
		// Long enough to pass the apply's health gate, which a container
		// that is never healthy does not (the old one keeps serving).
		node.MustExec(t, "sh", "-c", "echo STANDIN_FAIL_LDS_API=crash-after=4s >> /opt/carto/customer.env")
		node.Exec(ctx, "carto-appliance", "config", "apply") // fails: lds-api dies while it is awaited
		eventually(t, 180*time.Second, func() error {
			if s := service(t, "lds-api"); !s.CrashLoop {
				return fmt.Errorf("lds-api: %+v", s)
			}
			return nil
		})
		if st := vmStatus(t, node); st.Healthy {
			t.Error("status says healthy during a crash loop")
		}
		// A bound for a busy CI machine, where each start takes seconds.
		eventually(t, 240*time.Second, func() error { return backoffGrown(delays()) })
		t.Logf("delays between a death and the next start: %v", delays())

		node.MustExec(t, "sed", "-i", "/STANDIN_FAIL_LDS_API/d", "/opt/carto/customer.env")
		node.MustExec(t, "carto-appliance", "config", "apply")
		healthy(t, 60*time.Second)
	})

	step(t, "after systemctl restart docker the agent reconnects and the stack is healthy", func(t *testing.T) {
		// The converge after the reconnect runs beside the loop: the agent
		// keeps feeding the watchdog, so systemd neither kills nor
		// restarts it.
		before := unitProps(t, node, "MainPID", "NRestarts")
		node.MustExec(t, "systemctl", "restart", "docker")
		healthy(t, 120*time.Second)
		if after := unitProps(t, node, "MainPID", "NRestarts"); after["MainPID"] != before["MainPID"] || after["NRestarts"] != before["NRestarts"] {
			// Killed by the watchdog (SIGABRT), Go printed every
			// goroutine: the loop's says where it was stuck.
			stuck := node.MustExec(t, "sh", "-c", "journalctl -u carto-appliance --no-pager -o cat | grep -B1 -A12 'SIGABRT\\|supervisor.(\\*sup)' | head -n 200")
			t.Errorf("the engine restart restarted the agent: %v -> %v\n%s", before, after, stuck)
		}
		journal := node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager")
		if !strings.Contains(journal, "event=engine-lost") {
			t.Errorf("the agent did not notice the engine restart:\n%s", tail(journal, 20))
		}
	})

	step(t, "proxy set --yes, run by the agent (the engine restarted under its own converge), leaves the agent alone", func(t *testing.T) {
		before := unitProps(t, node, "MainPID", "NRestarts")
		// No pull happens (every image is present): the proxy need not
		// answer; what counts is the engine's restart.
		node.MustExec(t, "carto-appliance", "proxy", "set", "--yes", "--url", "http://"+netw.Gateway.String()+":3128")
		healthy(t, 120*time.Second)
		node.MustExec(t, "carto-appliance", "proxy", "clear", "--yes")
		healthy(t, 120*time.Second)
		if after := unitProps(t, node, "MainPID", "NRestarts"); after["MainPID"] != before["MainPID"] || after["NRestarts"] != before["NRestarts"] {
			t.Errorf("proxy set/clear restarted the agent: %v -> %v", before, after)
		}
		agentRan(t, node, "proxy-set", "proxy-clear")
	})

	step(t, "stopping the agent during an apply it runs drains the apply; the next start converges", func(t *testing.T) {
		// A customer.env change recreates the services that read .env: an
		// apply of several seconds, run by the agent for the CLI.
		// The steps before ran applies too: wait for one more.
		applies := func() int {
			return strings.Count(node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager", "-o", "cat"), "event=api-apply")
		}
		before := applies()
		node.MustExec(t, "sh", "-c", "echo E2E_DRAIN=1 >> /opt/carto/customer.env")
		node.MustExec(t, "systemd-run", "--unit", "drain-apply", "--remain-after-exit", "carto-appliance", "config", "apply")
		eventually(t, 60*time.Second, func() error {
			if applies() == before {
				return fmt.Errorf("the agent has not started the apply yet")
			}
			return nil
		})
		node.MustExec(t, "systemctl", "stop", "carto-appliance")
		journal := node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager", "-o", "cat")
		if !strings.Contains(journal, "event=api-draining op=apply") {
			t.Errorf("the agent did not wait for its apply:\n%s", tail(journal, 30))
		}
		node.MustExec(t, "systemctl", "start", "carto-appliance")
		healthy(t, 120*time.Second)
		eventually(t, 60*time.Second, func() error {
			if out, _, _, _ := node.Exec(ctx, "systemctl", "show", "drain-apply", "-p", "ActiveState"); !strings.Contains(out, "ActiveState=active") && !strings.Contains(out, "ActiveState=failed") {
				return fmt.Errorf("the CLI's apply still runs: %s", out)
			}
			return nil
		})
		// Consistent: a second apply has nothing left to do.
		if out := node.MustExec(t, "carto-appliance", "config", "apply"); !strings.Contains(out, "is up at") {
			t.Errorf("apply after the restart: %s", out)
		}
	})

	step(t, "after a reboot the agent and the stack come back with the data", func(t *testing.T) {
		if err := node.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		healthy(t, 120*time.Second)
		if got := vmPsql(t, node, "SELECT v FROM e2e_keep"); got != "kept" {
			t.Errorf("row after reboot: %q", got)
		}
	})
}
