package envfile

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/compose-spec/compose-go/v2/template"
)

// lint warns about a statement compose reads, but maybe not as meant: a
// $NAME or ${NAME} whose NAME is not set above (compose makes it empty and
// only logs it, which Parse must silence), and an unquoted value cut at
// " #" whose cut env render would not show (the value is masked). v is the
// value as read; resolve sees the keys set above.
func lint(st statement, v string, resolve lookupFn) []LineWarning {
	var out []LineWarning
	var interpolated string
	switch st.quote {
	case '\'':
		return nil // literal
	case '"':
		interpolated = expandEscapes(unescapeQuoted(st.raw, '"'))
	default:
		value, _, cut := strings.Cut(st.raw, " #")
		interpolated = strings.TrimRightFunc(value, unicode.IsSpace)
		if cut && (IsSecret(st.key) || MaskValue(st.key, v) != v) {
			out = append(out, LineWarning{Line: st.line, Key: st.key, Msg: fmt.Sprintf(
				"the value of %s ends at \" #\", where compose starts a comment, and env render masks it: "+
					"if the # is part of the value, put the whole value in single quotes", st.key)})
		}
	}
	if unsetReference(interpolated, resolve) {
		// The variable's name is part of the value, maybe of a password:
		// it is not quoted.
		out = append(out, LineWarning{Line: st.line, Key: st.key, Msg: fmt.Sprintf(
			"the value of %s has a $ that compose reads as a variable not set above, which makes that part empty: "+
				"write $$ for a literal $, or put the whole value in single quotes", st.key)})
	}
	return out
}

// plainName is a ${...} without a default, alternative or requirement.
var plainName = regexp.MustCompile(`^[_A-Za-z][_A-Za-z0-9]*$`)

// unsetReference reports whether s, about to be interpolated, refers with
// $NAME or ${NAME} to a name resolve does not know. The forms with a
// default, an alternative or a requirement say what an unset name means
// and are not reported.
func unsetReference(s string, resolve lookupFn) bool {
	names := template.DefaultPattern.SubexpNames()
	for _, m := range template.DefaultPattern.FindAllStringSubmatch(s, -1) {
		for i, g := range m {
			if g == "" || (names[i] != "named" && names[i] != "braced") {
				continue
			}
			if names[i] == "braced" && !plainName.MatchString(g) {
				continue
			}
			if _, ok := resolve(g); !ok {
				return true
			}
		}
	}
	return false
}

// unescapeQuoted is compose-go's reading of a quoted value's inside
// (dotenv/parser.go, extractVarValue): a backslash before the quote
// character is dropped, every other backslash kept.
func unescapeQuoted(raw string, q byte) string {
	var b strings.Builder
	escaped := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != q {
			if !escaped && c == '\\' {
				escaped = true
				continue
			}
			if escaped {
				escaped = false
				b.WriteByte('\\')
			}
			b.WriteByte(c)
			continue
		}
		escaped = false
		b.WriteByte(c)
	}
	if escaped {
		b.WriteByte('\\')
	}
	return b.String()
}

// escapeSeq and expandEscapes are compose-go's (dotenv/parser.go): the
// escapes of a double-quoted value, expanded before interpolation; \$
// becomes $$, a literal $.
var escapeSeq = regexp.MustCompile(`(\\(?:[abcfnrtv$"\\]|0\d{0,3}))`)

func expandEscapes(s string) string {
	return escapeSeq.ReplaceAllStringFunc(s, func(m string) string {
		if m == `\$` {
			return "$$"
		}
		if strings.HasPrefix(m, `\0`) {
			m = strings.Replace(m, `\0`, `\`, 1)
		}
		v, _, _, err := strconv.UnquoteChar(m, '"')
		if err != nil {
			return m
		}
		return string(v)
	})
}
