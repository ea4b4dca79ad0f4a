package envfile

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/release"
)

// validEnv passes Check against testManifest.
func validEnv() Env {
	return NewEnv(
		"SELFHOSTED_TENANT_ID", "onp-acme01",
		"SELFHOSTED_DOMAIN", "carto.example.com",
		"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION", "2025.10.1",
		"POSTGRES_ADMIN_PASSWORD", "hunter2",
		"WORKSPACE_POSTGRES_PASSWORD", "hunter3",
		"LOCAL_POSTGRES_SCALE", "1",
		"WORKSPACE_POSTGRES_HOST", "workspace-postgres",
		"LOCAL_REDIS_SCALE", "1",
		"REDIS_HOST", "redis",
	)
}

var testManifest = release.Manifest{
	Version:                   "2025.11.3",
	MinCustomerPackageVersion: "2025.6.2",
	RequiredEnv: []string{
		"SELFHOSTED_TENANT_ID", "SELFHOSTED_DOMAIN", "CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION",
		"POSTGRES_ADMIN_PASSWORD", "WORKSPACE_POSTGRES_PASSWORD",
	},
}

func TestCheck(t *testing.T) {
	t.Parallel()
	type change struct{ key, value string }
	for _, tc := range []struct {
		name    string
		changes []change
		unset   []string
		want    []Problem // Msg holds a substring of the message
	}{
		{name: "valid"},
		{name: "valid external services", changes: []change{
			{"LOCAL_POSTGRES_SCALE", "0"}, {"WORKSPACE_POSTGRES_HOST", "db.internal"},
			{"LOCAL_REDIS_SCALE", "0"}, {"REDIS_HOST", "cache.internal"},
		}},
		{name: "package exactly the minimum", changes: []change{{"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION", "2025.6.2"}}},
		{
			name:    "empty admin password",
			changes: []change{{"POSTGRES_ADMIN_PASSWORD", ""}},
			want: []Problem{{"POSTGRES_ADMIN_PASSWORD",
				"POSTGRES_ADMIN_PASSWORD is empty in customer.env: set it to the password of the Postgres admin user"}},
		},
		{
			name:  "missing domain",
			unset: []string{"SELFHOSTED_DOMAIN"},
			want:  []Problem{{"SELFHOSTED_DOMAIN", "SELFHOSTED_DOMAIN is missing from customer.env: set it in customer.env"}},
		},
		{
			name:    "external postgres on the embedded host",
			changes: []change{{"LOCAL_POSTGRES_SCALE", "0"}},
			want: []Problem{{"WORKSPACE_POSTGRES_HOST",
				`WORKSPACE_POSTGRES_HOST is "workspace-postgres", the embedded Postgres, but LOCAL_POSTGRES_SCALE=0 asks for an external Postgres: set WORKSPACE_POSTGRES_HOST to the host name`}},
		},
		{
			name:    "external postgres without host",
			changes: []change{{"LOCAL_POSTGRES_SCALE", "0"}, {"WORKSPACE_POSTGRES_HOST", ""}},
			want:    []Problem{{"WORKSPACE_POSTGRES_HOST", "WORKSPACE_POSTGRES_HOST is empty, but LOCAL_POSTGRES_SCALE=0"}},
		},
		{
			name:    "external redis on the embedded host",
			changes: []change{{"LOCAL_REDIS_SCALE", "0"}},
			want:    []Problem{{"REDIS_HOST", `REDIS_HOST is "redis", the embedded Redis, but LOCAL_REDIS_SCALE=0`}},
		},
		{
			name:    "external redis named valkey",
			changes: []change{{"LOCAL_REDIS_SCALE", "0"}, {"REDIS_HOST", "valkey"}},
			want:    []Problem{{"REDIS_HOST", `REDIS_HOST is "valkey", the embedded Redis`}},
		},
		{
			name:  "external redis without host",
			unset: []string{"REDIS_HOST"}, changes: []change{{"LOCAL_REDIS_SCALE", "0"}},
			want: []Problem{{"REDIS_HOST", "REDIS_HOST is empty, but LOCAL_REDIS_SCALE=0"}},
		},
		{
			name:    "bad scales",
			changes: []change{{"LOCAL_POSTGRES_SCALE", "2"}, {"LOCAL_REDIS_SCALE", "yes"}, {"LOCAL_OTHER_SCALE", ""}},
			want: []Problem{
				{"LOCAL_POSTGRES_SCALE", `LOCAL_POSTGRES_SCALE is "2": set it to 1 (run the embedded service) or 0 (use an external one)`},
				{"LOCAL_REDIS_SCALE", `LOCAL_REDIS_SCALE is "yes"`},
				{"LOCAL_OTHER_SCALE", `LOCAL_OTHER_SCALE is ""`},
			},
		},
		{
			name:    "old customer package",
			changes: []change{{"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION", "2025.5.10"}},
			want: []Problem{{"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION",
				"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION is 2025.5.10, older than 2025.6.2, the oldest customer package release 2025.11.3 accepts: download a new customer package from CARTO"}},
		},
		{
			name:    "customer package version not a version",
			changes: []change{{"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION", "latest"}},
			want:    []Problem{{"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION", `CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION "latest" is not a version`}},
		},
		{
			name:  "missing package version reported once",
			unset: []string{"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION"},
			want:  []Problem{{"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION", "CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION is missing from customer.env"}},
		},
		{
			name: "every problem at once",
			changes: []change{
				{"POSTGRES_ADMIN_PASSWORD", ""}, {"WORKSPACE_POSTGRES_PASSWORD", ""},
				{"LOCAL_POSTGRES_SCALE", "0"}, {"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION", "2024.1.1"},
			},
			want: []Problem{
				{"POSTGRES_ADMIN_PASSWORD", "POSTGRES_ADMIN_PASSWORD is empty"},
				{"WORKSPACE_POSTGRES_PASSWORD", "WORKSPACE_POSTGRES_PASSWORD is empty"},
				{"WORKSPACE_POSTGRES_HOST", "WORKSPACE_POSTGRES_HOST is"},
				{"CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION", "older than 2025.6.2"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := validEnv()
			for _, c := range tc.changes {
				env.Set(c.key, c.value)
			}
			if len(tc.unset) > 0 {
				var e Env
				for _, k := range env.Keys() {
					if !slices.Contains(tc.unset, k) {
						e.Set(k, env.Get(k))
					}
				}
				env = e
			}
			err := Check(env, testManifest)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ce *CheckError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want *CheckError", err, err)
			}
			if len(ce.Problems) != len(tc.want) {
				t.Fatalf("%d problems, want %d:\n%v", len(ce.Problems), len(tc.want), err)
			}
			for i, w := range tc.want {
				p := ce.Problems[i]
				if p.Key != w.Key || !strings.Contains(p.Msg, w.Msg) {
					t.Errorf("problem %d = %+v, want key %s and message containing %q", i, p, w.Key, w.Msg)
				}
				if strings.Contains(p.Msg, "hunter") {
					t.Errorf("problem %q shows a password", p.Msg)
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w.Msg) {
					t.Errorf("Error() %q lacks %q", err, w.Msg)
				}
			}
		})
	}
}

func TestCheckEmbeddedRelease(t *testing.T) {
	t.Parallel()
	rel := testRelease(t)
	// An empty customer.env rendered with the embedded template fails on
	// exactly the manifest's required keys.
	r := render(t, Env{}, string(rel.EnvTemplate), Env{})
	err := Check(r.Env, rel.Manifest)
	var ce *CheckError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v", err)
	}
	var keys []string
	for _, p := range ce.Problems {
		keys = append(keys, p.Key)
	}
	if !slices.Equal(keys, rel.Manifest.RequiredEnv) {
		t.Errorf("problems for %q, want the required keys %q", keys, rel.Manifest.RequiredEnv)
	}
	for _, k := range rel.Manifest.RequiredEnv {
		if _, ok := requiredHints[k]; !ok {
			t.Errorf("required key %s has no hint in requiredHints", k)
		}
	}
}
