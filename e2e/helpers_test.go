//go:build integration

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/stack"
)

// The test bed shared by every scenario, set up once by TestMain.
var (
	bin        string // the built carto-appliance
	docker     *client.Client
	reg        *testbed.Registry
	images     testbed.Images
	version    string // the embedded release's version, pushed to reg
	channelDir string // the test channel (testbed.ChannelName): the embedded release and testbed.NextRelease
	binOld     string // the binary under test as carto-appliance testbed.OldApplianceVersion
	binNext    string // and as testbed.NextApplianceVersion (what the channel offers)
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		tmp, err := os.MkdirTemp("", "carto-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		bin = filepath.Join(tmp, "carto-appliance")
		// The same binary as release versions, for the self-update: the
		// channel offers binNext, which the channel's next release needs.
		binOld = filepath.Join(tmp, "carto-appliance-"+testbed.OldApplianceVersion)
		binNext = filepath.Join(tmp, "carto-appliance-"+testbed.NextApplianceVersion)
		for out, v := range map[string]string{bin: "", binOld: testbed.OldApplianceVersion, binNext: testbed.NextApplianceVersion} {
			args := []string{"build", testbed.LicenseBuildFlags, "-o", out}
			if v != "" {
				args = append(args, "-ldflags", "-X main.version="+v)
			}
			build := exec.CommandContext(ctx, "go", append(args, "../cmd/carto-appliance")...)
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "building the binary: %v\n%s", err, out)
				return 1
			}
		}
		bed, err := testbed.Start(ctx, tmp, testbed.Options{Logf: logf, Channel: true, ApplianceBinary: binNext})
		if err != nil {
			fmt.Fprintln(os.Stderr, "setting up the test bed:", err)
			return 1
		}
		defer bed.Close()
		docker, reg, images, version, channelDir = bed.Docker, bed.Registry, bed.Images, bed.Release.Manifest.Version, bed.ChannelDir
		return m.Run()
	}())
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "testbed: "+format+"\n", args...) }

// node is one installation of the appliance on the test engine: its own
// config and state dirs, compose project and router ports, so scenarios can
// run side by side.
type node struct {
	t                   *testing.T
	configDir, stateDir string
	project             string
	domain              string
	httpPort, httpsPort int
	customerEnv         string // the customer package's customer.env (outside the config dir)
}

func newNode(t *testing.T, project string) *node {
	t.Helper()
	base := t.TempDir()
	n := &node{
		t: t, configDir: filepath.Join(base, "opt-carto"), stateDir: filepath.Join(base, "state"),
		project: project, domain: project + ".carto.test",
		httpPort: freePort(t), httpsPort: freePort(t),
		customerEnv: filepath.Join(base, "package", "customer.env"),
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _, _ := n.run("logs", "--tail", "30")
			t.Logf("last logs of %s:\n%s", project, out)
		}
		// A purge that fails leaves volumes a later run would find.
		if _, errOut, code := n.run("uninstall", "--purge", "--yes"); code != 0 {
			t.Errorf("cleaning up %s: uninstall --purge: exit %d\n%s", project, code, errOut)
		}
	})
	return n
}

// freePort is a port for a router to publish, free now. It comes from
// below the kernel's ephemeral range (32768 and up), where the engine's
// and the tests' own outgoing connections cannot take it between now and
// the install, and is never handed out twice in a run: parallel scenarios
// once got the same port from the kernel and one router failed to start.
func freePort(t *testing.T) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + mrand.IntN(12000)
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[port] = true
		return port
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// baseCustomerEnv is a customer package's customer.env. The admin password
// is single-quoted with characters that need care on the way to Postgres.
func baseCustomerEnv(domain string) map[string]string {
	return map[string]string{
		"SELFHOSTED_TENANT_ID":                      "onp-e2e",
		"SELFHOSTED_DOMAIN":                         domain,
		"SELFHOSTED_GCP_PROJECT_ID":                 "carto-onp-e2e",
		"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION": "2025.10.7",
		"CARTO_AUTH0_CLIENT_ID":                     "auth0-client-id",
		"CARTO_AUTH0_CUSTOM_DOMAIN":                 "auth.carto.com",
		"POSTGRES_ADMIN_PASSWORD":                   "'adm1n$ecret #x y'",
		"WORKSPACE_POSTGRES_PASSWORD":               "ws-pass-2",
		"LOCAL_POSTGRES_SCALE":                      "1",
		"LOCAL_REDIS_SCALE":                         "1",
	}
}

// writeCustomerEnv writes the customer package's customer.env; values are
// written as given (quote them in the map to test quoting).
func (n *node) writeCustomerEnv(vals map[string]string) {
	n.t.Helper()
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# customer package for " + n.domain + "\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, vals[k])
	}
	if err := os.MkdirAll(filepath.Dir(n.customerEnv), 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(n.customerEnv, []byte(b.String()), 0o600); err != nil {
		n.t.Fatal(err)
	}
	// The package's licence, for its tenant.
	tenant := strings.Trim(vals["SELFHOSTED_TENANT_ID"], `'"`)
	if err := testbed.WriteTestLicense(filepath.Join(filepath.Dir(n.customerEnv), "license.json"), tenant); err != nil {
		n.t.Fatal(err)
	}
}

// run runs the binary with this node's dirs; it returns stdout, stderr and
// the exit code.
func (n *node) run(args ...string) (string, string, int) {
	args = append(args, "--config-dir", n.configDir, "--state-dir", n.stateDir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("running %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

// mustRefuse runs the binary with args, which must fail with an error
// naming each of wants; the caller checks that nothing changed.
func (n *node) mustRefuse(t *testing.T, args []string, wants ...string) {
	t.Helper()
	_, errOut, code := n.run(args...)
	if code == 0 {
		t.Fatalf("accepted: %v", args)
	}
	t.Logf("refused with exit %d:\n%s", code, errOut)
	for _, w := range wants {
		if !strings.Contains(errOut, w) {
			t.Errorf("error lacks %q:\n%s", w, errOut)
		}
	}
}

// mustRun runs the binary and fails the test on a non-zero exit.
func (n *node) mustRun(args ...string) (string, string) {
	n.t.Helper()
	out, errOut, code := n.run(args...)
	if code != 0 {
		n.t.Fatalf("carto-appliance %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out, errOut
}

func (n *node) installArgs(extra ...string) []string {
	return append([]string{"install", "--no-service",
		"--customer-env", n.customerEnv, "--key", reg.KeyJSONPath,
		"--registry", reg.Host, "--project", n.project,
		"--http-port", fmt.Sprint(n.httpPort), "--https-port", fmt.Sprint(n.httpsPort),
		"--bind-address", "127.0.0.1",
		// The test domains are in no DNS: the tests reach the router by
		// address.
		"--ignore-preflight", "dns",
	}, extra...)
}

func (n *node) status() installer.Status {
	n.t.Helper()
	out, _ := n.mustRun("status", "--json")
	var st installer.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		n.t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	return st
}

// containers returns the project's container ID by service.
func (n *node) containers() map[string]string {
	n.t.Helper()
	list, err := docker.ContainerList(context.Background(), client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", "com.docker.compose.project="+n.project),
	})
	if err != nil {
		n.t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range list.Items {
		out[c.Labels["com.docker.compose.service"]] = c.ID
	}
	return out
}

// changedServices lists the services whose container differs between two
// containers() snapshots.
func changedServices(before, after map[string]string) []string {
	var out []string
	for s, id := range after {
		if before[s] != id {
			out = append(out, s)
		}
	}
	for s := range before {
		if _, ok := after[s]; !ok {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func (n *node) container(service string) string {
	id := n.containers()[service]
	if id == "" {
		n.t.Fatalf("no container for service %s", service)
	}
	return id
}

// dockerCLI runs the docker CLI on the host's engine and returns its output.
func (n *node) dockerCLI(args ...string) string {
	n.t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// exec runs a command in a service's container and returns its output.
func (n *node) exec(service string, cmd ...string) string {
	n.t.Helper()
	args := append([]string{"exec", n.container(service)}, cmd...)
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (n *node) psql(sql string) string {
	return strings.TrimSpace(n.exec("workspace-postgres", "psql", "-v", "ON_ERROR_STOP=1", "-At", "-U", "postgres", "-d", "postgres", "-c", sql))
}

// snapshot is the config and state dirs' files, with contents, modes and
// modification times, to prove a failed command changed nothing. A
// directory counts by its mode and entries, not its mtime: a run stages
// its files in a private dir of the state dir and removes it, which
// changes nothing but the state dir's mtime.
func (n *node) snapshot() map[string]string {
	n.t.Helper()
	out := map[string]string{}
	for _, dir := range []string{n.configDir, n.stateDir} {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			entry := fi.Mode().String()
			if !d.IsDir() {
				b, _ := os.ReadFile(path)
				entry += fmt.Sprintf(" %d %s", fi.ModTime().UnixNano(), b)
			}
			out[path] = entry
			return nil
		})
	}
	return out
}

func sameSnapshot(t *testing.T, before, after map[string]string) {
	t.Helper()
	for p, v := range before {
		if after[p] != v {
			t.Errorf("%s changed", p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared", p)
		}
	}
}

// writeServerCert makes a test CA and a certificate for domain signed by
// it, writes the pair next to the customer package, and returns the CA
// pool and the files, for install --tls-cert/--tls-key.
func (n *node) writeServerCert() (pool *x509.CertPool, certFile, keyFile string) {
	n.t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "carto e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		n.t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: n.domain}, DNSNames: []string{n.domain},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
	if err != nil {
		n.t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	dir := filepath.Dir(n.customerEnv)
	os.MkdirAll(dir, 0o700)
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return pool, certFile, keyFile
}

// eventually polls fn until it returns nil, and fails t when within has
// passed first.
func eventually(t *testing.T, within time.Duration, fn func() error) {
	t.Helper()
	if err := waitFor(within, fn); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls fn every half second until it returns nil, or returns its
// last error once within has passed: for a caller that must clean up
// before failing.
func waitFor(within time.Duration, fn func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s: %w", within, err)
		}
		time.Sleep(500 * time.Millisecond) // the poll's interval, not a wait for anything
	}
}

// agentLookedSince reads the agent's state file (agent.json, which the
// agent writes at the end of each look at the stack) and fails unless that
// look began after since: the event "the agent has seen the stack as it
// is now". The file is read as an operator would, not through installer,
// so that it stays an observable output.
func agentLookedSince(stateJSON []byte, since time.Time) error {
	var st struct {
		UpdatedAt time.Time `json:"updated_at"`
	}
	if err := json.Unmarshal(stateJSON, &st); err != nil {
		return fmt.Errorf("the agent's state file: %w", err)
	}
	if !st.UpdatedAt.After(since) {
		return fmt.Errorf("the agent last looked at the stack at %s, not since %s", st.UpdatedAt.Format(time.RFC3339Nano), since.Format(time.RFC3339Nano))
	}
	return nil
}

// localEngine is this host's Docker engine as the appliance connects to
// it, closed at the test's end.
func localEngine(t *testing.T) *stack.Engine {
	t.Helper()
	eng, err := stack.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}
