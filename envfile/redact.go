package envfile

import (
	"encoding/json"
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
// and the support bundle use it.
func NewRedactor(env Env, extraSecrets ...string) func(string) string {
	var secrets []string
	for _, k := range env.Keys() {
		secrets = append(secrets, SecretParts(k, env.Get(k))...)
	}
	secrets = append(secrets, extraSecrets...)
	// The replacer tries its pairs in order: longest first, so that a
	// secret containing another is masked whole.
	slices.SortStableFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	var pairs []string
	for _, v := range secrets {
		if len(v) >= minSecret {
			pairs = append(pairs, v, Mask)
		}
	}
	r := strings.NewReplacer(pairs...)
	return func(s string) string { return MaskText(r.Replace(s)) }
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
