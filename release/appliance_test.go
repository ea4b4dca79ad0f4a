package release

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/release/releasetest"
)

// A published appliance binary is listed in the signed index and
// downloads only whole and unchanged.
func TestPublishAndFetchAppliance(t *testing.T) {
	t.Parallel()
	c := newTestChannel(t, twoReleases[0])
	ctx := context.Background()
	amd, arm := []byte("binary for amd64"), []byte("binary for arm64!")
	e, err := PublishAppliance(c.root, "stable", "1.3.0", map[string][]byte{"linux_amd64": amd, "linux_arm64": arm}, releasetest.KeyName, releasetest.Key, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PublishAppliance(c.root, "stable", "1.2.0", map[string][]byte{"linux_amd64": []byte("older")}, releasetest.KeyName, releasetest.Key, now); err != nil {
		t.Fatal(err)
	}
	idx, err := FetchIndex(ctx, c.srv.Client(), c.base, "stable")
	if err != nil {
		t.Fatal(err)
	}
	// The releases are kept beside the appliances.
	if len(idx.Releases) != 1 || len(idx.Appliances) != 2 || idx.Appliances[0].Version != "1.2.0" {
		t.Fatalf("index %+v", idx)
	}
	got, ok := idx.Appliance(mustVersion("1.2.5"), "linux_amd64")
	if !ok || got.Version != "1.3.0" || got.Binaries["linux_amd64"] != e.Binaries["linux_amd64"] {
		t.Fatalf("Appliance(1.2.5): %+v %t", got, ok)
	}
	if _, ok := idx.Appliance(mustVersion("1.4"), "linux_amd64"); ok {
		t.Error("offered an appliance older than asked for")
	}
	if got, ok := idx.Appliance(mustVersion("1.0"), "linux_arm64"); !ok || got.Version != "1.3.0" {
		t.Errorf("Appliance for arm64: %+v %t", got, ok)
	}
	if _, ok := idx.Appliance(mustVersion("1.0"), "linux_riscv64"); ok {
		t.Error("offered an appliance for a platform it has no binary for")
	}
	b, err := FetchAppliance(ctx, c.srv.Client(), c.base, "stable", got, "linux_arm64")
	if err != nil || !bytes.Equal(b, arm) {
		t.Fatalf("FetchAppliance: %q %v", b, err)
	}

	// A binary replaced on the server (same size) or cut short is refused.
	path := filepath.Join(c.root, "stable", AppliancePath("1.3.0", "linux_arm64"))
	c.write(t, "stable/"+AppliancePath("1.3.0", "linux_arm64"), []byte("binary for arm64?"))
	if _, err := FetchAppliance(ctx, c.srv.Client(), c.base, "stable", got, "linux_arm64"); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("a replaced binary: %v", err)
	}
	if err := os.WriteFile(path, arm[:5], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := FetchAppliance(ctx, c.srv.Client(), c.base, "stable", got, "linux_arm64"); err == nil || !strings.Contains(err.Error(), "5 bytes") {
		t.Errorf("a cut binary: %v", err)
	}
	if _, err := FetchAppliance(ctx, c.srv.Client(), c.base, "stable", got, "linux_s390x"); err == nil || !strings.Contains(err.Error(), "linux_s390x") {
		t.Errorf("a platform not offered: %v", err)
	}

	// A published version never changes; republishing the same is fine.
	if _, err := PublishAppliance(c.root, "stable", "1.3.0", map[string][]byte{"linux_amd64": amd, "linux_arm64": arm}, releasetest.KeyName, releasetest.Key, now); err != nil {
		t.Errorf("republishing the same binaries: %v", err)
	}
	if _, err := PublishAppliance(c.root, "stable", "1.3.0", map[string][]byte{"linux_amd64": []byte("other")}, releasetest.KeyName, releasetest.Key, now); err == nil || !strings.Contains(err.Error(), "never changes") {
		t.Errorf("republishing other binaries: %v", err)
	}
	for _, bad := range []map[string][]byte{{"linux": amd}, {"linux_amd64": nil}, {}} {
		if _, err := PublishAppliance(c.root, "stable", "1.4.0", bad, releasetest.KeyName, releasetest.Key, now); err == nil {
			t.Errorf("published %v", bad)
		}
	}
	if _, err := PublishAppliance(c.root, "stable", "v1.4", map[string][]byte{"linux_amd64": amd}, releasetest.KeyName, releasetest.Key, now); err == nil {
		t.Error("published a version spelt v1.4")
	}
}

// An index whose appliance entries are wrong is refused as a whole, so a
// binary is never fetched from a path or trusted by a digest an entry
// made up.
func TestParseIndexRefusesBadAppliances(t *testing.T) {
	t.Parallel()
	digest := `"sha256:` + strings.Repeat("a", 64) + `"`
	for name, apps := range map[string]string{
		"no binary":     `[{"version":"1.2.0","binaries":{}}]`,
		"bad platform":  `[{"version":"1.2.0","binaries":{"../x":{"digest":` + digest + `,"size":3}}}]`,
		"bad digest":    `[{"version":"1.2.0","binaries":{"linux_amd64":{"digest":"md5:00","size":3}}}]`,
		"zero size":     `[{"version":"1.2.0","binaries":{"linux_amd64":{"digest":` + digest + `,"size":0}}}]`,
		"huge size":     `[{"version":"1.2.0","binaries":{"linux_amd64":{"digest":` + digest + `,"size":9999999999}}}]`,
		"bad version":   `[{"version":"1.2.x","binaries":{"linux_amd64":{"digest":` + digest + `,"size":3}}}]`,
		"listed twice":  `[{"version":"1.2.0","binaries":{"linux_amd64":{"digest":` + digest + `,"size":3}}},{"version":"1.2.0","binaries":{"linux_amd64":{"digest":` + digest + `,"size":3}}}]`,
		"1.2 and 1.2.0": `[{"version":"1.2","binaries":{"linux_amd64":{"digest":` + digest + `,"size":3}}},{"version":"1.2.0","binaries":{"linux_amd64":{"digest":` + digest + `,"size":3}}}]`,
		"path in entry": `[{"version":"1.2.0/../../x","binaries":{"linux_amd64":{"digest":` + digest + `,"size":3}}}]`,
	} {
		data := `{"format_version":1,"channel":"stable","releases":[],"appliances":` + apps + `}`
		if _, err := ParseIndex([]byte(data)); err == nil || !strings.Contains(err.Error(), "appliance") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// One version spelt two ways is listed twice, in releases too.
func TestParseIndexRefusesAVersionSpeltTwice(t *testing.T) {
	t.Parallel()
	d := `"sha256:` + strings.Repeat("a", 64) + `"`
	data := `{"format_version":1,"channel":"stable","releases":[{"version":"2026.1","digest":` + d + `,"min_upgrade_from":"2025.1"},{"version":"2026.1.0","digest":` + d + `,"min_upgrade_from":"2025.1"}]}`
	if _, err := ParseIndex([]byte(data)); err == nil || !strings.Contains(err.Error(), "listed twice (as 2026.1 and 2026.1.0)") {
		t.Errorf("2026.1 and 2026.1.0: %v", err)
	}
}
