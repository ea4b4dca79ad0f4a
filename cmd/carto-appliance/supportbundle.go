package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/support"
)

func newSupportBundleCmd() *cobra.Command {
	var out string
	var opts installer.SupportBundleOptions
	cmd := &cobra.Command{
		Use:   "support-bundle [-o FILE]",
		Short: "Write one .tar.gz for CARTO's support: status, settings, logs, engine and host facts, secrets masked",
		Long: `Writes one .tar.gz (0600) that tells CARTO's support the node's story: status and
preflight, appliance.yaml, customer.env and .env, the containers as the engine
sees them, the last log lines of each service and of the agent's journal, the
engine's info, the host's disk, memory and cgroup figures, the journals of the
last changes and upgrades, the certificate and licence summaries. Secrets are
masked everywhere, log lines included, by the known secrets' values and by
their shapes; REDACTIONS in the bundle says what was masked where (never the
secret). It works on a broken node (engine stopped, nothing installed):
MANIFEST says what could not be collected and why. Nothing on the node changes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Paths = pathsFrom(cmd)
			if out == "" {
				host, _ := os.Hostname()
				out = fmt.Sprintf("carto-support-%s-%s.tar.gz", host, time.Now().UTC().Format("20060102T150405Z"))
			}
			var sum *support.Summary
			if err := writeNewFile(out, func(w io.Writer) (err error) {
				sum, err = installer.SupportBundle(cmd.Context(), w, opts)
				return err
			}); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Support bundle: %s (%d entries, %d bytes before compression, %d secrets masked)\n", out, sum.Entries, sum.Bytes, sum.Redactions)
			for _, m := range sum.Missing {
				fmt.Fprintf(w, "Not collected: %s\n", m)
			}
			for _, c := range sum.Cut {
				fmt.Fprintf(w, "Cut: %s\n", c)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "the file to write (default carto-support-HOST-TIME.tar.gz here); never overwritten")
	cmd.Flags().IntVar(&opts.LogLines, "log-lines", installer.DefaultLogLines, "the last lines of each service's log and of the agent's journal")
	cmd.Flags().Int64Var(&opts.MaxBytes, "max-bytes", installer.DefaultSupportBundleBytes, "bound on the bundle's contents before compression; past it logs are cut (keeping their end) and entries left out")
	return cmd
}
