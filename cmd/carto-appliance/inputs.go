package main

import (
	"errors"
	"fmt"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
)

// The core names an input by what it is (installer.InputError) or by its
// appliance.yaml field (config.FieldError); only the CLI knows the flags
// that give them, and they differ by command.

// inputFlags are install's flags (and those every command shares).
var inputFlags = map[installer.Input]string{
	installer.InputCustomerEnv:     "--customer-env FILE",
	installer.InputKey:             "--key FILE",
	installer.InputLicense:         "--license FILE",
	installer.InputLicenseServer:   "--license-server",
	installer.InputDomain:          "--domain",
	installer.InputRegistry:        "--registry",
	installer.InputProxyURL:        "--proxy-url",
	installer.InputProxyCACert:     "--proxy-ca-cert FILE",
	installer.InputTLSMode:         "--tls-cert, --tls-offload or --tls-acme",
	installer.InputTLSCert:         "--tls-cert FILE with --tls-key FILE",
	installer.InputTLSKey:          "--tls-key FILE",
	installer.InputTLSChain:        "--tls-chain FILE",
	installer.InputACMECACert:      "--acme-ca-cert FILE",
	installer.InputIgnorePreflight: "--ignore-preflight",
	installer.InputConfigDir:       "--config-dir",
	installer.InputStateDir:        "--state-dir",
}

// commandInputFlags are where a command names an input otherwise.
var commandInputFlags = map[string]map[installer.Input]string{
	"certs import": {
		installer.InputTLSCert:  "--cert FILE with --key FILE",
		installer.InputTLSKey:   "--key FILE",
		installer.InputTLSChain: "--chain FILE",
	},
	"certs acme":     {installer.InputACMECACert: "--ca-cert FILE"},
	"proxy set":      {installer.InputProxyURL: "--url", installer.InputProxyCACert: "--ca-cert FILE"},
	"license update": {installer.InputLicense: "license update FILE"},
	"uninstall":      {installer.InputConfigDir: "--config-dir", installer.InputStateDir: "--state-dir"},
}

// fieldFlags say how the command line sets an appliance.yaml field.
var fieldFlags = map[string]string{
	"domain":                  "--domain",
	"registry":                "--registry",
	"project":                 "--project",
	"router.http_port":        "--http-port",
	"router.https_port":       "--https-port",
	"router.bind_address":     "--bind-address",
	"warehouses":              "--warehouses",
	"proxy.url":               "--proxy-url, or `carto-appliance proxy set --url`",
	"proxy.no_proxy":          "--proxy-no-proxy, or `carto-appliance proxy set --no-proxy`",
	"proxy.ca_cert":           "--proxy-ca-cert FILE, or `carto-appliance proxy set --ca-cert FILE`",
	"tls.acme.email":          "--acme-email, or `carto-appliance certs acme --email`",
	"tls.acme.directory":      "--acme-ca, or `carto-appliance certs acme --ca`",
	"tls.acme.ca_cert":        "--acme-ca-cert FILE, or `carto-appliance certs acme --ca-cert FILE`",
	"network.allowed_sources": "--allowed-sources",
	"license.server":          "--license-server",
}

// explain is err as the operator of command (e.g. "certs import") reads
// it: an input or an appliance.yaml field the core names also says which
// flag gives it.
func explain(err error, command string) string {
	var ie *installer.InputError
	if errors.As(err, &ie) {
		flag, ok := commandInputFlags[command][ie.Input]
		if !ok {
			flag, ok = inputFlags[ie.Input]
		}
		if ok {
			return fmt.Sprintf("%v (%s)", err, flag)
		}
	}
	var fe *config.FieldError
	if errors.As(err, &fe) {
		if flag, ok := fieldFlags[fe.Field]; ok {
			return fmt.Sprintf("%v (set with %s)", err, flag)
		}
	}
	return err.Error()
}
