// Package release owns a CARTO release as data: its manifest, its compose
// and env templates, its version arithmetic, and its on-disk form (the
// three files in a directory, identified by a digest); its signature
// against the release keys compiled in (keys.go; the tests' key only with
// the licensetest build tag); and channels: their signed index, fetching
// a release from one over https, publishing into one, and the upgrade
// path through a channel's required stops. It verifies and judges
// releases; it reads no installed state: where a release is pinned is the
// installer's business.
package release

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Release is one CARTO version's templates and manifest.
type Release struct {
	Manifest    Manifest
	RawManifest []byte // manifest.yaml as written, for the digest and copies
	Compose     []byte // the compose template (docker-compose.yml)
	EnvTemplate []byte // the env template (env.tpl)
}

// Manifest describes a release. Every field is required in a release,
// except the two marked optional; the embedded one is checked by this
// package's tests.
type Manifest struct {
	// Version is CARTO_SELFHOSTED_VERSION, e.g. "2025.11.3".
	Version string `yaml:"version"`
	// MinUpgradeFrom is the oldest installed version that may upgrade to
	// this one directly.
	MinUpgradeFrom string `yaml:"min_upgrade_from"`
	// MinCustomerPackageVersion is the oldest
	// CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION this release accepts.
	MinCustomerPackageVersion string `yaml:"min_customer_package_version"`
	// MinApplianceVersion (optional) is the oldest carto-appliance that
	// can install or upgrade to this release.
	MinApplianceVersion string `yaml:"min_appliance_version,omitempty"`
	// RequiredEnv lists the keys that must have a non-empty value in the
	// rendered .env.
	RequiredEnv []string `yaml:"required_env"`
	// Images are the image names under DOCKER_REGISTRY_BASE_PATH, tagged
	// with Version.
	Images []string `yaml:"images"`
	// ImageDigests (optional in the release a binary carries, required in
	// a channel's: Publish) pins each image, by name, to its content
	// ("sha256:" and 64 hex digits), so that a retagged image cannot pass
	// for the release's.
	ImageDigests map[string]string `yaml:"image_digests,omitempty"`
	// Egress lists the internet domains the stack reaches.
	Egress Egress `yaml:"egress"`
	// Requirements are the host resources a node needs, checked by
	// preflight: below Min fails, below Recommended warns.
	Requirements Requirements `yaml:"requirements"`
}

// Requirements are the host resources of a node.
type Requirements struct {
	CPUs      Requirement `yaml:"cpus"`
	MemoryGiB Requirement `yaml:"memory_gib"`
	// DiskGiB is free space for the Docker engine's images, containers
	// and volumes (the embedded Postgres data included).
	DiskGiB Requirement `yaml:"disk_gib"`
}

// Requirement is a minimum and a recommended amount.
type Requirement struct {
	Min         float64 `yaml:"min"`
	Recommended float64 `yaml:"recommended"`
}

// Egress is CARTO's egress allow-list: the core domains every installation
// reaches, and optional ones by feature. A leading dot means every
// subdomain.
type Egress struct {
	Core     []string            `yaml:"core"`
	Optional map[string][]string `yaml:"optional"`
}

// ParseManifest decodes and validates a release manifest; unknown fields are
// refused so that a typo in a release cannot pass silently.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("parsing release manifest: %w", err)
	}
	for field, v := range map[string]string{
		"version":                      m.Version,
		"min_upgrade_from":             m.MinUpgradeFrom,
		"min_customer_package_version": m.MinCustomerPackageVersion,
	} {
		if _, err := ParseVersion(v); err != nil {
			return nil, fmt.Errorf("release manifest field %s: %w", field, err)
		}
	}
	for field, r := range map[string]Requirement{"cpus": m.Requirements.CPUs, "memory_gib": m.Requirements.MemoryGiB, "disk_gib": m.Requirements.DiskGiB} {
		if r.Min <= 0 || r.Recommended < r.Min {
			return nil, fmt.Errorf("release manifest field requirements.%s: min must be positive and recommended at least min (min %v, recommended %v)", field, r.Min, r.Recommended)
		}
	}
	if len(m.Images) == 0 {
		return nil, fmt.Errorf("release manifest field images: empty; a release lists every image it runs")
	}
	if m.MinApplianceVersion != "" {
		if _, err := ParseVersion(m.MinApplianceVersion); err != nil {
			return nil, fmt.Errorf("release manifest field min_appliance_version: %w", err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(m.ImageDigests)) {
		if !slices.Contains(m.Images, name) {
			return nil, fmt.Errorf("release manifest field image_digests: %q is not among images", name)
		}
		if !ValidDigest(m.ImageDigests[name]) {
			return nil, fmt.Errorf("release manifest field image_digests.%s: %q is not a digest (sha256: and 64 lowercase hex digits)", name, m.ImageDigests[name])
		}
	}
	return &m, nil
}

// MissingDigests are the images the manifest pins to no digest, in order.
func (m *Manifest) MissingDigests() []string {
	var missing []string
	for _, name := range m.Images {
		if _, ok := m.ImageDigests[name]; !ok {
			missing = append(missing, name)
		}
	}
	return missing
}

// ValidDigest says whether s is "sha256:" and 64 lowercase hex digits, the
// form of image and release digests.
func ValidDigest(s string) bool {
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	for _, c := range hexPart {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Version is a CARTO release version: dot-separated numbers, compared
// numerically field by field ("2025.10.2" < "2025.11.1"), as the legacy
// installer's `sort -V` did. A missing field counts as 0.
type Version []int

// ParseVersion parses "2025.11.3"; a leading "v" is accepted.
func ParseVersion(s string) (Version, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "v")
	if t == "" {
		return nil, fmt.Errorf("empty version; expected numbers separated by dots, e.g. 2025.11.3")
	}
	parts := strings.Split(t, ".")
	v := make(Version, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("version %q: %q is not a number; expected numbers separated by dots, e.g. 2025.11.3", s, p)
		}
		v[i] = n
	}
	return v, nil
}

// Compare returns -1, 0 or 1 as v is older than, equal to or newer than w.
func (v Version) Compare(w Version) int {
	for i := 0; i < len(v) || i < len(w); i++ {
		var a, b int
		if i < len(v) {
			a = v[i]
		}
		if i < len(w) {
			b = w[i]
		}
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
	}
	return 0
}

func (v Version) String() string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ".")
}
