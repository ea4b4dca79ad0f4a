// Command demo is `make demo`: it builds the test bed (stand-in images, a
// registry with `_json_key` auth holding the release), writes a customer
// package, and runs the real installer against the local Docker engine,
// ending with the URL, a request through the router and `status`.
// `-down` removes the demo stack and its data.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/e2e/testbed"
)

func main() {
	down := flag.Bool("down", false, "remove the demo stack, its data and settings")
	dir := flag.String("dir", ".cache/demo", "where the demo keeps its config, state and registry")
	bin := flag.String("bin", "bin/carto-appliance", "the carto-appliance binary")
	httpsPort := flag.String("https-port", envOr("DEMO_HTTPS_PORT", "443"), "host port for HTTPS")
	httpPort := flag.String("http-port", envOr("DEMO_HTTP_PORT", "80"), "host port for HTTP")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *dir, *bin, *httpPort, *httpsPort, *down); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, dir, bin, httpPort, httpsPort string, down bool) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	dirs := []string{"--config-dir", filepath.Join(dir, "opt-carto"), "--state-dir", filepath.Join(dir, "state")}
	if down {
		return appliance(ctx, bin, append([]string{"uninstall", "--purge", "--yes"}, dirs...)...)
	}
	say("Preparing the test bed and publishing the release to a local registry (auth: _json_key + key.json; first run: ~2 min to build the images)")
	bed, err := testbed.Start(ctx, dir, testbed.Options{Logf: func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer bed.Close()
	reg := bed.Registry
	pkg := filepath.Join(dir, "customer-package")
	if err := os.MkdirAll(pkg, 0o700); err != nil {
		return err
	}
	customer := filepath.Join(pkg, "customer.env")
	if err := os.WriteFile(customer, []byte(demoCustomerEnv), 0o600); err != nil {
		return err
	}

	say("Installing: carto-appliance install --no-service --customer-env %s --key %s --registry %s", customer, reg.KeyJSONPath, reg.Host)
	args := append([]string{"install", "--no-service", "--customer-env", customer, "--key", reg.KeyJSONPath,
		"--registry", reg.Host, "--domain", "localhost", "--http-port", httpPort, "--https-port", httpsPort}, dirs...)
	if err := appliance(ctx, bin, args...); err != nil {
		return err
	}

	url := "https://localhost/"
	if httpsPort != "443" {
		url = "https://localhost:" + httpsPort + "/"
	}
	say("Checking a request through the router: GET %sworkspace-api/whoami", url)
	body, err := get(ctx, url+"workspace-api/whoami")
	if err != nil {
		return err
	}
	fmt.Printf("  %s\n", strings.TrimSpace(body))
	say("carto-appliance status")
	if err := appliance(ctx, bin, append([]string{"status"}, dirs...)...); err != nil {
		return err
	}
	say("CARTO (stand-in stack) is up at %s", url)
	fmt.Printf("  the router's certificate is self-signed: curl -k %sworkspace-api/whoami\n", url)
	fmt.Printf("  settings and generated files: %s/opt-carto; remove everything with: make demo-down\n", dir)
	return nil
}

func appliance(ctx context.Context, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("carto-appliance %s: %w", args[0], err)
	}
	return nil
}

// get fetches url, skipping verification: the demo router's certificate is
// the one it generates for itself (ROUTER_SSL_AUTOGENERATE).
func get(ctx context.Context, url string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

func say(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

const demoCustomerEnv = `# Demo customer package (a real one comes from CARTO).
SELFHOSTED_TENANT_ID=onp-demo
SELFHOSTED_DOMAIN=localhost
SELFHOSTED_GCP_PROJECT_ID=carto-onp-demo
CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION=2025.10.7
CARTO_AUTH0_CLIENT_ID=demo-client
CARTO_AUTH0_CUSTOM_DOMAIN=auth.carto.com
LOCAL_POSTGRES_SCALE=1
LOCAL_REDIS_SCALE=1
POSTGRES_ADMIN_PASSWORD='demo admin #1'
WORKSPACE_POSTGRES_PASSWORD=demo-workspace
`
