package stack

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// On the release's stack: every stateless service behind the router rolls,
// the router (which publishes the ports) is handed over, and the databases
// and the migrations are neither.
func TestWhichServicesRollOrHandOver(t *testing.T) {
	dir, _ := writeProject(t, map[string]string{}, testDotenv)
	p, err := Load(context.Background(), dir, "carto")
	if err != nil {
		t.Fatal(err)
	}
	c := &converger{e: &Engine{Firewall: noFirewall{}}, p: p}
	var rolled, handed, inPlace []string
	for name, s := range p.Services {
		cfg, err := toCreateConfig(p, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case rollable(s):
			rolled = append(rolled, name)
		case c.handoverable(s, cfg):
			handed = append(handed, name)
		default:
			inPlace = append(inPlace, name)
		}
	}
	slices.Sort(rolled)
	slices.Sort(inPlace)
	if !slices.Equal(handed, []string{"router-http"}) {
		t.Errorf("handed over: %v, want the router alone", handed)
	}
	if !slices.Equal(inPlace, []string{"valkey", "workspace-migrations", "workspace-postgres"}) {
		t.Errorf("recreated in place: %v", inPlace)
	}
	for _, want := range []string{"workspace-www", "accounts-www", "workspace-api", "maps-api", "http-cache", "import-api", "lds-api", "notifier"} {
		if !slices.Contains(rolled, want) {
			t.Errorf("%s does not roll (rolled: %v)", want, rolled)
		}
	}
	// Without a firewall the router cannot be handed over.
	c.e.Firewall = nil
	cfg, _ := toCreateConfig(p, p.Services["router-http"], nil)
	if c.handoverable(p.Services["router-http"], cfg) {
		t.Error("the router is handed over without a firewall")
	}
}

type noFirewall struct{ Firewall }

// After a reload a router's old workers are awaited: processLeaves finds
// the workers under a master (not the master), and alive tells when they
// are gone.
func TestProcessLeavesAndAlive(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("no /proc here")
	}
	master := exec.Command("sh", "-c", "sleep 30 & sleep 30 & wait")
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	defer master.Process.Kill()
	var leaves []int
	for deadline := time.Now().Add(5 * time.Second); len(leaves) < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		leaves = processLeaves(master.Process.Pid)
	}
	if len(leaves) != 2 || slices.Contains(leaves, master.Process.Pid) {
		t.Fatalf("leaves of sh with two sleeps: %v (sh is %d)", leaves, master.Process.Pid)
	}
	for _, p := range leaves {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/comm")
		if strings.TrimSpace(string(b)) != "sleep" || !alive(p) {
			t.Errorf("leaf %d is %q, alive %v", p, b, alive(p))
		}
	}
	exec.Command("kill", strconv.Itoa(leaves[0])).Run()
	for deadline := time.Now().Add(5 * time.Second); alive(leaves[0]) && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	if alive(leaves[0]) {
		t.Errorf("a killed sleep is still alive")
	}
	if !alive(leaves[1]) {
		t.Errorf("the other sleep is not alive")
	}
	if got := processLeaves(leaves[1]); got != nil {
		t.Errorf("a process without children has leaves %v: nothing to wait for", got)
	}
}
