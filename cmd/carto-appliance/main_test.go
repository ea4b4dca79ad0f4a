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

// serveAgent runs an agent API on paths whose workflows are wf, until the
// test ends.
func serveAgent(t *testing.T, paths config.Paths, wf supervisor.Workflows) {
	t.Helper()
	ln, err := supervisor.Listen(paths)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- supervisor.Serve(ctx, ln, supervisor.ServeOptions{Paths: paths, Workflows: wf}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
}

// While the agent runs, every command that changes the node is sent to it
// (the single writer), with the files it names made absolute; with
// --no-service the command works directly and the agent is not asked.
// (install also needs systemd before it runs: e2e sends it through the
// agent in a fresh VM.)
func TestChangingCommandsGoThroughTheAgent(t *testing.T) {
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "c"), StateDir: filepath.Join(dir, "s")}
	var got []string
	ok := func(what string) (*installer.Result, error) {
		got = append(got, what)
		return &installer.Result{Version: "2025.11.3", URL: "https://carto.example.com"}, nil
	}
	lic := func(what string) (*license.Status, error) {
		got = append(got, what)
		return &license.Status{State: license.Valid}, nil
	}
	serveAgent(t, paths, supervisor.Workflows{
		Apply: func(context.Context, installer.Options) (*installer.Result, error) { return ok("apply") },
		Control: func(_ context.Context, _ installer.Options, a installer.ControlAction, s []string) (*installer.Result, error) {
			return ok(fmt.Sprintf("%s %v", a, s))
		},
		SetProxy: func(_ context.Context, o installer.Options, in installer.ProxyInput) (*installer.Result, error) {
			return ok(fmt.Sprintf("proxy set %s %s restart=%v", in.URL, in.CACertFile, o.ConfirmEngineRestart("")))
		},
		ClearProxy: func(_ context.Context, o installer.Options) (*installer.Result, error) {
			return ok(fmt.Sprintf("proxy clear restart=%v", o.ConfirmEngineRestart("")))
		},
		ImportCertificate: func(_ context.Context, _ installer.Options, in installer.TLSInput) (*installer.Result, error) {
			return ok("certs import " + in.CertFile + " " + in.KeyFile)
		},
		UseSelfSigned: func(context.Context, installer.Options) (*installer.Result, error) { return ok("certs self-signed") },
		OffloadTLS:    func(context.Context, installer.Options) (*installer.Result, error) { return ok("certs offload") },
		UseACME: func(_ context.Context, _ installer.Options, in installer.ACMEInput) (*installer.Result, error) {
			return ok("certs acme " + in.Email + " " + in.CACertFile)
		},
		RenewCertificate: func(context.Context, installer.Options) (*installer.Result, error) { return ok("certs renew") },
		UpdateLicense: func(_ context.Context, _ config.Paths, file string) (*license.Status, error) {
			return lic("license update " + file)
		},
		CheckLicense: func(context.Context, config.Paths) (*license.Status, error) { return lic("license check") },
	})
	t.Chdir(dir)
	abs := func(name string) string { return filepath.Join(dir, name) }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"config", "apply"}, "apply"},
		{[]string{"stop", "maps-api"}, "stop [maps-api]"},
		{[]string{"proxy", "set", "--yes", "--url", "http://proxy:3128", "--ca-cert", "ca.pem"}, "proxy set http://proxy:3128 " + abs("ca.pem") + " restart=true"},
		{[]string{"proxy", "clear"}, "proxy clear restart=false"},
		{[]string{"certs", "import", "--cert", "c.pem", "--key", "k.pem"}, "certs import " + abs("c.pem") + " " + abs("k.pem")},
		{[]string{"certs", "self-signed"}, "certs self-signed"},
		{[]string{"certs", "offload"}, "certs offload"},
		{[]string{"certs", "acme", "--email", "ops@example.com", "--ca-cert", "roots.pem"}, "certs acme ops@example.com " + abs("roots.pem")},
		{[]string{"certs", "renew"}, "certs renew"},
		{[]string{"license", "update", "l.json"}, "license update " + abs("l.json")},
		{[]string{"license", "check"}, "license check"},
	} {
		got = nil
		args := append(tc.args, "--config-dir", paths.ConfigDir, "--state-dir", paths.StateDir)
		if code := run(context.Background(), args); code != exitOK || len(got) != 1 || got[0] != tc.want {
			t.Errorf("%v: exit %d, the agent ran %q, want %q", tc.args, code, got, tc.want)
		}
		got = nil
		run(context.Background(), append(args, "--no-service"))
		if len(got) != 0 {
			t.Errorf("%v --no-service: the agent ran %q", tc.args, got)
		}
	}
}
