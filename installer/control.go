package installer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/stack"
)

// ControlAction is what Control does to services.
type ControlAction string

// The control actions (`start`, `stop`, `restart`).
const (
	ActionStart   ControlAction = "start"
	ActionStop    ControlAction = "stop"
	ActionRestart ControlAction = "restart"
)

// ErrUnknownService is returned for a service name the stack does not have.
var ErrUnknownService = errors.New("no such service")

// Control starts, stops or restarts services; no names means every
// service. A stopped service is held: it stays stopped, with everything
// that depends on it, through applies, agent restarts and reboots, until
// it is started again. Starting a service starts what it depends on;
// restarting stops the services and brings them back in dependency order,
// waiting until they are healthy. Start and restart converge like config
// apply (settings changed since are applied).
func Control(ctx context.Context, opts Options, action ControlAction, services []string) (*Result, error) {
	paths := opts.Paths.WithDefaults()
	if action != ActionStart && action != ActionStop && action != ActionRestart {
		return nil, fmt.Errorf("unknown action %q: expected start, stop or restart", action)
	}
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Stopping needs only what is installed: it must work even when a
	// settings file was edited into something invalid.
	cfg, project, err := loadInstalled(ctx, paths)
	if err != nil {
		return nil, err
	}
	for _, s := range services {
		if _, ok := project.Services[s]; !ok {
			return nil, fmt.Errorf("%w %q in the stack; its services are: %s", ErrUnknownService, s, strings.Join(project.ServiceNames(), ", "))
		}
	}
	names := services
	if len(names) == 0 {
		names = project.ServiceNames()
	}
	st, err := loadState(paths.StateDir)
	if err != nil {
		return nil, err
	}

	if action == ActionStop {
		st.Held = union(st.Held, stack.Dependents(project, names))
		if err := saveState(paths.StateDir, st); err != nil {
			return nil, err
		}
		eng, err := connectEngine(ctx)
		if err != nil {
			return nil, err
		}
		defer eng.Close()
		stopped, err := eng.Stop(ctx, project, st.Held, opts.Reporter)
		res := &Result{Version: st.Version, Applied: &stack.ApplyResult{Stopped: stopped, Held: st.Held}}
		if err != nil {
			return res, err
		}
		if res.Status, err = statusOf(ctx, eng, paths, cfg, project); err == nil {
			res.URL = res.Status.URL
		}
		return res, err
	}

	d, err := planInstalled(paths, nil, TLSInput{})
	if err != nil {
		return nil, err
	}

	release := stack.Dependencies(project, names)
	st.Held = slices.DeleteFunc(st.Held, func(s string) bool { return slices.Contains(release, s) })
	if err := saveState(paths.StateDir, st); err != nil {
		return nil, err
	}
	if action == ActionRestart {
		eng, err := connectEngine(ctx)
		if err != nil {
			return nil, err
		}
		_, err = eng.Stop(ctx, project, names, opts.Reporter)
		eng.Close()
		if err != nil {
			return nil, err
		}
	}
	return runLocked(ctx, opts, paths, d, string(action), nil)
}

// HeldServices are the services the operator stopped, for the supervisor
// to leave alone.
func HeldServices(paths config.Paths) ([]string, error) {
	st, err := loadState(paths.WithDefaults().StateDir)
	return st.Held, err
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}
