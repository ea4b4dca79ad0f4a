package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/preflight"
)

func newPreflightCmd() *cobra.Command {
	var opts installer.InstallOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "preflight",
		Short: "Check that this machine can run CARTO; changes nothing",
		Long: `Runs the checks install runs first: operating system and architecture, CPUs,
memory and free disk against the release's requirements, the Docker engine
(20.10 or later), the router's ports, the domain's DNS record and the clock.
Each passes, warns or fails with what to do. Takes install's settings flags;
without them it checks the installed settings. Exit code 3 when a check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Paths = pathsFrom(cmd)
			report, err := installer.Preflight(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if asJSON {
				err = printJSON(cmd.OutOrStdout(), report)
			} else {
				printPreflight(cmd.OutOrStdout(), report)
			}
			if err == nil && report.Failed {
				err = &preflight.FailedError{Report: report}
			}
			return err
		},
	}
	installSettingsFlags(cmd.Flags(), &opts)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printPreflight(w io.Writer, r *preflight.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Title, c.Status, c.Detail)
	}
	tw.Flush()
	for _, c := range r.Checks {
		if c.Fix != "" {
			fmt.Fprintf(w, "%s (%s): %s\n", c.Title, c.Status, checkFix(c))
		}
	}
}
