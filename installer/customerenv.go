package installer

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"

	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/release"
)

// checkDomain is the one check of the name users reach CARTO at, whether
// it comes from --domain, appliance.yaml or customer.env: certificates are
// issued for it and clients are sent to it. what names where it came from,
// fix says how to correct it there.
func checkDomain(what, domain, fix string) error {
	if len(domain) <= 253 && domainRE.MatchString(domain) {
		return nil
	}
	return fmt.Errorf("%s %q is not a valid host name (letters, digits, - and . only: no scheme, port, path, wildcard or space): %s",
		what, envfile.MaskValue("SELFHOSTED_DOMAIN", domain), fix)
}

// checkRegistry is the one check of an image registry base path, whether
// it comes from --registry, appliance.yaml or customer.env.
func checkRegistry(what, base, fix string) error {
	if registryRE.MatchString(base) {
		if _, err := reference.ParseNormalizedNamed(base + "/probe"); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s %q is not a registry base path: give host[:port][/path], e.g. registry.example.com:5000/carto; %s",
		what, envfile.MaskValue("DOCKER_REGISTRY_BASE_PATH", base), fix)
}

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
// --registry (appliance.yaml registry): never to a host customer.env alone
// names.
func checkCustomerInputs(cfg Config, env envfile.Env, rel *release.Release) error {
	if domain := env.Get("SELFHOSTED_DOMAIN"); cfg.Domain == "" && domain != "" {
		if err := checkDomain("SELFHOSTED_DOMAIN", domain,
			"set it to the DNS name users reach CARTO at, e.g. carto.example.com, or pass --domain"); err != nil {
			return err
		}
	}
	if cfg.Registry != "" {
		return nil // named by the operator
	}
	base := env.Get("DOCKER_REGISTRY_BASE_PATH")
	if err := checkRegistry("DOCKER_REGISTRY_BASE_PATH", base,
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
		return fmt.Errorf("DOCKER_REGISTRY_BASE_PATH %q names registry %s, not CARTO's (%s), and key.json (a Google Cloud private key) "+
			"is sent as the pull password only to CARTO's registry or to one named with --registry: "+
			"remove DOCKER_REGISTRY_BASE_PATH from customer.env, or, if %s is your registry and may receive key.json, pass --registry %s",
			base, host, carto, host, base)
	}
	return nil
}
