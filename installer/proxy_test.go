package installer

import (
	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/testca"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/proxy"
)

func TestProxyInputApply(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	notPEM := filepath.Join(dir, "ca.der")
	os.WriteFile(notPEM, []byte{0x30, 0x82, 0x01}, 0o600)
	os.WriteFile(ca, testCAPEM(t), 0o600)
	no := false
	cases := []struct {
		name string
		in   ProxyInput
		want string // error substring; "" for success
	}{
		{"http", ProxyInput{URL: "http://Proxy:3128", NoProxy: "db.corp,.corp"}, ""},
		{"https with CA", ProxyInput{URL: "https://proxy:3129", CACertFile: ca, RejectUnauthorized: &no}, ""},
		{"credentials", ProxyInput{URL: "http://u:pw@proxy:3128"}, "password authentication is not supported"},
		{"scheme", ProxyInput{URL: "ftp://proxy:21"}, "unknown scheme"},
		{"no host", ProxyInput{URL: "http://:3128"}, "no host"},
		{"bad port", ProxyInput{URL: "http://proxy:0"}, "bad port"},
		{"CA not PEM", ProxyInput{URL: "https://proxy:3129", CACertFile: notPEM}, "is not a PEM certificate"},
		{"CA missing", ProxyInput{URL: "https://proxy:3129", CACertFile: filepath.Join(dir, "none.pem")}, "reading the proxy CA"},
		{"no-proxy without url", ProxyInput{NoProxy: "x"}, "the proxy URL is required"},
		{"bad no-proxy", ProxyInput{URL: "http://proxy:3128", NoProxy: "https://x"}, "no-proxy entry"},
	}
	for _, c := range cases {
		cfg := config.Config{Domain: "carto.example.com"}
		before := cfg
		_, err := c.in.apply(&cfg)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			} else if err := cfg.Validate(); err != nil {
				t.Errorf("%s: the result does not validate: %v", c.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
		if cfg.Proxy.URL != before.Proxy.URL {
			t.Errorf("%s: a refused input changed the config", c.name)
		}
		if strings.Contains(err.Error(), "pw@") {
			t.Errorf("%s: the error shows the password: %v", c.name, err)
		}
	}
}

func TestProxyInputKeepsCAForSameProxy(t *testing.T) {
	cfg := config.Config{Proxy: proxy.Settings{URL: "https://proxy:3129", CACert: proxy.CAFileName}}
	if _, err := (ProxyInput{URL: "https://proxy:3129", NoProxy: ".corp"}).apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Proxy.CACert != proxy.CAFileName {
		t.Error("changing NO_PROXY dropped the CA")
	}
	if _, err := (ProxyInput{URL: "http://other:3128"}).apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Proxy.CACert != "" {
		t.Error("another proxy kept the previous proxy's CA")
	}
}

func testCAPEM(t *testing.T) []byte {
	t.Helper()
	ca, err := testca.NewCA("proxy CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca.PEM
}

// The egress list is the release's: core domains always required, a
// warehouse's domains required once it is declared, others optional.
func TestEgressTargets(t *testing.T) {
	declared, err := egressTargets(config.Config{Warehouses: []string{"snowflake"}}, carried(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	none, _ := egressTargets(config.Config{}, carried(t), nil)
	if len(declared) == 0 || len(declared) != len(none) {
		t.Fatalf("%d targets with snowflake declared, %d without", len(declared), len(none))
	}
	sawCore, sawSnowflake := false, false
	for i, d := range declared {
		switch d.Feature {
		case "core":
			sawCore = true
			if d.Optional {
				t.Errorf("core %s optional", d.Domain)
			}
		case "snowflake":
			sawSnowflake = true
			if d.Optional || !none[i].Optional {
				t.Errorf("snowflake %s: optional %v declared, %v not", d.Domain, d.Optional, none[i].Optional)
			}
		default:
			if !d.Optional {
				t.Errorf("%s (%s) required without its warehouse", d.Domain, d.Feature)
			}
		}
	}
	if !sawCore || !sawSnowflake {
		t.Errorf("core %v snowflake %v in %+v", sawCore, sawSnowflake, declared)
	}
	given, _ := egressTargets(config.Config{}, carried(t), []string{"a.example.com"})
	if len(given) != 1 || given[0].Domain != "a.example.com" || given[0].Optional {
		t.Errorf("given domains: %+v", given)
	}
}
