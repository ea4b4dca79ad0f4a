//go:build integration

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/e2e/vm"
)

// On a fresh VM (systemd and its own Docker engine) with the stack
// installed, `service install` runs the agent as carto-appliance.service:
// Type=notify with a 30 s watchdog that the agent keeps feeding, restarted
// by systemd within seconds of a kill -9 without a stack container being
// recreated; re-running it changes nothing; `service uninstall` stops the
// agent and removes the unit, and the stack keeps running.
func TestServiceAgentUnderSystemd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	netw, regHost, regCA := vmNetwork(t, "svcvm")
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})
	agentJournalOnFailure(t, node)
	const unitPath = "/etc/systemd/system/carto-appliance.service"
	var stack map[string]string // container ID → name and state, as installed

	step(t, "the stack is installed without the service", func(t *testing.T) {
		trustRegistry(t, node, regHost, regCA)
		stagePackage(t, node)
		node.MustExec(t, "carto-appliance", "install", "--no-service", "--yes",
			"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--registry", regHost)
		if st := vmStatus(t, node); !st.Healthy {
			t.Fatalf("the stack in the VM is not healthy: %+v", st)
		}
		stack = vmContainers(t, node)
	})

	var pid int
	step(t, "service install runs the agent as a notify unit with a watchdog", func(t *testing.T) {
		out := node.MustExec(t, "carto-appliance", "service", "install")
		if !strings.Contains(out, "carto-appliance.service is active") {
			t.Errorf("service install said %q", out)
		}
		if got := strings.TrimSpace(node.MustExec(t, "systemctl", "is-active", "carto-appliance")); got != "active" {
			t.Fatalf("systemctl is-active: %s", got)
		}
		if got := strings.TrimSpace(node.MustExec(t, "systemctl", "is-enabled", "carto-appliance")); got != "enabled" {
			t.Errorf("systemctl is-enabled: %s", got)
		}
		props := unitProps(t, node, "Type", "WatchdogUSec", "Restart", "RestartUSec", "NotifyAccess", "KillMode", "ExecMainPID", "After", "Wants")
		for k, want := range map[string]string{"Type": "notify", "WatchdogUSec": "30s", "Restart": "always", "RestartUSec": "2s", "NotifyAccess": "main", "KillMode": "process"} {
			if props[k] != want {
				t.Errorf("%s=%s, want %s", k, props[k], want)
			}
		}
		for _, k := range []string{"After", "Wants"} {
			if !strings.Contains(props[k], "docker.service") {
				t.Errorf("%s=%s lacks docker.service", k, props[k])
			}
		}
		// kardianos/service wrote exactly what the installer renders for
		// these paths, so a later install finds it current.
		golden, err := os.ReadFile("../host/testdata/carto-appliance.service")
		if err != nil {
			t.Fatal(err)
		}
		if got := node.MustExec(t, "cat", unitPath); got != string(golden) {
			t.Errorf("%s differs from host/testdata/carto-appliance.service:\n%s", unitPath, got)
		}
		pid = mainPID(t, node)
		if pid == 0 {
			t.Fatal("no MainPID")
		}
		journal := node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager", "-o", "cat")
		if !strings.Contains(journal, "event=ready") {
			t.Errorf("the agent's journal has no event=ready:\n%s", tail(journal, 20))
		}
		t.Logf("the agent's journal:\n%s", tail(journal, 6))
		if st := node.MustExec(t, "carto-appliance", "service", "status"); !strings.Contains(st, "state:    active (running)") {
			t.Errorf("service status:\n%s", st)
		}
	})

	step(t, "a second service install changes nothing", func(t *testing.T) {
		before := node.MustExec(t, "stat", "-c", "%Y.%Z", unitPath)
		node.MustExec(t, "carto-appliance", "service", "install")
		if after := node.MustExec(t, "stat", "-c", "%Y.%Z", unitPath); after != before {
			t.Errorf("the unit file was rewritten (%s → %s)", before, after)
		}
		if got := mainPID(t, node); got != pid {
			t.Errorf("the agent was restarted: pid %d → %d", pid, got)
		}
	})

	step(t, "the agent feeds the watchdog past WatchdogSec", func(t *testing.T) {
		// systemd records each WATCHDOG=1 it receives; the agent pings
		// every 15 s, so 35 s see at least two, and a missed watchdog
		// would have restarted it.
		first := unitProps(t, node, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
		seen := map[string]bool{first: true}
		deadline := time.Now().Add(35 * time.Second)
		for time.Now().Before(deadline) {
			p := unitProps(t, node, "WatchdogTimestampMonotonic", "MainPID", "NRestarts", "ActiveState")
			if p["MainPID"] != strconv.Itoa(pid) || p["NRestarts"] != "0" || p["ActiveState"] != "active" {
				t.Fatalf("the agent was restarted or stopped: %v", p)
			}
			seen[p["WatchdogTimestampMonotonic"]] = true
			// The interval of an observation that must last past
			// WatchdogSec: its length is what is tested.
			time.Sleep(time.Second)
		}
		delete(seen, "0")
		if len(seen) < 2 {
			t.Errorf("systemd recorded watchdog pings at %v; want at least two", seen)
		}
	})

	step(t, "kill -9 of the agent: systemd restarts it within seconds and no container is recreated", func(t *testing.T) {
		start := time.Now()
		node.MustExec(t, "kill", "-9", strconv.Itoa(pid))
		eventually(t, 15*time.Second, func() error {
			p := unitProps(t, node, "MainPID", "ActiveState", "NRestarts")
			if p["ActiveState"] != "active" || p["MainPID"] == "0" || p["MainPID"] == strconv.Itoa(pid) || p["NRestarts"] != "1" {
				return fmt.Errorf("not restarted yet: %v", p)
			}
			return nil
		})
		t.Logf("agent back and ready after %s", time.Since(start).Round(100*time.Millisecond))
		pid = mainPID(t, node)
		sameContainers(t, stack, vmContainers(t, node))
		if st := vmStatus(t, node); !st.Healthy {
			t.Errorf("the stack is not healthy after the agent's restart: %+v", st)
		}
	})

	step(t, "the CLI goes through the agent's socket, which only root may use", func(t *testing.T) {
		if st := vmStatus(t, node); st.AgentPID != pid {
			t.Errorf("status came from pid %d, the agent is %d", st.AgentPID, pid)
		}
		const socket = "/var/lib/carto-appliance/agent.sock"
		if got := strings.TrimSpace(node.MustExec(t, "stat", "-c", "%F %a %U", socket)); got != "socket 600 root" {
			t.Errorf("%s: %s", socket, got)
		}
		asNobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "carto-appliance", "status"}
		_, errOut, code, _ := node.Exec(ctx, asNobody...)
		if code != 1 || !strings.Contains(errOut, "permission denied; run the command as root") {
			t.Errorf("status as nobody: exit %d: %s", code, errOut)
		}
		// Even with the socket opened up, the agent checks who is asking.
		node.MustExec(t, "chmod", "0755", "/var/lib/carto-appliance")
		node.MustExec(t, "chmod", "0666", socket)
		_, errOut, code, _ = node.Exec(ctx, asNobody...)
		node.MustExec(t, "chmod", "0700", "/var/lib/carto-appliance")
		node.MustExec(t, "chmod", "0600", socket)
		if code != 1 || !strings.Contains(errOut, "only root may use the carto-appliance agent") {
			t.Errorf("status as nobody through an open socket: exit %d: %s", code, errOut)
		}
		out, progress, code, _ := node.Exec(ctx, "carto-appliance", "config", "apply")
		if code != 0 || !strings.Contains(progress, "Unchanged") || strings.Contains(progress, "Recreating") || strings.Contains(progress, "Creating") {
			t.Errorf("a no-op config apply through the agent: exit %d\n%s\n%s", code, progress, out)
		}
		journal := node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager", "-o", "cat")
		if !strings.Contains(journal, "event=api-apply") {
			t.Errorf("the apply did not go through the agent:\n%s", tail(journal, 10))
		}
		sameContainers(t, stack, vmContainers(t, node))
	})

	step(t, "a service stopped through the agent stays stopped when the agent restarts, until started", func(t *testing.T) {
		node.MustExec(t, "carto-appliance", "stop", "sql-worker")
		node.MustExec(t, "systemctl", "restart", "carto-appliance")
		// Type=notify: the restart returns once the new agent converged
		// (READY). It has had its chance to bring sql-worker back once it
		// has also looked at the stack since.
		ready := time.Now()
		pid = mainPID(t, node)
		eventually(t, 30*time.Second, func() error {
			return agentLookedSince([]byte(node.MustExec(t, "cat", "/var/lib/carto-appliance/agent.json")), ready)
		})
		st := vmStatus(t, node)
		for _, s := range st.Services {
			if s.Name == "sql-worker" && (!s.Held || s.State != "exited") {
				t.Errorf("sql-worker after the agent's restart: %+v", s)
			}
		}
		node.MustExec(t, "carto-appliance", "start", "sql-worker")
		if st := vmStatus(t, node); !st.Healthy || len(st.Held) > 0 || st.AgentPID != pid {
			t.Errorf("after start: healthy=%v held=%v agent_pid=%d (agent %d)", st.Healthy, st.Held, st.AgentPID, pid)
		}
		sameContainers(t, stack, vmContainers(t, node))
	})

	step(t, "a binary carrying another release changes nothing: the installed release is pinned", func(t *testing.T) {
		const next = "2099.1.1"
		other := buildOtherRelease(t, next)
		envBefore := node.MustExec(t, "grep", "^CARTO_SELFHOSTED_VERSION=", "/opt/carto/.env")
		replaceBinary(t, node, other)
		// Type=notify: restart returns once the new agent converged.
		node.MustExec(t, "systemctl", "restart", "carto-appliance")
		pid = mainPID(t, node)
		if out := node.MustExec(t, "carto-appliance", "version"); !strings.Contains(out, "CARTO release "+next) {
			t.Fatalf("the new binary says %q", out)
		}
		st := vmStatus(t, node)
		if st.Version != version || st.Release == nil || st.Release.Installed != version || st.Release.Carried != next || !st.Healthy {
			t.Errorf("status after the binary change: version %s release %+v healthy %v; want %s installed, %s carried", st.Version, st.Release, st.Healthy, version, next)
		}
		say := "this binary carries CARTO " + next + ", installed is " + version + ": run `carto-appliance upgrade`"
		if out := node.MustExec(t, "carto-appliance", "status"); !strings.Contains(out, say) {
			t.Errorf("status does not say what to do (%q):\n%s", say, out)
		}
		// The plan an apply would run renders the installed release and
		// changes no file.
		plan := node.MustExec(t, "carto-appliance", "config", "plan")
		if !strings.HasPrefix(plan, "apply: CARTO "+version+"\n") || strings.Contains(plan, " changed\n") || !strings.Contains(plan, ".env: no setting changes") {
			t.Errorf("config plan with the new binary:\n%s", plan)
		}
		// An explicit apply through the agent renders the pinned release too.
		if _, progress, code, _ := node.Exec(ctx, "carto-appliance", "config", "apply"); code != 0 || strings.Contains(progress, "Recreating") {
			t.Errorf("config apply with the new binary: exit %d\n%s", code, progress)
		}
		if got := node.MustExec(t, "grep", "^CARTO_SELFHOSTED_VERSION=", "/opt/carto/.env"); got != envBefore {
			t.Errorf(".env's version changed: %s → %s", envBefore, got)
		}
		sameContainers(t, stack, vmContainers(t, node))
		journal := node.MustExec(t, "journalctl", "-u", "carto-appliance", "_PID="+strconv.Itoa(pid), "--no-pager", "-o", "cat")
		if strings.Contains(journal, "event=converge-failed") || !strings.Contains(journal, "event=converged") {
			t.Errorf("the new agent did not converge cleanly:\n%s", tail(journal, 10))
		}
		// Back to the binary under test for the steps that follow.
		replaceBinary(t, node, bin)
		node.MustExec(t, "systemctl", "restart", "carto-appliance")
		pid = mainPID(t, node)
	})

	step(t, "service uninstall stops the agent and removes the unit; the stack keeps running", func(t *testing.T) {
		node.MustExec(t, "carto-appliance", "service", "uninstall")
		for _, p := range []string{unitPath, "/etc/systemd/system/multi-user.target.wants/carto-appliance.service"} {
			if _, _, code, _ := node.Exec(ctx, "test", "-e", p); code == 0 {
				t.Errorf("%s is still there", p)
			}
		}
		if p := unitProps(t, node, "LoadState", "ActiveState"); p["LoadState"] != "not-found" || p["ActiveState"] != "inactive" {
			t.Errorf("the unit after uninstall: %v", p)
		}
		if _, _, code, _ := node.Exec(ctx, "kill", "-0", strconv.Itoa(pid)); code == 0 {
			t.Errorf("the agent (pid %d) still runs", pid)
		}
		sameContainers(t, stack, vmContainers(t, node))
		if st := vmStatus(t, node); st.AgentPID != 0 || !st.Healthy {
			t.Errorf("status without the agent: agent_pid=%d healthy=%v", st.AgentPID, st.Healthy)
		}
		if st := node.MustExec(t, "carto-appliance", "service", "status"); !strings.Contains(st, "not installed") {
			t.Errorf("service status after uninstall:\n%s", st)
		}
		node.MustExec(t, "carto-appliance", "service", "uninstall") // nothing left to do: not an error
	})
}

// replaceBinary puts exe at /usr/local/bin/carto-appliance as a package
// manager does: written beside it, renamed over it (the running agent
// keeps its old file).
func replaceBinary(t *testing.T, node *vm.VM, exe string) {
	t.Helper()
	if err := node.CopyFile(context.Background(), exe, "/usr/local/bin/.carto-appliance.new", 0o755); err != nil {
		t.Fatal(err)
	}
	node.MustExec(t, "mv", "/usr/local/bin/.carto-appliance.new", "/usr/local/bin/carto-appliance")
}

// agentRan checks that the running agent made each change (its API logs
// event=api-<op> as it starts one): the CLI sent the change to the agent,
// the node's single writer, instead of making it itself.
func agentRan(t *testing.T, node *vm.VM, ops ...string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		journal := node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager", "-o", "cat")
		for _, op := range ops {
			if !strings.Contains(journal, "event=api-"+op) {
				return fmt.Errorf("the agent did not run %s:\n%s", op, tail(journal, 20))
			}
		}
		return nil
	})
}

// unitProps reads properties of carto-appliance.service.
func unitProps(t *testing.T, node *vm.VM, names ...string) map[string]string {
	t.Helper()
	out := node.MustExec(t, "systemctl", "show", "carto-appliance", "-p", strings.Join(names, ","))
	props := map[string]string{}
	for line := range strings.Lines(out) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			props[k] = v
		}
	}
	return props
}

func mainPID(t *testing.T, node *vm.VM) int {
	t.Helper()
	pid, _ := strconv.Atoi(unitProps(t, node, "MainPID")["MainPID"])
	return pid
}

// vmContainers maps the stack's containers in the VM, by ID, to their
// name and state.
func vmContainers(t *testing.T, node *vm.VM) map[string]string {
	t.Helper()
	out := node.MustExec(t, "docker", "ps", "-a", "--no-trunc", "--filter", "label=com.docker.compose.project=carto", "--format", "{{.ID}} {{.Names}} {{.State}}")
	m := map[string]string{}
	for line := range strings.Lines(out) {
		if id, rest, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			m[id] = rest
		}
	}
	if len(m) == 0 {
		t.Fatal("no stack container in the VM")
	}
	return m
}

func sameContainers(t *testing.T, before, after map[string]string) {
	t.Helper()
	for id, v := range before {
		if after[id] != v {
			t.Errorf("container %s (%s) is now %q", id[:12], v, after[id])
		}
	}
	for id, v := range after {
		if _, ok := before[id]; !ok {
			t.Errorf("new container %s (%s)", id[:12], v)
		}
	}
}
