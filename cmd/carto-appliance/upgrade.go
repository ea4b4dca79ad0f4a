package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/supervisor"
)

func newUpgradeCmd() *cobra.Command {
	var check, rehearse, asJSON, yes, skipDB, applianceOnly bool
	var to, bundle string
	cmd := &cobra.Command{
		Use:   "upgrade [--to VERSION] [--yes] | --check [--to VERSION] [--json] | --rehearse [--to VERSION] [--json] | --appliance-only",
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

A release can need a newer carto-appliance than this one (its min_appliance_version).
The upgrade then first updates carto-appliance from the same channel: the binary the
channel's signed index lists for this machine (size and sha256 checked), run once to
check its version, replaces this one in a single rename (the previous one is kept in the
state dir's appliance-previous/); the agent restarts on it and continues the upgrade by
itself, and this command follows it to the end. With --appliance-only it updates
carto-appliance to the newest the channel offers and stops there. A binary installed by
the deb or rpm package is not replaced: update the package.

With --bundle FILE the release and its images come from an air-gap bundle instead of the
channel and the registry: the whole file is checked against its signed index first, then
the same journaled upgrade runs, its images loaded into the engine (each checked by ID).
With --check --bundle FILE: the bundle checked whole, then what an upgrade from it would
go through and change, as for the channel; nothing is loaded.

With --rehearse it runs the migrations of each release of the path on a throwaway copy of
the embedded database (a fresh dump, taken as the upgrade's backup is, restored into a
database service of its own: project <project>-rehearsal, no published port, removed
afterwards) and reports, per release, whether they succeed, how long they take and the
columns they add and remove. Nothing live is touched; the new release's images are pulled
(the upgrade would pull them too). Exit code 1 when a release's migrations fail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if bundle != "" && (rehearse || check && to != "") {
				return usageError{fmt.Errorf("--bundle checks or upgrades to the release the bundle holds: it takes no --rehearse or --to")}
			}
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
				var chk *installer.UpgradeCheck
				var err error
				if bundle != "" {
					pr := newProgress(os.Stderr)
					chk, err = installer.CheckBundleUpgrade(cmd.Context(), installer.Options{Paths: pathsFrom(cmd), Reporter: pr}, bundle)
					pr.Close()
				} else {
					chk, err = installer.CheckUpgrade(cmd.Context(), pathsFrom(cmd), to)
				}
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
			if bundle != "" && (to != "" || applianceOnly) {
				return usageError{fmt.Errorf("--bundle upgrades to the release the bundle holds: it takes no --to or --appliance-only")}
			}
			absFile(&bundle)
			if applianceOnly && (to != "" || check || skipDB) {
				return usageError{fmt.Errorf("--appliance-only updates carto-appliance alone: it takes no --to, --check or --skip-db-backup")}
			}
			in := installer.UpgradeOptions{To: to, SkipDatabaseBackup: skipDB, ApplianceOnly: applianceOnly, Bundle: bundle}
			// Run again after a self-update (continueOnNewBinary).
			mode := os.Getenv(continueEnv)
			os.Unsetenv(continueEnv)
			if mode != "" {
				return continueUpgrade(cmd, yes, in, mode)
			}
			return runOp(cmd, yes, func(bool) supervisor.Op {
				return supervisor.UpgradeOp{Upgrade: in, EngineRestart: supervisor.EngineRestart{RestartEngine: yes}}
			})
		},
	}
	cmd.Flags().StringVar(&bundle, "bundle", "", "upgrade to the release of an air-gap bundle FILE (carto-release bundle), its images loaded from it: no channel, no registry")
	cmd.Flags().BoolVar(&applianceOnly, "appliance-only", false, "update carto-appliance to the newest the channel offers, and not CARTO")
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
	if c.Bundle != "" {
		fmt.Fprintf(w, "Bundle:     %s (CARTO %s, checked against its signature)\n", c.Bundle, c.Latest)
	} else {
		fmt.Fprintf(w, "Channel:    %s at %s (latest %s)\n", c.Channel, c.ChannelURL, c.Latest)
	}
	if len(c.Path) == 0 {
		fmt.Fprintf(w, "Up to date: nothing newer to upgrade to.\n")
	} else {
		fmt.Fprintf(w, "Upgrade to %s goes through: %s\n", c.Target, strings.Join(c.Path, " -> "))
	}
	if a := c.Appliance; a.Needed != "" {
		how := "REFUSES it: " + a.Reason
		if a.SelfUpdates() {
			how = "the upgrade updates carto-appliance to " + a.Offered + " from the channel first"
			if c.Bundle != "" {
				how = "the upgrade updates carto-appliance to " + a.Offered + " from the bundle first"
			}
		}
		fmt.Fprintf(w, "Appliance:  carto-appliance %s; CARTO %s needs %s or newer: %s\n", a.Installed, c.Target, a.Needed, how)
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
	where := "the database"
	if r.DataNode != "" {
		where = "the data node's database (on " + r.DataNode + ", which holds it)"
	}
	fmt.Fprintf(w, "Rehearsed upgrading CARTO %s on a copy of %s (a fresh dump of %d KiB); nothing live was touched:\n", r.From, where, (r.DumpBytes+1023)/1024)
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

// continueEnv tells an upgrade started by continueOnNewBinary how the
// binary it replaced was upgrading: through the agent ("agent", which
// continues it) or directly ("direct").
const continueEnv = "CARTO_APPLIANCE_CONTINUE_UPGRADE"

// agentReturn bounds the wait for the agent to come back on the new
// binary: its stop drains (TimeoutStopSec=30), systemd waits RestartSec.
const agentReturn = 2 * time.Minute

// continueOnNewBinary goes on after an op replaced carto-appliance (a
// self-update): this process is the old binary, so the new one is run in
// its place with the same arguments (continueUpgrade). An update alone
// (--appliance-only) waits for the agent to run the new binary.
func continueOnNewBinary(cmd *cobra.Command, su *installer.SelfUpdateSummary, viaAgent bool) error {
	if su.For == "" {
		if !viaAgent {
			return nil
		}
		c, err := waitForAgent(cmd.Context(), pathsFrom(cmd), su.To)
		if err != nil {
			return err
		}
		c.Close()
		fmt.Fprintf(cmd.OutOrStdout(), "The agent runs carto-appliance %s\n", su.To)
		return nil
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Continuing the upgrade to CARTO %s with carto-appliance %s\n\n", su.For, su.To)
	mode := "direct"
	if viaAgent {
		mode = "agent"
	}
	env := append(os.Environ(), continueEnv+"="+mode)
	err := syscall.Exec(su.Binary, append([]string{su.Binary}, os.Args[1:]...), env)
	return fmt.Errorf("carto-appliance was updated to %s (%s), and running it to go on failed: %w; run carto-appliance upgrade again", su.To, su.Binary, err)
}

// continueUpgrade is the new binary going on with an upgrade its
// predecessor started: following the agent's continuation, or running
// it (directly, or through the agent when the agent did not take it).
// It never updates itself again: a binary still too old says so.
func continueUpgrade(cmd *cobra.Command, yes bool, in installer.UpgradeOptions, mode string) error {
	in.NoSelfUpdate = true
	op := func(bool) supervisor.Op {
		return supervisor.UpgradeOp{Upgrade: in, EngineRestart: supervisor.EngineRestart{RestartEngine: yes}}
	}
	if mode != "agent" {
		return runOp(cmd, yes, op)
	}
	c, err := waitForAgent(cmd.Context(), pathsFrom(cmd), version)
	if err != nil {
		return err
	}
	defer c.Close()
	err = runConverge(cmd, yes, func(o installer.Options) (*installer.Result, error) {
		return c.FollowContinuation(cmd.Context(), o)
	})
	if errors.Is(err, supervisor.ErrNoContinuation) {
		// The agent found no upgrade left for it (an operator's upgrade
		// took it): ask for one.
		return runOp(cmd, yes, op)
	}
	return err
}

// waitForAgent waits until the agent answers as carto-appliance want.
func waitForAgent(ctx context.Context, paths config.Paths, want string) (*supervisor.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, agentReturn)
	defer cancel()
	last := "it does not answer"
	for {
		c, err := supervisor.Dial(ctx, paths)
		switch {
		case err == nil && c.Agent().Binary == want:
			return c, nil
		case err == nil:
			last = fmt.Sprintf("it still runs carto-appliance %s (pid %d)", c.Agent().Binary, c.Agent().PID)
			c.Close()
		case !errors.Is(err, supervisor.ErrNoAgent) && !errors.Is(err, supervisor.ErrAPIVersion):
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("carto-appliance was updated to %s, and the agent did not come back on it within %s (%s): see systemctl status carto-appliance and journalctl -u carto-appliance; the previous binary is kept in the state dir's appliance-previous/", want, agentReturn, last)
		case <-time.After(time.Second):
		}
	}
}
