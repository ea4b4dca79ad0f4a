package testbed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/release/bundler"
	"github.com/cartodb/carto-appliance/release/releasetest"
	"github.com/cartodb/carto-appliance/stack"
)

// NextVersion is the stand-in CARTO release after the one the binary
// carries: what the test channel offers to upgrade to.
const NextVersion = "2026.1.0"

// NextApplianceVersion is the carto-appliance NextRelease (and the
// releases after it) needs (min_appliance_version), which the test
// channel offers with Options.ApplianceBinary; OldApplianceVersion is
// one older, to be updated. A development build (version not numbers)
// is not judged: it upgrades without updating itself.
const (
	NextApplianceVersion = "1.1.0"
	OldApplianceVersion  = "1.0.0"
)

// The ways NextRelease differs from the release it is derived from, for
// tests to check after an upgrade.
const (
	// NextEnvKey is a setting the next release adds to .env, with a
	// default (NextEnvDefault) so that customer.env need not change.
	NextEnvKey     = "MAPS_API_V3_TILE_CACHE_TTL"
	NextEnvDefault = "300"
	// NextService is the service the next release adds, running the new
	// image NextImage.
	NextService = "ai-api"
	NextImage   = "ai-api"
	// NextColumn is the column the next release's migration adds to the
	// table carto_migrations of the workspace database.
	NextColumn = "release_notes"
)

// NextRelease is base moved to version as a real CARTO release moves: its
// images are the new version's (the stand-ins report it), the env
// template gains NextEnvKey with a default, the compose template gains
// NextService on the new image NextImage, and its workspace-db image
// migrates the schema (NextMigration). The images are built and pushed
// by PublishChannel.
func NextRelease(base *release.Release, version string) (*release.Release, error) {
	m := base.Manifest
	m.Version = version
	m.Images = append(append([]string(nil), m.Images...), NextImage)
	m.ImageDigests = nil
	raw, err := replaceLine(base.RawManifest, `version: "`+base.Manifest.Version+`"`, `version: "`+version+`"`)
	if err != nil {
		return nil, err
	}
	raw, err = replaceLine(raw, "  - valkey", "  - valkey\n  - "+NextImage)
	if err != nil {
		return nil, err
	}
	raw = append(raw, []byte("min_appliance_version: \""+NextApplianceVersion+"\"\n")...)
	m.MinApplianceVersion = NextApplianceVersion
	compose, err := replaceLine(base.Compose, "  sql-worker:", `  `+NextService+`:
    x-carto-role: app
    image: ${DOCKER_REGISTRY_BASE_PATH}/`+NextImage+`:${CARTO_SELFHOSTED_VERSION}
    env_file: [.env]
    volumes: *app-certs
    depends_on: *after-migrations
    restart: unless-stopped
    logging: *logging
    healthcheck: *node-healthcheck

  sql-worker:`)
	if err != nil {
		return nil, err
	}
	env := append(append([]byte(nil), base.EnvTemplate...), []byte("\n## Added in "+version+"\n"+NextEnvKey+"=${"+NextEnvKey+":-"+NextEnvDefault+"}\n")...)
	if _, err := release.ParseManifest(raw); err != nil {
		return nil, fmt.Errorf("the derived manifest: %w", err)
	}
	return &release.Release{Manifest: m, RawManifest: raw, Compose: compose, EnvTemplate: env}, nil
}

// The channel's releases after NextVersion, each failing in its own way
// for rollbacks to be exercised.
const (
	// BrokenMigrationVersion's migration fails (after a first statement
	// that would change the schema, in the same transaction); it must be
	// upgraded to from NextVersion.
	BrokenMigrationVersion = "2026.1.1"
	// UnhealthyVersion migrates the schema (adds UnhealthyColumn), then
	// its maps-api never turns healthy; it must be upgraded to from
	// NextVersion (a required stop).
	UnhealthyVersion = "2026.2.0"
	UnhealthyColumn  = "v2_flag"
)

// Bump is rel as another version, upgraded to from minUpgradeFrom (empty:
// rel's), with the same templates.
func Bump(rel *release.Release, version, minUpgradeFrom string) (*release.Release, error) {
	raw, err := replaceLine(rel.RawManifest, `version: "`+rel.Manifest.Version+`"`, `version: "`+version+`"`)
	if err != nil {
		return nil, err
	}
	if minUpgradeFrom != "" {
		if raw, err = replaceLine(raw, `min_upgrade_from: "`+rel.Manifest.MinUpgradeFrom+`"`, `min_upgrade_from: "`+minUpgradeFrom+`"`); err != nil {
			return nil, err
		}
	}
	m, err := release.ParseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("the bumped manifest: %w", err)
	}
	return &release.Release{Manifest: *m, RawManifest: raw, Compose: rel.Compose, EnvTemplate: rel.EnvTemplate}, nil
}

// ChannelReleases are the test channel's releases, derived from the
// embedded one (base): base itself, NextRelease, and the two failing ones.
func ChannelReleases(base *release.Release) ([]ChannelRelease, error) {
	next, err := NextRelease(base, NextVersion)
	if err != nil {
		return nil, err
	}
	broken, err := Bump(next, BrokenMigrationVersion, NextVersion)
	if err != nil {
		return nil, err
	}
	unhealthy, err := Bump(next, UnhealthyVersion, NextVersion)
	if err != nil {
		return nil, err
	}
	return []ChannelRelease{
		{Release: base},
		{Release: next, ImageEnv: NextMigration()},
		{Release: broken, ImageEnv: map[string]map[string]string{
			"workspace-db": {"STANDIN_MIGRATE_SQL": "ALTER TABLE carto_migrations ADD COLUMN broken_column text; SELECT no_such_column FROM carto_migrations"},
		}},
		{Release: unhealthy, ImageEnv: map[string]map[string]string{
			"workspace-db": {"STANDIN_MIGRATE_SQL": "ALTER TABLE carto_migrations ADD COLUMN " + UnhealthyColumn + " text"},
			"maps-api":     {"STANDIN_FAIL": "unhealthy"},
		}},
	}, nil
}

// NextMigration is what NextRelease's workspace-db image bakes: the schema
// change its migration makes.
func NextMigration() map[string]map[string]string {
	return map[string]map[string]string{
		"workspace-db": {"STANDIN_MIGRATE_SQL": "ALTER TABLE carto_migrations ADD COLUMN " + NextColumn + " text"},
	}
}

// replaceLine replaces the one line old of b with new.
func replaceLine(b []byte, old, new string) ([]byte, error) {
	s := string(b)
	lines := strings.Split(s, "\n")
	n := 0
	for i, l := range lines {
		if l == old {
			lines[i] = new
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("deriving a release: want one line %q, found %d", old, n)
	}
	return []byte(strings.Join(lines, "\n")), nil
}

// ChannelRelease is a release to publish, with environment variables to
// bake into some of its images (by image name), e.g. NextMigration.
type ChannelRelease struct {
	Release  *release.Release
	ImageEnv map[string]map[string]string
}

// PublishChannel builds and pushes every release's images, pins their
// digests in the manifests, and publishes the releases into dir (the
// channel's files under dir/channel), signed with the tests' release key:
// what the release team's `carto-release publish` produces, for a static
// HTTPS server (ServeChannel) to host. The engine keeps no reference
// under the registry's names afterwards.
func (r *Registry) PublishChannel(ctx context.Context, cli *client.Client, images Images, dir, channel string, rels []ChannelRelease) error {
	for _, cr := range rels {
		m := cr.Release.Manifest
		if err := r.pushRelease(ctx, cli, images, m.Version, m.Images, cr.ImageEnv); err != nil {
			return err
		}
		digests := map[string]string{}
		for _, name := range m.Images {
			d, err := r.digest(ctx, cli, name, m.Version)
			if err != nil {
				return err
			}
			digests[name] = d
		}
		pinned, err := withDigests(cr.Release, digests)
		if err != nil {
			return err
		}
		if _, err := release.Publish(dir, channel, pinned, releasetest.KeyName, releasetest.Key, time.Now()); err != nil {
			return err
		}
	}
	return r.RemoveLocalTags(ctx, cli)
}

// PublishAppliance publishes bin, a carto-appliance built as
// NextApplianceVersion for this machine, in the test channel under dir,
// signed with the tests' release key.
func PublishAppliance(dir, bin string) error {
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	_, err = release.PublishAppliance(dir, ChannelName, NextApplianceVersion, map[string][]byte{runtime.GOOS + "_" + runtime.GOARCH: b}, releasetest.KeyName, releasetest.Key, time.Now())
	return err
}

// digest is the registry's digest of <Host>/<name>:<version>, as the
// engine recorded it when pushing.
func (r *Registry) digest(ctx context.Context, cli *client.Client, name, version string) (string, error) {
	ref := r.Ref(name, version)
	res, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("inspecting %s: %w", ref, err)
	}
	repo := r.Host + "/" + name + "@"
	for _, d := range res.RepoDigests {
		if rest, ok := strings.CutPrefix(d, repo); ok {
			return rest, nil
		}
	}
	return "", fmt.Errorf("%s has no digest from %s (pushed?): %v", ref, r.Host, res.RepoDigests)
}

// withDigests is rel with image_digests in its manifest.
func withDigests(rel *release.Release, digests map[string]string) (*release.Release, error) {
	var b strings.Builder
	b.WriteString(strings.TrimRight(string(rel.RawManifest), "\n"))
	b.WriteString("\nimage_digests:\n")
	for _, name := range rel.Manifest.Images {
		fmt.Fprintf(&b, "  %s: %q\n", name, digests[name])
	}
	m, err := release.ParseManifest([]byte(b.String()))
	if err != nil {
		return nil, fmt.Errorf("pinning %s's digests: %w", rel.Manifest.Version, err)
	}
	return &release.Release{Manifest: *m, RawManifest: []byte(b.String()), Compose: rel.Compose, EnvTemplate: rel.EnvTemplate}, nil
}

// ChannelServer serves a directory of channels (PublishChannel's dir)
// over HTTPS, as the release team's static host does.
type ChannelServer struct {
	// URL is the channels' base URL: appliance.yaml upgrade.channel_url.
	URL string
	// CAPEM is the CA that signed the server's certificate: trust it on
	// the machines that fetch.
	CAPEM []byte
	// Tampered, while set, serves every manifest.yaml with one byte
	// changed (what a compromised mirror serves).
	Tampered atomic.Bool
	// Requests counts the requests served.
	Requests atomic.Int64

	srv *http.Server
}

// ServeChannel serves dir over HTTPS on a free port of addr until Close.
func ServeChannel(addr netip.Addr, dir string) (*ChannelServer, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return nil, fmt.Errorf("channel server: %w", err)
	}
	s := &ChannelServer{URL: "https://" + ln.Addr().String()}
	files := http.FileServer(http.Dir(dir))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Requests.Add(1)
		if s.Tampered.Load() && strings.HasSuffix(r.URL.Path, "/"+release.ManifestFile) {
			b, err := tampered(filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(r.URL.Path, "/"))))
			if err != nil {
				http.NotFound(w, r)
				return
			}
			w.Write(b)
			return
		}
		files.ServeHTTP(w, r)
	})
	srv, caPEM, err := serveTLS(ln, addr, "channel.carto.test", h)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s.srv, s.CAPEM = srv, caPEM
	return s, nil
}

// Close stops serving.
func (s *ChannelServer) Close() error { return s.srv.Close() }

// serveTLS serves h on ln over TLS with a certificate for addr and name
// from a new test CA, whose PEM it returns.
func serveTLS(ln net.Listener, addr netip.Addr, name string, h http.Handler) (*http.Server, []byte, error) {
	ca, err := newTestCA()
	if err != nil {
		return nil, nil, err
	}
	certPEM, keyPEM, err := ca.issue([]net.IP{net.IP(addr.AsSlice())}, []string{name})
	if err != nil {
		return nil, nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		}
	}()
	return srv, ca.pem, nil
}

// Bundle writes the air-gap bundle of the test channel's release version
// (published under channelDir by PublishChannel) to out, as the release
// team's carto-release bundle does: its images pulled from the registry
// by their pinned digests (with the registry's key.json), signed with the
// tests' release key; with applianceBin (a carto-appliance built as
// NextApplianceVersion for this machine), carrying it too. A bundle
// already at out is kept.
func (r *Registry) Bundle(ctx context.Context, channelDir, version, out string, gzip bool, applianceBin string) error {
	if _, err := os.Stat(out); err == nil {
		return nil
	}
	var appliances map[string][]byte
	applianceVersion := ""
	if applianceBin != "" {
		b, err := os.ReadFile(applianceBin)
		if err != nil {
			return err
		}
		appliances, applianceVersion = map[string][]byte{runtime.GOOS + "_" + runtime.GOARCH: b}, NextApplianceVersion
	}
	rel, err := release.LoadDir(filepath.Join(channelDir, ChannelName, version), "")
	if err != nil {
		return err
	}
	key, err := os.ReadFile(r.KeyJSONPath)
	if err != nil {
		return err
	}
	eng, err := stack.Connect(ctx)
	if err != nil {
		return err
	}
	defer eng.Close()
	return bundler.Build(ctx, eng, bundler.Options{
		Release: rel, Registry: r.Host,
		Auth:             &stack.RegistryAuth{Registry: r.Host, Username: "_json_key", Password: string(key), Source: r.KeyJSONPath},
		ApplianceVersion: applianceVersion, Appliances: appliances,
		KeyName: releasetest.KeyName, Key: releasetest.Key, Gzip: gzip, Out: out, Now: time.Now(),
	})
}
