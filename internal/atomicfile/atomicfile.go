// Package atomicfile writes files so that a crash or power loss leaves either
// the old content or the new one, never a mix, and keeps the previous
// version of a changed file next to it (SPEC §3).
package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// PrevSuffix is appended to a file's path to name the copy of its previous
// content kept when Write changes it.
const PrevSuffix = ".prev"

// Write replaces the file at path with data, atomically: it writes a
// temporary file in the same directory with mode perm (set explicitly, so
// the umask does not matter), fsyncs it, renames it over path and fsyncs the
// directory.
//
// When path already holds different content, that content is first kept as
// path+".prev" (mode perm, written the same way), replacing an older .prev.
// When path already holds exactly data, Write changes nothing: the file's
// content and mtime stay as they are; only a mode other than perm is
// corrected, because a secret must not stay world-readable.
//
// On error no temporary file is left and path keeps its previous content,
// except when only the final directory fsync failed: then the new content is
// in place but may not survive a power loss.
func Write(path string, data []byte, perm os.FileMode) error {
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if bytes.Equal(old, data) {
			return fixMode(path, perm)
		}
		if err := replace(path+PrevSuffix, old, perm); err != nil {
			return fmt.Errorf("keeping the previous version of %s: %w", path, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		// A new file: nothing to keep.
	default:
		return fmt.Errorf("writing %s: reading its current content: %w", path, err)
	}
	if err := replace(path, data, perm); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// fixMode sets path's permission bits to perm if they differ.
func fixMode(path string, perm os.FileMode) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if fi.Mode().Perm() == perm.Perm() {
		return nil
	}
	if err := os.Chmod(path, perm); err != nil {
		return fmt.Errorf("writing %s: setting mode %04o: %w", path, perm.Perm(), err)
	}
	return nil
}

// replace does the temp file + fsync + rename + directory fsync sequence.
// Its errors do not repeat path; callers add it.
func replace(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating a temporary file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close() // may already be closed; the first error matters
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp uses 0600 minus the umask; chmod explicitly so the result
	// is perm whatever the umask.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("setting mode %04o on %s: %w", perm.Perm(), tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming the temporary file into place: %w", err)
	}
	// The rename is durable only once the directory entry is on disk.
	if err := SyncDir(dir); err != nil {
		return err
	}
	return nil
}

// SyncDir makes the entries of dir (a rename into it) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory %s to sync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
