// Package binswap replaces a running program's binary: the new one is
// written beside it, checked to start and say the expected version, and
// swapped in by one rename (a running process keeps the file it started
// from; a stop anywhere leaves the old binary or the new one, whole); the
// old one can be kept elsewhere, and downloads a stopped swap left are
// found by their prefix. It knows nothing of where binaries come from.
package binswap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
)

// stagePrefix names a new binary beside the one it replaces until the
// swap.
const stagePrefix = ".carto-appliance.update-"

// Stage writes b as an executable file beside exe (so that the swap is
// one rename) and returns its path.
func Stage(exe string, b []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(exe), stagePrefix+"*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o755)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// CheckVersion runs `bin version`: it must start on this machine and
// print "carto-appliance <want>" first.
func CheckVersion(ctx context.Context, bin, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "version")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("the new carto-appliance %s does not run here (%v): %s", want, err, firstLine(out.String()))
	}
	if got := firstLine(out.String()); got != "carto-appliance "+want {
		return fmt.Errorf("the new binary says %q, and it is listed as carto-appliance %s", got, want)
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// Keep copies exe to dst (0755), removing the other copies dst's
// directory holds under dst's prefix (one kept: the last replaced).
func Keep(exe, dst, prefix string) error {
	b, err := os.ReadFile(exe)
	if err != nil {
		return fmt.Errorf("keeping the current binary: %w", err)
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keeping the current binary: %w", err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, prefix+"*"))
	if err := atomicfile.Write(dst, b, 0o755); err != nil {
		return fmt.Errorf("keeping the current binary: %w", err)
	}
	for _, o := range old {
		if o != dst {
			os.Remove(o)
		}
	}
	if err := os.Remove(dst + atomicfile.PrevSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Swap renames staged over exe, durably.
func Swap(staged, exe string) error {
	if err := os.Rename(staged, exe); err != nil {
		return fmt.Errorf("replacing %s: %w", exe, err)
	}
	return atomicfile.SyncDir(filepath.Dir(exe))
}

// Leftovers are the staged binaries beside exe older than age (a swap
// under way is younger): a stopped swap's, never renamed into place.
func Leftovers(exe string, age time.Duration) []string {
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(exe), stagePrefix+"*"))
	var old []string
	for _, f := range left {
		if fi, err := os.Stat(f); err == nil && time.Since(fi.ModTime()) >= age {
			old = append(old, f)
		}
	}
	return old
}
