// Package config owns appliance.yaml: the appliance's own settings (as
// opposed to customer.env, which comes from CARTO), their defaults in one
// place, their validation by field name, the file's schema versions and
// the migrations between them, and where the appliance keeps its files
// (Paths). It reads and writes only appliance.yaml and knows no workflow.
package config

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"

	"github.com/distribution/reference"

	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/proxy"
)

// Config is appliance.yaml: the appliance's own settings, as opposed to
// customer.env, which comes from CARTO. A zero value means the default
// stated on the field; Defaults() fills them in.
type Config struct {
	// Layout is standard (default: one VM), tier1 (app and data VMs) or
	// tier2 (web, app and data VMs).
	Layout string `yaml:"layout,omitempty"`
	// Role is this node's role in a tier layout: data, app or web.
	Role string `yaml:"role,omitempty"`
	// Nodes are the tier layout's nodes, role -> private address: the
	// same on every node.
	Nodes map[string]string `yaml:"nodes,omitempty"`
	// Peer is how the tier layout's agents reach one another.
	Peer PeerConfig `yaml:"peer,omitempty"`
	// Domain is the name users reach CARTO at; it overrides customer.env's
	// SELFHOSTED_DOMAIN. Default: customer.env's value.
	Domain string `yaml:"domain,omitempty"`
	// Registry is the image registry base path (DOCKER_REGISTRY_BASE_PATH),
	// for a private mirror. Default: the release's (gcr.io/carto-onprem-artifacts).
	Registry string `yaml:"registry,omitempty"`
	// Project is the compose project name. Default: carto.
	Project string `yaml:"project,omitempty"`
	// Router publishes the stack's entry point.
	Router RouterConfig `yaml:"router,omitempty"`
	// Proxy is the corporate forward proxy the stack, the Docker engine and
	// the appliance itself go out through. Default: none (direct).
	Proxy proxy.Settings `yaml:"proxy,omitempty"`
	// Warehouses lists the data warehouses the customer connects (bigquery,
	// snowflake, postgres, redshift, databricks): some need NO_PROXY entries
	// or bypass the proxy. Default: none declared.
	Warehouses []string `yaml:"warehouses,omitempty"`
	// TLS is how the router gets its certificate. Default: self-signed.
	TLS TLSConfig `yaml:"tls,omitempty"`
	// Network limits who reaches the router. Default: everyone.
	Network NetworkConfig `yaml:"network,omitempty"`
	// License says where the licence is checked online.
	License LicenseConfig `yaml:"license,omitempty"`
	// Upgrade says where newer CARTO releases are looked for.
	Upgrade UpgradeConfig `yaml:"upgrade,omitempty"`
	// Backup is the backups the agent takes by itself. Default: none.
	Backup BackupConfig `yaml:"backup,omitempty"`
	// Console is the admin console the agent serves. Default: none.
	Console ConsoleConfig `yaml:"console,omitempty"`
}

// RouterConfig is where the router listens on the host.
type RouterConfig struct {
	HTTPPort    int    `yaml:"http_port,omitempty"`    // default 80
	HTTPSPort   int    `yaml:"https_port,omitempty"`   // default 443
	BindAddress string `yaml:"bind_address,omitempty"` // default 0.0.0.0 (every address)
}

// Defaults returns c with every zero field set to its default.
func (c Config) Defaults() Config {
	if c.Layout == "" {
		c.Layout = "standard"
	}
	if c.Project == "" {
		c.Project = "carto"
	}
	if c.Router.HTTPPort == 0 {
		c.Router.HTTPPort = 80
	}
	if c.Router.HTTPSPort == 0 {
		c.Router.HTTPSPort = 443
	}
	if c.Router.BindAddress == "" {
		c.Router.BindAddress = "0.0.0.0"
	}
	return c
}

// FieldError is an invalid setting, named by its appliance.yaml field
// (e.g. tls.acme.email) so that a caller can say how its own input sets it.
type FieldError struct {
	Field string
	Err   error // the message, with the fix
}

func (e *FieldError) Error() string { return e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErrorf(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// errorf is fmt.Errorf for messages that wrap nothing.
func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

var (
	projectRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	domainRE  = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	// A registry base path: host[:port] followed by optional path segments.
	registryRE = regexp.MustCompile(`^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$`)
)

// Validate reports the first invalid field by its appliance.yaml name, with
// the fix, as a *FieldError.
func (c Config) Validate() error {
	d := c.Defaults()
	if err := validateLayout(c); err != nil {
		return err
	}
	if !projectRE.MatchString(d.Project) {
		return fieldErrorf("project", "appliance.yaml project %q: use lowercase letters, digits, '-' and '_' only", d.Project)
	}
	if c.Domain != "" {
		if err := CheckDomain("domain", c.Domain, "give the DNS name users reach CARTO at, e.g. carto.example.com"); err != nil {
			return &FieldError{Field: "domain", Err: err}
		}
	}
	if c.Registry != "" {
		if err := CheckRegistry("registry", c.Registry, "correct appliance.yaml registry"); err != nil {
			return &FieldError{Field: "registry", Err: err}
		}
	}
	for _, p := range []struct {
		field string
		port  int
	}{{"router.http_port", d.Router.HTTPPort}, {"router.https_port", d.Router.HTTPSPort}} {
		if p.port < 1 || p.port > 65535 {
			return fieldErrorf(p.field, "appliance.yaml %s %d: give a TCP port between 1 and 65535", p.field, p.port)
		}
	}
	if d.Router.HTTPPort == d.Router.HTTPSPort {
		return fieldErrorf("router.https_port", "appliance.yaml router.http_port and router.https_port are both %d: they must differ", d.Router.HTTPPort)
	}
	if net.ParseIP(d.Router.BindAddress) == nil {
		return fieldErrorf("router.bind_address", "appliance.yaml router.bind_address %q: give an IP address of this host, or 0.0.0.0 for all", d.Router.BindAddress)
	}
	if err := validateNetwork(c.Network, d.Router.BindAddress); err != nil {
		return err
	}
	if err := validateACME(c.TLS); err != nil {
		return err
	}
	if err := validateLicense(c.License); err != nil {
		return err
	}
	if err := validateUpgrade(c.Upgrade); err != nil {
		return err
	}
	if err := validateBackup(c.Backup); err != nil {
		return err
	}
	if err := validateConsole(c.Console); err != nil {
		return err
	}
	return validateProxy(c)
}

func validateProxy(c Config) error {
	for _, w := range c.Warehouses {
		if !slices.Contains(proxy.Warehouses, w) {
			return fieldErrorf("warehouses", "warehouse %q: use one of %s", w, strings.Join(proxy.Warehouses, ", "))
		}
	}
	p := c.Proxy
	if !p.Enabled() {
		if p.CACert != "" || len(p.NoProxy) > 0 || p.RejectUnauthorized != nil {
			return fieldErrorf("proxy.url", "appliance.yaml proxy: no_proxy, ca_cert and reject_unauthorized need proxy.url; set it or remove the proxy section")
		}
		return nil
	}
	if _, err := proxy.ParseURL(p.URL); err != nil {
		return &FieldError{Field: "proxy.url", Err: fmt.Errorf("appliance.yaml proxy.url: %w", err)}
	}
	for _, e := range p.NoProxy {
		if _, err := proxy.ParseNoProxy(e); err != nil {
			return &FieldError{Field: "proxy.no_proxy", Err: fmt.Errorf("appliance.yaml proxy.no_proxy: %w", err)}
		}
	}
	if p.CACert != "" && p.CACert != proxy.CAFileName {
		return fieldErrorf("proxy.ca_cert", "appliance.yaml proxy.ca_cert %q: the appliance keeps the proxy CA as %s; give the CA's file to `carto-appliance proxy set`, which checks and copies it", p.CACert, proxy.CAFileName)
	}
	return nil
}

// CheckDomain is the one check of the name users reach CARTO at, whether
// it comes from the operator, appliance.yaml or customer.env: certificates
// are issued for it and clients are sent to it. what names where it came
// from, fix says how to correct it there.
func CheckDomain(what, domain, fix string) error {
	if len(domain) <= 253 && domainRE.MatchString(domain) {
		return nil
	}
	return fmt.Errorf("%s %q is not a valid host name (letters, digits, - and . only: no scheme, port, path, wildcard or space): %s",
		what, envfile.MaskValue("SELFHOSTED_DOMAIN", domain), fix)
}

// CheckRegistry is the one check of an image registry base path, whether
// it comes from the operator, appliance.yaml or customer.env.
func CheckRegistry(what, base, fix string) error {
	if registryRE.MatchString(base) {
		if _, err := reference.ParseNormalizedNamed(base + "/probe"); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s %q is not a registry base path: give host[:port][/path], e.g. registry.example.com:5000/carto; %s",
		what, envfile.MaskValue("DOCKER_REGISTRY_BASE_PATH", base), fix)
}
