package proxy

import (
	"encoding/pem"
	"github.com/cartodb/carto-appliance/internal/testca"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		in, want, err string
	}{
		{"http://proxy.corp:3128", "http://proxy.corp:3128", ""},
		{"HTTPS://Proxy.Corp:8443/", "https://proxy.corp:8443", ""},
		{"http://10.0.0.5", "http://10.0.0.5:80", ""},
		{"https://[fd00::1]:3129", "https://[fd00::1]:3129", ""},
		{"http://user:s3cret@proxy:3128", "", "password authentication is not supported"},
		{"http://user@proxy:3128", "", "has credentials"},
		{"socks5://proxy:1080", "", `unknown scheme "socks5"`},
		{"proxy.corp:3128", "", "has no scheme"},
		{"user:s3cret@proxy.corp:3128", "", "has no scheme"},
		{"http://:3128", "", "has no host"},
		{"http://proxy:99999", "", `bad port "99999"`},
		{"http://proxy:abc", "", "not a URL"},
		{"http://proxy:", "", "the port is empty"},
		{"http://proxy:3128/path", "", "no path"},
		{"http://pro xy:3128", "", "not a URL"},
		{"", "", "empty"},
	}
	for _, c := range cases {
		got, err := ParseURL(c.in)
		switch {
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("ParseURL(%q) = %q, %v; want %q", c.in, got, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("ParseURL(%q) error %v; want one containing %q", c.in, err, c.err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseURL(%q) leaks the password: %v", c.in, err)
		}
	}
}

func TestParseNoProxy(t *testing.T) {
	got, err := ParseNoProxy("db.corp, .internal.corp,10.0.0.0/8 *.example.com,registry:5000")
	if err != nil || len(got) != 5 {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"http://x", "a/b", "host:0", "ex@mple"} {
		if _, err := ParseNoProxy(bad + ",ok.com"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func testCA(t *testing.T) []byte {
	t.Helper()
	ca, err := testca.NewCA("proxy CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca.PEM
}

func TestCheckCA(t *testing.T) {
	ca := testCA(t)
	if err := CheckCA(ca, "ca.pem"); err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")})
	for name, data := range map[string][]byte{
		"empty":       nil,
		"not pem":     []byte("hello"),
		"der":         ca[30:200],
		"private key": append(append([]byte{}, ca...), keyPEM...),
		"garbage":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}),
		"trailing":    append(append([]byte{}, ca...), []byte("trailing text")...),
	} {
		if err := CheckCA(data, "ca.pem"); err == nil || !strings.Contains(err.Error(), "ca.pem") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func env(pairs []string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return m
}

func TestEnvHTTPProxy(t *testing.T) {
	pairs, notes := Env(EnvInput{
		Settings: Settings{URL: "http://proxy:3128", NoProxy: []string{".corp"}},
		Services: []string{"maps-api", "valkey"}, Peers: []string{"10.0.0.2"},
	})
	e := env(pairs)
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "GRPC_PROXY"} {
		if e[k] != "http://proxy:3128" || e[strings.ToLower(k)] != "http://proxy:3128" {
			t.Errorf("%s = %q / %q", k, e[k], e[strings.ToLower(k)])
		}
	}
	if want := "localhost,127.0.0.1,maps-api,valkey,10.0.0.2,.corp"; e["NO_PROXY"] != want || e["no_proxy"] != want {
		t.Errorf("NO_PROXY = %q", e["NO_PROXY"])
	}
	if _, ok := e["NODE_TLS_REJECT_UNAUTHORIZED"]; ok {
		t.Error("NODE_TLS_REJECT_UNAUTHORIZED set for an HTTP proxy")
	}
	if len(notes) != 0 {
		t.Errorf("notes %v", notes)
	}
}

func TestEnvHTTPSProxy(t *testing.T) {
	no := false
	pairs, notes := Env(EnvInput{
		Settings:   Settings{URL: "https://proxy:3129", CACert: CAFileName, RejectUnauthorized: &no},
		Services:   []string{"maps-api"},
		Warehouses: []string{"snowflake", "postgres", "databricks"},
	})
	e := env(pairs)
	if _, ok := e["GRPC_PROXY"]; ok {
		t.Error("GRPC_PROXY set for an HTTPS proxy")
	}
	if e["NODE_EXTRA_CA_CERTS"] != CAContainerPath || e["node_extra_ca_certs"] != CAContainerPath {
		t.Errorf("NODE_EXTRA_CA_CERTS = %q", e["NODE_EXTRA_CA_CERTS"])
	}
	if e["NODE_TLS_REJECT_UNAUTHORIZED"] != "0" || e["node_tls_reject_unauthorized"] != "0" {
		t.Errorf("NODE_TLS_REJECT_UNAUTHORIZED = %q", e["NODE_TLS_REJECT_UNAUTHORIZED"])
	}
	if !strings.HasSuffix(e["NO_PROXY"], ",.snowflakecomputing.com") {
		t.Errorf("NO_PROXY %q lacks Snowflake", e["NO_PROXY"])
	}
	joined := strings.Join(notes, "\n")
	for _, want := range []string{"NODE_TLS_REJECT_UNAUTHORIZED=0", "Snowflake", "postgres connections are plain TCP", "databricks does not support a proxy"} {
		if !strings.Contains(joined, want) {
			t.Errorf("notes lack %q:\n%s", want, joined)
		}
	}
	if pairs, _ := Env(EnvInput{}); pairs != nil {
		t.Error("variables without a proxy")
	}
}

func TestDockerDropIn(t *testing.T) {
	got := string(DockerDropIn(Settings{URL: "https://proxy:3129", CACert: CAFileName}, []string{"localhost", "registry.corp"}))
	want := `# Written by carto-appliance (proxy set/clear); do not edit.
[Service]
Environment="HTTP_PROXY=https://proxy:3129"
Environment="HTTPS_PROXY=https://proxy:3129"
Environment="NO_PROXY=localhost,registry.corp"
Environment="SSL_CERT_DIR=/etc/ssl/certs:/etc/docker/carto-proxy-ca"
`
	if got != want {
		t.Errorf("drop-in:\n%s\nwant:\n%s", got, want)
	}
	if DockerDropIn(Settings{}, nil) != nil {
		t.Error("drop-in without a proxy")
	}
}

// FuzzProxyInput: URL and NO_PROXY parsing never panic; an accepted URL is
// stable under a second parse and never carries credentials.
func FuzzProxyInput(f *testing.F) {
	for _, s := range []string{"http://proxy:3128", "https://u:p@h:1", "http://[::1]:80", "a,b .c", "10.0.0.0/8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if u, err := ParseURL(s); err == nil {
			again, err := ParseURL(u)
			if err != nil || again != u {
				t.Fatalf("%q -> %q -> %q, %v", s, u, again, err)
			}
			if strings.Contains(u, "@") {
				t.Fatalf("accepted credentials: %q", u)
			}
		}
		ParseNoProxy(s)
	})
}
