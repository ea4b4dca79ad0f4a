//go:build integration

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/e2e/vm"
)

// The operator's first command on a fresh VM: `curl .../install.sh | sh -s
// -- FLAGS`, against a release served over HTTPS like any static site. A
// tampered binary is refused, and so is one served with a SHA256SUMS made to
// match it (its signature does not verify) and a release URL over plain
// http; a failed preflight (no DNS record, port 443
// taken, too little disk or memory, no Docker) exits 3 with its own message and
// leaves the VM as it was; --install-docker installs Docker from the
// distribution's packages; the install ends healthy under systemd, a second run
// changes nothing, uninstall + install keeps the data, uninstall --purge of
// a dir that is not the appliance's is refused and uninstall --purge leaves
// nothing.
func TestCurlInstallOnFreshVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	netw, regHost, regCA := vmNetwork(t, "curlvm")
	release, err := testbed.StartReleaseServer(ctx, "..", netw.Gateway, filepath.Join(t.TempDir(), "release"), "e2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { release.Close() })
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})
	small := vm.New(t, docker, vm.Options{Name: "small", Network: netw.Name, Memory: 4 << 30})
	noDocker := vm.New(t, docker, vm.Options{Name: "nodocker", Network: netw.Name})
	// The distribution's packages, for --install-docker, from a local
	// repository next to the release (the VMs stay off the internet).
	if err := testbed.AptRepo(ctx, filepath.Join("..", ".cache", "debs"), filepath.Join(release.Dir, "debian"), "docker.io"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*vm.VM{node, small, noDocker} {
		// The release's certificate is from a test CA: trust it as an
		// operator trusts their company's.
		write(t, n, "/usr/local/share/ca-certificates/release-ca.crt", release.CAPEM, 0o644)
		n.MustExec(t, "update-ca-certificates")
		trustRegistry(t, n, regHost, regCA)
		stageCustomerPackage(t, n)
	}
	agentJournalOnFailure(t, node)
	curlInstall := func(n *vm.VM, extra ...string) (string, string, int) {
		t.Helper()
		cmd := fmt.Sprintf("curl -fsSL %s/install.sh | sh -s -- --yes --customer-env /root/package/customer.env --key /root/package/key.json --registry %s %s",
			release.URL, regHost, strings.Join(extra, " "))
		out, errOut, code, err := n.Exec(ctx, "sh", "-c", cmd)
		if err != nil {
			t.Fatal(err)
		}
		return out, errOut, code
	}
	// untouched checks that nothing of the appliance is on the VM but,
	// perhaps, its binary.
	untouched := func(t *testing.T, n *vm.VM) {
		t.Helper()
		for _, p := range []string{"/opt/carto", "/var/lib/carto-appliance", "/etc/systemd/system/carto-appliance.service", "/etc/systemd/system/docker.service.d/carto-proxy.conf"} {
			if _, _, code, _ := n.Exec(ctx, "test", "-e", p); code == 0 {
				t.Errorf("%s exists", p)
			}
		}
		if _, _, code, _ := n.Exec(ctx, "sh", "-c", "command -v docker"); code != 0 {
			return // no Docker, so no containers
		}
		if out := n.MustExec(t, "docker", "ps", "-aq"); strings.TrimSpace(out) != "" {
			t.Errorf("containers exist: %s", out)
		}
		if out := n.MustExec(t, "docker", "volume", "ls", "-q"); strings.TrimSpace(out) != "" {
			t.Errorf("volumes exist: %s", out)
		}
	}
	preflightFails := func(t *testing.T, n *vm.VM, check, detail string) {
		t.Helper()
		out, errOut, code := curlInstall(n)
		if code != 3 || !strings.Contains(errOut, "preflight failed, nothing was changed") || !strings.Contains(errOut, check+": ") || !strings.Contains(errOut, detail) {
			t.Errorf("exit %d, want 3 with %q: %q\nstdout:\n%s\nstderr:\n%s", code, check, detail, out, errOut)
		}
		untouched(t, n)
	}

	// tampered has the release server serve a tampered release while the
	// curl installer runs, which must refuse it with want and install
	// nothing.
	tampered := func(t *testing.T, tamper *atomic.Bool, want string) {
		t.Helper()
		tamper.Store(true)
		defer tamper.Store(false)
		_, errOut, code := curlInstall(node)
		if code == 0 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "nothing was installed") {
			t.Errorf("exit %d:\n%s", code, errOut)
		}
		if _, _, code, _ := node.Exec(ctx, "test", "-e", "/usr/local/bin/carto-appliance"); code == 0 {
			t.Error("the tampered binary was installed")
		}
		untouched(t, node)
	}

	step(t, "a tampered binary is refused and nothing is installed", func(t *testing.T) {
		tampered(t, &release.Tampered, "checksum mismatch for carto-appliance_linux_amd64")
	})

	step(t, "a tampered binary with a SHA256SUMS made to match it is refused by the signature", func(t *testing.T) {
		tampered(t, &release.TamperedSums, "SHA256SUMS does not match its signature")
	})

	step(t, "a release URL over plain http is refused", func(t *testing.T) {
		plain := "http://" + strings.TrimPrefix(release.URL, "https://")
		cmd := fmt.Sprintf("curl -fsSL %s/install.sh | CARTO_APPLIANCE_RELEASE_URL=%s sh -s -- --yes --customer-env /root/package/customer.env --key /root/package/key.json",
			release.URL, plain)
		_, errOut, code, err := node.Exec(ctx, "sh", "-c", cmd)
		if err != nil {
			t.Fatal(err)
		}
		if code == 0 || !strings.Contains(errOut, "the release URL must be https:// (got "+plain+")") {
			t.Errorf("exit %d:\n%s", code, errOut)
		}
		untouched(t, node)
	})

	step(t, "a domain that does not resolve fails preflight", func(t *testing.T) {
		preflightFails(t, node, "Domain carto.vm.test", "does not resolve")
	})

	step(t, "port 443 taken fails preflight", func(t *testing.T) {
		node.MustExec(t, "sh", "-c", "echo '127.0.0.1 carto.vm.test' >> /etc/hosts")
		node.MustExec(t, "systemd-run", "--unit", "hold-443", "systemd-socket-activate", "-l", "443", "/bin/cat")
		defer node.MustExec(t, "systemctl", "stop", "hold-443")
		eventually(t, 10*time.Second, func() error {
			if out := node.MustExec(t, "systemctl", "is-active", "hold-443"); strings.TrimSpace(out) != "active" {
				return fmt.Errorf("hold-443: %s", out)
			}
			return nil
		})
		preflightFails(t, node, "Port 443 (HTTPS)", "another program listens on 0.0.0.0:443")
	})

	step(t, "too little free disk for the Docker engine fails preflight", func(t *testing.T) {
		// The engine's data on a 10 GiB filesystem, the release needs 20.
		node.MustExec(t, "systemctl", "stop", "docker.socket", "docker.service")
		node.MustExec(t, "mount", "-t", "tmpfs", "-o", "size=10g", "tmpfs", "/var/lib/docker")
		node.MustExec(t, "systemctl", "start", "docker.service")
		defer func() {
			node.MustExec(t, "systemctl", "stop", "docker.socket", "docker.service")
			node.MustExec(t, "umount", "/var/lib/docker")
			node.MustExec(t, "systemctl", "start", "docker.service")
		}()
		preflightFails(t, node, "Free disk", "10 GiB free on /var/lib/docker (minimum 20")
	})

	step(t, "a VM with 4 GiB of memory fails preflight", func(t *testing.T) {
		small.MustExec(t, "sh", "-c", "echo '127.0.0.1 carto.vm.test' >> /etc/hosts")
		preflightFails(t, small, "Memory", "4 GiB (minimum 8")
	})

	step(t, "a VM without Docker fails preflight with the fix", func(t *testing.T) {
		noDocker.MustExec(t, "sh", "-c", "echo '127.0.0.1 carto.vm.test' >> /etc/hosts")
		noDocker.MustExec(t, "systemctl", "stop", "docker.socket", "docker.service")
		noDocker.MustExec(t, "apt-get", "purge", "-y", "-q", "docker.io")
		preflightFails(t, noDocker, "Docker engine", "Docker is not installed")
		_, errOut, _ := curlInstall(noDocker)
		if !strings.Contains(errOut, "from the distribution's packages") || !strings.Contains(errOut, "(set with --install-docker)") {
			t.Errorf("the failure does not say how to fix it:\n%s", errOut)
		}
	})

	step(t, "with --install-docker the curl install installs Docker from the distribution's packages and ends healthy", func(t *testing.T) {
		write(t, noDocker, "/etc/apt/sources.list", []byte("deb [trusted=yes] "+release.URL+"/debian ./\n"), 0o644)
		out, errOut, code := curlInstall(noDocker, "--install-docker")
		if code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		if got := noDocker.MustExec(t, "dpkg-query", "-W", "-f", "${Status}", "docker.io"); got != "install ok installed" {
			t.Errorf("docker.io: %q", got)
		}
		for _, unit := range []string{"docker", "carto-appliance"} {
			if got := strings.TrimSpace(noDocker.MustExec(t, "systemctl", "is-active", unit)); got != "active" {
				t.Errorf("%s: %s", unit, got)
			}
		}
		if st := vmStatus(t, noDocker); !st.Healthy || st.AgentPID == 0 {
			t.Errorf("status: healthy=%v agent_pid=%d", st.Healthy, st.AgentPID)
		}
	})

	step(t, "the deb package installs with dpkg -i and removes cleanly", func(t *testing.T) {
		deb := strings.TrimSpace(small.MustExec(t, "sh", "-c", "curl -fsSL "+release.URL+"/SHA256SUMS | awk '$2 ~ /_amd64[.]deb$/ { print $2 }'"))
		if deb == "" {
			t.Fatal("the release has no amd64 deb")
		}
		// As an operator checks a package: SHA256SUMS against its
		// signature by the release key (the one install.sh carries), then
		// the package against SHA256SUMS.
		small.MustExec(t, "sh", "-c", "cd /root && curl -fsSLO "+release.URL+"/SHA256SUMS && curl -fsSLO "+release.URL+"/SHA256SUMS.sig"+
			" && curl -fsSL "+release.URL+"/install.sh | sed -n 's/^\trelease_pubkey=//p' | { echo '-----BEGIN PUBLIC KEY-----'; cat; echo '-----END PUBLIC KEY-----'; } >release.pub"+
			" && openssl pkeyutl -verify -pubin -inkey release.pub -rawin -in SHA256SUMS -sigfile SHA256SUMS.sig"+
			" && curl -fsSLO "+release.URL+"/"+deb+" && grep ' "+deb+"$' SHA256SUMS | sha256sum -c -")
		small.MustExec(t, "dpkg", "-i", "/root/"+deb)
		if out := small.MustExec(t, "carto-appliance", "version"); !strings.Contains(out, "e2e") {
			t.Errorf("carto-appliance version from the package: %s", out)
		}
		if got := strings.TrimSpace(small.MustExec(t, "dpkg-query", "-W", "-f", "${Status} ${Version}", "carto-appliance")); got != "install ok installed 0.0.0~e2e" {
			t.Errorf("dpkg-query: %q", got)
		}
		small.MustExec(t, "dpkg", "-r", "carto-appliance")
		if _, _, code, _ := small.Exec(ctx, "test", "-e", "/usr/bin/carto-appliance"); code == 0 {
			t.Error("dpkg -r left /usr/bin/carto-appliance")
		}
		untouched(t, small)
	})

	var installedAt string
	step(t, "the curl install ends healthy under systemd and prints the URL", func(t *testing.T) {
		out, errOut, code := curlInstall(node)
		if code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
		}
		if !strings.Contains(out, "is up at https://carto.vm.test/") || !strings.Contains(out, "The agent keeps it up") {
			t.Errorf("install said:\n%s", out)
		}
		if got := strings.TrimSpace(node.MustExec(t, "systemctl", "is-active", "carto-appliance")); got != "active" {
			t.Errorf("carto-appliance.service: %s", got)
		}
		if st := vmStatus(t, node); !st.Healthy || st.AgentPID == 0 {
			t.Errorf("status: healthy=%v agent_pid=%d", st.Healthy, st.AgentPID)
		}
		installedAt = node.MustExec(t, "stat", "-c", "%Y", "/usr/local/bin/carto-appliance")
		vmPsql(t, node, "CREATE TABLE curl_e2e (v text); INSERT INTO curl_e2e VALUES ('kept')")
	})

	step(t, "running it again changes nothing", func(t *testing.T) {
		before := vmContainers(t, node)
		_, errOut, code := curlInstall(node)
		if code != 0 || !strings.Contains(errOut, "/usr/local/bin/carto-appliance is already this version") {
			t.Errorf("exit %d:\n%s", code, errOut)
		}
		if got := node.MustExec(t, "stat", "-c", "%Y", "/usr/local/bin/carto-appliance"); got != installedAt {
			t.Error("the binary was replaced")
		}
		sameContainers(t, before, vmContainers(t, node))
	})

	step(t, "uninstall then install keeps the data", func(t *testing.T) {
		node.MustExec(t, "carto-appliance", "uninstall")
		if out := node.MustExec(t, "docker", "ps", "-aq"); strings.TrimSpace(out) != "" {
			t.Errorf("containers after uninstall: %s", out)
		}
		if _, _, code := curlInstall(node); code != 0 {
			t.Fatalf("reinstall: exit %d", code)
		}
		if got := vmPsql(t, node, "SELECT v FROM curl_e2e"); got != "kept" {
			t.Errorf("the row after reinstall: %q", got)
		}
	})

	step(t, "uninstall --purge of a dir that is not the appliance's is refused and changes nothing", func(t *testing.T) {
		before := vmContainers(t, node)
		node.MustExec(t, "sh", "-c", "mkdir -p /opt/vendor && echo keep >/opt/vendor/file")
		_, errOut, code, err := node.Exec(ctx, "carto-appliance", "uninstall", "--purge", "--yes", "--config-dir", "/opt")
		if err != nil {
			t.Fatal(err)
		}
		if code == 0 || !strings.Contains(errOut, "the config dir /opt is not carto-appliance's") || !strings.Contains(errOut, "(--config-dir)") || !strings.Contains(errOut, "nothing was changed") {
			t.Errorf("exit %d:\n%s", code, errOut)
		}
		if got := strings.TrimSpace(node.MustExec(t, "cat", "/opt/vendor/file")); got != "keep" {
			t.Errorf("/opt/vendor/file: %q", got)
		}
		if got := strings.TrimSpace(node.MustExec(t, "systemctl", "is-active", "carto-appliance")); got != "active" {
			t.Errorf("the agent: %s", got)
		}
		sameContainers(t, before, vmContainers(t, node))
		node.MustExec(t, "rm", "-r", "/opt/vendor")
	})

	step(t, "uninstall --purge leaves no trace", func(t *testing.T) {
		node.MustExec(t, "carto-appliance", "uninstall", "--purge", "--yes")
		untouched(t, node)
	})
}

func vmPsql(t *testing.T, node *vm.VM, sql string) string {
	t.Helper()
	return vmPsqlDB(t, node, "postgres", sql)
}

// vmPsqlDB runs sql in the database db of the VM's embedded Postgres.
func vmPsqlDB(t *testing.T, node *vm.VM, db, sql string) string {
	t.Helper()
	out := node.MustExec(t, "docker", "exec", "carto-workspace-postgres-1", "psql", "-v", "ON_ERROR_STOP=1", "-At", "-U", "postgres", "-d", db, "-c", sql)
	return strings.TrimSpace(out)
}
