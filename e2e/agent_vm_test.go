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

// On a fresh VM, `install` (with the agent) survives what happens to real
// machines: the Docker engine restarting (the agent reconnects and the
// stack is healthy again) and a reboot (agent and stack come back healthy
// with the embedded Postgres data intact).
func TestAgentSurvivesEngineRestartAndReboot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if _, err := vm.EnsureImage(ctx, docker); err != nil {
		t.Fatal(err)
	}
	netw := vm.NewNetwork(t, docker, "agentvm")
	regHost, regCA := startRegistryMirror(t, netw.Name)
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})
	t.Cleanup(func() {
		if t.Failed() {
			out, _, _, _ := node.Exec(context.Background(), "journalctl", "-u", "carto-appliance", "--no-pager", "-n", "60")
			t.Logf("agent journal in the VM:\n%s", out)
		}
	})
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
	psql := func(t *testing.T, sql string) string {
		t.Helper()
		return strings.TrimSpace(node.MustExec(t, "docker", "exec", "carto-workspace-postgres-1", "psql", "-v", "ON_ERROR_STOP=1", "-At", "-U", "postgres", "-c", sql))
	}

	step(t, "install with the agent ends healthy", func(t *testing.T) {
		node.MustExec(t, "mkdir", "-p", "/etc/docker/certs.d/"+regHost)
		write(t, node, "/etc/docker/certs.d/"+regHost+"/ca.crt", regCA, 0o644)
		stagePackage(t, node)
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "install", "--yes",
			"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--registry", regHost)
		if err != nil || code != 0 {
			t.Fatalf("install: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		healthy(t, 60*time.Second)
		psql(t, "CREATE TABLE e2e_keep (v text); INSERT INTO e2e_keep VALUES ('kept');")
	})

	step(t, "after systemctl restart docker the agent reconnects and the stack is healthy", func(t *testing.T) {
		node.MustExec(t, "systemctl", "restart", "docker")
		healthy(t, 120*time.Second)
		journal := node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager")
		if !strings.Contains(journal, "event=engine-lost") {
			t.Errorf("the agent did not notice the engine restart:\n%s", tail(journal, 20))
		}
	})

	step(t, "after a reboot the agent and the stack come back with the data", func(t *testing.T) {
		if err := node.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		healthy(t, 120*time.Second)
		if got := psql(t, "SELECT v FROM e2e_keep"); got != "kept" {
			t.Errorf("row after reboot: %q", got)
		}
	})
}
