package envfile

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

// minSecret is the shortest value a redactor looks for: shorter ones
// would mask ordinary words, and no real secret is that short.
const minSecret = 4

// NewRedactor returns what hides env's secrets in another text (a failing
// service's log line, a support bundle's file): every part of a value
// that MaskValue hides, found wherever it appears, and extraSecrets (e.g.
// KeySecrets of key.json); then MaskText, for secret shapes that no
// setting holds. The one redaction of the appliance: installer, the agent
// and the support bundle (through Redaction, which also counts) use it.
func NewRedactor(env Env, extraSecrets ...string) func(string) string {
	var pairs []string
	for _, s := range knownSecrets(env, map[string][]string{"": extraSecrets}) {
		pairs = append(pairs, s.value, Mask)
	}
	r := strings.NewReplacer(pairs...)
	return func(s string) string { return MaskText(r.Replace(s)) }
}

// namedSecret is a secret value and what holds it (a setting's name).
type namedSecret struct{ what, value string }

// knownSecrets are env's secret parts (SecretParts) and extra's values,
// each named for what holds it, at least minSecret long, longest first:
// a secret containing another is masked whole.
func knownSecrets(env Env, extra map[string][]string) []namedSecret {
	var out []namedSecret
	for _, k := range env.Keys() {
		for _, v := range SecretParts(k, env.Get(k)) {
			out = append(out, namedSecret{k, v})
		}
	}
	for _, what := range slices.Sorted(maps.Keys(extra)) {
		for _, v := range extra[what] {
			out = append(out, namedSecret{what, v})
		}
	}
	out = slices.DeleteFunc(out, func(s namedSecret) bool { return len(s.value) < minSecret })
	slices.SortStableFunc(out, func(a, b namedSecret) int { return len(b.value) - len(a.value) })
	return out
}

// ShapeFinds names, in a Redaction's counts, what MaskText found by its
// shape (a PEM key, a token, a password= value) rather than by value.
const ShapeFinds = "secret shapes"

// Redaction is the redactor of NewRedactor that also counts what it
// masked, by what held each secret (a setting's name, or the name given
// with an extra secret; ShapeFinds for MaskText's): a support bundle's
// report of its redactions, which never shows a secret.
type Redaction struct {
	secrets []namedSecret
}

// NewRedaction redacts env's secrets and extra's (by what holds them,
// e.g. "key.json" -> KeySecrets(key)).
func NewRedaction(env Env, extra map[string][]string) *Redaction {
	return &Redaction{secrets: knownSecrets(env, extra)}
}

// Redact masks text and says how many times it masked each kind.
func (r *Redaction) Redact(text string) (string, map[string]int) {
	counts := map[string]int{}
	for _, s := range r.secrets {
		if n := strings.Count(text, s.value); n > 0 {
			counts[s.what] += n
			text = strings.ReplaceAll(text, s.value, Mask)
		}
	}
	before := strings.Count(text, Mask)
	text = MaskText(text)
	if n := strings.Count(text, Mask) - before; n > 0 {
		counts[ShapeFinds] += n
	}
	return text, counts
}

// KeySecrets are the secrets of a key.json (a service account key): its
// private key, as is and with its newlines escaped (as a log may show
// the PEM), and the key's id. Not JSON: none.
func KeySecrets(keyJSON []byte) []string {
	var key map[string]any
	if json.Unmarshal(keyJSON, &key) != nil {
		return nil
	}
	var out []string
	for _, field := range []string{"private_key", "private_key_id"} {
		if v, ok := key[field].(string); ok {
			out = append(out, v, strings.ReplaceAll(v, "\n", `\n`))
		}
	}
	return out
}
