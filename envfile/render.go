package envfile

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/release"
)

// VersionKey is the key the release version is rendered to.
const VersionKey = "CARTO_SELFHOSTED_VERSION"

// Layer is one source of the rendered .env. Layers are applied in the order
// of their values; a later layer wins.
type Layer int

const (
	LayerCustomer  Layer = iota + 1 // customer.env
	LayerVersion                    // CARTO_SELFHOSTED_VERSION of the release
	LayerTemplate                   // the release's env template
	LayerAppliance                  // appliance.yaml and command-line flags
)

var layers = []Layer{LayerCustomer, LayerVersion, LayerTemplate, LayerAppliance}

func (l Layer) String() string {
	switch l {
	case LayerCustomer:
		return "customer.env"
	case LayerVersion:
		return "the release version"
	case LayerTemplate:
		return "the release's env template"
	case LayerAppliance:
		return "the appliance settings"
	}
	return fmt.Sprintf("Layer(%d)", int(l))
}

// RenderInput is what the .env is rendered from.
type RenderInput struct {
	// Customer is customer.env, as ReadFile returns it.
	Customer Env
	// Version is the release's CARTO_SELFHOSTED_VERSION, e.g. "2025.11.3".
	Version string
	// EnvTemplate is the release's env template (release.Release.EnvTemplate).
	EnvTemplate []byte
	// Appliance holds the appliance's own settings in the order they should
	// be written, e.g. SELFHOSTED_DOMAIN from --domain,
	// DOCKER_REGISTRY_BASE_PATH from --registry. They win over every other
	// layer.
	Appliance Env
}

// Warning says that a layer replaced a value set by an earlier one. It names
// the key and both layers, never the values: they may be secrets.
type Warning struct {
	Key        string
	Overridden Layer // the layer whose value was replaced
	By         Layer // the layer whose value the .env has
}

func (w Warning) String() string {
	return fmt.Sprintf("%s: the value from %s is replaced by the one from %s", w.Key, w.Overridden, w.By)
}

// Rendered is a rendered .env.
type Rendered struct {
	// Env holds the final values, literal (no ${...} left), grouped by the
	// layer that gave them, in layer order, each group in that layer's
	// order.
	Env Env
	// Warnings lists the replaced values, in Env's order.
	Warnings []Warning

	version string
	source  map[string]Layer
}

// Source returns the layer that gave key its value, or 0 if key is not set.
func (r *Rendered) Source(key string) Layer { return r.source[key] }

// Render merges the layers into the .env: customer.env, then
// CARTO_SELFHOSTED_VERSION, then the env template, then the appliance
// settings; a later layer wins, with a Warning when it changes a value.
//
// The env template is resolved with compose-go's interpolation. A ${VAR} in
// it sees the value VAR will have in the .env where that is known: the
// appliance settings first, then keys set earlier in the template, then the
// release version and customer.env. So ${SELFHOSTED_DOMAIN} follows --domain
// even when customer.env names another domain.
func Render(in RenderInput) (*Rendered, error) {
	if _, err := release.ParseVersion(in.Version); err != nil || strings.TrimSpace(in.Version) != in.Version {
		return nil, fmt.Errorf("rendering .env: release version %q is not a version like 2025.11.3", in.Version)
	}
	for _, l := range []struct {
		name string
		env  Env
	}{{"customer.env", in.Customer}, {"appliance settings", in.Appliance}} {
		for _, k := range l.env.keys {
			if !ValidKey(k) {
				return nil, fmt.Errorf("rendering .env: %s: key %q has a character other than A-Z a-z 0-9 _ . -", l.name, k)
			}
		}
	}
	version := NewEnv(VersionKey, in.Version)
	below := func(name string) (string, bool) {
		if v, ok := version.Lookup(name); ok {
			return v, true
		}
		return in.Customer.Lookup(name)
	}
	tpl, _, err := parse(in.EnvTemplate, in.Appliance.Lookup, below)
	if err != nil {
		return nil, fmt.Errorf("rendering .env: reading the env template of release %s: %w", in.Version, err)
	}

	byLayer := map[Layer]Env{
		LayerCustomer:  in.Customer,
		LayerVersion:   version,
		LayerTemplate:  tpl,
		LayerAppliance: in.Appliance,
	}
	r := &Rendered{version: in.Version, source: map[string]Layer{}}
	final := map[string]string{}
	for _, l := range layers {
		e := byLayer[l]
		for _, k := range e.keys {
			r.source[k] = l
			final[k] = e.vals[k]
		}
	}
	for _, l := range layers {
		e := byLayer[l]
		for _, k := range e.keys {
			if r.source[k] == l {
				r.Env.Set(k, final[k])
			}
		}
	}
	for _, k := range r.Env.keys {
		for _, l := range layers {
			if l == r.source[k] {
				break
			}
			if v, ok := byLayer[l].Lookup(k); ok && v != final[k] {
				r.Warnings = append(r.Warnings, Warning{Key: k, Overridden: l, By: r.source[k]})
			}
		}
	}
	return r, nil
}

// Masked returns a copy of r whose secret values are replaced by Mask, for
// display (`env render`).
func (r *Rendered) Masked() *Rendered {
	c := *r
	c.Env = Masked(r.Env)
	return &c
}

// Marshal returns the .env file: Header, then the keys of each layer under a
// comment naming it. It reads back like Marshal(r.Env).
func (r *Rendered) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(Header)
	for _, l := range layers {
		var keys []string
		for _, k := range r.Env.keys {
			if r.source[k] == l {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			continue
		}
		b.WriteString("\n# " + r.sectionTitle(l) + "\n")
		writeVars(&b, r.Env, keys)
	}
	return b.Bytes()
}

func (r *Rendered) sectionTitle(l Layer) string {
	switch l {
	case LayerCustomer:
		return "From customer.env"
	case LayerVersion:
		return "The release version"
	case LayerTemplate:
		return "From the env template of release " + r.version
	case LayerAppliance:
		return "From the appliance settings (appliance.yaml and command-line flags)"
	}
	return l.String()
}

// WriteFile writes r.Marshal() to path (the generated .env) atomically with
// mode 0600, keeping the previous version as path.prev when it changes;
// writing an unchanged .env touches nothing.
func (r *Rendered) WriteFile(path string) error {
	return atomicfile.Write(path, r.Marshal(), 0o600)
}
