// Command carto-appliance installs, supervises and upgrades CARTO
// Self-Hosted on a Linux VM through the Docker Engine API.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/preflight"
	"github.com/cartodb/carto-appliance/supervisor"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// Exit codes (SPEC §2).
const (
	exitOK        = 0
	exitError     = 1
	exitUsage     = 2
	exitPreflight = 3
	exitLicense   = 4
	// exitRolledBack: an upgrade failed and the previous release runs
	// again; exitRollbackFailed: its rollback failed too.
	exitRolledBack     = 5
	exitRollbackFailed = 6
	exitInterrupt      = 130
	// exitRestart: the agent exits to be started again on its updated
	// binary (the unit's RestartForceExitStatus and SuccessExitStatus).
	exitRestart = 75
)

// usageError marks errors in how the command was called.
type usageError struct{ error }

func main() {
	installer.ApplianceVersion = version
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

// run executes one command line and maps its error to the documented exit
// code; it is the only place that decides one.
func run(ctx context.Context, args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	ran, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errAgentRestart) {
		return exitRestart
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "interrupted")
		return exitInterrupt
	}
	command := ""
	if ran != nil {
		command = strings.TrimPrefix(ran.CommandPath(), root.Name()+" ")
	}
	fmt.Fprintln(os.Stderr, "Error:", explain(err, command))
	var pf *preflight.FailedError
	if errors.As(err, &pf) {
		return exitPreflight
	}
	if errors.Is(err, license.ErrInvalid) {
		return exitLicense
	}
	if errors.Is(err, installer.ErrRollbackFailed) {
		return exitRollbackFailed
	}
	if errors.Is(err, installer.ErrUpgradeRolledBack) {
		return exitRolledBack
	}
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, installer.ErrUnknownService) || errors.Is(err, supervisor.ErrBadRequest) {
		return exitUsage
	}
	return exitError
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "carto-appliance",
		Short: "Install, supervise and upgrade CARTO Self-Hosted on this VM",
		// Errors are printed once by run(); usage is shown only for usage
		// errors (SetFlagErrorFunc below), not after every failure.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w\n%s", err, c.UsageString())}
	})
	root.PersistentFlags().String("config-dir", "", "configuration directory (default /opt/carto)")
	root.PersistentFlags().String("state-dir", "", "state directory (default /var/lib/carto-appliance)")
	root.PersistentFlags().Bool("no-service", false, "work on the Docker engine directly, not through the running agent (which otherwise makes every change)")
	root.AddCommand(
		newInstallCmd(),
		newStatusCmd(),
		newLogsCmd(),
		newPreflightCmd(),
		newControlCmd(installer.ActionStart, "Start services and keep them supervised"),
		newControlCmd(installer.ActionStop, "Stop services and keep them stopped"),
		newControlCmd(installer.ActionRestart, "Restart services in dependency order"),
		newEnvCmd(),
		newConfigCmd(),
		newProxyCmd(),
		newCertsCmd(),
		newLicenseCmd(),
		newAgentCmd(),
		newServiceCmd(),
		newUninstallCmd(),
		newVersionCmd(),
		newUpgradeCmd(),
		newRollbackCmd(),
		newBundleCmd(),
		newFirewallCmd(),
		newExportCmd(),
		newForwardCmd(),
		newSupportBundleCmd(),
		newBackupCmd(),
		newRestoreCmd(),
		newConsoleCmd(),
	)
	return root
}
