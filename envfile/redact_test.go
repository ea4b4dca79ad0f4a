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

// A Redaction masks what NewRedactor masks, and counts each find by what
// held the secret, never by the secret.
func TestRedactionCounts(t *testing.T) {
	env := NewEnv("POSTGRES_ADMIN_PASSWORD", "s3cr3t-admin", "SELFHOSTED_DOMAIN", "carto.example.com")
	r := NewRedaction(env, map[string][]string{"key.json": {"KEYID-123456"}})
	in := "login s3cr3t-admin at carto.example.com, again s3cr3t-admin, key KEYID-123456, url https://u:pw1234@h/ token=abcdefgh12345"
	out, counts := r.Redact(in)
	if want := NewRedactor(env, "KEYID-123456")(in); out != want {
		t.Errorf("Redact %q, NewRedactor %q", out, want)
	}
	for _, secret := range []string{"s3cr3t-admin", "KEYID-123456", "pw1234", "abcdefgh12345"} {
		if strings.Contains(out, secret) {
			t.Errorf("%q left in %q", secret, out)
		}
	}
	if counts["POSTGRES_ADMIN_PASSWORD"] != 2 || counts["key.json"] != 1 || counts[ShapeFinds] != 2 || len(counts) != 3 {
		t.Errorf("counts %v", counts)
	}
	if !strings.Contains(out, "carto.example.com") {
		t.Errorf("a harmless value masked: %q", out)
	}
}
