package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/supervisor"
)

// runLicenseOp runs op through the agent when it runs, directly
// otherwise.
func runLicenseOp(cmd *cobra.Command, op supervisor.LicenseOp) (*license.Status, error) {
	c, err := agentClient(cmd)
	if err != nil {
		return nil, err
	}
	if c != nil {
		defer c.Close()
	}
	return supervisor.DoLicense(cmd.Context(), c, pathsFrom(cmd), op)
}

func newLicenseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "license",
		Short: "Show, check online or replace the CARTO licence",
		Long: `The licence is signed by CARTO and verified offline; the agent also checks it with
the licence server (over https, through the proxy) every few hours. The
server's answer must be signed over a fresh nonce; an unreachable server, or
an answer that is unsigned, badly signed, replayed or stale, starts a grace
period (license.grace_days: 14 by default, at most 90). An expired, revoked or invalid
licence never stops the running stack: status says so, and installs and
upgrades are refused (exit code 4) until 'license update FILE' installs a good
one.`,
	}
	var asJSON bool
	show := func(fn func(*cobra.Command) (*license.Status, error), failOnBad bool) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			st, err := fn(cmd)
			if st != nil {
				if asJSON {
					if err := printJSON(cmd.OutOrStdout(), st); err != nil {
						return err
					}
				} else {
					printLicense(cmd.OutOrStdout(), st)
				}
			}
			if err != nil {
				return err
			}
			if failOnBad && (st.State == license.Expired || st.State == license.Invalid) {
				return fmt.Errorf("%w: %s", license.ErrInvalid, st.Reason)
			}
			return nil
		}
	}
	showCmd := &cobra.Command{
		Use:   "show",
		Short: "Show the licence and its state (no network)",
		Args:  cobra.NoArgs,
		RunE: show(func(cmd *cobra.Command) (*license.Status, error) {
			return installer.GetLicenseStatus(pathsFrom(cmd))
		}, false),
	}
	check := &cobra.Command{
		Use:   "check",
		Short: "Check the licence with the licence server now (exit 4 when expired or invalid)",
		Args:  cobra.NoArgs,
		RunE: show(func(cmd *cobra.Command) (*license.Status, error) {
			return runLicenseOp(cmd, supervisor.LicenseCheckOp{})
		}, true),
	}
	update := &cobra.Command{
		Use:   "update FILE",
		Short: "Install a new licence; no container is touched (exit 4 when refused)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return show(func(cmd *cobra.Command) (*license.Status, error) {
				file := args[0]
				absFile(&file)
				return runLicenseOp(cmd, supervisor.LicenseUpdateOp{File: file})
			}, false)(cmd, args)
		},
	}
	for _, c := range []*cobra.Command{showCmd, check, update} {
		c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	}
	cmd.AddCommand(showCmd, check, update)
	return cmd
}
