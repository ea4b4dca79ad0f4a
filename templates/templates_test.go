package templates

import (
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/release"
)

func TestDefaultRelease(t *testing.T) {
	rel, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	m := rel.Manifest
	v, _ := release.ParseVersion(m.Version)
	for name, min := range map[string]string{"min_upgrade_from": m.MinUpgradeFrom, "min_customer_package_version": m.MinCustomerPackageVersion} {
		if mv, _ := release.ParseVersion(min); mv.Compare(v) > 0 {
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
