package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cartodb/carto-appliance/config"
)

const convergeLockName = "converge.lock"

// lockConverge serialises everything that changes the stack (install,
// config apply, proxy changes, and the supervisor's revives): two of them
// at once would stop and start the same containers under each other. It
// waits for the lock until ctx ends.
func lockConverge(ctx context.Context, paths config.Paths) (func(), error) {
	for {
		unlock, ok, err := tryLockConverge(paths)
		if err != nil || ok {
			return unlock, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for another change of the stack to finish: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TryLockConverge takes the converge lock if it is free; ok is false when
// another change of the stack is under way.
func TryLockConverge(paths config.Paths) (unlock func(), ok bool, err error) {
	return tryLockConverge(paths.WithDefaults())
}

func tryLockConverge(paths config.Paths) (func(), bool, error) {
	return tryLockFile(paths, convergeLockName, "the converge lock")
}

// tryLockFile takes the lock file name of the state dir (what names it in
// errors) if no process holds it; ok is false when one does. A killed
// holder lets it go with its file descriptor.
func tryLockFile(paths config.Paths, name, what string) (func(), bool, error) {
	if err := os.MkdirAll(paths.StateDir, 0o700); err != nil {
		return nil, false, fmt.Errorf("creating the state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(paths.StateDir, name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("opening %s: %w", what, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if err == syscall.EWOULDBLOCK {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("taking %s: %w", what, err)
	}
	return func() { f.Close() }, true, nil
}

// inputsStamp identifies what a plan reads from disk, by name, inode, size
// and modification time (atomic writes replace a file: a new inode even
// when the size and a coarse clock's time are the same): the
// state (the pinned release), the settings, the customer package and the
// certificates. A plan is made before its run waits for the converge
// lock; when the stamp changed by the time the lock is held, another
// change committed meanwhile (e.g. the upgrade the agent continued after
// a self-update) and the plan is made again: run as it was, it would put
// back what that change replaced.
func inputsStamp(paths config.Paths) (string, error) {
	var b strings.Builder
	stat := func(path string) error {
		fi, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(&b, "|%s:-", path)
			return nil
		case err != nil:
			return fmt.Errorf("looking at %s: %w", path, err)
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		fmt.Fprintf(&b, "|%s:%d:%d:%d", path, ino, fi.Size(), fi.ModTime().UnixNano())
		return nil
	}
	files := []string{
		filepath.Join(paths.StateDir, stateFileName),
		paths.File(config.ConfigFileName),
		paths.File(config.CustomerEnvFileName),
		paths.KeyFile(),
	}
	for _, dir := range []string{filepath.Join(paths.ConfigDir, config.CertsDirName), paths.CADir()} {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("looking at %s: %w", dir, err)
		}
		for _, e := range entries {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	for _, f := range files {
		if err := stat(f); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}
