package installer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/templates"
)

// writeCustomer writes a valid customer.env plus extra lines and returns
// its path.
func writeCustomer(t *testing.T, extra string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "customer.env")
	base := "SELFHOSTED_TENANT_ID=onp-test\nCARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION=2025.10.1\n" +
		"POSTGRES_ADMIN_PASSWORD=admin-pass\nWORKSPACE_POSTGRES_PASSWORD=ws-pass\n"
	if !strings.Contains(extra, "SELFHOSTED_DOMAIN=") {
		base += "SELFHOSTED_DOMAIN=carto.example.com\n"
	}
	if err := os.WriteFile(p, []byte(base+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// key.json goes only to CARTO's registry or one the operator named (#11):
// a DOCKER_REGISTRY_BASE_PATH from customer.env alone is checked as
// --registry is and may not name another host.
func TestCustomerEnvRegistry(t *testing.T) {
	for _, tc := range []struct {
		name     string
		registry string // --registry
		extra    string
		want     string // substring of the error; "" means accepted
		host     string // where key.json goes when accepted
	}{
		{"the release's registry", "", "", "", "gcr.io"},
		{"another path on CARTO's registry", "", "DOCKER_REGISTRY_BASE_PATH=gcr.io/carto-onprem-artifacts/eu\n", "", "gcr.io"},
		{"CARTO's host in capitals", "", "DOCKER_REGISTRY_BASE_PATH=GCR.io/carto-onprem-artifacts\n", "", "GCR.io"},
		{"another host", "", "DOCKER_REGISTRY_BASE_PATH=registry.attacker.example/x\n",
			`DOCKER_REGISTRY_BASE_PATH "registry.attacker.example/x" names registry registry.attacker.example, not CARTO's (gcr.io), and key.json`, ""},
		{"a name that means Docker Hub", "", "DOCKER_REGISTRY_BASE_PATH=carto\n", "names registry docker.io", ""},
		{"a port on CARTO's host is another registry", "", "DOCKER_REGISTRY_BASE_PATH=gcr.io:8443/x\n", "names registry gcr.io:8443", ""},
		{"not a registry path", "", "DOCKER_REGISTRY_BASE_PATH=https://gcr.io/x\n", `DOCKER_REGISTRY_BASE_PATH "https://gcr.io/x" is not a registry base path`, ""},
		{"uppercase path", "", "DOCKER_REGISTRY_BASE_PATH=gcr.io/Carto\n", "is not a registry base path", ""},
		{"named with --registry", "registry.corp.example:5000/carto", "DOCKER_REGISTRY_BASE_PATH=registry.corp.example:5000/carto\n", "", "registry.corp.example:5000"},
		{"--registry wins over customer.env", "registry.corp.example/carto", "DOCKER_REGISTRY_BASE_PATH=registry.attacker.example/x\n", "", "registry.corp.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			customer := writeCustomer(t, tc.extra)
			d, err := planEnv(config.Config{Registry: tc.registry}, carried(t), customer)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one with %q", err, tc.want)
				}
				if !strings.Contains(err.Error(), customer) || !strings.Contains(err.Error(), "DOCKER_REGISTRY_BASE_PATH") {
					t.Errorf("error %q does not name the file and the key", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			auth, err := d.registryAuth()
			if err != nil || auth.Registry != tc.host {
				t.Errorf("credentials for %v (%v), want %s", auth, err, tc.host)
			}
		})
	}
}

// SELFHOSTED_DOMAIN from customer.env is checked as --domain is (#11).
func TestCustomerEnvDomain(t *testing.T) {
	for _, bad := range []string{
		`"carto.example.com\nevil.example.com"`, `"carto example.com"`, "carto.example.com/x",
		"carto.example.com:8443", `"*.example.com"`, "https://carto.example.com", "-carto.example.com",
		strings.Repeat("a.", 127) + "com",
	} {
		customer := writeCustomer(t, "SELFHOSTED_DOMAIN="+bad+"\n")
		_, err := planEnv(config.Config{}, carried(t), customer)
		if err == nil || !strings.Contains(err.Error(), "customer.env "+customer+": SELFHOSTED_DOMAIN ") ||
			!strings.Contains(err.Error(), "is not a valid host name") || inputOf(err) != InputDomain {
			t.Errorf("SELFHOSTED_DOMAIN=%s: error %v", bad, err)
		}
		// The same value is refused as --domain, by the same check.
		if err := (config.Config{Domain: strings.Trim(bad, `"`)}).Validate(); err == nil {
			t.Errorf("--domain %s accepted", bad)
		}
		// --domain replaces it: customer.env's value is then unused.
		if _, err := planEnv(config.Config{Domain: "carto.example.com"}, carried(t), customer); err != nil {
			t.Errorf("with --domain, SELFHOSTED_DOMAIN=%s: %v", bad, err)
		}
	}
	if _, err := planEnv(config.Config{}, carried(t), writeCustomer(t, "SELFHOSTED_DOMAIN=Carto-1.example.com\n")); err != nil {
		t.Errorf("a valid domain: %v", err)
	}
}

// customer.env's line warnings reach the result with the file and line,
// and refusals name the file, the line and the key (#11).
func TestCustomerEnvLineChecks(t *testing.T) {
	customer := writeCustomer(t, "LOG_LEVEL=info\nREDIS_PASSWORD=ab$cd\nLOG_LEVEL=debug\n")
	d, err := planEnv(config.Config{}, carried(t), customer)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(d.warnings, "\n")
	for _, want := range []string{
		"customer.env " + customer + " line 7: the value of REDIS_PASSWORD has a $",
		"customer.env " + customer + " line 8: LOG_LEVEL is set again (first on line 6)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings:\n%s\nlack %q", got, want)
		}
	}
	customer = writeCustomer(t, "REDIS_PASSWORD=a\x00b\n")
	_, err = planEnv(config.Config{}, carried(t), customer)
	if err == nil || !strings.Contains(err.Error(), customer+": line 6: the value of REDIS_PASSWORD has a NUL byte") {
		t.Errorf("error %v", err)
	}
}

// carried is the release this binary carries.
func carried(t *testing.T) *release.Release {
	t.Helper()
	r, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	return r
}
