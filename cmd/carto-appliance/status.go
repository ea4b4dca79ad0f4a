package main

import (
	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
)

func newStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the version, layout and state of every service",
		Long: `Shows the version, the URL, the agent and each service's state, health and
restarts (the engine's and the agent's), crash loops and services stopped by the
operator. Asks the agent when it runs, the Docker engine otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := agentClient(cmd)
			if err != nil {
				return err
			}
			var st *installer.Status
			if c != nil {
				defer c.Close()
				st, err = c.Status(cmd.Context())
			} else {
				st, err = installer.GetStatus(cmd.Context(), pathsFrom(cmd))
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
