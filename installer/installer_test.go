package installer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
)

func TestRedactorMasksTheKeyJSONPrivateKey(t *testing.T) {
	pemKey := "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----\n"
	d := &desired{env: envfile.NewEnv("LOG_LEVEL", "info"), key: []byte(`{"type":"service_account","private_key_id":"0a1b2c3d4e","private_key":"` + strings.ReplaceAll(pemKey, "\n", `\n`) + `"}`)}
	redact := d.redactor()
	for _, line := range []string{"credentials: " + pemKey, `loaded {"private_key":"` + strings.ReplaceAll(pemKey, "\n", `\n`) + `"}`, "key id 0a1b2c3d4e"} {
		if got := redact(line); strings.Contains(got, "MIIEvQIBADANBgkq") || strings.Contains(got, "0a1b2c3d4e") {
			t.Errorf("key material survived: %q", got)
		}
	}
}

func TestConvergeLockIsExclusive(t *testing.T) {
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	unlock, ok, err := TryLockConverge(paths)
	if err != nil || !ok {
		t.Fatalf("first lock: %v %v", ok, err)
	}
	if _, ok, err := TryLockConverge(paths); ok || err != nil {
		t.Fatalf("second lock while held: ok=%v err=%v", ok, err)
	}
	unlock()
	unlock2, ok, err := TryLockConverge(paths)
	if err != nil || !ok {
		t.Fatalf("lock after release: %v %v", ok, err)
	}
	unlock2()
}

// `logs` masks what the failure logs mask, from the installed files.
func TestInstalledRedactor(t *testing.T) {
	paths := config.Paths{ConfigDir: t.TempDir()}
	os.MkdirAll(filepath.Join(paths.ConfigDir, config.CertsDirName), 0o700)
	os.WriteFile(paths.File(config.EnvFileName), envfile.Marshal(envfile.NewEnv("REDIS_AUTH", "r3dis-auth", "LOG_LEVEL", "info")), 0o600)
	os.WriteFile(paths.KeyFile(), []byte(`{"private_key_id":"0a1b2c3d4e"}`), 0o600)
	got := installedRedactor(paths)("auth r3dis-auth key 0a1b2c3d4e level info")
	if want := "auth " + envfile.Mask + " key " + envfile.Mask + " level info"; got != want {
		t.Errorf("redacted %q, want %q", got, want)
	}
	if got := installedRedactor(config.Paths{ConfigDir: t.TempDir()})("dsn redis://:pw1234@cache/0"); strings.Contains(got, "pw1234") {
		t.Errorf("without installed files: %q", got)
	}
}
