//go:build licensetest

package installer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/license/licensetest"
)

func testLicense(t *testing.T, edit func(*license.License)) []byte {
	t.Helper()
	now := time.Now().UTC()
	l := license.License{ID: "lic-1", Customer: "ACME", TenantID: "onp-acme", Issued: now.Add(-time.Hour), Expires: now.Add(90 * 24 * time.Hour), Layouts: []string{"standard"}, Nodes: 1}
	if edit != nil {
		edit(&l)
	}
	b, err := license.Sign(l, licensetest.KeyName, licensetest.Key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An install's licence: found next to customer.env, refused with exit
// code 4's error for every reason, before anything is written.
func TestPlanLicense(t *testing.T) {
	dir := t.TempDir()
	paths := Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	customer := filepath.Join(dir, "package", "customer.env")
	os.MkdirAll(filepath.Dir(customer), 0o755)
	newD := func() *desired { return &desired{env: envfile.NewEnv("SELFHOSTED_TENANT_ID", "onp-acme")} }
	write := func(b []byte) string {
		p := filepath.Join(dir, "package", "license.json")
		os.WriteFile(p, b, 0o600)
		return p
	}

	write(testLicense(t, nil))
	d := newD()
	if err := planLicense(paths, d, "", customer); err != nil || d.license == nil {
		t.Fatalf("the package's licence: %v", err)
	}
	tampered := strings.Replace(string(testLicense(t, nil)), `"key": "carto-test"`, `"key": "carto-2026"`, 1)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"tampered", []byte(tampered), "the signature does not match"},
		{"another tenant", testLicense(t, func(l *license.License) { l.TenantID = "onp-other" }), "it is for tenant onp-other"},
		{"expired", testLicense(t, func(l *license.License) {
			l.Issued, l.Expires = l.Issued.Add(-400*24*time.Hour), time.Now().Add(-time.Hour)
		}), "it expired on"},
		{"another layout", testLicense(t, func(l *license.License) { l.Layouts = []string{"tier2"} }), "not standard"},
	}
	for _, tc := range cases {
		file := write(tc.data)
		err := planLicense(paths, newD(), file, customer)
		if !errors.Is(err, license.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), file) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	os.Remove(filepath.Join(dir, "package", "license.json"))
	if err := planLicense(paths, newD(), "", customer); !errors.Is(err, license.ErrInvalid) || !strings.Contains(err.Error(), "pass --license FILE") {
		t.Errorf("no licence: %v", err)
	}
	if _, err := os.Stat(paths.ConfigDir); err == nil {
		t.Error("planning wrote the config dir")
	}
}

// The online check through a real HTTP server: valid, unreachable (grace
// from the last answer), revoked (expired); update swaps the licence.
func TestCheckAndUpdateLicense(t *testing.T) {
	status := "valid"
	var got map[string]string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewDecoder(r.Body).Decode(&got)
		if status == "down" {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"status": status})
	}))
	defer ts.Close()
	dir := t.TempDir()
	paths := Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	os.MkdirAll(paths.ConfigDir, 0o755)
	cfg := Config{License: LicenseConfig{Server: ts.URL}}
	if err := saveConfig(paths.file(ConfigFileName), cfg); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(paths.file(EnvFileName), []byte("SELFHOSTED_TENANT_ID=onp-acme\n"), 0o600)
	os.WriteFile(paths.file(LicenseFileName), testLicense(t, nil), 0o600)
	ctx := context.Background()

	st, err := CheckLicense(ctx, paths)
	if err != nil || st.State != license.Valid || st.LastChecked == nil || got["id"] != "lic-1" || got["tenant_id"] != "onp-acme" {
		t.Fatalf("valid: %v %+v, server got %v", err, st, got)
	}
	status = "down"
	st, _ = CheckLicense(ctx, paths)
	if st.State != license.Grace || st.GraceEndsAt == nil || !st.GraceEndsAt.Equal(st.LastChecked.Add(license.DefaultGrace)) || !strings.Contains(st.Reason, "503") {
		t.Errorf("down: %+v", st)
	}
	status = "revoked"
	if st, _ = CheckLicense(ctx, paths); st.State != license.Expired {
		t.Errorf("revoked: %+v", st)
	}
	if _, err := UpdateLicense(ctx, paths, paths.file(LicenseFileName)); !errors.Is(err, license.ErrInvalid) {
		t.Errorf("updating to the revoked licence again: %v", err)
	}
	next := filepath.Join(dir, "next.json")
	os.WriteFile(next, testLicense(t, func(l *license.License) { l.ID = "lic-2" }), 0o600)
	if st, err = UpdateLicense(ctx, paths, next); err != nil || st.State != license.Valid {
		t.Errorf("update to a new licence: %v %+v", err, st)
	}
	if st, _ = GetLicenseStatus(paths); st.ID != "lic-2" || st.State != license.Valid {
		t.Errorf("after update: %+v", st)
	}
}

// An air-gap licence is never checked online: no request, no record.
func TestAirGapLicenseIsNotCheckedOnline(t *testing.T) {
	asked := false
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { asked = true }))
	defer ts.Close()
	dir := t.TempDir()
	paths := Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	os.MkdirAll(paths.ConfigDir, 0o755)
	saveConfig(paths.file(ConfigFileName), Config{License: LicenseConfig{Server: ts.URL}})
	os.WriteFile(paths.file(EnvFileName), []byte("SELFHOSTED_TENANT_ID=onp-acme\n"), 0o600)
	os.WriteFile(paths.file(LicenseFileName), testLicense(t, func(l *license.License) { l.AirGap = true }), 0o600)
	st, err := CheckLicense(context.Background(), paths)
	if err != nil || st.State != license.Valid || !st.AirGap || st.LastChecked != nil || asked {
		t.Errorf("air-gap: %v %+v, server asked: %v", err, st, asked)
	}
	if _, err := os.Stat(filepath.Join(paths.StateDir, licenseCheckFile)); err == nil {
		t.Error("an air-gap check left a record")
	}
}
