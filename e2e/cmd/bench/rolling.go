package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/e2e/loadgen"
	"github.com/cartodb/carto-appliance/e2e/testbed"
)

// Failed requests while the stack changes under a steady load (SPEC §15's
// first target, issue 14): 100 requests a second over the router's paths to
// every service, half over kept-alive connections and half over new ones,
// during
//
//   - an upgrade that changes every image, the router's included: the
//     appliance's `upgrade` against compose v2's `up -d` of the next
//     release's files;
//   - a .env change that recreates every CARTO service: the appliance's
//     `config apply` after a customer.env change against compose v2's `up
//     -d` after the same change to .env.
//
// Both run on the same stack, installed by the appliance (compose v2 reads
// its files, as `docker compose -p bench` would on an appliance host).

// loadRate is the load's requests per second.
const loadRate = 100

type loadRow struct {
	name               string
	appliance, compose loadgen.Result
}

// underLoad runs fn with the load on, from two seconds before it to two
// seconds after it.
func (b *bench) underLoad(ctx context.Context, addr netip.Addr, fn func() error) (loadgen.Result, error) {
	load := testbed.RouterLoad(ctx, fmt.Sprintf("https://%s:18443", addr), "bench.carto.test", nil, loadRate)
	time.Sleep(2 * time.Second)
	err := fn()
	time.Sleep(2 * time.Second)
	return load.Stop(), err
}

// rollingBench measures both rows; the channel serves the next release.
func (b *bench) rollingBench(ctx context.Context) ([]loadRow, error) {
	addr, err := testbed.EnsureLoadAddress(ctx)
	if err != nil {
		return nil, err
	}
	srv, err := testbed.ServeChannel(netip.MustParseAddr("127.0.0.1"), b.bed.ChannelDir)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	b.caFile = filepath.Join(b.dir, "channel-ca.pem")
	if err := os.WriteFile(b.caFile, srv.CAPEM, 0o600); err != nil {
		return nil, err
	}
	install := func() error {
		b.appliance(ctx, "uninstall", "--purge", "--yes")
		args := b.installArgs()
		for i := range args {
			if args[i] == "--bind-address" {
				args[i+1] = addr.String()
			}
		}
		if err := b.appliance(ctx, args...); err != nil {
			return err
		}
		cfgPath := filepath.Join(b.appDir, "appliance.yaml")
		cfg, err := os.ReadFile(cfgPath)
		if err != nil {
			return err
		}
		return os.WriteFile(cfgPath, append(cfg, []byte("upgrade:\n  channel_url: "+srv.URL+"\n")...), 0o600)
	}

	// The appliance: upgrade, then a customer.env change.
	if err := install(); err != nil {
		return nil, err
	}
	up := loadRow{name: "upgrade, every image changed"}
	change := loadRow{name: ".env change, 14 services"}
	if up.appliance, err = b.underLoad(ctx, addr, func() error {
		return b.appliance(ctx, "upgrade", "--yes", "--to", testbed.NextVersion)
	}); err != nil {
		return nil, err
	}
	nextCompose, err := os.ReadFile(filepath.Join(b.appDir, "docker-compose.yml"))
	if err != nil {
		return nil, err
	}
	nextEnv, err := os.ReadFile(filepath.Join(b.appDir, ".env"))
	if err != nil {
		return nil, err
	}
	customer := filepath.Join(b.appDir, "customer.env")
	if err := appendFile(customer, "CARTO_AUTH0_CLIENT_ID=bench-rolled-1\n"); err != nil {
		return nil, err
	}
	if change.appliance, err = b.underLoad(ctx, addr, func() error { return b.appliance(ctx, "config", "apply") }); err != nil {
		return nil, err
	}
	// compose v2, the same kind of change on the same stack.
	if change.compose, err = b.underLoad(ctx, addr, func() error {
		if err := replaceInFile(filepath.Join(b.appDir, ".env"), "bench-rolled-1", "bench-rolled-2"); err != nil {
			return err
		}
		return b.composeV2(ctx, "up", "-d", "--wait")
	}); err != nil {
		return nil, err
	}

	// compose v2's upgrade: the next release's files on a fresh install
	// of the previous one (images already pulled by the appliance's).
	if err := install(); err != nil {
		return nil, err
	}
	if up.compose, err = b.underLoad(ctx, addr, func() error {
		if err := os.WriteFile(filepath.Join(b.appDir, "docker-compose.yml"), nextCompose, 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(b.appDir, ".env"), nextEnv, 0o600); err != nil {
			return err
		}
		return b.composeV2(ctx, "up", "-d", "--wait", "--remove-orphans")
	}); err != nil {
		return nil, err
	}
	b.appliance(ctx, "uninstall", "--purge", "--yes")
	return []loadRow{up, change}, nil
}

func printLoadRows(rows []loadRow) {
	fmt.Printf("\n%-34s %18s %18s\n", fmt.Sprintf("failed requests at %d req/s", loadRate), "appliance", "compose v2")
	cell := func(r loadgen.Result) string { return fmt.Sprintf("%d/%d", r.Failed, r.Sent) }
	for _, r := range rows {
		fmt.Printf("%-34s %18s %18s\n", r.name, cell(r.appliance), cell(r.compose))
	}
	for _, r := range rows {
		fmt.Printf("  %s: appliance %s; compose v2 %s\n", r.name, r.appliance, r.compose)
	}
	fmt.Println("(8 router paths to every service, half kept-alive, half new connections; compose v2 = docker compose")
	fmt.Println(" -p bench up -d --wait on the appliance's own files after the same change; target for the appliance: 0)")
}

// composeV2 runs compose v2 on the appliance's files, as an operator
// would on the appliance host.
func (b *bench) composeV2(ctx context.Context, args ...string) error {
	full := append([]string{"compose", "-f", filepath.Join(b.appDir, "docker-compose.yml"), "-p", "bench"}, args...)
	cmd := exec.CommandContext(ctx, "docker", full...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return nil
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func replaceInFile(path, old, new string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), old) {
		return fmt.Errorf("%s: no %q to change", path, old)
	}
	return os.WriteFile(path, []byte(strings.ReplaceAll(string(b), old, new)), 0o600)
}
