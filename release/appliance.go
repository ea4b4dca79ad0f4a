package release

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/cartodb/carto-appliance/internal/urls"
)

// A channel also offers carto-appliance binaries, for a node whose next
// CARTO release needs a newer appliance (min_appliance_version) to update
// itself first:
//
//	<base>/<channel>/appliance/<version>/carto-appliance_<os>_<arch>
//
// listed in the index (Index.Appliances) with their size and sha256: the
// index's signature is what vouches for a binary, so an appliance trusts
// one exactly as far as it trusts the channel's releases. Appliances from
// before this field ignore it (ParseIndex ignores unknown fields).

// ApplianceEntry is one carto-appliance version a channel offers.
type ApplianceEntry struct {
	Version   string    `json:"version"`
	Published time.Time `json:"published"`
	// Binaries by platform ("linux_amd64").
	Binaries map[string]ApplianceBinary `json:"binaries"`
}

// ApplianceBinary is one platform's binary of an ApplianceEntry.
type ApplianceBinary struct {
	Digest string `json:"digest"` // sha256: and 64 hex digits
	Size   int64  `json:"size"`
}

// MaxApplianceBinary bounds a binary's size (a static Go binary is tens
// of MiB).
const MaxApplianceBinary = 512 << 20

var platformName = regexp.MustCompile(`^[a-z0-9]+_[a-z0-9]+$`)

// AppliancePath is a binary's path under its channel's directory: fixed,
// so that nothing in an index can point a download elsewhere.
func AppliancePath(version, platform string) string {
	return "appliance/" + version + "/carto-appliance_" + platform
}

func (e ApplianceEntry) check() error {
	if err := canonicalVersion(e.Version); err != nil {
		return fmt.Errorf("carto-appliance %w", err)
	}
	if len(e.Binaries) == 0 {
		return fmt.Errorf("carto-appliance %s: no binary", e.Version)
	}
	for _, p := range slices.Sorted(maps.Keys(e.Binaries)) {
		b := e.Binaries[p]
		switch {
		case !platformName.MatchString(p):
			return fmt.Errorf("carto-appliance %s: platform %q is not os_arch, e.g. linux_amd64", e.Version, p)
		case !ValidDigest(b.Digest):
			return fmt.Errorf("carto-appliance %s %s: digest %q is not sha256: and 64 hex digits", e.Version, p, b.Digest)
		case b.Size <= 0 || b.Size > MaxApplianceBinary:
			return fmt.Errorf("carto-appliance %s %s: size %d is not between 1 byte and %d MiB", e.Version, p, b.Size, MaxApplianceBinary>>20)
		}
	}
	return nil
}

// checkAppliances validates the index's appliance entries and sorts them
// oldest first.
func (idx *Index) checkAppliances() error {
	for i, e := range idx.Appliances {
		if err := e.check(); err != nil {
			return fmt.Errorf("channel index, appliance %d: %w", i+1, err)
		}
	}
	slices.SortFunc(idx.Appliances, func(a, b ApplianceEntry) int { return mustVersion(a.Version).Compare(mustVersion(b.Version)) })
	// 1.2 and 1.2.0 are one version.
	for i := 1; i < len(idx.Appliances); i++ {
		if a, b := idx.Appliances[i-1].Version, idx.Appliances[i].Version; mustVersion(a).Compare(mustVersion(b)) == 0 {
			return fmt.Errorf("channel index: carto-appliance %s is listed twice (as %s and %s)", b, a, b)
		}
	}
	return nil
}

// Appliance is the newest carto-appliance the channel offers for
// platform, if it is at least min.
func (idx *Index) Appliance(min Version, platform string) (ApplianceEntry, bool) {
	for _, e := range slices.Backward(idx.Appliances) {
		if _, ok := e.Binaries[platform]; !ok {
			continue
		}
		if mustVersion(e.Version).Compare(min) < 0 {
			return ApplianceEntry{}, false
		}
		return e, true
	}
	return ApplianceEntry{}, false
}

// FetchAppliance downloads e's binary for platform from channel under base
// (https) and checks it against the index's size and digest: e must come
// from an index FetchIndex verified.
func FetchAppliance(ctx context.Context, c *http.Client, base *url.URL, channel string, e ApplianceEntry, platform string) ([]byte, error) {
	if err := checkSource(base, channel); err != nil {
		return nil, err
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	want, ok := e.Binaries[platform]
	if !ok {
		return nil, fmt.Errorf("carto-appliance %s has no binary for %s in channel %s", e.Version, platform, channel)
	}
	u := base.JoinPath(channel, AppliancePath(e.Version, platform))
	b, err := get(ctx, c, u, want.Size)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != want.Size {
		return nil, fmt.Errorf("%s: %d bytes, the channel's index says %d: the download was cut or the file replaced", urls.Redact(u), len(b), want.Size)
	}
	if got := bytesDigest(b); got != want.Digest {
		return nil, fmt.Errorf("%w: %s has digest %s, the channel's signed index says %s: the file was replaced or corrupted", ErrUntrusted, urls.Redact(u), got, want.Digest)
	}
	return b, nil
}

// PublishAppliance writes carto-appliance version's binaries (by
// platform) into the channel directory root/channel, lists them in the
// index and re-signs it (release team tooling: cmd/carto-release). As for
// a release, a version published again must have the same binaries.
func PublishAppliance(root, channel, version string, binaries map[string][]byte, keyName string, key ed25519.PrivateKey, now time.Time) (ApplianceEntry, error) {
	e := ApplianceEntry{Version: version, Published: now.UTC(), Binaries: map[string]ApplianceBinary{}}
	for p, b := range binaries {
		e.Binaries[p] = ApplianceBinary{Digest: bytesDigest(b), Size: int64(len(b))}
	}
	if err := e.check(); err != nil {
		return ApplianceEntry{}, fmt.Errorf("publishing: %w", err)
	}
	chDir := filepath.Join(root, channel)
	err := updateIndex(root, channel, keyName, key, now, func(idx *Index) error {
		i := slices.IndexFunc(idx.Appliances, func(o ApplianceEntry) bool { return o.Version == version })
		if i >= 0 {
			if !maps.Equal(idx.Appliances[i].Binaries, e.Binaries) {
				return fmt.Errorf("channel %s already lists carto-appliance %s with other binaries: a published version never changes; publish a new one", channel, version)
			}
			e.Published = idx.Appliances[i].Published
			idx.Appliances[i] = e
		} else {
			idx.Appliances = append(idx.Appliances, e)
		}
		// The binaries are in place before the index that lists them.
		for _, p := range slices.Sorted(maps.Keys(binaries)) {
			path := filepath.Join(chDir, filepath.FromSlash(AppliancePath(version, p)))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := writePublic(path, binaries[p]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return ApplianceEntry{}, fmt.Errorf("publishing carto-appliance %s: %w", version, err)
	}
	return e, nil
}

// FileDigest is the sha256 digest of a file's bytes, as an index lists it.
func FileDigest(b []byte) string { return bytesDigest(b) }

// ParsePlatform checks a platform's name (os_arch).
func ParsePlatform(s string) error {
	if !platformName.MatchString(s) {
		return fmt.Errorf("platform %q is not os_arch, e.g. linux_amd64", s)
	}
	return nil
}
