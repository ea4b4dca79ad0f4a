//go:build licensetest

package installer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/release/releasetest"
)

// testBundle writes an air-gap bundle of r (stand-in image files) and
// returns its path and each image's ID by name.
func testBundle(t *testing.T, r *release.Release) (string, map[string]string) {
	t.Helper()
	return testBundleWith(t, r, "", nil)
}

// testBundleWith is testBundle carrying carto-appliance binaries of
// applianceVersion too.
func testBundleWith(t *testing.T, r *release.Release, applianceVersion string, appliances map[string][]byte) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	ids := map[string]string{}
	var files []release.BundleImageFile
	for _, name := range r.Manifest.Images {
		p := filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+".tar")
		os.WriteFile(p, []byte("image "+name+" "+r.Manifest.Version), 0o644)
		sum := sha256.Sum256([]byte(name + r.Manifest.Version))
		ids[name] = "sha256:" + hex.EncodeToString(sum[:])
		files = append(files, release.BundleImageFile{Name: name, ID: ids[name], Path: p})
	}
	var buf bytes.Buffer
	if err := release.WriteBundle(&buf, r, files, applianceVersion, appliances, releasetest.KeyName, releasetest.Key, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "carto-"+r.Manifest.Version+".bundle")
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out, ids
}

// An install from a bundle loads its images (tagged as the compose file
// names them) and pulls nothing; the bundle's release is pinned; a re-run
// loads nothing again.
func TestInstallFromABundle(t *testing.T) {
	f, _ := fakes(t)
	opts := customerPackage(t)
	// An air-gap licence: never checked online.
	os.WriteFile(filepath.Join(filepath.Dir(opts.CustomerEnv), config.LicenseFileName), testLicense(t, func(l *license.License) { l.TenantID, l.AirGap = "onp-test", true }), 0o600)
	rel := channelRelease(t, "2025.11.3", "2025.6.2", "", "")
	opts.Bundle, _ = testBundle(t, rel)
	res, err := Install(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.calls("pull")) != 0 {
		t.Errorf("pulled: %v", f.calls("pull"))
	}
	loads := f.calls("load ")
	if len(loads) != len(rel.Manifest.Images) {
		t.Fatalf("loads: %v", loads)
	}
	for _, l := range loads {
		if !strings.Contains(l, "/") || !strings.Contains(l, ":2025.11.3") || !strings.Contains(l, "loaded=true") {
			t.Errorf("load %q: not tagged as the compose file names it", l)
		}
	}
	if st := readState(t, opts.Paths); st.Release == nil || st.Release.Digest != rel.Digest() {
		t.Errorf("pinned %+v, want the bundle's release", st.Release)
	}
	for _, w := range res.Warnings {
		if strings.Contains(w, "online one") {
			t.Errorf("warned of an online licence: %s", w)
		}
	}
	// Again: everything is there already.
	if _, err := Install(t.Context(), opts); err != nil {
		t.Fatal(err)
	}
	for _, l := range f.calls("load ")[len(loads):] {
		if !strings.Contains(l, "loaded=false") {
			t.Errorf("loaded again: %s", l)
		}
	}
}

// A bundle that is not whole, or not for an install here, is refused
// before anything is written or loaded; a load that fails half-way leaves
// no tag it added.
func TestInstallFromABundleRefusals(t *testing.T) {
	f, _ := fakes(t)
	opts := customerPackage(t)
	good, _ := testBundle(t, channelRelease(t, "2025.11.3", "2025.6.2", "", ""))
	data, _ := os.ReadFile(good)
	cut := filepath.Join(t.TempDir(), "cut.bundle")
	os.WriteFile(cut, data[:len(data)/2], 0o644)
	opts.Bundle = cut
	_, err := Install(t.Context(), opts)
	var ie *InputError
	if !errors.As(err, &ie) || ie.Input != InputBundle || !errors.Is(err, release.ErrBadBundle) || !strings.Contains(err.Error(), cut) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("a cut bundle: %v", err)
	}
	if _, err := os.Stat(opts.Paths.ConfigDir); !errors.Is(err, os.ErrNotExist) || len(f.Log) != 0 {
		t.Errorf("a refused bundle changed something: %v %v", err, f.Log)
	}

	// The load fails half-way: the tags it added go.
	opts.Bundle = good
	f.Fail["load"] = errors.New("no space left on device")
	if _, err := Install(t.Context(), opts); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("a failed load: %v", err)
	}
	if len(f.calls("untag ")) == 0 || len(f.images) != 0 {
		t.Errorf("tags left after a failed load: %v (untagged %v)", f.images, f.calls("untag "))
	}
	delete(f.Fail, "load")
	res, err := Install(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	// The package's licence is an online one: it works, with a warning.
	if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "ask CARTO for an air-gap licence") }) {
		t.Errorf("no warning of an online licence: %v", res.Warnings)
	}

	// Installed 2025.11.3: a bundle of another version is upgrade's (or
	// nobody's).
	newer, _ := testBundle(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""))
	opts.Bundle = newer
	if _, err := Install(t.Context(), opts); err == nil || !strings.Contains(err.Error(), "carto-appliance upgrade, from this bundle") {
		t.Errorf("a newer bundle: %v", err)
	}
	older, _ := testBundle(t, channelRelease(t, "2025.10.1", "2025.6.2", "", ""))
	opts.Bundle = older
	if _, err := Install(t.Context(), opts); err == nil || !strings.Contains(err.Error(), "does not downgrade") {
		t.Errorf("an older bundle: %v", err)
	}
}

// An upgrade from a bundle: the same journaled run, its images loaded
// (checked by ID) instead of pulled, no channel read; what the channel's
// judgement refuses, the bundle's does too.
func TestUpgradeFromABundle(t *testing.T) {
	paths, f := upgradeNode(t) // a channel with no release: it must not be needed
	next := channelRelease(t, "2026.1.0", "2025.11.3", "", "")
	bundle, ids := testBundle(t, next)
	pulls := len(f.calls("pull"))
	res, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}, Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	if u := res.Upgrade; u == nil || u.From != "2025.11.3" || u.To != "2026.1.0" || len(u.Backups) != 1 {
		t.Errorf("result: %+v", res.Upgrade)
	}
	if len(f.calls("pull")) != pulls {
		t.Errorf("pulled: %v", f.calls("pull"))
	}
	if got := f.calls("load "); len(got) != len(next.Manifest.Images) || !strings.Contains(strings.Join(got, "\n"), ids["maps-api"]) {
		t.Errorf("loads: %v", got)
	}
	if st := readState(t, paths); st.Release == nil || st.Release.Version != "2026.1.0" {
		t.Errorf("pinned %+v", st.Release)
	}
	if j := upgradeJournal(t, paths); j.Outcome != "succeeded" {
		t.Errorf("journal %+v", j)
	}

	// Again: nothing newer in it.
	res, err = Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}, Bundle: bundle})
	if err != nil || len(res.Warnings) == 0 || !strings.Contains(res.Warnings[len(res.Warnings)-1], "nothing to upgrade") {
		t.Errorf("the same bundle again: %+v %v", res, err)
	}
	older, _ := testBundle(t, channelRelease(t, "2025.11.3", "2025.6.2", "", ""))
	if _, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}, Bundle: older}); err == nil || !strings.Contains(err.Error(), "does not downgrade") {
		t.Errorf("an older bundle: %v", err)
	}
	skip, _ := testBundle(t, channelRelease(t, "2027.1.0", "2026.6.0", "", ""))
	if _, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}, Bundle: skip}); err == nil || !strings.Contains(err.Error(), "upgrade to 2026.6.0 first") {
		t.Errorf("a bundle that skips a required version: %v", err)
	}
}

// A bundle whose release needs a newer carto-appliance carries it: the
// upgrade updates carto-appliance from the bundle first, and leaves the
// upgrade (from the same bundle) to the new binary.
func TestUpgradeFromABundleUpdatesTheApplianceFirst(t *testing.T) {
	paths, _ := upgradeNode(t)
	bin := filepath.Join(t.TempDir(), "carto-appliance")
	os.WriteFile(bin, fakeBinary("1.2.0"), 0o755)
	origBin, origVersion := selfBinary, ApplianceVersion
	selfBinary = func() (string, error) { return bin, nil }
	ApplianceVersion = "1.2.0"
	t.Cleanup(func() { selfBinary, ApplianceVersion = origBin, origVersion })
	next := needsAppliance(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""), "1.3.0")

	without, _ := testBundle(t, next)
	if _, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}, Bundle: without}); err == nil || !strings.Contains(err.Error(), "carries none for "+platform()) {
		t.Errorf("a bundle without the carto-appliance its release needs: %v", err)
	}
	if got, _ := os.ReadFile(bin); string(got) != string(fakeBinary("1.2.0")) {
		t.Error("the refused upgrade changed the binary")
	}

	bundle, _ := testBundleWith(t, next, "1.3.0", map[string][]byte{platform(): fakeBinary("1.3.0")})
	res, err := Upgrade(t.Context(), UpgradeOptions{Options: Options{Paths: paths}, Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	if su := res.SelfUpdate; su == nil || su.To != "1.3.0" || su.For != "2026.1.0" {
		t.Fatalf("result %+v", res)
	}
	if got, _ := os.ReadFile(bin); string(got) != string(fakeBinary("1.3.0")) {
		t.Errorf("the binary holds %q", got)
	}
	in, _, err := TakeUpgradeIntent(paths, "1.3.0")
	if err != nil || in == nil || in.Bundle != bundle || in.To != "2026.1.0" {
		t.Errorf("intent %+v %v", in, err)
	}
	if st := readState(t, paths); st.Release == nil || st.Release.Version != "2025.11.3" {
		t.Errorf("CARTO changed before the new binary: %+v", st.Release)
	}
}

// bundle load puts the images in the engine ahead of time; the install
// from the same bundle then only tags them.
func TestLoadBundleAhead(t *testing.T) {
	f, _ := fakes(t)
	rel := channelRelease(t, "2025.11.3", "2025.6.2", "", "")
	bundle, _ := testBundle(t, rel)
	idx, err := CheckBundle(t.Context(), Options{}, bundle)
	if err != nil || idx.Version != "2025.11.3" || len(f.Log) != 0 {
		t.Fatalf("check: %+v %v (engine asked: %v)", idx, err, f.Log)
	}
	res, err := LoadBundle(t.Context(), Options{}, bundle)
	if err != nil || len(res.Loaded) != len(rel.Manifest.Images) || len(res.Present) != 0 {
		t.Fatalf("load: %+v %v", res, err)
	}
	if res, err := LoadBundle(t.Context(), Options{}, bundle); err != nil || len(res.Loaded) != 0 {
		t.Errorf("loading again: %+v %v", res, err)
	}
	opts := customerPackage(t)
	opts.Bundle = bundle
	before := len(f.calls("load "))
	if _, err := Install(t.Context(), opts); err != nil {
		t.Fatal(err)
	}
	installLoads := f.calls("load ")[before:]
	if len(installLoads) != len(rel.Manifest.Images) {
		t.Fatalf("the install's loads: %v", installLoads)
	}
	for _, l := range installLoads {
		if !strings.Contains(l, "loaded=false") || strings.Contains(l, "carto-bundle/") {
			t.Errorf("the install loaded again, or did not tag as the compose file names it: %s", l)
		}
	}
}

// upgrade --check with a bundle: what the upgrade from it would go through
// and change, its refusals the same as the upgrade's; nothing loaded,
// pinned or changed.
func TestCheckBundleUpgrade(t *testing.T) {
	paths, f := upgradeNode(t)
	origVersion := ApplianceVersion
	ApplianceVersion = "1.2.0"
	t.Cleanup(func() { ApplianceVersion = origVersion })
	next := needsAppliance(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""), "1.3.0")
	bundle, _ := testBundleWith(t, next, "1.3.0", map[string][]byte{platform(): fakeBinary("1.3.0")})
	calls := len(f.calls(""))

	chk, err := CheckBundleUpgrade(t.Context(), Options{Paths: paths}, bundle)
	if err != nil {
		t.Fatal(err)
	}
	if chk.Installed != "2025.11.3" || chk.Bundle != bundle || chk.Target != "2026.1.0" || !slices.Equal(chk.Path, []string{"2026.1.0"}) || chk.ChannelURL != "" {
		t.Errorf("check %+v", chk)
	}
	if a := chk.Appliance; a.Needed != "1.3.0" || a.Offered != "1.3.0" || !a.SelfUpdates() {
		t.Errorf("appliance %+v", a)
	}
	if !chk.License.Allowed || chk.Changes == nil || chk.Changes.From != "2025.11.3" || chk.Changes.To != "2026.1.0" {
		t.Errorf("licence %+v changes %+v", chk.License, chk.Changes)
	}
	if got := f.calls(""); len(got) != calls {
		t.Errorf("the check called the engine: %v", got[calls:])
	}
	if st := readState(t, paths); st.Release == nil || st.Release.Version != "2025.11.3" {
		t.Errorf("pinned %+v", st.Release)
	}

	without, _ := testBundle(t, next)
	if chk, err := CheckBundleUpgrade(t.Context(), Options{Paths: paths}, without); err != nil || chk.Appliance.SelfUpdates() || !strings.Contains(chk.Appliance.Reason, "carries no carto-appliance 1.3.0") {
		t.Errorf("a bundle without the carto-appliance its release needs: %+v %v", chk, err)
	}
	same, _ := testBundle(t, channelRelease(t, "2025.11.3", "2025.6.2", "", ""))
	if chk, err := CheckBundleUpgrade(t.Context(), Options{Paths: paths}, same); err != nil || len(chk.Path) != 0 || chk.Changes != nil {
		t.Errorf("the installed release's bundle: %+v %v", chk, err)
	}
	older, _ := testBundle(t, channelRelease(t, "2025.6.2", "2025.1.0", "", ""))
	if _, err := CheckBundleUpgrade(t.Context(), Options{Paths: paths}, older); err == nil || !strings.Contains(err.Error(), "does not downgrade") {
		t.Errorf("an older bundle: %v", err)
	}
	skip, _ := testBundle(t, channelRelease(t, "2027.1.0", "2026.6.0", "", ""))
	if _, err := CheckBundleUpgrade(t.Context(), Options{Paths: paths}, skip); err == nil || !strings.Contains(err.Error(), "upgrade to 2026.6.0 first") {
		t.Errorf("a bundle that skips a required version: %v", err)
	}
	if _, err := CheckBundleUpgrade(t.Context(), Options{Paths: paths}, filepath.Join(t.TempDir(), "missing.tar")); err == nil || !strings.Contains(err.Error(), "missing.tar") {
		t.Errorf("a missing bundle: %v", err)
	}
}
