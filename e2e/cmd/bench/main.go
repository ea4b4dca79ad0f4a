// Command bench is `make bench`: it measures, in one run and on the same
// images and compose file, the appliance against the legacy flow (Debian's
// docker-compose 1.29, which CARTO's old installer required):
//
//   - cold start: from no containers and no local copy of the release's
//     images to every service healthy (one-shots completed);
//   - no-op re-apply: converging a stack that is already up.
//
// It prints the figures and their ratios; it passes or fails nothing, since
// these machines are shared and noisy.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/e2e/testbed"
)

func main() {
	dir := flag.String("dir", ".cache/bench", "working directory")
	bin := flag.String("bin", "bin/carto-appliance", "the carto-appliance binary")
	runs := flag.Int("runs", 1, "measurements per figure (the median is printed)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := run(ctx, *dir, *bin, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	bed              *testbed.Bed
	bin, dir         string
	customer, appDir string
}

func run(ctx context.Context, dir, bin string, runs int) error {
	dir, _ = filepath.Abs(dir)
	bin, _ = filepath.Abs(bin)
	os.RemoveAll(dir)
	bed, err := testbed.Start(ctx, dir, testbed.Options{})
	if err != nil {
		return err
	}
	defer bed.Close()
	b := &bench{bed: bed, bin: bin, dir: dir, customer: filepath.Join(dir, "customer.env"), appDir: filepath.Join(dir, "appliance")}
	if err := os.WriteFile(b.customer, []byte(customerEnv), 0o600); err != nil {
		return err
	}
	if err := testbed.WriteTestLicense(filepath.Join(dir, "license.json"), "onp-bench"); err != nil {
		return err
	}
	defer b.appliance(context.Background(), "uninstall", "--purge", "--yes")
	defer b.legacy(context.Background(), "down", "-v")

	var appCold, legacyCold, appNoop, legacyNoop []time.Duration
	for i := 0; i < runs; i++ {
		// Appliance: cold install, then a no-op apply.
		b.appliance(ctx, "uninstall", "--purge", "--yes")
		if err := b.removeReleaseImages(ctx); err != nil {
			return err
		}
		d, err := timed(func() error { return b.appliance(ctx, b.installArgs()...) })
		if err != nil {
			return err
		}
		appCold = append(appCold, d)
		if d, err = timed(func() error { return b.appliance(ctx, "config", "apply") }); err != nil {
			return err
		}
		appNoop = append(appNoop, d)
		// The legacy flow on the same compose file and .env, its own
		// project and ports: `docker-compose up -d`, then wait as an
		// operator would until every service is healthy.
		if err := b.prepareLegacy(); err != nil {
			return err
		}
		b.appliance(ctx, "uninstall")
		if err := b.removeReleaseImages(ctx); err != nil {
			return err
		}
		if d, err = timed(func() error {
			if err := b.legacy(ctx, "up", "-d"); err != nil {
				return err
			}
			return waitHealthy(ctx, bed.Docker, "legacy")
		}); err != nil {
			return err
		}
		legacyCold = append(legacyCold, d)
		if d, err = timed(func() error { return b.legacy(ctx, "up", "-d") }); err != nil {
			return err
		}
		legacyNoop = append(legacyNoop, d)
		b.legacy(ctx, "down", "-v")
	}
	fmt.Printf("\n%-34s %12s %12s %8s\n", "figure (median of "+fmt.Sprint(runs)+")", "appliance", "legacy", "ratio")
	row := func(name string, a, l []time.Duration) {
		ma, ml := median(a), median(l)
		fmt.Printf("%-34s %12s %12s %7.2fx\n", name, ma.Round(time.Millisecond), ml.Round(time.Millisecond), float64(ma)/float64(ml))
	}
	row("cold start to all healthy", appCold, legacyCold)
	row("no-op re-apply", appNoop, legacyNoop)
	fmt.Println("(ratio < 1: the appliance is faster; legacy = docker-compose 1.29 up -d, then waiting for health)")
	return nil
}

func (b *bench) installArgs() []string {
	return []string{"install", "--no-service", "--customer-env", b.customer, "--key", b.bed.Registry.KeyJSONPath,
		"--registry", b.bed.Registry.Host, "--project", "bench", "--http-port", "18080", "--https-port", "18443",
		"--bind-address", "127.0.0.1", "--ignore-preflight", "dns"}
}

func (b *bench) appliance(ctx context.Context, args ...string) error {
	args = append(args, "--config-dir", b.appDir, "--state-dir", filepath.Join(b.dir, "state"))
	out, err := exec.CommandContext(ctx, b.bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("carto-appliance %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// prepareLegacy copies the appliance's generated compose file, .env and
// certs into a directory of its own, with other router ports, and logs
// docker-compose into the registry as the legacy instructions did.
func (b *bench) prepareLegacy() error {
	dst := filepath.Join(b.dir, "legacy")
	if err := os.MkdirAll(filepath.Join(dst, "certs"), 0o700); err != nil {
		return err
	}
	compose, err := os.ReadFile(filepath.Join(b.appDir, "docker-compose.yml"))
	if err != nil {
		return err
	}
	env, err := os.ReadFile(filepath.Join(b.appDir, ".env"))
	if err != nil {
		return err
	}
	env = []byte(strings.NewReplacer(`ROUTER_HTTP_PORT="18080"`, `ROUTER_HTTP_PORT="19080"`, `ROUTER_HTTPS_PORT="18443"`, `ROUTER_HTTPS_PORT="19443"`).Replace(string(env)))
	files := map[string][]byte{"docker-compose.yml": compose, ".env": env}
	// The same certs/ mounts as the appliance's (certs/router, certs/app,
	// certs/ca): key.json and the router's certificate, which the
	// appliance provides.
	mounts, err := filepath.Glob(filepath.Join(b.appDir, "certs", "*", "*"))
	if err != nil {
		return err
	}
	for _, path := range mounts {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(b.appDir, path)
		files[rel] = data
	}
	key, err := os.ReadFile(filepath.Join(b.appDir, "certs", "key.json"))
	if err != nil {
		return err
	}
	for name, data := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, name)), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o600); err != nil {
			return err
		}
	}
	login := exec.Command("docker", "--config", filepath.Join(b.dir, "docker-config"), "login", "-u", "_json_key", "--password-stdin", b.bed.Registry.Host)
	login.Stdin = strings.NewReader(string(key))
	if out, err := login.CombinedOutput(); err != nil {
		return fmt.Errorf("docker login: %v\n%s", err, out)
	}
	return nil
}

func (b *bench) legacy(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "docker-compose", append([]string{"-p", "legacy"}, args...)...)
	cmd.Dir = filepath.Join(b.dir, "legacy")
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(b.dir, "docker-config"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// removeReleaseImages deletes the local copies of the release's images so
// that both flows pull them.
func (b *bench) removeReleaseImages(ctx context.Context) error {
	return b.bed.Registry.RemoveLocalTags(ctx, b.bed.Docker)
}

// waitHealthy polls until every container of the project is healthy, or
// exited 0 when it has no healthcheck (the one-shot migrations).
func waitHealthy(ctx context.Context, cli *client.Client, project string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	for {
		list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", "com.docker.compose.project="+project)})
		if err != nil {
			return err
		}
		ready := len(list.Items) > 0
		for _, c := range list.Items {
			ok := strings.Contains(c.Status, "(healthy)") || strings.HasPrefix(c.Status, "Exited (0)")
			ready = ready && ok
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("legacy stack not healthy: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func timed(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

const customerEnv = `SELFHOSTED_TENANT_ID=onp-bench
SELFHOSTED_DOMAIN=bench.carto.test
SELFHOSTED_GCP_PROJECT_ID=carto-onp-bench
CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION=2025.10.7
POSTGRES_ADMIN_PASSWORD=bench-admin
WORKSPACE_POSTGRES_PASSWORD=bench-workspace
`
