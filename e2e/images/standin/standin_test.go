package main

import (
	"bufio"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	log.SetOutput(io.Discard) // request logs
	os.Exit(m.Run())
}

func testServer(t *testing.T, env map[string]string) (*server, *httptest.Server) {
	t.Helper()
	s := newServer(config{Image: "maps-api", Version: "2025.11.3", Mode: modeServer, Args: []string{"node", "index.js"}}, true)
	s.getenv = func(k string) string { return env[k] }
	s.environ = func() []string {
		var kv []string
		for k, v := range env {
			kv = append(kv, k+"="+v)
		}
		return kv
	}
	s.exit = func(int) { t.Error("exit called") }
	ts := httptest.NewServer(s.handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func do(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthFollowsControl(t *testing.T) {
	_, ts := testServer(t, nil)
	steps := []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/health", 200, "ok"},
		{"POST", "/control/unhealthy", 200, "ok"},
		{"GET", "/health", 503, "unhealthy\n"},
		{"POST", "/control/healthy", 200, "ok"},
		{"GET", "/health", 200, "ok"},
		{"GET", "/control/unhealthy", 405, ""},
	}
	for _, st := range steps {
		status, body := do(t, st.method, ts.URL+st.path)
		if status != st.status || (st.body != "" && body != st.body) {
			t.Errorf("%s %s = %d %q, want %d %q", st.method, st.path, status, body, st.status, st.body)
		}
	}
}

func TestStartsUnhealthyWhenToldTo(t *testing.T) {
	s := newServer(config{Image: "maps-api"}, false)
	ts := httptest.NewServer(s.handler())
	defer ts.Close()
	if status, _ := do(t, "GET", ts.URL+"/health"); status != 503 {
		t.Errorf("/health = %d, want 503", status)
	}
}

func TestEnvAndWhoami(t *testing.T) {
	_, ts := testServer(t, map[string]string{"SELFHOSTED_DOMAIN": "carto.example.test", "EMPTY": ""})
	_, body := do(t, "GET", ts.URL+"/env")
	var env map[string]string
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatal(err)
	}
	if env["SELFHOSTED_DOMAIN"] != "carto.example.test" || len(env) != 2 {
		t.Errorf("/env = %v", env)
	}

	_, body = do(t, "GET", ts.URL+"/whoami")
	var w Whoami
	if err := json.Unmarshal([]byte(body), &w); err != nil {
		t.Fatal(err)
	}
	if w.Image != "maps-api" || w.Version != "2025.11.3" || strings.Join(w.Args, " ") != "node index.js" || w.Hostname == "" {
		t.Errorf("/whoami = %+v", w)
	}
}

func TestFile(t *testing.T) {
	_, ts := testServer(t, nil)
	p := filepath.Join(t.TempDir(), "key.json")
	os.WriteFile(p, []byte(`{"type":"service_account"}`), 0o600)
	for _, c := range []struct {
		query  string
		status int
		body   string
	}{
		{"?path=" + url.QueryEscape(p), 200, `{"type":"service_account"}`},
		{"?path=" + url.QueryEscape(p+".missing"), 404, ""},
		{"", 400, ""},
	} {
		status, body := do(t, "GET", ts.URL+"/file"+c.query)
		if status != c.status || (c.body != "" && body != c.body) {
			t.Errorf("/file%s = %d %q, want %d %q", c.query, status, body, c.status, c.body)
		}
	}
}

func TestAnyOtherPathEchoes(t *testing.T) {
	_, ts := testServer(t, nil)
	status, body := do(t, "POST", ts.URL+"/api/v3/maps/public/x?y=1")
	var e Echo
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatal(err)
	}
	if status != 200 || e != (Echo{Image: "maps-api", Version: "2025.11.3", Path: "/api/v3/maps/public/x"}) {
		t.Errorf("echo = %d %+v", status, e)
	}
}

func TestControlExitAnswersThenExits(t *testing.T) {
	s, ts := testServer(t, nil)
	codes := make(chan int, 1)
	s.exit = func(code int) { codes <- code }
	if status, _ := do(t, "POST", ts.URL+"/control/exit?code=7"); status != 200 {
		t.Fatalf("status %d", status)
	}
	select {
	case c := <-codes:
		if c != 7 {
			t.Errorf("exit(%d), want 7", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit")
	}
	if status, _ := do(t, "POST", ts.URL+"/control/exit?code=x"); status != 400 {
		t.Errorf("bad code: status %d, want 400", status)
	}
}

// fakeRedis answers one RESP command per connection: +OK to AUTH, +PONG
// to PING.
func fakeRedis(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch strings.TrimSpace(line) {
					case "PING":
						io.WriteString(c, "+PONG\r\n")
					case "AUTH":
						io.WriteString(c, "+OK\r\n")
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRedisPing(t *testing.T) {
	host, port, _ := net.SplitHostPort(fakeRedis(t))
	for _, env := range []map[string]string{
		{"REDIS_HOST": host, "REDIS_PORT": port},
		{"REDIS_HOST": host, "REDIS_PORT": port, "REDIS_PASSWORD": "s3cret"},
	} {
		_, ts := testServer(t, env)
		if status, body := do(t, "GET", ts.URL+"/redis"); status != 200 || body != "+PONG" {
			t.Errorf("%v: /redis = %d %q", env, status, body)
		}
	}
	_, ts := testServer(t, nil)
	if status, _ := do(t, "GET", ts.URL+"/redis"); status != 503 {
		t.Errorf("/redis without REDIS_HOST = %d, want 503", status)
	}
}

func TestDBWithoutSettingsIsUnavailable(t *testing.T) {
	_, ts := testServer(t, nil)
	if status, body := do(t, "GET", ts.URL+"/db"); status != 503 {
		t.Errorf("/db = %d %q, want 503", status, body)
	}
}

func TestFetch(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.URL.Path)
	}))
	defer upstream.Close()
	_, ts := testServer(t, nil)

	_, body := do(t, "GET", ts.URL+"/fetch?url="+url.QueryEscape(upstream.URL+"/x"))
	var res FetchResult
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || res.Body != "hello from /x" || res.Error != "" {
		t.Errorf("/fetch = %+v", res)
	}

	upstream.Close()
	status, body := do(t, "GET", ts.URL+"/fetch?url="+url.QueryEscape(upstream.URL+"/x"))
	if status != http.StatusBadGateway || !strings.Contains(body, "error") {
		t.Errorf("/fetch of a closed server = %d %q", status, body)
	}
}

func TestCacheProxiesToUpstream(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "maps "+r.URL.Path)
	}))
	defer upstream.Close()
	s, _ := testServer(t, nil)
	h, err := s.cacheHandler(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()

	resp, err := http.Get(ts.URL + "/api/v3/maps/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "maps /api/v3/maps/x" || resp.Header.Get("X-Cache") != "standin" {
		t.Errorf("proxied: %q, X-Cache %q", b, resp.Header.Get("X-Cache"))
	}
	if status, body := do(t, "GET", ts.URL+"/health"); status != 200 || body != "ok" {
		t.Errorf("cache /health = %d %q", status, body)
	}
	upstream.Close()
	if status, _ := do(t, "GET", ts.URL+"/x"); status != http.StatusBadGateway {
		t.Errorf("upstream down: %d, want 502", status)
	}
}

func TestConfigFromEnv(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		args []string
		want config
	}{
		{"defaults", nil, []string{"/standin"}, config{Image: "standin", Version: "dev", Mode: modeServer}},
		{"service with args", map[string]string{"STANDIN_IMAGE": "maps-api", "STANDIN_VERSION": "1"},
			[]string{"/standin", "node", "x.js"}, config{Image: "maps-api", Version: "1", Mode: modeServer, Args: []string{"node", "x.js"}}},
		{"workspace-db image", map[string]string{"STANDIN_IMAGE": "workspace-db"}, []string{"/standin"},
			config{Image: "workspace-db", Version: "dev", Mode: modeMigrate}},
		{"template entrypoint", map[string]string{"STANDIN_IMAGE": "workspace-db"}, []string{"/usr/src/app/onprem-init-db.sh"},
			config{Image: "workspace-db", Version: "dev", Mode: modeMigrate}},
		{"mode override", map[string]string{"STANDIN_IMAGE": "workspace-db", "STANDIN_MODE": "server"}, []string{"/standin"},
			config{Image: "workspace-db", Version: "dev", Mode: modeServer}},
	} {
		got := configFromEnv(func(k string) string { return c.env[k] }, c.args)
		if got.Image != c.want.Image || got.Version != c.want.Version || got.Mode != c.want.Mode || strings.Join(got.Args, " ") != strings.Join(c.want.Args, " ") {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestFaultSettings(t *testing.T) {
	if k := failEnvKey("consumers/cdn-invalidator-sub"); k != "STANDIN_FAIL_CONSUMERS_CDN_INVALIDATOR_SUB" {
		t.Errorf("failEnvKey = %s", k)
	}
	env := map[string]string{"STANDIN_FAIL": "unhealthy", "STANDIN_FAIL_MAPS_API": "exit"}
	get := func(k string) string { return env[k] }
	if v := failSetting("maps-api", get); v != "exit" {
		t.Errorf("maps-api: %q, want the per-image exit", v)
	}
	if v := failSetting("workspace-api", get); v != "unhealthy" {
		t.Errorf("workspace-api: %q, want the generic unhealthy", v)
	}
	for _, c := range []struct {
		in      string
		want    fault
		wantErr bool
	}{
		{"", fault{Kind: failNone}, false},
		{"exit", fault{Kind: failExit}, false},
		{"unhealthy", fault{Kind: failUnhealthy}, false},
		{"crash-after=5s", fault{Kind: failCrashAfter, After: 5 * time.Second}, false},
		{"crash-after=soon", fault{}, true},
		{"explode", fault{}, true},
	} {
		got, err := parseFail(c.in)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("parseFail(%q) = %+v, %v; want %+v (error: %t)", c.in, got, err, c.want, c.wantErr)
		}
	}
}

// connectProxy is a forward proxy on loopback (TLS when tlsOn): CONNECT
// tunnels and plain GETs, every destination name mapped to 127.0.0.1 so
// that nothing leaves the machine. seen records "CONNECT host:port" and
// "GET url".
func connectProxy(t *testing.T, tlsOn bool) (proxyURL string, seen func() []string) {
	t.Helper()
	var mu sync.Mutex
	var log []string
	record := func(s string) {
		mu.Lock()
		log = append(log, s)
		mu.Unlock()
	}
	local := func(hostport string) string {
		_, port, _ := net.SplitHostPort(hostport)
		return net.JoinHostPort("127.0.0.1", port)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			record("CONNECT " + r.Host)
			up, err := net.DialTimeout("tcp", local(r.Host), 2*time.Second)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer up.Close()
			w.WriteHeader(http.StatusOK)
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			go func() { io.Copy(up, brw); up.Close() }()
			io.Copy(c, up)
			return
		}
		record("GET " + r.URL.String())
		out, _ := http.NewRequest(r.Method, "http://"+local(r.URL.Host)+r.URL.RequestURI(), nil)
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
	var ts *httptest.Server
	if tlsOn {
		ts = httptest.NewTLSServer(h)
	} else {
		ts = httptest.NewServer(h)
	}
	t.Cleanup(ts.Close)
	return ts.URL, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), log...)
	}
}

// /fetch goes out as a Node service would: through the proxy its
// environment names (upper or lower case), over TLS to an HTTPS proxy,
// trusting NODE_EXTRA_CA_CERTS, and accepting anything with
// NODE_TLS_REJECT_UNAUTHORIZED=0.
func TestFetchThroughProxy(t *testing.T) {
	dest := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "marker "+r.URL.Path)
	}))
	defer dest.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "plain "+r.URL.Path)
	}))
	defer plain.Close()
	// The test certificate covers example.com: the proxies map it to
	// 127.0.0.1 (a loopback URL would never be proxied).
	_, destPort, _ := net.SplitHostPort(dest.Listener.Addr().String())
	_, plainPort, _ := net.SplitHostPort(plain.Listener.Addr().String())
	httpsURL := "https://example.com:" + destPort + "/x"
	httpURL := "http://example.com:" + plainPort + "/y"
	ca := filepath.Join(t.TempDir(), "proxy-ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: dest.Certificate().Raw}), 0o644)

	httpProxy, httpSeen := connectProxy(t, false)
	httpsProxy, httpsSeen := connectProxy(t, true)
	for _, c := range []struct {
		name     string
		env      map[string]string
		url      string
		query    string
		wantBody string // "" means an error is expected
		wantErr  string
		seen     func() []string
		wantSeen string
		proxy    string
	}{
		{"lower-case http_proxy, plain GET", map[string]string{"http_proxy": httpProxy}, httpURL, "", "plain /y", "", httpSeen, "GET " + httpURL, httpProxy},
		{"HTTPS_PROXY tunnel, extra CA", map[string]string{"HTTPS_PROXY": httpProxy, "NODE_EXTRA_CA_CERTS": ca}, httpsURL, "", "marker /x", "", httpSeen, "CONNECT example.com:" + destPort, httpProxy},
		{"HTTPS proxy, extra CA", map[string]string{"HTTPS_PROXY": httpsProxy, "https_proxy": "http://wrong.invalid:1", "NODE_EXTRA_CA_CERTS": ca}, httpsURL, "", "marker /x", "", httpsSeen, "CONNECT example.com:" + destPort, httpsProxy},
		{"HTTPS proxy, lower-case variables", map[string]string{"https_proxy": httpsProxy, "node_extra_ca_certs": ca}, httpsURL, "", "marker /x", "", nil, "", httpsProxy},
		{"HTTPS proxy, no CA", map[string]string{"HTTPS_PROXY": httpsProxy}, httpsURL, "", "", "certificate signed by unknown authority", nil, "", httpsProxy},
		{"HTTPS proxy, no CA, NODE_TLS_REJECT_UNAUTHORIZED=0", map[string]string{"HTTPS_PROXY": httpsProxy, "NODE_TLS_REJECT_UNAUTHORIZED": "0"}, httpsURL, "", "marker /x", "", nil, "", httpsProxy},
		{"HTTPS proxy, no CA, NODE_TLS_REJECT_UNAUTHORIZED=1", map[string]string{"HTTPS_PROXY": httpsProxy, "NODE_TLS_REJECT_UNAUTHORIZED": "1"}, httpsURL, "", "", "certificate signed by unknown authority", nil, "", httpsProxy},
		{"insecure=1", map[string]string{"HTTPS_PROXY": httpProxy}, httpsURL, "&insecure=1", "marker /x", "", nil, "", httpProxy},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before int
			if c.seen != nil {
				before = len(c.seen())
			}
			_, ts := testServer(t, c.env)
			_, body := do(t, "GET", ts.URL+"/fetch?url="+url.QueryEscape(c.url)+c.query)
			var res FetchResult
			if err := json.Unmarshal([]byte(body), &res); err != nil {
				t.Fatal(err, body)
			}
			if res.Proxy != c.proxy {
				t.Errorf("proxy %q, want %q", res.Proxy, c.proxy)
			}
			if c.wantBody != "" && (res.Body != c.wantBody || res.Status != 200 || res.Error != "") {
				t.Errorf("/fetch = %+v, want body %q", res, c.wantBody)
			}
			if c.wantBody == "" && !strings.Contains(res.Error, c.wantErr) {
				t.Errorf("/fetch = %+v, want error %q", res, c.wantErr)
			}
			if c.seen != nil {
				if got := c.seen()[before:]; len(got) != 1 || got[0] != c.wantSeen {
					t.Errorf("the proxy saw %q, want %q", got, c.wantSeen)
				}
			}
		})
	}
}

func TestOutboundRouting(t *testing.T) {
	env := map[string]string{"HTTP_PROXY": "http://proxy.test:3128", "HTTPS_PROXY": "http://proxy.test:3128", "NO_PROXY": "localhost,127.0.0.1,maps-api,.internal.test", "NODE_EXTRA_CA_CERTS": "/nonexistent/ca.pem"}
	s, _ := testServer(t, env)
	for _, c := range []struct {
		url    string
		direct bool
		want   string
	}{
		{"https://carto.com/", false, "http://proxy.test:3128"},
		{"http://172.18.0.1:8080/", false, "http://proxy.test:3128"},
		{"http://maps-api:3000/", false, ""},
		{"https://db.internal.test/", false, ""},
		{"http://127.0.0.1:3000/", false, ""},
		{"https://carto.com/", true, ""},
	} {
		ob := s.outbound(c.direct, false)
		req, _ := http.NewRequest("GET", c.url, nil)
		p, err := ob.proxy(req)
		got := ""
		if p != nil {
			got = p.String()
		}
		if err != nil || got != c.want {
			t.Errorf("%s (direct %t): proxy %q %v, want %q", c.url, c.direct, got, err, c.want)
		}
		if !strings.Contains(ob.caWarning, "/nonexistent/ca.pem") {
			t.Errorf("no warning about the missing CA file: %q", ob.caWarning)
		}
	}
}

func TestWithoutProxy(t *testing.T) {
	got := withoutProxy([]string{"HTTP_PROXY=http://p:3128", "http_proxy=http://p:3128", "HTTPS_PROXY=x", "https_proxy=x", "All_Proxy=x", "NO_PROXY=localhost", "no_proxy=localhost", "PATH=/bin", "GRPC_PROXY=http://p:3128"})
	if strings.Join(got, " ") != "NO_PROXY=localhost no_proxy=localhost PATH=/bin GRPC_PROXY=http://p:3128" {
		t.Errorf("withoutProxy = %q", got)
	}
}

func TestWgetHonoursNoProxy(t *testing.T) {
	env := map[string]string{"http_proxy": "http://172.20.0.1:3128", "HTTPS_PROXY": "http://172.20.0.1:3128", "NO_PROXY": "localhost,127.0.0.1,maps-api"}
	get := func(k string) string { return env[k] }
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"-q", "-O", "/dev/null", "http://127.0.0.1:3000/health"}, false},
		{[]string{"-q", "-O-", "http://maps-api:3000/whoami"}, false},
		{[]string{"-q", "-O-", "http://172.20.0.1:8080/x"}, true},
		{[]string{"-q", "-O-", "https://carto.com/"}, true},
		{[]string{"-Y", "off", "-q", "-O-", "https://carto.com/"}, false},
		{[]string{"--help"}, false},
	} {
		if got := wgetProxied(c.args, get); got != c.want {
			t.Errorf("wget %v: proxied %t, want %t", c.args, got, c.want)
		}
	}
}

func TestSetupImage(t *testing.T) {
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "busybox"), nil, 0o755)
	os.Symlink("busybox", filepath.Join(bin, "sh"))
	if err := setupImage(bin, "/standin"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sh", "wget"} {
		if l, err := os.Readlink(filepath.Join(bin, name)); err != nil || l != "/standin" {
			t.Errorf("%s -> %q %v", name, l, err)
		}
	}
}

func TestMulticallLeavesTheServiceAlone(t *testing.T) {
	for _, args := range [][]string{{"/standin"}, {"/standin", "node", "index.js"}, {"/usr/src/app/onprem-init-db.sh"}} {
		if _, ok := multicall(args); ok {
			t.Errorf("multicall took %v", args)
		}
	}
}
