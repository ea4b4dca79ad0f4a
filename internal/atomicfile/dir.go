package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteDir makes dir hold exactly files (name to content), each written
// as Write does (mode perm) but keeping no previous version, and removes
// every other entry: a .prev, a temporary file a crash left, a file an
// older version wrote. It is for directories whose every file is read as
// a whole by someone else: a trust directory (SSL_CERT_DIR trusts every
// file in it) or a directory mounted into a container. dir is created
// with mode 0700 when missing. It reports whether anything changed.
//
// New content is in place before stale files go, so a reader never finds
// the directory without the current files.
func WriteDir(dir string, files map[string][]byte, perm os.FileMode) (changed bool, err error) {
	for name := range files {
		if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
			return false, fmt.Errorf("writing %s: %q is not a file name", dir, name)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("writing %s: %w", dir, err)
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		old, err := os.ReadFile(path)
		switch {
		case err == nil && bytes.Equal(old, data):
			fi, err := os.Lstat(path)
			if err != nil {
				return changed, fmt.Errorf("writing %s: %w", path, err)
			}
			if fi.Mode().IsRegular() {
				if fi.Mode().Perm() != perm.Perm() {
					changed = true
				}
				if err := fixMode(path, perm); err != nil {
					return changed, err
				}
				continue
			}
			// A symlink or other non-file with the right content: replace
			// it with a file of our own.
		case err == nil, errors.Is(err, fs.ErrNotExist):
		default:
			// A directory in the way, say: replace below, after removing it.
			if rmErr := os.RemoveAll(path); rmErr != nil {
				return changed, fmt.Errorf("writing %s: %w", path, rmErr)
			}
		}
		if err := replace(path, data, perm); err != nil {
			return changed, fmt.Errorf("writing %s: %w", path, err)
		}
		changed = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return changed, fmt.Errorf("listing %s: %w", dir, err)
	}
	removed := false
	for _, e := range ents {
		if _, keep := files[e.Name()]; keep {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return changed, fmt.Errorf("removing the stale %s: %w", filepath.Join(dir, e.Name()), err)
		}
		changed, removed = true, true
	}
	if removed {
		if err := SyncDir(dir); err != nil {
			return changed, err
		}
	}
	return changed, nil
}
