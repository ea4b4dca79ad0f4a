// Command bench is `make bench`: it measures, in one run and on the same
// images and compose file, the appliance against the legacy flow (Debian's
// docker-compose 1.29, which CARTO's old installer required):
//
//   - cold start: from no containers and no local copy of the release's
//     images to every service healthy (one-shots completed);
//   - no-op re-apply: converging a stack that is already up;
//   - upgrade: `carto-appliance upgrade` to the test channel's next release
//     (verified images, backup with a database dump, converge, verify)
//     against the legacy flow's `docker-compose up -d` of the new files
//     (no backup), both until every service is healthy;
//   - rollback: `carto-appliance rollback --restore-database` (settings,
//     release and the database from the dump) against `docker-compose up
//     -d` of the previous files (which cannot put the database back);
//   - failed requests under a steady load during an upgrade and a .env
//     change, against compose v2 making the same change (rolling.go);
//   - the air-gap bundle: its size against the images', and loading it in
//     a fresh VM (`carto-appliance bundle load`) against `docker load`.
//
// It prints the figures and their ratios; it passes or fails nothing, since
// these machines are shared and noisy.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"net/netip"
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
	only := flag.String("only", "", `one section alone: "load" (failed requests during changes) or "cold" (cold start and no-op apply)`)
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	if err := run(ctx, *dir, *bin, *runs, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	bed              *testbed.Bed
	bin, dir         string
	customer, appDir string
	caFile           string // trusted by the appliance: the channel's CA

	// The release the upgrade goes to, as the appliance rendered it.
	nextCompose, nextEnv []byte
}

// applianceUpgrade installs the embedded release, then times an upgrade
// to the channel's next release and a rollback with the database.
func (b *bench) applianceUpgrade(ctx context.Context) (up, back time.Duration, err error) {
	srv, err := testbed.ServeChannel(netip.MustParseAddr("127.0.0.1"), b.bed.ChannelDir)
	if err != nil {
		return 0, 0, err
	}
	defer srv.Close()
	b.caFile = filepath.Join(b.dir, "channel-ca.pem")
	if err := os.WriteFile(b.caFile, srv.CAPEM, 0o600); err != nil {
		return 0, 0, err
	}
	b.appliance(ctx, "uninstall", "--purge", "--yes")
	if err := b.appliance(ctx, b.installArgs()...); err != nil {
		return 0, 0, err
	}
	cfgPath := filepath.Join(b.appDir, "appliance.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return 0, 0, err
	}
	if err := os.WriteFile(cfgPath, append(cfg, []byte("upgrade:\n  channel_url: "+srv.URL+"\n")...), 0o600); err != nil {
		return 0, 0, err
	}
	if up, err = timed(func() error { return b.appliance(ctx, "upgrade", "--yes", "--to", testbed.NextVersion) }); err != nil {
		return 0, 0, err
	}
	if b.nextCompose, err = os.ReadFile(filepath.Join(b.appDir, "docker-compose.yml")); err != nil {
		return 0, 0, err
	}
	if b.nextEnv, err = os.ReadFile(filepath.Join(b.appDir, ".env")); err != nil {
		return 0, 0, err
	}
	if back, err = timed(func() error { return b.appliance(ctx, "rollback", "--yes", "--restore-database") }); err != nil {
		return 0, 0, err
	}
	return up, back, nil
}

// legacyUpgrade brings the legacy flow up on the previous release (the
// appliance's files after its rollback), then times `docker-compose up -d`
// of the next release's files and of the previous ones again.
func (b *bench) legacyUpgrade(ctx context.Context) (up, back time.Duration, err error) {
	if err := b.prepareLegacy(); err != nil {
		return 0, 0, err
	}
	b.appliance(ctx, "uninstall")
	defer b.legacy(context.Background(), "down", "-v")
	if err := b.legacy(ctx, "up", "-d"); err != nil {
		return 0, 0, err
	}
	if err := waitHealthy(ctx, b.bed.Docker, "legacy"); err != nil {
		return 0, 0, err
	}
	prevCompose, prevEnv, err := b.legacyFiles()
	if err != nil {
		return 0, 0, err
	}
	upTo := func(compose, env []byte) (time.Duration, error) {
		if err := b.writeLegacyFiles(compose, env); err != nil {
			return 0, err
		}
		return timed(func() error {
			if err := b.legacy(ctx, "up", "-d", "--remove-orphans"); err != nil {
				return err
			}
			return waitHealthy(ctx, b.bed.Docker, "legacy")
		})
	}
	if up, err = upTo(b.nextCompose, b.nextEnv); err != nil {
		return 0, 0, err
	}
	if back, err = upTo(prevCompose, prevEnv); err != nil {
		return 0, 0, err
	}
	return up, back, nil
}

func run(ctx context.Context, dir, bin string, runs int, only string) error {
	dir, _ = filepath.Abs(dir)
	bin, _ = filepath.Abs(bin)
	os.RemoveAll(dir)
	bed, err := testbed.Start(ctx, dir, testbed.Options{Channel: true})
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
	defer b.v2(context.Background(), "down", "-v")
	if only == "load" {
		rows, err := b.rollingBench(ctx)
		if err != nil {
			return fmt.Errorf("failed requests under load: %w", err)
		}
		printLoadRows(rows)
		return nil
	}

	var appCold, legacyCold, v2Cold, appNoop, legacyNoop, v2Noop []time.Duration
	var appPhases, legacyPhases, v2Phases phases
	for i := 0; i < runs; i++ {
		// Appliance: cold install, then a no-op apply.
		b.appliance(ctx, "uninstall", "--purge", "--yes")
		if err := b.removeReleaseImages(ctx); err != nil {
			return err
		}
		watched := watchPhases(ctx, bed.Docker, "bench")
		d, err := timed(func() error { return b.appliance(ctx, b.installArgs()...) })
		if err != nil {
			return err
		}
		appCold = append(appCold, d)
		if appPhases, err = watched(); err != nil {
			return err
		}
		if d, err = timed(func() error { return b.appliance(ctx, "config", "apply") }); err != nil {
			return err
		}
		appNoop = append(appNoop, d)
		// The legacy flow and compose v2 on the same compose file and
		// .env, their own projects and ports: `docker-compose up -d`, then
		// wait as an operator would until every service is healthy;
		// `docker compose up -d --wait`, which waits itself.
		if err := b.prepareLegacy(); err != nil {
			return err
		}
		b.appliance(ctx, "uninstall")
		for _, flow := range []struct {
			project    string
			up         func() error
			cold, noop *[]time.Duration
			coldPhases *phases
		}{
			{"legacy", func() error {
				if err := b.legacy(ctx, "up", "-d"); err != nil {
					return err
				}
				return waitHealthy(ctx, bed.Docker, "legacy")
			}, &legacyCold, &legacyNoop, &legacyPhases},
			{"v2", func() error { return b.v2(ctx, "up", "-d", "--wait") }, &v2Cold, &v2Noop, &v2Phases},
		} {
			if err := b.removeReleaseImages(ctx); err != nil {
				return err
			}
			watched := watchPhases(ctx, bed.Docker, flow.project)
			if d, err = timed(flow.up); err != nil {
				return err
			}
			*flow.cold = append(*flow.cold, d)
			if *flow.coldPhases, err = watched(); err != nil {
				return err
			}
			if d, err = timed(flow.up); err != nil {
				return err
			}
			*flow.noop = append(*flow.noop, d)
			if flow.project == "legacy" {
				b.legacy(ctx, "down", "-v")
			} else {
				b.v2(ctx, "down", "-v")
			}
		}
	}
	fmt.Printf("\n%-34s %12s %12s %12s %8s %8s\n", "figure (median of "+fmt.Sprint(runs)+")", "appliance", "compose 1.29", "compose v2", "vs 1.29", "vs v2")
	row := func(name string, a, l, v []time.Duration) {
		ma, ml := median(a), median(l)
		v2, vs := "", ""
		if len(v) > 0 {
			mv := median(v)
			v2, vs = mv.Round(time.Millisecond).String(), fmt.Sprintf("%7.2fx", float64(ma)/float64(mv))
		}
		fmt.Printf("%-34s %12s %12s %12s %7.2fx %8s\n", name, ma.Round(time.Millisecond), ml.Round(time.Millisecond), v2, float64(ma)/float64(ml), vs)
	}
	coldRows := func() {
		row("cold start to all healthy", appCold, legacyCold, v2Cold)
		row("no-op re-apply", appNoop, legacyNoop, v2Noop)
	}
	printPhases := func() {
		fmt.Println("where a cold start's time goes (s from the start, by the engine's events; the last run):")
		fmt.Println("                                   last pull / last create / last start / last healthy")
		for _, f := range []struct {
			name string
			p    phases
		}{{"appliance", appPhases}, {"compose 1.29", legacyPhases}, {"compose v2", v2Phases}} {
			fmt.Printf("  %-32s %s\n", f.name, f.p)
		}
	}
	if only == "cold" {
		coldRows()
		printPhases()
		return nil
	}
	appUp, appBack, err := b.applianceUpgrade(ctx)
	if err != nil {
		return err
	}
	legacyUp, legacyBack, err := b.legacyUpgrade(ctx)
	if err != nil {
		return err
	}
	coldRows()
	row("upgrade to all healthy", []time.Duration{appUp}, []time.Duration{legacyUp}, nil)
	row("rollback to all healthy", []time.Duration{appBack}, []time.Duration{legacyBack}, nil)
	printPhases()
	fmt.Println("(ratio < 1: the appliance is faster; compose 1.29 = docker-compose up -d, then waiting for health;")
	fmt.Println(" compose v2 = docker compose up -d --wait; the appliance's upgrade also verifies images and dumps")
	fmt.Println(" the database, its rollback restores it; once each)")

	rows, err := b.rollingBench(ctx)
	if err != nil {
		return fmt.Errorf("failed requests under load: %w", err)
	}
	printLoadRows(rows)

	bf, err := b.bundleBench(ctx)
	if err != nil {
		return fmt.Errorf("air-gap bundle: %w", err)
	}
	fmt.Printf("\n%-34s %12s %12s %8s\n", "air-gap bundle (once)", "appliance", "docker load", "ratio")
	fmt.Printf("%-34s %12s %12s %7.2fx\n", "load into a fresh engine", bf.appLoad.Round(time.Millisecond), bf.dockerLoad.Round(time.Millisecond), float64(bf.appLoad)/float64(bf.dockerLoad))
	mib := func(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }
	fmt.Printf("%-34s %12s %12s %7.2fx\n", "bundle size, plain", mib(bf.plain), mib(bf.images), float64(bf.plain)/float64(bf.images))
	fmt.Printf("%-34s %12s %12s %7.2fx\n", "bundle size, gzip", mib(bf.gzipped), mib(bf.images), float64(bf.gzipped)/float64(bf.images))
	fmt.Println("(the appliance's load reads the whole bundle against its signed index first, then loads each image;")
	fmt.Println(" docker load = the same images saved in one file, loaded with no check; sizes against the images' own)")
	return nil
}

func (b *bench) installArgs() []string {
	return []string{"install", "--no-service", "--customer-env", b.customer, "--key", b.bed.Registry.KeyJSONPath,
		"--registry", b.bed.Registry.Host, "--project", "bench", "--http-port", "18080", "--https-port", "18443",
		"--bind-address", "127.0.0.1", "--ignore-preflight", "dns"}
}

func (b *bench) appliance(ctx context.Context, args ...string) error {
	args = append(args, "--config-dir", b.appDir, "--state-dir", filepath.Join(b.dir, "state"))
	cmd := exec.CommandContext(ctx, b.bin, args...)
	if b.caFile != "" {
		// The test channel's certificate is from the run's own CA.
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+b.caFile)
	}
	out, err := cmd.CombinedOutput()
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
	files := map[string][]byte{"docker-compose.yml": compose, ".env": legacyPorts(env)}
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

// legacyPorts moves the router to the legacy flow's own ports.
func legacyPorts(env []byte) []byte {
	return []byte(strings.NewReplacer(`ROUTER_HTTP_PORT="18080"`, `ROUTER_HTTP_PORT="19080"`, `ROUTER_HTTPS_PORT="18443"`, `ROUTER_HTTPS_PORT="19443"`).Replace(string(env)))
}

// legacyFiles are the legacy flow's compose file and .env as they are.
func (b *bench) legacyFiles() (compose, env []byte, err error) {
	dst := filepath.Join(b.dir, "legacy")
	if compose, err = os.ReadFile(filepath.Join(dst, "docker-compose.yml")); err != nil {
		return nil, nil, err
	}
	env, err = os.ReadFile(filepath.Join(dst, ".env"))
	return compose, env, err
}

// writeLegacyFiles replaces the legacy flow's compose file and .env, as an
// operator of the legacy flow upgrades (the router on its own ports).
func (b *bench) writeLegacyFiles(compose, env []byte) error {
	dst := filepath.Join(b.dir, "legacy")
	if err := os.WriteFile(filepath.Join(dst, "docker-compose.yml"), compose, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dst, ".env"), legacyPorts(env), 0o600)
}

// v2 runs compose v2 on the legacy flow's files, as project v2. The
// docker CLI finds its plugins in DOCKER_CONFIG, the bench's own (logged
// in to the registry): the plugin scripts/compose-v2.sh installed is linked
// there.
func (b *bench) v2(ctx context.Context, args ...string) error {
	plugins := filepath.Join(b.dir, "docker-config", "cli-plugins")
	if _, err := os.Stat(filepath.Join(plugins, "docker-compose")); err != nil {
		home, _ := os.UserHomeDir()
		src := filepath.Join(cmp.Or(os.Getenv("DOCKER_CONFIG"), filepath.Join(home, ".docker")), "cli-plugins", "docker-compose")
		if err := os.MkdirAll(plugins, 0o700); err != nil {
			return err
		}
		if err := os.Symlink(src, filepath.Join(plugins, "docker-compose")); err != nil {
			return fmt.Errorf("linking compose v2 (%s) for the bench's docker config: %w", src, err)
		}
	}
	cmd := exec.CommandContext(ctx, "docker", append([]string{"compose", "-p", "v2"}, args...)...)
	cmd.Dir = filepath.Join(b.dir, "legacy")
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(b.dir, "docker-config"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
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
