// Package peer owns the join token of a multi-VM layout and the small
// authenticated HTTP API through which the nodes of a layout ask one another
// for their role, CARTO version and health, and have one another back up
// and restore their database.
package peer

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
)

const (
	tokenPrefix  = "carto-join-"
	tokenVersion = "v1"
	// secretSize is the length of a join secret, and the least a token or
	// the peer API accepts: the secret is the only thing standing between
	// the peer API and the rest of the private network.
	secretSize = 32
	// maxTokenSize bounds what ParseToken and ReadTokenFile take in. A real
	// token is a few hundred bytes; anything near this is not one.
	maxTokenSize = 64 << 10
)

// Join is what a node needs to join a layout: the layout's name, where each
// role runs and the secret the nodes share. It is created once, on the data
// node, and carried to the other nodes as a token.
type Join struct {
	Layout string            `json:"layout"`
	Nodes  map[string]string `json:"nodes"` // role -> private IP address
	Secret []byte            `json:"secret"`
}

// NewJoin returns a Join for layout with a fresh random secret. It refuses
// an empty layout or no nodes but does not judge the roles: the config
// package does.
func NewJoin(layout string, nodes map[string]string) (*Join, error) {
	if strings.TrimSpace(layout) == "" {
		return nil, errors.New("creating join token: no layout given")
	}
	if len(nodes) == 0 {
		return nil, errors.New("creating join token: no nodes given")
	}
	secret := make([]byte, secretSize)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("creating join token: generating its secret: %w", err)
	}
	// A copy, so that the caller changing its map later does not change
	// the token.
	return &Join{Layout: layout, Nodes: maps.Clone(nodes), Secret: secret}, nil
}

// Token returns j as a single line of text an operator can copy to the
// other nodes: "carto-join-v1." followed by its JSON in unpadded base64url.
func (j *Join) Token() string {
	// Marshalling a string, a map of strings and a byte slice cannot fail
	// (invalid UTF-8 is replaced, not refused).
	b, _ := json.Marshal(j)
	return tokenPrefix + tokenVersion + "." + base64.RawURLEncoding.EncodeToString(b)
}

// ParseToken parses a token made by Token. Surrounding spaces and line
// breaks are ignored. Its errors never quote the token: it holds the
// layout's secret, and errors end up in terminals and logs.
func ParseToken(s string) (*Join, error) {
	if len(s) > maxTokenSize {
		return nil, errors.New("not a carto-appliance join token: it is longer than 64 KiB")
	}
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return nil, errors.New("not a carto-appliance join token: give the token printed by `carto-appliance install` on the data node, or the file it wrote")
	}
	version, payload, ok := strings.Cut(rest, ".")
	if !ok || !isVersion(version) {
		return nil, errors.New("corrupt join token: its version header is damaged; copy the token again, whole")
	}
	if version != tokenVersion {
		return nil, errors.New("unknown join token version: it was made by a newer carto-appliance: upgrade this one first")
	}
	// Strict, so that exactly one text decodes to given bytes.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(payload)
	if err != nil {
		// Only the position (counted from 1) is given, never the
		// character: it is part of the token.
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			pos := len(tokenPrefix) + len(version) + 1 + int(ce) + 1
			return nil, fmt.Errorf("corrupt join token: invalid text at character %d; copy the token again, whole", pos)
		}
		return nil, errors.New("corrupt join token: copy the token again, whole")
	}
	// Unknown fields are ignored: a later carto-appliance may add fields an
	// older one can do without, and only a change it cannot ignore needs a
	// new version. The decoder's error is not passed on: it may quote the
	// decoded content, secret included.
	var j Join
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, errors.New("corrupt join token: its content does not decode; copy the token again, whole")
	}
	if err := j.validate(); err != nil {
		return nil, fmt.Errorf("invalid join token: %w", err)
	}
	return &j, nil
}

// isVersion reports whether v looks like a token version: "v" and a
// positive number.
func isVersion(v string) bool {
	digits, ok := strings.CutPrefix(v, "v")
	return ok && digits != "" && len(digits) <= 6 && digits[0] != '0' &&
		strings.Trim(digits, "0123456789") == ""
}

// validate checks what every usable Join has.
func (j *Join) validate() error {
	switch {
	case len(j.Secret) < secretSize:
		return fmt.Errorf("its secret is shorter than %d bytes", secretSize)
	case strings.TrimSpace(j.Layout) == "":
		return errors.New("it names no layout")
	case len(j.Nodes) == 0:
		return errors.New("it lists no nodes")
	}
	return nil
}

// ReadTokenFile reads and parses a token file written by WriteTokenFile
// (or any file holding just a token).
func ReadTokenFile(path string) (*Join, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading join token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading join token from %s: %w", path, err)
	}
	j, err := ParseToken(string(b))
	if err != nil {
		return nil, fmt.Errorf("reading join token from %s: %w", path, err)
	}
	return j, nil
}

// WriteTokenFile writes j's token to path, readable by its owner only, and
// atomically: a crash leaves the old file or the new one. Like every file
// atomicfile replaces, a previous different token is kept as path+".prev",
// with the same mode.
func WriteTokenFile(path string, j *Join) error {
	if j == nil {
		return fmt.Errorf("writing join token to %s: no token given", path)
	}
	if err := j.validate(); err != nil {
		return fmt.Errorf("writing join token to %s: %w", path, err)
	}
	var b bytes.Buffer
	b.WriteString(j.Token())
	b.WriteByte('\n')
	if err := atomicfile.Write(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing join token: %w", err)
	}
	return nil
}
