// Package templates owns the CARTO release this binary carries: the compose
// template, the env template and the release manifest, embedded so that an
// install works with no release channel reachable.
package templates

import (
	"embed"
	"fmt"
	"io/fs"

	"github.com/cartodb/carto-appliance/release"
)

//go:embed release/docker-compose.yml release/env.tpl release/manifest.yaml
var files embed.FS

// Default returns the release embedded in the binary.
func Default() (*release.Release, error) {
	sub, err := fs.Sub(files, "release")
	if err != nil {
		return nil, fmt.Errorf("the embedded release: %w", err)
	}
	r, err := release.Load(sub)
	if err != nil {
		return nil, fmt.Errorf("the embedded release: %w", err)
	}
	return r, nil
}
