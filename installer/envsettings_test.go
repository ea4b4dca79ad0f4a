package installer

import (
	"testing"

	"github.com/cartodb/carto-appliance/config"
)

// Drift guard: every appliance setting reaches .env, so a new field cannot
// be added without deciding how the stack sees it.
func TestEveryConfigFieldReachesEnv(t *testing.T) {
	c := config.Config{Domain: "d.example.com", Registry: "r.example.com/x", Router: config.RouterConfig{HTTPPort: 81, HTTPSPort: 444, BindAddress: "127.0.0.2"}}
	got := map[string]string{}
	kv, _ := envSettings(c, []string{"maps-api"})
	for i := 0; i+1 < len(kv); i += 2 {
		got[kv[i]] = kv[i+1]
	}
	want := map[string]string{
		"SELFHOSTED_DOMAIN": "d.example.com", "DOCKER_REGISTRY_BASE_PATH": "r.example.com/x",
		"ROUTER_HTTP_PORT": "81", "ROUTER_HTTPS_PORT": "444", "ROUTER_BIND_ADDRESS": "127.0.0.2",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}
