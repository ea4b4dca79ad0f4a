package main

import (
	"errors"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/supervisor"
)

// The agent is the single writer of the node while it runs: status and
// logs ask it, and every command that changes the node is sent to it as
// a supervisor.Op. With no agent running, or with --no-service, a command
// runs the same op itself.

// agentClient is a client of the running agent, or nil when the command
// works directly: no agent runs, or --no-service.
func agentClient(cmd *cobra.Command) (*supervisor.Client, error) {
	if direct, _ := cmd.Flags().GetBool("no-service"); direct {
		return nil, nil
	}
	c, err := supervisor.Dial(cmd.Context(), pathsFrom(cmd))
	if errors.Is(err, supervisor.ErrNoAgent) {
		return nil, nil
	}
	return c, err
}

// runOp runs the op build makes through the agent when it runs and
// directly otherwise, showing progress and the result as runConverge
// does. viaAgent tells build that nobody can be asked during the run.
func runOp(cmd *cobra.Command, yes bool, build func(viaAgent bool) supervisor.Op) error {
	c, err := agentClient(cmd)
	if err != nil {
		return err
	}
	if c != nil {
		defer c.Close()
	}
	op := build(c != nil)
	var res *installer.Result
	err = runConverge(cmd, yes, func(o installer.Options) (*installer.Result, error) {
		var err error
		o.Paths = pathsFrom(cmd)
		res, err = supervisor.Do(cmd.Context(), c, o, op)
		return res, err
	})
	if err == nil && res != nil && res.SelfUpdate != nil {
		return continueOnNewBinary(cmd, res.SelfUpdate, c != nil)
	}
	return err
}

// engineRestart is the answer sent with an op that may restart the
// Docker engine for new proxy settings: the agent running it cannot ask,
// so without --yes the question is asked before the op is sent.
func engineRestart(yes, viaAgent bool, reason string) supervisor.EngineRestart {
	if viaAgent && !yes {
		yes = confirmer(false)(reason)
	}
	return supervisor.EngineRestart{RestartEngine: yes}
}

// absFile makes a file the operator names absolute: the agent that reads
// it works in another directory.
func absFile(path *string) {
	if *path == "" {
		return
	}
	if abs, err := filepath.Abs(*path); err == nil {
		*path = abs
	}
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
			return runOp(cmd, false, func(bool) supervisor.Op {
				return supervisor.ControlOp{Action: action, Services: args}
			})
		},
	}
}
