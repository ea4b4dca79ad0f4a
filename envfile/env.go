// Package envfile owns the appliance's env files: it reads the operator's
// customer.env exactly as docker compose reads it, renders the generated .env
// from customer.env, the release version, the release's env template and the
// appliance settings (SPEC §5), checks the result against the release
// manifest, and masks secrets for display.
//
// Values are parsed by compose-go's own dotenv parser, so a value here means
// what it means to `docker compose`. The generated file is written in the one
// form that parser reads back byte for byte: KEY="value" with only \ " $ LF
// and CR escaped.
package envfile

import (
	"regexp"
	"slices"
)

// Env is an ordered set of environment variables: keys keep the order in
// which they were first set. The zero value is an empty Env ready to use.
// Copying an Env shares its storage; use Clone for an independent copy.
type Env struct {
	keys []string
	vals map[string]string
}

// NewEnv returns an Env holding the given key, value pairs in order; a
// trailing key without a value gets "".
func NewEnv(pairs ...string) Env {
	var e Env
	for i := 0; i < len(pairs); i += 2 {
		v := ""
		if i+1 < len(pairs) {
			v = pairs[i+1]
		}
		e.Set(pairs[i], v)
	}
	return e
}

// Set sets key to value. A new key goes last; an existing key keeps its
// place. Keys should satisfy ValidKey: Render refuses an Env whose keys do
// not, and Marshal writes them as given.
func (e *Env) Set(key, value string) {
	if e.vals == nil {
		e.vals = map[string]string{}
	}
	if _, ok := e.vals[key]; !ok {
		e.keys = append(e.keys, key)
	}
	e.vals[key] = value
}

// Get returns key's value, or "" when key is not set.
func (e Env) Get(key string) string { return e.vals[key] }

// Lookup returns key's value and whether key is set.
func (e Env) Lookup(key string) (string, bool) {
	v, ok := e.vals[key]
	return v, ok
}

// Keys returns the keys in order. The slice is the caller's.
func (e Env) Keys() []string { return slices.Clone(e.keys) }

// Len is the number of keys.
func (e Env) Len() int { return len(e.keys) }

// Clone returns an independent copy of e.
func (e Env) Clone() Env {
	var c Env
	for _, k := range e.keys {
		c.Set(k, e.vals[k])
	}
	return c
}

// Map returns the keys and values as a new map.
func (e Env) Map() map[string]string {
	m := make(map[string]string, len(e.keys))
	for _, k := range e.keys {
		m[k] = e.vals[k]
	}
	return m
}

var keyRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// ValidKey reports whether key can be written to the generated .env: one or
// more of A-Z a-z 0-9 _ . -, a subset of what compose accepts.
func ValidKey(key string) bool { return keyRE.MatchString(key) }
