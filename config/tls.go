package config

import (
	"net/url"
	"strings"

	"github.com/cartodb/carto-appliance/certs"
)

// TLS modes (appliance.yaml tls.mode).
const (
	// TLSSelfSigned: the appliance's own CA issues the router's
	// certificate and renews it (the default).
	TLSSelfSigned = "self-signed"
	// TLSCustom: the customer's certificate, imported by the operator.
	TLSCustom = "custom"
	// TLSOffload: TLS ends at a load balancer in front; the router serves
	// plain HTTP on its HTTP port and nothing listens on the HTTPS one.
	TLSOffload = "offload"
	// TLSACME: certificates from an ACME CA (Let's Encrypt or an internal
	// one), obtained and renewed by the appliance; the agent answers the
	// HTTP-01 challenges on the HTTP port, which the router then does not
	// publish.
	TLSACME = "acme"
)

// TLSConfig is appliance.yaml's tls section.
type TLSConfig struct {
	Mode string      `yaml:"mode,omitempty"` // self-signed (default), custom, acme or offload
	ACME *ACMEConfig `yaml:"acme,omitempty"` // acme mode's CA
}

// Offload says a load balancer in front ends TLS.
func (t TLSConfig) Offload() bool { return t.Mode == TLSOffload }

// UsesACME says the certificate comes from an ACME CA.
func (t TLSConfig) UsesACME() bool { return t.Mode == TLSACME }

// ACMEConfig is appliance.yaml's tls.acme.
type ACMEConfig struct {
	// Directory is the ACME directory URL; empty means Let's Encrypt.
	Directory string `yaml:"directory,omitempty"`
	// Email is the ACME account's contact.
	Email string `yaml:"email,omitempty"`
	// CACert names the file in certs/ with the roots trusted for the
	// directory's TLS (an internal ACME CA).
	CACert string `yaml:"ca_cert,omitempty"`
}

// DirectoryURL is the ACME directory in use: Let's Encrypt by default.
func (c ACMEConfig) DirectoryURL() string {
	if c.Directory == "" {
		return certs.LetsEncrypt
	}
	return c.Directory
}

// validateACME checks tls.acme when acme mode is on.
func validateACME(t TLSConfig) error {
	if !t.UsesACME() {
		return nil
	}
	if t.ACME == nil || !strings.Contains(t.ACME.Email, "@") {
		return fieldErrorf("tls.acme.email", "appliance.yaml tls.acme.email: acme mode needs the e-mail address the CA writes to about the certificates")
	}
	if c := t.ACME.CACert; c != "" && c != ACMECAFileName {
		return fieldErrorf("tls.acme.ca_cert", "appliance.yaml tls.acme.ca_cert %q: it can only name the appliance's own copy, %s in the config dir's certs/; to trust another CA give its file as the ACME CA's roots, which are checked and copied there", c, ACMECAFileName)
	}
	u, err := url.Parse(t.ACME.DirectoryURL())
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fieldErrorf("tls.acme.directory", "appliance.yaml tls.acme.directory %q: give the ACME directory's https:// URL, or leave it out for Let's Encrypt", t.ACME.Directory)
	}
	return nil
}
