package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cartodb/carto-appliance/installer"
)

func newUninstallCmd() *cobra.Command {
	var opts installer.UninstallOptions
	var yes bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop and remove the stack (data kept unless --purge)",
		Long: `Stops and removes the stack's containers and network. The embedded
databases' volumes, the config dir and the state dir are kept, so a later
install brings the same data back. --purge deletes them too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Paths = pathsFrom(cmd)
			if opts.Purge && !yes {
				if !term.IsTerminal(int(os.Stdin.Fd())) {
					return usageError{fmt.Errorf("uninstall --purge deletes the databases and settings: pass --yes to confirm (no terminal to ask on); nothing was changed")}
				}
				fmt.Fprint(os.Stderr, "This deletes the embedded databases, the configuration and the state. Type \"purge\" to confirm: ")
				answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if strings.TrimSpace(answer) != "purge" {
					return fmt.Errorf("aborted, nothing was changed")
				}
			}
			// The agent first: a running agent would bring back what the
			// uninstall removes.
			if err := installer.UninstallService(cmd.Context(), opts.Paths); err != nil && !errors.Is(err, installer.ErrNoSystemd) {
				return err
			}
			pr := newProgress(os.Stderr)
			opts.Reporter = pr
			err := installer.Uninstall(cmd.Context(), opts)
			pr.Close()
			if err == nil {
				fmt.Fprintln(cmd.OutOrStdout(), "CARTO removed.")
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&opts.Purge, "purge", false, "also delete volumes, configuration and state")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
