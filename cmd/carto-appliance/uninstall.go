package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cartodb/carto-appliance/host"
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
install brings the same data back. --purge deletes them too: in the config
and state dirs only what the appliance wrote (a dir that is not the
appliance's is refused; one that holds other files is kept, with them).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Paths = pathsFrom(cmd)
			if opts.Purge {
				// Before the question and before the agent stops: a dir
				// that is not the appliance's changes nothing.
				if err := installer.CheckPurge(opts.Paths); err != nil {
					return err
				}
			}
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
			if err := host.UninstallService(cmd.Context(), opts.Paths); err != nil && !errors.Is(err, host.ErrNoSystemd) {
				return err
			}
			pr := newProgress(os.Stderr)
			opts.Reporter = pr
			res, err := installer.Uninstall(cmd.Context(), opts)
			pr.Close()
			if err != nil {
				return err
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(os.Stderr, "Warning: %s\n", w)
			}
			for _, k := range res.Kept {
				fmt.Fprintf(os.Stderr, "Kept %s: it holds files carto-appliance did not write (%s); the appliance's own files in it are gone. Delete the rest yourself if you no longer need it.\n",
					k.Dir, strings.Join(k.Foreign, ", "))
			}
			fmt.Fprintln(cmd.OutOrStdout(), "CARTO removed.")
			return nil
		},
	}
	cmd.Flags().BoolVar(&opts.Purge, "purge", false, "also delete volumes, configuration and state")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
