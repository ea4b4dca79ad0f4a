package config

import (
	"net/url"
	"time"

	"github.com/cartodb/carto-appliance/internal/urls"
	"github.com/cartodb/carto-appliance/license"
)

// DefaultLicenseServer is where licences are checked online.
const DefaultLicenseServer = "https://licenses.carto.com/v1/check"

// LicenseConfig is appliance.yaml's license section.
type LicenseConfig struct {
	// Server is the licence server's check URL (https, no credentials);
	// empty means DefaultLicenseServer.
	Server string `yaml:"server,omitempty"`
	// GraceDays is how long the licence stays valid while the server gives
	// no trusted answer: 1 to license.MaxGraceDays; 0 means 14.
	GraceDays int `yaml:"grace_days,omitempty"`
}

// ServerURL is the licence server in use.
func (c LicenseConfig) ServerURL() string {
	if c.Server == "" {
		return DefaultLicenseServer
	}
	return c.Server
}

// Grace is license.grace_days as a duration; 0 is license.Evaluate's
// default.
func (c LicenseConfig) Grace() time.Duration { return time.Duration(c.GraceDays) * 24 * time.Hour }

// ServerName is the configured server as messages show it: without what
// may be a secret.
func (c LicenseConfig) ServerName() string {
	u, err := url.Parse(c.ServerURL())
	if err != nil {
		return "the licence server"
	}
	return RedactURL(u)
}

func validateLicense(c LicenseConfig) error {
	if c.Server != "" {
		if err := CheckLicenseServer(c.Server, "appliance.yaml license.server"); err != nil {
			return &FieldError{Field: "license.server", Err: err}
		}
	}
	if c.GraceDays < 0 || c.GraceDays > license.MaxGraceDays {
		return fieldErrorf("license.grace_days", "appliance.yaml license.grace_days %d: give a number of days from 1 to %d, or 0 for the default 14", c.GraceDays, license.MaxGraceDays)
	}
	return nil
}

// CheckLicenseServer refuses a licence server URL that is not https or
// carries credentials; what names where it came from. The URL itself is
// never repeated whole: it may hold a password.
func CheckLicenseServer(raw, what string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return errorf("%s: not a URL: give the licence server's https:// URL, e.g. %s", what, DefaultLicenseServer)
	}
	if u.User != nil {
		return errorf("%s %s: remove the user name and password from the URL: the licence server takes none, and they would show in status and logs", what, RedactURL(u))
	}
	if u.Scheme != "https" {
		return errorf("%s %s: the licence server must be reached over https: use https://%s%s", what, RedactURL(u), u.Host, u.EscapedPath())
	}
	return nil
}

// RedactURL is u without what may be a secret (user info, query,
// fragment): what messages say of a URL.
func RedactURL(u *url.URL) string { return urls.Redact(u) }
