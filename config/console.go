package config

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// ConsoleConfig is appliance.yaml's console section: the admin console
// the agent serves (SPEC §13), over HTTPS with the router's certificate.
type ConsoleConfig struct {
	// Port is where it listens; 0 means DefaultConsolePort.
	Port int `yaml:"port,omitempty"`
	// BindAddress is the address it listens on; empty means 127.0.0.1:
	// reached through an SSH tunnel, from this host only.
	BindAddress string `yaml:"bind_address,omitempty"`
	// PasswordHash is the bcrypt hash of its password (`carto-appliance
	// console set-password`); empty: no console.
	PasswordHash string `yaml:"password_hash,omitempty"`
}

// DefaultConsolePort is the console's port unless told otherwise.
const DefaultConsolePort = 9443

// PortNumber is the console's port in use.
func (c ConsoleConfig) PortNumber() int {
	if c.Port == 0 {
		return DefaultConsolePort
	}
	return c.Port
}

// Address is the console's listening address in use.
func (c ConsoleConfig) Address() string {
	if c.BindAddress == "" {
		return "127.0.0.1"
	}
	return c.BindAddress
}

// ConsoleEndpoint is where and how the console is served.
type ConsoleEndpoint struct {
	Addr string // host:port
	// TLS says it is served over HTTPS, with CertFile and KeyFile (the
	// router's certificate); without one (TLS offloaded) it is plain
	// HTTP, which the agent serves on loopback only.
	TLS               bool
	CertFile, KeyFile string
}

// Endpoint is where and how the agent serves the console, with the
// router's certificate as it is now in paths' config dir: one answer for
// the server and for what status prints.
func (c ConsoleConfig) Endpoint(paths Paths) ConsoleEndpoint {
	dir := filepath.Join(paths.WithDefaults().ConfigDir, CertsDirName)
	e := ConsoleEndpoint{
		Addr:     net.JoinHostPort(c.Address(), strconv.Itoa(c.PortNumber())),
		CertFile: filepath.Join(dir, ServerCertFile), KeyFile: filepath.Join(dir, ServerKeyFile),
	}
	_, err := os.Stat(e.CertFile)
	e.TLS = err == nil
	return e
}

// URL is the console's address for a browser.
func (e ConsoleEndpoint) URL() string {
	scheme := "https"
	if !e.TLS {
		scheme = "http"
	}
	return scheme + "://" + e.Addr + "/"
}

func validateConsole(c ConsoleConfig) error {
	if c.Port < 0 || c.Port > 65535 {
		return fieldErrorf("console.port", "appliance.yaml console.port %d: give a TCP port between 1 and 65535", c.Port)
	}
	if c.BindAddress != "" && net.ParseIP(c.BindAddress) == nil {
		return fieldErrorf("console.bind_address", "appliance.yaml console.bind_address %q: give an IP address of this host (127.0.0.1, the default, for an SSH tunnel)", c.BindAddress)
	}
	if h := c.PasswordHash; h != "" {
		if _, err := bcrypt.Cost([]byte(h)); err != nil || !strings.HasPrefix(h, "$2") {
			return fieldErrorf("console.password_hash", "appliance.yaml console.password_hash is not a bcrypt hash: set the password with `carto-appliance console set-password`")
		}
	}
	return nil
}
