package envfile

import (
	"testing"
)

// secretKeys classifies every key of the embedded env template and of
// testdata/customer.env, plus keys CARTO documents for customer.env.
// TestSecretTableCoversKnownKeys fails when a new key is not listed, so each
// new key gets a deliberate decision.
var secretKeys = map[string]bool{
	// customer.env
	"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION": false,
	"SELFHOSTED_TENANT_ID":                      false,
	"SELFHOSTED_GCP_PROJECT_ID":                 false,
	"SELFHOSTED_GCP_PROJECT_REGION":             false,
	"SELFHOSTED_DOMAIN":                         false,
	"CARTO_AUTH0_CLIENT_ID":                     false,
	"CARTO_AUTH0_CUSTOM_DOMAIN":                 false,
	"CARTO_SELFHOSTED_INSTANCE_ID":              false,
	"POSTGRES_ADMIN_PASSWORD":                   true,
	"WORKSPACE_POSTGRES_PASSWORD":               true,
	"REDIS_PASSWORD":                            true,
	"ENCRYPTION_SECRET_KEY":                     true,
	"WORKSPACE_JWT_SECRET":                      true,
	"LAUNCHDARKLY_SDK_KEY":                      true,
	"GOOGLE_MAPS_API_KEY":                       true,
	"BIGQUERY_OAUTH2_CLIENT_ID":                 false,
	"BIGQUERY_OAUTH2_CLIENT_SECRET":             true,
	"WORKSPACE_THUMBNAILS_PROVIDER":             false,
	"WORKSPACE_THUMBNAILS_BUCKET":               false,
	"WORKSPACE_THUMBNAILS_ACCESSKEYID":          true, // half of a credential pair: masked
	"WORKSPACE_THUMBNAILS_SECRETACCESSKEY":      true,
	"WORKSPACE_THUMBNAILS_REGION":               false,
	"WORKSPACE_THUMBNAILS_KEYFILENAME":          false, // a path
	"WORKSPACE_THUMBNAILS_STORAGE_ACCESSKEY":    true,
	"WORKSPACE_THUMBNAILS_STORAGE_ACCOUNT":      false,
	"IMPORT_AWS_ACCESS_KEY_ID":                  true,
	"IMPORT_AWS_SECRET_ACCESS_KEY":              true,
	"IMPORT_AWS_ROLE_ARN":                       false,
	"WELCOME_MESSAGE":                           false,
	"MAPS_API_V3_POSTGRES_POOL_SIZE":            false,
	"WORKSPACE_POSTGRES_SSL_CA":                 false, // a path
	"REDIS_TLS_CA":                              false, // a path
	"HTTPS_PROXY":                               false, // credentials in proxy URLs are refused
	"https_proxy":                               false,
	"NODE_EXTRA_CA_CERTS":                       false,

	// env template
	"GOOGLE_APPLICATION_CREDENTIALS":             false, // the path of key.json
	"DOCKER_REGISTRY_BASE_PATH":                  false,
	"LOCAL_POSTGRES_SCALE":                       false,
	"POSTGRES_ADMIN_USER":                        false,
	"POSTGRES_ADMIN_DB":                          false,
	"WORKSPACE_POSTGRES_HOST":                    false,
	"WORKSPACE_POSTGRES_PORT":                    false,
	"WORKSPACE_POSTGRES_USER":                    false,
	"WORKSPACE_POSTGRES_DB":                      false,
	"WORKSPACE_POSTGRES_SSL_ENABLED":             false,
	"WORKSPACE_POSTGRES_SSL_MODE":                false,
	"LOCAL_REDIS_SCALE":                          false,
	"REDIS_HOST":                                 false,
	"REDIS_PORT":                                 false,
	"REDIS_TLS_ENABLED":                          false,
	"REDIS_CACHE_PREFIX":                         false,
	"ROUTER_ENABLE_HTTPS":                        false,
	"ROUTER_SSL_AUTOGENERATE":                    false,
	"ROUTER_SSL_CERTIFICATE_PATH":                false,
	"ROUTER_SSL_CERTIFICATE_KEY_PATH":            false, // a path, though it names a key
	"REACT_APP_CLIENT_ID":                        false,
	"REACT_APP_AUTH0_DOMAIN":                     false,
	"REACT_APP_ACCOUNTS_URL":                     false,
	"REACT_APP_WORKSPACE_API_URL":                false,
	"REACT_APP_API_BASE_URL":                     false,
	"REACT_APP_PUBLIC_MAP_URL":                   false,
	"REACT_APP_AUTH0_AUDIENCE":                   false,
	"REACT_APP_WORKSPACE_URL_TEMPLATE":           false,
	"REACT_APP_CUSTOM_TENANT":                    false,
	"AUTH0_AUDIENCE":                             false,
	"AUTH0_DOMAIN":                               false,
	"AUTH0_NAMESPACE":                            false,
	"LOG_LEVEL":                                  false,
	"PUBSUB_MODE":                                false,
	"PUBSUB_PROJECT_ID":                          false,
	"CARTO_SELFHOSTED_NAME":                      false,
	"CARTO_SELFHOSTED_DOMAIN":                    false,
	"CARTO_SELFHOSTED_GCP_PROJECT_ID":            false,
	"WORKSPACE_TENANT_ID":                        false,
	"WORKSPACE_PUBSUB_DATA_UPDATES_TOPIC":        false,
	"WORKSPACE_PUBSUB_DATA_UPDATES_SUBSCRIPTION": false,
	"MAPS_API_V3_RESOURCE_URL_HOST":              false,
	"MAPS_API_V3_RESOURCE_URL_ALLOWED_HOSTS":     false,
	"IMPORT_TENANT_ID":                           false,
	"IMPORT_WORKER_PROCESSING_DIR":               false,
	"IMPORT_PUBSUB_TENANT_BUS_TOPIC":             false,
	"IMPORT_PUBSUB_TENANT_BUS_SUBSCRIPTION":      false,
	"CDN_INVALIDATOR_BACKEND_ENGINE":             false,
	"CDN_INVALIDATOR_OPERATION_MODE":             false,
	"CDN_INVALIDATOR_SUBSCRIBER_SUBSCRIPTION":    false,
	"CDN_INVALIDATOR_TENANT_ID":                  false,

	// rendered by the appliance
	"CARTO_SELFHOSTED_VERSION": false,
	"ROUTER_HTTP_PORT":         false,
	"ROUTER_HTTPS_PORT":        false,

	// the rules' edges
	"GITHUB_TOKEN":                true,
	"api-token":                   true,
	"my.secret":                   true,
	"SERVICE_ACCOUNT_PRIVATE_KEY": true,
	"TOKEN_FILE":                  false,
	"PASSWORD_PATH":               false,
	"SSH_KEY_DIR":                 false,
	"DB_PASS":                     true,
	"PASSTHROUGH_MODE":            false,
	"SENTRY_DSN":                  true,
	"SELFHOSTED_SNOWFLAKE_HOST":   false, // "DSN" across words is not a DSN
	"AZURE_CONNECTION_STRING":     true,
	"VALKEY":                      false,
	"":                            false,
	"_":                           false,
}

func TestIsSecret(t *testing.T) {
	t.Parallel()
	for k, want := range secretKeys {
		if got := IsSecret(k); got != want {
			t.Errorf("IsSecret(%q) = %v, want %v", k, got, want)
		}
	}
}

func TestSecretTableCoversKnownKeys(t *testing.T) {
	t.Parallel()
	tpl, err := Parse(release(t).EnvTemplate)
	if err != nil {
		t.Fatal(err)
	}
	customer, err := ReadFile("testdata/customer.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []Env{tpl, customer, applianceSettings()} {
		for _, k := range e.Keys() {
			if _, ok := secretKeys[k]; !ok {
				t.Errorf("key %s is not classified in secretKeys: add it, secret or not", k)
			}
		}
	}
}

func TestMasked(t *testing.T) {
	t.Parallel()
	env := NewEnv("A", "1", "DB_PASSWORD", "x", "API_TOKEN", "", "ROUTER_SSL_CERTIFICATE_KEY_PATH", "/k")
	m := Masked(env)
	want := []string{"A", "1", "DB_PASSWORD", Mask, "API_TOKEN", "", "ROUTER_SSL_CERTIFICATE_KEY_PATH", "/k"}
	got := pairs(m)
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %q, want %q", got, want)
			break
		}
	}
	if env.Get("DB_PASSWORD") != "x" {
		t.Error("Masked changed its argument")
	}
}
