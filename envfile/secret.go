package envfile

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Mask replaces a secret's value wherever settings are shown.
const Mask = "********"

// Settings are shown (env render, failure logs, errors) through MaskValue,
// which judges a value by its key's name and by its own shape:
//
//  1. A key whose name says secret (IsSecret) is masked whole.
//  2. A value holding a PEM private key or a JWT is masked whole, whatever
//     its key.
//  3. A key that is not known to be harmless (Harmless) is masked whole
//     when its value looks like an opaque token: one word of 16 or more
//     characters mixing letters and digits, as keys and passwords are.
//  4. What is left is shown, with the secret parts of the text masked:
//     the password of a URL (postgres://user:********@host/db), the value
//     of password=, AccountKey=, sig= and the like, and bearer tokens.
//
// Rules 2–4 are about values, so a secret under a name nobody foresaw is
// still masked when it has a secret's shape; the price is that a harmless
// token-like value under an unknown key is masked too.

// IsSecret reports whether key's name says its value is a secret:
// passwords, passphrases, secrets, tokens, credentials, salts, JWT, HMAC,
// SAS and signing keys, auth strings, private, access and API keys,
// connection strings, and keys ending in _KEY. Keys ending in _PATH,
// _FILE, _FILENAME or _DIR name files, not secrets, and are not
// (ROUTER_SSL_CERTIFICATE_KEY_PATH); nor is GOOGLE_APPLICATION_CREDENTIALS,
// a path by Google's convention. Matching ignores case and the separators
// _ . -, so SECRETACCESSKEY and SECRET_ACCESS_KEY are both secrets.
func IsSecret(key string) bool {
	k := strings.ToUpper(key)
	if notSecret[k] {
		return false
	}
	words := strings.FieldsFunc(k, isKeySeparator)
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
	for _, w := range words {
		if secretNames[w] {
			return true
		}
	}
	joined := strings.Join(words, "")
	for _, s := range secretWords {
		if strings.Contains(joined, s) {
			return true
		}
	}
	return false
}

func isKeySeparator(r rune) bool { return r == '_' || r == '.' || r == '-' }

// secretWords mark a secret anywhere in a key, separators removed.
var secretWords = []string{
	"PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "CREDENTIAL",
	"PRIVATEKEY", "ACCESSKEY", "APIKEY", "SDKKEY", "LICENSEKEY",
	"CONNECTIONSTRING",
}

// secretNames mark a secret as whole words of a key: as substrings they
// would catch harmless keys (SALT in SALTLAKE, AUTH in OAUTH).
var secretNames = map[string]bool{
	"SALT": true, "JWT": true, "HMAC": true, "SAS": true, "SIGNING": true, "AUTH": true,
}

// notSecret lists keys that secretWords would wrongly catch.
var notSecret = map[string]bool{
	"GOOGLE_APPLICATION_CREDENTIALS": true, // the path of key.json, not its content
}

// Harmless reports whether key is known to hold no secret: a key of the
// release's settings or of customer.env that names a host, port, path,
// mode, identifier and the like. An unknown key is not harmless: its
// value is shown only when it does not look like a token.
func Harmless(key string) bool {
	k := strings.ToUpper(key)
	if IsSecret(k) {
		return false
	}
	if harmlessKeys[k] {
		return true
	}
	words := strings.FieldsFunc(k, isKeySeparator)
	return len(words) > 1 && harmlessLast[words[len(words)-1]]
}

// harmlessLast are last words of keys whose values are not secrets:
// names of hosts, ports, paths, modes, regions, identifiers, URLs (whose
// passwords MaskValue masks anyway).
var harmlessLast = map[string]bool{
	"HOST": true, "HOSTS": true, "PORT": true, "DOMAIN": true, "ADDRESS": true,
	"URL": true, "URLS": true, "TEMPLATE": true, "PATH": true, "FILE": true,
	"FILENAME": true, "DIR": true, "CA": true, "CERTS": true,
	"SCALE": true, "ENABLED": true, "ENABLE": true, "MODE": true, "LEVEL": true,
	"REGION": true, "BUCKET": true, "PROVIDER": true, "PREFIX": true,
	"TOPIC": true, "SUBSCRIPTION": true, "VERSION": true, "ID": true,
	"AUDIENCE": true, "NAMESPACE": true, "ENGINE": true, "SIZE": true,
	"DB": true, "USER": true, "NAME": true, "ARN": true, "ACCOUNT": true,
	"AUTOGENERATE": true, "HTTPS": true, "MESSAGE": true, "TENANT": true,
}

// harmlessKeys are harmless keys whose last word says nothing.
var harmlessKeys = map[string]bool{
	"GOOGLE_APPLICATION_CREDENTIALS": true,
	"HTTP_PROXY":                     true, // a proxy URL's credentials are refused, and masked anyway
	"HTTPS_PROXY":                    true,
	"GRPC_PROXY":                     true,
	"NO_PROXY":                       true,
	"NODE_EXTRA_CA_CERTS":            true,
	"NODE_TLS_REJECT_UNAUTHORIZED":   true,
}

var (
	// privatePEM is the header of a PEM private key of any kind.
	privatePEM = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----`)
	// jwtRE is a signed JWT: header ({" in base64url), payload, signature.
	jwtRE = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}`)
)

// textRules find the secret parts of a text; the first submatch is the
// secret, or the whole match when there is none.
var textRules = []*regexp.Regexp{
	// A whole PEM private key, or from its header to the end of the text.
	regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)`),
	jwtRE,
	// The password of a URL, up to the last @ that a host follows: an
	// unescaped @ or / in a password is masked with it (and a path's @
	// masks more than the password, never less).
	regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s:@/?#]*:(\S+)@[^\s@/?#]*(?:[/?#\s]|$)`),
	// key=value pairs of connection strings and query strings.
	regexp.MustCompile(`(?i)(?:^|[^A-Za-z0-9_-])(?:password|passwd|pwd|passphrase|secret|client_secret|token|access_token|refresh_token|id_token|api_?key|accountkey|sharedaccesskey|sharedaccesssignature|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token)=([^;&\s"',]+)`),
	// HTTP authorization headers.
	regexp.MustCompile(`(?i)\b(?:bearer|basic)\s+([A-Za-z0-9._~+/=-]{8,})`),
}

// secretSpans returns the byte ranges of the secret parts of s, sorted and
// merged.
func secretSpans(s string) [][2]int {
	var spans [][2]int
	for _, re := range textRules {
		for _, m := range re.FindAllStringSubmatchIndex(s, -1) {
			lo, hi := m[0], m[1]
			if len(m) >= 4 && m[2] >= 0 {
				lo, hi = m[2], m[3]
			}
			if hi > lo {
				spans = append(spans, [2]int{lo, hi})
			}
		}
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	var merged [][2]int
	for _, sp := range spans {
		if n := len(merged); n > 0 && sp[0] <= merged[n-1][1] {
			merged[n-1][1] = max(merged[n-1][1], sp[1])
			continue
		}
		merged = append(merged, sp)
	}
	return merged
}

// MaskText masks the secret parts of a free text, such as a log line: PEM
// private keys, JWTs, the passwords of URLs, the values of password=,
// AccountKey=, sig= and the like, and bearer tokens.
func MaskText(s string) string {
	spans := secretSpans(s)
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	prev := 0
	for _, sp := range spans {
		b.WriteString(s[prev:sp[0]])
		b.WriteString(Mask)
		prev = sp[1]
	}
	b.WriteString(s[prev:])
	return b.String()
}

// MaskValue returns what may be shown of key's value (see the rules
// above). An empty value stays empty, so "not set" remains visible.
func MaskValue(key, value string) string {
	if maskedWhole(key, value) {
		return Mask
	}
	return MaskText(value)
}

func maskedWhole(key, value string) bool {
	if value == "" {
		return false
	}
	return IsSecret(key) || privatePEM.MatchString(value) || jwtRE.MatchString(value) ||
		(!Harmless(key) && looksLikeToken(value))
}

// SecretParts returns the parts of key's value that MaskValue hides, for
// a redactor to find them in other texts (a service's log). A part given
// URL-escaped is returned in its unescaped form as well, as a service may
// log either.
func SecretParts(key, value string) []string {
	var parts []string
	if maskedWhole(key, value) {
		parts = append(parts, value)
	} else {
		for _, sp := range secretSpans(value) {
			parts = append(parts, value[sp[0]:sp[1]])
		}
	}
	for _, p := range parts {
		if u, err := url.PathUnescape(p); err == nil && u != p {
			parts = append(parts, u)
		}
	}
	return parts
}

// looksLikeToken reports whether v is one word of 16 or more characters
// of the alphabets keys and tokens are written in (base64, hex, base64url)
// with a part that mixes letters and digits or is 24 characters or longer.
// Host names, paths, versions and words joined by - . _ / are not tokens.
func looksLikeToken(v string) bool {
	if len(v) < 16 || strings.HasPrefix(v, "/") || strings.Contains(v, "://") {
		return false
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("+/=_.~-", r)) {
			return false
		}
	}
	for _, part := range strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune("-_./", r) }) {
		letters, digits := false, false
		for _, r := range part {
			if r >= '0' && r <= '9' {
				digits = true
			} else {
				letters = true
			}
		}
		if letters && digits && len(part) >= 8 || len(part) >= 24 {
			return true
		}
	}
	return false
}

// Masked returns a copy of env with every value passed through MaskValue.
func Masked(env Env) Env {
	c := env.Clone()
	for _, k := range c.keys {
		c.vals[k] = MaskValue(k, c.vals[k])
	}
	return c
}
