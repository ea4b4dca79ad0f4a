//go:build integration

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/e2e/proxytest"
	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/e2e/vm"
	"github.com/cartodb/carto-appliance/installer"
)

// On a fresh VM (systemd and its own Docker engine) whose direct route to
// the registry is blocked, `install --proxy-url` gives the Docker engine
// the proxy (a docker.service drop-in, engine restarted after --yes), so
// the stack's images are pulled through the proxy and the stack ends
// healthy; the proxy's log shows the registry tunnel. A replaced proxy CA
// leaves the engine's trust dir (and the services') with the new CA alone.
func TestFreshVMPullsThroughProxy(t *testing.T) {
	t.Parallel()
	if err := proxytest.Available(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	netw, regHost, regCA := vmNetwork(t, "pxvm")
	regIP, _, _ := strings.Cut(regHost, ":")
	px, err := proxytest.StartTinyproxy(ctx, t.TempDir(), netw.Gateway.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Stop)
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})

	step(t, "the VM trusts the registry's CA but cannot reach it directly", func(t *testing.T) {
		trustRegistry(t, node, regHost, regCA)
		node.MustExec(t, "iptables", "-I", "OUTPUT", "-d", regIP, "-p", "tcp", "--dport", "5000", "-j", "REJECT")
		if _, _, code, _ := node.Exec(ctx, "curl", "-s", "--max-time", "5", "--cacert", "/etc/docker/certs.d/"+regHost+"/ca.crt", "https://"+regHost+"/v2/"); code == 0 {
			t.Fatal("the VM reaches the registry directly")
		}
		if out, _, code, _ := node.Exec(ctx, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "-x", px.URL(), "--cacert", "/etc/docker/certs.d/"+regHost+"/ca.crt", "https://"+regHost+"/v2/"); code != 0 || out != "401" {
			t.Fatalf("through the proxy the registry answers %q (curl exit %d), want 401", out, code)
		}
	})

	// Two corporate CAs: the install trusts the first, a proxy set
	// replaces it with the second.
	var cas [2]*proxytest.CA
	for i := range cas {
		if cas[i], err = proxytest.NewCA(fmt.Sprintf("corporate CA %d", i)); err != nil {
			t.Fatal(err)
		}
	}

	step(t, "install through the proxy ends healthy", func(t *testing.T) {
		stagePackage(t, node)
		write(t, node, "/root/package/proxy-ca-0.pem", cas[0].PEM, 0o644)
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "install", "--no-service", "--yes",
			"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json",
			"--registry", regHost, "--proxy-url", px.URL(), "--proxy-ca-cert", "/root/package/proxy-ca-0.pem")
		if err != nil || code != 0 {
			t.Fatalf("install in the VM: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		if !strings.Contains(errOut, "restarted the Docker engine with the new proxy settings") {
			t.Errorf("install did not say it restarted the engine:\n%s", errOut)
		}
		st := vmStatus(t, node)
		if !st.Healthy || len(st.Services) != 17 {
			t.Fatalf("status in the VM: healthy=%v, %d services", st.Healthy, len(st.Services))
		}
	})

	step(t, "the engine pulled through the proxy", func(t *testing.T) {
		dropIn := node.MustExec(t, "cat", "/etc/systemd/system/docker.service.d/carto-proxy.conf")
		if !strings.Contains(dropIn, `Environment="HTTPS_PROXY=`+px.URL()+`"`) {
			t.Errorf("drop-in:\n%s", dropIn)
		}
		if env := node.MustExec(t, "systemctl", "show", "docker", "-p", "Environment"); !strings.Contains(env, "HTTPS_PROXY="+px.URL()) {
			t.Errorf("docker.service runs without the proxy: %s", env)
		}
		log, err := px.AccessLog()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log, regHost) {
			t.Errorf("the proxy's log shows no tunnel to %s:\n%s", regHost, tail(log, 20))
		}
	})

	step(t, "the stack in the VM answers through its router", func(t *testing.T) {
		out := node.MustExec(t, "curl", "-sk", "--max-time", "10", "--resolve", "carto.vm.test:443:127.0.0.1", "https://carto.vm.test/workspace-api/whoami")
		if !strings.Contains(out, `"workspace-api"`) {
			t.Errorf("router in the VM answered %q", out)
		}
	})

	step(t, "after a proxy CA change the engine trusts the new CA alone", func(t *testing.T) {
		// The engine trusts every file of its SSL_CERT_DIR: the replaced CA
		// must not stay there as a .prev. The services' environment does
		// not change (nothing is recreated); without --yes the engine is
		// not restarted: the files are what this checks.
		write(t, node, "/root/package/proxy-ca-1.pem", cas[1].PEM, 0o644)
		ids := func() string { return node.MustExec(t, "docker", "ps", "-aq", "--no-trunc") }
		before := ids()
		node.MustExec(t, "carto-appliance", "proxy", "set", "--url", px.URL(), "--ca-cert", "/root/package/proxy-ca-1.pem")
		if after := ids(); after != before {
			t.Errorf("a CA change recreated containers:\n%s\n->\n%s", before, after)
		}
		current := cas[1].PEM
		if env := node.MustExec(t, "cat", "/etc/systemd/system/docker.service.d/carto-proxy.conf"); !strings.Contains(env, "SSL_CERT_DIR=/etc/ssl/certs:/etc/docker/carto-proxy-ca") {
			t.Errorf("drop-in without the CA dir:\n%s", env)
		}
		for _, dir := range []string{"/etc/docker/carto-proxy-ca", "/opt/carto/certs/app", "/opt/carto/certs/ca"} {
			names := strings.Fields(node.MustExec(t, "ls", "-A", dir))
			if !slices.Contains(names, "proxy-ca.pem") || slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, ".prev") || strings.HasPrefix(n, ".") }) {
				t.Errorf("%s holds %v: want proxy-ca.pem and no previous or stray file", dir, names)
			}
			if got := node.MustExec(t, "cat", dir+"/proxy-ca.pem"); got != string(current) {
				t.Errorf("%s/proxy-ca.pem is not the current CA", dir)
			}
		}
		if names := strings.Fields(node.MustExec(t, "ls", "-A", "/etc/docker/carto-proxy-ca")); len(names) != 1 {
			t.Errorf("the engine's trust dir holds %v, want proxy-ca.pem alone", names)
		}
	})
}

// vmNetwork is a test network for fresh VMs (their image built once) with
// the release in a registry mirror on it; it returns the mirror's
// host:port and CA.
func vmNetwork(t *testing.T, name string) (*vm.Net, string, []byte) {
	t.Helper()
	if _, err := vm.EnsureImage(t.Context(), docker); err != nil {
		t.Fatal(err)
	}
	netw := vm.NewNetwork(t, docker, name)
	regHost, regCA := startRegistryMirror(t, netw.Name)
	return netw, regHost, regCA
}

// trustRegistry makes the VM's engine trust the registry mirror's CA.
func trustRegistry(t *testing.T, node *vm.VM, regHost string, regCA []byte) {
	t.Helper()
	node.MustExec(t, "mkdir", "-p", "/etc/docker/certs.d/"+regHost)
	write(t, node, "/etc/docker/certs.d/"+regHost+"/ca.crt", regCA, 0o644)
}

// agentJournalOnFailure logs the end of the agent's journal in the VM if
// the test fails.
func agentJournalOnFailure(t *testing.T, node *vm.VM) {
	t.Cleanup(func() {
		if t.Failed() {
			out, _, _, _ := node.Exec(context.Background(), "journalctl", "-u", "carto-appliance", "--no-pager", "-n", "80")
			t.Logf("agent journal in the VM:\n%s", out)
		}
	})
}

// stagePackage puts the binary under test at /usr/local/bin/carto-appliance
// and the customer package into the VM (stageCustomerPackage).
func stagePackage(t *testing.T, node *vm.VM) {
	t.Helper()
	if err := node.CopyFile(context.Background(), bin, "/usr/local/bin/carto-appliance", 0o755); err != nil {
		t.Fatal(err)
	}
	stageCustomerPackage(t, node)
	// What the operator does for preflight's DNS check without a record yet.
	node.MustExec(t, "sh", "-c", "echo '127.0.0.1 carto.vm.test' >> /etc/hosts")
}

// stageCustomerPackage puts a customer package (customer.env for
// carto.vm.test, the registry's key.json) into the VM's /root/package/.
func stageCustomerPackage(t *testing.T, node *vm.VM) {
	t.Helper()
	node.MustExec(t, "mkdir", "-p", "/root/package")
	if err := node.CopyFile(context.Background(), reg.KeyJSONPath, "/root/package/key.json", 0o600); err != nil {
		t.Fatal(err)
	}
	var env strings.Builder
	for k, v := range baseCustomerEnv("carto.vm.test") {
		fmt.Fprintf(&env, "%s=%s\n", k, v)
	}
	write(t, node, "/root/package/customer.env", []byte(env.String()), 0o600)
	lic, err := testbed.TestLicense(baseCustomerEnv("carto.vm.test")["SELFHOSTED_TENANT_ID"], nil)
	if err != nil {
		t.Fatal(err)
	}
	write(t, node, "/root/package/license.json", lic, 0o600)
}

func vmStatus(t *testing.T, node *vm.VM) installer.Status {
	t.Helper()
	out := node.MustExec(t, "carto-appliance", "status", "--json")
	var st installer.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func write(t *testing.T, node *vm.VM, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := node.WriteFile(context.Background(), path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// startRegistryMirror serves the test registry's content (same storage,
// same htpasswd) from a container on the VMs' network on port 5000, with a
// certificate for its address from a CA of its own. It returns the
// registry's host:port and the CA.
func startRegistryMirror(t *testing.T, network string) (string, []byte) {
	t.Helper()
	conf := t.TempDir()
	htpasswd, err := os.ReadFile(filepath.Join(reg.Dir, "htpasswd"))
	if err != nil {
		t.Fatal(err)
	}
	config := `version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: /data}, maintenance: {uploadpurging: {enabled: false}}}
http: {addr: ":5000", secret: mirror, tls: {certificate: /conf/registry.crt, key: /conf/registry.key}}
auth: {htpasswd: {realm: carto-testbed, path: /conf/htpasswd}}
`
	for name, data := range map[string][]byte{"config.yml": []byte(config), "htpasswd": htpasswd} {
		if err := os.WriteFile(filepath.Join(conf, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The address comes from the network, so the certificate is made once
	// the container has one; the registry waits for it.
	name := fmt.Sprintf("carto-e2e-regmirror-%d", time.Now().UnixNano())
	// Registered first: a failed `docker run` can leave the container created.
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	out, err := exec.Command("docker", "run", "-d", "--name", name, "--network", network,
		"-v", "/usr/bin/docker-registry:/usr/bin/docker-registry:ro", "-v", conf+":/conf:ro", "-v", filepath.Join(reg.Dir, "data")+":/data",
		images.Base, "/bin/sh", "-c", "for i in $(seq 300); do [ -s /conf/registry.key ] && break; sleep 0.1; done; exec /usr/bin/docker-registry serve /conf/config.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("starting the registry mirror: %v\n%s", err, out)
	}
	ipOut, err := exec.Command("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	ip := strings.TrimSpace(string(ipOut))
	ca, err := proxytest.NewCA("registry mirror CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(ip)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(conf, "registry.crt"), cert, 0o644)
	os.WriteFile(filepath.Join(conf, "registry.key.tmp"), key, 0o644)
	os.Rename(filepath.Join(conf, "registry.key.tmp"), filepath.Join(conf, "registry.key"))
	host := ip + ":5000"
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	eventually(t, 30*time.Second, func() error {
		resp, err := client.Get("https://" + host + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("registry mirror answers %s", resp.Status)
		}
		return nil
	})
	return host, ca.PEM
}
