package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
)

func newEnvCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "env", Short: "Inspect the generated .env"}
	var customer string
	render := &cobra.Command{
		Use:   "render",
		Short: "Print the .env that config apply would write, secrets masked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := installer.RenderEnv(pathsFrom(cmd), customer)
			if err != nil {
				return err
			}
			for _, w := range r.Warnings {
				fmt.Fprintln(os.Stderr, "Warning:", w)
			}
			_, err = cmd.OutOrStdout().Write(r.Masked)
			return err
		},
	}
	render.Flags().StringVar(&customer, "customer-env", "", "render from this customer.env instead of the installed one")
	cmd.AddCommand(render)
	return cmd
}
