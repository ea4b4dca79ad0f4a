package installer

// Self-update: a CARTO release can need a newer carto-appliance than the
// node runs (its manifest's min_appliance_version). The upgrade then
// first replaces the binary with one the same channel offers, verified by
// the channel's signed index (size and sha256) and by running it
// (internal/binswap does the swap), and hands over: the agent exits to be restarted by systemd on the new binary
// and continues the upgrade from an intent file (TakeUpgradeIntent); the
// CLI runs the new binary and follows. Each step is journaled and the
// binary is swapped by one rename, so a stop anywhere leaves either the
// old binary or the new one, never a mix.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/host"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/binswap"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/release"
)

// ApplianceCheck is what `upgrade --check` says of carto-appliance
// itself: whether the upgrade needs a newer one, and whether it can
// update itself from the channel.
type ApplianceCheck struct {
	// Installed is this binary's version.
	Installed string `json:"installed"`
	// Needed is the newest min_appliance_version of the path's releases,
	// when it is newer than Installed.
	Needed string `json:"needed,omitempty"`
	// Offered is the carto-appliance the upgrade updates itself to first
	// (the newest the channel offers for this platform).
	Offered string `json:"offered,omitempty"`
	// Reason says why it cannot update itself, and what to do.
	Reason string `json:"reason,omitempty"`
}

// SelfUpdates reports whether the upgrade replaces carto-appliance first.
func (a ApplianceCheck) SelfUpdates() bool { return a.Offered != "" }

// SelfUpdateSummary is what a self-update did, in its Result: the
// upgrade goes on in the new binary.
type SelfUpdateSummary struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Binary is the path replaced: run it to go on.
	Binary string `json:"binary"`
	// Previous is where the replaced binary is kept.
	Previous string `json:"previous"`
	// For is the CARTO version the upgrade goes to, which needs To
	// (empty for --appliance-only: nothing goes on).
	For string `json:"for,omitempty"`
}

// UpgradeIntent is the upgrade a self-update leaves for the new binary to
// continue (state dir, upgrade-intent.json).
type UpgradeIntent struct {
	To                 string `json:"to"`
	SkipDatabaseBackup bool   `json:"skip_db_backup,omitempty"`
	// Bundle is the air-gap bundle the upgrade comes from, if any.
	Bundle    string    `json:"bundle,omitempty"`
	Appliance string    `json:"appliance"`
	At        time.Time `json:"at"`
}

const (
	upgradeIntentFileName     = "upgrade-intent.json"
	selfUpdateJournalFileName = "self-update-journal.json"
	// previousBinaryDir keeps the binary a self-update replaced, to go
	// back by hand if the new one misbehaves.
	previousBinaryDir = "appliance-previous"
	// intentTTL bounds how late a new agent continues an upgrade by
	// itself: one left for hours (the agent was down) is not started
	// behind the operator's back.
	intentTTL = time.Hour
)

// selfBinary is the running binary's path, which a self-update replaces
// (the systemd unit's ExecStart); tests point it elsewhere.
var selfBinary = func() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(exe)
}

// notRestarted refuses to update carto-appliance again in a process that
// the last update should have replaced (it would loop).
func notRestarted(target, need string) error {
	return fmt.Errorf("CARTO %s needs carto-appliance %s or newer, and this upgrade runs in carto-appliance %s although the binary was just updated: the agent has not restarted on the new binary; restart it (systemctl restart carto-appliance) and run the upgrade again (nothing was changed)", target, need, ApplianceVersion)
}

// packaged reports whether this binary is the deb's or rpm's, which the
// package manager owns.
func packaged() bool {
	exe, err := selfBinary()
	return err == nil && exe == host.PackageBinary
}

const packagedReason = "carto-appliance was installed from a package (" + host.PackageBinary + "), which a self-update must not change under the package manager"

// platform names this binary's build in a channel (linux_amd64).
func platform() string { return runtime.GOOS + "_" + runtime.GOARCH }

// judgeAppliance says whether the path's releases need a newer
// carto-appliance, and where it would come from.
func judgeAppliance(idx *release.Index, path []release.IndexEntry) ApplianceCheck {
	a := ApplianceCheck{Installed: ApplianceVersion}
	var need release.Version
	for _, e := range path {
		if e.MinApplianceVersion == "" {
			continue
		}
		if v := mustParse(e.MinApplianceVersion); need == nil || v.Compare(need) > 0 {
			need = v
		}
	}
	if need == nil {
		return a
	}
	have, err := release.ParseVersion(ApplianceVersion)
	if err != nil {
		return a // a development build: no release version to judge
	}
	if have.Compare(need) >= 0 {
		return a
	}
	a.Needed = need.String()
	offer, ok := idx.Appliance(need, platform())
	if !ok {
		a.Reason = fmt.Sprintf("the channel offers no carto-appliance %s or newer for %s: update carto-appliance by hand (re-run install.sh, or your package manager), then run the upgrade again", a.Needed, platform())
		return a
	}
	if packaged() {
		a.Reason = fmt.Sprintf("%s; update the package to %s or newer (the channel offers %s), then run the upgrade again", packagedReason, a.Needed, offer.Version)
		return a
	}
	a.Offered = offer.Version
	return a
}

// applianceUpdate is a carto-appliance to update to, and where its
// binary comes from (the channel, or an air-gap bundle).
type applianceUpdate struct {
	version string
	fetch   func(context.Context) ([]byte, error)
}

// fromChannel is offer, downloaded from the channel src reads.
func fromChannel(src *upgradeSource, offer release.ApplianceEntry) applianceUpdate {
	return applianceUpdate{version: offer.Version, fetch: func(ctx context.Context) ([]byte, error) {
		return release.FetchAppliance(ctx, src.client, src.base, src.channel, offer, platform())
	}}
}

// selfUpdate replaces this binary with the update's, and leaves the
// upgrade to CARTO target (installed: the version now) to the new one,
// unless in.ApplianceOnly.
func selfUpdate(ctx context.Context, in UpgradeOptions, paths config.Paths, installed, target string, up applianceUpdate) (*Result, error) {
	exe, err := selfBinary()
	if err != nil {
		return nil, fmt.Errorf("finding the running carto-appliance binary to update it: %w", err)
	}
	sum := &SelfUpdateSummary{From: ApplianceVersion, To: up.version, Binary: exe,
		Previous: filepath.Join(paths.StateDir, previousBinaryDir, "carto-appliance-"+ApplianceVersion)}
	if !in.ApplianceOnly {
		sum.For = target
	}
	var tmp string
	removeTmp := func(context.Context) error {
		if tmp == "" {
			return nil
		}
		err := os.Remove(tmp)
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
		return err
	}
	// One update at a time: the downloads a stopped one left go.
	unlock, err := lockConverge(ctx, paths)
	if err != nil {
		return nil, err
	}
	defer unlock()
	for _, f := range binswap.Leftovers(exe, 0) {
		os.Remove(f)
	}
	intent := filepath.Join(paths.StateDir, upgradeIntentFileName)
	action := "self-update " + sum.From + " -> " + sum.To
	j := steps.Journal{Path: filepath.Join(paths.StateDir, selfUpdateJournalFileName), Details: func() any { return sum }, Observe: observeSteps(in.Reporter, action)}
	err = steps.Run(ctx, j, action, []steps.Step{
		{Name: "download", Prepares: true, Undo: removeTmp, Do: func(ctx context.Context) error {
			b, err := up.fetch(ctx)
			if err != nil {
				return fmt.Errorf("getting carto-appliance %s: %w", up.version, err)
			}
			if tmp, err = binswap.Stage(exe, b); err != nil {
				return fmt.Errorf("writing carto-appliance %s beside %s: %w", up.version, exe, err)
			}
			return binswap.CheckVersion(ctx, tmp, up.version)
		}},
		{Name: "keep-previous", Do: func(context.Context) error {
			return binswap.Keep(exe, sum.Previous, "carto-appliance-")
		}},
		{Name: "intent", Undo: func(context.Context) error { return removeIfThere(intent) }, Do: func(context.Context) error {
			if in.ApplianceOnly {
				return removeIfThere(intent) // nothing to continue
			}
			b, err := json.MarshalIndent(UpgradeIntent{To: target, SkipDatabaseBackup: in.SkipDatabaseBackup, Bundle: in.Bundle, Appliance: up.version, At: time.Now().UTC()}, "", "  ")
			if err != nil {
				return err
			}
			return atomicfile.Write(intent, append(b, '\n'), 0o600)
		}},
		// One rename: the path holds the old binary or the new, whole. A
		// running process keeps the file it started from.
		{Name: "replace", Do: func(context.Context) error {
			if err := binswap.Swap(tmp, exe); err != nil {
				return err
			}
			tmp = ""
			return nil
		}},
	}, steps.Undo)
	if err != nil {
		return nil, fmt.Errorf("updating carto-appliance %s to %s failed: %w; nothing was changed", ApplianceVersion, up.version, err)
	}
	return &Result{Version: installed, SelfUpdate: sum}, nil
}

// updateApplianceOnly updates carto-appliance to the newest the channel
// offers for this platform, when newer than this one.
func updateApplianceOnly(ctx context.Context, in UpgradeOptions, paths config.Paths, chk *UpgradeCheck, src *upgradeSource) (*Result, error) {
	have, err := release.ParseVersion(ApplianceVersion)
	if err != nil {
		return nil, fmt.Errorf("this carto-appliance is a development build (%s): it does not update itself", ApplianceVersion)
	}
	offer, ok := src.index.Appliance(have, platform())
	if !ok || mustParse(offer.Version).Compare(have) == 0 {
		return &Result{Version: chk.Installed, Warnings: []string{fmt.Sprintf("carto-appliance %s is the newest the %s channel offers for %s: nothing to update", ApplianceVersion, chk.Channel, platform())}}, nil
	}
	if packaged() {
		return nil, fmt.Errorf("%s; update the package (the channel offers %s)", packagedReason, offer.Version)
	}
	return selfUpdate(ctx, in, paths, chk.Installed, chk.Target, fromChannel(src, offer))
}

func removeIfThere(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// TakeUpgradeIntent returns the upgrade a self-update left for this
// binary (version) to continue, and removes it: only one process takes
// it. An intent for another version (the update stopped before the
// binary was replaced) or older than an hour is removed and returned as
// stale, with a nil intent, for the caller to log.
func TakeUpgradeIntent(paths config.Paths, version string) (intent *UpgradeIntent, stale string, err error) {
	paths = paths.WithDefaults()
	path := filepath.Join(paths.StateDir, upgradeIntentFileName)
	taken := path + ".taken"
	// The rename is the claim: of two takers, one finds nothing.
	if err := os.Rename(path, taken); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", nil
		}
		return nil, "", fmt.Errorf("taking the upgrade a self-update left: %w", err)
	}
	defer os.Remove(taken)
	b, err := os.ReadFile(taken)
	if err != nil {
		return nil, "", fmt.Errorf("reading the upgrade a self-update left: %w", err)
	}
	var in UpgradeIntent
	if err := json.Unmarshal(b, &in); err != nil || in.Appliance == "" {
		return nil, fmt.Sprintf("%s is not an upgrade intent (%v): removed", path, err), nil
	}
	switch {
	case in.Appliance != version:
		return nil, fmt.Sprintf("the upgrade to CARTO %s was left for carto-appliance %s, and this is %s (the update stopped before the binary was replaced): removed; run the upgrade again", in.To, in.Appliance, version), nil
	case time.Since(in.At) > intentTTL:
		return nil, fmt.Sprintf("the upgrade to CARTO %s left at %s is older than %s: not continued; run the upgrade again", in.To, in.At.Format(time.RFC3339), intentTTL), nil
	}
	return &in, "", nil
}

// UpgradeIntentFile is where a self-update leaves the upgrade to continue.
func UpgradeIntentFile(paths config.Paths) string {
	return filepath.Join(paths.WithDefaults().StateDir, upgradeIntentFileName)
}

// dropUpgradeIntent removes a pending intent: an upgrade that starts
// supersedes it.
func dropUpgradeIntent(paths config.Paths) error {
	return removeIfThere(filepath.Join(paths.StateDir, upgradeIntentFileName))
}

// CleanSelfUpdate removes what a stopped self-update left beside the
// binary (downloads never renamed into place), at the agent's start.
func CleanSelfUpdate() ([]string, error) {
	exe, err := selfBinary()
	if err != nil {
		return nil, err
	}
	var removed []string
	// A download younger than this may be another process's, under way.
	for _, f := range binswap.Leftovers(exe, 10*time.Minute) {
		if os.Remove(f) == nil {
			removed = append(removed, f)
		}
	}
	return removed, nil
}
