package templates

import (
	"strings"
	"testing"
)

func TestDefaultRelease(t *testing.T) {
	rel, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	m := rel.Manifest
	v, _ := ParseVersion(m.Version)
	for name, min := range map[string]string{"min_upgrade_from": m.MinUpgradeFrom, "min_customer_package_version": m.MinCustomerPackageVersion} {
		if mv, _ := ParseVersion(min); mv.Compare(v) > 0 {
			t.Errorf("%s %s is newer than the release %s", name, min, m.Version)
		}
	}
	// Every image of the manifest is used by the compose template, and
	// every image the template runs is in the manifest.
	for _, img := range m.Images {
		if !strings.Contains(string(rel.Compose), "${DOCKER_REGISTRY_BASE_PATH}/"+img+":${CARTO_SELFHOSTED_VERSION}") {
			t.Errorf("manifest image %s is not in the compose template", img)
		}
	}
	for _, line := range strings.Split(string(rel.Compose), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "image: ${DOCKER_REGISTRY_BASE_PATH}/"); ok {
			name, _, _ := strings.Cut(rest, ":")
			found := false
			for _, img := range m.Images {
				found = found || img == name
			}
			if !found {
				t.Errorf("the compose template runs %s, which the manifest does not list", name)
			}
		}
	}
}

func TestParseVersionAndCompare(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"2025.10.2", "2025.11.1", -1},
		{"2025.11", "2025.11.0", 0},
		{"v2025.11.3", "2025.11.3", 0},
		{"2025.11.10", "2025.11.9", 1},
	}
	for _, c := range cases {
		a, err := ParseVersion(c.a)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := ParseVersion(c.b)
		if got := a.Compare(b); got != c.want {
			t.Errorf("%s vs %s = %d, want %d", c.a, c.b, got, c.want)
		}
	}
	for _, bad := range []string{"", "2025.x", "2025..1", "-1", "2025.11.3-rc1"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseManifestRefusesUnknownFields(t *testing.T) {
	_, err := ParseManifest([]byte("version: 1.0\nmin_upgrade_from: 1.0\nmin_customer_package_version: 1.0\nimages: [a]\nimagez: [b]\n"))
	if err == nil || !strings.Contains(err.Error(), "imagez") {
		t.Fatalf("want an error naming imagez, got %v", err)
	}
}

// FuzzParseVersion: no panic, and a parsed version prints back to one that
// compares equal.
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"2025.11.3", "v1", "1.2.3.4", "", "..", "1.-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			return
		}
		w, err := ParseVersion(v.String())
		if err != nil || v.Compare(w) != 0 {
			t.Fatalf("%q -> %q does not round-trip: %v", s, v.String(), err)
		}
	})
}

// FuzzParseManifest: any input is refused with an error or accepted as a
// valid manifest; never a panic.
func FuzzParseManifest(f *testing.F) {
	f.Add("version: 2025.11.3\nmin_upgrade_from: 2025.6.2\nmin_customer_package_version: 2025.6.2\nimages: [a]\n")
	f.Add("version: [\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseManifest([]byte(s))
		if err == nil && len(m.Images) == 0 {
			t.Fatal("accepted a manifest without images")
		}
	})
}
