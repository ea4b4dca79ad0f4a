package main

import (
	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
)

// newFirewallCmd is what the Docker engine runs before it starts (the
// docker.service drop-in install writes when network.allowed_sources is
// set); hidden, since operators change the allow-list with install or
// appliance.yaml and config apply.
func newFirewallCmd() *cobra.Command {
	fw := &cobra.Command{
		Use:    "firewall",
		Short:  "The router's allow-list in the host firewall",
		Hidden: true,
	}
	fw.AddCommand(&cobra.Command{
		Use:   "restore",
		Short: "Apply the allow-list last applied (before the Docker engine starts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return installer.RestoreFirewall(cmd.Context(), pathsFrom(cmd))
		},
	})
	return fw
}
