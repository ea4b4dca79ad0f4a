package license

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// AnswerContext is prepended to an answer's payload before it is signed
// and verified. A licence's signature covers its bare JSON payload (which
// starts with '{'), so no licence signature verifies as an answer's and no
// answer's as a licence's, even were the same key used for both.
const AnswerContext = "carto-appliance licence-server answer v1\x00"

// MaxAnswerSkew is how far an answer's time may be from this machine's
// clock. The nonce already proves the answer is fresh; the time bounds an
// answer a server held back, and catches a clock too wrong for the dates
// the licence is judged by.
const MaxAnswerSkew = 10 * time.Minute

// NonceSize is the nonce's length in bytes, before base64.
const NonceSize = 32

// Request is what the appliance posts to the licence server.
type Request struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	Nonce    string `json:"nonce"` // base64 (standard) of NonceSize random bytes, fresh for each check
}

// Answer is what the licence server says about one licence, for one
// request.
type Answer struct {
	ID     string    `json:"id"`     // the licence asked about
	Status string    `json:"status"` // AnswerValid or AnswerRevoked
	Time   time.Time `json:"time"`   // when the server answered (RFC 3339)
	Nonce  string    `json:"nonce"`  // the request's nonce, as sent
}

// The statuses an answer can give.
const (
	AnswerValid   = "valid"
	AnswerRevoked = "revoked"
)

// ErrUntrustedAnswer is wrapped by every refusal of a licence server's
// answer: such an answer counts as no answer at all.
var ErrUntrustedAnswer = errors.New("untrusted licence server answer")

// NewRequest is a check of l with a fresh nonce.
func NewRequest(l *License) (Request, error) {
	b := make([]byte, NonceSize)
	if _, err := rand.Read(b); err != nil {
		return Request{}, fmt.Errorf("making the licence check's nonce: %w", err)
	}
	return Request{ID: l.ID, TenantID: l.TenantID, Nonce: base64.StdEncoding.EncodeToString(b)}, nil
}

// SignAnswer is the licence server's side: the signed answer to send back
// for a request (its body is the returned bytes, Content-Type
// application/json). key must be one the appliance trusts for answers
// (answerKeys in keys.go), named keyName.
func SignAnswer(a Answer, keyName string, key ed25519.PrivateKey) ([]byte, error) {
	if a.ID == "" || a.Nonce == "" || a.Time.IsZero() || (a.Status != AnswerValid && a.Status != AnswerRevoked) {
		return nil, fmt.Errorf("signing an answer: it needs an id, a nonce, a time and the status %q or %q", AnswerValid, AnswerRevoked)
	}
	payload, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	return json.Marshal(envelope{
		Payload:   base64.StdEncoding.EncodeToString(payload),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, answerMessage(payload))),
		Key:       keyName,
	})
}

func answerMessage(payload []byte) []byte {
	return append([]byte(AnswerContext), payload...)
}

// VerifyAnswer judges the licence server's reply to req, at now: signed by
// a key trusted for answers, over req's nonce, about req's licence, and
// dated within MaxAnswerSkew. It returns the answer, or an error wrapping
// ErrUntrustedAnswer.
func VerifyAnswer(data []byte, req Request, now time.Time) (*Answer, error) {
	return verifyAnswer(data, req, now, trustedAnswerKeys())
}

func verifyAnswer(data []byte, req Request, now time.Time, keys map[string]ed25519.PublicKey) (*Answer, error) {
	var env envelope
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil || env.Payload == "" || env.Signature == "" || env.Key == "" {
		return nil, fmt.Errorf("%w: it is not signed (no payload, signature and key): the server is not CARTO's licence server, or something between rewrote its answer", ErrUntrustedAnswer)
	}
	pub, ok := keys[env.Key]
	if !ok {
		return nil, fmt.Errorf("%w: signed with key %q, which this carto-appliance does not trust for licence server answers: check license.server", ErrUntrustedAnswer, env.Key)
	}
	payload, err1 := base64.StdEncoding.DecodeString(env.Payload)
	sig, err2 := base64.StdEncoding.DecodeString(env.Signature)
	if errors.Join(err1, err2) != nil || !ed25519.Verify(pub, answerMessage(payload), sig) {
		return nil, fmt.Errorf("%w: its signature does not match: something between the appliance and the licence server altered it", ErrUntrustedAnswer)
	}
	var a Answer
	pdec := json.NewDecoder(bytes.NewReader(payload))
	pdec.DisallowUnknownFields()
	if err := pdec.Decode(&a); err != nil {
		return nil, fmt.Errorf("%w: a signed answer this version cannot read (%v): update carto-appliance", ErrUntrustedAnswer, err)
	}
	if a.Nonce != req.Nonce {
		return nil, fmt.Errorf("%w: it answers another check (its nonce is not the one sent): an old answer replayed", ErrUntrustedAnswer)
	}
	if a.ID != req.ID {
		return nil, fmt.Errorf("%w: it is about licence %q, not %q", ErrUntrustedAnswer, a.ID, req.ID)
	}
	if a.Status != AnswerValid && a.Status != AnswerRevoked {
		return nil, fmt.Errorf("%w: status %q is neither %q nor %q: update carto-appliance", ErrUntrustedAnswer, a.Status, AnswerValid, AnswerRevoked)
	}
	if skew := now.Sub(a.Time); skew > MaxAnswerSkew || skew < -MaxAnswerSkew {
		return nil, fmt.Errorf("%w: it is dated %s and this machine's clock says %s (more than %s apart): a stale answer, or check the clock", ErrUntrustedAnswer, a.Time.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), MaxAnswerSkew)
	}
	return &a, nil
}
