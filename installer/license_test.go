//go:build licensetest

package installer

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/config"
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
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
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
	if err := planLicense(paths, newD(), "", customer); !errors.Is(err, license.ErrInvalid) || inputOf(err) != InputLicense || !strings.Contains(err.Error(), "give the license.json") {
		t.Errorf("no licence: %v", err)
	}
	if _, err := os.Stat(paths.ConfigDir); err == nil {
		t.Error("planning wrote the config dir")
	}
}

// licenseServer is a test licence server over https: it answers as
// answer says for each request (signed, by default) and the installer's
// client trusts it.
func licenseServer(t *testing.T, answer func(req license.Request) []byte) *httptest.Server {
	t.Helper()
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req license.Request
		json.NewDecoder(r.Body).Decode(&req)
		if b := answer(req); b != nil {
			w.Write(b)
			return
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(ts.Close)
	orig := licenseClient
	licenseClient = func(config.Paths, config.Config) (*http.Client, error) { return ts.Client(), nil }
	t.Cleanup(func() { licenseClient = orig })
	return ts
}

func signedAnswer(t *testing.T, req license.Request, status string) []byte {
	t.Helper()
	b, err := license.SignAnswer(license.Answer{ID: req.ID, Status: status, Time: time.Now(), Nonce: req.Nonce}, licensetest.ServerKeyName, licensetest.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func installedForCheck(t *testing.T, server string) config.Paths {
	t.Helper()
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	os.MkdirAll(paths.ConfigDir, 0o755)
	if err := config.Save(paths.File(config.ConfigFileName), config.Config{License: config.LicenseConfig{Server: server}}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(paths.File(config.EnvFileName), []byte("SELFHOSTED_TENANT_ID=onp-acme\n"), 0o600)
	os.WriteFile(paths.File(config.LicenseFileName), testLicense(t, nil), 0o600)
	return paths
}

// The online check through a real HTTPS server: valid, unreachable (grace
// from the last answer), revoked (expired); update swaps the licence.
func TestCheckAndUpdateLicense(t *testing.T) {
	status := "valid"
	var got []license.Request
	ts := licenseServer(t, func(req license.Request) []byte {
		got = append(got, req)
		if status == "down" {
			return nil
		}
		return signedAnswer(t, req, status)
	})
	paths := installedForCheck(t, ts.URL)
	ctx := context.Background()

	st, err := CheckLicense(ctx, paths)
	if err != nil || st.State != license.Valid || st.LastChecked == nil || got[0].ID != "lic-1" || got[0].TenantID != "onp-acme" || got[0].Nonce == "" {
		t.Fatalf("valid: %v %+v, server got %+v", err, st, got)
	}
	status = "down"
	st, _ = CheckLicense(ctx, paths)
	if st.State != license.Grace || st.GraceEndsAt == nil || !st.GraceEndsAt.Equal(st.LastChecked.Add(license.DefaultGrace)) || !strings.Contains(st.Reason, "503") {
		t.Errorf("down: %+v", st)
	}
	if got[1].Nonce == got[0].Nonce {
		t.Errorf("two checks sent the same nonce %q", got[0].Nonce)
	}
	status = "revoked"
	if st, _ = CheckLicense(ctx, paths); st.State != license.Expired {
		t.Errorf("revoked: %+v", st)
	}
	if _, err := UpdateLicense(ctx, paths, paths.File(config.LicenseFileName)); !errors.Is(err, license.ErrInvalid) {
		t.Errorf("updating to the revoked licence again: %v", err)
	}
	next := filepath.Join(filepath.Dir(paths.ConfigDir), "next.json")
	os.WriteFile(next, testLicense(t, func(l *license.License) { l.ID = "lic-2" }), 0o600)
	if st, err = UpdateLicense(ctx, paths, next); err != nil || st.State != license.Valid {
		t.Errorf("update to a new licence: %v %+v", err, st)
	}
	if st, _ = GetLicenseStatus(paths); st.ID != "lic-2" || st.State != license.Valid {
		t.Errorf("after update: %+v", st)
	}
}

// An answer that is unsigned, badly signed, for another nonce or stale is
// no answer: the grace period runs from the last trusted one, the reason
// says why, and a "revoked" or "valid" in it changes nothing.
func TestUntrustedLicenseAnswersStartTheGrace(t *testing.T) {
	var good []byte
	mode := "good"
	ts := licenseServer(t, func(req license.Request) []byte {
		var b []byte
		switch mode {
		case "good":
			b = signedAnswer(t, req, "valid")
			good = b
		case "unsigned":
			b = []byte(`{"status":"revoked"}`)
		case "licence key":
			b, _ = license.SignAnswer(license.Answer{ID: req.ID, Status: "revoked", Time: time.Now(), Nonce: req.Nonce}, licensetest.ServerKeyName, licensetest.Key)
		case "replayed":
			b = good
		case "stale":
			b, _ = license.SignAnswer(license.Answer{ID: req.ID, Status: "revoked", Time: time.Now().Add(-time.Hour), Nonce: req.Nonce}, licensetest.ServerKeyName, licensetest.ServerKey)
		}
		return b
	})
	paths := installedForCheck(t, ts.URL)
	ctx := context.Background()
	first, err := CheckLicense(ctx, paths)
	if err != nil || first.State != license.Valid {
		t.Fatalf("a signed answer: %v %+v", err, first)
	}
	for _, tc := range []struct{ mode, want string }{
		{"unsigned", "not signed"},
		{"licence key", "signature does not match"},
		{"replayed", "nonce"},
		{"stale", "stale"},
	} {
		mode = tc.mode
		st, err := CheckLicense(ctx, paths)
		if err != nil || st.State != license.Grace || !strings.Contains(st.Reason, "untrusted licence server answer") || !strings.Contains(st.Reason, tc.want) ||
			st.LastChecked == nil || !st.LastChecked.Equal(*first.LastChecked) || !st.GraceEndsAt.Equal(first.LastChecked.Add(license.DefaultGrace)) {
			t.Errorf("%s: %v %+v, want grace from the first answer and %q", tc.mode, err, st, tc.want)
		}
	}
}

// license.server must be https without credentials, from the flag or
// appliance.yaml; no message repeats the credentials; grace_days is 0 or
// 1 to 90.
func TestLicenseServerAndGraceAreChecked(t *testing.T) {
	for _, tc := range []struct{ server, want string }{
		{"http://licenses.example.com/v1/check", "use https://licenses.example.com/v1/check"},
		{"https://bob:s3cret@licenses.example.com/v1/check", "remove the user name and password"},
		{"https://:s3cret@licenses.example.com/", "remove the user name and password"},
		{"http://bob:s3cret@licenses.example.com/", "remove the user name and password"},
		{"ftp://licenses.example.com/", "over https"},
		{"licenses.example.com/v1/check", "not a URL"},
		{"https://bob:s3cret@[::1", "not a URL"},
	} {
		err := (config.Config{License: config.LicenseConfig{Server: tc.server}}).Validate()
		if err == nil || !strings.Contains(err.Error(), "appliance.yaml license.server") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.server, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "bob")) {
			t.Errorf("%s: the error shows the credentials: %v", tc.server, err)
		}
		if err := config.CheckLicenseServer(tc.server, "the licence server"); err == nil || !strings.HasPrefix(err.Error(), "the licence server") {
			t.Errorf("licence server %s: %v", tc.server, err)
		}
	}
	if err := (config.Config{License: config.LicenseConfig{Server: "https://licenses.example.com:8443/v1/check?x=1"}}).Validate(); err != nil {
		t.Errorf("an https server: %v", err)
	}
	if got := (config.LicenseConfig{Server: "https://licenses.example.com/v1/check?token=s3cret"}).ServerName(); got != "https://licenses.example.com/v1/check" {
		t.Errorf("messages name the server %q", got)
	}
	for _, days := range []int{-1, 91, 1 << 40, math.MaxInt} {
		err := (config.Config{License: config.LicenseConfig{GraceDays: days}}).Validate()
		if err == nil || !strings.Contains(err.Error(), "appliance.yaml license.grace_days") || !strings.Contains(err.Error(), "from 1 to 90") {
			t.Errorf("grace_days %d: %v", days, err)
		}
	}
	for _, days := range []int{0, 1, 90} {
		if err := (config.Config{License: config.LicenseConfig{GraceDays: days}}).Validate(); err != nil {
			t.Errorf("grace_days %d: %v", days, err)
		}
	}
}

// A failure recorded by an older version with the server's credentials
// does not show them.
func TestRecordedCredentialsAreNotShown(t *testing.T) {
	paths := installedForCheck(t, "")
	saveLicenseCheck(paths, license.Online{ID: "lic-1", FailingSince: time.Now().Add(-time.Hour), Error: `asking http://bob:s3cret@licenses.example.com/v1/check: connection refused`})
	st, err := GetLicenseStatus(paths)
	if err != nil || st.State != license.Grace || strings.Contains(st.Reason, "s3cret") || strings.Contains(st.Reason, "bob") || !strings.Contains(st.Reason, "http://licenses.example.com/v1/check") {
		t.Errorf("%v %+v", err, st)
	}
}

// Install refuses a bad --license-server before anything is written.
func TestInstallRefusesAPlainLicenseServer(t *testing.T) {
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	_, err := Install(context.Background(), InstallOptions{Options: Options{Paths: paths}, LicenseServer: "http://u:pw@licenses.example.com/v1/check"})
	if err == nil || inputOf(err) != InputLicenseServer || strings.Contains(err.Error(), "pw") {
		t.Errorf("install --license-server http://…: %v", err)
	}
	if _, err := os.Stat(paths.ConfigDir); err == nil {
		t.Error("a refused install wrote the config dir")
	}
}

// An air-gap licence is never checked online: no request, no record.
func TestAirGapLicenseIsNotCheckedOnline(t *testing.T) {
	asked := false
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { asked = true }))
	defer ts.Close()
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	os.MkdirAll(paths.ConfigDir, 0o755)
	config.Save(paths.File(config.ConfigFileName), config.Config{License: config.LicenseConfig{Server: ts.URL}})
	os.WriteFile(paths.File(config.EnvFileName), []byte("SELFHOSTED_TENANT_ID=onp-acme\n"), 0o600)
	os.WriteFile(paths.File(config.LicenseFileName), testLicense(t, func(l *license.License) { l.AirGap = true }), 0o600)
	st, err := CheckLicense(context.Background(), paths)
	if err != nil || st.State != license.Valid || !st.AirGap || st.LastChecked != nil || asked {
		t.Errorf("air-gap: %v %+v, server asked: %v", err, st, asked)
	}
	if _, err := os.Stat(filepath.Join(paths.StateDir, config.LicenseCheckFileName)); err == nil {
		t.Error("an air-gap check left a record")
	}
}
