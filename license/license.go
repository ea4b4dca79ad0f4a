// Package license owns CARTO's licence (SPEC §8): the signed document's
// format, its verification against the public keys compiled into the
// binary, what a licence allows (tenant, layout, time), and the licence
// server's signed answers. It neither reads files nor asks the licence
// server: the installer and the agent do, and decide what a state means
// for the stack (never an outage).
//
// # Licence file
//
//	{"payload": B64(P), "signature": B64(ed25519(P)), "key": NAME}
//
// P is License as JSON, signed as is (pure ed25519, no prefix) by the
// licence key NAME (keys.go: productionKeys).
//
// # Online check
//
// The appliance POSTs (Content-Type application/json) to license.server,
// over https only:
//
//	{"id": LICENCE_ID, "tenant_id": TENANT, "nonce": B64(32 random bytes)}
//
// with a fresh nonce for every check (Request). The server answers 200
// with (SignAnswer)
//
//	{"payload": B64(A), "signature": B64(ed25519(AnswerContext || A)), "key": NAME}
//
// where A is Answer as JSON: {"id": LICENCE_ID, "status": "valid" or
// "revoked", "time": RFC 3339, "nonce": the request's nonce, as sent}, and
// NAME a licence server key (keys.go: productionAnswerKeys; never a licence
// key). AnswerContext ("carto-appliance licence-server answer v1" and a
// NUL byte) separates the two uses: a licence's signed bytes are JSON and
// start with '{', an answer's start with the context, so neither signature
// verifies as the other. B64 is standard base64 with padding.
//
// The appliance trusts an answer only when it is signed by a trusted
// answer key, carries the nonce it sent and the licence it asked about,
// and is dated within MaxAnswerSkew of its clock (VerifyAnswer). Anything
// else (no answer, an error status, an unsigned, badly signed, replayed or
// stale answer) counts as no answer: the grace period runs, and the
// reason is recorded; it never makes a licence valid or revoked.
package license

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// License is what a licence says.
type License struct {
	ID       string    `json:"id"`
	Customer string    `json:"customer"`
	TenantID string    `json:"tenant_id"` // SELFHOSTED_TENANT_ID of the customer package
	Issued   time.Time `json:"issued_at"`
	Expires  time.Time `json:"expires_at"`
	Channel  string    `json:"channel"`
	Layouts  []string  `json:"layouts"` // standard, tier1, tier2
	Nodes    int       `json:"nodes"`
	// Entitlements are the features bought, by name.
	Entitlements []string `json:"entitlements,omitempty"`
	// AirGap licences are never checked online.
	AirGap bool `json:"air_gap"`
}

// envelope is the file: the licence's JSON as signed, so that no
// re-encoding can change what the signature covers.
type envelope struct {
	Payload   string `json:"payload"`   // base64 (standard) of the licence's JSON
	Signature string `json:"signature"` // base64 (standard) ed25519 over the payload's bytes
	Key       string `json:"key"`       // the signing key's name
}

// ErrInvalid is wrapped by every refusal of a licence document.
var ErrInvalid = errors.New("invalid licence")

// Sign makes a licence file signed by key, named keyName (release team
// tooling; see cmd/carto-license).
func Sign(l License, keyName string, key ed25519.PrivateKey) ([]byte, error) {
	if err := l.complete(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(envelope{
		Payload:   base64.StdEncoding.EncodeToString(payload),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, payload)),
		Key:       keyName,
	}, "", "  ")
	return append(out, '\n'), err
}

// Parse verifies a licence file's signature with the trusted keys and
// returns what it says. It does not judge the licence's dates, tenant or
// layout: Check does.
func Parse(data []byte) (*License, error) {
	return parse(data, trustedKeys())
}

func parse(data []byte, keys map[string]ed25519.PublicKey) (*License, error) {
	var env envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, fmt.Errorf("%w: not a licence file (%v): use the license.json of your CARTO customer package", ErrInvalid, err)
	}
	if env.Payload == "" || env.Signature == "" || env.Key == "" {
		return nil, fmt.Errorf("%w: the file lacks its payload, signature or key: use the license.json of your CARTO customer package", ErrInvalid)
	}
	pub, ok := keys[env.Key]
	if !ok {
		return nil, fmt.Errorf("%w: signed with key %q, which this carto-appliance does not trust: ask CARTO for a licence for this release", ErrInvalid, env.Key)
	}
	payload, err1 := base64.StdEncoding.DecodeString(env.Payload)
	sig, err2 := base64.StdEncoding.DecodeString(env.Signature)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("%w: its payload or signature is not base64: the file was altered; use the original from CARTO", ErrInvalid)
	}
	if !ed25519.Verify(pub, payload, sig) {
		return nil, fmt.Errorf("%w: the signature does not match: the file was altered or is not from CARTO; use the original license.json", ErrInvalid)
	}
	var l License
	pdec := json.NewDecoder(bytes.NewReader(payload))
	pdec.DisallowUnknownFields()
	if err := pdec.Decode(&l); err != nil {
		return nil, fmt.Errorf("%w: a signed payload this version cannot read (%v): update carto-appliance", ErrInvalid, err)
	}
	if err := l.complete(); err != nil {
		return nil, err
	}
	return &l, nil
}

// complete refuses a licence missing what every check needs.
func (l License) complete() error {
	var missing []string
	for name, empty := range map[string]bool{
		"id": l.ID == "", "customer": l.Customer == "", "tenant_id": l.TenantID == "",
		"issued_at": l.Issued.IsZero(), "expires_at": l.Expires.IsZero(), "layouts": len(l.Layouts) == 0,
	} {
		if empty {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("%w: no %s", ErrInvalid, strings.Join(missing, ", "))
	}
	if !l.Expires.After(l.Issued) {
		return fmt.Errorf("%w: it expires (%s) before it was issued (%s)", ErrInvalid, l.Expires.Format(time.DateOnly), l.Issued.Format(time.DateOnly))
	}
	if l.Nodes < 1 {
		return fmt.Errorf("%w: nodes is %d, at least 1", ErrInvalid, l.Nodes)
	}
	return nil
}

// Usage is where the licence is used.
type Usage struct {
	TenantID string // SELFHOSTED_TENANT_ID of customer.env
	Layout   string // appliance.yaml layout
	Nodes    int    // nodes of the layout
}

// ExpiryWarning is how long before expiry status warns.
const ExpiryWarning = 30 * 24 * time.Hour

// Check says whether the licence may install or upgrade CARTO here now:
// issued, not expired, for this tenant, layout and node count.
func (l *License) Check(u Usage, now time.Time) error {
	if err := l.fits(u); err != nil {
		return err
	}
	if now.Before(l.Issued.Add(-time.Hour)) {
		return fmt.Errorf("%w: it is issued for %s, later than this machine's clock (%s): check the clock", ErrInvalid, l.Issued.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !now.Before(l.Expires) {
		return fmt.Errorf("%w: it expired on %s: ask CARTO for a renewed licence and install it with `carto-appliance license update FILE`", ErrInvalid, l.Expires.Format(time.DateOnly))
	}
	return nil
}

// fits says whether the licence is for this tenant, layout and size.
func (l *License) fits(u Usage) error {
	if u.TenantID != l.TenantID {
		return fmt.Errorf("%w: it is for tenant %s, and customer.env's SELFHOSTED_TENANT_ID is %s: use the licence and customer package of the same CARTO account", ErrInvalid, l.TenantID, u.TenantID)
	}
	if !slices.Contains(l.Layouts, u.Layout) {
		return fmt.Errorf("%w: it allows the %s layout(s), not %s: ask CARTO for a licence that covers it", ErrInvalid, strings.Join(l.Layouts, ", "), u.Layout)
	}
	if u.Nodes > l.Nodes {
		return fmt.Errorf("%w: it allows %d node(s), the layout has %d", ErrInvalid, l.Nodes, u.Nodes)
	}
	return nil
}
