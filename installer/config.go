package installer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/proxy"
)

// Default locations on a VM (SPEC §3); every one can be overridden.
const (
	DefaultConfigDir = "/opt/carto"
	DefaultStateDir  = "/var/lib/carto-appliance"
)

// Files in the config dir.
const (
	ConfigFileName      = "appliance.yaml"
	CustomerEnvFileName = "customer.env"
	EnvFileName         = ".env"
	CertsDirName        = "certs"
	KeyFileName         = "key.json"
)

// Paths says where the appliance keeps its files.
type Paths struct {
	ConfigDir string // default DefaultConfigDir
	StateDir  string // default DefaultStateDir
}

// WithDefaults returns p with the default dirs where none is given.
func (p Paths) WithDefaults() Paths {
	if p.ConfigDir == "" {
		p.ConfigDir = DefaultConfigDir
	}
	if p.StateDir == "" {
		p.StateDir = DefaultStateDir
	}
	return p
}

func (p Paths) file(name string) string { return filepath.Join(p.ConfigDir, name) }
func (p Paths) keyFile() string         { return filepath.Join(p.ConfigDir, CertsDirName, KeyFileName) }

// Config is appliance.yaml: the appliance's own settings, as opposed to
// customer.env, which comes from CARTO. A zero value means the default
// stated on the field; Defaults() fills them in.
type Config struct {
	// Layout is standard (default), tier1 or tier2. Only standard runs
	// today; the others are refused with a clear error.
	Layout string `yaml:"layout,omitempty"`
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

var (
	projectRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	domainRE  = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	// A registry base path: host[:port] followed by optional path segments.
	registryRE = regexp.MustCompile(`^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$`)
)

// Validate reports the first invalid field by its appliance.yaml name, with
// the fix.
func (c Config) Validate() error {
	d := c.Defaults()
	if d.Layout != "standard" {
		return fmt.Errorf("appliance.yaml layout %q: only \"standard\" is available in this version; tier1 and tier2 come in a later release", d.Layout)
	}
	if !projectRE.MatchString(d.Project) {
		return fmt.Errorf("appliance.yaml project %q: use lowercase letters, digits, '-' and '_' only", d.Project)
	}
	if c.Domain != "" {
		if err := checkDomain("domain", c.Domain, "give the DNS name users reach CARTO at, e.g. carto.example.com"); err != nil {
			return err
		}
	}
	if c.Registry != "" {
		if err := checkRegistry("registry", c.Registry, "correct --registry (appliance.yaml registry)"); err != nil {
			return err
		}
	}
	for name, p := range map[string]int{"router.http_port": d.Router.HTTPPort, "router.https_port": d.Router.HTTPSPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("appliance.yaml %s %d: give a TCP port between 1 and 65535", name, p)
		}
	}
	if d.Router.HTTPPort == d.Router.HTTPSPort {
		return fmt.Errorf("appliance.yaml router.http_port and router.https_port are both %d: they must differ", d.Router.HTTPPort)
	}
	if net.ParseIP(d.Router.BindAddress) == nil {
		return fmt.Errorf("appliance.yaml router.bind_address %q: give an IP address of this host, or 0.0.0.0 for all", d.Router.BindAddress)
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
	return validateProxy(c)
}

func validateProxy(c Config) error {
	for _, w := range c.Warehouses {
		if !slices.Contains(proxy.Warehouses, w) {
			return fmt.Errorf("warehouse %q: use one of %s", w, strings.Join(proxy.Warehouses, ", "))
		}
	}
	p := c.Proxy
	if !p.Enabled() {
		if p.CACert != "" || len(p.NoProxy) > 0 || p.RejectUnauthorized != nil {
			return fmt.Errorf("appliance.yaml proxy: no_proxy, ca_cert and reject_unauthorized need proxy.url; set it or remove the proxy section")
		}
		return nil
	}
	if _, err := proxy.ParseURL(p.URL); err != nil {
		return err
	}
	for _, e := range p.NoProxy {
		if _, err := proxy.ParseNoProxy(e); err != nil {
			return err
		}
	}
	if p.CACert != "" && p.CACert != proxy.CAFileName {
		return fmt.Errorf("appliance.yaml proxy.ca_cert %q: the appliance keeps the proxy CA as %s; set it with `carto-appliance proxy set --ca-cert FILE`", p.CACert, proxy.CAFileName)
	}
	return nil
}

// envSettings are the .env keys the appliance sets from its config; they
// win over customer.env and the env template. hostnames are the stack's
// names on its network, never proxied. notes are for the operator.
func (c Config) envSettings(hostnames []string) ([]string, []string) {
	d := c.Defaults()
	kv := []string{
		"ROUTER_HTTP_PORT", strconv.Itoa(d.Router.HTTPPort),
		"ROUTER_HTTPS_PORT", strconv.Itoa(d.Router.HTTPSPort),
		"ROUTER_BIND_ADDRESS", d.Router.BindAddress,
		// The appliance always provides the certificate (certs/carto.crt).
		"ROUTER_SSL_AUTOGENERATE", "0",
		"ROUTER_ENABLE_HTTPS", strconv.FormatBool(!c.TLS.offload()),
	}
	if c.Domain != "" {
		kv = append(kv, "SELFHOSTED_DOMAIN", c.Domain)
	}
	if c.Registry != "" {
		kv = append(kv, "DOCKER_REGISTRY_BASE_PATH", c.Registry)
	}
	pkv, notes := proxy.Env(proxy.EnvInput{Settings: c.Proxy, Services: hostnames, Warehouses: c.Warehouses})
	if !c.Proxy.Enabled() {
		notes = proxy.BypassNotes(c.Warehouses)
	}
	return append(kv, pkv...), notes
}

// LoadConfig reads appliance.yaml; a missing file is the zero Config.
// Unknown keys are refused with their name, so a typo cannot pass silently.
func LoadConfig(path string) (Config, bool, error) {
	b, err := boundedread.ReadFile(path, boundedread.EnvFile)
	if errors.Is(err, fs.ErrNotExist) {
		return Config{}, false, nil
	}
	if err != nil {
		return Config{}, false, fmt.Errorf("reading %s: %w", path, err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, true, fmt.Errorf("%s: %w (fix the file or remove the key)", path, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, true, fmt.Errorf("%s: %w", path, err)
	}
	return c, true, nil
}

// marshal renders appliance.yaml.
func (c Config) marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# carto-appliance settings. Edit, then run `carto-appliance config apply`.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("writing appliance.yaml: %w", err)
	}
	return buf.Bytes(), nil
}

func saveConfig(path string, c Config) error {
	b, err := c.marshal()
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}
