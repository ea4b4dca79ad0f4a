package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/templates"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the appliance's version and the CARTO release it carries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := templates.Default()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "carto-appliance %s\nCARTO release %s\n", version, rel.Manifest.Version)
			return nil
		},
	}
}
