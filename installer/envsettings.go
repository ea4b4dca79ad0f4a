package installer

import (
	"slices"
	"strconv"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/proxy"
)

// envSettings are the .env keys the appliance sets from c; they
// win over customer.env and the env template. hostnames are the stack's
// names on its network, never proxied. notes are for the operator.
func envSettings(c config.Config, hostnames []string) ([]string, []string) {
	d := c.Defaults()
	kv := []string{
		"ROUTER_HTTP_PORT", strconv.Itoa(d.Router.HTTPPort),
		"ROUTER_HTTPS_PORT", strconv.Itoa(d.Router.HTTPSPort),
		"ROUTER_BIND_ADDRESS", d.Router.BindAddress,
		// The appliance always provides the certificate (certs/carto.crt).
		"ROUTER_SSL_AUTOGENERATE", "0",
		"ROUTER_ENABLE_HTTPS", strconv.FormatBool(!c.TLS.Offload()),
	}
	if c.Domain != "" {
		kv = append(kv, "SELFHOSTED_DOMAIN", c.Domain)
	}
	if c.Registry != "" {
		kv = append(kv, "DOCKER_REGISTRY_BASE_PATH", c.Registry)
	}
	if c.Distributed() && slices.Contains(c.ServiceRoles(), config.RoleApp) {
		// The embedded databases run on the data node, published on its
		// private address.
		data := c.Nodes[config.RoleData]
		kv = append(kv, "WORKSPACE_POSTGRES_HOST", data, "REDIS_HOST", data)
	}
	pkv, notes := proxy.Env(proxy.EnvInput{Settings: c.Proxy, Services: hostnames, Warehouses: c.Warehouses, Peers: c.Peers()})
	if !c.Proxy.Enabled() {
		notes = proxy.BypassNotes(c.Warehouses)
	}
	return append(kv, pkv...), notes
}
