package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/supervisor"
)

func newRollbackCmd() *cobra.Command {
	var yes, restoreDB bool
	cmd := &cobra.Command{
		Use:   "rollback [--restore-database] [--yes]",
		Short: "Go back over the last upgrade, to the CARTO release it replaced",
		Long: `Puts back the CARTO release the last upgrade replaced, with the backup that upgrade
took (state dir, backups/): the config dir's settings, the pinned release and its images
(pulled again if they were removed).

The database is left as the newer release left it unless --restore-database: then it is
put back from the upgrade's dump, and every change made since the upgrade is lost. CARTO's
migrations only go forward, so the older release may not work with a database the newer
one migrated: look at status after the rollback.

A rollback whose process stopped is completed by the next converge (the agent's start,
config apply). An upgrade that fails rolls back by itself: this command is for going back
later, over one that succeeded.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := installer.PlanRollback(pathsFrom(cmd), restoreDB)
			if err != nil {
				return err
			}
			if !yes {
				what := fmt.Sprintf("This rolls CARTO %s back to %s with the backup %s. ", p.From, p.To, p.Backup)
				if restoreDB {
					what += "The database is put back from that backup: every change made since the upgrade is lost."
				} else {
					what += "The database stays as CARTO " + p.From + " left it (--restore-database puts it back, losing every change since the upgrade)."
				}
				if !term.IsTerminal(int(os.Stdin.Fd())) {
					return usageError{fmt.Errorf("%s Pass --yes to confirm (no terminal to ask on); nothing was changed", what)}
				}
				fmt.Fprintf(os.Stderr, "%s\nRoll back? [y/N] ", what)
				answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(answer)), "y") {
					return fmt.Errorf("aborted, nothing was changed")
				}
			}
			return runOp(cmd, true, func(bool) supervisor.Op {
				return supervisor.RollbackOp{Rollback: installer.RollbackOptions{RestoreDatabase: restoreDB}}
			})
		},
	}
	cmd.Flags().BoolVar(&restoreDB, "restore-database", false, "also put the database back from the upgrade's backup (every change since the upgrade is lost)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask")
	return cmd
}
