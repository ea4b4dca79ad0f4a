//go:build licensetest

package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/license/licensetest"
)

// The licence server team's command answers an appliance's request with
// an answer the appliance trusts (test builds trust the tests' server key).
func TestAnswer(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "server.key")
	os.WriteFile(keyFile, []byte(licensetest.ServerKeyName+" "+base64.StdEncoding.EncodeToString(licensetest.ServerKey.Seed())+"\n"), 0o600)
	l := license.License{ID: "lic-1", TenantID: "onp-acme"}
	req, err := license.NewRequest(&l)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(req)
	for _, status := range []string{"valid", "revoked"} {
		var out bytes.Buffer
		if err := run([]string{"answer", "-key", keyFile, "-status", status}, bytes.NewReader(body), &out); err != nil {
			t.Fatal(err)
		}
		a, err := license.VerifyAnswer(out.Bytes(), req, time.Now())
		if err != nil || a.Status != status {
			t.Errorf("%s: %v %+v", status, err, a)
		}
	}
	if err := run([]string{"answer", "-key", keyFile, "-status", "ok"}, bytes.NewReader(body), &bytes.Buffer{}); err == nil {
		t.Error("answered with status ok")
	}
	if err := run([]string{"answer", "-key", keyFile, "-status", "valid"}, strings.NewReader(`{"status":"valid"}`), &bytes.Buffer{}); err == nil {
		t.Error("answered something that is not a request")
	}
}

// keygen -server says the key goes among the answer keys.
func TestKeygenServer(t *testing.T) {
	var out bytes.Buffer
	dir := t.TempDir()
	if err := run([]string{"keygen", "-name", "carto-licensing-2099", "-out", dir, "-server"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "productionAnswerKeys") {
		t.Errorf("keygen -server printed %q", out.String())
	}
	b, _ := os.ReadFile(filepath.Join(dir, "carto-licensing-2099.key"))
	name, seed, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	raw, _ := base64.StdEncoding.DecodeString(seed)
	if name != "carto-licensing-2099" || len(raw) != ed25519.SeedSize {
		t.Errorf("key file %q", b)
	}
}
