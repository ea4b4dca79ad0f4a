package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/preflight"
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

// A field no flag sets is named with the config set that changes it.
func TestExplainNamesConfigSetForAFieldWithoutAFlag(t *testing.T) {
	err := config.Config{Upgrade: config.UpgradeConfig{Channel: "Beta"}}.Validate()
	if got := explain(err, "upgrade"); !strings.HasSuffix(got, "(set with `carto-appliance config set upgrade.channel=VALUE`)") {
		t.Errorf("got %q", got)
	}
	err = &config.FieldError{Field: "domain", Err: fmt.Errorf("bad domain")}
	if got := explain(err, "config set"); got != "bad domain (set with `carto-appliance config set domain=VALUE`)" {
		t.Errorf("config set --apply: %q", got)
	}
	err = &config.FieldError{Field: "tls.mode", Err: fmt.Errorf("no router here")}
	if got := explain(err, "config apply"); got != "no router here" {
		t.Errorf("a field config set refuses: %q", got)
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
		installer.InputInstallDocker, installer.InputBindAddress, installer.InputHTTPPort, installer.InputHTTPSPort, installer.InputBinary, installer.InputBundle,
	} {
		if inputFlags[in] == "" {
			t.Errorf("input %q has no flag", in)
		}
	}
}

// A failed preflight's fixes say which flags give the inputs they speak
// of; the core's report names none.
func TestExplainGivesPreflightFixesTheirFlags(t *testing.T) {
	report := &preflight.Report{Failed: true, Checks: []preflight.Check{
		{ID: "docker", Title: "Docker engine", Status: preflight.Fail, Detail: "Docker is not installed", Fix: "let install install it", Inputs: []string{"install_docker"}},
		{ID: "memory", Title: "Memory", Status: preflight.Fail, Detail: "4 GiB", Fix: "give the VM 32 GiB"},
		{ID: "port-http", Title: "Port 80 (HTTP)", Status: preflight.Fail, Detail: "denied", Fix: "use another", Inputs: []string{"bind_address", "http_port"}},
	}}
	err := fmt.Errorf("install: %w", &preflight.FailedError{Report: report})
	got := explain(err, "install")
	for _, want := range []string{
		"install: preflight failed, nothing was changed:",
		"fix: let install install it (set with --install-docker)\n",
		"fix: give the VM 32 GiB\n",
		"fix: use another (set with --bind-address, --http-port)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if strings.Contains(err.Error(), "--") {
		t.Errorf("the core's own message names a flag: %s", err)
	}
}
