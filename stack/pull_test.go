package stack

import (
	"errors"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

// A pull that fails for want of a network says where the images can come
// from instead; a registry's own answer does not get that hint.
func TestPullErrorNamesTheBundleWhenTheRegistryIsUnreachable(t *testing.T) {
	ref := "gcr.io/carto-onp/maps-api:2026.1.0"
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{}
	for _, c := range []struct {
		engine string
		hint   bool
	}{
		{`Get "https://gcr.io/v2/": dial tcp: lookup gcr.io on 127.0.0.53:53: no such host`, true},
		{`Get "https://gcr.io/v2/": dial tcp 142.250.1.1:443: connect: network is unreachable`, true},
		{`Get "https://gcr.io/v2/": net/http: TLS handshake timeout`, true},
		{`manifest for gcr.io/carto-onp/maps-api:2026.1.0 not found: manifest unknown`, false},
	} {
		got := e.pullError(ref, named, nil, false, errors.New(c.engine)).Error()
		if strings.Contains(got, "bundle load") != c.hint || !strings.Contains(got, c.engine) {
			t.Errorf("%q gave %q (hint wanted: %v)", c.engine, got, c.hint)
		}
		if c.hint && !strings.Contains(got, "registry gcr.io cannot be reached") {
			t.Errorf("%q: the registry is not named: %q", c.engine, got)
		}
	}
}
