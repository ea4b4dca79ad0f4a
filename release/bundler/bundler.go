// Package bundler builds air-gap bundles (release-team tooling, used by
// cmd/carto-release and the test bed): it saves each image a signed
// release pins from the Docker engine, pulling it by digest when the
// engine lacks it, and writes the bundle (release.WriteBundle). It is
// apart from release, which reads no engine.
package bundler

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/stack"
)

// Options are a bundle's inputs.
type Options struct {
	Release *release.Release
	// Registry is where the images are pulled from when the engine lacks
	// them: <host>/<path>, each image then <Registry>/<name>@<digest>.
	Registry string
	Auth     *stack.RegistryAuth
	// Appliances are carto-appliance binaries (by platform, e.g.
	// linux_amd64) of version ApplianceVersion, to carry too.
	ApplianceVersion string
	Appliances       map[string][]byte
	KeyName          string
	Key              ed25519.PrivateKey
	Gzip             bool
	// Out is the bundle file written (atomically: whole or not at all).
	Out string
	Now time.Time
}

// Build writes the bundle of opts.Release to opts.Out.
func Build(ctx context.Context, eng *stack.Engine, opts Options) error {
	m := opts.Release.Manifest
	if missing := m.MissingDigests(); len(missing) > 0 {
		return fmt.Errorf("bundling CARTO %s: image_digests lacks %v: a bundle carries the images its release pins", m.Version, missing)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(opts.Out), ".bundle-images-")
	if err != nil {
		return fmt.Errorf("bundling CARTO %s: %w", m.Version, err)
	}
	defer os.RemoveAll(tmp)
	var files []release.BundleImageFile
	for _, name := range m.Images {
		ref := opts.Registry + "/" + name + "@" + m.ImageDigests[name]
		p := filepath.Join(tmp, strings.ReplaceAll(name, "/", "_")+".tar")
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		id, err := eng.SaveImage(ctx, ref, opts.Auth, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("bundling CARTO %s: %w", m.Version, err)
		}
		files = append(files, release.BundleImageFile{Name: name, ID: id, Path: p})
	}
	out, err := os.CreateTemp(filepath.Dir(opts.Out), "."+filepath.Base(opts.Out)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	err = release.WriteBundle(out, opts.Release, files, opts.ApplianceVersion, opts.Appliances, opts.KeyName, opts.Key, opts.Gzip, opts.Now)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("bundling CARTO %s: %w", m.Version, err)
	}
	if err := os.Chmod(out.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(out.Name(), opts.Out); err != nil {
		return fmt.Errorf("bundling CARTO %s: %w", m.Version, err)
	}
	return nil
}
