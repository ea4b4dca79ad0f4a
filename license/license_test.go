package license

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/license/licensetest"
)

var (
	now  = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	keys = map[string]ed25519.PublicKey{licensetest.KeyName: licensetest.Key.Public().(ed25519.PublicKey)}
	here = Usage{TenantID: "onp-acme", Layout: "standard", Nodes: 1}
)

func sample() License {
	return License{
		ID: "lic-1", Customer: "ACME Corp", TenantID: "onp-acme",
		Issued: now.Add(-24 * time.Hour), Expires: now.Add(365 * 24 * time.Hour),
		Channel: "stable", Layouts: []string{"standard", "tier1"}, Nodes: 3,
		Entitlements: []string{"workflows"},
	}
}

func signed(t testing.TB, l License) []byte {
	t.Helper()
	b, err := Sign(l, licensetest.KeyName, licensetest.Key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseRoundTrip(t *testing.T) {
	l, err := parse(signed(t, sample()), keys)
	if err != nil {
		t.Fatal(err)
	}
	if l.Customer != "ACME Corp" || l.Nodes != 3 || !l.Expires.Equal(sample().Expires) || l.Entitlements[0] != "workflows" {
		t.Errorf("parsed %+v", l)
	}
	if err := l.Check(here, now); err != nil {
		t.Errorf("a good licence: %v", err)
	}
}

// Changing any signed field, keeping the signature, is refused.
func TestEveryFieldTampered(t *testing.T) {
	orig := signed(t, sample())
	var env envelope
	json.Unmarshal(orig, &env)
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	var fields map[string]any
	json.Unmarshal(payload, &fields)
	for name, v := range fields {
		tampered := map[string]any{}
		for k, w := range fields {
			tampered[k] = w
		}
		switch v := v.(type) {
		case string:
			tampered[name] = v + "x"
		case float64:
			tampered[name] = v + 1
		case bool:
			tampered[name] = !v
		case []any:
			tampered[name] = append(v, "tier2")
		}
		p, _ := json.Marshal(tampered)
		e := env
		e.Payload = base64.StdEncoding.EncodeToString(p)
		b, _ := json.Marshal(e)
		_, err := parse(b, keys)
		if err == nil || !strings.Contains(err.Error(), "the signature does not match") {
			t.Errorf("%s tampered: %v", name, err)
		}
	}
	if len(fields) < 9 {
		t.Errorf("only %d fields signed", len(fields))
	}
}

func TestRefusals(t *testing.T) {
	seed := sha256.Sum256([]byte("another key"))
	other := ed25519.NewKeyFromSeed(seed[:])
	fromOther, _ := Sign(sample(), licensetest.KeyName, other)
	fromUnknown, _ := Sign(sample(), "carto-1999", other)
	noTenant := sample()
	noTenant.TenantID = ""
	var env envelope
	json.Unmarshal(signed(t, sample()), &env)
	env.Signature = "!!"
	badB64, _ := json.Marshal(env)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"not JSON", []byte("hello"), "not a licence file"},
		{"an unknown field", []byte(`{"payload":"a","signature":"b","key":"c","x":1}`), "not a licence file"},
		{"empty", []byte(`{}`), "lacks its payload, signature or key"},
		{"signed by another key under a trusted name", fromOther, "the signature does not match"},
		{"signed by an untrusted key", fromUnknown, `signed with key "carto-1999", which this carto-appliance does not trust`},
		{"a signature that is not base64", badB64, "not base64"},
	}
	for _, tc := range cases {
		_, err := parse(tc.data, keys)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := Sign(noTenant, licensetest.KeyName, licensetest.Key); err == nil || !strings.Contains(err.Error(), "no tenant_id") {
		t.Errorf("signing a licence without a tenant: %v", err)
	}
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name string
		edit func(*License)
		u    Usage
		at   time.Time
		want string
	}{
		{"expired", func(l *License) { l.Expires = now.Add(-time.Hour) }, here, now, "it expired on 2026-11-22"},
		{"another tenant", nil, Usage{TenantID: "onp-other", Layout: "standard", Nodes: 1}, now, "it is for tenant onp-acme, and customer.env's SELFHOSTED_TENANT_ID is onp-other"},
		{"layout not allowed", nil, Usage{TenantID: "onp-acme", Layout: "tier2", Nodes: 1}, now, "allows the standard, tier1 layout(s), not tier2"},
		{"too many nodes", nil, Usage{TenantID: "onp-acme", Layout: "tier1", Nodes: 4}, now, "allows 3 node(s), the layout has 4"},
		{"issued in the future", func(l *License) { l.Issued = now.Add(48 * time.Hour) }, here, now, "later than this machine's clock"},
	}
	for _, tc := range cases {
		l := sample()
		if tc.edit != nil {
			tc.edit(&l)
		}
		err := l.Check(tc.u, tc.at)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestEvaluate(t *testing.T) {
	day := 24 * time.Hour
	lic := func(edit func(*License)) *License {
		l := sample()
		if edit != nil {
			edit(&l)
		}
		return &l
	}
	checked := now.Add(-time.Hour)
	cases := []struct {
		name   string
		l      *License
		err    error
		u      Usage
		online Online
		want   State
		reason string
	}{
		{"valid", lic(nil), nil, here, Online{ID: "lic-1", Checked: checked}, Valid, ""},
		{"expiring in 29 days", lic(func(l *License) { l.Expires = now.Add(29 * day) }), nil, here, Online{}, Expiring, "expires on 2026-12-21"},
		{"not expiring in 31 days", lic(func(l *License) { l.Expires = now.Add(31 * day) }), nil, here, Online{}, Valid, ""},
		{"expired", lic(func(l *License) { l.Expires = now.Add(-day) }), nil, here, Online{}, Expired, "expired on"},
		{"tampered", nil, errors.New("invalid licence: the signature does not match"), here, Online{}, Invalid, "signature"},
		{"wrong tenant, even if expired", lic(func(l *License) { l.Expires = now.Add(-day) }), nil, Usage{TenantID: "x", Layout: "standard", Nodes: 1}, Online{}, Invalid, "tenant"},
		{"revoked", lic(nil), nil, here, Online{ID: "lic-1", Checked: checked, Revoked: true}, Expired, "revoked"},
		{"revoked, but another licence's record", lic(nil), nil, here, Online{ID: "lic-0", Revoked: true}, Valid, ""},
		{"server down 3 days", lic(nil), nil, here, Online{ID: "lic-1", Checked: now.Add(-3 * day), FailingSince: now.Add(-2 * day), Error: "connection refused"}, Grace, "valid until 2026-12-03"},
		{"server down past the grace", lic(nil), nil, here, Online{ID: "lic-1", Checked: now.Add(-15 * day), FailingSince: now.Add(-14 * day), Error: "timeout"}, Expired, "grace period ended on 2026-11-21"},
		{"never answered: grace from the first failure", lic(nil), nil, here, Online{ID: "lic-1", FailingSince: now.Add(-day), Error: "dns"}, Grace, "valid until 2026-12-05"},
		{"air-gap is never in grace", lic(func(l *License) { l.AirGap = true }), nil, here, Online{ID: "lic-1", FailingSince: now.Add(-20 * day), Error: "x"}, Valid, ""},
	}
	for _, tc := range cases {
		s := Evaluate(tc.l, tc.err, tc.u, tc.online, 0, now)
		if s.State != tc.want || !strings.Contains(s.Reason, tc.reason) {
			t.Errorf("%s: %s %q, want %s %q", tc.name, s.State, s.Reason, tc.want, tc.reason)
		}
	}
	s := Evaluate(lic(nil), nil, here, Online{ID: "lic-1", Checked: now.Add(-3 * day), FailingSince: now.Add(-2 * day)}, 0, now)
	if s.GraceEndsAt == nil || !s.GraceEndsAt.Equal(now.Add(11*day)) || s.LastChecked == nil || s.Customer != "ACME Corp" {
		t.Errorf("grace status: %+v", s)
	}
}

// Production builds trust no test key.
func TestTrustedKeys(t *testing.T) {
	if _, ok := productionKeys[licensetest.KeyName]; ok {
		t.Error("the test key is a production key")
	}
	for name, k := range productionKeys {
		if len(k) != ed25519.PublicKeySize {
			t.Errorf("key %s: %d bytes", name, len(k))
		}
	}
}

// Whatever the input, Parse returns a licence that verifies and is
// complete, or an ErrInvalid: never a panic, never a half licence.
func FuzzParse(f *testing.F) {
	f.Add(signed(f, sample()))
	f.Add([]byte(`{"payload":"e30=","signature":"AAAA","key":"carto-test"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := parse(data, keys)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("an error that is not ErrInvalid: %v", err)
			}
			return
		}
		if l.complete() != nil {
			t.Fatalf("an incomplete licence parsed: %+v", l)
		}
	})
}
