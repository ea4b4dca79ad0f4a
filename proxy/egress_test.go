package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Everything here runs on loopback: destinations are httptest servers, the
// proxy is egProxy (a CONNECT proxy that answers like squid or tinyproxy),
// and names resolve through egDNS (NXDOMAIN for *.invalid, SERVFAIL for
// the rest), so the errors classified are the ones Go really returns.

func TestCheckClassifiesRealErrors(t *testing.T) {
	ca, other := newEgCA(t, "egress test CA"), newEgCA(t, "unknown CA")
	resolver := egResolver(t)

	ok := egServer(t, ca, http.StatusTeapot, nil) // any status is reachable
	headNotAllowed := egServer(t, ca, http.StatusMethodNotAllowed, nil)
	untrusted := egServer(t, other, http.StatusOK, nil)
	blockPage := egServer(t, ca, http.StatusForbidden, http.Header{"X-Squid-Error": {"ERR_ACCESS_DENIED 0"}})
	blackhole := egBlackhole(t)
	closed := egClosedPort(t)

	squid := startEgProxy(t, "squid", nil)
	tiny := startEgProxy(t, "tinyproxy", nil)
	httpsProxy := startEgProxy(t, "squid", ca.leaf(t, "127.0.0.1"))
	untrustedProxy := startEgProxy(t, "squid", other.leaf(t, "127.0.0.1"))
	for _, p := range []*egProxy{squid, tiny, httpsProxy, untrustedProxy} {
		p.hosts["dest.test"] = "127.0.0.1"
	}
	deadProxy := &url.URL{Scheme: "http", Host: egClosedPort(t)}

	roots := ca.pool()
	direct := egClient(nil, roots, 5*time.Second, resolver)
	viaSquid := egClient(squid.url, roots, 5*time.Second, resolver)
	viaTiny := egClient(tiny.url, roots, 5*time.Second, resolver)
	short := 500 * time.Millisecond

	cases := []struct {
		name     string
		client   *http.Client
		domain   string
		wantVia  string
		wantKind string // "" means OK
		reason   string // a part of Reason
	}{
		{"direct, any status", direct, ok.addr, "direct", "", ""},
		{"through the proxy", viaSquid, "dest.test:" + ok.port, "proxy", "", ""},
		{"through an HTTPS proxy", egClient(httpsProxy.url, roots, 5*time.Second, resolver), "dest.test:" + ok.port, "proxy", "", ""},
		{"HEAD refused, GET answers", direct, headNotAllowed.addr, "direct", "", ""},

		{"direct, name does not exist", direct, "nonexistent.invalid", "direct", KindDNS, "nonexistent.invalid does not resolve"},
		{"squid says ERR_DNS_FAIL", viaSquid, "dnsfail.test", "proxy", KindDNS, "ERR_DNS_FAIL"},
		{"squid cannot forward, name does not exist", viaSquid, "nonexistent.invalid", "proxy", KindDNS, "does not exist in DNS"},
		{"tinyproxy cannot connect, name does not exist", viaTiny, "nonexistent.invalid", "proxy", KindDNS, "does not exist in DNS"},
		{"tinyproxy cannot connect, name unknown here too", viaTiny, "elsewhere.test", "proxy", KindConnectRefused, "Unable to connect"},

		{"proxy forbids", viaSquid, "refused.test", "proxy", KindConnectRefused, "403 Forbidden"},
		{"proxy wants a password", viaSquid, "auth.test", "proxy", KindConnectRefused, "authentication"},
		{"squid: destination refuses", viaSquid, closed, "proxy", KindConnectRefused, "ERR_CONNECT_FAIL 111"},
		{"tinyproxy: destination refuses", viaTiny, closed, "proxy", KindConnectRefused, "could not connect"},
		{"direct: destination refuses", direct, closed, "direct", KindConnectRefused, "refused the connection"},
		{"block page inside the tunnel", direct, blockPage.addr, "direct", KindConnectRefused, "ERR_ACCESS_DENIED"},

		{"destination signed by an unknown CA", direct, untrusted.addr, "direct", KindTLSUnknownAuthority, `"CN=unknown CA"`},
		{"re-signed by an unknown CA through the proxy", viaSquid, "dest.test:" + untrusted.port, "proxy", KindTLSUnknownAuthority, "if the proxy inspects TLS"},
		{"HTTPS proxy signed by an unknown CA", egClient(untrustedProxy.url, roots, 5*time.Second, resolver), "dest.test:" + ok.port, "proxy", KindTLSUnknownAuthority, "the HTTPS proxy's own certificate"},

		{"destination never answers", egClient(nil, roots, short, resolver), blackhole, "direct", KindTimeout, "in time"},
		{"proxy never answers the CONNECT", egClient(squid.url, roots, short, resolver), "hang.test", "proxy", KindTimeout, "in time"},
		{"proxy says 504", viaSquid, "gatewaytimeout.test", "proxy", KindTimeout, "504"},

		{"proxy is down", egClient(deadProxy, roots, 5*time.Second, resolver), "dest.test", "proxy", KindProxyUnreachable, "connection refused"},
	}
	t.Run("cases", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				r := newChecker(c.client, resolver).run(t.Context(), []Target{{Domain: c.domain, Feature: "core"}}, 1)[0]
				t.Logf("%+v", r)
				if c.wantKind == "" {
					if !r.OK || r.Kind != "" || r.Reason != "" {
						t.Errorf("got %+v, want OK", r)
					}
				} else if r.OK || r.Kind != c.wantKind || !strings.Contains(r.Reason, c.reason) {
					t.Errorf("got kind %q reason %q, want %q with %q", r.Kind, r.Reason, c.wantKind, c.reason)
				}
				if r.Via != c.wantVia || r.Domain != c.domain || r.Feature != "core" || r.Elapsed <= 0 {
					t.Errorf("got %+v, want via %s", r, c.wantVia)
				}
			})
		}
	})
	if got := strings.Join(headNotAllowed.methodsSeen(), " "); got != "HEAD GET" {
		t.Errorf("methods %q, want HEAD then GET", got)
	}
}

// The client the appliance really uses (HTTPClient) routes through the
// proxy, except for loopback; Check reports which way each domain went.
func TestCheckWithHTTPClient(t *testing.T) {
	ca := newEgCA(t, "egress test CA")
	ok := egServer(t, ca, http.StatusOK, nil)
	p := startEgProxy(t, "squid", nil)
	p.hosts["dest.test"] = "127.0.0.1"
	client, err := HTTPClient(Settings{URL: p.url.String()}, ca.pem, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	res := Check(t.Context(), client, []Target{{Domain: "dest.test:" + ok.port}, {Domain: ok.addr}}, 2)
	if !res[0].OK || res[0].Via != "proxy" || !res[1].OK || res[1].Via != "direct" {
		t.Errorf("results %+v", res)
	}
	if got := p.connectsSeen(); len(got) != 1 || got[0] != "dest.test:"+ok.port {
		t.Errorf("the proxy saw CONNECT %v, want dest.test only", got)
	}
}

// A transport Check cannot look into still gets the CONNECT refusals
// classified, from Go's status text.
func TestCheckOpaqueTransport(t *testing.T) {
	p := startEgProxy(t, "squid", nil)
	inner := egClient(p.url, nil, 5*time.Second, nil).Transport
	client := &http.Client{Timeout: 5 * time.Second, Transport: egRoundTripper(inner.RoundTrip)}
	res := Check(t.Context(), client, []Target{{Domain: "refused.test"}, {Domain: "gatewaytimeout.test"}}, 2)
	if res[0].Kind != KindConnectRefused || res[1].Kind != KindTimeout || res[0].Via != "" {
		t.Errorf("results %+v", res)
	}
}

func TestCheckWildcardIsNotCheckable(t *testing.T) {
	client := &http.Client{Transport: egRoundTripper(func(*http.Request) (*http.Response, error) {
		t.Error("a wildcard was requested")
		return nil, io.EOF
	})}
	for _, r := range Check(t.Context(), client, []Target{{Domain: ".snowflakecomputing.com", Optional: true, Feature: "snowflake"}, {Domain: "*.example.com"}}, 0) {
		if r.OK || r.Kind != KindNotCheckable || !strings.HasPrefix(r.Reason, "not checkable: wildcard") {
			t.Errorf("%+v", r)
		}
	}
}

// Check runs at most parallel requests at a time and returns the results
// in the targets' order, whatever order they finish in. In a synctest
// bubble, synctest.Wait returns once every request is either under way
// (blocked in the transport until the test lets it finish) or waiting its
// turn, so the bound is checked exactly, without counting on requests
// happening to overlap in time.
func TestCheckIsBoundedAndOrdered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu      sync.Mutex
			running []string                     // hosts whose request is under way, in arrival order
			gates   = map[string]chan struct{}{} // closed: that request answers
			peak    int
		)
		var targets []Target
		for i := range 9 {
			host := fmt.Sprintf("host%d.test", i)
			gates[host] = make(chan struct{})
			targets = append(targets, Target{Domain: host, Feature: fmt.Sprint(i)})
		}
		client := &http.Client{Transport: egRoundTripper(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			running = append(running, r.URL.Hostname())
			peak = max(peak, len(running))
			mu.Unlock()
			select {
			case <-gates[r.URL.Hostname()]:
				return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
			case <-r.Context().Done():
				return nil, r.Context().Err()
			}
		})}
		done := make(chan []Result)
		go func() { done <- Check(t.Context(), client, targets, 3) }()
		for finished := 0; finished < len(targets); finished++ {
			synctest.Wait()
			mu.Lock()
			if want := min(3, len(targets)-finished); len(running) != want {
				t.Fatalf("%d requests under way (%v) with %d finished, want %d", len(running), running, finished, want)
			}
			// The newest first: the results must still come in order.
			last := running[len(running)-1]
			running = running[:len(running)-1]
			mu.Unlock()
			close(gates[last])
		}
		res := <-done
		for i, r := range res {
			if !r.OK || r.Domain != targets[i].Domain || r.Feature != fmt.Sprint(i) {
				t.Errorf("result %d: %+v", i, r)
			}
		}
		if peak != 3 {
			t.Errorf("at most %d requests at a time, want 3", peak)
		}
	})
}

// A cancelled check returns at once with every target failed. On the
// bubble's clock, which moves only when everything waits, no time passes
// unless Check waits for a timer (its 30 s default timeout) instead of
// the context.
func TestCheckCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := &http.Client{Transport: egRoundTripper(func(r *http.Request) (*http.Response, error) {
			<-r.Context().Done() // never answers
			return nil, r.Context().Err()
		})}
		var targets []Target
		for i := range 9 {
			targets = append(targets, Target{Domain: fmt.Sprintf("host%d.test", i)})
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		start := time.Now()
		for _, r := range Check(ctx, client, targets, 1) {
			if r.OK || r.Kind != KindOther || !strings.Contains(r.Reason, "cancelled") {
				t.Errorf("cancelled check: %+v", r)
			}
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("a cancelled check waited %s", d)
		}
	})
}

// A destination or a proxy that never answers is reported as a timeout
// once the client's timeout (DefaultTimeout when it has none) has passed,
// and a proxy that refuses a CONNECT but never finishes its page is
// classified from its headers after 2 s. A real *http.Transport talks over
// in-memory connections whose far end never answers, in a synctest bubble:
// each timer fires exactly when due on the bubble's clock, so the test
// neither races a real timeout nor waits for one; a check left without a
// bound hangs every goroutine, which synctest reports as a deadlock.
func TestCheckTimeoutsOnTheBubblesClock(t *testing.T) {
	proxyURL := &url.URL{Scheme: "http", Host: "proxy.test:3128"}
	cases := []struct {
		name      string
		proxy     *url.URL
		timeout   time.Duration  // the client's; 0: DefaultTimeout applies
		far       func(net.Conn) // the other end of the connection
		wantKind  string
		reason    string
		wantAfter time.Duration
	}{
		{"destination never answers, default timeout", nil, 0, egSilent, KindTimeout, "no answer from dest.test in time", DefaultTimeout},
		{"destination never answers, the client's timeout", nil, 7 * time.Second, egSilent, KindTimeout, "in time", 7 * time.Second},
		{"proxy never answers the CONNECT", proxyURL, 0, egReadsForever, KindTimeout, "in time", DefaultTimeout},
		{"proxy refuses and never sends its page", proxyURL, 0, egRefusesWithoutPage, KindConnectRefused, "500 Internal Server Error", 2 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var mu sync.Mutex // the transport dials in goroutines of its own
				var conns []net.Conn
				t.Cleanup(func() {
					mu.Lock()
					defer mu.Unlock()
					for _, c := range conns {
						c.Close()
					}
				})
				tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
					near, far := net.Pipe()
					mu.Lock()
					conns = append(conns, near, far)
					mu.Unlock()
					go c.far(far)
					return near, nil
				}}
				if c.proxy != nil {
					tr.Proxy = http.ProxyURL(c.proxy)
				}
				// No resolver: the ambiguous 500 is not looked up in DNS.
				start := time.Now()
				r := newChecker(&http.Client{Transport: tr, Timeout: c.timeout}, nil).run(t.Context(), []Target{{Domain: "dest.test"}}, 1)[0]
				t.Logf("%+v", r)
				if r.OK || r.Kind != c.wantKind || !strings.Contains(r.Reason, c.reason) {
					t.Errorf("got kind %q reason %q, want %q with %q", r.Kind, r.Reason, c.wantKind, c.reason)
				}
				if d := time.Since(start); d != c.wantAfter {
					t.Errorf("answered after %s, want %s", d, c.wantAfter)
				}
			})
		})
	}
}

// egSilent is a server that never reads nor writes.
func egSilent(net.Conn) {}

// egReadsForever is a proxy that reads the CONNECT and never answers.
func egReadsForever(c net.Conn) { io.Copy(io.Discard, c) }

// egRefusesWithoutPage is a proxy that refuses the CONNECT with a page it
// announces and never sends.
func egRefusesWithoutPage(c net.Conn) {
	if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
		return
	}
	io.WriteString(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: 100\r\n\r\n")
	io.Copy(io.Discard, c)
}

func TestResultJSON(t *testing.T) {
	b, err := json.Marshal(Result{Domain: "carto.com", Feature: "core", Kind: KindDNS, Reason: "x", Elapsed: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"domain":"carto.com","optional":false,"feature":"core","ok":false,"kind":"dns","reason":"x","elapsed_ns":1000000000}`
	if string(b) != want {
		t.Errorf("JSON %s\nwant %s", b, want)
	}
}

func TestTargetURL(t *testing.T) {
	for in, want := range map[string]string{
		"carto.com":           "https://carto.com/",
		"carto.com:8443":      "https://carto.com:8443/",
		"https://carto.com/x": "https://carto.com/",
		"10.0.0.1":            "https://10.0.0.1/",
		"fd00::1":             "https://[fd00::1]/",
		" auth.carto.com ":    "https://auth.carto.com/",
		"user@carto.com":      "",
		"carto.com/path":      "",
		"https://":            "",
	} {
		u, err := targetURL(in)
		got := ""
		if err == nil {
			got = u.String()
		}
		if got != want {
			t.Errorf("targetURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// --- test doubles ---------------------------------------------------------

type egRoundTripper func(*http.Request) (*http.Response, error)

func (f egRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// egClient is a client like the appliance's: through proxyURL (always, when
// set), trusting roots, resolving with resolver.
func egClient(proxyURL *url.URL, roots *x509.CertPool, timeout time.Duration, resolver *net.Resolver) *http.Client {
	d := &net.Dialer{Timeout: timeout, Resolver: resolver}
	tr := &http.Transport{DialContext: d.DialContext, TLSClientConfig: &tls.Config{RootCAs: roots}, TLSHandshakeTimeout: timeout}
	if proxyURL != nil {
		tr.Proxy = http.ProxyURL(proxyURL)
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

type egCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newEgCA(t *testing.T, name string) *egCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &egCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *egCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// leaf issues a server certificate for names (host names or IPs).
func (ca *egCA) leaf(t *testing.T, names ...string) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tpl.IPAddresses = append(tpl.IPAddresses, ip)
		} else {
			tpl.DNSNames = append(tpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

type egDest struct {
	addr, port string
	mu         sync.Mutex
	methods    []string
}

func (d *egDest) methodsSeen() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.methods...)
}

// egServer is an HTTPS destination for dest.test and 127.0.0.1, signed by
// ca, answering status to HEAD (and 200 to GET when status is 405).
func egServer(t *testing.T, ca *egCA, status int, hdr http.Header) *egDest {
	t.Helper()
	d := &egDest{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.methods = append(d.methods, r.Method)
		d.mu.Unlock()
		for k, v := range hdr {
			w.Header()[k] = v
		}
		if status == http.StatusMethodNotAllowed && r.Method == http.MethodGet {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(status)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*ca.leaf(t, "dest.test", "127.0.0.1")}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes refused on purpose
	srv.StartTLS()
	t.Cleanup(srv.Close)
	d.addr = srv.Listener.Addr().String()
	_, d.port, _ = net.SplitHostPort(d.addr)
	return d
}

// egBlackhole accepts connections and never says a word.
func egBlackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// egClosedPort is a loopback address nothing listens on.
func egClosedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// egProxy is a CONNECT proxy that answers like squid 5 or tinyproxy 1.11
// (as measured against the real ones): squid refuses an unresolvable name
// with 500 ERR_CANNOT_FORWARD and a refused connection with 503
// ERR_CONNECT_FAIL 111; tinyproxy answers both with 500 "Unable to
// connect". Special names: refused.test (403), auth.test (407),
// dnsfail.test (503 ERR_DNS_FAIL), gatewaytimeout.test (504), hang.test
// (never answers). Other names resolve through hosts only.
type egProxy struct {
	style string
	url   *url.URL
	hosts map[string]string
	mu    sync.Mutex
	seen  []string
}

func startEgProxy(t *testing.T, style string, cert *tls.Certificate) *egProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &egProxy{style: style, hosts: map[string]string{}, url: &url.URL{Scheme: "http", Host: ln.Addr().String()}}
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}})
		p.url.Scheme = "https"
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				go func() { <-done; c.Close() }()
				p.serve(c)
			})
		}
	})
	return p
}

func (p *egProxy) connectsSeen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

func (p *egProxy) serve(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	p.mu.Lock()
	p.seen = append(p.seen, req.Host)
	p.mu.Unlock()
	answer := func(status, hdr, page string) {
		fmt.Fprintf(c, "HTTP/1.1 %s\r\nServer: %s\r\n%sContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s", status, p.style, hdr, len(page), page)
	}
	host, port, _ := net.SplitHostPort(req.Host)
	switch host {
	case "refused.test":
		answer("403 Forbidden", "X-Squid-Error: ERR_ACCESS_DENIED 0\r\n", "<p>Access Denied.</p>")
		return
	case "auth.test":
		answer("407 Proxy Authentication Required", "Proxy-Authenticate: Basic realm=\"x\"\r\n", "")
		return
	case "dnsfail.test":
		answer("503 Service Unavailable", "X-Squid-Error: ERR_DNS_FAIL 0\r\n", "<p>Unable to determine IP address from host name <q>dnsfail.test</q></p>")
		return
	case "gatewaytimeout.test":
		answer("504 Gateway Timeout", "", "")
		return
	case "hang.test":
		io.Copy(io.Discard, c)
		return
	}
	cannot := func(squidStatus, squidErr, squidPage string) {
		if p.style == "squid" {
			answer(squidStatus, "X-Squid-Error: "+squidErr+"\r\n", squidPage)
		} else {
			answer("500 Unable to connect", "Connection: close\r\n", "<h1>Unable to connect</h1><p>Tinyproxy was unable to connect to the remote web server.</p>")
		}
	}
	ip := host
	if net.ParseIP(host) == nil {
		if ip = p.hosts[host]; ip == "" {
			cannot("500 Internal Server Error", "ERR_CANNOT_FORWARD 0", "<p>Unable to forward this request at this time.</p>")
			return
		}
	}
	up, err := net.DialTimeout("tcp", net.JoinHostPort(ip, port), 2*time.Second)
	if err != nil {
		cannot("503 Service Unavailable", "ERR_CONNECT_FAIL 111", "<p>Connection to "+ip+" failed.</p><p>The system returned: (111) Connection refused</p>")
		return
	}
	defer up.Close()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() {
		io.Copy(up, br)
		up.Close()
	}()
	io.Copy(c, up)
}

// egResolver resolves through egDNS.
func egResolver(t *testing.T) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go egDNS(pc)
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// egDNS answers every query with NXDOMAIN for names under .invalid and
// SERVFAIL for the rest.
func egDNS(pc net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := buf[:n]
		if len(q) < 12 {
			continue
		}
		// The question: labels up to the root, then type and class.
		i, name := 12, []string{}
		for i < len(q) && q[i] != 0 && i+1+int(q[i]) <= len(q) {
			name = append(name, string(q[i+1:i+1+int(q[i])]))
			i += 1 + int(q[i])
		}
		end := i + 5
		if end > len(q) {
			continue
		}
		rcode := byte(2) // SERVFAIL
		if len(name) > 0 && strings.EqualFold(name[len(name)-1], "invalid") {
			rcode = 3 // NXDOMAIN
		}
		resp := append([]byte{q[0], q[1], 0x80 | q[2]&0x79, 0x80 | rcode, 0, 1, 0, 0, 0, 0, 0, 0}, q[12:end]...)
		pc.WriteTo(resp, from)
	}
}
