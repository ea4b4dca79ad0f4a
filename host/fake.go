package host

import (
	"context"
	"sync"
)

// FakeEngine is an Engine in memory, for unit tests of the workflows: it
// records what was asked and changes nothing on the machine.
type FakeEngine struct {
	mu         sync.Mutex
	NoSystemd  bool              // Systemd() answers false
	DropIn, CA []byte            // what SetProxy was last given
	Restarts   int               // Restart calls
	Installed  map[string]string // InstallDocker's osRelease
	Err        error             // returned by every change
}

var _ Engine = (*FakeEngine)(nil)

func (f *FakeEngine) Systemd() bool { return !f.NoSystemd }

func (f *FakeEngine) SetProxy(dropIn, ca []byte) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return false, f.Err
	}
	changed := string(f.DropIn) != string(dropIn) || string(f.CA) != string(ca)
	f.DropIn, f.CA = dropIn, ca
	return changed, nil
}

func (f *FakeEngine) Restart(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Restarts++
	return f.Err
}

func (f *FakeEngine) InstallDocker(_ context.Context, osRelease map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Installed = osRelease
	return f.Err
}
