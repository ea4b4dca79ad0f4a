package installer

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/proxy"
)

// The Helm values come from the installed settings, carry no secret of
// the customer package or key.json, and change nothing on disk.
func TestExportHelmValues(t *testing.T) {
	paths := installed(t, config.Config{Domain: "carto.example.com", Network: config.NetworkConfig{AllowedSources: []string{"10.0.0.0/8"}}})
	before := dirSnapshot(t, paths.ConfigDir)
	v, err := ExportHelmValues(paths)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		AppConfigValues struct {
			SelfHostedDomain string `yaml:"selfHostedDomain"`
		} `yaml:"appConfigValues"`
		CartoConfigValues struct {
			SelfHostedTenantID string `yaml:"selfHostedTenantId"`
		} `yaml:"cartoConfigValues"`
		Router struct {
			Service struct {
				Type         string   `yaml:"type"`
				SourceRanges []string `yaml:"loadBalancerSourceRanges"`
			} `yaml:"service"`
		} `yaml:"router"`
		ExternalPostgresql struct {
			ExistingSecretPasswordKey string `yaml:"existingSecretPasswordKey"`
		} `yaml:"externalPostgresql"`
	}
	if err := yaml.Unmarshal(v.YAML, &doc); err != nil {
		t.Fatalf("%v\n%s", err, v.YAML)
	}
	if doc.AppConfigValues.SelfHostedDomain != "carto.example.com" || doc.CartoConfigValues.SelfHostedTenantID != "onp-test" ||
		doc.Router.Service.Type != "LoadBalancer" || len(doc.Router.Service.SourceRanges) != 1 || doc.ExternalPostgresql.ExistingSecretPasswordKey == "" {
		t.Errorf("values: %+v\n%s", doc, v.YAML)
	}
	// As whole words: the Secret's key postgres-admin-password is not
	// the fixture's password admin-pass.
	for _, secret := range []string{"admin-pass", "ws-pass", "0a1b2c3d4e"} {
		re := regexp.MustCompile(`\b` + regexp.QuoteMeta(secret) + `\b`)
		if re.Match(v.YAML) || re.MatchString(strings.Join(v.Warnings, " ")) {
			t.Errorf("%q is in the values or the warnings:\n%s", secret, v.YAML)
		}
	}
	if !strings.Contains(strings.Join(v.Warnings, " "), "embedded PostgreSQL") {
		t.Errorf("no word of the embedded database: %q", v.Warnings)
	}
	if !sameFiles(before, dirSnapshot(t, paths.ConfigDir)) {
		t.Error("exporting changed the config dir")
	}

	// TLS offloaded, the database external.
	paths = installed(t, config.Config{Domain: "carto.example.com", TLS: config.TLSConfig{Mode: config.TLSOffload}})
	writeInstalledCustomer(t, paths, "LOCAL_POSTGRES_SCALE=0\nWORKSPACE_POSTGRES_HOST=db.corp\nWORKSPACE_POSTGRES_PORT=6543\n")
	v, err = ExportHelmValues(paths)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"type: ClusterIP", "host: db.corp", "port: 6543", "httpsEnabled: false"} {
		if !strings.Contains(string(v.YAML), want) {
			t.Errorf("values lack %q:\n%s", want, v.YAML)
		}
	}
	if strings.Contains(strings.Join(v.Warnings, " "), "embedded PostgreSQL") {
		t.Errorf("an external database called embedded: %q", v.Warnings)
	}
}

// writeInstalledCustomer replaces the installed customer.env with the
// test's base one plus extra lines.
func writeInstalledCustomer(t *testing.T, paths config.Paths, extra string) {
	t.Helper()
	b, err := os.ReadFile(writeCustomer(t, extra))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(paths.File(config.CustomerEnvFileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The proxy's CA goes into the values as it is (certificates are meant
// to be shared); a CA file edited to hold a private key is refused,
// naming the file and the fix.
func TestExportHelmValuesCarriesTheProxyCA(t *testing.T) {
	paths := installed(t, config.Config{Domain: "carto.example.com"})
	ca := testCAPEM(t)
	caFile := filepath.Join(paths.ConfigDir, config.CertsDirName, proxy.CAFileName)
	if err := os.WriteFile(caFile, ca, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := installedConfig(t, paths)
	cfg.Proxy = proxy.Settings{URL: "https://proxy.corp:3129", CACert: proxy.CAFileName}
	b, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(paths.File(config.ConfigFileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := ExportHelmValues(paths)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		TrustedCACerts struct {
			Value string `yaml:"value"`
		} `yaml:"trustedCACerts"`
		ExternalProxy struct {
			Host string `yaml:"host"`
			Type string `yaml:"type"`
		} `yaml:"externalProxy"`
	}
	if err := yaml.Unmarshal(v.YAML, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.TrustedCACerts.Value != string(ca) || doc.ExternalProxy.Host != "proxy.corp" || doc.ExternalProxy.Type != "https" {
		t.Errorf("values: %+v", doc)
	}
	key := "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKey0nlyForTh1sTest000000000000000000000000\n-----END PRIVATE KEY-----\n"
	if err := os.WriteFile(caFile, append(ca, key...), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, err := ExportHelmValues(paths); err == nil || !strings.Contains(err.Error(), caFile) || !strings.Contains(err.Error(), "proxy set") {
		t.Errorf("a CA file holding a key: %v", err)
	} else if v != nil {
		t.Errorf("values returned with the error")
	}
}

// On a node of a tier layout the data node's address is the external
// database's and cache's host for the cluster.
func TestExportHelmValuesOfATierNode(t *testing.T) {
	paths := installed(t, config.Config{Domain: "carto.example.com", Layout: config.LayoutTier2, Role: config.RoleWeb,
		Nodes: map[string]string{"web": "10.0.0.1", "app": "10.0.0.2", "data": "10.0.0.3"}})
	v, err := ExportHelmValues(paths)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		ExternalPostgresql struct {
			Host string `yaml:"host"`
			Port int    `yaml:"port"`
		} `yaml:"externalPostgresql"`
		ExternalRedis struct {
			Host string `yaml:"host"`
		} `yaml:"externalRedis"`
	}
	if err := yaml.Unmarshal(v.YAML, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.ExternalPostgresql.Host != "10.0.0.3" || doc.ExternalPostgresql.Port != 5432 || doc.ExternalRedis.Host != "10.0.0.3" {
		t.Errorf("databases: %+v\n%s", doc, v.YAML)
	}
}
