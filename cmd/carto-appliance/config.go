package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/stack"
	"github.com/cartodb/carto-appliance/supervisor"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Apply the appliance's settings"}
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
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, yes, func(bool) supervisor.Op {
				return supervisor.ApplyOp{Pull: stack.PullPolicy(pull), EngineRestart: supervisor.EngineRestart{RestartEngine: yes}}
			})
		},
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
	cmd.AddCommand(apply, plan)
	return cmd
}
