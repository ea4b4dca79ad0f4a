//go:build !licensetest

package steps

import (
	"context"
	"path/filepath"
	"testing"
)

// A release build has no stop hook: asked to stop at a step, it runs it.
func TestReleaseBuildHasNoStopHook(t *testing.T) {
	t.Setenv("CARTO_APPLIANCE_TEST_STOP_AT", "upgrade/commit")
	ran := false
	err := Run(t.Context(), Journal{Path: filepath.Join(t.TempDir(), "j.json")}, "upgrade 1 -> 2",
		[]Step{{Name: "commit", Do: func(context.Context) error { ran = true; return nil }}}, Undo)
	if err != nil || !ran {
		t.Fatalf("the step did not run: %v", err)
	}
}
