package installer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/proxy"
)

// The directories under certs/ that the compose template mounts into the
// services. certs/ itself holds the appliance's copies (with the .prev
// that atomicfile keeps of each) and is mounted nowhere; each of these
// holds exactly the files its services need, rewritten on every commit
// and never with a previous version: a rotated key stays where only root
// on the host reads it.
const (
	// routerMountDir is the router's /etc/nginx/ssl: its certificate and
	// key.
	routerMountDir = "router"
	// appMountDir is /usr/src/certs of the services that call Google Cloud
	// with CARTO's service account: key.json and the proxy CA.
	appMountDir = "app"
	// caMountDir is /usr/src/certs of the other services reading .env:
	// the proxy CA, which NODE_EXTRA_CA_CERTS names, and nothing secret.
	caMountDir = "ca"
)

// mountedFiles is what each mounted directory holds for cfg, by directory
// and file name. read returns a file of certs/ (an error wrapping
// fs.ErrNotExist when it is missing).
func mountedFiles(cfg config.Config, read func(name string) ([]byte, error)) (map[string]map[string][]byte, error) {
	out := map[string]map[string][]byte{routerMountDir: {}, appMountDir: {}, caMountDir: {}}
	key, err := read(config.KeyFileName)
	if err != nil {
		return nil, fmt.Errorf("reading key.json for the services: %w", err)
	}
	out[appMountDir][config.KeyFileName] = key
	if cfg.Proxy.CACert != "" {
		ca, err := read(cfg.Proxy.CACert)
		if err != nil {
			return nil, fmt.Errorf("reading the proxy CA for the services: %w", err)
		}
		out[appMountDir][proxy.CAFileName] = ca
		out[caMountDir][proxy.CAFileName] = ca
	}
	if !cfg.TLS.Offload() {
		// Missing while an ACME certificate is still to come: the router
		// starts once it is there.
		for _, name := range []string{config.ServerCertFile, config.ServerKeyFile} {
			b, err := read(name)
			switch {
			case err == nil:
				out[routerMountDir][name] = b
			case !errors.Is(err, fs.ErrNotExist):
				return nil, fmt.Errorf("reading the router's %s: %w", name, err)
			}
		}
	}
	return out, nil
}

// publishMounts writes the mounted directories from certs/. The router
// sees a renewed certificate at its reload: its directory is mounted, not
// the files, so a file replaced by rename is the new one inside too.
func publishMounts(paths config.Paths, cfg config.Config) error {
	certsDir := filepath.Join(paths.ConfigDir, config.CertsDirName)
	files, err := mountedFiles(cfg, func(name string) ([]byte, error) {
		return os.ReadFile(filepath.Join(certsDir, name))
	})
	if err != nil {
		return err
	}
	for dir, want := range files {
		if _, err := atomicfile.WriteDir(filepath.Join(certsDir, dir), want, 0o600); err != nil {
			return fmt.Errorf("writing the files mounted into the services: %w", err)
		}
	}
	return nil
}
