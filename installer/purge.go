package installer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/firewall"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/stack"
)

// MarkerFileName marks the config dir and the state dir as the appliance's:
// install writes it into both, and uninstall --purge deletes nothing in a
// directory without it (or, for an install that predates it, without
// appliance.yaml or state.json), so `--config-dir /opt` cannot delete /opt.
const MarkerFileName = ".carto-appliance"

// What the appliance writes, by directory. A subdir named here is wholly
// the appliance's; every file may also have a .prev and atomicfile's
// temporary files beside it. Anything else is the operator's and stays.
var (
	configOwnedFiles = []string{config.ConfigFileName, config.CustomerEnvFileName, config.EnvFileName, stack.ComposeFileName, config.LicenseFileName}
	configOwnedDirs  = []string{config.CertsDirName}
	// agent.sock and agent.lock are the supervisor's and the agent
	// command's (which import this package): named here, not imported.
	stateOwnedFiles = []string{stateFileName, agentStateFileName, journalFileName, upgradeJournalFileName, selfUpdateJournalFileName, upgradeIntentFileName, upgradeIntentFileName + ".taken", config.LicenseCheckFileName, convergeLockName, firewall.FileName, "agent.sock", "agent.lock", JoinTokenFileName, config.ConsoleSessionsFileName, rehearsalLockName}
	stateOwnedDirs  = []string{config.CADirName, config.ACMEDirName, releasesDirName, backupsDirName, previousBinaryDir}
)

// markOwned writes the marker into dir.
func markOwned(dir, what string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the %s: %w", what, err)
	}
	note := "This directory is carto-appliance's " + what + ". `carto-appliance uninstall --purge` deletes what the appliance wrote here and keeps any other file.\n"
	return atomicfile.Write(filepath.Join(dir, MarkerFileName), []byte(note), 0o644)
}

// purgeDir is one directory uninstall --purge empties.
type purgeDir struct {
	what, path  string
	input       Input    // how the operator gives path
	files, dirs []string // what the appliance writes in it
	identity    []string // files that mark it as the appliance's, marker first
	stages      bool     // holds the private stages (the state dir)
}

func purgeDirs(paths config.Paths) []purgeDir {
	cfgDir := purgeDir{what: "the config dir", input: InputConfigDir, path: paths.ConfigDir, files: configOwnedFiles, dirs: configOwnedDirs, identity: []string{MarkerFileName, config.ConfigFileName}}
	state := purgeDir{what: "the state dir", input: InputStateDir, path: paths.StateDir, files: stateOwnedFiles, dirs: stateOwnedDirs, identity: []string{MarkerFileName, stateFileName}, stages: true}
	if filepath.Clean(cfgDir.path) == filepath.Clean(state.path) {
		cfgDir.what = "the config and state dir"
		cfgDir.files = slices.Concat(cfgDir.files, state.files)
		cfgDir.dirs = slices.Concat(cfgDir.dirs, state.dirs)
		cfgDir.identity = append(cfgDir.identity, stateFileName)
		cfgDir.stages = true
		return []purgeDir{cfgDir}
	}
	return []purgeDir{cfgDir, state}
}

// CheckPurge refuses to purge a config or state dir that is not the
// appliance's; a missing one is fine (nothing to delete). Uninstall checks
// it too; the CLI calls it first so that a refused purge stops nothing.
func CheckPurge(paths config.Paths) error {
	for _, d := range purgeDirs(paths.WithDefaults()) {
		if err := d.check(); err != nil {
			return err
		}
	}
	return nil
}

func (d purgeDir) check() error {
	fi, err := os.Stat(d.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &InputError{Input: d.input, Err: fmt.Errorf("checking %s %s before purging it: %w", d.what, d.path, err)}
	}
	if !fi.IsDir() {
		return inputErrorf(d.input, "%s %s is not a directory: refusing to purge it; nothing was changed", d.what, d.path)
	}
	for _, name := range d.identity {
		if fi, err := os.Lstat(filepath.Join(d.path, name)); err == nil && fi.Mode().IsRegular() {
			return nil
		}
	}
	return inputErrorf(d.input, "%s %s is not carto-appliance's: it has neither %s nor %s, which install writes; refusing to purge it; check the path; nothing was changed",
		d.what, d.path, MarkerFileName, d.identity[1])
}

// Kept is a directory purge left in place because it holds files the
// appliance did not write.
type Kept struct {
	Dir     string
	Foreign []string // the names, in the directory, of what was kept
}

// purge deletes what the appliance wrote in d and then d itself when
// nothing else is left; otherwise d and its marker stay (so that another
// purge still knows it) and the rest is reported.
func (d purgeDir) purge() (*Kept, error) {
	entries, err := os.ReadDir(d.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("purging %s: %w", d.path, err)
	}
	var foreign []string
	for _, e := range entries {
		name := e.Name()
		if name == MarkerFileName {
			continue
		}
		if !d.owns(name, e.IsDir()) {
			foreign = append(foreign, name)
			continue
		}
		if err := os.RemoveAll(filepath.Join(d.path, name)); err != nil {
			return nil, fmt.Errorf("purging %s: %w", d.path, err)
		}
	}
	if len(foreign) > 0 {
		return &Kept{Dir: d.path, Foreign: foreign}, nil
	}
	if err := os.Remove(filepath.Join(d.path, MarkerFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("purging %s: %w", d.path, err)
	}
	if err := os.Remove(d.path); err != nil {
		return nil, fmt.Errorf("purging %s: %w", d.path, err)
	}
	return nil, nil
}

// owns says whether the entry name (a directory when dir) is one the
// appliance writes in d.
func (d purgeDir) owns(name string, dir bool) bool {
	if dir {
		// A stage a killed run left (stage.go) is the appliance's too.
		return slices.Contains(d.dirs, name) || (d.stages && (strings.HasPrefix(name, stageDirPrefix) || strings.HasPrefix(name, rehearsalDirPrefix)))
	}
	for _, f := range append([]string{MarkerFileName}, d.files...) {
		// atomicfile's temporary files are "."+name+".tmp-*", for the
		// file and for its .prev.
		if name == f || name == f+atomicfile.PrevSuffix ||
			strings.HasPrefix(name, "."+f+".tmp-") || strings.HasPrefix(name, "."+f+atomicfile.PrevSuffix+".tmp-") {
			return true
		}
	}
	return false
}
