package installer

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

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/proxy"
	"github.com/cartodb/carto-appliance/stack"
)

// systemdRunning reports whether systemd manages this machine (and so the
// Docker engine, as docker.service).
func systemdRunning() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// configureEngineProxy gives the Docker engine the proxy settings (a
// docker.service drop-in and the proxy CA) and restarts it when the
// operator agrees. It returns notes for the operator.
func configureEngineProxy(ctx context.Context, paths config.Paths, d *desired, confirm func(string) bool) ([]string, error) {
	p := d.cfg.Proxy
	if !systemdRunning() {
		if p.Enabled() {
			return []string{"the Docker engine is not managed by systemd here: give it HTTP_PROXY/HTTPS_PROXY yourself so that it can pull through the proxy"}, nil
		}
		return nil, nil
	}
	dropIn := filepath.Join(proxy.DockerDropInDir, proxy.DockerDropInName)
	wantDropIn := proxy.DockerDropIn(p, strings.Split(d.env.Get("NO_PROXY"), ","))
	var wantCA []byte
	if p.CACert != "" {
		wantCA = d.certs[proxy.CAFileName]
		if wantCA == nil {
			var err error
			if wantCA, err = os.ReadFile(filepath.Join(paths.ConfigDir, config.CertsDirName, p.CACert)); err != nil {
				return nil, fmt.Errorf("reading the proxy CA for the Docker engine: %w", err)
			}
		}
	}
	haveDropIn, _ := os.ReadFile(dropIn)
	dropInChanged := !bytes.Equal(haveDropIn, wantDropIn)
	if dropInChanged {
		if err := syncFile(dropIn, wantDropIn, 0o644); err != nil {
			return nil, fmt.Errorf("writing the Docker engine's proxy drop-in: %w", err)
		}
	}
	caChanged, err := syncTrustDir(proxy.DockerCADir, wantCA)
	if err != nil {
		return nil, fmt.Errorf("installing the proxy CA for the Docker engine: %w", err)
	}
	if !dropInChanged && !caChanged {
		return nil, nil
	}
	reason := fmt.Sprintf("the Docker engine must restart to use the new proxy settings (%s); every container restarts with it", dropIn)
	if confirm == nil || !confirm(reason) {
		return []string{fmt.Sprintf("the Docker engine's proxy settings are in %s and apply at its next restart: systemctl daemon-reload && systemctl restart docker", dropIn)}, nil
	}
	for _, args := range [][]string{{"daemon-reload"}, {"restart", "docker.service"}} {
		if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("systemctl %s: %v: %s (see journalctl -u docker)", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return []string{"restarted the Docker engine with the new proxy settings"}, nil
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

// reconnect replaces eng with a fresh connection, waiting (bounded) for an
// engine that is restarting to answer again.
func reconnect(ctx context.Context, eng *stack.Engine) (*stack.Engine, error) {
	eng.Close()
	deadline := time.Now().Add(90 * time.Second)
	for {
		next, err := stack.Connect(ctx)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return next, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
