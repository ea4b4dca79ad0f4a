//go:build licensetest

package installer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/release/releasetest"
)

// needsAppliance is r with min_appliance_version v.
func needsAppliance(t *testing.T, r *release.Release, v string) *release.Release {
	t.Helper()
	m := string(r.RawManifest) + "min_appliance_version: \"" + v + "\"\n"
	out, err := release.Load(fstest.MapFS{
		release.ManifestFile:    {Data: []byte(m)},
		release.ComposeFile:     {Data: r.Compose},
		release.EnvTemplateFile: {Data: r.EnvTemplate},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fakeBinary is an executable that answers `version` as carto-appliance
// says.
func fakeBinary(says string) []byte {
	return []byte("#!/bin/sh\necho 'carto-appliance " + says + "'\necho 'CARTO release 2025.11.3'\n")
}

// selfUpdateNode is a node on 2025.11.3 running carto-appliance 1.2.0
// (the binary at the returned path), following a channel whose 2026.1.0
// needs carto-appliance 1.3.0 and which offers the binary pub for this
// platform as 1.3.0 (none when pub is nil).
func selfUpdateNode(t *testing.T, pub []byte) (config.Paths, string, string) {
	t.Helper()
	root, url := serveChannel(t, needsAppliance(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""), "1.3.0"))
	if pub != nil {
		if _, err := release.PublishAppliance(root, "stable", "1.3.0", map[string][]byte{platform(): pub}, releasetest.KeyName, releasetest.Key, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	paths := installed(t, config.Config{Upgrade: config.UpgradeConfig{ChannelURL: url}})
	lic := testLicense(t, func(l *license.License) { l.TenantID, l.Channel = "onp-test", "stable" })
	if err := os.WriteFile(paths.File(config.LicenseFileName), lic, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "carto-appliance")
	if err := os.WriteFile(bin, fakeBinary("1.2.0"), 0o755); err != nil {
		t.Fatal(err)
	}
	origBin, origVersion := selfBinary, ApplianceVersion
	selfBinary = func() (string, error) { return bin, nil }
	ApplianceVersion = "1.2.0"
	t.Cleanup(func() { selfBinary, ApplianceVersion = origBin, origVersion })
	return paths, bin, root
}

// An upgrade to a release that needs a newer carto-appliance replaces the
// binary with the channel's, keeps the old one, and leaves the upgrade to
// the new binary; CARTO is not touched yet.
func TestUpgradeUpdatesTheApplianceFirst(t *testing.T) {
	next := fakeBinary("1.3.0")
	paths, bin, _ := selfUpdateNode(t, next)
	chk, err := CheckUpgrade(t.Context(), paths, "")
	if err != nil {
		t.Fatal(err)
	}
	if a := chk.Appliance; a.Installed != "1.2.0" || a.Needed != "1.3.0" || a.Offered != "1.3.0" || a.Reason != "" || !a.SelfUpdates() {
		t.Errorf("check: %+v", a)
	}
	// A rehearsal runs the new release with this binary: refused.
	if _, err := RehearseUpgrade(t.Context(), RehearseOptions{Options: Options{Paths: paths}}); err == nil || !strings.Contains(err.Error(), "needs carto-appliance 1.3.0") {
		t.Errorf("rehearse: %v", err)
	}
	before := dirSnapshot(t, paths.ConfigDir)
	res, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}, SkipDatabaseBackup: true})
	if err != nil {
		t.Fatal(err)
	}
	su := res.SelfUpdate
	if su == nil || su.From != "1.2.0" || su.To != "1.3.0" || su.Binary != bin || su.For != "2026.1.0" || res.Upgrade != nil {
		t.Fatalf("result: %+v %+v", res, su)
	}
	if got, _ := os.ReadFile(bin); string(got) != string(next) {
		t.Errorf("the binary holds %q", got)
	}
	if got, _ := os.ReadFile(su.Previous); string(got) != string(fakeBinary("1.2.0")) {
		t.Errorf("the previous binary kept at %s holds %q", su.Previous, got)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(bin), ".carto-appliance.update-*")); len(left) != 0 {
		t.Errorf("downloads left: %v", left)
	}
	if after := dirSnapshot(t, paths.ConfigDir); len(after) != len(before) {
		t.Error("the self-update changed the config dir")
	}
	if r, _ := (steps.Journal{Path: filepath.Join(paths.StateDir, selfUpdateJournalFileName)}).Load(); r == nil || r.Outcome != "succeeded" || r.Action != "self-update 1.2.0 -> 1.3.0" {
		t.Errorf("journal: %+v", r)
	}

	// The old binary's taker finds it stale; the new one takes it once.
	in, stale, err := TakeUpgradeIntent(paths, "1.3.0")
	if err != nil || in == nil || stale != "" || in.To != "2026.1.0" || !in.SkipDatabaseBackup || in.Appliance != "1.3.0" {
		t.Fatalf("intent: %+v %q %v", in, stale, err)
	}
	if in, _, err := TakeUpgradeIntent(paths, "1.3.0"); in != nil || err != nil {
		t.Errorf("taken twice: %+v %v", in, err)
	}

	// The new binary, still judged as the old version, would loop: it
	// refuses instead.
	if _, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}, NoSelfUpdate: true}); err == nil || !strings.Contains(err.Error(), "systemctl restart carto-appliance") {
		t.Errorf("no self-update: %v", err)
	}
}

// A binary that is not what the channel's signed index says, or does not
// say its version, is refused before anything changes; so is an upgrade
// with no binary to update to.
func TestSelfUpdateRefusalsChangeNothing(t *testing.T) {
	for name, c := range map[string]struct {
		pub    []byte
		tamper bool
		want   string
	}{
		"replaced on the server": {pub: fakeBinary("1.3.0"), tamper: true, want: "signed index"},
		"another version":        {pub: fakeBinary("1.2.9"), want: `says "carto-appliance 1.2.9"`},
		"does not run":           {pub: []byte("#!/bin/sh\nexit 3\n"), want: "does not run here"},
		"none offered":           {want: "offers no carto-appliance 1.3.0 or newer"},
	} {
		t.Run(name, func(t *testing.T) {
			paths, bin, root := selfUpdateNode(t, c.pub)
			if c.tamper {
				p := filepath.Join(root, "stable", release.AppliancePath("1.3.0", platform()))
				b, _ := os.ReadFile(p)
				b[len(b)-2] ^= 1
				os.WriteFile(p, b, 0o644)
			}
			state := dirSnapshot(t, paths.StateDir)
			_, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "nothing was changed") {
				t.Fatalf("got %v, want %q and nothing was changed", err, c.want)
			}
			if got, _ := os.ReadFile(bin); string(got) != string(fakeBinary("1.2.0")) {
				t.Errorf("the binary was changed: %q", got)
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(bin), ".carto-appliance.update-*")); len(left) != 0 {
				t.Errorf("downloads left: %v", left)
			}
			if in, _, _ := TakeUpgradeIntent(paths, "1.3.0"); in != nil {
				t.Errorf("an intent was left: %+v", in)
			}
			for f := range dirSnapshot(t, paths.StateDir) {
				if _, ok := state[f]; !ok && !strings.Contains(f, "self-update-journal") && !strings.Contains(f, "lock") {
					t.Errorf("left in the state dir: %s", f)
				}
			}
		})
	}
}

// --appliance-only updates the binary and leaves nothing to continue.
func TestUpgradeApplianceOnly(t *testing.T) {
	paths, bin, _ := selfUpdateNode(t, fakeBinary("1.3.0"))
	res, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}, ApplianceOnly: true})
	if err != nil || res.SelfUpdate == nil || res.SelfUpdate.For != "" {
		t.Fatalf("%+v %v", res, err)
	}
	if got, _ := os.ReadFile(bin); string(got) != string(fakeBinary("1.3.0")) {
		t.Errorf("the binary holds %q", got)
	}
	if in, stale, _ := TakeUpgradeIntent(paths, "1.3.0"); in != nil || stale != "" {
		t.Errorf("an intent was left: %+v %q", in, stale)
	}
	ApplianceVersion = "1.3.0"
	res, err = Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}, ApplianceOnly: true})
	if err != nil || res.SelfUpdate != nil || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "nothing to update") {
		t.Errorf("again: %+v %v", res, err)
	}
}

// An intent for another binary, or an old one, is not continued.
func TestTakeUpgradeIntentRefusesStaleOnes(t *testing.T) {
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	write := func(in string) {
		os.WriteFile(filepath.Join(paths.StateDir, upgradeIntentFileName), []byte(in), 0o600)
	}
	write(`{"to":"2026.1.0","appliance":"1.3.0","at":"` + time.Now().UTC().Format(time.RFC3339) + `"}`)
	if in, stale, err := TakeUpgradeIntent(paths, "1.2.0"); in != nil || err != nil || !strings.Contains(stale, "stopped before the binary was replaced") {
		t.Errorf("another version: %+v %q %v", in, stale, err)
	}
	write(`{"to":"2026.1.0","appliance":"1.3.0","at":"` + time.Now().Add(-2*time.Hour).UTC().Format(time.RFC3339) + `"}`)
	if in, stale, err := TakeUpgradeIntent(paths, "1.3.0"); in != nil || err != nil || !strings.Contains(stale, "older than") {
		t.Errorf("an old one: %+v %q %v", in, stale, err)
	}
	write(`not json`)
	if in, stale, _ := TakeUpgradeIntent(paths, "1.3.0"); in != nil || !strings.Contains(stale, "not an upgrade intent") {
		t.Errorf("garbage: %+v %q", in, stale)
	}
	if _, err := os.Stat(filepath.Join(paths.StateDir, upgradeIntentFileName)); err == nil {
		t.Error("a stale intent was left")
	}
}
