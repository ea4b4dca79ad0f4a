// Command agentbench is part of `make bench`: it measures the supervisor
// (SPEC §15) on the local engine and prints figures, passing or failing
// nothing:
//
//   - from a container's death (docker kill) to the agent noticing it and
//     to the service being healthy again;
//   - the agent's resident memory and CPU while idle over a minute;
//   - `status --json` latency.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/e2e/testbed"
)

func main() {
	dir := flag.String("dir", ".cache/agentbench", "working directory")
	bin := flag.String("bin", "bin/carto-appliance", "the carto-appliance binary")
	kills := flag.Int("kills", 3, "containers killed (one at a time)")
	idle := flag.Duration("idle", time.Minute, "idle time over which memory and CPU are measured")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := run(ctx, *dir, *bin, *kills, *idle); err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
}

// logBuf collects the agent's log lines with the time each arrived.
type logBuf struct {
	mu    sync.Mutex
	lines []string
	at    []time.Time
}

func (l *logBuf) since(i int, substr string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ; i < len(l.lines); i++ {
		if strings.Contains(l.lines[i], substr) {
			return l.at[i], true
		}
	}
	return time.Time{}, false
}

func (l *logBuf) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

func run(ctx context.Context, dir, bin string, kills int, idle time.Duration) error {
	dir, _ = filepath.Abs(dir)
	bin, _ = filepath.Abs(bin)
	os.RemoveAll(dir)
	bed, err := testbed.Start(ctx, dir, testbed.Options{})
	if err != nil {
		return err
	}
	defer bed.Close()
	dirs := []string{"--config-dir", filepath.Join(dir, "cfg"), "--state-dir", filepath.Join(dir, "state")}
	appliance := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, bin, append(args, dirs...)...).CombinedOutput()
		return string(out), err
	}
	customer := filepath.Join(dir, "customer.env")
	os.WriteFile(customer, []byte("SELFHOSTED_TENANT_ID=onp-bench\nSELFHOSTED_DOMAIN=agentbench.carto.test\nCARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION=2025.10.7\nPOSTGRES_ADMIN_PASSWORD=bench-admin\nWORKSPACE_POSTGRES_PASSWORD=bench-ws\n"), 0o600)
	if err := testbed.WriteTestLicense(filepath.Join(dir, "license.json"), "onp-bench"); err != nil {
		return err
	}
	if out, err := appliance("install", "--no-service", "--customer-env", customer, "--key", bed.Registry.KeyJSONPath,
		"--registry", bed.Registry.Host, "--project", "agentbench", "--http-port", "28080", "--https-port", "28443", "--bind-address", "127.0.0.1", "--ignore-preflight", "dns"); err != nil {
		return fmt.Errorf("install: %v\n%s", err, out)
	}
	defer appliance("uninstall", "--purge", "--yes")

	agent := exec.CommandContext(ctx, bin, append([]string{"agent"}, dirs...)...)
	pipe, _ := agent.StderrPipe()
	logs := &logBuf{}
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() { agent.Process.Signal(syscall.SIGTERM); agent.Wait() }()
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			logs.mu.Lock()
			logs.lines, logs.at = append(logs.lines, sc.Text()), append(logs.at, time.Now())
			logs.mu.Unlock()
		}
	}()
	if err := waitFor(ctx, 2*time.Minute, func() bool { _, ok := logs.since(0, "event=converged"); return ok }); err != nil {
		return fmt.Errorf("agent did not converge: %w", err)
	}

	var noticed, healthy []time.Duration
	for i := 0; i < kills; i++ {
		id, err := containerOf(ctx, bed.Docker, "agentbench", "maps-api")
		if err != nil {
			return err
		}
		mark := logs.len()
		killed := time.Now()
		if _, err := bed.Docker.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
			return err
		}
		if err := waitFor(ctx, time.Minute, func() bool { _, ok := logs.since(mark, "service=maps-api"); return ok }); err != nil {
			return fmt.Errorf("the agent did not notice: %w", err)
		}
		at, _ := logs.since(mark, "service=maps-api")
		noticed = append(noticed, at.Sub(killed))
		if err := waitFor(ctx, 2*time.Minute, func() bool {
			out, err := appliance("status", "--json")
			return err == nil && strings.Contains(out, `"healthy": true`)
		}); err != nil {
			return fmt.Errorf("not healthy again: %w", err)
		}
		healthy = append(healthy, time.Since(killed))
		// Pacing, not a wait for an event: the agent spaces its restarts of
		// one service (1 s after the first, 2 s after the second), and each
		// kill is to measure its first reaction, not that backoff.
		time.Sleep(2 * time.Second)
	}

	cpu0, _ := cpuTicks(agent.Process.Pid)
	time.Sleep(idle) // the window the idle figures are measured over
	cpu1, _ := cpuTicks(agent.Process.Pid)
	rss, _ := rssKB(agent.Process.Pid)
	cpuPct := float64(cpu1-cpu0) / 100 / idle.Seconds() * 100 // 100 ticks/s (USER_HZ)

	var lat []time.Duration
	for i := 0; i < 10; i++ {
		start := time.Now()
		if out, err := appliance("status", "--json"); err != nil {
			return fmt.Errorf("status: %v\n%s", err, out)
		}
		lat = append(lat, time.Since(start))
	}

	fmt.Printf("\n%-44s %s\n", "agent figure", "value (target, SPEC §15)")
	fmt.Printf("%-44s %s (detected within 1 s)\n", fmt.Sprintf("killed container noticed (median of %d)", kills), median(noticed).Round(time.Millisecond))
	fmt.Printf("%-44s %s (healthy again within 5 s)\n", fmt.Sprintf("killed container healthy again (median of %d)", kills), median(healthy).Round(time.Millisecond))
	fmt.Printf("%-44s %.1f MB (under 50 MB)\n", "agent resident memory", float64(rss)/1024)
	fmt.Printf("%-44s %.2f %% (under 1 %%)\n", fmt.Sprintf("agent CPU while idle over %s", idle), cpuPct)
	fmt.Printf("%-44s %s (under 300 ms)\n", "status --json latency (median of 10)", median(lat).Round(time.Millisecond))
	return nil
}

func containerOf(ctx context.Context, cli *client.Client, project, service string) (string, error) {
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{Filters: make(client.Filters).
		Add("label", "com.docker.compose.project="+project).Add("label", "com.docker.compose.service="+service)})
	if err != nil || len(list.Items) == 0 {
		return "", fmt.Errorf("no running %s container: %v", service, err)
	}
	return list.Items[0].ID, nil
}

func waitFor(ctx context.Context, within time.Duration, ok func() bool) error {
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not within %s", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// cpuTicks is the process's user+system CPU time in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s, nil
}

func rssKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
