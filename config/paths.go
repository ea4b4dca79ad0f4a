package config

import "path/filepath"

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
	// LicenseFileName is the licence, as CARTO signed it.
	LicenseFileName = "license.json"
)

// ConsoleSessionsFileName (state dir) keeps the admin console's logins
// across the agent's restarts: session ids only hashed.
const ConsoleSessionsFileName = "console-sessions.json"

// The router's TLS files in the config dir's certs/, and the CA's in the
// state dir: its key never goes where containers can read it.
const (
	ServerCertFile = "carto.crt"
	ServerKeyFile  = "carto.key"
	CACertFile     = "carto-ca.crt"
	// ACMECAFileName is the ACME directory's trusted roots in certs/.
	ACMECAFileName = "acme-ca.crt"
)

// Directories and files in the state dir.
const (
	// CADirName holds the appliance's CA key (and, during a rotation, the
	// next CA).
	CADirName = "tls"
	// ACMEDirName is certmagic's storage: the account key, the certificates
	// and the challenge tokens the agent answers.
	ACMEDirName = "acme"
	// AgentStateFileName is the agent's record of its restarts and crash
	// loops.
	AgentStateFileName = "agent.json"
	// LicenseCheckFileName keeps the licence server's last word.
	LicenseCheckFileName = "license-check.json"
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

// File is name in the config dir.
func (p Paths) File(name string) string { return filepath.Join(p.ConfigDir, name) }

// KeyFile is the appliance's copy of key.json.
func (p Paths) KeyFile() string { return filepath.Join(p.ConfigDir, CertsDirName, KeyFileName) }

// CAPath is where the self-signed mode's CA certificate is, for clients to
// trust.
func (p Paths) CAPath() string {
	return filepath.Join(p.WithDefaults().ConfigDir, CertsDirName, CACertFile)
}

// CADir is the appliance's CA in the state dir.
func (p Paths) CADir() string { return filepath.Join(p.StateDir, CADirName) }
