// Command demo is `make demo`: what an operator's first install looks like,
// on a sandbox "fresh VM" (systemd and its own Docker engine). It builds
// the test bed (stand-in images in a registry with `_json_key` auth), a
// release served over HTTPS like any static site, starts the VM, runs the
// curl installer in it, and ends with the URL answering over HTTPS and
// `carto-appliance status`. The admin console is on too, with a random
// password kept in a 0600 file beside the demo's other files (never
// printed), and listening on the VM's address so that a browser on this
// machine reaches it (an install's default is the VM's loopback only).
// The VM keeps running after the demo ends; `-down` removes it.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/e2e/vm"
)

func main() {
	down := flag.Bool("down", false, "remove the demo VM and its files")
	dir := flag.String("dir", ".cache/demo", "where the demo keeps its registry, release and customer package")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *dir, *down); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string, down bool) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	cli, err := testbed.DockerClient(ctx)
	if err != nil {
		return err
	}
	// The demo's VM is kept (`make check` leaves it alone): an earlier
	// demo's is replaced. What cannot be removed (a network another
	// container still uses) is left.
	if err := vm.RemoveKept(ctx, cli); err != nil {
		fmt.Fprintln(os.Stderr, "demo: warning:", err)
	}
	if down {
		say("Removed the demo VM")
		return os.RemoveAll(dir)
	}
	repo, err := os.Getwd()
	if err != nil {
		return err
	}

	say("Preparing the test bed: stand-in images in a local registry (auth: _json_key + key.json; first run: a few minutes to build the images)")
	bed, err := testbed.Start(ctx, dir, testbed.Options{Logf: func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer bed.Close()
	reg := bed.Registry

	say("Starting a fresh VM (Debian 12, systemd, its own Docker engine)")
	netw, err := vm.KeptNetwork(ctx, cli, "demo")
	if err != nil {
		return err
	}
	node, err := vm.Start(ctx, cli, vm.Options{Name: "carto-demo", Network: netw.Name, Keep: true})
	if err != nil {
		return err
	}
	fmt.Printf("  %s at %s, booted in %s\n", node.Container, node.IP(), node.Boot().Took.Round(100*time.Millisecond))

	say("Publishing the release (install.sh, binary, SHA256SUMS, deb/rpm) on https://%s", netw.Gateway)
	release, err := testbed.StartReleaseServer(ctx, repo, netw.Gateway, filepath.Join(dir, "release"), "demo")
	if err != nil {
		return err
	}
	defer release.Close()

	// What the operator's machine already has: trust in the company's CA
	// (here the release server's and the registry's), and a customer
	// package from CARTO.
	_, regPort, _ := strings.Cut(reg.Host, ":")
	port, _ := strconv.Atoi(regPort)
	if err := node.ForwardHostPort(ctx, port); err != nil {
		return err
	}
	regCA, err := os.ReadFile(reg.CACertPath)
	if err != nil {
		return err
	}
	domain := node.IP()
	lic, err := testbed.TestLicense("onp-demo", nil)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"/usr/local/share/ca-certificates/demo-release-ca.crt", release.CAPEM, 0o644},
		{"/etc/docker/certs.d/" + reg.Host + "/ca.crt", regCA, 0o644},
		{"/root/package/customer.env", []byte(strings.ReplaceAll(demoCustomerEnv, "@DOMAIN@", domain)), 0o600},
		{"/root/package/license.json", lic, 0o600},
	} {
		if err := node.WriteFile(ctx, f.path, f.data, f.mode); err != nil {
			return err
		}
	}
	if err := node.CopyFile(ctx, reg.KeyJSONPath, "/root/package/key.json", 0o600); err != nil {
		return err
	}
	consolePass, err := demoConsolePassword(ctx, node, dir)
	if err != nil {
		return err
	}
	if _, errOut, code, err := node.Exec(ctx, "update-ca-certificates"); err != nil || code != 0 {
		return fmt.Errorf("update-ca-certificates in the VM: %v %s", err, errOut)
	}

	install := fmt.Sprintf("curl -fsSL %s/install.sh | sh -s -- --yes --customer-env /root/package/customer.env --key /root/package/key.json --registry %s --console-password-file %s", release.URL, reg.Host, vmConsolePassword)
	say("In the VM, as root: %s", install)
	if err := vmRun(ctx, node, "sh", "-c", install); err != nil {
		return err
	}

	url := "https://" + domain + "/"
	say("Checking a request through the router from this machine: GET %sworkspace-api/whoami", url)
	body, err := get(ctx, url+"workspace-api/whoami")
	if err != nil {
		return err
	}
	fmt.Printf("  %s\n", strings.TrimSpace(body))
	console := "https://" + net.JoinHostPort(domain, strconv.Itoa(config.DefaultConsolePort)) + "/"
	say("Opening the admin console to this machine: carto-appliance config set console.bind_address=%s", domain)
	if err := vmRun(ctx, node, "carto-appliance", "config", "set", "console.bind_address="+domain); err != nil {
		return err
	}
	if err := answers(ctx, console+"login", time.Minute); err != nil {
		return err
	}
	say("carto-appliance status (in the VM)")
	if err := vmRun(ctx, node, "carto-appliance", "status"); err != nil {
		return err
	}
	say("CARTO (stand-in stack) is up at %s", url)
	fmt.Printf("  the router's certificate is self-signed: curl -k %sworkspace-api/whoami\n", url)
	fmt.Printf("  the admin console: %s (the password is in %s)\n", console, consolePass)
	fmt.Printf("  a shell in the VM: docker exec -it %s bash; remove it with: make demo-down\n", node.Container)
	return nil
}

// vmRun runs a command in the VM with its output on ours.
func vmRun(ctx context.Context, node *vm.VM, cmd ...string) error {
	args := append([]string{"exec", node.Container}, cmd...)
	c := exec.CommandContext(ctx, "docker", args...)
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s in the VM: %w", strings.Join(cmd, " "), err)
	}
	return nil
}

// vmConsolePassword is where the demo puts the console's password in the VM.
const vmConsolePassword = "/root/package/console-password"

// demoConsolePassword makes the console's password, writes it into the VM
// for the installer and beside the demo's files for the operator, and
// says where the latter is. A new demo makes a new one.
func demoConsolePassword(ctx context.Context, node *vm.VM, dir string) (string, error) {
	b := make([]byte, 18)
	rand.Read(b)
	pw := base64.RawURLEncoding.EncodeToString(b) + "\n"
	file := filepath.Join(dir, "console-password")
	if err := os.WriteFile(file, []byte(pw), 0o600); err != nil {
		return "", fmt.Errorf("keeping the console's password: %w", err)
	}
	if err := node.WriteFile(ctx, vmConsolePassword, []byte(pw), 0o600); err != nil {
		return "", err
	}
	return file, nil
}

// answers waits, up to within, for url to answer 200.
func answers(ctx context.Context, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		_, err := get(ctx, url)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w (waited %s)", err, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
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

// The domain is the VM's address: it resolves without a DNS record, which
// preflight checks.
const demoCustomerEnv = `# Demo customer package (a real one comes from CARTO).
SELFHOSTED_TENANT_ID=onp-demo
SELFHOSTED_DOMAIN=@DOMAIN@
SELFHOSTED_GCP_PROJECT_ID=carto-onp-demo
CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION=2025.10.7
CARTO_AUTH0_CLIENT_ID=demo-client
CARTO_AUTH0_CUSTOM_DOMAIN=auth.carto.com
LOCAL_POSTGRES_SCALE=1
LOCAL_REDIS_SCALE=1
POSTGRES_ADMIN_PASSWORD='demo admin #1'
WORKSPACE_POSTGRES_PASSWORD=demo-workspace
`
