package online

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/license"
)

func TestRecordCountsTheGraceFromTheFirstFailure(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := Record(license.Online{}, "lic-1", false, errors.New("unreachable"), t0)
	o = Record(o, "lic-1", false, errors.New("still"), t0.Add(time.Hour))
	if !o.FailingSince.Equal(t0) || o.Error != "still" {
		t.Errorf("after two failures: %+v", o)
	}
	o = Record(o, "lic-1", true, nil, t0.Add(2*time.Hour))
	if !o.FailingSince.IsZero() || o.Error != "" || !o.Revoked || !o.Checked.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("after an answer: %+v", o)
	}
	if o := Record(o, "lic-2", false, errors.New("x"), t0); o.Revoked || !o.Checked.IsZero() {
		t.Errorf("another licence kept the old record: %+v", o)
	}
}

func TestSaveLoadScrubsCredentials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "license-check.json")
	if err := Save(path, license.Online{ID: "lic-1", Error: "asking https://bob:s3cret@lic.example.com/check: refused"}); err != nil {
		t.Fatal(err)
	}
	if o := Load(path); o.ID != "lic-1" || strings.Contains(o.Error, "s3cret") || !strings.Contains(o.Error, "https://lic.example.com/check") {
		t.Errorf("loaded %+v", o)
	}
	if o := Load(filepath.Join(t.TempDir(), "none.json")); o.ID != "" {
		t.Errorf("missing record: %+v", o)
	}
}

// A server that is not a licence server, or that sends the check to
// plain http, gives no answer; the query (a possible token) never shows.
func TestAskRefusesUntrustedServers(t *testing.T) {
	l := &license.License{ID: "lic-1", TenantID: "t-1"}
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://plain.example.com/check", http.StatusTemporaryRedirect)
			return
		}
		http.Error(w, "nope", http.StatusForbidden)
	}))
	defer ts.Close()
	for path, want := range map[string]string{"/check?token=s3cret": "answered 403 Forbidden", "/redirect?token=s3cret": "must stay on https"} {
		_, err := Client{Server: ts.URL + path, HTTP: ts.Client()}.Ask(t.Context(), l)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v, want %q without the token", path, err, want)
		}
	}
}
