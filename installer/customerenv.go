package installer

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/release"
)

// registryHost is the host the engine pulls base's images from, and so the
// one the pull credentials go to (a path without a host is Docker Hub's).
func registryHost(base string) (string, error) {
	named, err := reference.ParseNormalizedNamed(base + "/probe")
	if err != nil {
		return "", err
	}
	return reference.Domain(named), nil
}

// cartoRegistry is the host of the release's own registry: the
// DOCKER_REGISTRY_BASE_PATH its env template gives when nothing else does.
func cartoRegistry(rel *release.Release) (string, error) {
	r, err := envfile.Render(envfile.RenderInput{Version: rel.Manifest.Version, EnvTemplate: rel.EnvTemplate})
	if err != nil {
		return "", err
	}
	host, err := registryHost(r.Env.Get("DOCKER_REGISTRY_BASE_PATH"))
	if err != nil {
		return "", fmt.Errorf("release %s: its env template's DOCKER_REGISTRY_BASE_PATH: %w: the release is broken, use another one", rel.Manifest.Version, err)
	}
	return host, nil
}

// checkCustomerInputs checks the settings of the rendered .env that the
// appliance itself acts on, when customer.env gives them rather than the
// operator's flags or appliance.yaml (checked by Config.Validate):
// SELFHOSTED_DOMAIN, and DOCKER_REGISTRY_BASE_PATH, whose host receives
// key.json, a Google Cloud private key, as the pull password. key.json
// goes only to CARTO's registry or to one the operator named with
// appliance.yaml registry: never to a host customer.env alone
// names.
func checkCustomerInputs(cfg config.Config, env envfile.Env, rel *release.Release) error {
	if cfg.Distributed() {
		for _, k := range []string{"LOCAL_POSTGRES_SCALE", "LOCAL_REDIS_SCALE"} {
			if env.Get(k) == "0" {
				return inputErrorf(InputLayout, "customer.env sets %s=0 (an external database), but the %s layout runs the embedded Postgres and Valkey on its data node: "+
					"remove %s from customer.env, or use the standard layout, which works with external databases", k, cfg.Layout, k)
			}
		}
	}
	if domain := env.Get("SELFHOSTED_DOMAIN"); cfg.Domain == "" && domain != "" {
		if err := config.CheckDomain("SELFHOSTED_DOMAIN", domain,
			"set it to the DNS name users reach CARTO at, e.g. carto.example.com, or give the domain to the appliance"); err != nil {
			return &InputError{Input: InputDomain, Err: err}
		}
	}
	if cfg.Registry != "" {
		return nil // named by the operator
	}
	base := env.Get("DOCKER_REGISTRY_BASE_PATH")
	if err := config.CheckRegistry("DOCKER_REGISTRY_BASE_PATH", base,
		"fix it, or remove it from customer.env to pull from CARTO's registry"); err != nil {
		return err
	}
	host, err := registryHost(base)
	if err != nil {
		return err
	}
	carto, err := cartoRegistry(rel)
	if err != nil {
		return err
	}
	if !strings.EqualFold(host, carto) {
		return inputErrorf(InputRegistry, "DOCKER_REGISTRY_BASE_PATH %q names registry %s, not CARTO's (%s), and key.json (a Google Cloud private key) "+
			"is sent as the pull password only to CARTO's registry or to one the operator names as the appliance's registry: "+
			"remove DOCKER_REGISTRY_BASE_PATH from customer.env, or, if %s is your registry and may receive key.json, name %s as the appliance's registry",
			base, host, carto, host, base)
	}
	return nil
}
