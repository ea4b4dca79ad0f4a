package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/supervisor"
)

// agentClient is a client of the running agent, or nil when none runs:
// commands then work on the engine directly.
func agentClient(cmd *cobra.Command) (*supervisor.Client, error) {
	c, err := supervisor.Dial(cmd.Context(), pathsFrom(cmd))
	if errors.Is(err, supervisor.ErrNoAgent) {
		return nil, nil
	}
	return c, err
}

var controlHelp = map[installer.ControlAction]string{
	installer.ActionStart: `Starts the named services (every service when none is named) and what they
depend on, and waits until they are healthy. Services stopped with 'stop' are
supervised again.`,
	installer.ActionStop: `Stops the named services (every service when none is named) and every service
that depends on them. They stay stopped, through config changes, agent restarts
and reboots, until 'start'; their containers and data are kept.`,
	installer.ActionRestart: `Stops the named services (every service when none is named) and starts them
again in dependency order, waiting until they are healthy.`,
}

func newControlCmd(action installer.ControlAction, short string) *cobra.Command {
	return &cobra.Command{
		Use:   string(action) + " [SERVICE...]",
		Short: short,
		Long:  controlHelp[action] + "\n\nGoes through the agent when it runs.",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := agentClient(cmd)
			if err != nil {
				return err
			}
			return runConverge(cmd, false, func(o installer.Options) (*installer.Result, error) {
				if c != nil {
					defer c.Close()
					return c.Control(cmd.Context(), o, action, args)
				}
				o.Paths = pathsFrom(cmd)
				return installer.Control(cmd.Context(), o, action, args)
			})
		},
	}
}
