package release

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/boundedread"
)

// Publish writes r, signed with key (named keyName), into the channel
// directory root/channel (the layout FetchIndex reads, for a static HTTPS
// server to host), lists it in the channel's index and re-signs the
// index (release team tooling: cmd/carto-release). A published release
// never changes: publishing a version again with other content is
// refused; with the same content it only re-signs. Files are world
// readable (a web server serves them); nothing in them is secret.
//
// index.json and index.json.sig are written one after the other: a client
// fetching between the two sees a signature over other content and must
// retry. Publish into a copy and swap it in to avoid that window.
func Publish(root, channel string, r *Release, keyName string, key ed25519.PrivateKey, now time.Time) (IndexEntry, error) {
	if err := checkChannel(channel); err != nil {
		return IndexEntry{}, err
	}
	m := r.Manifest
	if err := canonicalVersion(m.Version); err != nil {
		return IndexEntry{}, fmt.Errorf("publishing: the manifest's %w", err)
	}
	if missing := m.MissingDigests(); len(missing) > 0 {
		return IndexEntry{}, fmt.Errorf("publishing %s: image_digests lacks %v: a channel's release pins every image to its digest", m.Version, missing)
	}
	sig, err := Sign(r, keyName, key)
	if err != nil {
		return IndexEntry{}, fmt.Errorf("publishing %s: %w", m.Version, err)
	}
	entry := IndexEntry{Version: m.Version, Digest: r.Digest(), MinUpgradeFrom: m.MinUpgradeFrom, MinApplianceVersion: m.MinApplianceVersion, Published: now.UTC()}
	err = updateIndex(root, channel, keyName, key, now, func(idx *Index) error {
		i := slices.IndexFunc(idx.Releases, func(e IndexEntry) bool { return e.Version == m.Version })
		if i >= 0 {
			if old := idx.Releases[i]; old.Digest != entry.Digest {
				return fmt.Errorf("channel %s already lists it with other content (digest %s, this one %s): a published release never changes; publish a new version", channel, old.Digest, entry.Digest)
			}
			entry.Published = idx.Releases[i].Published
			idx.Releases[i] = entry
		} else {
			idx.Releases = append(idx.Releases, entry)
		}
		// The release's files are in place before the index that lists
		// them.
		dir := filepath.Join(root, channel, m.Version)
		if err := writeReleaseDir(dir, r); err != nil {
			return err
		}
		return writePublic(filepath.Join(dir, SigFile), sig)
	})
	if err != nil {
		return IndexEntry{}, fmt.Errorf("publishing %s: %w", m.Version, err)
	}
	return entry, nil
}

// updateIndex reads root/channel's index (a new one when there is none),
// lets change add to it (change also writes the files the new entries
// list), then writes the index and its signature.
func updateIndex(root, channel, keyName string, key ed25519.PrivateKey, now time.Time, change func(*Index) error) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	chDir := filepath.Join(root, channel)
	indexPath := filepath.Join(chDir, IndexFile)
	idx := &Index{FormatVersion: IndexFormat, Channel: channel}
	switch b, err := boundedread.ReadFile(indexPath, maxIndex); {
	case err == nil:
		if idx, err = ParseIndex(b); err != nil {
			return fmt.Errorf("the channel's %s: %w", indexPath, err)
		}
		if idx.Channel != channel {
			return fmt.Errorf("%s is the index of channel %q, not of %q", indexPath, idx.Channel, channel)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("reading the channel's index: %w", err)
	}
	if err := change(idx); err != nil {
		return err
	}
	idx.Updated = now.UTC()
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	// What is written is what every client will parse.
	if _, err := ParseIndex(data); err != nil {
		return fmt.Errorf("the new index would be refused: %w", err)
	}
	isig, err := SignIndex(data, keyName, key)
	if err != nil {
		return err
	}
	if err := writePublic(indexPath, data); err != nil {
		return err
	}
	return writePublic(filepath.Join(chDir, IndexSigFile), isig)
}

// writeReleaseDir writes r's files into dir, or checks that the release
// already there is r.
func writeReleaseDir(dir string, r *Release) error {
	if _, err := os.Stat(dir); err == nil {
		there, err := LoadDir(dir, "")
		if err != nil {
			return err
		}
		if there.Digest() != r.Digest() {
			return fmt.Errorf("%s already holds other content (digest %s, this one %s): a published release never changes; publish a new version", dir, there.Digest(), r.Digest())
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	// Written beside and renamed into place: a directory there is whole.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // nothing left once renamed
	for i, b := range [][]byte{r.RawManifest, r.Compose, r.EnvTemplate} {
		if err := writePublic(filepath.Join(tmp, fileNames[i]), b); err != nil {
			return err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// writePublic writes a channel file atomically, world readable, and leaves
// no previous copy for the web server to serve.
func writePublic(path string, b []byte) error {
	if err := atomicfile.Write(path, b, 0o644); err != nil {
		return err
	}
	if err := os.Remove(path + atomicfile.PrevSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
