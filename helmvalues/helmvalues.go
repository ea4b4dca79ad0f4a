// Package helmvalues renders the values file of CARTO's official Helm
// chart (carto-selfhosted-helm) for an appliance's settings: the way on
// for an installation that outgrows three VMs (SPEC §10.3), which goes to
// Kubernetes with CARTO's chart, never to a home-made cluster.
//
// It owns the mapping from the appliance's settings to the chart's keys
// (chart 1.287.1's names): the domain, the router's service and TLS per
// CARTO's recommended load balancing patterns, the forward proxy and the
// CAs to trust, external PostgreSQL and Redis, and the customer package's
// settings. Secrets never appear in the values: each is a reference to a
// key of a Kubernetes Secret the operator creates (the file's header says
// which keys, from which customer.env variables).
package helmvalues

import (
	"bytes"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Chart is the chart version whose key names the values use.
const Chart = "1.287.1"

// Secret and ConfigMap names the values refer to; the header tells how to
// create them.
const (
	SecretName    = "carto-secrets"
	TLSSecretName = "carto-tls"
)

// Input is what the values are made of.
type Input struct {
	Domain string
	// TLSOffload: a load balancer or Ingress in front ends TLS (the
	// appliance's offload mode, and the seed's recommended pattern);
	// otherwise TLS goes through to the router (end to end) with the
	// certificate from the TLS Secret.
	TLSOffload bool
	// AllowedSources restrict who reaches the router's load balancer.
	AllowedSources []string
	Proxy          *Proxy
	// TrustedCA is PEM of CAs the services trust for outbound TLS (the
	// proxy's): certificates, not secrets.
	TrustedCA string
	// Postgres is the external database; nil: the appliance's embedded
	// one, which the cluster cannot reach (a warning says how to move it).
	Postgres *Postgres
	// Redis is the external cache; nil: the chart's own (a cache: nothing
	// to move).
	Redis *Redis
	// Env is the appliance's .env: the customer package's settings that
	// have a chart key are carried over (secrets as references).
	Env map[string]string
	// CustomerKeys are customer.env's variable names: those without a
	// chart key are listed in the header, to set by hand.
	CustomerKeys []string
	// GoogleKey says the customer package has a key.json (a Google Cloud
	// service account): a Secret key, referenced.
	GoogleKey bool
}

// Proxy is the forward proxy the services go out through.
type Proxy struct {
	URL                string
	NoProxy            []string
	RejectUnauthorized bool
}

// Postgres is an external PostgreSQL.
type Postgres struct {
	Host, User, Database, AdminUser, AdminDatabase string
	Port                                           int
	SSL                                            bool
}

// Redis is an external Redis.
type Redis struct {
	Host string
	Port int
	TLS  bool
}

// setting is a non-secret customer.env variable with a chart key.
type setting struct {
	env  string
	path string // dotted chart key
}

var settings = []setting{
	{"SELFHOSTED_TENANT_ID", "cartoConfigValues.selfHostedTenantId"},
	{"SELFHOSTED_GCP_PROJECT_ID", "cartoConfigValues.selfHostedGcpProjectId"},
	{"SELFHOSTED_GCP_PROJECT_REGION", "cartoConfigValues.selfHostedGcpProjectRegion"},
	{"CARTO_AUTH0_CLIENT_ID", "cartoConfigValues.cartoAuth0ClientId"},
	{"CARTO_AUTH0_CUSTOM_DOMAIN", "cartoConfigValues.cartoAuth0CustomDomain"},
	{"CARTO_SELFHOSTED_DW_LOCATION", "cartoConfigValues.cartoSelfhostedDwLocation"},
	{"LAUNCHDARKLY_CLIENT_SIDE_ID", "cartoConfigValues.launchDarklyClientSideId"},
}

// secretRef is a secret customer.env variable and the chart's
// existingSecret reference for it: path is the reference's parent
// (path.existingSecret.name/key), or, with nameKey and keyKey, the two
// keys that name the Secret and its key (externalPostgresql's style).
type secretRef struct {
	env     string
	key     string // the key in the Secret
	path    string
	nameKey string
	keyKey  string
}

var secretRefs = []secretRef{
	{env: "ENCRYPTION_SECRET_KEY", key: "encryption-secret-key", path: "cartoSecrets.encryptionSecretKey"},
	{env: "JWT_API_SECRET", key: "jwt-api-secret", path: "cartoSecrets.jwtApiSecret"},
	{env: "LAUNCHDARKLY_SDK_KEY", key: "launchdarkly-sdk-key", path: "cartoSecrets.launchDarklySdkKey"},
	{env: "VARNISH_PURGE_SECRET", key: "varnish-purge-secret", path: "cartoSecrets.varnishPurgeSecret"},
	{env: "VARNISH_DEBUG_SECRET", key: "varnish-debug-secret", path: "cartoSecrets.varnishDebugSecret"},
	{env: "GOOGLE_MAPS_API_KEY", key: "google-maps-api-key", path: "appSecrets.googleMapsApiKey"},
	{env: "BIGQUERY_OAUTH2_CLIENT_SECRET", key: "bigquery-oauth2-client-secret", path: "appSecrets.bigqueryOauth2ClientSecret"},
}

// The keys of the database and cache passwords in the Secret.
var (
	pgPassword = secretRef{env: "WORKSPACE_POSTGRES_PASSWORD", key: "workspace-postgres-password", nameKey: "externalPostgresql.existingSecret", keyKey: "externalPostgresql.existingSecretPasswordKey"}
	pgAdmin    = secretRef{env: "POSTGRES_ADMIN_PASSWORD", key: "postgres-admin-password", nameKey: "externalPostgresql.existingSecret", keyKey: "externalPostgresql.existingSecretAdminPasswordKey"}
	redisPass  = secretRef{env: "REDIS_PASSWORD", key: "redis-password", nameKey: "externalRedis.existingSecret", keyKey: "externalRedis.existingSecretPasswordKey"}
	googleKey  = secretRef{key: "key.json", path: "cartoSecrets.defaultGoogleServiceAccount"}
)

// Values are the rendered file and what the operator must know.
type Values struct {
	YAML []byte
	// Warnings are what the values cannot carry over by themselves.
	Warnings []string
}

// Render makes the values file. Bad input (a domain or a proxy URL that
// does not parse) is an error naming it; nothing else is.
func Render(in Input) (*Values, error) {
	if in.Domain == "" {
		return nil, fmt.Errorf("no domain: the values need SELFHOSTED_DOMAIN (or the appliance's domain setting)")
	}
	// The header names it too: a host name only, nothing a comment line
	// could not hold.
	if !hostName.MatchString(in.Domain) {
		return nil, fmt.Errorf("the domain %q is not a host name (letters, digits, - and . only): fix SELFHOSTED_DOMAIN or the appliance's domain setting", in.Domain)
	}
	v := &Values{}
	root := map[string]any{}
	set := func(path string, value any) { setPath(root, path, value) }
	set("appConfigValues.selfHostedDomain", in.Domain)

	// The router, per CARTO's recommended patterns (seed 000): TLS
	// offloaded at an Ingress or a cloud load balancer in front of a
	// ClusterIP service, or end to end through a LoadBalancer service to
	// the router, which holds the certificate.
	if in.TLSOffload {
		set("router.service.type", "ClusterIP")
		set("router.service.ports.http", 80)
		set("tlsCerts.httpsEnabled", false)
	} else {
		set("router.service.type", "LoadBalancer")
		set("tlsCerts.httpsEnabled", true)
		set("tlsCerts.autoGenerate", false)
		set("tlsCerts.existingSecret.name", TLSSecretName)
		set("tlsCerts.existingSecret.certKey", "tls.crt")
		set("tlsCerts.existingSecret.keyKey", "tls.key")
		if len(in.AllowedSources) > 0 {
			set("router.service.loadBalancerSourceRanges", in.AllowedSources)
		}
	}
	if len(in.AllowedSources) > 0 && in.TLSOffload {
		v.Warnings = append(v.Warnings, fmt.Sprintf("network.allowed_sources (%s) is not carried over with TLS offloading: restrict the sources on your Ingress or load balancer", strings.Join(in.AllowedSources, ", ")))
	}

	if p := in.Proxy; p != nil {
		u, err := url.Parse(p.URL)
		if err != nil || u.Hostname() == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("proxy.url %q is not an http(s)://host:port URL: fix it with carto-appliance proxy set", p.URL)
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		set("externalProxy.enabled", true)
		set("externalProxy.host", u.Hostname())
		set("externalProxy.port", port)
		set("externalProxy.type", u.Scheme)
		set("externalProxy.excludedDomains", append([]string{}, p.NoProxy...))
		set("externalProxy.sslRejectUnauthorized", p.RejectUnauthorized)
	}
	if in.TrustedCA != "" {
		set("trustedCACerts.value", in.TrustedCA)
	}

	var secretKeys []secretRef
	ref := func(r secretRef) {
		if r.path != "" {
			set(r.path+".existingSecret.name", SecretName)
			set(r.path+".existingSecret.key", r.key)
		} else {
			set(r.nameKey, SecretName)
			set(r.keyKey, r.key)
		}
		secretKeys = append(secretKeys, r)
	}
	// The chart's own PostgreSQL is deprecated: the database is always
	// external to it, and its passwords are the Secret's.
	set("internalPostgresql.enabled", false)
	ref(pgPassword)
	if in.Env[pgAdmin.env] != "" {
		ref(pgAdmin)
	}
	if pg := in.Postgres; pg != nil {
		set("externalPostgresql.host", pg.Host)
		set("externalPostgresql.port", pg.Port)
		set("externalPostgresql.user", pg.User)
		set("externalPostgresql.database", pg.Database)
		set("externalPostgresql.sslEnabled", pg.SSL)
		if pg.AdminUser != "" {
			set("externalPostgresql.adminUser", pg.AdminUser)
		}
		if pg.AdminDatabase != "" {
			set("externalPostgresql.adminDatabase", pg.AdminDatabase)
		}
	} else {
		set("externalPostgresql.host", "")
		v.Warnings = append(v.Warnings, "the database is the appliance's embedded PostgreSQL, which the cluster cannot reach: restore a backup's workspace.dump into a PostgreSQL the cluster reaches and set externalPostgresql.host (and port, user, database)")
	}
	if r := in.Redis; r != nil {
		set("internalRedis.enabled", false)
		set("externalRedis.host", r.Host)
		set("externalRedis.port", r.Port)
		set("externalRedis.tlsEnabled", r.TLS)
		if in.Env[redisPass.env] != "" {
			ref(redisPass)
		}
	}

	used := map[string]bool{"SELFHOSTED_DOMAIN": true, pgPassword.env: true, pgAdmin.env: true, redisPass.env: true}
	for _, s := range settings {
		used[s.env] = true
		if val := in.Env[s.env]; val != "" {
			set(s.path, val)
		}
	}
	for _, r := range secretRefs {
		used[r.env] = true
		if in.Env[r.env] != "" {
			ref(r)
		}
	}
	if in.GoogleKey {
		ref(googleKey)
	}
	var unmapped []string
	for _, k := range in.CustomerKeys {
		if !used[k] && !carriedByTheChart[k] && envName.MatchString(k) {
			unmapped = append(unmapped, k)
		}
	}
	slices.Sort(unmapped)

	body, err := marshal(root)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	header(&b, in, secretKeys, unmapped)
	b.Write(body)
	v.YAML = b.Bytes()
	if len(unmapped) > 0 {
		v.Warnings = append(v.Warnings, fmt.Sprintf("customer.env settings without a chart value here, to set by hand if you use them: %s", strings.Join(unmapped, ", ")))
	}
	return v, nil
}

var (
	hostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)
	envName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// carriedByTheChart are customer.env variables the chart derives or
// replaces itself (the embedded databases' switches, the registry and the
// customer package's own version).
var carriedByTheChart = map[string]bool{
	"LOCAL_POSTGRES_SCALE": true, "LOCAL_REDIS_SCALE": true,
	"WORKSPACE_POSTGRES_HOST": true, "WORKSPACE_POSTGRES_PORT": true, "WORKSPACE_POSTGRES_USER": true,
	"WORKSPACE_POSTGRES_DB": true, "WORKSPACE_POSTGRES_SSL_ENABLED": true, "WORKSPACE_POSTGRES_SSL_MODE": true,
	"POSTGRES_ADMIN_USER": true, "POSTGRES_ADMIN_DB": true,
	"REDIS_HOST": true, "REDIS_PORT": true, "REDIS_TLS_ENABLED": true,
	"DOCKER_REGISTRY_BASE_PATH": true, "CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION": true,
}

// header says what the values are and how to create what they refer to,
// with the customer.env variable each Secret key comes from: names only.
func header(b *bytes.Buffer, in Input, secrets []secretRef, unmapped []string) {
	fmt.Fprintf(b, "# Values for CARTO's Helm chart (carto-selfhosted-helm %s), written by\n", Chart)
	fmt.Fprintf(b, "# carto-appliance export helm-values for %s. No secret is in this file: create\n", in.Domain)
	fmt.Fprintf(b, "# the Kubernetes Secret it refers to from the customer package first, in a\n")
	fmt.Fprintf(b, "# shell that read customer.env's variables (set -a; . ./customer.env; set +a):\n#\n")
	fmt.Fprintf(b, "#   kubectl create secret generic %s \\\n", SecretName)
	for i, s := range secrets {
		end := " \\"
		if i == len(secrets)-1 {
			end = ""
		}
		if s.env == "" {
			fmt.Fprintf(b, "#     --from-file=%s=key.json%s\n", s.key, end)
			continue
		}
		fmt.Fprintf(b, "#     --from-literal=%s=\"$%s\"%s\n", s.key, s.env, end)
	}
	fmt.Fprintf(b, "#\n")
	if !in.TLSOffload {
		fmt.Fprintf(b, "#   kubectl create secret tls %s --cert=carto.crt --key=carto.key\n", TLSSecretName)
		fmt.Fprintf(b, "#   (the router's certificate: the config dir's certs/router/, or a new one)\n")
	} else {
		fmt.Fprintf(b, "#\n# TLS is offloaded: your Ingress or load balancer ends TLS for %s and\n# forwards plain HTTP to the router's ClusterIP service on port 80.\n", in.Domain)
	}
	if len(unmapped) > 0 {
		fmt.Fprintf(b, "#\n# Not carried over (set by hand if you use them): %s\n", strings.Join(unmapped, ", "))
	}
	b.WriteString("\n")
}

// setPath sets a dotted key in nested maps.
func setPath(root map[string]any, path string, value any) {
	parts := strings.Split(path, ".")
	m := root
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = value
}

func marshal(root map[string]any) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("writing the values: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("writing the values: %w", err)
	}
	return b.Bytes(), nil
}
