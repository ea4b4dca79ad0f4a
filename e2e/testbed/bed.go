package testbed

import (
	"context"
	"path/filepath"

	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/templates"
)

// Bed is a ready test bed: the test images built, a registry running with
// the embedded release pushed to it. The scenarios, the demo and the
// benchmark all start from one.
type Bed struct {
	Docker   *client.Client
	Images   Images
	Registry *Registry
	Release  *release.Release
	// ChannelDir, with Options.Channel, holds the test channel
	// (ChannelName): ChannelReleases, published with their images pushed.
	// Serve it with ServeChannel.
	ChannelDir string
}

// ChannelName is the test channel's name: the default channel's, as a
// node follows it unless told otherwise.
const ChannelName = "stable"

// Start builds (or finds) the images, starts a registry under dir and
// pushes the embedded release to it, leaving no local copy under the
// registry's names. Stop the registry with Close.
func Start(ctx context.Context, dir string, opts Options) (*Bed, error) {
	cli, err := DockerClient(ctx)
	if err != nil {
		return nil, err
	}
	images, err := EnsureImages(ctx, cli, opts)
	if err != nil {
		return nil, err
	}
	rel, err := templates.Default()
	if err != nil {
		return nil, err
	}
	reg, err := StartRegistry(ctx, filepath.Join(dir, "registry"))
	if err != nil {
		return nil, err
	}
	if err := reg.PushRelease(ctx, cli, images, rel.Manifest.Version, rel.Manifest.Images); err != nil {
		reg.Stop()
		return nil, err
	}
	bed := &Bed{Docker: cli, Images: images, Registry: reg, Release: rel}
	if opts.Channel {
		// Published now, before any scenario runs: publishing tags and
		// untags images under the registry's names, which a scenario's
		// pull must not meet half-way.
		rels, err := ChannelReleases(rel)
		if err != nil {
			reg.Stop()
			return nil, err
		}
		bed.ChannelDir = filepath.Join(dir, "channels")
		if err := reg.PublishChannel(ctx, cli, images, bed.ChannelDir, ChannelName, rels); err != nil {
			reg.Stop()
			return nil, err
		}
		if opts.ApplianceBinary != "" {
			if err := PublishAppliance(bed.ChannelDir, opts.ApplianceBinary); err != nil {
				reg.Stop()
				return nil, err
			}
		}
	}
	// Pushing leaves the registry's references in the engine; without them
	// the first install really pulls, through the registry's auth.
	if err := reg.RemoveLocalTags(ctx, cli); err != nil {
		reg.Stop()
		return nil, err
	}
	return bed, nil
}

// Close stops the registry.
func (b *Bed) Close() error { return b.Registry.Stop() }
