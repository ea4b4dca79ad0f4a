package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
)

func TestExplainNamesTheFlagOfAnInvalidField(t *testing.T) {
	err := config.Config{TLS: config.TLSConfig{Mode: config.TLSACME}}.Validate()
	got := explain(fmt.Errorf("/opt/carto/appliance.yaml: %w", err), "config apply")
	if !strings.Contains(got, "tls.acme.email") || !strings.HasSuffix(got, "(set with --acme-email, or `carto-appliance certs acme --email`)") {
		t.Errorf("got %q", got)
	}
	if got := explain(fmt.Errorf("plain"), "install"); got != "plain" {
		t.Errorf("an error without a field: %q", got)
	}
}

// Each command names an input by its own flag.
func TestExplainNamesTheCommandsFlag(t *testing.T) {
	cert := &installer.InputError{Input: installer.InputTLSCert, Err: fmt.Errorf("the certificate: open /x.crt: no such file")}
	for command, want := range map[string]string{
		"install":      "planning: the certificate: open /x.crt: no such file (--tls-cert FILE with --tls-key FILE)",
		"certs import": "planning: the certificate: open /x.crt: no such file (--cert FILE with --key FILE)",
	} {
		if got := explain(fmt.Errorf("planning: %w", cert), command); got != want {
			t.Errorf("%s: %q, want %q", command, got, want)
		}
	}
	proxyURL := &installer.InputError{Input: installer.InputProxyURL, Err: fmt.Errorf("proxy set needs the proxy URL")}
	if got := explain(proxyURL, "proxy set"); !strings.HasSuffix(got, "(--url)") {
		t.Errorf("proxy set: %q", got)
	}
}

// Every input the core can name has a flag: a new one cannot reach the
// operator without saying how to give it.
func TestEveryInputHasAFlag(t *testing.T) {
	for _, in := range []installer.Input{
		installer.InputCustomerEnv, installer.InputKey, installer.InputLicense, installer.InputLicenseServer,
		installer.InputDomain, installer.InputRegistry, installer.InputProxyURL, installer.InputProxyCACert,
		installer.InputTLSMode, installer.InputTLSCert, installer.InputTLSKey, installer.InputTLSChain,
		installer.InputACMECACert, installer.InputIgnorePreflight, installer.InputConfigDir, installer.InputStateDir,
	} {
		if inputFlags[in] == "" {
			t.Errorf("input %q has no flag", in)
		}
	}
}
