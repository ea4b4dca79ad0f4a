package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/preflight"
	"github.com/cartodb/carto-appliance/supervisor"
)

// The exit codes hold when a command runs in the agent: each error kind
// goes through a real agent socket and comes back as the same code a
// direct run gives.
func TestExitCodesThroughTheAgent(t *testing.T) {
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "c"), StateDir: filepath.Join(dir, "s")}
	ln, err := supervisor.Listen(paths)
	if err != nil {
		t.Fatal(err)
	}
	var next error
	fail := func() (*installer.Result, error) {
		var res *installer.Result
		var pf *preflight.FailedError
		if errors.As(next, &pf) {
			res = &installer.Result{Preflight: pf.Report}
		}
		return res, next
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- supervisor.Serve(ctx, ln, supervisor.ServeOptions{Paths: paths, Workflows: supervisor.Workflows{
			Apply: func(context.Context, installer.Options) (*installer.Result, error) { return fail() },
			Control: func(context.Context, installer.Options, installer.ControlAction, []string) (*installer.Result, error) {
				return fail()
			},
		}})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})

	report := &preflight.Report{Failed: true, Checks: []preflight.Check{{ID: "memory", Title: "Memory", Status: preflight.Fail, Detail: "2 GiB", Fix: "more"}}}
	for _, tc := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("%w \"nope\" in the stack", installer.ErrUnknownService), exitUsage},
		{fmt.Errorf("%w: refused", supervisor.ErrBadRequest), exitUsage},
		{&preflight.FailedError{Report: report}, exitPreflight},
		{fmt.Errorf("checking the licence: %w: expired", license.ErrInvalid), exitLicense},
		{fmt.Errorf("upgrading: %w", installer.ErrUpgradeRolledBack), exitRolledBack},
		{fmt.Errorf("upgrading: %w", installer.ErrRollbackFailed), exitRollbackFailed},
		{fmt.Errorf("%w: no appliance.yaml", installer.ErrNotInstalled), exitError},
		{errors.New("something else"), exitError},
	} {
		next = tc.err
		for _, args := range [][]string{{"config", "apply"}, {"restart", "maps-api"}} {
			args = append(args, "--config-dir", paths.ConfigDir, "--state-dir", paths.StateDir)
			if got := run(context.Background(), args); got != tc.want {
				t.Errorf("%v failing with %q: exit %d, want %d", args[:2], tc.err, got, tc.want)
			}
		}
	}
}
