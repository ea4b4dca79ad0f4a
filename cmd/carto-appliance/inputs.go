package main

import (
	"errors"
	"fmt"

	"github.com/cartodb/carto-appliance/config"
)

// fieldFlags says how the command line sets an appliance.yaml field: the
// core names the field, the CLI adds its own way to change it.
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

// explain is err as the operator reads it: an invalid appliance.yaml
// field also says which flag sets it.
func explain(err error) string {
	var fe *config.FieldError
	if errors.As(err, &fe) {
		if flag, ok := fieldFlags[fe.Field]; ok {
			return fmt.Sprintf("%v (set with %s)", err, flag)
		}
	}
	return err.Error()
}
