//go:build integration

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// An operator installs CARTO on a node with the embedded databases: the
// stack is pulled through the authenticated registry, comes up healthy in
// dependency order, is what `docker compose` sees, converges without
// recreating anything, recreates exactly what changed, keeps the database
// through every recreate and through uninstall, and refuses bad input
// without touching anything.
func TestStandardInstallLifecycle(t *testing.T) {
	n := newNode(t, "e2e-std")
	n.writeCustomerEnv(baseCustomerEnv(n.domain))
	caPool, certFile, keyFile := n.writeServerCert()
	var installErr string

	step(t, "install pulls through the registry and ends healthy", func(t *testing.T) {
		out, errOut := n.mustRun(n.installArgs("--tls-cert", certFile, "--tls-key", keyFile)...)
		installErr = errOut
		if !strings.Contains(out, "https://"+n.domain+":") {
			t.Errorf("install did not print the URL:\n%s", out)
		}
		// The pull progress (plain lines off a terminal) shows the images
		// came from the registry.
		if !strings.Contains(errOut, "Pulling from router-http") || !strings.Contains(errOut, "Downloaded newer image for "+reg.Host+"/router-http:"+version) {
			t.Errorf("install output shows no pull of router-http from %s:\n%s", reg.Host, errOut)
		}
		st := n.status()
		if !st.Healthy || st.Version != version || st.Layout != "standard" {
			t.Fatalf("status after install: healthy=%v version=%q layout=%q", st.Healthy, st.Version, st.Layout)
		}
		if len(st.Services) != 17 {
			t.Errorf("status lists %d services, want 17", len(st.Services))
		}
		for _, s := range st.Services {
			if !strings.HasPrefix(s.Image, reg.Host+"/") {
				t.Errorf("%s runs %s, not from the test registry", s.Name, s.Image)
			}
			want := "running"
			if s.Name == "workspace-migrations" {
				want = "completed"
			}
			if s.State != want || (want == "running" && s.Health != "healthy") {
				t.Errorf("%s: state %s health %s", s.Name, s.State, s.Health)
			}
		}
	})

	step(t, "services started in depends_on order", func(t *testing.T) {
		// The installer's own progress: a dependency is Healthy/Completed
		// before its dependents are created.
		order := func(line string) int {
			i := strings.Index(installErr, line)
			if i < 0 {
				t.Fatalf("install output lacks %q:\n%s", line, installErr)
			}
			return i
		}
		for _, c := range [][2]string{
			{"workspace-postgres", "workspace-migrations"},
			{"valkey", "workspace-api"},
			{"workspace-migrations", "maps-api"},
			{"workspace-api", "notifier"},
			{"maps-api", "http-cache"},
			{"http-cache", "router-http"},
		} {
			readyAs := "Healthy"
			if c[0] == "workspace-migrations" {
				readyAs = "Completed"
			}
			ready := order(fmt.Sprintf(" %-22s %s", c[0], readyAs))
			if created := order(fmt.Sprintf(" %-22s Creating", c[1])); created < ready {
				t.Errorf("%s was created before %s was ready", c[1], c[0])
			}
		}
		// And the engine's record: migrations finished before workspace-api started.
		mig := inspect(t, n.container("workspace-migrations"))
		api := inspect(t, n.container("workspace-api"))
		finished, _ := time.Parse(time.RFC3339Nano, mig.State.FinishedAt)
		started, _ := time.Parse(time.RFC3339Nano, api.State.StartedAt)
		if mig.State.ExitCode != 0 || !finished.Before(started) {
			t.Errorf("migrations exit %d finished %s, workspace-api started %s", mig.State.ExitCode, mig.State.FinishedAt, api.State.StartedAt)
		}
	})

	step(t, "the migrations ran against the embedded Postgres", func(t *testing.T) {
		got := n.exec("workspace-api", "wget", "-q", "-O-", "http://127.0.0.1:3000/db")
		if !strings.Contains(got, version) {
			t.Errorf("workspace-api /db = %s, want the migration row %s", got, version)
		}
	})

	step(t, "a request through the router over HTTPS reaches a service", func(t *testing.T) {
		body := httpsGet(t, n, caPool, n.domain, "/workspace-api/whoami")
		if !strings.Contains(body, `"workspace-api"`) {
			t.Errorf("router answered %s, want workspace-api's whoami", body)
		}
		if body := httpsGet(t, n, caPool, n.domain, "/api/v3/maps/x"); !strings.Contains(body, `"maps-api"`) {
			t.Errorf("router → http-cache → maps-api answered %s", body)
		}
		if _, err := httpsClient(caPool, "wrong.example.com").Get(fmt.Sprintf("https://127.0.0.1:%d/", n.httpsPort)); err == nil {
			t.Error("TLS verified for a host name the certificate does not cover")
		}
	})

	step(t, "docker compose sees the stack and its up -d recreates nothing", func(t *testing.T) {
		ps := compose(t, n, "ps", "--all", "--format", "{{.Service}}")
		for _, s := range []string{"router-http", "workspace-postgres", "valkey", "workspace-migrations", "maps-api", "notifier"} {
			if !strings.Contains(ps, s+"\n") {
				t.Errorf("docker compose ps lacks %s:\n%s", s, ps)
			}
		}
		before := n.containers()
		// compose recreates a container whose config-hash or image label
		// differs from what it computes: none may be.
		out := compose(t, n, "up", "-d")
		if ch := changedServices(before, n.containers()); len(ch) > 0 {
			t.Errorf("docker compose up -d recreated %v:\n%s", ch, out)
		}
		if strings.Contains(out, "Recreate") {
			t.Errorf("docker compose up -d recreated:\n%s", out)
		}
	})

	step(t, "a second apply recreates nothing", func(t *testing.T) {
		before := n.containers()
		n.mustRun("config", "apply")
		if ch := changedServices(before, n.containers()); len(ch) > 0 {
			t.Errorf("no-op apply recreated %v", ch)
		}
	})

	step(t, "logs, env render and status show the stack without its secrets", func(t *testing.T) {
		logs, _ := n.mustRun("logs", "workspace-migrations")
		if !strings.Contains(logs, "workspace-migrations | ") || !strings.Contains(logs, "applied version "+version) {
			t.Errorf("logs workspace-migrations:\n%s", logs)
		}
		if _, errOut, code := n.run("logs", "no-such-service"); code != 1 || !strings.Contains(errOut, `"no-such-service"`) {
			t.Errorf("logs of an unknown service: exit %d\n%s", code, errOut)
		}
		env, _ := n.mustRun("env", "render")
		if strings.Contains(env, "adm1n") || strings.Contains(env, "ws-pass-2") {
			t.Errorf("env render shows a secret:\n%s", env)
		}
		if !strings.Contains(env, `POSTGRES_ADMIN_PASSWORD="********"`) || !strings.Contains(env, `SELFHOSTED_DOMAIN="`+n.domain+`"`) {
			t.Errorf("env render lacks the masked password or the domain:\n%s", env)
		}
		written, _ := os.ReadFile(filepath.Join(n.configDir, ".env"))
		if !strings.Contains(string(written), `POSTGRES_ADMIN_PASSWORD="adm1n\$ecret #x y"`) {
			t.Errorf(".env does not carry the password escaped for compose")
		}
		for name, mode := range map[string]os.FileMode{".env": 0o600, "customer.env": 0o600, "appliance.yaml": 0o600, "certs/key.json": 0o600, "certs": 0o700 | os.ModeDir, "docker-compose.yml": 0o644} {
			if fi, err := os.Stat(filepath.Join(n.configDir, name)); err != nil || fi.Mode() != mode {
				t.Errorf("%s: mode %v (%v), want %v", name, fi.Mode(), err, mode)
			}
		}
		text, _ := n.mustRun("status")
		if !strings.Contains(text, "healthy") || !strings.Contains(text, "workspace-migrations  completed") {
			t.Errorf("status:\n%s", text)
		}
		// The values for CARTO's Helm chart: secrets as references only.
		out := filepath.Join(t.TempDir(), "carto-values.yaml")
		if _, errOut := n.mustRun("export", "helm-values", "-o", out); !strings.Contains(errOut, "embedded PostgreSQL") {
			t.Errorf("export helm-values says nothing of the embedded database:\n%s", errOut)
		}
		values, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := os.ReadFile(filepath.Join(n.configDir, "certs", "key.json"))
		var keyDoc struct {
			PrivateKeyID string `json:"private_key_id"`
		}
		if err := json.Unmarshal(key, &keyDoc); err != nil || len(keyDoc.PrivateKeyID) < 8 {
			t.Fatalf("the installed key.json has no private_key_id: %v", err)
		}
		for _, secret := range []string{"adm1n", "ws-pass-2", keyDoc.PrivateKeyID} {
			if strings.Contains(string(values), secret) {
				t.Errorf("the Helm values hold a secret (%.8s…):\n%s", secret, values)
			}
		}
		if !strings.Contains(string(values), "selfHostedDomain: "+n.domain) || !strings.Contains(string(values), "existingSecretPasswordKey: workspace-postgres-password") {
			t.Errorf("the Helm values:\n%s", values)
		}
	})

	step(t, "a customer.env change recreates the CARTO services, not the databases", func(t *testing.T) {
		env := baseCustomerEnv(n.domain)
		env["LOG_LEVEL"] = "debug"
		n.writeCustomerEnv(env)
		before := n.containers()
		n.mustRun(n.installArgs()...)
		changed := strings.Join(changedServices(before, n.containers()), ",")
		for _, s := range []string{"maps-api", "workspace-api", "router-http", "workspace-migrations"} {
			if !strings.Contains(","+changed+",", ","+s+",") {
				t.Errorf("%s not recreated by a customer.env change (recreated: %s)", s, changed)
			}
		}
		for _, s := range []string{"workspace-postgres", "valkey"} {
			if strings.Contains(","+changed+",", ","+s+",") {
				t.Errorf("%s recreated by a customer.env change it does not read", s)
			}
		}
	})

	step(t, "rows in the embedded Postgres survive its recreation", func(t *testing.T) {
		n.psql("CREATE TABLE e2e_keep (v text); INSERT INTO e2e_keep VALUES ('kept');")
		if err := reg.PushVariant(context.Background(), docker, images, "workspace-postgres", version, map[string]string{"STANDIN_HOTFIX": "pg"}); err != nil {
			t.Fatal(err)
		}
		before := n.containers()
		n.mustRun("config", "apply", "--pull", "always")
		if ch := changedServices(before, n.containers()); strings.Join(ch, ",") != "workspace-postgres" {
			t.Errorf("a new Postgres image recreated %v, want [workspace-postgres]", ch)
		}
		if got := n.psql("SELECT v FROM e2e_keep"); got != "kept" {
			t.Errorf("row after recreate: %q", got)
		}
	})

	step(t, "a new image for one service recreates that service alone", func(t *testing.T) {
		if err := reg.PushVariant(context.Background(), docker, images, "lds-api", version, map[string]string{"STANDIN_HOTFIX": "1"}); err != nil {
			t.Fatal(err)
		}
		before := n.containers()
		n.mustRun("config", "apply", "--pull", "always")
		if ch := changedServices(before, n.containers()); strings.Join(ch, ",") != "lds-api" {
			t.Errorf("recreated %v, want [lds-api]", ch)
		}
		if env := n.exec("lds-api", "wget", "-q", "-O-", "http://127.0.0.1:3000/env"); !strings.Contains(env, "STANDIN_HOTFIX") {
			t.Errorf("lds-api does not run the new image")
		}
		if !n.status().Healthy {
			t.Error("not healthy after the image change")
		}
	})

	refused := func(t *testing.T, args []string, wants ...string) {
		t.Helper()
		files, ctrs := n.snapshot(), n.containers()
		n.mustRefuse(t, args, wants...)
		sameSnapshot(t, files, n.snapshot())
		if ch := changedServices(ctrs, n.containers()); len(ch) > 0 {
			t.Errorf("a refused install changed containers %v", ch)
		}
	}

	step(t, "a wrong key.json is refused and changes nothing", func(t *testing.T) {
		args := n.installArgs("--pull", "always")
		for i, a := range args {
			if a == reg.KeyJSONPath {
				args[i] = reg.WrongKeyJSONPath
			}
		}
		refused(t, args, reg.WrongKeyJSONPath, reg.Host, "key.json")
	})

	step(t, "a missing mandatory key is refused and changes nothing", func(t *testing.T) {
		env := baseCustomerEnv(n.domain)
		env["POSTGRES_ADMIN_PASSWORD"] = ""
		n.writeCustomerEnv(env)
		refused(t, n.installArgs(), "POSTGRES_ADMIN_PASSWORD", "customer.env")
		n.writeCustomerEnv(baseCustomerEnv(n.domain))
	})

	step(t, "an unreadable customer.env is refused and changes nothing", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "customer.env")
		args := n.installArgs()
		for i, a := range args {
			if a == n.customerEnv {
				args[i] = missing
			}
		}
		refused(t, args, missing, "--customer-env")
		refused(t, append(args[:0:0], replace(args, missing, t.TempDir())...), "customer.env")
	})

	step(t, "uninstall keeps the data, install brings it back", func(t *testing.T) {
		// A container of no service of the stack on its network (an
		// operator's debugging container) is named, with the fix.
		image := strings.TrimSpace(n.dockerCLI("inspect", "-f", "{{.Image}}", n.container("maps-api")))
		intruder := n.project + "-intruder"
		n.dockerCLI("run", "-d", "--name", intruder, "--network", n.project+"_default", "--label", "org.cartodb.testbed=1", image)
		t.Cleanup(func() { exec.Command("docker", "rm", "-f", intruder).Run() })
		if _, errOut, code := n.run("uninstall"); code != 1 || !strings.Contains(errOut, intruder) || !strings.Contains(errOut, "docker network disconnect") {
			t.Errorf("uninstall with %s on the network: exit %d\n%s", intruder, code, errOut)
		}
		n.dockerCLI("rm", "-f", intruder)
		n.mustRun("uninstall")
		if c := n.containers(); len(c) != 0 {
			t.Fatalf("containers left after uninstall: %v", c)
		}
		if _, err := os.Stat(filepath.Join(n.configDir, ".env")); err != nil {
			t.Fatalf("uninstall removed the config: %v", err)
		}
		n.mustRun(n.installArgs()...)
		if got := n.psql("SELECT v FROM e2e_keep"); got != "kept" {
			t.Errorf("row after uninstall and install: %q", got)
		}
	})

	step(t, "uninstall --purge leaves nothing", func(t *testing.T) {
		if _, _, code := n.run("uninstall", "--purge"); code != 2 {
			t.Errorf("purge without --yes and no terminal: exit %d, want 2", code)
		}
		n.mustRun("uninstall", "--purge", "--yes")
		if c := n.containers(); len(c) != 0 {
			t.Errorf("containers left: %v", c)
		}
		vols, _ := docker.VolumeList(context.Background(), client.VolumeListOptions{Filters: make(client.Filters).Add("label", "com.docker.compose.project="+n.project)})
		if len(vols.Items) != 0 {
			t.Errorf("%d volumes left", len(vols.Items))
		}
		for _, d := range []string{n.configDir, n.stateDir} {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("%s still exists", d)
			}
		}
	})
}

// The embedded databases switched off: the stack runs against an external
// Postgres and Redis and no workspace-postgres or valkey container exists.
func TestExternalDatabases(t *testing.T) {
	t.Parallel()
	n := newNode(t, "e2e-ext")
	ctx := context.Background()
	netName := n.project + "_default"
	// The external servers share the network the stack will use, as a
	// database on the VM's LAN would be reachable by name.
	if _, err := docker.NetworkCreate(ctx, netName, client.NetworkCreateOptions{Driver: "bridge", Labels: map[string]string{
		"com.docker.compose.project": n.project, "com.docker.compose.network": "default",
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { docker.NetworkRemove(context.Background(), netName, client.NetworkRemoveOptions{}) })
	runExternal(t, "ext-postgres-"+n.project, images.Postgres, netName, "ext-postgres",
		"POSTGRES_USER=postgres", "POSTGRES_PASSWORD=ext-admin", "POSTGRES_DB=postgres")
	runExternal(t, "ext-redis-"+n.project, images.Valkey, netName, "ext-redis")

	env := baseCustomerEnv(n.domain)
	env["LOCAL_POSTGRES_SCALE"], env["LOCAL_REDIS_SCALE"] = "0", "0"
	env["WORKSPACE_POSTGRES_HOST"], env["REDIS_HOST"] = "ext-postgres", "ext-redis"
	env["POSTGRES_ADMIN_PASSWORD"] = "ext-admin"
	n.writeCustomerEnv(env)
	n.mustRun(n.installArgs()...)

	st := n.status()
	if !st.Healthy {
		t.Errorf("not healthy with external databases: %+v", st.Services)
	}
	for _, s := range st.Services {
		if s.Name == "workspace-postgres" || s.Name == "valkey" {
			t.Errorf("embedded %s present with its scale at 0", s.Name)
		}
	}
	if c := n.containers(); c["workspace-postgres"] != "" || c["valkey"] != "" {
		t.Errorf("embedded database containers exist: %v", c)
	}
	got := n.exec("workspace-api", "wget", "-q", "-O-", "http://127.0.0.1:3000/db")
	if !strings.Contains(got, version) {
		t.Errorf("migrations did not reach the external Postgres: /db = %s", got)
	}
	if got := n.exec("workspace-api", "wget", "-q", "-O-", "http://127.0.0.1:3000/redis"); !strings.Contains(got, "PONG") {
		t.Errorf("workspace-api cannot reach the external Redis: %s", got)
	}
}

func runExternal(t *testing.T, name, image, netName, alias string, env ...string) {
	t.Helper()
	args := []string{"run", "-d", "--name", name, "--network", netName, "--network-alias", alias}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	out, err := exec.Command("docker", append(args, image)...).CombinedOutput()
	if err != nil {
		t.Fatalf("starting %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", "-v", name).Run() })
}

// step runs one named step of a scenario; the scenario stops at the first
// failed step, since later steps build on it.
func step(t *testing.T, name string, fn func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, fn) {
		t.FailNow()
	}
}

func replace(args []string, old, new string) []string {
	out := append([]string(nil), args...)
	for i, a := range out {
		if a == old {
			out[i] = new
		}
	}
	return out
}

func inspect(t *testing.T, id string) container.InspectResponse {
	t.Helper()
	res, err := docker.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Container
}

func compose(t *testing.T, n *node, args ...string) string {
	t.Helper()
	full := append([]string{"compose", "-f", filepath.Join(n.configDir, "docker-compose.yml"), "-p", n.project}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", full...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return string(out)
}

func httpsClient(pool *x509.CertPool, serverName string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName},
	}}
}

func httpsGet(t *testing.T, n *node, pool *x509.CertPool, host, path string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d%s", n.httpsPort, path), nil)
	req.Host = host
	resp, err := httpsClient(pool, host).Do(req)
	if err != nil {
		t.Fatalf("GET %s through the router: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s through the router: %s %s", path, resp.Status, b)
	}
	return string(b)
}

// A one-shot migration that fails stops the install: the error names the
// service, its exit code and its last log lines, and nothing that needs the
// migrations is started.
func TestFailingMigrationStopsInstall(t *testing.T) {
	t.Parallel()
	n := newNode(t, "e2e-fail")
	env := baseCustomerEnv(n.domain)
	env["STANDIN_FAIL_WORKSPACE_DB"] = "exit" // the stand-in migration exits 3
	n.writeCustomerEnv(env)
	_, errOut, code := n.run(n.installArgs()...)
	if code != 1 {
		t.Fatalf("install with a failing migration: exit %d, want 1\n%s", code, errOut)
	}
	for _, want := range []string{"service workspace-migrations exited with code 3", "workspace-migrations | ", "told to fail"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("error output lacks %q:\n%s", want, errOut)
		}
	}
	c := n.containers()
	for _, s := range []string{"workspace-api", "maps-api", "router-http"} {
		if c[s] != "" {
			t.Errorf("%s was created although the migrations failed", s)
		}
	}
	if c["workspace-postgres"] == "" {
		t.Error("workspace-postgres, which the migrations need, was not started")
	}
}
