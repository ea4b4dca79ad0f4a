package main

import (
	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/stack"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Apply the appliance's settings"}
	var pull string
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Re-render .env and docker-compose.yml and recreate only what changed",
		Args:  cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return validatePull(pull)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConverge(cmd, false, func(o installer.Options) (*installer.Result, error) {
				o.Paths = pathsFrom(cmd)
				o.Pull = stack.PullPolicy(pull)
				return installer.Apply(cmd.Context(), o)
			})
		},
	}
	apply.Flags().StringVar(&pull, "pull", string(stack.PullMissing), "when to pull images: missing, always or never")
	cmd.AddCommand(apply)
	return cmd
}
