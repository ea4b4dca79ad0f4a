package proxytest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/proxy"
)

// The real proxies proxy: HTTPS through a CONNECT tunnel and plain HTTP,
// logged with the client's address; and proxy.Check classifies their real
// refusals. Everything stays on loopback.
func TestRealProxies(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	if testing.Short() {
		t.Skip("starts tinyproxy and squid")
	}
	ctx := t.Context()
	ts, err := StartTestServer(ctx, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ts.Close)

	tiny, err := StartTinyproxy(ctx, t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tiny.Stop)
	cert, key, err := ts.CA.Issue("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	squid, err := StartSquidHTTPS(ctx, t.TempDir(), "127.0.0.1", cert, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(squid.Stop)
	closed := closedPort(t)

	for _, p := range []*Proxy{tiny, squid} {
		t.Run(p.Kind, func(t *testing.T) {
			if !strings.HasPrefix(p.URL(), map[string]string{"tinyproxy": "http://127.0.0.1:", "squid": "https://127.0.0.1:"}[p.Kind]) {
				t.Errorf("URL %s", p.URL())
			}
			client := through(p, ts.CA.Pool())
			for _, u := range []string{ts.HTTPSURL("/" + p.Kind + "/tls"), ts.HTTPURL("/" + p.Kind + "/plain")} {
				if body := get(t, client, u); body != ts.Marker {
					t.Errorf("GET %s through %s: %q, want the marker", u, p.Kind, body)
				}
			}
			want := []LogEntry{
				{Client: "127.0.0.1", Method: "CONNECT", Target: ts.HTTPSAddr},
				{Client: "127.0.0.1", Method: "GET", Target: ts.HTTPURL("/" + p.Kind + "/plain")},
			}
			if p.Kind == "squid" {
				want[0].Status, want[1].Status = 200, 200
			}
			waitEntries(t, p, want)
			paths := map[string]bool{}
			for _, r := range ts.Requests() {
				paths[r.Path] = true
			}
			if !paths["/"+p.Kind+"/tls"] || !paths["/"+p.Kind+"/plain"] {
				t.Errorf("the test server saw %v", ts.Requests())
			}

			res := proxy.Check(ctx, client, []proxy.Target{{Domain: ts.HTTPSAddr}, {Domain: closed}}, 2)
			if !res[0].OK || res[0].Via != "proxy" {
				t.Errorf("check of the test server: %+v", res[0])
			}
			if res[1].Kind != proxy.KindConnectRefused {
				t.Errorf("check of a closed port: %+v", res[1])
			}
			other, _ := NewCA("someone else")
			res = proxy.Check(ctx, through(p, other.Pool()), []proxy.Target{{Domain: ts.HTTPSAddr}}, 1)
			if res[0].Kind != proxy.KindTLSUnknownAuthority {
				t.Errorf("check without the CA: %+v", res[0])
			}
			t.Logf("%s: %s", p.Kind, res[0].Reason)
		})
	}

	t.Run("stop", func(t *testing.T) {
		for _, p := range []*Proxy{tiny, squid} {
			p.Stop()
			if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s still listens after Stop", p.Kind)
			}
			if log, err := p.AccessLog(); err != nil || log == "" {
				t.Errorf("%s log after Stop: %q %v", p.Kind, log, err)
			}
			p.Stop()
		}
	})
}

func TestParseLog(t *testing.T) {
	squid := `1795316106.933      3 172.20.0.5 TCP_TUNNEL/200 1491 CONNECT 172.20.0.1:39443 - HIER_DIRECT/172.20.0.1 -
1795316106.944      0 172.20.0.6 TCP_MISS/200 3426 GET http://172.20.0.1:39444/x - HIER_DIRECT/172.20.0.1 text/plain
1795316106.959      0 127.0.0.1 NONE_NONE/500 0 CONNECT nonexistent.invalid:443 - HIER_NONE/- -
`
	tiny := `CONNECT   Nov 22 02:55:43.236 [11789]: Connect (file descriptor 5): 172.20.0.5
CONNECT   Nov 22 02:55:43.237 [11789]: Request (file descriptor 5): CONNECT 172.20.0.1:39443 HTTP/1.1
INFO      Nov 22 02:55:43.237 [11789]: No upstream proxy for 172.20.0.1
CONNECT   Nov 22 02:55:43.249 [11789]: Connect (file descriptor 6): 172.20.0.6
CONNECT   Nov 22 02:55:43.249 [11789]: Connect (file descriptor 5): 172.20.0.7
CONNECT   Nov 22 02:55:43.249 [11789]: Request (file descriptor 5): GET http://172.20.0.1:39444/x HTTP/1.1
CONNECT   Nov 22 02:55:43.250 [11789]: Request (file descriptor 6): CONNECT nonexistent.invalid:443 HTTP/1.1
`
	for _, c := range []struct {
		kind, text string
		want       string
	}{
		{"squid", squid, "[{172.20.0.5 CONNECT 172.20.0.1:39443 200} {172.20.0.6 GET http://172.20.0.1:39444/x 200} {127.0.0.1 CONNECT nonexistent.invalid:443 500}]"},
		{"tinyproxy", tiny, "[{172.20.0.5 CONNECT 172.20.0.1:39443 0} {172.20.0.7 GET http://172.20.0.1:39444/x 0} {172.20.0.6 CONNECT nonexistent.invalid:443 0}]"},
	} {
		if got := fmt.Sprint(parseLog(c.kind, c.text)); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.kind, got, c.want)
		}
	}
}

func through(p *Proxy, roots *x509.CertPool) *http.Client {
	u, _ := url.Parse(p.URL())
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		Proxy:             http.ProxyURL(u),
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		DisableKeepAlives: true, // squid logs a tunnel when it closes
	}}
}

func get(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitEntries polls the access log (squid writes a line when a request
// ends) until it holds want, for at most 10 s.
func waitEntries(t *testing.T, p *Proxy, want []LogEntry) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := p.Entries()
		missing := 0
		for _, w := range want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				missing++
			}
		}
		if err == nil && missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			log, _ := p.AccessLog()
			t.Fatalf("%s log lacks %v (%v):\n%s", p.Kind, want, err, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
