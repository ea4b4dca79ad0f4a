//go:build integration

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/e2e/proxytest"
	"github.com/cartodb/carto-appliance/proxy"
)

// An operator behind a corporate HTTP proxy (tinyproxy) installs with
// --proxy-url and extra --proxy-no-proxy entries: every CARTO service sees
// HTTP_PROXY, HTTPS_PROXY, GRPC_PROXY and NO_PROXY in upper and lower case,
// keeps service-to-service traffic off the proxy, and reaches the internet
// (the test server) only through the proxy, whose log shows each request;
// `proxy test` reports the reachable destination and the missing name.
func TestHTTPProxy(t *testing.T) {
	t.Parallel()
	runProxyScenario(t, "tinyproxy", "e2e-pxhttp")
}

// The same behind an HTTPS proxy (squid, clients speak TLS to it) whose
// certificate comes from the corporate CA given with --proxy-ca-cert:
// the services also see NODE_EXTRA_CA_CERTS, can read the CA there, and
// NODE_TLS_REJECT_UNAUTHORIZED=1; GRPC_PROXY is not set.
func TestHTTPSProxy(t *testing.T) {
	t.Parallel()
	runProxyScenario(t, "squid", "e2e-pxhttps")
}

// The services that run the stand-in image; the others are Debian-based
// (Postgres, Valkey, nginx).
var notStandin = map[string]bool{"workspace-postgres": true, "valkey": true, "router-http": true}

// standin is one stand-in container of the stack.
type standin struct {
	service, id string
	ip          string // on the project network
	running     bool   // workspace-migrations has exited
}

func runProxyScenario(t *testing.T, kind, project string) {
	ctx := context.Background()
	// The project's own name each run: Docker 20.10 now and then keeps a
	// network with a ghost endpoint that nothing removes, and this
	// scenario makes its network itself.
	project += "-" + randHex(2)
	if err := proxytest.Available(); err != nil {
		t.Fatal(err)
	}
	guardEngineProxySettings(t)

	// The project network is created here, with compose's labels, so that
	// its gateway (this host, where the proxy and the test server listen)
	// is known before the install. Removed after the uninstall.
	netName := project + "_default"
	t.Cleanup(func() { docker.NetworkRemove(context.Background(), netName, client.NetworkRemoveOptions{}) })
	n := newNode(t, project)
	created, err := docker.NetworkCreate(ctx, netName, client.NetworkCreateOptions{Driver: "bridge", Labels: map[string]string{
		"com.docker.compose.project": n.project, "com.docker.compose.network": "default",
	}})
	if err != nil {
		t.Fatal(err)
	}
	ins, err := docker.NetworkInspect(ctx, created.ID, client.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ins.Network.IPAM.Config) == 0 || !ins.Network.IPAM.Config[0].Gateway.IsValid() {
		t.Fatalf("network %s has no gateway: %+v", netName, ins.Network.IPAM)
	}
	gw, subnet := ins.Network.IPAM.Config[0].Gateway, ins.Network.IPAM.Config[0].Subnet
	bridge := ins.Network.Options["com.docker.network.bridge.name"]
	if bridge == "" {
		bridge = "br-" + created.ID[:12]
	}
	t.Logf("network %s: subnet %s, gateway %s on %s", netName, subnet, gw, bridge)

	// The internet: a test server on the gateway address. The proxy
	// listens there too; squid's certificate comes from the test server's
	// CA, which thus plays the corporate CA (TLS-inspecting proxies re-sign
	// destinations with it).
	ts, err := proxytest.StartTestServer(ctx, gw.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.Close)
	var px *proxytest.Proxy
	var caFile string
	switch kind {
	case "tinyproxy":
		px, err = proxytest.StartTinyproxy(ctx, t.TempDir(), gw.String())
	case "squid":
		cert, key, ierr := ts.CA.Issue(gw.String())
		if ierr != nil {
			t.Fatal(ierr)
		}
		caFile = filepath.Join(t.TempDir(), "corporate-ca.pem")
		if err := os.WriteFile(caFile, ts.CA.PEM, 0o644); err != nil {
			t.Fatal(err)
		}
		px, err = proxytest.StartSquidHTTPS(ctx, t.TempDir(), gw.String(), cert, key)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := px.AccessLog()
			t.Logf("%s access log:\n%s", kind, log)
			t.Logf("test server requests: %+v", ts.Requests())
		}
	})
	t.Logf("%s at %s; test server at %s and %s", kind, px.URL(), ts.HTTPSAddr, ts.HTTPAddr)

	block := blockDirect(t, project, bridge, gw, ts.HTTPSAddr, ts.HTTPAddr)

	extraNoProxy := []string{"internal.example.com", "10.99.0.0/16"}
	step(t, "install through the proxy", func(t *testing.T) {
		n.writeCustomerEnv(baseCustomerEnv(n.domain))
		args := n.installArgs("--proxy-url", px.URL(), "--proxy-no-proxy", strings.Join(extraNoProxy, ","))
		if kind == "squid" {
			args = append(args, "--proxy-ca-cert", caFile, "--proxy-reject-unauthorized=true")
		}
		_, errOut := n.mustRun(args...)
		t.Logf("install:\n%s", tail(errOut, 15))
		if st := n.status(); !st.Healthy {
			t.Fatalf("not healthy behind the proxy: %+v", st.Services)
		}
	})

	services := n.containers()
	var standins []standin
	for svc, id := range services {
		if notStandin[svc] {
			continue
		}
		c := inspect(t, id)
		s := standin{service: svc, id: id, running: c.State.Running}
		if c.NetworkSettings != nil {
			if ep := c.NetworkSettings.Networks[netName]; ep != nil && ep.IPAddress.IsValid() {
				s.ip = ep.IPAddress.String()
			}
		}
		if s.running && s.ip == "" {
			t.Fatalf("%s has no address on %s", svc, netName)
		}
		standins = append(standins, s)
	}
	sort.Slice(standins, func(i, j int) bool { return standins[i].service < standins[j].service })
	if len(standins) < 12 {
		t.Fatalf("only %d stand-in containers: %v", len(standins), services)
	}
	running := slices.DeleteFunc(slices.Clone(standins), func(s standin) bool { return !s.running })
	// fromContainer: an address on the project network other than the
	// gateway (the host's own address there).
	fromContainer := func(addr string) bool {
		ip, err := netip.ParseAddr(addr)
		return err == nil && subnet.Contains(ip) && ip != gw
	}

	envs := map[string]map[string]string{}
	step(t, "every stand-in sees the proxy variables in both cases", func(t *testing.T) {
		want := map[string]string{"HTTP_PROXY": px.URL(), "HTTPS_PROXY": px.URL()}
		var unset []string
		if kind == "tinyproxy" {
			want["GRPC_PROXY"] = px.URL()
			unset = []string{"NODE_EXTRA_CA_CERTS", "NODE_TLS_REJECT_UNAUTHORIZED"}
		} else {
			want["NODE_TLS_REJECT_UNAUTHORIZED"] = "1"
			want["NODE_EXTRA_CA_CERTS"] = "*" // the appliance's path; read in the next step
			unset = []string{"GRPC_PROXY"}
		}
		mustBypass := append([]string{"localhost", "127.0.0.1"}, extraNoProxy...)
		for svc := range services {
			mustBypass = append(mustBypass, svc)
		}
		for _, s := range standins {
			env := standinEnv(t, n, s)
			envs[s.service] = env
			for k, v := range want {
				for _, key := range []string{k, strings.ToLower(k)} {
					got, ok := env[key]
					if !ok || got == "" || (v != "*" && got != v) {
						t.Errorf("%s: %s=%q, want %q", s.service, key, got, v)
					}
				}
				if env[k] != env[strings.ToLower(k)] {
					t.Errorf("%s: %s=%q but %s=%q", s.service, k, env[k], strings.ToLower(k), env[strings.ToLower(k)])
				}
			}
			for _, k := range unset {
				for _, key := range []string{k, strings.ToLower(k)} {
					if v, ok := env[key]; ok {
						t.Errorf("%s: %s=%q is set, want it unset for %s", s.service, key, v, kind)
					}
				}
			}
			if env["NO_PROXY"] == "" || env["NO_PROXY"] != env["no_proxy"] {
				t.Errorf("%s: NO_PROXY=%q no_proxy=%q", s.service, env["NO_PROXY"], env["no_proxy"])
			}
			list := strings.Split(env["NO_PROXY"], ",")
			for _, e := range mustBypass {
				if !slices.Contains(list, e) {
					t.Errorf("%s: NO_PROXY lacks %q: %s", s.service, e, env["NO_PROXY"])
				}
			}
			// The scenario's premise: the destination is not exempt.
			if slices.Contains(list, gw.String()) {
				t.Errorf("%s: NO_PROXY holds the test server's address %s", s.service, gw)
			}
		}
	})

	if kind == "squid" {
		step(t, "every stand-in reads the proxy CA at NODE_EXTRA_CA_CERTS", func(t *testing.T) {
			for _, s := range running {
				path := envs[s.service]["NODE_EXTRA_CA_CERTS"]
				got := n.exec(s.service, "wget", "-q", "-O-", "http://127.0.0.1:3000/file?path="+url.QueryEscape(path))
				if !samePEM(got, ts.CA.PEM) {
					t.Errorf("%s: %s holds %q, want the corporate CA", s.service, path, got)
				}
			}
		})
	}

	step(t, "outbound requests reach the test server through the proxy", func(t *testing.T) {
		// An HTTPS destination goes through a CONNECT tunnel, a plain one as
		// a GET to the proxy. Behind tinyproxy the services have no CA for
		// the test server (a public CA in real life): the tunnel is what is
		// tested, so that request skips verification.
		insecure := map[string]string{"tinyproxy": "&insecure=1", "squid": ""}[kind]
		for _, s := range running {
			for _, u := range []string{ts.HTTPSURL("/probe/" + s.service + "/tls"), ts.HTTPURL("/probe/" + s.service + "/plain")} {
				res := standinFetch(t, s, u, insecure)
				if res.Status != 200 || res.Body != ts.Marker || res.Error != "" || res.Proxy != px.URL() {
					t.Errorf("%s: /fetch %s = %+v, want the marker through %s", s.service, u, res, px.URL())
				}
			}
		}
		eventually(t, 15*time.Second, func() error {
			entries, err := px.Entries()
			if err != nil {
				return err
			}
			for _, s := range running {
				for _, w := range []proxytest.LogEntry{
					{Client: s.ip, Method: "CONNECT", Target: ts.HTTPSAddr},
					{Client: s.ip, Method: "GET", Target: ts.HTTPURL("/probe/" + s.service + "/plain")},
				} {
					if kind == "squid" {
						w.Status = 200
					}
					if !slices.Contains(entries, w) {
						return fmt.Errorf("the %s log lacks %+v", kind, w)
					}
				}
			}
			return nil
		})
		// The proxy runs on this host: its connections come from one of the
		// host's addresses (which one is the kernel's choice), never from a
		// container's.
		seen := map[string]proxytest.Request{}
		for _, r := range ts.Requests() {
			seen[r.Path] = r
			if fromContainer(r.RemoteIP()) {
				t.Errorf("the test server got %s %s straight from the container at %s", r.Method, r.Path, r.RemoteIP())
			}
		}
		for _, s := range running {
			for _, p := range []string{"/probe/" + s.service + "/tls", "/probe/" + s.service + "/plain"} {
				if _, ok := seen[p]; !ok {
					t.Errorf("%s: the test server never saw %s", s.service, p)
				}
			}
		}
	})

	step(t, "without the proxy the test server is unreachable", func(t *testing.T) {
		before := block.packets(t)
		for _, s := range running {
			// busybox wget, told not to use the proxy.
			out, err := execOut(s.id, "wget", "-Y", "off", "-q", "-O-", ts.HTTPURL("/direct/"+s.service))
			if err == nil || !strings.Contains(out, "Connection refused") {
				t.Errorf("%s: a direct wget got %v:\n%s", s.service, err, out)
			}
			// The service's own client, told to skip the proxy.
			res := standinFetch(t, s, ts.HTTPSURL("/direct/"+s.service+"/tls"), "&direct=1")
			if res.Proxy != "" || !strings.Contains(res.Error, "connection refused") {
				t.Errorf("%s: a direct /fetch = %+v, want connection refused", s.service, res)
			}
		}
		if d := block.packets(t) - before; d < 2*len(running) {
			t.Errorf("the block rejected %d packets, want at least %d: something else refused the connections", d, 2*len(running))
		}
		for _, r := range ts.Requests() {
			if strings.HasPrefix(r.Path, "/direct/") {
				t.Errorf("a direct request got through: %+v", r)
			}
		}
	})

	step(t, "proxy test reports each destination", func(t *testing.T) {
		// Behind tinyproxy the test server's CA stands for the public CAs
		// of this machine's trust store; behind squid it is the proxy CA
		// the appliance was given.
		trust := []string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
		if kind == "tinyproxy" {
			f := filepath.Join(t.TempDir(), "trust-store.pem")
			os.WriteFile(f, ts.CA.PEM, 0o644)
			trust = []string{"SSL_CERT_FILE=" + f}
		}
		results, code, errOut := proxyTest(t, n, trust, ts.HTTPSAddr, "nonexistent.invalid")
		if code != 1 {
			t.Errorf("proxy test with an unreachable required domain: exit %d, want 1\n%s", code, errOut)
		}
		if r := results[ts.HTTPSAddr]; !r.OK || r.Via != "proxy" {
			t.Errorf("test server: %+v, want OK via the proxy", r)
		}
		if r := results["nonexistent.invalid"]; r.OK || r.Kind != proxy.KindDNS || r.Via != "proxy" {
			t.Errorf("nonexistent.invalid: %+v, want dns", r)
		}
		eventually(t, 15*time.Second, func() error {
			entries, err := px.Entries()
			if err != nil {
				return err
			}
			// The appliance runs on this host, not in a container.
			for _, target := range []string{ts.HTTPSAddr, "nonexistent.invalid:443"} {
				if !slices.ContainsFunc(entries, func(e proxytest.LogEntry) bool {
					return e.Method == "CONNECT" && e.Target == target && e.Client != "" && !fromContainer(e.Client)
				}) {
					return fmt.Errorf("the %s log lacks the appliance's CONNECT %s", kind, target)
				}
			}
			return nil
		})
		if kind == "tinyproxy" {
			// Without the destination's CA: named as such.
			results, _, _ := proxyTest(t, n, []string{"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}, ts.HTTPSAddr)
			if r := results[ts.HTTPSAddr]; r.Kind != proxy.KindTLSUnknownAuthority {
				t.Errorf("test server without its CA: %+v, want %s", r, proxy.KindTLSUnknownAuthority)
			}
		}
	})
}

// standinEnv is the environment a stand-in sees: its /env, or for one that
// has exited (workspace-migrations) the environment it was created with.
func standinEnv(t *testing.T, n *node, s standin) map[string]string {
	t.Helper()
	env := map[string]string{}
	if s.running {
		out := n.exec(s.service, "wget", "-q", "-O-", "http://127.0.0.1:3000/env")
		if err := json.Unmarshal([]byte(out), &env); err != nil {
			t.Fatalf("%s /env: %v\n%s", s.service, err, out)
		}
		return env
	}
	for _, kv := range inspect(t, s.id).Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// fetchResult is the stand-in's /fetch answer.
type fetchResult struct {
	URL, Proxy, Body, Error string
	Status                  int
}

// standinFetch asks a stand-in to GET u (its /fetch, called from this
// host on the container's address, so that an error answer is read too).
func standinFetch(t *testing.T, s standin, u, query string) fetchResult {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get("http://" + s.ip + ":3000/fetch?url=" + url.QueryEscape(u) + query)
	if err != nil {
		t.Fatalf("%s /fetch: %v", s.service, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var res fetchResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("%s /fetch answered %s: %s", s.service, resp.Status, b)
	}
	return res
}

// execOut runs a command in a container and returns its output and error.
func execOut(id string, cmd ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", append([]string{"exec", id}, cmd...)...).CombinedOutput()
	return string(out), err
}

// proxyTest runs `proxy test --json` for domains with env added to the
// binary's environment, and returns the results by domain.
func proxyTest(t *testing.T, n *node, env []string, domains ...string) (map[string]proxy.Result, int, string) {
	t.Helper()
	args := []string{"proxy", "test", "--json", "--config-dir", n.configDir, "--state-dir", n.stateDir}
	for _, d := range domains {
		args = append(args, "--domain", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running proxy test: %v", err)
	}
	var list []proxy.Result
	if err := json.Unmarshal(out.Bytes(), &list); err != nil {
		t.Fatalf("proxy test --json: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
	}
	results := map[string]proxy.Result{}
	for _, r := range list {
		results[r.Domain] = r
	}
	t.Logf("proxy test %v: exit %d: %+v", domains, code, list)
	return results, code, errb.String()
}

// samePEM reports whether a and b hold the same certificates.
func samePEM(a string, b []byte) bool {
	der := func(data []byte) [][]byte {
		var out [][]byte
		for {
			var blk *pem.Block
			blk, data = pem.Decode(data)
			if blk == nil {
				return out
			}
			out = append(out, blk.Bytes)
		}
	}
	x, y := der([]byte(a)), der(b)
	return len(x) > 0 && slices.EqualFunc(x, y, bytes.Equal)
}

// blockRule is an iptables rule that rejects connections from the project
// network's bridge to the test server on the host, so that only the proxy
// (on the host: its connections arrive over lo) can reach it.
type blockRule struct{ comment string }

func blockDirect(t *testing.T, project, bridge string, gw netip.Addr, addrs ...string) *blockRule {
	t.Helper()
	var ports []string
	for _, a := range addrs {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, p)
	}
	r := &blockRule{comment: "carto-e2e-" + project + "-direct-block"}
	r.removeStale(t)
	// REJECT with a reset: a direct attempt fails at once ("connection
	// refused") instead of waiting for a timeout.
	spec := []string{"INPUT", "-i", bridge, "-d", gw.String() + "/32", "-p", "tcp",
		"-m", "multiport", "--dports", strings.Join(ports, ","),
		"-m", "comment", "--comment", r.comment, "-j", "REJECT", "--reject-with", "tcp-reset"}
	iptables(t, append([]string{"-I"}, spec...)...)
	t.Cleanup(func() { iptables(t, append([]string{"-D"}, spec...)...) })
	return r
}

// removeStale deletes rules this scenario left behind when it was killed.
func (r *blockRule) removeStale(t *testing.T) {
	for _, line := range strings.Split(iptables(t, "-S", "INPUT"), "\n") {
		if strings.HasPrefix(line, "-A INPUT ") && strings.Contains(line, r.comment) {
			t.Logf("removing a stale rule: %s", line)
			args := strings.Fields(strings.Replace(line, "-A INPUT", "-D INPUT", 1))
			for i, a := range args { // iptables -S quotes the comment
				args[i] = strings.Trim(a, `"`)
			}
			iptables(t, args...)
		}
	}
}

// packets is how many packets the rule has rejected.
func (r *blockRule) packets(t *testing.T) int {
	t.Helper()
	for _, line := range strings.Split(iptables(t, "-L", "INPUT", "-v", "-x", "-n"), "\n") {
		if strings.Contains(line, "/* "+r.comment+" */") {
			n, err := strconv.Atoi(strings.Fields(line)[0])
			if err != nil {
				t.Fatalf("reading the rule's counter: %q", line)
			}
			return n
		}
	}
	t.Fatalf("the rule %s is gone", r.comment)
	return 0
}

func iptables(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w", "10"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("iptables %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// guardEngineProxySettings: on a host run by systemd, install writes the
// Docker engine's proxy drop-in and CA (without restarting the engine: no
// terminal, no --yes). They would point this host's engine at the test's
// proxy, so they are removed afterwards; a host that already has them is
// someone's real configuration, and the scenario does not run there.
func guardEngineProxySettings(t *testing.T) {
	if fi, err := os.Stat("/run/systemd/system"); err != nil || !fi.IsDir() {
		return
	}
	files := []string{filepath.Join(proxy.DockerDropInDir, proxy.DockerDropInName), filepath.Join(proxy.DockerCADir, proxy.CAFileName)}
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			t.Skipf("%s exists: this host's Docker engine has carto-appliance proxy settings, which the scenario would replace", f)
		}
	}
	t.Cleanup(func() {
		for _, f := range files {
			os.Remove(f)
		}
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
