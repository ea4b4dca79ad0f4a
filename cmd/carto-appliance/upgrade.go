package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
)

func newUpgradeCmd() *cobra.Command {
	var check, asJSON bool
	var to string
	cmd := &cobra.Command{
		Use:   "upgrade --check [--to VERSION] [--json]",
		Short: "Check the release channel for a newer CARTO, changing nothing",
		Long: `Reads the release channel the node follows (appliance.yaml upgrade.channel_url and
upgrade.channel; default ` + "stable" + `), verifies it against the release keys this
binary trusts, and shows the installed version, what the channel offers, the versions
an upgrade goes through (a release can require upgrading from a given version first),
whether the licence allows it (an expired or invalid licence, or one for another
channel, refuses it), and what the next version changes (images, required settings).
Nothing is changed.

Applying an upgrade is not in this version: --check is required.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !check {
				return usageError{fmt.Errorf("upgrade applies nothing in this version: run `carto-appliance upgrade --check` to see what the channel offers")}
			}
			chk, err := installer.CheckUpgrade(cmd.Context(), pathsFrom(cmd), to)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), chk)
			}
			printUpgradeCheck(cmd.OutOrStdout(), chk)
			return nil
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "show what the channel offers and what an upgrade would do; change nothing")
	cmd.Flags().StringVar(&to, "to", "", "the version to check an upgrade to (default: the channel's latest)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printUpgradeCheck(w io.Writer, c *installer.UpgradeCheck) {
	fmt.Fprintf(w, "Installed:  CARTO %s\n", c.Installed)
	fmt.Fprintf(w, "Channel:    %s at %s (latest %s)\n", c.Channel, c.ChannelURL, c.Latest)
	if len(c.Path) == 0 {
		fmt.Fprintf(w, "Up to date: nothing newer to upgrade to.\n")
	} else {
		fmt.Fprintf(w, "Upgrade to %s goes through: %s\n", c.Target, strings.Join(c.Path, " -> "))
	}
	lic := "allows it"
	if !c.License.Allowed {
		lic = "REFUSES it: " + c.License.Reason
	}
	fmt.Fprintf(w, "Licence:    %s, %s\n", c.License.State, lic)
	if ch := c.Changes; ch != nil {
		fmt.Fprintf(w, "From %s to %s:\n", ch.From, ch.To)
		for _, l := range []struct {
			what  string
			items []string
		}{
			{"new images", ch.ImagesAdded}, {"images no longer run", ch.ImagesRemoved},
			{"new services", ch.ServicesAdded}, {"services no longer run", ch.ServicesRemoved},
			{"new .env keys", ch.EnvAdded}, {".env keys no longer written", ch.EnvRemoved},
			{"newly required settings", ch.EnvRequired}, {"settings no longer required", ch.EnvDropped},
		} {
			if len(l.items) > 0 {
				fmt.Fprintf(w, "  %s: %s\n", l.what, strings.Join(l.items, ", "))
			}
		}
	}
}
