package stack

import (
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
)

// After an interrupted recreate a service has two containers: the one with
// the canonical name is kept.
func TestPreferredContainer(t *testing.T) {
	canon := container.Summary{Names: []string{"/carto-maps-api-1"}, Labels: map[string]string{labelNumber: "1"}}
	tmp := container.Summary{Names: []string{"/0123456789ab_carto-maps-api-1"}, Labels: map[string]string{labelNumber: "1"}}
	if !preferred("carto", "maps-api", canon, tmp) || preferred("carto", "maps-api", tmp, canon) {
		t.Error("the canonical name does not win")
	}
	two := container.Summary{Names: []string{"/x"}, Labels: map[string]string{labelNumber: "2"}}
	one := container.Summary{Names: []string{"/y"}, Labels: map[string]string{labelNumber: "1"}}
	if !preferred("carto", "maps-api", one, two) {
		t.Error("the lower container number does not win")
	}
}

// ServiceHash ignores what compose ignores: a dependency change alone does
// not recreate a container.
func TestServiceHashIgnoresDependsOn(t *testing.T) {
	a := types.ServiceConfig{Name: "a", Image: "x"}
	b := a
	b.DependsOn = types.DependsOnConfig{"db": {Condition: types.ServiceConditionHealthy}}
	ha, _ := ServiceHash(a)
	hb, _ := ServiceHash(b)
	if ha != hb {
		t.Error("depends_on changed the hash")
	}
	c := a
	c.Image = "y"
	if hc, _ := ServiceHash(c); hc == ha {
		t.Error("an image change did not change the hash")
	}
}
