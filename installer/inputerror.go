package installer

import "fmt"

// Input names an operator's input by what it is. How a command line
// gives it (a flag's name) is cmd/'s business, not the core's: the same
// certificate is install's --tls-cert and certs import's --cert.
type Input string

// The inputs errors can name.
const (
	InputCustomerEnv     Input = "customer_env"     // the customer package's customer.env
	InputKey             Input = "key"              // the customer package's key.json
	InputLicense         Input = "license"          // the licence file
	InputLicenseServer   Input = "license_server"   // the licence server's URL
	InputDomain          Input = "domain"           // the name users reach CARTO at
	InputRegistry        Input = "registry"         // the registry the operator names
	InputProxyURL        Input = "proxy_url"        // the forward proxy
	InputProxyCACert     Input = "proxy_ca_cert"    // the proxy's CA file
	InputTLSMode         Input = "tls_mode"         // which of custom, offload or acme
	InputTLSCert         Input = "tls_cert"         // the router's certificate file
	InputTLSKey          Input = "tls_key"          // its key file
	InputTLSChain        Input = "tls_chain"        // its chain file
	InputACMECACert      Input = "acme_ca_cert"     // the ACME CA's roots file
	InputIgnorePreflight Input = "ignore_preflight" // the preflight checks to ignore
	InputConfigDir       Input = "config_dir"       // where appliance.yaml and the stack's files are
	InputStateDir        Input = "state_dir"        // where the appliance's state is
	// InputSkipDatabaseBackup: going on with no dump of an external database.
	InputSkipDatabaseBackup Input = "skip_db_backup"
	// InputRestoreDatabase: a rollback asked to put the database back.
	InputRestoreDatabase Input = "restore_database"
	// Preflight's fixes name these too (preflight.Check.Inputs).
	InputInstallDocker Input = "install_docker" // install Docker from the distribution's packages
	InputBindAddress   Input = "bind_address"   // the address the router listens on
	InputHTTPPort      Input = "http_port"      // the router's HTTP port
	InputHTTPSPort     Input = "https_port"     // the router's HTTPS port
	// host.SettingError names this too.
	InputBinary Input = "binary" // the executable the agent's unit runs
	InputBundle Input = "bundle" // an air-gap bundle
	// The tier layouts (SPEC §10).
	InputLayout Input = "layout" // standard, tier1 or tier2
	InputRole   Input = "role"   // this node's role in the layout
	InputNodes  Input = "nodes"  // the layout's nodes: role=address pairs
	InputJoin   Input = "join"   // the join token file the data node wrote
	// InputBackup is a backup to restore (its file or its passphrase).
	InputBackup Input = "backup"
	// InputConsolePassword is the admin console's password.
	InputConsolePassword Input = "console_password"
	// InputSetting is a NAME=VALUE of appliance.yaml given by name
	// (config set), or the name config get reads.
	InputSetting Input = "setting"
)

// InputError is bad or missing input, named by Input. Its message names
// the input in words ("no customer.env", "the certificate file") with the
// fix; cmd/ adds the flag that gives it.
type InputError struct {
	Input Input
	Err   error
}

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErrorf(in Input, format string, args ...any) error {
	return &InputError{Input: in, Err: fmt.Errorf(format, args...)}
}
