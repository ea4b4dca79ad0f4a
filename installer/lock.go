package installer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	if err := os.MkdirAll(paths.StateDir, 0o700); err != nil {
		return nil, false, fmt.Errorf("creating the state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(paths.StateDir, convergeLockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("opening the converge lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if err == syscall.EWOULDBLOCK {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("taking the converge lock: %w", err)
	}
	return func() { f.Close() }, true, nil
}
