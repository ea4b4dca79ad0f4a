package installer

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/stack"
)

// stageDirPrefix names the state dir's staging dirs.
const stageDirPrefix = "stage-"

// stage writes the rendered files into a private dir of the state dir laid
// out like the config dir, for compose-go to check before anything real
// changes. The full .env holds every secret: it stays under the state dir
// (0700 dir, 0600 files), never in the shared temp dir, and a stage a
// killed run left is removed here. The caller holds the converge lock, so
// no other run is using one.
func stage(paths config.Paths, d *desired) (string, error) {
	if err := removeStaleStages(paths); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(paths.StateDir, stageDirPrefix+"*")
	if err != nil {
		return "", fmt.Errorf("staging the rendered files: %w", err)
	}
	for name, data := range map[string][]byte{config.EnvFileName: d.envFile, stack.ComposeFileName: d.compose} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("staging the rendered files: %w", err)
		}
	}
	return dir, nil
}

// legacyStagePattern is where earlier versions staged, in the system
// temp dir: a run killed there left the full .env behind.
const legacyStagePattern = "carto-appliance-stage-*"

// removeStaleStages removes the staging dirs of runs that were killed,
// and those earlier versions left in the temp dir (only ours: another
// user's directory of that name is not the appliance's).
func removeStaleStages(paths config.Paths) error {
	stale, err := filepath.Glob(filepath.Join(paths.StateDir, stageDirPrefix+"*"))
	if err != nil {
		return err
	}
	legacy, _ := filepath.Glob(filepath.Join(os.TempDir(), legacyStagePattern))
	for _, dir := range legacy {
		if fi, err := os.Lstat(dir); err == nil && fi.IsDir() && ownedByUs(fi) {
			stale = append(stale, dir)
		}
	}
	for _, dir := range stale {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("removing the stale stage %s: %w", dir, err)
		}
	}
	return nil
}

func ownedByUs(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}
