package installer

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/helmvalues"
	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/proxy"
)

// ExportHelmValues renders the values of CARTO's Helm chart for the
// installed settings (helmvalues): planned as a config apply would be,
// nothing changed.
func ExportHelmValues(paths config.Paths) (*helmvalues.Values, error) {
	paths = paths.WithDefaults()
	d, err := planInstalled(paths, nil, TLSInput{})
	if err != nil {
		return nil, err
	}
	cfg := d.cfg.Defaults()
	customer, err := envfile.Parse(d.customer)
	if err != nil {
		return nil, fmt.Errorf("reading customer.env: %w", err)
	}
	in := helmvalues.Input{
		Domain:         d.env.Get("SELFHOSTED_DOMAIN"),
		TLSOffload:     cfg.TLS.Mode == config.TLSOffload,
		AllowedSources: cfg.Network.AllowedSources,
		Env:            d.env.Map(),
		CustomerKeys:   customer.Keys(),
		GoogleKey:      len(d.key) > 0,
	}
	if p := cfg.Proxy; p.Enabled() {
		in.Proxy = &helmvalues.Proxy{URL: p.URL, NoProxy: p.NoProxy, RejectUnauthorized: p.Rejects()}
		if p.CACert != "" {
			file := filepath.Join(paths.ConfigDir, config.CertsDirName, p.CACert)
			ca, err := boundedread.ReadFile(file, boundedread.PEM)
			if err != nil {
				return nil, fmt.Errorf("reading the proxy's CA (proxy.ca_cert): %w", err)
			}
			// The values are meant to be shared: certificates only, as
			// proxy set checked (the file may have been edited since).
			if err := proxy.CheckCA(ca, file); err != nil {
				return nil, fmt.Errorf("%w; put the proxy's CA back with carto-appliance proxy set --proxy-ca-cert FILE", err)
			}
			in.TrustedCA = string(ca)
		}
	}
	port := func(key string, def int) int {
		if n, err := strconv.Atoi(d.env.Get(key)); err == nil && n > 0 && n < 65536 {
			return n
		}
		return def
	}
	// A tier layout's data node runs the databases on its private
	// address: to the cluster, external databases (reached there until
	// they move to a managed service).
	dataNode := ""
	if cfg.Distributed() {
		dataNode = cfg.Nodes[config.RoleData]
	}
	if d.env.Get("LOCAL_POSTGRES_SCALE") == "0" || dataNode != "" {
		in.Postgres = &helmvalues.Postgres{
			Host: orDefault(dataNode, d.env.Get("WORKSPACE_POSTGRES_HOST")), Port: port("WORKSPACE_POSTGRES_PORT", 5432),
			User: d.env.Get("WORKSPACE_POSTGRES_USER"), Database: d.env.Get("WORKSPACE_POSTGRES_DB"),
			SSL:       d.env.Get("WORKSPACE_POSTGRES_SSL_ENABLED") == "true",
			AdminUser: d.env.Get("POSTGRES_ADMIN_USER"), AdminDatabase: d.env.Get("POSTGRES_ADMIN_DB"),
		}
	}
	if d.env.Get("LOCAL_REDIS_SCALE") == "0" || dataNode != "" {
		in.Redis = &helmvalues.Redis{Host: orDefault(dataNode, d.env.Get("REDIS_HOST")), Port: port("REDIS_PORT", 6379), TLS: d.env.Get("REDIS_TLS_ENABLED") == "true"}
	}
	return helmvalues.Render(in)
}
