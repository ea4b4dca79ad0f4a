//go:build licensetest

package steps

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// The test build's hook kills the process as the named step starts, the
// journal saying it runs, and with a once-file only the first time.
func TestStopHookKillsAtTheNamedStepOnce(t *testing.T) {
	if j := os.Getenv("STEPS_HELPER_JOURNAL"); j != "" {
		var ran []string
		step := func(name string) Step {
			return Step{Name: name, Do: func(context.Context) error { ran = append(ran, name); return nil }}
		}
		err := Run(context.Background(), Journal{Path: j}, "upgrade 1 -> 2", []Step{step("backup"), step("commit"), step("converge")}, Undo)
		if err != nil || len(ran) != 3 {
			os.Exit(3)
		}
		os.Exit(0)
	}
	dir := t.TempDir()
	journal, once := filepath.Join(dir, "journal.json"), filepath.Join(dir, "stopped")
	run := func(stopAt string) error {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStopHookKillsAtTheNamedStepOnce$")
		cmd.Env = append(os.Environ(), "STEPS_HELPER_JOURNAL="+journal, StopAtEnv+"="+stopAt, StopOnceEnv+"="+once)
		return cmd.Run()
	}

	err := run("upgrade/commit")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the process was not killed: %v", err)
	}
	r, err := Journal{Path: journal}.Load()
	if err != nil || r == nil || !r.Unfinished() || r.Interrupted() != "commit" || !r.Reached("commit") || r.Reached("converge") {
		t.Fatalf("journal after the stop: %+v, %v", r, err)
	}
	if err := run("upgrade/commit"); err != nil {
		t.Errorf("stopped a second time despite the once-file: %v", err)
	}
	if err := run("apply/commit"); err != nil {
		t.Errorf("stopped in another action's step: %v", err)
	}
}
