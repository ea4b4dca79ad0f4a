package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/host"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/preflight"
)

// The core names an input by what it is (installer.InputError) or by its
// appliance.yaml field (config.FieldError); only the CLI knows the flags
// that give them, and they differ by command.

// inputFlags are install's flags (and those every command shares).
var inputFlags = map[installer.Input]string{
	installer.InputCustomerEnv:        "--customer-env FILE",
	installer.InputKey:                "--key FILE",
	installer.InputLicense:            "--license FILE",
	installer.InputLicenseServer:      "--license-server",
	installer.InputDomain:             "--domain",
	installer.InputRegistry:           "--registry",
	installer.InputProxyURL:           "--proxy-url",
	installer.InputProxyCACert:        "--proxy-ca-cert FILE",
	installer.InputTLSMode:            "--tls-cert, --tls-offload or --tls-acme",
	installer.InputTLSCert:            "--tls-cert FILE with --tls-key FILE",
	installer.InputTLSKey:             "--tls-key FILE",
	installer.InputTLSChain:           "--tls-chain FILE",
	installer.InputACMECACert:         "--acme-ca-cert FILE",
	installer.InputIgnorePreflight:    "--ignore-preflight",
	installer.InputConfigDir:          "--config-dir",
	installer.InputStateDir:           "--state-dir",
	installer.InputInstallDocker:      "--install-docker",
	installer.InputBindAddress:        "--bind-address",
	installer.InputHTTPPort:           "--http-port",
	installer.InputHTTPSPort:          "--https-port",
	installer.InputBinary:             "--binary",
	installer.InputSkipDatabaseBackup: "--skip-db-backup",
	installer.InputRestoreDatabase:    "--restore-database",
	installer.InputBundle:             "--bundle FILE",
	installer.InputLayout:             "--layout",
	installer.InputRole:               "--role",
	installer.InputNodes:              "--nodes",
	installer.InputJoin:               "--join FILE",
	installer.InputBackup:             "restore FILE (--passphrase-file FILE)",
	installer.InputConsolePassword:    "console set-password (--password-file FILE)",
}

// commandInputFlags are where a command names an input otherwise.
var commandInputFlags = map[string]map[installer.Input]string{
	"certs import": {
		installer.InputTLSCert:  "--cert FILE with --key FILE",
		installer.InputTLSKey:   "--key FILE",
		installer.InputTLSChain: "--chain FILE",
	},
	"certs acme":     {installer.InputACMECACert: "--ca-cert FILE"},
	"config apply":   {installer.InputKey: "install --key FILE"},
	"install":        {installer.InputConsolePassword: "--console-password-file FILE"},
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
	"layout":                  "--layout",
	"role":                    "--role",
	"nodes":                   "--nodes (or --join FILE)",
	"peer.port":               "appliance.yaml peer.port",
}

// flagFor is the flag of command that gives in, if it has one.
func flagFor(in installer.Input, command string) (string, bool) {
	if flag, ok := commandInputFlags[command][in]; ok {
		return flag, true
	}
	flag, ok := inputFlags[in]
	return flag, ok
}

// checkFix is a preflight check's fix with the flags that give the inputs
// it speaks of.
func checkFix(c preflight.Check) string {
	var flags []string
	for _, in := range c.Inputs {
		if flag, ok := flagFor(installer.Input(in), "install"); ok {
			flags = append(flags, flag)
		}
	}
	if len(flags) == 0 {
		return c.Fix
	}
	return fmt.Sprintf("%s (set with %s)", c.Fix, strings.Join(flags, ", "))
}

// explain is err as the operator of command (e.g. "certs import") reads
// it: an input or an appliance.yaml field the core names also says which
// flag gives it, and a failed preflight's fixes too.
func explain(err error, command string) string {
	var pf *preflight.FailedError
	if errors.As(err, &pf) {
		var b strings.Builder
		b.WriteString("preflight failed, nothing was changed:")
		for _, c := range pf.Report.Failures() {
			fmt.Fprintf(&b, "\n  %s: %s\n    fix: %s", c.Title, c.Detail, checkFix(c))
		}
		return strings.Replace(err.Error(), pf.Error(), b.String(), 1)
	}
	var ie *installer.InputError
	if errors.As(err, &ie) {
		if flag, ok := flagFor(ie.Input, command); ok {
			return fmt.Sprintf("%v (%s)", err, flag)
		}
	}
	var se *host.SettingError
	if errors.As(err, &se) {
		if flag, ok := flagFor(installer.Input(se.Setting), command); ok {
			return fmt.Sprintf("%v (%s)", err, flag)
		}
	}
	if errors.Is(err, host.ErrNoSystemd) {
		return err.Error() + " (install --no-service)"
	}
	var fe *config.FieldError
	if errors.As(err, &fe) {
		// After config set --apply, a field config set sets is named so.
		settable := config.Settable(fe.Field)
		if flag, ok := fieldFlags[fe.Field]; ok && !(settable && command == "config set") {
			return fmt.Sprintf("%v (set with %s)", err, flag)
		}
		if settable {
			return fmt.Sprintf("%v (set with `carto-appliance config set %s=VALUE`)", err, fe.Field)
		}
	}
	return err.Error()
}
