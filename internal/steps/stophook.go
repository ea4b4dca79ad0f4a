//go:build licensetest

package steps

import (
	"os"
	"strings"
	"syscall"
)

// The test build's stop hook: with StopAtEnv set to "<action>/<step>"
// (the action's first word, e.g. "upgrade/converge"), the process kills
// itself with SIGKILL as that step starts, as `kill -9` would, the journal
// saying the step runs. With StopOnceEnv naming a file, it does so only
// if it can create that file: the restarted process (systemd restarts the
// agent with the same environment) goes on. Only the test build (go build
// -tags licensetest) has this file; release.sh refuses a binary that
// names StopAtEnv.
const (
	StopAtEnv   = "CARTO_APPLIANCE_TEST_STOP_AT"
	StopOnceEnv = "CARTO_APPLIANCE_TEST_STOP_ONCE"
)

func init() { beforeStep = stopIfAsked }

func stopIfAsked(action, step string) {
	want := os.Getenv(StopAtEnv)
	act, st, ok := strings.Cut(want, "/")
	first, _, _ := strings.Cut(action, " ")
	if !ok || st != step || act != first {
		return
	}
	if once := os.Getenv(StopOnceEnv); once != "" {
		f, err := os.OpenFile(once, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return // stopped once already
		}
		f.Close()
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
