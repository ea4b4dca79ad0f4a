package main

import (
	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/supervisor"
)

// runCerts runs a certificate change, which never restarts the engine.
func runCerts(cmd *cobra.Command, op supervisor.CertsOp) error {
	return runOp(cmd, false, func(bool) supervisor.Op { return op })
}

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Show, import or renew the router's TLS certificate",
		Long: `The router's certificate comes from the appliance's own CA (self-signed mode, the
default: renewed by the agent a month before it expires), from your own
(custom mode: 'certs import') or from an ACME CA ('certs acme': renewed by the
agent). A new certificate reaches the router by a reload; no container is
recreated.

The appliance's CA may only sign for the domain (X.509 name constraints) and
lives 3 years. The agent replaces it 90 days before its end, when the domain
changes, or when it has no name constraints (made by an older version): the
new CA is first published beside the old one in carto-ca.crt, and 60 days
later the router switches to it. 'certs status' shows when.`,
	}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the mode, issuer, names, expiry and the CA to trust",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := installer.GetCertificateStatus(pathsFrom(cmd))
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), c)
			}
			printCertificate(cmd.OutOrStdout(), c)
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var in installer.TLSInput
	imp := &cobra.Command{
		Use:   "import --cert FILE --key FILE [--chain FILE]",
		Short: "Serve your own certificate (custom mode), after checking it",
		Long: `Checks the certificate before anything changes: PEM, a key that belongs to it
and has no passphrase, valid now, covering the domain, the chain in order (the
server certificate, then each issuer). Then installs it and reloads the router.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, f := range []*string{&in.CertFile, &in.KeyFile, &in.ChainFile} {
				absFile(f)
			}
			return runCerts(cmd, supervisor.CertsOp{Action: supervisor.CertsImport, TLS: in})
		},
	}
	imp.Flags().StringVar(&in.CertFile, "cert", "", "the server certificate, PEM (its chain may follow it)")
	imp.Flags().StringVar(&in.KeyFile, "key", "", "its private key, PEM, without a passphrase")
	imp.Flags().StringVar(&in.ChainFile, "chain", "", "intermediate certificates, PEM, issuer after issuer")

	selfSigned := &cobra.Command{
		Use:   "self-signed",
		Short: "Go back to a certificate from the appliance's own CA",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCerts(cmd, supervisor.CertsOp{Action: supervisor.CertsSelfSigned})
		},
	}
	offload := &cobra.Command{
		Use:   "offload",
		Short: "Let a load balancer in front end TLS: the router serves plain HTTP",
		Long: `For a load balancer that terminates TLS and forwards plain HTTP: the router
serves the app on its HTTP port (appliance.yaml router.http_port) and nothing
listens on the HTTPS port. Restrict who may reach the HTTP port to the load
balancer. 'certs self-signed' or 'certs import' end the offload.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCerts(cmd, supervisor.CertsOp{Action: supervisor.CertsOffload})
		},
	}
	var acme installer.ACMEInput
	acmeCmd := &cobra.Command{
		Use:   "acme --email ADDRESS [--ca URL] [--ca-cert FILE]",
		Short: "Get the router's certificate from an ACME CA (Let's Encrypt or an internal one)",
		Long: `Obtains a certificate for the domain from the ACME CA before anything changes
(HTTP-01: the CA connects to the domain on port 80; the router stops publishing
the HTTP port, where the agent answers the challenges and redirects everything
else to https). The agent renews it when a third of its lifetime is left; a
refused order changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			absFile(&acme.CACertFile)
			return runCerts(cmd, supervisor.CertsOp{Action: supervisor.CertsACME, ACME: acme})
		},
	}
	acmeCmd.Flags().StringVar(&acme.Email, "email", "", "the e-mail address the CA writes to about the certificates (default: the installed one)")
	acmeCmd.Flags().StringVar(&acme.Directory, "ca", "", "the ACME directory URL (default: the installed one, or Let's Encrypt)")
	acmeCmd.Flags().StringVar(&acme.CACertFile, "ca-cert", "", "root certificates, PEM, to trust for the CA's TLS (an internal CA)")
	renew := &cobra.Command{
		Use:   "renew",
		Short: "Issue the self-signed certificate again, or renew the ACME one, now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCerts(cmd, supervisor.CertsOp{Action: supervisor.CertsRenew})
		},
	}
	cmd.AddCommand(status, imp, selfSigned, acmeCmd, offload, renew)
	return cmd
}
