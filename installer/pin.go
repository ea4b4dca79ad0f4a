package installer

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/templates"
)

// releasesDirName holds, in the state dir, the releases this node ran:
// one directory per release (its manifest and templates as applied).
const releasesDirName = "releases"

// PinnedRelease is the CARTO release installed on this node: what every
// converge renders, whatever release the binary on disk carries. Only a
// first install and an upgrade change it.
type PinnedRelease struct {
	Version string `json:"version"`
	// Digest identifies the release's files (release.Digest).
	Digest string `json:"digest"`
	// Dir is the release's directory, relative to the state dir.
	Dir      string    `json:"dir"`
	PinnedAt time.Time `json:"pinned_at"`
}

// ErrReleaseNotPinned is returned when an installed node has no recorded
// release and the binary carries another version than the one installed:
// rendering the binary's would upgrade (or downgrade) CARTO unasked.
var ErrReleaseNotPinned = errors.New("the installed CARTO release is not recorded")

// installedRelease is the release a converge of an installed node renders,
// and the pin to record when there is none yet. A node installed by an
// appliance that did not pin its release is pinned to the binary's
// release when it is the version installed; any other version is refused.
func installedRelease(paths config.Paths, st State) (*release.Release, *PinnedRelease, error) {
	if st.Release != nil {
		r, err := release.LoadDir(filepath.Join(paths.StateDir, st.Release.Dir), st.Release.Digest)
		if err != nil {
			return nil, nil, fmt.Errorf("loading the installed CARTO release %s: %w", st.Release.Version, err)
		}
		return r, nil, nil
	}
	carried, err := templates.Default()
	if err != nil {
		return nil, nil, err
	}
	if st.Version != "" && st.Version != carried.Manifest.Version {
		return nil, nil, fmt.Errorf("%w: CARTO %s is installed and this carto-appliance carries %s; it will not change the version by itself: run `carto-appliance upgrade`, or put back the carto-appliance binary that installed %s",
			ErrReleaseNotPinned, st.Version, carried.Manifest.Version, st.Version)
	}
	return carried, newPin(carried), nil
}

// currentRelease is installedRelease for read-only workflows (env render,
// proxy test): the release the next converge would render.
func currentRelease(paths config.Paths) (*release.Release, error) {
	st, err := loadState(paths.StateDir)
	if err != nil {
		return nil, err
	}
	r, _, err := installedRelease(paths, st)
	return r, err
}

// newPin is the record of pinning r, not yet written.
func newPin(r *release.Release) *PinnedRelease {
	d := r.Digest()
	return &PinnedRelease{
		Version: r.Manifest.Version,
		Digest:  d,
		// The digest in the name: two builds of one version never share
		// a directory.
		Dir: filepath.Join(releasesDirName, r.Manifest.Version+"-"+d[len("sha256:"):len("sha256:")+12]),
	}
}

// savePin writes the pinned release's files into the state dir, once:
// a directory already there holds the same files (its name carries
// their digest) and is checked rather than written.
func savePin(paths config.Paths, r *release.Release, pin *PinnedRelease) error {
	dir := filepath.Join(paths.StateDir, pin.Dir)
	if _, err := release.LoadDir(dir, pin.Digest); err == nil {
		return nil
	}
	if err := r.WriteDir(dir); err != nil {
		return fmt.Errorf("recording the installed CARTO release: %w", err)
	}
	return nil
}

// ReleaseStatus is the release part of Status.
type ReleaseStatus struct {
	// Installed is the pinned release's version.
	Installed string `json:"installed"`
	// Carried is the version the running binary carries.
	Carried string `json:"carried"`
	// Note says what to do when they differ.
	Note string `json:"note,omitempty"`
}

func releaseStatus(st State) *ReleaseStatus {
	rs := &ReleaseStatus{Installed: st.Version}
	if st.Release != nil {
		rs.Installed = st.Release.Version
	}
	carried, err := templates.Default()
	if err != nil {
		rs.Note = err.Error()
		return rs
	}
	rs.Carried = carried.Manifest.Version
	// Only a newer release is worth a note: an older one is what the
	// binary was built with before the node upgraded past it.
	if rs.Installed != "" && rs.Installed != rs.Carried && newer(rs.Carried, rs.Installed) {
		rs.Note = fmt.Sprintf("this binary carries CARTO %s, installed is %s: run `carto-appliance upgrade` to move to %s", rs.Carried, rs.Installed, rs.Carried)
	}
	return rs
}

// newer says whether version a is newer than b (false when either is not
// a version).
func newer(a, b string) bool {
	va, err := release.ParseVersion(a)
	if err != nil {
		return false
	}
	vb, err := release.ParseVersion(b)
	return err == nil && va.Compare(vb) > 0
}
