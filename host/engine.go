package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/proxy"
)

// Engine is what the appliance changes of the Docker engine's own
// settings on the host (not of what runs in it: that is stack's).
type Engine interface {
	// Systemd reports whether systemd manages this machine (and so the
	// Docker engine, as docker.service).
	Systemd() bool
	// SetProxy makes the docker.service proxy drop-in hold dropIn and the
	// engine's trust dir hold exactly ca; nil removes either. It reports
	// whether anything changed: the engine reads both once, at start.
	SetProxy(dropIn, ca []byte) (changed bool, err error)
	// Restart reloads systemd's units and restarts the engine (and with it
	// every container).
	Restart(ctx context.Context) error
	// InstallDocker installs the Docker engine from the distribution's
	// packages (osRelease: /etc/os-release's fields) and starts it.
	InstallDocker(ctx context.Context, osRelease map[string]string) error
}

// Local is this machine.
type Local struct{}

var _ Engine = Local{}

// Systemd reports whether systemd manages this machine.
func (Local) Systemd() bool { return SystemdRunning() }

// SystemdRunning reports whether systemd manages this machine (and so the
// Docker engine, as docker.service).
func SystemdRunning() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// ProxyDropIn is where the engine's proxy settings are.
var ProxyDropIn = filepath.Join(proxy.DockerDropInDir, proxy.DockerDropInName)

// SetProxy writes the engine's proxy drop-in and trust dir.
func (Local) SetProxy(dropIn, ca []byte) (bool, error) {
	have, _ := os.ReadFile(ProxyDropIn)
	dropInChanged := string(have) != string(dropIn) || (have == nil) != (dropIn == nil)
	if dropInChanged {
		if err := syncFile(ProxyDropIn, dropIn, 0o644); err != nil {
			return false, fmt.Errorf("writing the Docker engine's proxy drop-in: %w", err)
		}
	}
	caChanged, err := syncTrustDir(proxy.DockerCADir, ca)
	if err != nil {
		return dropInChanged, fmt.Errorf("installing the proxy CA for the Docker engine: %w", err)
	}
	return dropInChanged || caChanged, nil
}

// Restart runs systemctl daemon-reload and restart docker.service.
func (Local) Restart(ctx context.Context) error {
	for _, args := range [][]string{{"daemon-reload"}, {"restart", "docker.service"}} {
		if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("systemctl %s: %v: %s (see journalctl -u docker)", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// syncTrustDir makes the engine's trust directory dir (in its
// SSL_CERT_DIR) hold exactly the proxy CA, or removes it when there is
// none. The engine trusts every file there, so a replaced CA must not stay
// as a .prev, nor any other file. It reports whether anything changed:
// the engine reads the directory once, at start, and only a restart makes
// it forget a CA.
func syncTrustDir(dir string, ca []byte) (bool, error) {
	if ca == nil {
		if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return true, os.RemoveAll(dir)
	}
	return atomicfile.WriteDir(dir, map[string][]byte{proxy.CAFileName: ca}, 0o644)
}

// syncFile makes path hold data, or removes it when data is nil.
func syncFile(path string, data []byte, perm os.FileMode) error {
	if data == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, data, perm)
}
