package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/stack"
	"github.com/cartodb/carto-appliance/supervisor"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Show, change and apply the appliance's settings"}
	var pull string
	var yes bool
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Re-render .env and docker-compose.yml and recreate only what changed",
		Args:  cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return validatePull(pull)
		},
		Long: `Renders .env and docker-compose.yml again from appliance.yaml, customer.env and
the release, and recreates only the services whose configuration or image
changed. Goes through the agent when it runs; the agent cannot ask before it
restarts the Docker engine for new proxy settings, so that needs --yes there.`,
		RunE: func(cmd *cobra.Command, args []string) error { return runApply(cmd, pull, yes) },
	}
	apply.Flags().StringVar(&pull, "pull", string(stack.PullMissing), "when to pull images: missing, always or never")
	apply.Flags().BoolVarP(&yes, "yes", "y", false, "restart the Docker engine without asking when its proxy settings changed")
	var asJSON bool
	plan := &cobra.Command{
		Use:   "plan",
		Short: "Show what config apply would change, changing nothing",
		Long: `Shows the plan config apply would run now: the CARTO release it renders (the
installed one), the files it writes and whether each changes, the .env settings
added (+), changed (~) or removed (-) (names only, never values), the
certificates, who may reach the router, the services and the steps.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := installer.PlanApply(pathsFrom(cmd))
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), p)
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), p.String())
			return err
		},
	}
	plan.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(newConfigShowCmd(), newConfigGetCmd(), newConfigSetCmd(), apply, plan)
	return cmd
}

// runApply is config apply's run, which config set --apply runs too.
func runApply(cmd *cobra.Command, pull string, yes bool) error {
	return runOp(cmd, yes, func(bool) supervisor.Op {
		return supervisor.ApplyOp{Pull: stack.PullPolicy(pull), EngineRestart: supervisor.EngineRestart{RestartEngine: yes}}
	})
}

func newConfigShowCmd() *cobra.Command {
	var asJSON bool
	show := &cobra.Command{
		Use:   "show",
		Short: "List every setting of appliance.yaml with its value or default",
		Long: `Lists every setting of appliance.yaml by name (as config get and config set take
it), with its value, or the default in force marked (default). Secrets are
masked and a URL's user info is never shown.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			settings, err := installer.ShowConfig(pathsFrom(cmd))
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), settings)
			}
			return printSettings(cmd.OutOrStdout(), settings)
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return show
}

func newConfigGetCmd() *cobra.Command {
	var asJSON bool
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Print one setting's value (the default when unset)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("config get takes one setting's name, e.g. router.https_port (config show lists them)")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := installer.GetConfig(pathsFrom(cmd), args[0])
			if err != nil {
				return settingError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), s)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), s.Value)
			return err
		},
	}
	get.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return get
}

func newConfigSetCmd() *cobra.Command {
	var pull string
	var yes, apply bool
	set := &cobra.Command{
		Use:   "set NAME=VALUE... [--apply]",
		Short: "Change settings of appliance.yaml, validated; --apply applies them",
		Long: `Changes settings of appliance.yaml by name (config show lists them); an empty
VALUE puts the default back, a list is comma-separated. Every setting given is
checked, then the result as a whole, and the file is written once: an unknown
name or a bad value changes nothing. The change takes effect with config apply
(or --apply, which runs it), except in the backup, console, license and upgrade
sections, which the agent reads where it uses them. The layout, role, nodes and
peer port are set at install; the TLS mode and ACME settings by certs, the
proxy's CA by proxy set, which check the certificates.`,
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return validatePull(pull)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := installer.SetConfig(cmd.Context(), pathsFrom(cmd), args)
			if err != nil {
				return settingError(err)
			}
			printSetResult(cmd.OutOrStdout(), res, apply)
			if !apply || len(res.AwaitingApply()) == 0 {
				return nil
			}
			return runApply(cmd, pull, yes)
		},
	}
	set.Flags().BoolVar(&apply, "apply", false, "run config apply after writing the settings")
	set.Flags().StringVar(&pull, "pull", string(stack.PullMissing), "with --apply, when to pull images: missing, always or never")
	set.Flags().BoolVarP(&yes, "yes", "y", false, "with --apply, restart the Docker engine without asking when its proxy settings changed")
	return set
}

// settingError makes a bad name or value given to config get or set a
// usage error (exit 2). Its message already names the setting as the
// operator typed it, so explain adds no flag: install's flag for the same
// field would mislead here.
func settingError(err error) error {
	var ie *installer.InputError
	if errors.As(err, &ie) && ie.Input == installer.InputSetting {
		return usageError{err}
	}
	return err
}

func printSettings(w io.Writer, settings []installer.Setting) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVALUE")
	for _, s := range settings {
		fmt.Fprintf(tw, "%s\t%s\n", s.Name, settingValue(s))
	}
	return tw.Flush()
}

// settingValue is a setting's value for a person: "-" for none, and
// "(default)" after a value appliance.yaml does not set.
func settingValue(s installer.Setting) string {
	v := orDash(s.Value)
	if !s.Set {
		v += " (default)"
	}
	return v
}

func printSetResult(w io.Writer, res *installer.SetResult, applying bool) {
	if !res.Changed {
		fmt.Fprintf(w, "Nothing changed: %s already has these settings.\n", res.File)
		return
	}
	for _, c := range res.Changes {
		fmt.Fprintf(w, "%s: %s -> %s\n", c.Name, settingValue(c.Old), settingValue(c.New))
	}
	waiting := res.AwaitingApply()
	switch {
	case len(waiting) == 0:
		fmt.Fprintf(w, "Saved %s; the agent takes it by itself (no apply needed).\n", res.File)
	case applying:
		fmt.Fprintf(w, "Saved %s; applying it.\n", res.File)
	case len(waiting) == len(res.Changes):
		fmt.Fprintf(w, "Saved %s. Run `carto-appliance config apply` to apply it.\n", res.File)
	default:
		fmt.Fprintf(w, "Saved %s. Run `carto-appliance config apply` to apply %s; the agent takes the rest by itself.\n", res.File, strings.Join(waiting, ", "))
	}
}
