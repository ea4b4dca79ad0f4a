package envfile

import "strings"

// Mask replaces a secret's value wherever settings are shown.
const Mask = "********"

// IsSecret reports whether key's value must be masked when shown: passwords,
// secrets, tokens, credentials, private, access and API keys, connection
// strings, and keys ending in _KEY. Keys ending in _PATH, _FILE, _FILENAME or
// _DIR name files, not secrets, and are shown (ROUTER_SSL_CERTIFICATE_KEY_PATH);
// so is GOOGLE_APPLICATION_CREDENTIALS, a path by Google's convention.
// Matching ignores case and the separators _ . -, so SECRETACCESSKEY and
// SECRET_ACCESS_KEY are both secrets.
func IsSecret(key string) bool {
	k := strings.ToUpper(key)
	if notSecret[k] {
		return false
	}
	words := strings.FieldsFunc(k, func(r rune) bool { return r == '_' || r == '.' || r == '-' })
	if len(words) == 0 {
		return false
	}
	last := words[len(words)-1]
	for _, s := range []string{"PATH", "FILE", "FILENAME", "DIR"} {
		if strings.HasSuffix(last, s) {
			return false
		}
	}
	switch last {
	case "KEY", "KEYS", "PASS", "PWD", "DSN":
		return true
	}
	joined := strings.Join(words, "")
	for _, s := range secretWords {
		if strings.Contains(joined, s) {
			return true
		}
	}
	return false
}

// secretWords mark a secret anywhere in a key, separators removed.
var secretWords = []string{
	"PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL",
	"PRIVATEKEY", "ACCESSKEY", "APIKEY", "SDKKEY", "LICENSEKEY",
	"CONNECTIONSTRING",
}

// notSecret lists keys that secretWords would wrongly catch.
var notSecret = map[string]bool{
	"GOOGLE_APPLICATION_CREDENTIALS": true, // the path of key.json, not its content
}

// Masked returns a copy of env with every non-empty secret value replaced
// by Mask. Empty values stay empty, so "not set" remains visible.
func Masked(env Env) Env {
	c := env.Clone()
	for _, k := range c.keys {
		if c.vals[k] != "" && IsSecret(k) {
			c.vals[k] = Mask
		}
	}
	return c
}
