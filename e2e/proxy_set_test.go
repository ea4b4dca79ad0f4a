//go:build integration

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An operator changes the proxy of a running stack: `proxy set` re-renders
// .env and recreates the CARTO services (their environment changed) but not
// the databases; setting the same proxy again changes nothing; refused
// settings change nothing; `proxy clear` takes the variables away again;
// status shows the proxy and the warehouses that bypass it.
func TestProxySetAndClear(t *testing.T) {
	t.Parallel()
	n := newNode(t, "e2e-pxset")
	n.writeCustomerEnv(baseCustomerEnv(n.domain))
	n.mustRun(n.installArgs("--warehouses", "postgres")...)
	const url = "http://proxy.corp.test:3128"

	mapsEnv := func() string { return n.exec("maps-api", "wget", "-q", "-O-", "http://127.0.0.1:3000/env") }

	step(t, "proxy set recreates the CARTO services, not the databases", func(t *testing.T) {
		before := n.containers()
		n.mustRun("proxy", "set", "--url", url, "--no-proxy", ".corp.test,10.1.0.0/16")
		changed := ","
		for _, s := range changedServices(before, n.containers()) {
			changed += s + ","
		}
		for _, s := range []string{"maps-api", "workspace-api", "import-worker", "router-http"} {
			if !strings.Contains(changed, ","+s+",") {
				t.Errorf("%s not recreated (recreated: %s)", s, changed)
			}
		}
		for _, s := range []string{"workspace-postgres", "valkey"} {
			if strings.Contains(changed, ","+s+",") {
				t.Errorf("%s recreated by a proxy change", s)
			}
		}
		env := mapsEnv()
		for _, want := range []string{`"HTTP_PROXY": "` + url, `"https_proxy": "` + url, `"GRPC_PROXY": "` + url, ".corp.test,10.1.0.0/16"} {
			if !strings.Contains(env, want) {
				t.Errorf("maps-api environment lacks %s", want)
			}
		}
		if !n.status().Healthy {
			t.Error("not healthy behind the proxy")
		}
	})

	step(t, "status shows the proxy and what bypasses it", func(t *testing.T) {
		st := n.status()
		if st.Proxy == nil || st.Proxy.URL != url {
			t.Errorf("status proxy: %+v", st.Proxy)
		}
		if !strings.Contains(strings.Join(st.Notes, "\n"), "postgres connections are plain TCP and bypass the proxy") {
			t.Errorf("status notes: %v", st.Notes)
		}
	})

	step(t, "the same proxy again changes nothing", func(t *testing.T) {
		before := n.containers()
		n.mustRun("proxy", "set", "--url", url, "--no-proxy", ".corp.test,10.1.0.0/16")
		if ch := changedServices(before, n.containers()); len(ch) > 0 {
			t.Errorf("recreated %v", ch)
		}
	})

	step(t, "refused settings change nothing", func(t *testing.T) {
		notPEM := filepath.Join(t.TempDir(), "ca.pem")
		os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"--url", "http://user:hunter2@proxy:3128"}, "password authentication is not supported"},
			{[]string{"--url", "socks5://proxy:1080"}, `unknown scheme "socks5"`},
			{[]string{"--url", "http://:3128"}, "has no host"},
			{[]string{"--url", "http://proxy:70000"}, `bad port "70000"`},
			{[]string{"--url", "https://proxy:3129", "--ca-cert", notPEM}, "is not a PEM certificate"},
		} {
			files, ctrs := n.snapshot(), n.containers()
			_, errOut, code := n.run(append([]string{"proxy", "set"}, c.args...)...)
			if code == 0 || !strings.Contains(errOut, c.want) {
				t.Errorf("proxy set %v: exit %d, want an error with %q:\n%s", c.args, code, c.want, errOut)
			}
			if strings.Contains(errOut, "hunter2") {
				t.Errorf("the error shows the password:\n%s", errOut)
			}
			sameSnapshot(t, files, n.snapshot())
			if ch := changedServices(ctrs, n.containers()); len(ch) > 0 {
				t.Errorf("refused proxy set changed %v", ch)
			}
		}
	})

	step(t, "an HTTPS proxy that skips verification is warned about", func(t *testing.T) {
		_, errOut := n.mustRun("proxy", "set", "--url", "https://proxy.corp.test:3129", "--reject-unauthorized=false")
		if !strings.Contains(errOut, "NODE_TLS_REJECT_UNAUTHORIZED=0") {
			t.Errorf("no warning:\n%s", errOut)
		}
		if env := mapsEnv(); !strings.Contains(env, `"NODE_TLS_REJECT_UNAUTHORIZED": "0"`) || strings.Contains(env, "GRPC_PROXY") {
			t.Errorf("HTTPS proxy environment wrong")
		}
	})

	step(t, "proxy clear removes the variables", func(t *testing.T) {
		n.mustRun("proxy", "clear")
		env := mapsEnv()
		for _, k := range []string{"HTTP_PROXY", "http_proxy", "NO_PROXY", "NODE_TLS_REJECT_UNAUTHORIZED"} {
			if strings.Contains(env, `"`+k+`"`) {
				t.Errorf("%s still set after proxy clear", k)
			}
		}
		if st := n.status(); st.Proxy != nil || !st.Healthy {
			t.Errorf("after clear: proxy %+v healthy %v", st.Proxy, st.Healthy)
		}
	})
}
