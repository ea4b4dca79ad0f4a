package main

import (
	"errors"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/peer"
)

// newForwardCmd is what the tier2 web node's forwarder containers run
// (stack.Forward): not an operator's command.
func newForwardCmd() *cobra.Command {
	var listen, to, check string
	cmd := &cobra.Command{
		Use:    "forward --listen ADDR --to HOST:PORT | --check HOST:PORT",
		Short:  "Relay TCP connections to a service of another node (run inside the tier2 web node's forwarders)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if check != "" {
				return peer.CheckRelay(cmd.Context(), check)
			}
			if listen == "" || to == "" {
				return usageError{errors.New("forward needs --listen and --to (or --check)")}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return peer.Relay(ctx, listen, to)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "address to accept connections on, e.g. :3000")
	cmd.Flags().StringVar(&to, "to", "", "HOST:PORT to relay them to")
	cmd.Flags().StringVar(&check, "check", "", "only check that HOST:PORT accepts connections (a healthcheck)")
	return cmd
}
