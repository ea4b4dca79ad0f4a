package installer

// Air-gap installs: the release and its images come from a bundle file
// (release.Bundle) carried in by hand, not from a channel and a registry.
// The bundle is read and checked whole before anything changes; its
// images are then loaded through the Engine API in place of the pull
// step, tagged as the compose file names them, and nothing is pulled.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/stack"
)

// openBundle reads and checks the bundle the operator gave (every file
// against its signed index) before anything changes, reporting each file
// (an image is hundreds of MiB) to rep.
func openBundle(ctx context.Context, path string, rep stack.Reporter) (*release.Bundle, error) {
	if path == "" {
		return nil, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &InputError{Input: InputBundle, Err: err}
	}
	b, err := release.OpenBundleReporting(ctx, abs, func(name string, size int64) {
		if rep != nil && size > 1<<20 {
			rep.Report(stack.Event{Service: name, Action: stack.ActionChecking, Detail: fmt.Sprintf("%d MiB", size>>20)})
		}
	})
	if err != nil {
		return nil, &InputError{Input: InputBundle, Err: fmt.Errorf("the bundle %w (nothing was changed)", err)}
	}
	return b, nil
}

// checkBundleInstall is install's judgement of a bundle's release: the
// one installed (a re-run), or the first; an upgrade or a downgrade is
// another command's.
func checkBundleInstall(paths config.Paths, b *release.Bundle) error {
	st, err := loadState(paths.StateDir)
	if err != nil {
		return err
	}
	installed := st.Version
	if st.Release != nil {
		installed = st.Release.Version
	}
	if installed == "" {
		return nil
	}
	have, bv := mustParse(installed), mustParse(b.Index.Version)
	switch c := bv.Compare(have); {
	case c < 0:
		return &InputError{Input: InputBundle, Err: fmt.Errorf("the bundle %s holds CARTO %s, older than the installed %s: install does not downgrade (carto-appliance rollback goes back over the last upgrade); nothing was changed", b.Path, b.Index.Version, installed)}
	case c > 0:
		return &InputError{Input: InputBundle, Err: fmt.Errorf("the bundle %s holds CARTO %s, newer than the installed %s: upgrade to it (carto-appliance upgrade, from this bundle); nothing was changed", b.Path, b.Index.Version, installed)}
	}
	return nil
}

// loadBundle loads the bundle's images the project runs (those the engine
// has are only tagged), in place of a pull, and leaves nothing to pull:
// no registry is asked. A load that fails untags what this run tagged,
// so no image half-loaded is left referenced.
func (c *convergeRun) loadBundle(ctx context.Context) error {
	b := c.d.bundle
	m := b.Release.Manifest
	refs := map[string][]string{} // image name -> the references the compose file names
	for _, name := range c.project.ServiceNames() {
		ref := c.project.Services[name].Image
		if img, ok := releaseImage(m, ref); ok && !slices.Contains(refs[img], ref) {
			refs[img] = append(refs[img], ref)
		}
	}
	var tagged []string
	err := b.EachImage(ctx, func(img release.BundleImage, r io.Reader) error {
		if len(refs[img.Name]) == 0 {
			return nil // an image no service of this node runs
		}
		for _, ref := range refs[img.Name] {
			if id, err := c.eng.ImageID(ctx, ref); err != nil {
				return err
			} else if id != img.ID {
				tagged = append(tagged, ref)
			}
		}
		_, err := loadImage(ctx, c.eng, c.opts, img, r, refs[img.Name])
		return err
	})
	if err != nil {
		for _, ref := range tagged {
			c.eng.UntagImage(context.WithoutCancel(ctx), ref)
		}
		return &InputError{Input: InputBundle, Err: fmt.Errorf("loading the bundle's images: %w; nothing was changed", err)}
	}
	c.pull.Policy = stack.PullNever
	return nil
}

// loadImage loads one image of a bundle as refs, telling opts' reporter
// whether it was loaded or already there.
func loadImage(ctx context.Context, eng stackEngine, opts Options, img release.BundleImage, r io.Reader, refs []string) (bool, error) {
	report := func(a stack.Action) {
		if opts.Reporter != nil {
			opts.Reporter.Report(stack.Event{Service: img.Name, Action: a})
		}
	}
	report(stack.ActionLoading)
	loaded, err := eng.LoadImage(ctx, r, img.ID, refs, opts.Progress)
	if err != nil {
		return false, err
	}
	if loaded {
		report(stack.ActionLoaded)
	} else {
		report(stack.ActionPresent)
	}
	return loaded, nil
}

// bundleLicenseWarnings: an air-gapped node reaches no licence server, so
// its licence should be an air-gap one (never checked online); an online
// one works until its grace period after the last answer runs out.
func bundleLicenseWarnings(d *desired) []string {
	if len(d.license) == 0 {
		return nil
	}
	lic, err := license.Parse(d.license)
	if err != nil || lic.AirGap {
		return nil
	}
	return []string{"the licence is an online one (air_gap: false) and this install comes from an air-gap bundle: the agent will ask the licence server and, reaching none, run on the grace period (license.grace_days) until it answers; ask CARTO for an air-gap licence"}
}

// upgradeFromBundle upgrades to the release of an air-gap bundle: one
// step, judged as a channel's would be (no downgrade, its
// min_upgrade_from, the licence, the appliance's version), then the same
// journaled run, its images loaded from the bundle.
func upgradeFromBundle(ctx context.Context, in UpgradeOptions, paths config.Paths) (*Result, error) {
	bu, err := openBundleUpgrade(ctx, paths, in.Bundle, in.Reporter)
	if err != nil {
		return nil, err
	}
	b, cfg := bu.bundle, bu.cfg
	from, to := bu.installed.Manifest.Version, b.Index.Version
	sum := &UpgradeSummary{From: from, To: from}
	if !bu.newer {
		return &Result{Version: from, Upgrade: sum, Warnings: []string{fmt.Sprintf("CARTO %s is installed, and the bundle %s holds it too: nothing to upgrade", from, b.Path)}}, nil
	}
	m := b.Release.Manifest
	if lic := judgeUpgradeLicense(paths, cfg.Upgrade.ChannelName()); !lic.Allowed {
		return nil, fmt.Errorf("%w: upgrading to %s: %s", license.ErrInvalid, to, lic.Reason)
	}
	if in.ApplianceOnly {
		return nil, &InputError{Input: InputBundle, Err: errors.New("carto-appliance alone is updated from the channel; a bundle's binary is installed by hand (appliance/ in the bundle)")}
	}
	if need := m.MinApplianceVersion; need != "" {
		if have, err := release.ParseVersion(ApplianceVersion); err == nil && have.Compare(mustParse(need)) < 0 {
			return updateApplianceFromBundle(ctx, in, paths, b, from, need)
		}
	}
	sum.Path = []string{to}
	in.bundle = b
	res, err := upgradeTo(ctx, in, paths, b.Release, sum)
	if err != nil {
		return res, err
	}
	sum.To = to
	res.Upgrade = sum
	return res, nil
}

// bundleUpgrade is an upgrade from a bundle, read and judged.
type bundleUpgrade struct {
	bundle    *release.Bundle
	cfg       config.Config
	installed *release.Release
	newer     bool // the bundle's release is newer than the installed one
}

// openBundleUpgrade reads the bundle whole, the node's settings and
// release, and judges the one against the other (judgeBundleUpgrade).
func openBundleUpgrade(ctx context.Context, paths config.Paths, path string, rep stack.Reporter) (*bundleUpgrade, error) {
	b, err := openBundle(ctx, path, rep)
	if err != nil {
		return nil, err
	}
	bu := &bundleUpgrade{bundle: b}
	if bu.cfg, err = loadInstalledConfig(paths); err != nil {
		return nil, err
	}
	if bu.installed, err = currentRelease(paths); err != nil {
		return nil, err
	}
	if bu.newer, err = judgeBundleUpgrade(b, bu.installed.Manifest.Version); err != nil {
		return nil, err
	}
	return bu, nil
}

// judgeBundleUpgrade says whether the bundle's release is newer than the
// installed one (from), and refuses one an upgrade cannot take: older (a
// downgrade), or past a required version (its min_upgrade_from).
func judgeBundleUpgrade(b *release.Bundle, from string) (newer bool, err error) {
	to := b.Index.Version
	switch c := mustParse(to).Compare(mustParse(from)); {
	case c == 0:
		return false, nil
	case c < 0:
		return false, &InputError{Input: InputBundle, Err: fmt.Errorf("the bundle %s holds CARTO %s, older than the installed %s: upgrade does not downgrade (carto-appliance rollback goes back over the last upgrade); nothing was changed", b.Path, to, from)}
	}
	if m := b.Release.Manifest; mustParse(m.MinUpgradeFrom).Compare(mustParse(from)) > 0 {
		return false, &InputError{Input: InputBundle, Err: fmt.Errorf("the bundle %s holds CARTO %s, which installs over %s or newer, and this node runs %s: upgrade to %s first (with its bundle); nothing was changed", b.Path, to, m.MinUpgradeFrom, from, m.MinUpgradeFrom)}
	}
	return true, nil
}

// CheckBundleUpgrade is `upgrade --check` for an air-gap bundle: the
// bundle read whole against its signed index, then what an upgrade from
// it would do (the same judgements as the upgrade, the changes from the
// installed release). Nothing is changed, no image loaded.
func CheckBundleUpgrade(ctx context.Context, opts Options, path string) (*UpgradeCheck, error) {
	paths := opts.Paths.WithDefaults()
	bu, err := openBundleUpgrade(ctx, paths, path, opts.Reporter)
	if err != nil {
		return nil, err
	}
	b := bu.bundle
	from, to := bu.installed.Manifest.Version, b.Index.Version
	chk := &UpgradeCheck{Installed: from, Channel: bu.cfg.Upgrade.ChannelName(), Bundle: b.Path, Latest: to}
	chk.License = judgeUpgradeLicense(paths, chk.Channel)
	chk.Appliance = ApplianceCheck{Installed: ApplianceVersion}
	if !bu.newer {
		return chk, nil
	}
	chk.Available, chk.Target, chk.Path = []string{to}, to, []string{to}
	chk.Appliance = judgeBundleAppliance(b)
	if chk.Changes, err = releaseChanges(bu.installed, b.Release); err != nil {
		return nil, err
	}
	return chk, nil
}

// judgeBundleAppliance is judgeAppliance for a bundle: the carto-appliance
// its release needs, and the one it carries for this machine.
func judgeBundleAppliance(b *release.Bundle) ApplianceCheck {
	a := ApplianceCheck{Installed: ApplianceVersion}
	need := b.Release.Manifest.MinApplianceVersion
	have, err := release.ParseVersion(ApplianceVersion)
	if need == "" || err != nil || have.Compare(mustParse(need)) >= 0 {
		return a // nothing needed, or a development build
	}
	a.Needed = need
	v, _, ok := b.Appliance(platform())
	switch {
	case !ok || mustParse(v).Compare(mustParse(need)) < 0:
		a.Reason = fmt.Sprintf("the bundle %s carries no carto-appliance %s or newer for %s: install one by hand first, then run the upgrade again", b.Path, need, platform())
	case packaged():
		a.Reason = fmt.Sprintf("%s; update the package to %s or newer (the bundle carries %s), then run the upgrade again", packagedReason, need, v)
	default:
		a.Offered = v
	}
	return a
}

// verifyBundleImages checks that each image the new release runs is the
// one its bundle carries (by ID: a loaded image has no registry digest).
func (u *upgradeRun) verifyBundleImages(ctx context.Context) error {
	m := u.d.release.Manifest
	for _, name := range u.project.ServiceNames() {
		ref := u.project.Services[name].Image
		image, ok := releaseImage(m, ref)
		if !ok {
			continue
		}
		want, _ := u.d.bundle.Index.Image(image)
		id, err := u.eng.ImageID(ctx, ref)
		if err != nil {
			return err
		}
		if id != want.ID {
			return fmt.Errorf("image %s is %q, and the bundle carries %s: nothing was changed", ref, id, want.ID)
		}
	}
	return nil
}

// updateApplianceFromBundle replaces this carto-appliance, too old for the
// bundle's release (need), with the binary the bundle carries, and leaves
// the upgrade to the new one as a channel's self-update does.
func updateApplianceFromBundle(ctx context.Context, in UpgradeOptions, paths config.Paths, b *release.Bundle, from, need string) (*Result, error) {
	to := b.Index.Version
	v, bin, ok := b.Appliance(platform())
	switch {
	case in.NoSelfUpdate:
		return nil, notRestarted(to, need)
	case !ok || mustParse(v).Compare(mustParse(need)) < 0:
		return nil, &InputError{Input: InputBundle, Err: fmt.Errorf("CARTO %s needs carto-appliance %s or newer, this is %s, and the bundle %s carries none for %s: install a carto-appliance %s or newer by hand first; nothing was changed", to, need, ApplianceVersion, b.Path, platform(), need)}
	case packaged():
		return nil, fmt.Errorf("CARTO %s needs carto-appliance %s or newer: %s; update the package (the bundle carries %s), then run the upgrade again", to, need, packagedReason, v)
	}
	return selfUpdate(ctx, in, paths, from, to, applianceUpdate{version: v, fetch: func(context.Context) ([]byte, error) { return bin, nil }})
}

// BundleLoad is what LoadBundle did.
type BundleLoad struct {
	Version string `json:"version"`
	// Loaded are the images loaded; Present those the engine had.
	Loaded  []string `json:"loaded,omitempty"`
	Present []string `json:"present,omitempty"`
}

// CheckBundle reads a bundle whole against its signed index, as install
// and upgrade do first, and says what it holds; nothing is changed.
func CheckBundle(ctx context.Context, opts Options, path string) (*release.BundleIndex, error) {
	b, err := openBundle(ctx, path, opts.Reporter)
	if err != nil {
		return nil, err
	}
	return b.Index, nil
}

// LoadBundle loads a bundle's images into the engine ahead of an install
// or upgrade from it (which then only tags them), each tagged
// carto-bundle/<name>:<version> so that a prune of dangling images keeps
// it. Nothing else is changed.
func LoadBundle(ctx context.Context, opts Options, path string) (*BundleLoad, error) {
	b, err := openBundle(ctx, path, opts.Reporter)
	if err != nil {
		return nil, err
	}
	eng, err := connectEngine(ctx)
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	res := &BundleLoad{Version: b.Index.Version}
	err = b.EachImage(ctx, func(img release.BundleImage, r io.Reader) error {
		loaded, err := loadImage(ctx, eng, opts, img, r, []string{"carto-bundle/" + img.Name + ":" + b.Index.Version})
		if loaded {
			res.Loaded = append(res.Loaded, img.Name)
		} else if err == nil {
			res.Present = append(res.Present, img.Name)
		}
		return err
	})
	if err != nil {
		return res, fmt.Errorf("loading the bundle's images: %w", err)
	}
	return res, nil
}
