package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/host"
)

func newServiceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Register, remove or inspect the agent's systemd service",
		Long: `The agent (carto-appliance agent) runs as the systemd service
carto-appliance.service: it keeps the stack up and is restarted by systemd if
it dies or stops answering its watchdog. Removing the service leaves the
stack running, unsupervised.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newServiceInstallCmd(), newServiceUninstallCmd(), newServiceStatusCmd())
	return cmd
}

func newServiceInstallCmd() *cobra.Command {
	var opts host.ServiceOptions
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install, enable and start carto-appliance.service",
		Long: `Writes /etc/systemd/system/carto-appliance.service (running
'carto-appliance agent' with this command's --config-dir and --state-dir),
enables it at boot, starts it and waits until the agent reports ready.
Re-running it changes nothing when the unit is current; a unit that differs
is rewritten and the agent restarted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Paths = pathsFrom(cmd)
			if err := host.InstallService(cmd.Context(), opts); err != nil {
				return err
			}
			st, err := host.ServiceStatus(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is %s (pid %d); its log: journalctl -u carto-appliance\n", st.Unit, st.Active, st.MainPID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Binary, "binary", "", "the carto-appliance executable the service runs (default: this one if in "+host.DefaultBinary+" or "+host.PackageBinary+")")
	f.DurationVar(&opts.StartTimeout, "timeout", host.DefaultServiceStartTimeout, "how long to wait for the agent to report ready")
	return cmd
}

func newServiceUninstallCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "uninstall",
		Short: "Stop the agent and remove carto-appliance.service (the stack keeps running)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := host.UninstallService(cmd.Context(), pathsFrom(cmd)); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s removed; the stack keeps running, unsupervised\n", host.ServiceUnit)
			return nil
		},
	}
}

func newServiceStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether the agent's service is installed, enabled and running",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := host.ServiceStatus(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			printServiceState(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printServiceState(w io.Writer, st host.ServiceState) {
	if !st.Installed {
		fmt.Fprintf(w, "%s is not installed: carto-appliance service install\n", st.Unit)
		return
	}
	enabled := "disabled"
	if st.Enabled {
		enabled = "enabled"
	}
	fmt.Fprintf(w, "unit:     %s (%s, %s)\n", st.Unit, st.UnitFile, enabled)
	fmt.Fprintf(w, "state:    %s (%s)\n", st.Active, st.Sub)
	if st.MainPID != 0 {
		fmt.Fprintf(w, "pid:      %d\n", st.MainPID)
	}
	if st.Result != "" && st.Result != "success" {
		fmt.Fprintf(w, "last end: %s\n", st.Result)
	}
	fmt.Fprintf(w, "restarts: %d\n", st.Restarts)
	if st.Status != "" {
		fmt.Fprintf(w, "status:   %s\n", st.Status)
	}
	fmt.Fprintln(w, "log:      journalctl -u carto-appliance")
}
