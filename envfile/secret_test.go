package envfile

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
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
	"REDIS_AUTH":                                true,
	"DATABASE_URL":                              false, // masked by value: its password

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
	// #11: names the first rules let through
	"APP_SALT":               true,
	"GPG_PASSPHRASE":         true,
	"KEYPASSPHRASE":          true,
	"SESSION_JWT":            true,
	"AZURE_STORAGE_SAS":      true,
	"WEBHOOK_HMAC":           true,
	"COOKIE_SIGNING":         true,
	"SALTLAKE_REGION":        false, // SALT only as a word
	"BIGQUERY_OAUTH2_SCOPES": false, // AUTH only as a word
}

func TestIsSecret(t *testing.T) {
	t.Parallel()
	for k, want := range secretKeys {
		if got := IsSecret(k); got != want {
			t.Errorf("IsSecret(%q) = %v, want %v", k, got, want)
		}
	}
}

// TestSecretTableCoversKnownKeys also checks that every known key that is
// not a secret is known to be harmless: shown whatever its shape.
func TestSecretTableCoversKnownKeys(t *testing.T) {
	t.Parallel()
	tpl, err := Parse(testRelease(t).EnvTemplate)
	if err != nil {
		t.Fatal(err)
	}
	customer, err := ReadFile("testdata/customer.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []Env{tpl, customer, applianceSettings()} {
		for _, k := range e.Keys() {
			secret, ok := secretKeys[k]
			if !ok {
				t.Errorf("key %s is not classified in secretKeys: add it, secret or not", k)
			}
			if !secret && !Harmless(k) {
				t.Errorf("key %s is not a secret but not known to be harmless: add it to harmlessKeys", k)
			}
		}
	}
}

func TestMaskValue(t *testing.T) {
	t.Parallel()
	const pemKey = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"
	const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhY21lIn0.c2lnbmF0dXJlLWZha2U"
	for _, tc := range []struct{ key, value, want string }{
		// By name.
		{"REDIS_AUTH", "hunter22", Mask},
		{"APP_SALT", "pepper", Mask},
		{"GPG_PASSPHRASE", "open sesame", Mask},
		{"SESSION_JWT", jwt, Mask},
		{"AZURE_SAS", "sv=2020&sig=x", Mask},
		{"WEBHOOK_HMAC", "abc", Mask},
		{"COOKIE_SIGNING", "abc", Mask},
		{"POSTGRES_ADMIN_PASSWORD", "", ""},
		// By value, whatever the key.
		{"DATABASE_URL", "postgres://carto:s3cret@db.acme.lan:5432/carto", "postgres://carto:" + Mask + "@db.acme.lan:5432/carto"},
		{"DATABASE_URL", "postgres://carto:p@ss/w0rd@db/carto?sslmode=require", "postgres://carto:" + Mask + "@db/carto?sslmode=require"},
		{"DATABASE_URL", "postgres://carto@db/carto", "postgres://carto@db/carto"},
		{"REDIS_URL", "rediss://:s3cret@cache:6380/0", "rediss://:" + Mask + "@cache:6380/0"},
		{"HTTPS_PROXY", "http://u:pw@proxy:3128", "http://u:" + Mask + "@proxy:3128"},
		{"STORAGE", "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=abc123+/==;EndpointSuffix=core.windows.net",
			"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=" + Mask + ";EndpointSuffix=core.windows.net"},
		{"EXPORT_URL", "https://acme.blob.core.windows.net/c?sv=2020-08-04&sig=abcDEF%2B123", "https://acme.blob.core.windows.net/c?sv=2020-08-04&sig=" + Mask},
		{"SQLSERVER", "Server=db;User Id=sa;Password=Pa55;", "Server=db;User Id=sa;Password=" + Mask + ";"},
		{"WELCOME_MESSAGE", "key: " + pemKey, Mask},
		{"CUSTOM_CONFIG", jwt, Mask},
		// Unknown keys: masked when the value looks like a token.
		{"CUSTOM_THING", "9f86d081884c7d659a2feaa0c55ad015", Mask},
		{"CUSTOM_THING", "123e4567-e89b-12d3-a456-426614174000", Mask},
		{"CUSTOM_THING", "hello world", "hello world"},
		{"CUSTOM_THING", "us-east-1", "us-east-1"},
		{"CUSTOM_THING", "gcr.io/carto-onprem-artifacts", "gcr.io/carto-onprem-artifacts"},
		{"CUSTOM_THING", "/usr/src/certs/a0b1c2d3e4f5a6b7c8d9.pem", "/usr/src/certs/a0b1c2d3e4f5a6b7c8d9.pem"},
		{"CUSTOM_THING", "2025.10.1", "2025.10.1"},
		// Known harmless keys are shown whatever their shape.
		{"CARTO_AUTH0_CLIENT_ID", "Xk2fakeClientId0123456789abcdef", "Xk2fakeClientId0123456789abcdef"},
		{"SELFHOSTED_TENANT_ID", "onp-acme01", "onp-acme01"},
		{"REACT_APP_ACCOUNTS_URL", "https://carto.example.com/acc/", "https://carto.example.com/acc/"},
		{"ROUTER_SSL_CERTIFICATE_KEY_PATH", "/etc/nginx/ssl/carto.key", "/etc/nginx/ssl/carto.key"},
	} {
		if got := MaskValue(tc.key, tc.value); got != tc.want {
			t.Errorf("MaskValue(%s, %q) = %q, want %q", tc.key, tc.value, got, tc.want)
		}
	}
}

func TestMaskText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"connecting to postgres://admin:hunter22@db:5432/x failed", "connecting to postgres://admin:" + Mask + "@db:5432/x failed"},
		{"GET /v1?token=abc123&page=2", "GET /v1?token=" + Mask + "&page=2"},
		{"Authorization: Bearer abcdefgh12345678", "Authorization: Bearer " + Mask},
		{`config {"password=x"}`, `config {"password=` + Mask + `"}`},
		{"key -----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY----- loaded", "key " + Mask + " loaded"},
		{"key -----BEGIN EC PRIVATE KEY----- MHcCAQEEI", "key " + Mask},
		{"nothing secret at https://carto.example.com/", "nothing secret at https://carto.example.com/"},
	} {
		if got := MaskText(tc.in); got != tc.want {
			t.Errorf("MaskText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSecretParts(t *testing.T) {
	t.Parallel()
	got := SecretParts("DATABASE_URL", "postgres://u:p%40ss@db/x")
	if !slices.Equal(got, []string{"p%40ss", "p@ss"}) {
		t.Errorf("SecretParts = %q, want the password, escaped and not", got)
	}
	if got := SecretParts("POSTGRES_ADMIN_PASSWORD", "hunter22"); !slices.Equal(got, []string{"hunter22"}) {
		t.Errorf("SecretParts = %q", got)
	}
	if got := SecretParts("LOG_LEVEL", "info"); len(got) != 0 {
		t.Errorf("SecretParts = %q, want none", got)
	}
}

// FuzzMaskValue checks that a value masked whole never shows, and that a
// URL's password never survives MaskValue.
func FuzzMaskValue(f *testing.F) {
	for _, s := range []string{"hunter22", "p@ss/w0rd", "a b", "%40", "x@y@z", "", "****", "**@d"} {
		f.Add("DATABASE_URL", s)
	}
	// A password that is part of the masked URL itself (the mask's stars,
	// "@db.") shows in any correct answer, so it proves nothing.
	const maskedURL = "postgres://carto:" + Mask + "@db.example.com:5432/carto"
	f.Fuzz(func(t *testing.T, key, password string) {
		if len(password) < 4 || strings.ContainsAny(password, " \t\n\r\v\f") || !utf8.ValidString(password) {
			return
		}
		v := "postgres://carto:" + password + "@db.example.com:5432/carto"
		got := MaskValue(key, v)
		if strings.Contains(got, password) && !strings.Contains(maskedURL, password) {
			t.Fatalf("MaskValue(%q, %q) = %q shows the password", key, v, got)
		}
		if IsSecret(key) && got != Mask {
			t.Fatalf("MaskValue(%q) = %q, want the mask", key, got)
		}
	})
}

func TestMasked(t *testing.T) {
	t.Parallel()
	env := NewEnv("A", "1", "DB_PASSWORD", "x", "API_TOKEN", "", "ROUTER_SSL_CERTIFICATE_KEY_PATH", "/k",
		"DATABASE_URL", "postgres://u:pw@db/x")
	m := Masked(env)
	want := []string{"A", "1", "DB_PASSWORD", Mask, "API_TOKEN", "", "ROUTER_SSL_CERTIFICATE_KEY_PATH", "/k",
		"DATABASE_URL", "postgres://u:" + Mask + "@db/x"}
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
