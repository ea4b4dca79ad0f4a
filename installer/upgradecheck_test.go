//go:build licensetest

package installer

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/release/releasetest"
	"github.com/cartodb/carto-appliance/templates"
)

// channelRelease is the embedded release as version v of a channel, to be
// upgraded to from minFrom, every image pinned to a digest; addImage and
// addEnv (when not empty) are a new image and a new required setting.
func channelRelease(t *testing.T, v, minFrom, addImage, addEnv string) *release.Release {
	t.Helper()
	base, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	m := string(base.RawManifest)
	for old, repl := range map[string]string{
		`version: "2025.11.3"`:         fmt.Sprintf("version: %q", v),
		`min_upgrade_from: "2025.6.2"`: fmt.Sprintf("min_upgrade_from: %q", minFrom),
	} {
		if !strings.Contains(m, old) {
			t.Fatalf("the embedded manifest has no %s", old)
		}
		m = strings.Replace(m, old, repl, 1)
	}
	if addImage != "" {
		m = strings.Replace(m, "images:\n", "images:\n  - "+addImage+"\n", 1)
	}
	if addEnv != "" {
		m = strings.Replace(m, "required_env:\n", "required_env:\n  - "+addEnv+"\n", 1)
	}
	parsed, err := release.ParseManifest([]byte(m))
	if err != nil {
		t.Fatal(err)
	}
	m += "image_digests:\n"
	for _, img := range parsed.Images {
		m += fmt.Sprintf("  %s: sha256:%x\n", img, sha256.Sum256([]byte(v+img)))
	}
	r, err := release.Load(fstest.MapFS{
		release.ManifestFile:    {Data: []byte(m)},
		release.ComposeFile:     {Data: base.Compose},
		release.EnvTemplateFile: {Data: base.EnvTemplate},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// upgradeChannel serves a signed stable channel with 2026.1.0 (a new image
// and a new required setting, from 2025.11.3) and 2026.2.0 (only from
// 2026.1.0: a required stop), and installs a node following it, with a
// licence for licenseChannel.
func upgradeChannel(t *testing.T, licenseChannel string) config.Paths {
	t.Helper()
	return channelNode(t, licenseChannel,
		channelRelease(t, "2026.1.0", "2025.11.3", "new-service", "NEW_SETTING"),
		channelRelease(t, "2026.2.0", "2026.1.0", "", ""))
}

// channelNode serves a signed stable channel of rels over https and
// installs a node following it, with a licence for licenseChannel.
func channelNode(t *testing.T, licenseChannel string, rels ...*release.Release) config.Paths {
	t.Helper()
	_, url := serveChannel(t, rels...)
	paths := installed(t, config.Config{Upgrade: config.UpgradeConfig{ChannelURL: url}})
	lic := testLicense(t, func(l *license.License) { l.TenantID, l.Channel = "onp-test", licenseChannel })
	if err := os.WriteFile(paths.File(config.LicenseFileName), lic, 0o600); err != nil {
		t.Fatal(err)
	}
	return paths
}

// serveChannel publishes rels in a signed stable channel under root, and
// serves root over https to the upgrade's client: root and its URL.
func serveChannel(t *testing.T, rels ...*release.Release) (root, url string) {
	t.Helper()
	root = t.TempDir()
	for _, r := range rels {
		if _, err := release.Publish(root, "stable", r, releasetest.KeyName, releasetest.Key, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewTLSServer(http.FileServer(http.Dir(root)))
	t.Cleanup(srv.Close)
	orig := upgradeClient
	upgradeClient = func(config.Paths, config.Config) (*http.Client, error) { return srv.Client(), nil }
	t.Cleanup(func() { upgradeClient = orig })
	return root, srv.URL
}

func TestCheckUpgrade(t *testing.T) {
	paths := upgradeChannel(t, "stable")
	before := dirSnapshot(t, paths.ConfigDir)
	chk, err := CheckUpgrade(t.Context(), paths, "")
	if err != nil {
		t.Fatal(err)
	}
	if chk.Installed != "2025.11.3" || chk.Latest != "2026.2.0" || chk.Target != "2026.2.0" ||
		!slices.Equal(chk.Available, []string{"2026.1.0", "2026.2.0"}) || !slices.Equal(chk.Path, []string{"2026.1.0", "2026.2.0"}) {
		t.Errorf("check: %+v", chk)
	}
	if !chk.License.Allowed || chk.License.State != license.Valid {
		t.Errorf("licence: %+v", chk.License)
	}
	if c := chk.Changes; c == nil || c.To != "2026.1.0" || !slices.Equal(c.ImagesAdded, []string{"new-service"}) ||
		!slices.Equal(c.EnvRequired, []string{"NEW_SETTING"}) || len(c.ImagesRemoved)+len(c.EnvDropped) != 0 {
		t.Errorf("changes: %+v", chk.Changes)
	}
	if after := dirSnapshot(t, paths.ConfigDir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Error("upgrade --check changed the config dir")
	}

	// --to a version of the channel: its path alone.
	if chk, err := CheckUpgrade(t.Context(), paths, "2026.1.0"); err != nil || !slices.Equal(chk.Path, []string{"2026.1.0"}) {
		t.Errorf("to 2026.1.0: %+v, %v", chk, err)
	}
	// --to a version the channel does not have: named, with what it has.
	if _, err := CheckUpgrade(t.Context(), paths, "2027.1.0"); !errors.Is(err, release.ErrNotInChannel) || !strings.Contains(err.Error(), "2027.1.0") {
		t.Errorf("to a version not in the channel: %v", err)
	}
}

func TestCheckUpgradeJudgesTheLicence(t *testing.T) {
	paths := upgradeChannel(t, "lts")
	chk, err := CheckUpgrade(t.Context(), paths, "")
	if err != nil {
		t.Fatal(err)
	}
	if chk.License.Allowed || !strings.Contains(chk.License.Reason, "the licence entitles the lts channel") {
		t.Errorf("a licence for another channel: %+v", chk.License)
	}
	expired := testLicense(t, func(l *license.License) {
		l.TenantID, l.Issued, l.Expires = "onp-test", time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	})
	os.WriteFile(paths.File(config.LicenseFileName), expired, 0o600)
	if chk, err := CheckUpgrade(t.Context(), paths, ""); err != nil || chk.License.Allowed || chk.License.State != license.Expired {
		t.Errorf("an expired licence: %+v, %v", chk, err)
	}
}

// A channel whose index was not signed by a trusted release key is
// refused, naming the channel's URL.
func TestCheckUpgradeRefusesAnUntrustedChannel(t *testing.T) {
	paths := upgradeChannel(t, "stable")
	cfg, _, _ := config.Load(paths.File(config.ConfigFileName))
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"format_version":1,"channel":"stable","releases":[]}`))
	}))
	defer srv.Close()
	upgradeClient = func(config.Paths, config.Config) (*http.Client, error) { return srv.Client(), nil }
	cfg.Upgrade.ChannelURL = srv.URL
	config.Save(paths.File(config.ConfigFileName), cfg)
	_, err := CheckUpgrade(t.Context(), paths, "")
	if !errors.Is(err, release.ErrUntrusted) || !strings.Contains(err.Error(), srv.URL) {
		t.Errorf("an unsigned index: %v", err)
	}
}

func TestReleaseChangesNamesServicesAndEnvKeys(t *testing.T) {
	from, err := templates.Default()
	if err != nil {
		t.Fatal(err)
	}
	to := *from
	to.Manifest.Version = "2026.1.0"
	to.Compose = []byte(strings.Replace(string(from.Compose), "\n  notifier:\n", "\n  notifier-v2:\n", 1))
	to.EnvTemplate = []byte(strings.Replace(string(from.EnvTemplate), "\nLOG_LEVEL=", "\nTILE_TTL=${TILE_TTL:-300}\nLOG_LEVEL_OLD=", 1))
	c, err := releaseChanges(from, &to)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.ServicesAdded, []string{"notifier-v2"}) || !slices.Equal(c.ServicesRemoved, []string{"notifier"}) ||
		!slices.Equal(c.EnvAdded, []string{"LOG_LEVEL_OLD", "TILE_TTL"}) || !slices.Equal(c.EnvRemoved, []string{"LOG_LEVEL"}) {
		t.Errorf("changes: %+v", c)
	}
	to.Compose = []byte("services: [")
	if _, err := releaseChanges(from, &to); err == nil || !strings.Contains(err.Error(), "2026.1.0's compose template") {
		t.Errorf("a broken compose template: %v", err)
	}
}
