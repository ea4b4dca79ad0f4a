package license

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/license/licensetest"
)

var answerKeys = map[string]ed25519.PublicKey{licensetest.ServerKeyName: licensetest.ServerKey.Public().(ed25519.PublicKey)}

func request(t testing.TB) Request {
	t.Helper()
	l := sample()
	r, err := NewRequest(&l)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func answer(t testing.TB, r Request, edit func(*Answer)) []byte {
	t.Helper()
	a := Answer{ID: r.ID, Status: AnswerValid, Time: now, Nonce: r.Nonce}
	if edit != nil {
		edit(&a)
	}
	b, err := SignAnswer(a, licensetest.ServerKeyName, licensetest.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAnswerRoundTrip(t *testing.T) {
	r := request(t)
	for _, status := range []string{AnswerValid, AnswerRevoked} {
		a, err := verifyAnswer(answer(t, r, func(a *Answer) { a.Status = status }), r, now.Add(time.Minute), answerKeys)
		if err != nil || a.Status != status || a.ID != "lic-1" {
			t.Errorf("%s: %v %+v", status, err, a)
		}
	}
	if r2 := request(t); r2.Nonce == r.Nonce || len(r.Nonce) != base64.StdEncoding.EncodedLen(NonceSize) {
		t.Errorf("nonces %q and %q: want a fresh %d-byte nonce each time", r.Nonce, r2.Nonce, NonceSize)
	}
}

// Every answer that is not signed by a trusted answer key over this
// request's nonce, about this licence, and recent, is refused.
func TestAnswerRefusals(t *testing.T) {
	r := request(t)
	good := answer(t, r, nil)
	var env envelope
	json.Unmarshal(good, &env)
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	reenvelope := func(e envelope) []byte { b, _ := json.Marshal(e); return b }
	withPayload := func(p string) []byte {
		e := env
		e.Payload = base64.StdEncoding.EncodeToString([]byte(p))
		return reenvelope(e)
	}
	signedBy := func(key ed25519.PrivateKey, msg []byte) []byte {
		e := env
		e.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, msg))
		return reenvelope(e)
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"unsigned, as servers answered before", []byte(`{"status":"valid"}`), "not signed"},
		{"no signature", reenvelope(envelope{Payload: env.Payload, Key: env.Key}), "not signed"},
		{"empty", nil, "not signed"},
		{"an untrusted key's name", reenvelope(envelope{Payload: env.Payload, Signature: env.Signature, Key: "carto-test"}), "does not trust"},
		{"signed by the licence key", signedBy(licensetest.Key, answerMessage(payload)), "signature does not match"},
		{"signed without the context", signedBy(licensetest.ServerKey, payload), "signature does not match"},
		{"payload altered", withPayload(strings.Replace(string(payload), "valid", "revoked", 1)), "signature does not match"},
		{"another check's answer (replayed)", answer(t, request(t), nil), "nonce"},
		{"about another licence", answer(t, r, func(a *Answer) { a.ID = "lic-2" }), `about licence "lic-2"`},
		{"stale", answer(t, r, func(a *Answer) { a.Time = now.Add(-MaxAnswerSkew - time.Second) }), "stale"},
		{"from the future", answer(t, r, func(a *Answer) { a.Time = now.Add(MaxAnswerSkew + time.Second) }), "check the clock"},
	}
	for _, tc := range cases {
		a, err := verifyAnswer(tc.data, r, now, answerKeys)
		if !errors.Is(err, ErrUntrustedAnswer) || !strings.Contains(err.Error(), tc.want) || a != nil {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := SignAnswer(Answer{ID: "lic-1", Status: "ok", Time: now, Nonce: "n"}, "k", licensetest.ServerKey); err == nil {
		t.Error("signed an answer with an unknown status")
	}
}

// One key used for both (which keys.go never does) still cannot turn a
// licence into an answer or an answer into a licence.
func TestLicenceAndAnswerSignaturesDoNotCross(t *testing.T) {
	shared := map[string]ed25519.PublicKey{licensetest.KeyName: licensetest.Key.Public().(ed25519.PublicKey)}
	r := request(t)
	lic := signed(t, sample())
	if _, err := verifyAnswer(lic, r, now, shared); !errors.Is(err, ErrUntrustedAnswer) {
		t.Errorf("a licence verified as an answer: %v", err)
	}
	ans, err := SignAnswer(Answer{ID: "lic-1", Status: AnswerValid, Time: now, Nonce: r.Nonce}, licensetest.KeyName, licensetest.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parse(ans, shared); !errors.Is(err, ErrInvalid) {
		t.Errorf("an answer parsed as a licence: %v", err)
	}
	if _, err := verifyAnswer(ans, r, now, shared); err != nil {
		t.Errorf("the answer itself: %v", err)
	}
}

// Release builds trust answer keys that are no licence keys, and no test
// key.
func TestTrustedAnswerKeys(t *testing.T) {
	if len(productionAnswerKeys) == 0 {
		t.Error("a release build would trust no licence server answer")
	}
	for name, k := range productionAnswerKeys {
		if _, ok := productionKeys[name]; ok || len(k) != ed25519.PublicKeySize {
			t.Errorf("answer key %s: %d bytes, also a licence key: %v", name, len(k), ok)
		}
		for lname, lk := range productionKeys {
			if k.Equal(lk) {
				t.Errorf("answer key %s is licence key %s", name, lname)
			}
		}
	}
	if _, ok := productionAnswerKeys[licensetest.ServerKeyName]; ok {
		t.Error("the test server key is a production key")
	}
	if licensetest.ServerKey.Equal(licensetest.Key) {
		t.Error("the tests' licence and server keys are one key")
	}
}

// Whatever the bytes, an answer is refused with ErrUntrustedAnswer or is
// exactly the request's: never a panic, never another check's answer.
func FuzzVerifyAnswer(f *testing.F) {
	r := Request{ID: "lic-1", TenantID: "onp-acme", Nonce: "bm9uY2U="}
	f.Add(answer(f, r, nil))
	f.Add([]byte(`{"status":"valid"}`))
	f.Add([]byte(`{"payload":"e30=","signature":"AAAA","key":"carto-test-server"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := verifyAnswer(data, r, now, answerKeys)
		if err != nil {
			if !errors.Is(err, ErrUntrustedAnswer) {
				t.Fatalf("an error that is not ErrUntrustedAnswer: %v", err)
			}
			return
		}
		if a.Nonce != r.Nonce || a.ID != r.ID || (a.Status != AnswerValid && a.Status != AnswerRevoked) {
			t.Fatalf("accepted %+v for %+v", a, r)
		}
	})
}
