package main

import (
	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/stack"
)

func newLogsCmd() *cobra.Command {
	var opts stack.LogsOptions
	cmd := &cobra.Command{
		Use:   "logs [SERVICE...]",
		Short: "Show the services' logs, each line prefixed with its service",
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Services = args
			c, err := agentClient(cmd)
			if err != nil {
				return err
			}
			if c != nil {
				defer c.Close()
				return c.Logs(cmd.Context(), cmd.OutOrStdout(), opts)
			}
			return installer.Logs(cmd.Context(), pathsFrom(cmd), cmd.OutOrStdout(), opts)
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep following new lines")
	cmd.Flags().StringVar(&opts.Since, "since", "", "only lines since a time (2025-01-02T15:04:05) or a duration (10m)")
	cmd.Flags().StringVar(&opts.Tail, "tail", "all", "lines to show from the end of each service's log")
	return cmd
}
