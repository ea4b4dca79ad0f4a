package envfile

import (
	"strings"
	"testing"
)

func TestNewRedactorMasksSecretValuesOnly(t *testing.T) {
	env := NewEnv(
		"POSTGRES_ADMIN_PASSWORD", "hunter22",
		"WORKSPACE_POSTGRES_PASSWORD", "abc", // too short to mask safely
		"LOG_LEVEL", "info",
		"SELFHOSTED_DOMAIN", "carto.example.com",
	)
	got := NewRedactor(env)("connect postgres://admin:hunter22@db info carto.example.com abc")
	want := "connect postgres://admin:" + Mask + "@db info carto.example.com abc"
	if got != want {
		t.Errorf("redacted %q, want %q", got, want)
	}
	if strings.Contains(got, "hunter22") {
		t.Error("secret survived")
	}
}

// The failure logs hide what env render hides (#11): the names the first
// denylist missed, a URL's password (escaped or not), and secret shapes
// that no setting holds.
func TestNewRedactorMasksByNameAndByValue(t *testing.T) {
	env := NewEnv(
		"REDIS_AUTH", "r3dis-auth",
		"APP_SALT", "s4lty-salt",
		"DATABASE_URL", "postgres://carto:db%40pass@db.lan/carto",
	)
	redact := NewRedactor(env)
	for _, line := range []string{
		"auth r3dis-auth refused",
		"salt s4lty-salt",
		"login as carto with db@pass failed",
		"dsn postgres://carto:db%40pass@db.lan/carto",
		"session eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl",
		"Authorization: Bearer abcdefgh12345678",
	} {
		got := redact(line)
		for _, secret := range []string{"r3dis-auth", "s4lty-salt", "db@pass", "db%40pass", "eyJzdWIiOiJhIn0", "abcdefgh12345678"} {
			if strings.Contains(got, secret) {
				t.Errorf("redact(%q) = %q shows %q", line, got, secret)
			}
		}
	}
}

func TestKeySecrets(t *testing.T) {
	pemKey := "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----\n"
	got := KeySecrets([]byte(`{"private_key_id":"0a1b2c3d4e","private_key":"` + strings.ReplaceAll(pemKey, "\n", `\n`) + `"}`))
	redact := NewRedactor(Env{}, got...)
	for _, line := range []string{"credentials: " + pemKey, `{"private_key":"` + strings.ReplaceAll(pemKey, "\n", `\n`) + `"}`, "key id 0a1b2c3d4e"} {
		if r := redact(line); strings.Contains(r, "MIIEvQIBADANBgkq") || strings.Contains(r, "0a1b2c3d4e") {
			t.Errorf("key material survived: %q", r)
		}
	}
	if KeySecrets([]byte("not json")) != nil {
		t.Error("secrets from a file that is not JSON")
	}
}
