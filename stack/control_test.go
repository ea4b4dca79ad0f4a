package stack

import (
	"slices"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/moby/api/types/container"
)

// A small stack shaped like CARTO's: a database, a migration, two APIs
// that need both, and a router in front of one API.
func controlProject() *types.Project {
	dep := func(names ...string) types.DependsOnConfig {
		d := types.DependsOnConfig{}
		for _, n := range names {
			d[n] = types.ServiceDependency{Condition: types.ServiceConditionHealthy}
		}
		return d
	}
	return &types.Project{Name: "t", Services: types.Services{
		"db":      {Name: "db"},
		"migrate": {Name: "migrate", DependsOn: dep("db")},
		"api":     {Name: "api", DependsOn: dep("db", "migrate")},
		"maps":    {Name: "maps", DependsOn: dep("db")},
		"router":  {Name: "router", DependsOn: dep("api")},
	}}
}

func TestDependentsAndDependencies(t *testing.T) {
	p := controlProject()
	for _, tc := range []struct {
		name  string
		fn    func(*types.Project, []string) []string
		names []string
		want  []string
	}{
		{"stopping the database stops everything on it", Dependents, []string{"db"}, []string{"api", "db", "maps", "migrate", "router"}},
		{"stopping an API stops the router in front of it", Dependents, []string{"api"}, []string{"api", "router"}},
		{"stopping a leaf stops only it", Dependents, []string{"router"}, []string{"router"}},
		{"unknown names are left out", Dependents, []string{"gone", "maps"}, []string{"maps"}},
		{"starting the router starts the chain behind it", Dependencies, []string{"router"}, []string{"api", "db", "migrate", "router"}},
		{"starting the database starts only it", Dependencies, []string{"db"}, []string{"db"}},
		{"several names", Dependencies, []string{"maps", "migrate"}, []string{"db", "maps", "migrate"}},
		{"nothing", Dependencies, nil, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.fn(p, tc.names)
			if !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// inReverseDependencyOrder never handles a service before one that
// depends on it.
func TestReverseDependencyOrder(t *testing.T) {
	p := controlProject()
	have := map[string]container.Summary{}
	for name := range p.Services {
		have[name] = container.Summary{}
	}
	done := map[string]bool{}
	var order []string
	var mu = make(chan struct{}, 1)
	err := inReverseDependencyOrder(p, have, func(s string, _ container.Summary) error {
		mu <- struct{}{}
		defer func() { <-mu }()
		for name, svc := range p.Services {
			if _, ok := svc.DependsOn[s]; ok && !done[name] {
				t.Errorf("%s handled before %s, which depends on it", s, name)
			}
		}
		done[s] = true
		order = append(order, s)
		return nil
	})
	if err != nil || len(order) != len(p.Services) {
		t.Fatalf("order %v, err %v", order, err)
	}
}
