package envfile

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkRoundTrip marshals env and fails unless both compose-go and Parse
// read back exactly env (Parse also in the same order).
func checkRoundTrip(t *testing.T, env Env) {
	t.Helper()
	out := Marshal(env)
	got, err := composeParse(out)
	if err != nil {
		t.Fatalf("compose-go cannot read Marshal's output: %v\n%s", err, out)
	}
	if !maps.Equal(got, env.Map()) {
		t.Fatalf("compose-go reads back %q, want %q\nfile:\n%s", got, env.Map(), out)
	}
	back, err := Parse(out)
	for _, v := range env.vals {
		if strings.IndexByte(v, 0) >= 0 || !utf8.ValidString(v) || len(v) > MaxValueSize {
			// A value Parse refuses in customer.env, so never rendered:
			// it is refused here too.
			if err == nil {
				t.Fatalf("Parse reads a value it refuses in customer.env:\n%s", out)
			}
			return
		}
	}
	if err != nil {
		t.Fatalf("Parse cannot read Marshal's output: %v\n%s", err, out)
	}
	if !slices.Equal(pairs(back), pairs(env)) {
		t.Fatalf("Parse reads back %q, want %q", pairs(back), pairs(env))
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	t.Parallel()
	values := []string{
		``, ` `, `plain`, `with space`, `  leading and trailing  `,
		`"`, `""`, `'`, `''`, `'single'`, `"double"`, `it's`, `say "hi"`,
		`$`, `$$`, `$X`, `${X}`, `${X:-d}`, `$${X}`, `\$X`, `$(cmd)`,
		`#`, `a #b`, `a#b`, `# all comment`,
		`!`, `a\!b`, "`backtick`", `\`, `a\`, `\\`, `\n`, `\"`, `\0101`, `\x41`, `\u00e9`,
		"line1\nline2", "\n", "crlf\r\n", "\r", "tab\there", "trailing newline\n",
		`007`, `0`, `-1`, `1e3`, `0x1F`, `true`, `null`,
		`héllo 世界 🚀`, "\u00a0nbsp", "\u0085nel", "\uFEFFbom",
		`=`, `a=b`, `:`, `export X=1`, `'"$\` + "\n`#",
		`{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"}`,
	}
	env := NewEnv()
	for i, v := range values {
		env.Set("K"+strings.Repeat("_", i%3)+string(rune('A'+i%26))+string(rune('0'+i/26)), v)
	}
	env.Set("a.b-c", "dotted")
	env.Set("0LEADING", "digit")
	checkRoundTrip(t, env)

	for _, v := range values {
		checkRoundTrip(t, NewEnv("K", v)) // alone, and so last in the file
	}
}

func TestMarshalFormat(t *testing.T) {
	t.Parallel()
	out := Marshal(NewEnv("A", `x"y$z\`, "B", "1\n2"))
	if !bytes.HasPrefix(out, []byte(Header)) {
		t.Errorf("no header:\n%s", out)
	}
	body := strings.TrimPrefix(string(out), Header)
	if want := "A=\"x\\\"y\\$z\\\\\"\nB=\"1\\n2\"\n"; body != want {
		t.Errorf("body %q, want %q", body, want)
	}
	for _, l := range strings.Split(Header, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			t.Errorf("header line %q is not a comment", l)
		}
	}
}

// FuzzRoundTrip checks that every value, and every valid key, reads back
// through compose-go exactly as marshalled.
func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"", "x", `a"b`, `$X`, `\`, "a\nb", "\r", `${X:-y}`, "`!`", "#", " x "} {
		f.Add("KEY", s)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		if !ValidKey(key) {
			key = "KEY"
		}
		// Neighbours catch a value that leaks into the next statement.
		checkRoundTrip(t, NewEnv("BEFORE", "1", key, value, "AFTER", value))
	})
}
