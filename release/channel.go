package release

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/internal/urls"
)

// A channel (stable, …) is static files under a base URL, served over
// https:
//
//	<base>/<channel>/index.json        Index as JSON
//	<base>/<channel>/index.json.sig    its signature file (IndexContext)
//	<base>/<channel>/<version>/        a release: manifest.yaml,
//	                                   docker-compose.yml, env.tpl and
//	                                   release.sig (ReleaseContext)
//
// Publish writes this layout into a directory that any static HTTPS
// server can host.
const (
	IndexFile    = "index.json"
	IndexSigFile = "index.json.sig"
)

// IndexFormat is the index's format_version this package writes and
// reads; a later one is refused as written for a newer carto-appliance.
const IndexFormat = 1

// maxIndex bounds a channel index (about 200 bytes a release).
const maxIndex = 4 << 20

// Index lists a channel's releases. It is signed (index.json.sig) so that
// a mirror, a proxy or anyone who can write to the host cannot add a
// version, hide one (the versions and their min_upgrade_from decide the
// upgrade path), or point a version at another release's files: each
// entry's digest binds the version to exactly one signed release. The
// signature cannot stop a replay of an older signed index (a frozen
// channel); Updated lets a caller that remembers the last index it saw
// refuse an older one.
type Index struct {
	FormatVersion int          `json:"format_version"`
	Channel       string       `json:"channel"`
	Updated       time.Time    `json:"updated"`
	Releases      []IndexEntry `json:"releases"` // oldest first
	// Appliances are the carto-appliance binaries the channel offers
	// (appliance.go), oldest first.
	Appliances []ApplianceEntry `json:"appliances,omitempty"`
}

// IndexEntry is one release of a channel: its manifest's versions, and
// the digest (Release.Digest) its files must have.
type IndexEntry struct {
	Version             string    `json:"version"`
	Digest              string    `json:"digest"`
	MinUpgradeFrom      string    `json:"min_upgrade_from"`
	MinApplianceVersion string    `json:"min_appliance_version,omitempty"`
	Published           time.Time `json:"published"`
}

// ErrNotInChannel is wrapped when a version asked for is not in the
// channel's index.
var ErrNotInChannel = errors.New("not in the channel")

var channelName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

func checkChannel(channel string) error {
	if !channelName.MatchString(channel) {
		return fmt.Errorf("channel %q: a channel's name is lowercase letters, digits and '-', e.g. stable", channel)
	}
	return nil
}

// canonicalVersion checks that s is a version written as Version.String
// writes it: it names a directory of the channel, so one version has one
// spelling.
func canonicalVersion(s string) error {
	v, err := ParseVersion(s)
	if err != nil {
		return err
	}
	if v.String() != s {
		return fmt.Errorf("version %q: a channel writes it %s", s, v)
	}
	return nil
}

// ParseIndex decodes and validates a channel index, releases sorted oldest
// first. Unknown fields are ignored: every appliance in the field reads the
// same index, and a field added for newer ones must not lock older ones
// out; a change older ones would misread raises format_version.
func ParseIndex(data []byte) (*Index, error) {
	var idx Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("not a channel index (not its JSON: %v)", err)
	}
	switch {
	case idx.FormatVersion == 0:
		return nil, errors.New("not a channel index: no format_version")
	case idx.FormatVersion > IndexFormat:
		return nil, fmt.Errorf("a channel index of format_version %d, for a newer carto-appliance (this one reads %d): update carto-appliance", idx.FormatVersion, IndexFormat)
	case idx.FormatVersion < 0:
		return nil, fmt.Errorf("not a channel index: format_version %d", idx.FormatVersion)
	}
	if err := checkChannel(idx.Channel); err != nil {
		return nil, fmt.Errorf("channel index: %w", err)
	}
	for i, e := range idx.Releases {
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("channel index, release %d: %w", i+1, err)
		}
	}
	slices.SortFunc(idx.Releases, func(a, b IndexEntry) int { return mustVersion(a.Version).Compare(mustVersion(b.Version)) })
	// 2026.1 and 2026.1.0 are one version.
	for i := 1; i < len(idx.Releases); i++ {
		if a, b := idx.Releases[i-1].Version, idx.Releases[i].Version; mustVersion(a).Compare(mustVersion(b)) == 0 {
			if a == b {
				return nil, fmt.Errorf("channel index: version %s is listed twice", b)
			}
			return nil, fmt.Errorf("channel index: version %s is listed twice (as %s and %s)", b, a, b)
		}
	}
	if err := idx.checkAppliances(); err != nil {
		return nil, err
	}
	return &idx, nil
}

func (e IndexEntry) check() error {
	if err := canonicalVersion(e.Version); err != nil {
		return err
	}
	if !ValidDigest(e.Digest) {
		return fmt.Errorf("version %s: digest %q is not sha256: and 64 hex digits", e.Version, e.Digest)
	}
	from, err := ParseVersion(e.MinUpgradeFrom)
	if err != nil {
		return fmt.Errorf("version %s: min_upgrade_from: %w", e.Version, err)
	}
	if from.Compare(mustVersion(e.Version)) > 0 {
		return fmt.Errorf("version %s: min_upgrade_from %s is newer than the release", e.Version, e.MinUpgradeFrom)
	}
	if e.MinApplianceVersion != "" {
		if _, err := ParseVersion(e.MinApplianceVersion); err != nil {
			return fmt.Errorf("version %s: min_appliance_version: %w", e.Version, err)
		}
	}
	return nil
}

// mustVersion is for versions already checked.
func mustVersion(s string) Version {
	v, _ := ParseVersion(s)
	return v
}

// Entry is the index's entry for version.
func (idx *Index) Entry(version string) (IndexEntry, bool) {
	v, err := ParseVersion(version)
	if err != nil {
		return IndexEntry{}, false
	}
	for _, e := range idx.Releases {
		if mustVersion(e.Version).Compare(v) == 0 {
			return e, true
		}
	}
	return IndexEntry{}, false
}

func (idx *Index) versions() string {
	if len(idx.Releases) == 0 {
		return "no release"
	}
	vs := make([]string, len(idx.Releases))
	for i, e := range idx.Releases {
		vs[i] = e.Version
	}
	return strings.Join(vs, ", ")
}

// FetchIndex fetches channel's index under base (https), checks its
// signature and that it is this channel's. Errors name the URL and, when
// c's transport has one, the proxy it went through.
func FetchIndex(ctx context.Context, c *http.Client, base *url.URL, channel string) (*Index, error) {
	if err := checkSource(base, channel); err != nil {
		return nil, err
	}
	u := base.JoinPath(channel, IndexFile)
	data, err := get(ctx, c, u, maxIndex)
	if err != nil {
		return nil, err
	}
	idx, err := ParseIndex(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", urls.Redact(u), err)
	}
	su := base.JoinPath(channel, IndexSigFile)
	sig, err := get(ctx, c, su, maxSig)
	if err != nil {
		return nil, unsigned(err, "the channel's index")
	}
	if err := VerifyIndex(data, sig); err != nil {
		return nil, fmt.Errorf("%s (signature %s): %w", urls.Redact(u), urls.Redact(su), err)
	}
	if idx.Channel != channel {
		return nil, fmt.Errorf("%s is the index of channel %q, not of %q: the channel's files were mixed up", urls.Redact(u), idx.Channel, channel)
	}
	return idx, nil
}

// FetchRelease fetches version from channel under base (https): the
// channel's index, then the release's files, checked against the release
// keys and the index entry's digest.
func FetchRelease(ctx context.Context, c *http.Client, base *url.URL, channel, version string) (*Release, error) {
	idx, err := FetchIndex(ctx, c, base, channel)
	if err != nil {
		return nil, err
	}
	e, ok := idx.Entry(version)
	if !ok {
		return nil, fmt.Errorf("version %s is %w %s (%s lists %s)", version, ErrNotInChannel, channel, urls.Redact(base.JoinPath(channel, IndexFile)), idx.versions())
	}
	return FetchEntry(ctx, c, base, channel, e)
}

// FetchEntry fetches the release e of a channel index already fetched
// (FetchIndex), as FetchRelease does.
func FetchEntry(ctx context.Context, c *http.Client, base *url.URL, channel string, e IndexEntry) (*Release, error) {
	if err := checkSource(base, channel); err != nil {
		return nil, err
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	dir := base.JoinPath(channel, e.Version) // canonical: digits and dots
	files := map[string][]byte{}
	for _, name := range append(slices.Clone(fileNames), SigFile) {
		limit := int64(boundedread.Release)
		if name == SigFile {
			limit = maxSig
		}
		b, err := get(ctx, c, dir.JoinPath(name), limit)
		if err != nil && name == SigFile {
			return nil, unsigned(err, "the release")
		}
		if err != nil {
			return nil, err
		}
		files[name] = b
	}
	where := urls.Redact(dir) + "/"
	r, err := load(func(name string) ([]byte, error) { return files[name], nil })
	if err != nil {
		return nil, fmt.Errorf("the release at %s: %w", where, err)
	}
	if err := Verify(r, files[SigFile]); err != nil {
		return nil, fmt.Errorf("the release at %s: %w", where, err)
	}
	if got := r.Digest(); got != e.Digest {
		return nil, fmt.Errorf("the release at %s is not the one the channel's index lists for %s (digest %s, listed %s): the channel's files were mixed up or replaced", where, e.Version, got, e.Digest)
	}
	if r.Manifest.Version != e.Version {
		return nil, fmt.Errorf("the release at %s is version %s, listed as %s", where, r.Manifest.Version, e.Version)
	}
	return r, nil
}

// checkSource checks where a channel is read from.
func checkSource(base *url.URL, channel string) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	return checkBase(base)
}

// checkBase refuses a channel base URL that is not https: the signatures
// protect the content, https keeps what is fetched private and the
// fetching harder to stall.
func checkBase(base *url.URL) error {
	if base == nil || base.Scheme != "https" || base.Host == "" {
		s := "none"
		if base != nil {
			s = urls.Redact(base)
		}
		return fmt.Errorf("the release channel URL %s is not https://HOST/…: channels are fetched over https only", s)
	}
	return nil
}

// get fetches u, at most limit bytes, following https redirects only.
func get(ctx context.Context, c *http.Client, u *url.URL, limit int64) ([]byte, error) {
	if c == nil {
		c = http.DefaultClient
	}
	client := *c
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.URL.Scheme != "https" || len(via) >= 5 {
			return fmt.Errorf("redirected to %s: a release channel must stay on https", urls.Redact(r.URL))
		}
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", urls.Redact(u), err)
	}
	route := via(&client, req)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s%s: %w", urls.Redact(u), route, urls.Cause(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{fmt.Errorf("fetching %s%s: the server answered %s", urls.Redact(u), route, resp.Status), resp.StatusCode}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("fetching %s%s: %w", urls.Redact(u), route, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("fetching %s: larger than %d KiB, far more than a release channel's file: not one", urls.Redact(u), limit>>10)
	}
	return b, nil
}

// statusError is a server's answer other than 200.
type statusError struct {
	error
	code int
}

func (e *statusError) Unwrap() error { return e.error }

// unsigned says a signature file the server does not have, for what it
// signs.
func unsigned(err error, what string) error {
	var se *statusError
	if errors.As(err, &se) && (se.code == http.StatusNotFound || se.code == http.StatusGone) {
		return fmt.Errorf("%w: %s is unsigned (%v): the channel was not published by carto-release, or not whole", ErrUntrusted, what, err)
	}
	return err
}

// via says how c reaches req's host when its transport chooses a proxy:
// a failure through a proxy is often the proxy's.
func via(c *http.Client, req *http.Request) string {
	rt := c.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	tr, ok := rt.(*http.Transport)
	if !ok || tr.Proxy == nil {
		return ""
	}
	p, err := tr.Proxy(req)
	switch {
	case err != nil:
		return fmt.Sprintf(" (choosing the proxy: %v)", err)
	case p == nil:
		return " (direct: no proxy for this host)"
	}
	return " through the proxy " + urls.Redact(p)
}
