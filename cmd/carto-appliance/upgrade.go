package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/supervisor"
)

func newUpgradeCmd() *cobra.Command {
	var check, rehearse, asJSON, yes, skipDB bool
	var to string
	cmd := &cobra.Command{
		Use:   "upgrade [--to VERSION] [--yes] | --check [--to VERSION] [--json] | --rehearse [--to VERSION] [--json]",
		Short: "Upgrade CARTO to a newer release of the channel, rolling back by itself on failure",
		Long: `Reads the release channel the node follows (appliance.yaml upgrade.channel_url and
upgrade.channel; default ` + "stable" + `) and verifies it against the release keys this
binary trusts.

With --check it shows the installed version, what the channel offers, the versions an
upgrade goes through (a release can require upgrading from a given version first),
whether the licence allows it (an expired or invalid licence, or one for another
channel, refuses it), and what the next version changes (images, services, .env keys,
required settings). Nothing is changed.

Without --check it upgrades, one release of the path at a time, each as a journaled run
(state dir, upgrade-journal.json): pull every new image while the old version serves and
check each against the digest its signed release pins; back up the config dir, the state
and the embedded database (pg_dump, read back) into the state dir's backups/; install the
new release's settings; converge (its migrations run before the services that need them);
verify every service healthy and the router answering. If a step fails, the node rolls
back by itself: settings, release and images, and the database from the backup once the
new release's migrations may have run (writes made during the upgrade are then lost).
Exit code 5: failed and rolled back; 6: failed and the rollback failed too (the message
says what to do). An external database is not backed up: --skip-db-backup says you
backed it up yourself.

With --rehearse it runs the migrations of each release of the path on a throwaway copy of
the embedded database (a fresh dump, taken as the upgrade's backup is, restored into a
database service of its own: project <project>-rehearsal, no published port, removed
afterwards) and reports, per release, whether they succeed, how long they take and the
columns they add and remove. Nothing live is touched; the new release's images are pulled
(the upgrade would pull them too). Exit code 1 when a release's migrations fail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rehearse {
				if check {
					return usageError{fmt.Errorf("--rehearse and --check are two ways to look: give one")}
				}
				pr := newProgress(os.Stderr)
				reh, err := installer.RehearseUpgrade(cmd.Context(), installer.RehearseOptions{Options: installer.Options{Paths: pathsFrom(cmd), Reporter: pr, Progress: pr.Pulls()}, To: to})
				pr.Close()
				if reh != nil {
					if asJSON {
						if err := printJSON(cmd.OutOrStdout(), reh); err != nil {
							return err
						}
					} else {
						printRehearsal(cmd.OutOrStdout(), reh)
					}
				}
				if err == nil && reh != nil && !reh.OK {
					last := reh.Steps[len(reh.Steps)-1]
					err = fmt.Errorf("the rehearsal found that CARTO %s's migrations fail on a copy of this database: an upgrade to it would roll back; nothing live was touched", last.To)
				}
				return err
			}
			if check {
				chk, err := installer.CheckUpgrade(cmd.Context(), pathsFrom(cmd), to)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), chk)
				}
				printUpgradeCheck(cmd.OutOrStdout(), chk)
				return nil
			}
			if asJSON {
				return usageError{fmt.Errorf("--json goes with --check or --rehearse")}
			}
			return runOp(cmd, yes, func(bool) supervisor.Op {
				return supervisor.UpgradeOp{
					Upgrade:       installer.UpgradeOptions{To: to, SkipDatabaseBackup: skipDB},
					EngineRestart: supervisor.EngineRestart{RestartEngine: yes},
				}
			})
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "show what the channel offers and what an upgrade would do; change nothing")
	cmd.Flags().BoolVar(&rehearse, "rehearse", false, "run the upgrade's migrations on a throwaway copy of the embedded database and report; change nothing live")
	cmd.Flags().StringVar(&to, "to", "", "the version to upgrade (or check an upgrade) to (default: the channel's latest)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (with --check)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "restart the Docker engine without asking when its proxy settings changed")
	cmd.Flags().BoolVar(&skipDB, "skip-db-backup", false, "go on with an external database the appliance cannot back up (you backed it up)")
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

func printRehearsal(w io.Writer, r *installer.Rehearsal) {
	fmt.Fprintf(w, "Rehearsed upgrading CARTO %s on a copy of the database (a fresh dump of %d KiB); nothing live was touched:\n", r.From, (r.DumpBytes+1023)/1024)
	for _, s := range r.Steps {
		if s.Error != "" {
			fmt.Fprintf(w, "  %s: migrations FAILED after %s: %s\n", s.To, s.Took, s.Error)
			continue
		}
		fmt.Fprintf(w, "  %s: migrations succeeded in %s; columns added: %s; removed: %s\n", s.To, s.Took, orNone(s.Added), orNone(s.Removed))
	}
}

func orNone(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strings.Join(items, ", ")
}
