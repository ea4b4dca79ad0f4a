package installer

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
)

// inputSetting is err's setting error: the *InputError (InputSetting)
// and the field it names, if any.
func inputSetting(t *testing.T, err error) string {
	t.Helper()
	var ie *InputError
	if !errors.As(err, &ie) || ie.Input != InputSetting {
		t.Fatalf("want an InputSetting error, got %v", err)
	}
	var fe *config.FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

func TestSetConfigWritesEveryChangeOnce(t *testing.T) {
	paths := installed(t, config.Config{Domain: "carto.example.com"})
	res, err := SetConfig(t.Context(), paths, []string{"router.https_port=8443", "network.allowed_sources=10.0.0.0/8, 192.0.2.10", "domain=carto.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || len(res.Changes) != 2 || res.File != paths.File(config.ConfigFileName) {
		t.Fatalf("result %+v", res)
	}
	if c := res.Changes[0]; c.Name != "router.https_port" || c.Old.Value != "443" || c.Old.Set || c.New.Value != "8443" || !c.New.Set {
		t.Errorf("first change %+v", c)
	}
	cfg, _, err := config.Load(paths.File(config.ConfigFileName))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Router.HTTPSPort != 8443 || !slices.Equal(cfg.Network.AllowedSources, []string{"10.0.0.0/8", "192.0.2.10"}) || cfg.Domain != "carto.example.com" {
		t.Errorf("written %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}

	// The same again changes nothing and writes nothing.
	before := dirSnapshot(t, paths.ConfigDir)
	res, err = SetConfig(t.Context(), paths, []string{"router.https_port=8443"})
	if err != nil || res.Changed || len(res.Changes) != 0 {
		t.Errorf("no change: %+v %v", res, err)
	}
	if !sameFiles(before, dirSnapshot(t, paths.ConfigDir)) {
		t.Error("an unchanged setting rewrote the config dir")
	}
}

// Bad input of any kind leaves appliance.yaml byte for byte as it was.
func TestSetConfigRefusesAndChangesNothing(t *testing.T) {
	paths := installed(t, config.Config{Domain: "carto.example.com"})
	before := dirSnapshot(t, paths.ConfigDir)
	for _, tc := range []struct {
		pairs []string
		field string // the setting the error names; "" for a malformed pair
		want  string
	}{
		{[]string{"domain=other.example.com", "router.http_port=abc"}, "router.http_port", "whole number"},
		{[]string{"router.http_port=443"}, "router.https_port", "must differ"},
		{[]string{"domain=other.example.com", "router.htps_port=8443"}, "router.htps_port", "router.https_port"},
		{[]string{"layout=tier1"}, "layout", "set at install"},
		{[]string{"domain=https://carto.example.com"}, "domain", "not a valid host name"},
		{[]string{"domain=other.example.com", "router.https_port"}, "", `"router.https_port" is not NAME=VALUE`},
		{[]string{"domain=a.example.com", "domain=b.example.com"}, "", "given twice"},
		{nil, "", "no setting given"},
	} {
		_, err := SetConfig(t.Context(), paths, tc.pairs)
		if err == nil {
			t.Errorf("%q accepted", tc.pairs)
			continue
		}
		if field := inputSetting(t, err); field != tc.field || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: field %q, error %q; want %q, %q", tc.pairs, field, err, tc.field, tc.want)
		}
		if !sameFiles(before, dirSnapshot(t, paths.ConfigDir)) {
			t.Fatalf("%q changed the config dir", tc.pairs)
		}
	}
}

func TestSetConfigNeedsAnInstall(t *testing.T) {
	paths := config.Paths{ConfigDir: t.TempDir(), StateDir: t.TempDir()}
	if _, err := SetConfig(t.Context(), paths, []string{"domain=carto.example.com"}); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("set: %v", err)
	}
	if _, err := ShowConfig(paths); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("show: %v", err)
	}
	if _, err := os.Stat(paths.File(config.ConfigFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("appliance.yaml written: %v", err)
	}
}

// The file is written under the converge lock: a set waits for a running
// apply, and gives up with its context, having written nothing.
func TestSetConfigWaitsForTheConvergeLock(t *testing.T) {
	paths := installed(t, config.Config{})
	unlock, err := lockConverge(t.Context(), paths)
	if err != nil {
		t.Fatal(err)
	}
	before := dirSnapshot(t, paths.ConfigDir)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := SetConfig(ctx, paths, []string{"domain=carto.example.com"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("set while locked: %v", err)
	}
	if !sameFiles(before, dirSnapshot(t, paths.ConfigDir)) {
		t.Error("written while another change held the lock")
	}
	unlock()
	if res, err := SetConfig(t.Context(), paths, []string{"domain=carto.example.com"}); err != nil || !res.Changed {
		t.Errorf("set after: %+v %v", res, err)
	}
}

func TestShowAndGetConfig(t *testing.T) {
	paths := installed(t, config.Config{Domain: "carto.example.com"})
	all, err := ShowConfig(paths)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(config.SettingNames()) {
		t.Errorf("%d settings shown, %d exist", len(all), len(config.SettingNames()))
	}
	got := map[string]Setting{}
	for _, s := range all {
		got[s.Name] = s
	}
	if s := got["domain"]; s.Value != "carto.example.com" || !s.Set {
		t.Errorf("domain %+v", s)
	}
	if s := got["router.https_port"]; s.Value != "443" || s.Set {
		t.Errorf("router.https_port %+v", s)
	}
	if s, err := GetConfig(paths, "upgrade.channel"); err != nil || s.Value != config.DefaultChannel || s.Set {
		t.Errorf("get: %+v %v", s, err)
	}
	if _, err := GetConfig(paths, "upgrade.chanel"); inputSetting(t, err) != "upgrade.chanel" || !strings.Contains(err.Error(), "upgrade.channel") {
		t.Errorf("get of a misspelt name: %v", err)
	}
}

// No setting's name says secret today; the rule is the one .env's values
// follow, so a secret-named setting added later is masked whole.
func TestShownMasksSecrets(t *testing.T) {
	for _, tc := range []struct {
		name, value, want string
		secret            bool
	}{
		{"tls.acme.eab_hmac_key", "c2VjcmV0LWtleQ", envfile.Mask, true},
		{"license.api_token", "abc", envfile.Mask, true},
		{"proxy.password", "", "", true}, // "not set" stays visible
		{"proxy.url", "http://user:s3cret@proxy.corp:3128", "http://" + envfile.Mask + "@proxy.corp:3128", false},
		{"proxy.url", "http://alice@proxy.corp:3128", "http://" + envfile.Mask + "@proxy.corp:3128", false},
		{"proxy.url", "http://proxy.corp:3128", "http://proxy.corp:3128", false},
		{"proxy.no_proxy", ".corp.example,10.0.0.0/8", ".corp.example,10.0.0.0/8", false},
		{"tls.acme.directory", "https://u:p@ca.corp/dir?token=t0ken", "https://" + envfile.Mask + "@ca.corp/dir?token=" + envfile.Mask, false},
		{"domain", "a1b2c3d4e5f6g7h8.example.com", "a1b2c3d4e5f6g7h8.example.com", false},
	} {
		s := shown(tc.name, tc.value, true)
		if s.Value != tc.want || s.Secret != tc.secret {
			t.Errorf("%s=%s: shown %q secret=%v, want %q %v", tc.name, tc.value, s.Value, s.Secret, tc.want, tc.secret)
		}
		for _, secret := range []string{"s3cret", "alice", "c2VjcmV0LWtleQ", "t0ken"} {
			if strings.Contains(s.Value, secret) {
				t.Errorf("%s: %q shows %s", tc.name, s.Value, secret)
			}
		}
	}
}
