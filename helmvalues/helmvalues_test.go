package helmvalues

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "write testdata/chart-keys.txt from the chart's values file")

// chartValues is CARTO's chart's values file, beside the checkout (the
// project's shared reference): the source of testdata/chart-keys.txt.
const chartValues = "../../shared/reference/carto-selfhosted-helm-values.yaml"

// sections are the chart's top-level keys the values may set: their key
// names are kept in testdata (names only).
var sections = []string{"appConfigValues", "appSecrets", "cartoConfigValues", "cartoSecrets", "externalPostgresql", "externalProxy", "externalRedis", "internalPostgresql", "internalRedis", "router", "tlsCerts", "trustedCACerts"}

// keyPaths lists every dotted key of a YAML document's maps.
func keyPaths(t *testing.T, doc []byte) []string {
	t.Helper()
	var root map[string]any
	if err := yaml.Unmarshal(doc, &root); err != nil {
		t.Fatalf("parsing the values: %v", err)
	}
	var out []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			p := prefix + k
			out = append(out, p)
			if sub, ok := v.(map[string]any); ok {
				walk(p+".", sub)
			}
		}
	}
	walk("", root)
	slices.Sort(out)
	return out
}

func chartKeys(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "chart-keys.txt"))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, k := range strings.Fields(string(b)) {
		keys[k] = true
	}
	return keys
}

// The key list the tests check against is the chart's own (regenerate
// with -update when the chart's values file changes).
func TestChartKeysAreTheChartsOwn(t *testing.T) {
	doc, err := os.ReadFile(chartValues)
	if err != nil {
		t.Skipf("the chart's values file is not beside the checkout (%v): testdata/chart-keys.txt is checked where it is", err)
	}
	var want []string
	for _, k := range keyPaths(t, doc) {
		if slices.Contains(sections, strings.Split(k, ".")[0]) {
			want = append(want, k)
		}
	}
	path := filepath.Join("testdata", "chart-keys.txt")
	if *update {
		if err := os.WriteFile(path, []byte(strings.Join(want, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := chartKeys(t)
	if len(got) != len(want) {
		t.Fatalf("testdata has %d keys, the chart's values %d: run go test ./helmvalues -run TestChartKeys -update", len(got), len(want))
	}
	for _, k := range want {
		if !got[k] {
			t.Errorf("testdata lacks %s: run go test ./helmvalues -run TestChartKeys -update", k)
		}
	}
}

// secretEnv is a customer package's .env with a value for every secret
// the values refer to.
var secretEnv = map[string]string{
	"SELFHOSTED_DOMAIN":           "carto.example.com",
	"SELFHOSTED_TENANT_ID":        "onp-acme",
	"SELFHOSTED_GCP_PROJECT_ID":   "carto-onp-acme",
	"CARTO_AUTH0_CLIENT_ID":       "auth0-client-id-1",
	"CARTO_AUTH0_CUSTOM_DOMAIN":   "auth.carto.com",
	"WORKSPACE_POSTGRES_PASSWORD": "pg-Secret-31337",
	"POSTGRES_ADMIN_PASSWORD":     "adm-Secret-4242",
	"REDIS_PASSWORD":              "redis-Secret-777",
	"ENCRYPTION_SECRET_KEY":       "enc-Secret-abcdef0123",
	"JWT_API_SECRET":              "jwt-Secret-9876",
	"LAUNCHDARKLY_SDK_KEY":        "sdk-Secret-5555",
	"VARNISH_PURGE_SECRET":        "varnish-Secret-1",
	"VARNISH_DEBUG_SECRET":        "varnish-Secret-2",
	"SOME_FUTURE_SETTING":         "x",
}

func render(t *testing.T, in Input) (*Values, map[string]any) {
	t.Helper()
	v, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(v.YAML, &doc); err != nil {
		t.Fatalf("the values do not parse: %v\n%s", err, v.YAML)
	}
	keys := chartKeys(t)
	for _, k := range keyPaths(t, v.YAML) {
		if !keys[k] {
			t.Errorf("%s is not a key of the chart %s", k, Chart)
		}
	}
	for k, val := range secretEnv {
		if strings.Contains(k, "SECRET") || strings.Contains(k, "PASSWORD") || strings.HasSuffix(k, "_KEY") {
			if strings.Contains(string(v.YAML), val) {
				t.Errorf("the value of %s is in the values:\n%s", k, v.YAML)
			}
		}
	}
	return v, doc
}

// get is a dotted key's value in a parsed document.
func get(doc map[string]any, path string) any {
	var v any = doc
	for _, p := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func TestEndToEndTLSWithExternalDatabasesAndAProxy(t *testing.T) {
	v, doc := render(t, Input{
		Domain:         "carto.example.com",
		AllowedSources: []string{"10.0.0.0/8"},
		Proxy:          &Proxy{URL: "https://proxy.corp:3129", NoProxy: []string{".corp", "10.0.0.0/8"}, RejectUnauthorized: true},
		TrustedCA:      "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
		Postgres:       &Postgres{Host: "db.corp", Port: 5433, User: "workspace_admin", Database: "workspace", SSL: true, AdminUser: "postgres", AdminDatabase: "postgres"},
		Redis:          &Redis{Host: "cache.corp", Port: 6380, TLS: true},
		Env:            secretEnv,
		CustomerKeys:   []string{"SELFHOSTED_DOMAIN", "SELFHOSTED_TENANT_ID", "WORKSPACE_POSTGRES_PASSWORD", "LOCAL_POSTGRES_SCALE", "SOME_FUTURE_SETTING"},
		GoogleKey:      true,
	})
	for path, want := range map[string]any{
		"appConfigValues.selfHostedDomain":                            "carto.example.com",
		"router.service.type":                                         "LoadBalancer",
		"tlsCerts.httpsEnabled":                                       true,
		"tlsCerts.autoGenerate":                                       false,
		"tlsCerts.existingSecret.name":                                TLSSecretName,
		"externalProxy.enabled":                                       true,
		"externalProxy.host":                                          "proxy.corp",
		"externalProxy.port":                                          "3129",
		"externalProxy.type":                                          "https",
		"externalProxy.sslRejectUnauthorized":                         true,
		"trustedCACerts.value":                                        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
		"internalPostgresql.enabled":                                  false,
		"externalPostgresql.host":                                     "db.corp",
		"externalPostgresql.port":                                     5433,
		"externalPostgresql.sslEnabled":                               true,
		"externalPostgresql.existingSecret":                           SecretName,
		"externalPostgresql.existingSecretPasswordKey":                "workspace-postgres-password",
		"externalPostgresql.existingSecretAdminPasswordKey":           "postgres-admin-password",
		"internalRedis.enabled":                                       false,
		"externalRedis.host":                                          "cache.corp",
		"externalRedis.port":                                          6380,
		"externalRedis.tlsEnabled":                                    true,
		"externalRedis.existingSecretPasswordKey":                     "redis-password",
		"cartoConfigValues.selfHostedTenantId":                        "onp-acme",
		"cartoConfigValues.cartoAuth0ClientId":                        "auth0-client-id-1",
		"cartoSecrets.encryptionSecretKey.existingSecret.name":        SecretName,
		"cartoSecrets.encryptionSecretKey.existingSecret.key":         "encryption-secret-key",
		"cartoSecrets.defaultGoogleServiceAccount.existingSecret.key": "key.json",
	} {
		if got := get(doc, path); !equal(got, want) {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}
	if got := get(doc, "router.service.loadBalancerSourceRanges"); !equal(got, []any{"10.0.0.0/8"}) {
		t.Errorf("loadBalancerSourceRanges = %#v", got)
	}
	if got := get(doc, "externalProxy.excludedDomains"); !equal(got, []any{".corp", "10.0.0.0/8"}) {
		t.Errorf("excludedDomains = %#v", got)
	}
	// The header creates the Secret from the variables by name.
	for _, want := range []string{"kubectl create secret generic " + SecretName, `--from-literal=workspace-postgres-password="$WORKSPACE_POSTGRES_PASSWORD"`, "--from-file=key.json=key.json", "kubectl create secret tls " + TLSSecretName, "Not carried over (set by hand if you use them): SOME_FUTURE_SETTING"} {
		if !strings.Contains(string(v.YAML), want) {
			t.Errorf("the header lacks %q:\n%s", want, v.YAML)
		}
	}
	if len(v.Warnings) != 1 || !strings.Contains(v.Warnings[0], "SOME_FUTURE_SETTING") {
		t.Errorf("warnings: %q", v.Warnings)
	}
}

func TestOffloadedTLSWithTheEmbeddedDatabase(t *testing.T) {
	v, doc := render(t, Input{Domain: "carto.example.com", TLSOffload: true, AllowedSources: []string{"192.0.2.0/24"}, Env: secretEnv})
	for path, want := range map[string]any{
		"router.service.type":        "ClusterIP",
		"router.service.ports.http":  80,
		"tlsCerts.httpsEnabled":      false,
		"internalPostgresql.enabled": false,
		"externalPostgresql.host":    "",
	} {
		if got := get(doc, path); !equal(got, want) {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}
	for _, absent := range []string{"tlsCerts.existingSecret", "router.service.loadBalancerSourceRanges", "externalProxy", "externalRedis", "internalRedis"} {
		if get(doc, absent) != nil {
			t.Errorf("%s is set with TLS offloaded and no proxy or external cache", absent)
		}
	}
	joined := strings.Join(v.Warnings, "\n")
	for _, want := range []string{"embedded PostgreSQL", "externalPostgresql.host", "allowed_sources"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings lack %q: %q", want, v.Warnings)
		}
	}
}

func TestBadInputIsRefusedNamingIt(t *testing.T) {
	if _, err := Render(Input{}); err == nil || !strings.Contains(err.Error(), "SELFHOSTED_DOMAIN") {
		t.Errorf("no domain: %v", err)
	}
	if _, err := Render(Input{Domain: "carto.example.com\nrouter: {}"}); err == nil || !strings.Contains(err.Error(), "not a host name") {
		t.Errorf("a domain with a line break: %v", err)
	}
	if _, err := Render(Input{Domain: "carto.example.com", Proxy: &Proxy{URL: "socks5://p:1080"}}); err == nil || !strings.Contains(err.Error(), "proxy.url") {
		t.Errorf("a socks proxy: %v", err)
	}
}

func equal(got, want any) bool {
	return yamlString(got) == yamlString(want)
}

func yamlString(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

// Whatever the settings, Render answers an error or a values file that
// parses, sets only the chart's keys and holds no secret's value.
func FuzzRender(f *testing.F) {
	f.Add("carto.example.com", "http://proxy.corp:3128", ".corp,10.0.0.0/8", "pg-Secret-31337", "db.corp", true)
	f.Add("x", "https://[::1]:443", "", "a\nb: c", "", false)
	f.Add("é.test", "http://p", "*", "'\"#", "h:1", true)
	f.Fuzz(func(t *testing.T, domain, proxyURL, noProxy, secret, dbHost string, offload bool) {
		in := Input{Domain: domain, TLSOffload: offload, CustomerKeys: []string{noProxy, secret}, Env: map[string]string{"WORKSPACE_POSTGRES_PASSWORD": secret, "ENCRYPTION_SECRET_KEY": secret, "SELFHOSTED_TENANT_ID": noProxy}}
		if proxyURL != "" {
			in.Proxy = &Proxy{URL: proxyURL, NoProxy: strings.Split(noProxy, ",")}
		}
		if dbHost != "" {
			in.Postgres = &Postgres{Host: dbHost, Port: 5432}
		}
		v, err := Render(in)
		if err != nil {
			return
		}
		var doc map[string]any
		if err := yaml.Unmarshal(v.YAML, &doc); err != nil {
			t.Fatalf("the values do not parse: %v\n%s", err, v.YAML)
		}
		if get(doc, "appConfigValues.selfHostedDomain") != domain {
			t.Fatalf("the domain %q came back as %#v", domain, get(doc, "appConfigValues.selfHostedDomain"))
		}
		keys := chartKeys(t)
		for _, k := range keyPaths(t, v.YAML) {
			if !keys[k] {
				t.Fatalf("%s is not a key of the chart", k)
			}
		}
		// The secrets' values never reach the file: with other values (of
		// the same emptiness, which decides whether a reference is written)
		// the file is the same byte for byte. A substring search would
		// fail on a "secret" that is one of the chart's key names.
		if secret != "" {
			other := in
			other.Env = map[string]string{"WORKSPACE_POSTGRES_PASSWORD": "other", "ENCRYPTION_SECRET_KEY": "other", "SELFHOSTED_TENANT_ID": noProxy}
			w, err := Render(other)
			if err != nil {
				t.Fatalf("rendered with the secret but not with another value: %v", err)
			}
			if !bytes.Equal(v.YAML, w.YAML) {
				t.Fatalf("the secret %q changed the values:\n%s\nagainst:\n%s", secret, v.YAML, w.YAML)
			}
		}
	})
}
