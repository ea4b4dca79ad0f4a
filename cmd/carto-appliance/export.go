package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/helmvalues"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
)

func newExportCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "export", Short: "Export the installed settings for another way of running CARTO"}
	var out string
	helm := &cobra.Command{
		Use:   "helm-values [-o FILE]",
		Short: "Write the values of CARTO's Helm chart for the installed settings, secrets as references",
		Long: `Writes the values file of CARTO's official Helm chart (carto-selfhosted-helm ` + helmvalues.Chart + `)
for the installed settings, for an installation that moves to Kubernetes: the domain; the
router's service and TLS per CARTO's recommended patterns (TLS offloaded at an Ingress or
load balancer: a ClusterIP service on port 80; otherwise end to end: a LoadBalancer
service, restricted to network.allowed_sources, with the certificate from the Secret
` + helmvalues.TLSSecretName + `); the forward proxy and its CA; an external PostgreSQL and Redis; the
customer package's settings.

No secret is written: each one (database passwords, the customer package's secrets,
key.json) is a reference to a key of the Kubernetes Secret ` + helmvalues.SecretName + `, and the file's
header gives the kubectl command that creates it from customer.env's variables. What the
values cannot carry over (the embedded database, customer.env settings without a chart
key) is said on stderr. Nothing is changed on this node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := installer.ExportHelmValues(pathsFrom(cmd))
			if err != nil {
				return err
			}
			for _, w := range v.Warnings {
				fmt.Fprintln(os.Stderr, "Warning:", w)
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(v.YAML)
				return err
			}
			if err := atomicfile.Write(out, v.YAML, 0o644); err != nil {
				return fmt.Errorf("writing the values to %s: %w", out, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Wrote the Helm values to %s\n", out)
			return nil
		},
	}
	helm.Flags().StringVarP(&out, "output", "o", "", "write the values to FILE (default: standard output)")
	cmd.AddCommand(helm)
	return cmd
}
