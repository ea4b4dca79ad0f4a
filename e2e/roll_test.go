//go:build integration

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/e2e/testbed"
)

// A config apply that changes every CARTO service's .env, router included,
// under 100 requests a second through the router: every service is
// replaced and not one request fails; compose then sees exactly its own
// stack (one container per service, nothing to recreate).
func TestConfigApplyRollsWithoutFailedRequests(t *testing.T) {
	t.Parallel()
	n := newNode(t, "e2e-roll")
	load0, err := testbed.EnsureLoadAddress(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	addr := load0.String()
	env := baseCustomerEnv(n.domain)
	n.writeCustomerEnv(env)
	args := n.installArgs()
	for i, a := range args {
		if a == "127.0.0.1" && args[i-1] == "--bind-address" {
			args[i] = addr
		}
	}
	n.mustRun(args...)
	before := n.containers()

	// The installed copy is what config apply reads.
	installed := filepath.Join(n.configDir, "customer.env")
	b, err := os.ReadFile(installed)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, "CARTO_AUTH0_CLIENT_ID=auth0-client-id-rolled\n"...)
	if err := os.WriteFile(installed, b, 0o600); err != nil {
		t.Fatal(err)
	}
	routerLog := followRouter(t, n)
	router := fmt.Sprintf("https://%s:%d", addr, n.httpsPort)
	load := testbed.RouterLoad(t.Context(), router, n.domain, nil, 100)
	time.Sleep(3 * time.Second)
	out, errOut := n.mustRun("config", "apply")
	time.Sleep(3 * time.Second)
	res := load.Stop()
	t.Logf("config apply under load: %s\n%s", res, errOut)
	if res.Failed != 0 || res.Sent < 500 {
		t.Errorf("config apply under load: %s; failures: %v\nthe router's errors:\n%s", res, res.Samples, routerLog())
	}

	changed := changedServices(before, n.containers())
	for _, s := range []string{"router-http", "workspace-api", "maps-api", "http-cache", "workspace-www", "accounts-www", "notifier", "import-api", "lds-api"} {
		if !slices.Contains(changed, s) {
			t.Errorf("%s was not replaced (changed: %v)\n%s", s, changed, out)
		}
	}
	for _, s := range []string{"workspace-postgres", "valkey"} {
		if slices.Contains(changed, s) {
			t.Errorf("%s was replaced by a .env change", s)
		}
	}
	ps := compose(t, n, "ps", "-a", "--format", "{{.Service}} {{.Name}}")
	seen := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(ps), "\n") {
		svc, name, _ := strings.Cut(l, " ")
		seen[svc]++
		if name != n.project+"-"+svc+"-1" {
			t.Errorf("compose ps: %s runs as %s", svc, name)
		}
	}
	for svc, k := range seen {
		if k != 1 {
			t.Errorf("compose ps lists %d containers of %s:\n%s", k, svc, ps)
		}
	}
	if len(seen) != 17 {
		t.Errorf("compose ps lists %d services, want 17:\n%s", len(seen), ps)
	}
	after := n.containers()
	// A rolled container is created without a restart policy (until it
	// is ready) and given its service's once ready.
	for svc, id := range after {
		insp, err := docker.ContainerInspect(t.Context(), id, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := container.RestartPolicyUnlessStopped
		if svc == "workspace-migrations" {
			want = container.RestartPolicyDisabled
		}
		if got := insp.Container.HostConfig.RestartPolicy.Name; got != want {
			t.Errorf("%s's restart policy after the roll: %q, want %q", svc, got, want)
		}
	}
	compose(t, n, "up", "-d")
	if again := changedServices(after, n.containers()); len(again) > 0 {
		t.Errorf("docker compose up -d recreated %v after the roll", again)
	}

	// A change whose new container fails: the apply says so, the old
	// container goes on serving, and no request fails meanwhile.
	before = n.containers()
	b = append(b, "STANDIN_FAIL_MAPS_API=exit\n"...)
	if err := os.WriteFile(installed, b, 0o600); err != nil {
		t.Fatal(err)
	}
	routerLog = followRouter(t, n)
	load = testbed.RouterLoad(t.Context(), router, n.domain, []string{"/api/x", "/api/v3/maps/x"}, 50)
	_, errOut, code := n.run("config", "apply")
	res = load.Stop()
	if code == 0 || !strings.Contains(errOut, "maps-api") || !strings.Contains(errOut, "the old one is still serving") {
		t.Errorf("config apply with a failing maps-api: exit %d\n%s", code, errOut)
	}
	if res.Failed != 0 {
		t.Errorf("requests to maps-api while its new container failed: %s; %v\nthe router's errors:\n%s\n%s", res, res.Samples, routerLog(), errOut)
	}
	if changed := changedServices(before, n.containers()); slices.Contains(changed, "maps-api") {
		t.Errorf("maps-api's container was replaced by one that fails (changed: %v)", changed)
	}
	ps = compose(t, n, "ps", "-a", "--format", "{{.Service}}")
	if k := strings.Count(ps, "maps-api\n"); k != 1 {
		t.Errorf("compose ps lists %d maps-api containers after the failed roll:\n%s", k, ps)
	}
}

// followRouter follows the router's output from now on (the container is
// replaced during an apply); the function returned stops and gives its
// error lines, the router's own account of a failure.
func followRouter(t *testing.T, n *node) func() string {
	follow := exec.CommandContext(t.Context(), "docker", "logs", "-f", "--since", "0s", n.project+"-router-http-1")
	var out bytes.Buffer
	follow.Stdout, follow.Stderr = &out, &out
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	return func() string {
		follow.Process.Kill()
		follow.Wait()
		return routerErrors(out.String())
	}
}

// routerErrors keeps nginx's error lines and the requests it failed.
func routerErrors(log string) string {
	var b strings.Builder
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "[error]") || strings.Contains(l, "[warn]") || strings.Contains(l, "[crit]") || strings.Contains(l, "\" 50") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
