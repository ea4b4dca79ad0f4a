package peer

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func newTestJoin(t testing.TB) *Join {
	t.Helper()
	j, err := NewJoin("two-vm", map[string]string{"data": "10.0.0.2", "app": "10.0.0.3"})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// encode builds a v1 token around any JSON value, valid or not.
func encode(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return "carto-join-v1." + base64.RawURLEncoding.EncodeToString(b)
}

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	j := newTestJoin(t)
	if len(j.Secret) != 32 {
		t.Fatalf("secret is %d bytes, want 32", len(j.Secret))
	}
	tok := j.Token()
	if !strings.HasPrefix(tok, "carto-join-v1.") {
		t.Fatalf("token %q lacks the v1 prefix", tok)
	}
	for _, in := range []string{tok, "  " + tok + "\n", "\t" + tok + "\r\n"} {
		got, err := ParseToken(in)
		if err != nil {
			t.Fatalf("ParseToken: %v", err)
		}
		if !reflect.DeepEqual(got, j) {
			t.Fatalf("round trip: got %+v, want %+v", got, j)
		}
	}
}

func TestNewJoinCopiesNodesAndRandomizes(t *testing.T) {
	t.Parallel()
	nodes := map[string]string{"data": "10.0.0.2"}
	a, err := NewJoin("one", nodes)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewJoin("one", nodes)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Secret, b.Secret) {
		t.Fatal("two joins got the same secret")
	}
	nodes["app"] = "10.0.0.3"
	if len(a.Nodes) != 1 {
		t.Fatal("changing the caller's map changed the join")
	}
}

func TestNewJoinRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		layout string
		nodes  map[string]string
		want   string
	}{
		{"empty layout", "", map[string]string{"data": "10.0.0.2"}, "no layout"},
		{"blank layout", "  ", map[string]string{"data": "10.0.0.2"}, "no layout"},
		{"nil nodes", "two-vm", nil, "no nodes"},
		{"empty nodes", "two-vm", map[string]string{}, "no nodes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewJoin(tt.layout, tt.nodes)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewJoin: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestParseTokenRefuses(t *testing.T) {
	t.Parallel()
	j := newTestJoin(t)
	valid := j.Token()
	_, payload, _ := strings.Cut(valid, ".")
	secret := func(n int) []byte { return bytes.Repeat([]byte{0xA5}, n) }

	tests := []struct {
		name  string
		token string
		want  string
	}{
		{"empty", "", "not a carto-appliance join token"},
		{"no prefix", payload, "printed by `carto-appliance install`"},
		{"other prefix", "carto-license-v1." + payload, "not a carto-appliance join token"},
		{"newer version", "carto-join-v2." + payload, "made by a newer carto-appliance: upgrade this one first"},
		{"garbled version", "carto-join-vX." + payload, "corrupt"},
		{"no dot", "carto-join-v1" + payload, "corrupt"},
		{"bad base64", "carto-join-v1." + payload[:10] + "*!" + payload[10:], "corrupt join token: invalid text at character 25"},
		{"padded base64", valid + "==", "corrupt"},
		{"truncated", valid[:len(valid)-7], "corrupt"},
		{"not JSON", "carto-join-v1." + base64.RawURLEncoding.EncodeToString([]byte("secret-ish garbage")), "does not decode"},
		{"JSON of another shape", encode(t, []string{"a"}), "does not decode"},
		{"short secret", encode(t, Join{Layout: "l", Nodes: map[string]string{"data": "x"}, Secret: secret(31)}), "shorter than 32 bytes"},
		{"no secret", encode(t, map[string]any{"layout": "l", "nodes": map[string]string{"data": "x"}}), "shorter than 32 bytes"},
		{"no layout", encode(t, Join{Nodes: map[string]string{"data": "x"}, Secret: secret(32)}), "no layout"},
		{"no nodes", encode(t, Join{Layout: "l", Secret: secret(32)}), "no nodes"},
		{"too large", "carto-join-v1." + strings.Repeat("A", 64<<10), "longer than 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseToken(tt.token)
			if err == nil {
				t.Fatal("ParseToken accepted it")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			// The error must quote no part of the token: neither the
			// encoded payload nor the secret in any form.
			_, p, _ := strings.Cut(tt.token, ".")
			for _, part := range []string{p, payload, payload[:12], base64.StdEncoding.EncodeToString(j.Secret)} {
				if len(part) >= 8 && strings.Contains(msg, part) {
					t.Errorf("error %q quotes part of the token (%q)", msg, part)
				}
			}
			if strings.Contains(msg, "secret-ish") {
				t.Errorf("error %q quotes the decoded content", msg)
			}
		})
	}
}

func TestTokenFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "join.token")
	j := newTestJoin(t)
	if err := WriteTokenFile(path, j); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("token file mode %04o, want 0600", perm)
	}
	got, err := ReadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, j) {
		t.Fatalf("read back %+v, want %+v", got, j)
	}

	// Replacing it keeps the owner-only mode.
	j2 := newTestJoin(t)
	if err := WriteTokenFile(path, j2); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadTokenFile(path); err != nil || !reflect.DeepEqual(got, j2) {
		t.Fatalf("after rewrite: got %+v, %v", got, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("after rewrite: %v, %v", fi.Mode(), err)
	}
}

func TestTokenFileRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	if err := WriteTokenFile(filepath.Join(dir, "bad"), &Join{Layout: "l"}); err == nil {
		t.Error("WriteTokenFile wrote a join without secret or nodes")
	}
	if _, err := os.Stat(filepath.Join(dir, "bad")); !os.IsNotExist(err) {
		t.Errorf("a refused write left a file: %v", err)
	}

	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("A"), 100<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadTokenFile(big); err == nil || !strings.Contains(err.Error(), "64 KiB") {
		t.Errorf("ReadTokenFile of a 100 KiB file: %v", err)
	}

	if _, err := ReadTokenFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("ReadTokenFile of a missing file succeeded")
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add(newTestJoin(f).Token())
	f.Add("")
	f.Add("carto-join-v1.")
	f.Add("carto-join-v2.e30")
	f.Add("carto-join-v1.e30")
	f.Add("carto-join-v1.bnVsbA")
	f.Add("carto-join-v1.!!!")
	f.Add("\x00\xff carto-join-v1")
	f.Fuzz(func(t *testing.T, s string) {
		j, err := ParseToken(s)
		if err != nil {
			return
		}
		again, err := ParseToken(j.Token())
		if err != nil {
			t.Fatalf("an accepted token does not round-trip: %v", err)
		}
		if !reflect.DeepEqual(again, j) {
			t.Fatalf("round trip changed the join: %+v, then %+v", j, again)
		}
	})
}
