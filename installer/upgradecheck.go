package installer

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/release"
)

// UpgradeCheck is what `upgrade --check` reports: where the node stands
// against its channel, and what an upgrade would go through and change.
// Computing it changes nothing.
type UpgradeCheck struct {
	Installed  string `json:"installed"`
	Channel    string `json:"channel"`
	ChannelURL string `json:"channel_url,omitempty"`
	// Bundle is the air-gap bundle checked instead of the channel.
	Bundle string `json:"bundle,omitempty"`
	// Latest is the newest version the channel offers.
	Latest string `json:"latest"`
	// Available are the channel's versions newer than the installed one.
	Available []string `json:"available,omitempty"`
	// Target is the version asked for (or Latest); Path the versions an
	// upgrade to it goes through, in order: required stops
	// (min_upgrade_from), then Target. Empty when up to date.
	Target string   `json:"target,omitempty"`
	Path   []string `json:"path,omitempty"`
	// License says whether the licence allows the upgrade.
	License UpgradeLicense `json:"license"`
	// Changes are what the first step of Path changes, from the
	// installed release's manifest to its own.
	Changes *ReleaseChanges `json:"changes,omitempty"`
	// Appliance says whether the path needs a newer carto-appliance,
	// which the upgrade then installs first from the channel.
	Appliance ApplianceCheck `json:"appliance"`
}

// UpgradeLicense is the licence's judgement of an upgrade.
type UpgradeLicense struct {
	State   license.State `json:"state"`
	Channel string        `json:"channel,omitempty"`
	Expires *time.Time    `json:"expires,omitempty"`
	Allowed bool          `json:"allowed"`
	// Reason says why an upgrade would be refused.
	Reason string `json:"reason,omitempty"`
}

// ReleaseChanges are the differences between two releases' manifests.
type ReleaseChanges struct {
	From          string   `json:"from"`
	To            string   `json:"to"`
	ImagesAdded   []string `json:"images_added,omitempty"`
	ImagesRemoved []string `json:"images_removed,omitempty"`
	// ServicesAdded and ServicesRemoved are the compose services the new
	// release adds and no longer runs.
	ServicesAdded   []string `json:"services_added,omitempty"`
	ServicesRemoved []string `json:"services_removed,omitempty"`
	// EnvAdded are the .env keys the new release's template adds (each
	// with its default, or from customer.env); EnvRemoved the ones it no
	// longer writes.
	EnvAdded   []string `json:"env_added,omitempty"`
	EnvRemoved []string `json:"env_removed,omitempty"`
	// EnvRequired are settings the new release requires that the
	// installed one did not; EnvDropped the other way round.
	EnvRequired []string `json:"env_required,omitempty"`
	EnvDropped  []string `json:"env_dropped,omitempty"`
}

// upgradeClient is the HTTP client of the channel (through the proxy, with
// its CA); tests swap it for one that trusts their server.
var upgradeClient = licenseClient

// CheckUpgrade reads the node's channel (appliance.yaml upgrade section)
// and says what an upgrade to target (empty: the latest) would go
// through, whether the licence allows it, and what its first step
// changes. The channel's index and releases are verified against the
// release keys this binary trusts. Nothing is changed.
func CheckUpgrade(ctx context.Context, paths config.Paths, target string) (*UpgradeCheck, error) {
	chk, src, err := resolveUpgrade(ctx, paths.WithDefaults(), target)
	if err != nil {
		return nil, err
	}
	if len(src.path) == 0 {
		return chk, nil
	}
	next, err := src.fetch(ctx, 0)
	if err != nil {
		return nil, err
	}
	if chk.Changes, err = releaseChanges(src.installed, next); err != nil {
		return nil, err
	}
	return chk, nil
}

// upgradeSource is where an upgrade's releases come from: the channel,
// read and verified, and the path through it.
type upgradeSource struct {
	client    *http.Client
	base      *url.URL
	channel   string
	installed *release.Release
	index     *release.Index
	path      []release.IndexEntry
}

// fetch reads and verifies the i-th release of the path.
func (s *upgradeSource) fetch(ctx context.Context, i int) (*release.Release, error) {
	e := s.path[i]
	r, err := release.FetchEntry(ctx, s.client, s.base, s.channel, e)
	if err != nil {
		return nil, fmt.Errorf("reading CARTO %s from the %s channel: %w", e.Version, s.channel, err)
	}
	return r, nil
}

// resolveUpgrade reads the channel and works out the path from the
// installed release to target (empty: the latest) and the licence's
// judgement, changing nothing.
func resolveUpgrade(ctx context.Context, paths config.Paths, target string) (*UpgradeCheck, *upgradeSource, error) {
	return resolveUpgradeFrom(ctx, paths, "", target)
}

// resolveUpgradeFrom is resolveUpgrade from the release from rather than
// the installed one (empty: the installed one): the data node rehearses
// the app node's path.
func resolveUpgradeFrom(ctx context.Context, paths config.Paths, from, target string) (*UpgradeCheck, *upgradeSource, error) {
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return nil, nil, err
	}
	installed, err := currentRelease(paths)
	if err != nil {
		return nil, nil, err
	}
	up := cfg.Upgrade
	base, err := url.Parse(up.BaseURL())
	if err != nil {
		return nil, nil, &config.FieldError{Field: "upgrade.channel_url", Err: fmt.Errorf("appliance.yaml upgrade.channel_url: %w", err)}
	}
	chk := &UpgradeCheck{Installed: orText(from, installed.Manifest.Version), Channel: up.ChannelName(), ChannelURL: config.RedactURL(base)}
	chk.License = judgeUpgradeLicense(paths, chk.Channel)

	client, err := upgradeClient(paths, cfg)
	if err != nil {
		return nil, nil, err
	}
	idx, err := release.FetchIndex(ctx, client, base, chk.Channel)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the %s channel: %w", chk.Channel, err)
	}
	have, err := release.ParseVersion(chk.Installed)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range idx.Releases {
		v, err := release.ParseVersion(e.Version)
		if err != nil {
			continue // ParseIndex refused such entries already
		}
		if chk.Latest == "" || v.Compare(mustParse(chk.Latest)) > 0 {
			chk.Latest = e.Version
		}
		if v.Compare(have) > 0 {
			chk.Available = append(chk.Available, e.Version)
		}
	}
	slices.SortFunc(chk.Available, func(a, b string) int { return mustParse(a).Compare(mustParse(b)) })
	chk.Target = target
	if chk.Target == "" {
		chk.Target = chk.Latest
	}
	steps, err := release.UpgradePath(idx, chk.Installed, chk.Target)
	if err != nil {
		return nil, nil, fmt.Errorf("from %s to %s in the %s channel: %w", chk.Installed, chk.Target, chk.Channel, err)
	}
	for _, e := range steps {
		chk.Path = append(chk.Path, e.Version)
	}
	chk.Appliance = judgeAppliance(idx, steps)
	return chk, &upgradeSource{client: client, base: base, channel: chk.Channel, installed: installed, index: idx, path: steps}, nil
}

// judgeUpgradeLicense applies the same judgement as install (an expired
// or invalid licence refuses) and the licence's channel.
func judgeUpgradeLicense(paths config.Paths, channel string) UpgradeLicense {
	st, err := GetLicenseStatus(paths)
	if err != nil {
		return UpgradeLicense{State: license.Invalid, Reason: err.Error()}
	}
	ul := UpgradeLicense{State: st.State, Channel: st.Channel, Expires: st.ExpiresAt, Allowed: true}
	switch {
	case st.State == license.Expired || st.State == license.Invalid:
		ul.Allowed, ul.Reason = false, st.Reason
	case st.Channel != "" && st.Channel != channel:
		ul.Allowed, ul.Reason = false, fmt.Sprintf("the licence entitles the %s channel, and appliance.yaml upgrade.channel is %s", st.Channel, channel)
	}
	return ul
}

// releaseChanges compares two releases: manifests, services, env keys.
func releaseChanges(from, to *release.Release) (*ReleaseChanges, error) {
	var names [2]struct{ services, env []string }
	for i, r := range []*release.Release{from, to} {
		var compose struct {
			Services map[string]yaml.Node `yaml:"services"`
		}
		if err := yaml.Unmarshal(r.Compose, &compose); err != nil {
			return nil, fmt.Errorf("reading CARTO %s's compose template: %w", r.Manifest.Version, err)
		}
		env, err := envfile.Parse(r.EnvTemplate)
		if err != nil {
			return nil, fmt.Errorf("reading CARTO %s's env template: %w", r.Manifest.Version, err)
		}
		names[i].services, names[i].env = slices.Collect(maps.Keys(compose.Services)), env.Keys()
	}
	return &ReleaseChanges{
		From: from.Manifest.Version, To: to.Manifest.Version,
		ImagesAdded:     missingFrom(to.Manifest.Images, from.Manifest.Images),
		ImagesRemoved:   missingFrom(from.Manifest.Images, to.Manifest.Images),
		ServicesAdded:   missingFrom(names[1].services, names[0].services),
		ServicesRemoved: missingFrom(names[0].services, names[1].services),
		EnvAdded:        missingFrom(names[1].env, names[0].env),
		EnvRemoved:      missingFrom(names[0].env, names[1].env),
		EnvRequired:     missingFrom(to.Manifest.RequiredEnv, from.Manifest.RequiredEnv),
		EnvDropped:      missingFrom(from.Manifest.RequiredEnv, to.Manifest.RequiredEnv),
	}, nil
}

// missingFrom is what of a is not in b, sorted.
func missingFrom(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}

// mustParse is a version the index already validated.
func mustParse(s string) release.Version {
	v, _ := release.ParseVersion(s)
	return v
}
