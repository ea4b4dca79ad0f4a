package release

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/boundedread"
)

// The files of a release directory.
const (
	ManifestFile    = "manifest.yaml"
	ComposeFile     = "docker-compose.yml"
	EnvTemplateFile = "env.tpl"
)

// fileNames in digest order.
var fileNames = []string{ManifestFile, ComposeFile, EnvTemplateFile}

// Load reads and checks the release in fsys (the binary's embedded files,
// or a release directory through os.DirFS).
func Load(fsys fs.FS) (*Release, error) {
	return load(func(name string) ([]byte, error) { return fs.ReadFile(fsys, name) })
}

func load(read func(name string) ([]byte, error)) (*Release, error) {
	var got [3][]byte
	for i, name := range fileNames {
		b, err := read(name)
		if err != nil {
			return nil, fmt.Errorf("reading the release's %s: %w", name, err)
		}
		got[i] = b
	}
	m, err := ParseManifest(got[0])
	if err != nil {
		return nil, err
	}
	return &Release{Manifest: *m, RawManifest: got[0], Compose: got[1], EnvTemplate: got[2]}, nil
}

// LoadDir reads the release in dir and checks that it is the one whose
// digest is want: a pinned release that changed on disk is refused, not
// run.
func LoadDir(dir, want string) (*Release, error) {
	// Release files are a few KiB; a device or a FIFO put there must not
	// hang or exhaust the reader.
	r, err := load(func(name string) ([]byte, error) {
		return boundedread.ReadFile(filepath.Join(dir, name), boundedread.Release)
	})
	if err != nil {
		return nil, fmt.Errorf("the release in %s: %w", dir, err)
	}
	if got := r.Digest(); want != "" && got != want {
		return nil, fmt.Errorf("the release in %s is not the one recorded (digest %s, recorded %s): its files were changed or damaged; restore them from a backup or reinstall", dir, got, want)
	}
	return r, nil
}

// Digest identifies the release's contents: sha256 over each file's name,
// length and bytes, in a fixed order.
func (r *Release) Digest() string {
	h := sha256.New()
	for i, b := range [][]byte{r.RawManifest, r.Compose, r.EnvTemplate} {
		fmt.Fprintf(h, "%s %d\n", fileNames[i], len(b))
		h.Write(b)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// WriteDir writes the release's files into dir, which must not exist yet:
// they are written into a sibling first and renamed into place, so that
// dir, once there, is whole.
func (r *Release) WriteDir(dir string) error {
	if r.RawManifest == nil {
		return errors.New("writing a release: it has no manifest file (a release built in memory cannot be written)")
	}
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("writing the release to %s: %w", dir, fs.ErrExist)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("writing the release: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("writing the release: %w", err)
	}
	defer os.RemoveAll(tmp) // nothing left once renamed
	for i, b := range [][]byte{r.RawManifest, r.Compose, r.EnvTemplate} {
		if err := atomicfile.Write(filepath.Join(tmp, fileNames[i]), b, 0o600); err != nil {
			return fmt.Errorf("writing the release: %w", err)
		}
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		return fmt.Errorf("writing the release: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("writing the release to %s: %w", dir, err)
	}
	return nil
}
