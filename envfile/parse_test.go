package envfile

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/sirupsen/logrus"
)

func TestMain(m *testing.M) {
	// composeParse below calls compose-go without our lookup guard, and
	// compose-go logs unset variables through logrus.
	logrus.SetOutput(io.Discard)
	os.Exit(m.Run())
}

// composeParse reads data the way docker compose reads a .env (minus the
// process environment).
func composeParse(data []byte) (map[string]string, error) {
	return dotenv.ParseWithLookup(bytes.NewReader(data), nil)
}

// pairs flattens env for comparison: key1, value1, key2, ...
func pairs(e Env) []string {
	var out []string
	for _, k := range e.Keys() {
		out = append(out, k, e.Get(k))
	}
	return out
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want []string // key, value, ... in order
	}{
		{"empty", "", nil},
		{"comments and blank lines", "# c\n\n  # indented\nA=1\n", []string{"A", "1"}},
		{"order kept", "Z=1\nA=2\nM=3", []string{"Z", "1", "A", "2", "M", "3"}},
		{"duplicate keeps first place, last value", "A=1\nB=2\nA=3\n", []string{"A", "3", "B", "2"}},
		{"unquoted trims spaces", "A=  x y  \n", []string{"A", "x y"}},
		{"inline comment needs a space", "A=b # c\nB=b#c\nC=b\t# c\n", []string{"A", "b", "B", "b#c", "C", "b\t# c"}},
		{"double quotes keep spaces", `A="  x  "`, []string{"A", "  x  "}},
		{"double-quote escapes", `A="a\"b\\c\nd"`, []string{"A", "a\"b\\c\nd"}},
		{"unknown escapes stay", `A="a\!b\x41"`, []string{"A", `a\!b\x41`}},
		{"octal escape", `A="\0101"`, []string{"A", "A"}},
		{"single quotes are literal", `A='$HOME \n ${X}'`, []string{"A", `$HOME \n ${X}`}},
		{"single quote escape", `A='it\'s \\ here'`, []string{"A", `it's \\ here`}},
		{"multi-line double quotes", "A=\"x\ny\"\nB=2", []string{"A", "x\ny", "B", "2"}},
		{"comment after quotes", `A="x" # note`, []string{"A", "x"}},
		{"two on one line", `A="x" B='y'`, []string{"A", "x", "B", "y"}},
		{"interpolation of earlier keys", "A=1\nB=${A}x$A\nC=\"${A}\"", []string{"A", "1", "B", "1x1", "C", "1"}},
		{"unset is empty", "B=x${NOPE}y", []string{"B", "xy"}},
		{"defaults", "A=${X:-d}\nB=${X-d}\nE=\nC=${E:-d}\nD=${E-d}", []string{"A", "d", "B", "d", "E", "", "C", "d", "D", ""}},
		{"presence", "P=1\nA=${P:+yes}\nB=${X+yes}\nC=${X:+yes}", []string{"P", "1", "A", "yes", "B", "", "C", ""}},
		{"plain and unset-sensitive forms together", "A=${X}${X-d}", []string{"A", "d"}},
		{"dollar escapes", `A=$$X` + "\n" + `B="\$X"` + "\nC=$", []string{"A", "$X", "B", "$X", "C", "$"}},
		{"unquoted backslash is literal", `A=\$X`, []string{"A", `\`}},
		{"export and yaml style", "export A=1\nB: 2\n", []string{"A", "1", "B", "2"}},
		{"dots and dashes", "a.b-c_D=1", []string{"a.b-c_D", "1"}},
		{"leading digit", "0A=1", []string{"0A", "1"}},
		{"numbers kept as text", "A=007\nB=1e3", []string{"A", "007", "B", "1e3"}},
		{"CRLF", "A=x\r\nB=\"y\"\r\n", []string{"A", "x", "B", "y"}},
		{"BOM", "\uFEFFA=1", []string{"A", "1"}},
		{"empty values", "A=\nB=\"\"\nC=''", []string{"A", "", "B", "", "C", ""}},
		{"unicode", "A=héllo 世界 🚀", []string{"A", "héllo 世界 🚀"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := pairs(env); !slices.Equal(got, tc.want) {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
			// The values are compose's.
			m, err := composeParse([]byte(tc.in))
			if err != nil {
				t.Fatalf("compose-go: %v", err)
			}
			if !maps.Equal(m, env.Map()) {
				t.Errorf("compose-go reads %q, we read %q", m, env.Map())
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t"
	for _, tc := range []struct {
		name string
		in   string
		line int
		msg  string // a substring of the message
	}{
		{"bare name", "A=1\n\nNAME\n", 3, "found a name without ="},
		{"bare name at end of file", "A=1\nNAME", 2, "expected KEY=value"},
		{"pasted secret line", "A=1\n" + secret + "\n", 2, "found a name without ="},
		{"pasted secret with spaces", "A=1\nmy " + secret + " here\n", 2, "expected KEY=value"},
		{"space in key", "MY KEY=" + secret, 1, `key "MY KEY"`},
		{"bad character in key", "# c\nMY@KEY=" + secret, 2, `key "MY@KEY"`},
		{"unicode key", "CLÉ=" + secret, 1, `key "CLÉ"`},
		{"brackets in key", "A[0]=" + secret, 1, `key "A[0]"`},
		{"no key", "=" + secret, 1, "a value without a key"},
		{"unterminated double quote", "A=1\nPASSWORD=\"" + secret + "\nB=2\n", 2, `PASSWORD opens a " quote that is never closed`},
		{"unterminated single quote", "P='" + secret + `\'`, 1, "opens a ' quote"},
		{"text after closing quote", "A=1\nP=\"" + secret + "\"" + secret + "\n", 2, "unexpected text after the closing quote of P's value"},
		{"junk after quote with bad char", `P="x" ` + secret + "!\n", 1, "after the closing quote of P"},
		{"invalid template", "A=1\n\nP=" + secret + "${\n", 3, "P has an invalid ${...} expression"},
		{"required variable", "P=${X:?set X first}" + secret, 1, "requires X to be set (set X first)"},
		{"required, unset only", "P=${X?}", 1, "requires X to be set"},
		{"line after multi-line value", "A=\"x\ny\nz\"\nB\n", 4, "found a name without ="},
		{"pasted json", `"private_key": "-----BEGIN ` + secret + `=="`, 1, "expected KEY=value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T), want a *ParseError", err, err)
			}
			if pe.Line != tc.line {
				t.Errorf("line %d, want %d (%v)", pe.Line, tc.line, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
			if !strings.Contains(err.Error(), ": ") || strings.Count(err.Error(), ":") < 2 {
				t.Errorf("error %q does not say how to fix it", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q shows the value", err)
			}
		})
	}
}

// Values no service can take are refused with the line and the key
// (#11): compose passes them on.
func TestParseRefusesUnusableValues(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", MaxValueSize+1)
	half := strings.Repeat("y", MaxValueSize/2+1)
	for _, tc := range []struct {
		name string
		in   string
		line int
		msg  string
	}{
		{"NUL byte", "A=1\nPASSWORD=ab\x00cd\n", 2, "the value of PASSWORD has a NUL byte"},
		{"NUL by an octal escape", "A=1\n\nP=\"ab\\0000cd\"\n", 3, "the value of P has a NUL byte"},
		{"invalid UTF-8", "A=caf\xe9\n", 1, "the value of A is not valid UTF-8: save the file as UTF-8"},
		{"invalid UTF-8 in quotes", "A=1\nB='\xff\xfe'\n", 2, "the value of B is not valid UTF-8"},
		{"too long", "A=1\nBIG=" + big + "\n", 2, "the value of BIG is 129 KiB, more than the 128 KiB"},
		{"too long by interpolation", "H=" + half + "\nB=${H}${H}\n", 2, "the value of B takes more than the 128 KiB"},
		{"too long by repeated references", "H=" + strings.Repeat("z", 4096) + "\nB=" + strings.Repeat("$H", 64) + "\n", 2, "the value of B takes more"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T), want a *ParseError", err, err)
			}
			if pe.Line != tc.line || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q at line %d, want %q at line %d", err, pe.Line, tc.msg, tc.line)
			}
			// compose-go reads every one of them.
			if _, err := composeParse([]byte(tc.in)); err != nil {
				t.Errorf("compose-go refuses it too (%v): the test no longer shows a gap", err)
			}
		})
	}
	// The largest value allowed passes.
	if _, err := Parse([]byte("A=" + big[1:])); err != nil {
		t.Errorf("a value of MaxValueSize: %v", err)
	}
}

func TestParseWarnings(t *testing.T) {
	t.Parallel()
	const secret = "s3cr"
	for _, tc := range []struct {
		name string
		in   string
		want []string // "line: substring", in order
	}{
		{"clean", "A=1\nB=${A}\nC='$x'\nD=$$x\nE=\"\\$x\"\nF=${X:-d}${X-d}${X:+a}\nLOG_LEVEL=info # a comment\n", nil},
		{"duplicate", "A=1\nB=2\nA=3\n", []string{"3: A is set again (first on line 1): compose uses the last value"}},
		{"unquoted unset variable", "A=1\nPASSWORD=ab$" + secret + "\n", []string{"2: the value of PASSWORD has a $ that compose reads as a variable not set above"}},
		{"double-quoted unset variable", "P=\"ab${" + secret + "}\"\n", []string{"1: the value of P has a $"}},
		{"set later is unset here", "P=a$B\nB=1\n", []string{"1: the value of P has a $"}},
		{"self reference", "P=$P\n", []string{"1: the value of P has a $"}},
		{"octal escape makes a name", "P=\"$\\0101\"\n", []string{"1: the value of P has a $"}},
		{"comment cuts a secret", "A=1\n\nPOSTGRES_ADMIN_PASSWORD=ab #" + secret + "\n", []string{"3: the value of POSTGRES_ADMIN_PASSWORD ends at \" #\""}},
		{"comment cuts a masked value", "CUSTOM=9f86d081884c7d659a2feaa0c55ad015 #" + secret + "\n", []string{"1: the value of CUSTOM ends at \" #\""}},
		{"quoted # is kept", "PASSWORD=\"ab #" + secret + "\"\nP2='a #b'\n", nil},
		{"several", "PASSWORD=$x #c\nPASSWORD=1\n", []string{
			"1: the value of PASSWORD ends at", "1: the value of PASSWORD has a $", "2: PASSWORD is set again"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, warnings, err := ParseWithWarnings([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range warnings {
				got = append(got, w.String())
				if strings.Contains(w.Msg, secret) {
					t.Errorf("warning %q shows the value", w)
				}
				if _, ok := env.Lookup(w.Key); !ok {
					t.Errorf("warning %q names key %q, which is not set", w, w.Key)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			for i, w := range tc.want {
				line, msg, _ := strings.Cut(w, ": ")
				if !strings.HasPrefix(got[i], "line "+line+": ") || !strings.Contains(got[i], msg) {
					t.Errorf("warning %q, want line %s and %q", got[i], line, msg)
				}
			}
			// Parse reads the same values, without the warnings.
			plain, err := Parse([]byte(tc.in))
			if err != nil || !maps.Equal(plain.Map(), env.Map()) {
				t.Errorf("Parse: %v %q", err, plain.Map())
			}
		})
	}
}

func TestParseAllowsSpaceBeforeEquals(t *testing.T) {
	t.Parallel()
	env, err := Parse([]byte("A = 1\nB\t=\t2"))
	if err != nil {
		t.Fatal(err)
	}
	if got := pairs(env); !slices.Equal(got, []string{"A", "1", "B", "2"}) {
		t.Errorf("got %q", got)
	}
}

func TestReadFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	t.Run("ok", func(t *testing.T) {
		env, err := ReadFile("testdata/customer.env")
		if err != nil {
			t.Fatal(err)
		}
		if got := env.Get("SELFHOSTED_TENANT_ID"); got != "onp-acme01" {
			t.Errorf("SELFHOSTED_TENANT_ID = %q", got)
		}
	})
	t.Run("missing", func(t *testing.T) {
		p := filepath.Join(dir, "nope.env")
		_, err := ReadFile(p)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v is not fs.ErrNotExist", err)
		}
		if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "check the path") || strings.Contains(err.Error(), "--") {
			t.Errorf("error %q does not name the path and the fix, or names a flag (cmd/'s business)", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		_, err := ReadFile(dir)
		if err == nil || !strings.Contains(err.Error(), "not of its directory") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads any file")
		}
		p := filepath.Join(dir, "locked.env")
		if err := os.WriteFile(p, []byte("A=1"), 0o000); err != nil {
			t.Fatal(err)
		}
		_, err := ReadFile(p)
		if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "sudo") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("syntax error names file and line", func(t *testing.T) {
		p := filepath.Join(dir, "bad.env")
		if err := os.WriteFile(p, []byte("A=1\nB=\"open\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := ReadFile(p)
		want := "reading " + p + ": line 2: "
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error %v, want prefix %q", err, want)
		}
	})
}

// FuzzParse checks that Parse never panics, reads exactly what compose-go
// reads whenever it accepts the input, and that what it reads survives
// Marshal.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"A=1\nB=${A}\n", `A="x\"y" # c`, "export A='b'\nC: d", "A=\"x\ny\"", `A="\0101\$X$$Y"`,
		"A=${X-d}${X}", "A=${X:?m}", "A=\"x\" B=1", "A=1\r\nB=2", "\uFEFFA=1", "A\n", "=1", "A=\"\\",
		"A=x\x00y", "A=\"\\0000\"", "A=\xff", "P=a$b #c\nP=1", "P=\"$\\0101\"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, warnings, err := ParseWithWarnings(data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 {
				t.Fatalf("error %v is not a *ParseError with a line", err)
			}
			// Where compose-go fails too, it must agree.
			if pe.Err != nil || strings.Contains(pe.Msg, "never closed") {
				if _, cerr := composeParse(data); cerr == nil {
					t.Fatalf("we refuse (%v) what compose-go reads: %q", err, data)
				}
			}
			return
		}
		for _, k := range env.Keys() {
			if v := env.Get(k); strings.IndexByte(v, 0) >= 0 || !utf8.ValidString(v) || len(v) > MaxValueSize {
				t.Fatalf("we accept a value no service can take, %s=%q", k, v)
			}
		}
		lines := bytes.Count(data, []byte("\n")) + 1
		for _, w := range warnings {
			if _, ok := env.Lookup(w.Key); !ok || w.Line < 1 || w.Line > lines {
				t.Fatalf("warning %q (key %q) is not about a line and key of %q", w, w.Key, data)
			}
		}
		want, err := composeParse(data)
		if err != nil {
			t.Fatalf("we accept what compose-go refuses (%v): %q", err, data)
		}
		if !maps.Equal(want, env.Map()) {
			t.Fatalf("compose-go reads %q, we read %q from %q", want, env.Map(), data)
		}
		checkRoundTrip(t, env)
	})
}

// TestParseDoesNotLog checks that unset variables do not make compose-go log
// (a library must not print). Not parallel: it swaps logrus's global output,
// and parallel tests run only after the sequential ones.
func TestParseDoesNotLog(t *testing.T) {
	var buf bytes.Buffer
	logrus.SetOutput(&buf)
	defer logrus.SetOutput(io.Discard)
	env, err := Parse([]byte("A=${UNSET}\nB=\"$UNSET2\"\nC=${UNSET3:-d}${UNSET4-e}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := pairs(env); !slices.Equal(got, []string{"A", "", "B", "", "C", "de"}) {
		t.Errorf("got %q", got)
	}
	rel := testRelease(t)
	if _, err := Render(RenderInput{Version: "1.0", EnvTemplate: rel.EnvTemplate}); err != nil {
		t.Fatal(err)
	}
	if buf.Len() > 0 {
		t.Errorf("compose-go logged:\n%s", buf.String())
	}
}

// FuzzParseWarnings checks that a warning about a value never shows it:
// the value is a password between fixed lines.
func FuzzParseWarnings(f *testing.F) {
	for _, s := range []string{"a$b~c", "x #y~z", "${~}", "$$~", "\"a$b~\"", "'a #~'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		if !strings.Contains(value, "~") || strings.ContainsAny(value, "\n\r") {
			return // "~" is in no message; one line keeps the statement whole
		}
		env, warnings, err := ParseWithWarnings([]byte("A=1\nPASSWORD=" + value + "\nA=2\n"))
		if err != nil {
			return
		}
		for _, w := range warnings {
			if strings.Contains(w.String(), "~") {
				t.Fatalf("warning %q shows the value %q", w, env.Get("PASSWORD"))
			}
		}
	})
}
