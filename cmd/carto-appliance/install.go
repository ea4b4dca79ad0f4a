package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/host"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/preflight"
	"github.com/cartodb/carto-appliance/stack"
	"github.com/cartodb/carto-appliance/supervisor"
)

func newInstallCmd() *cobra.Command {
	var opts installer.InstallOptions
	var noService, yes bool
	var binary string
	var pull string
	var px proxyFlags
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install CARTO from a customer package and bring it up",
		Long: `Imports the customer package (customer.env, key.json) into the config dir,
writes appliance.yaml, renders .env and docker-compose.yml, pulls every image
and starts the stack in dependency order, waiting until it is healthy.
Preflight runs first (see 'carto-appliance preflight'): a failed check stops the
install with exit code 3 and nothing changed. Nothing changes until the settings
are valid and every image is present. Re-running it converges: only what changed
is recreated.

With --bundle FILE the release and its images come from an air-gap bundle: the
whole file is checked against its signed index first (a truncated, altered or
foreign-signed bundle is refused with nothing changed), its images are loaded
into the engine (those it has already are not loaded again) and nothing is
pulled: no registry, no egress check. The licence should be an air-gap one.`,
		Args: cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, args []string) error {
			if err := validatePull(pull); err != nil {
				return err
			}
			if noService {
				return nil
			}
			// Before anything changes: systemd runs here, we are root, and
			// the unit can run the binary.
			return host.CheckService(host.ServiceOptions{Paths: pathsFrom(cmd), Binary: binary})
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Paths = pathsFrom(cmd)
			opts.Pull = stack.PullPolicy(pull)
			opts.Proxy = px.input(cmd, "proxy-")
			for _, f := range []*string{&opts.CustomerEnv, &opts.KeyFile, &opts.LicenseFile, &opts.Proxy.CACertFile, &opts.TLS.CertFile, &opts.TLS.KeyFile, &opts.TLS.ChainFile, &opts.ACME.CACertFile, &opts.Bundle, &opts.Join, &opts.ConsolePasswordFile} {
				absFile(f)
			}
			// Run again on an installed node, install goes through the
			// agent as every change does; the first install has none.
			c, err := agentClient(cmd)
			if err != nil {
				return err
			}
			if c != nil {
				defer c.Close()
			}
			restart := supervisor.EngineRestart{RestartEngine: yes}
			if opts.Proxy.URL != "" {
				restart = engineRestart(yes, c != nil, engineProxyChange)
			}
			op := supervisor.InstallOp{Install: opts, Pull: opts.Pull, EngineRestart: restart}
			var installed *installer.Status
			err = runConverge(cmd, yes, func(o installer.Options) (*installer.Result, error) {
				o.Paths = opts.Paths
				res, err := supervisor.Do(cmd.Context(), c, o, op)
				if res != nil {
					installed = res.Status
				}
				if err == nil && noService && res.Status != nil && res.Status.Certificate != nil && res.Status.Certificate.Mode == config.TLSACME {
					res.Warnings = append(res.Warnings, "without the agent (--no-service) nothing answers the HTTP port nor renews the ACME certificate: run `carto-appliance service install`")
				}
				if err != nil || noService {
					return res, err
				}
				// The stack is up and converged first, so the agent's own
				// first converge is a no-op rather than a second one racing
				// this one.
				if err := host.InstallService(cmd.Context(), host.ServiceOptions{Paths: opts.Paths, Binary: binary}); err != nil {
					return res, fmt.Errorf("the stack is up, but its agent did not start: %w", err)
				}
				// The status shown is the agent's, now that it runs.
				if c, err := supervisor.Dial(cmd.Context(), opts.Paths); err == nil {
					defer c.Close()
					if st, err := c.Status(cmd.Context()); err == nil {
						res.Status = st
					}
				}
				return res, nil
			})
			if err == nil {
				printJoinHint(cmd.OutOrStdout(), opts.Paths, installed)
			}
			if err != nil || noService {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "The agent keeps it up: %s (journalctl -u carto-appliance)\n", host.ServiceUnit)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&noService, "no-service", false, "converge in the foreground, not through a running agent, and do not register the systemd agent")
	f.StringVar(&binary, "binary", "", "the carto-appliance executable the systemd service runs (default: this one if in "+host.DefaultBinary+" or "+host.PackageBinary+")")
	f.StringVar(&pull, "pull", string(stack.PullMissing), "when to pull images: missing, always or never")
	f.BoolVarP(&yes, "yes", "y", false, "do not ask before restarting the Docker engine for new proxy settings")
	f.StringVar(&opts.ConsolePasswordFile, "console-password-file", "", "set the admin console's password from this file's first line (only its bcrypt hash is kept): the agent then serves the console (see `carto-appliance console set-password`)")
	f.BoolVar(&opts.InstallDocker, "install-docker", false, "install the Docker engine from the distribution's packages when it is missing (after the other preflight checks pass)")
	installSettingsFlags(f, &opts)
	px.register(f, "proxy-")
	return cmd
}

// installSettingsFlags are the settings install takes, which preflight
// checks too.
func installSettingsFlags(f *pflag.FlagSet, opts *installer.InstallOptions) {
	f.StringVar(&opts.Layout, "layout", "", "standard (one VM, the default) or tier1 (an app VM and a data VM); install the data node first")
	f.StringVar(&opts.Role, "role", "", "this node's role in a tier layout: data or app")
	f.StringToStringVar(&opts.Nodes, "nodes", nil, "the tier layout's nodes by their private addresses, e.g. app=10.0.0.2,data=10.0.0.3 (on the data node; the others take them from --join)")
	f.StringVar(&opts.Join, "join", "", "the join token FILE the data node's install wrote (its state dir's "+installer.JoinTokenFileName+"), copied here: joins this node to that layout")
	f.StringVar(&opts.Bundle, "bundle", "", "install from an air-gap bundle FILE (carto-release bundle): its release and images, checked against its signature first; no registry is asked")
	f.StringVar(&opts.CustomerEnv, "customer-env", "", "customer.env of your CARTO customer package (default: the installed one)")
	f.StringVar(&opts.KeyFile, "key", "", "key.json of your CARTO customer package (default: the installed one)")
	f.StringVar(&opts.LicenseFile, "license", "", "license.json of your CARTO customer package (default: the one next to --customer-env, or the installed one)")
	f.StringVar(&opts.LicenseServer, "license-server", "", "https URL (no credentials) the licence is checked at online (default "+config.DefaultLicenseServer+")")
	f.StringVar(&opts.Domain, "domain", "", "DNS name users reach CARTO at (default: SELFHOSTED_DOMAIN of customer.env)")
	f.StringVar(&opts.Registry, "registry", "", "image registry base path, e.g. a private mirror (default gcr.io/carto-onprem-artifacts)")
	f.IntVar(&opts.HTTPPort, "http-port", 0, "host port for HTTP (default 80)")
	f.IntVar(&opts.HTTPSPort, "https-port", 0, "host port for HTTPS (default 443)")
	f.StringVar(&opts.BindAddress, "bind-address", "", "host address the router listens on (default 0.0.0.0)")
	f.StringVar(&opts.Project, "project", "", "compose project name (default carto)")
	f.StringSliceVar(&opts.Warehouses, "warehouses", nil, "data warehouses in use: bigquery, snowflake, postgres, redshift, databricks (comma-separated)")
	f.StringVar(&opts.TLS.CertFile, "tls-cert", "", "the router's certificate, PEM (custom TLS mode; default: a certificate from the appliance's own CA)")
	f.StringVar(&opts.TLS.KeyFile, "tls-key", "", "the key of --tls-cert, PEM, without a passphrase")
	f.StringVar(&opts.TLS.ChainFile, "tls-chain", "", "intermediate certificates of --tls-cert, PEM, issuer after issuer")
	f.BoolVar(&opts.ACME.Enabled, "tls-acme", false, "certificates from an ACME CA (Let's Encrypt unless --acme-ca), obtained now and renewed by the agent, which answers the CA's challenges on --http-port (port 80 as the CA sees it)")
	f.StringVar(&opts.ACME.Directory, "acme-ca", "", "the ACME directory URL of an internal CA (implies --tls-acme; default Let's Encrypt)")
	f.StringVar(&opts.ACME.Email, "acme-email", "", "the e-mail address the ACME CA writes to about the certificates (required with --tls-acme)")
	f.StringVar(&opts.ACME.CACertFile, "acme-ca-cert", "", "root certificates, PEM, to trust for --acme-ca's TLS (an internal CA)")
	f.BoolVar(&opts.TLSOffload, "tls-offload", false, "a load balancer in front ends TLS: the router serves plain HTTP on --http-port and nothing listens on --https-port")
	f.StringSliceVar(&opts.AllowedSources, "allowed-sources", nil, "addresses or CIDRs that may reach the router (comma-separated; default everyone; \"\" allows everyone again)")
	f.StringSliceVar(&opts.IgnorePreflight, "ignore-preflight", nil, "preflight checks whose failure only warns (comma-separated IDs: "+strings.Join(preflight.IDs, ", ")+")")
}

func validatePull(p string) error {
	switch stack.PullPolicy(p) {
	case stack.PullMissing, stack.PullAlways, stack.PullNever:
		return nil
	}
	return usageError{fmt.Errorf("--pull %q: use missing, always or never", p)}
}

// runConverge runs a workflow that converges the stack, with progress on
// stderr and the result on stdout.
func runConverge(cmd *cobra.Command, yes bool, fn func(installer.Options) (*installer.Result, error)) error {
	pr := newProgress(os.Stderr)
	res, err := fn(installer.Options{Reporter: pr, Progress: pr.Pulls(), ConfirmEngineRestart: confirmer(yes)})
	pr.Close()
	out := cmd.OutOrStdout()
	if res != nil {
		if res.Preflight != nil {
			for _, c := range res.Preflight.Checks {
				if c.Status == preflight.Warn {
					fmt.Fprintf(os.Stderr, "Warning: preflight: %s: %s; %s\n", c.Title, c.Detail, checkFix(c))
				}
			}
		}
		for _, w := range res.Warnings {
			fmt.Fprintln(os.Stderr, "Warning:", w)
		}
	}
	if err != nil {
		return err
	}
	if su := res.SelfUpdate; su != nil {
		fmt.Fprintf(out, "\nUpdated carto-appliance %s to %s (%s; the previous binary is kept at %s)\n", su.From, su.To, su.Binary, su.Previous)
		return nil // the caller goes on in the new binary
	}
	if u := res.Upgrade; u != nil {
		if u.From == u.To {
			return nil // up to date: the warning said so
		}
		fmt.Fprintf(out, "\nUpgraded CARTO %s to %s (through %s)\n", u.From, u.To, strings.Join(u.Path, " -> "))
		for _, b := range u.Backups {
			fmt.Fprintf(out, "Backup taken before the upgrade: %s\n", b)
		}
		for _, b := range u.Removed {
			fmt.Fprintf(out, "Old backup removed (upgrade.keep_backups): %s\n", b)
		}
	}
	if r := res.Rollback; r != nil {
		fmt.Fprintf(out, "\nRolled CARTO %s back to %s: %s\n", r.From, r.To, r.Restored)
	}
	if res.Status != nil && len(res.Status.Held) > 0 {
		fmt.Fprintf(out, "\nCARTO %s at %s: %s stopped by the operator (carto-appliance start brings them back)\n\n",
			res.Version, res.URL, strings.Join(res.Status.Held, ", "))
	} else {
		fmt.Fprintf(out, "\nCARTO %s is up at %s\n\n", res.Version, res.URL)
	}
	if res.CredentialsTo != "" {
		fmt.Fprintf(out, "Registry credentials (key.json) go to %s only\n", res.CredentialsTo)
	}
	if res.Status != nil {
		printStatus(out, res.Status)
	}
	return nil
}

// printJoinHint tells the operator of a tier layout's first node how the
// other nodes join it. The token itself is a secret: its file is named,
// never printed.
func printJoinHint(w io.Writer, paths config.Paths, st *installer.Status) {
	if st == nil || len(st.Nodes) == 0 {
		return
	}
	node := config.Config{Layout: st.Layout, Role: st.Role}
	if len(node.Dependencies()) > 0 {
		return // only the first node is joined
	}
	var next []string
	for _, r := range node.Dependents() {
		i := slices.IndexFunc(st.Peers, func(p installer.PeerState) bool { return p.Role == r })
		if i < 0 || !st.Peers[i].Reachable {
			next = append(next, r)
		}
	}
	if len(next) == 0 {
		return
	}
	fmt.Fprintf(w, "Next: copy %s (a secret: keep it 0600) to the %s node(s), then run there:\n", installer.JoinTokenPath(paths), strings.Join(next, " and "))
	for _, r := range next {
		fmt.Fprintf(w, "  carto-appliance install --join FILE --role %s --customer-env ... --key ...   (on %s)\n", r, st.Nodes[r])
	}
}
