package envfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/template"

	"github.com/cartodb/carto-appliance/internal/boundedread"
)

// ParseError is a problem at one line of an env file. Its message says what
// is wrong and how to fix it, and never quotes a value: values may be
// secrets.
type ParseError struct {
	Line int    // 1-based line where the statement starts
	Msg  string // what is wrong and the fix
	// Err is compose-go's error when compose-go found the problem. Its text
	// may quote the value, so Error does not include it.
	Err error
}

func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

func (e *ParseError) Unwrap() error { return e.Err }

// ReadFile reads and parses the env file at path (customer.env). Errors name
// the path, the line and the fix.
func ReadFile(path string) (Env, error) {
	data, err := boundedread.ReadFile(path, boundedread.EnvFile)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already in our message
		}
		hint := "check that the file is readable"
		switch {
		case errors.Is(err, fs.ErrNotExist):
			hint = "check the path of customer.env given"
		case errors.Is(err, fs.ErrPermission):
			hint = "run carto-appliance with sudo, or make the file readable by this user"
		case isDirErr(path):
			hint = "give the path of the customer.env file, not of its directory"
		}
		return Env{}, fmt.Errorf("reading %s: %w: %s", path, err, hint)
	}
	env, err := Parse(data)
	if err != nil {
		return Env{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return env, nil
}

func isDirErr(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// Parse reads an env file as docker compose does, with compose-go's dotenv
// parser: quotes, escapes, inline comments, `export`, and ${VAR}
// interpolation against keys set earlier in the same file. Unlike compose it
// never reads the process environment, so the result depends on data alone.
//
// Parse is stricter than compose where compose's reading would surprise:
// keys must satisfy ValidKey; a line with a bare name (which compose fills
// from the shell environment) is an error, and so is text after a closing
// quote that is not another KEY=value. A key set twice keeps its first
// position and its last value, the value compose uses.
//
// Parse refuses what compose would pass on silently but no service can use:
// a value with a NUL byte, one that is not UTF-8, and one longer than
// MaxValueSize.
func Parse(data []byte) (Env, error) {
	env, _, err := parse(data, nil, nil)
	return env, err
}

// ParseWithWarnings is Parse, with warnings about lines compose reads
// differently from what their author likely meant (LineWarning).
func ParseWithWarnings(data []byte) (Env, []LineWarning, error) {
	return parse(data, nil, nil)
}

// MaxValueSize is the longest value Parse accepts: a setting, not a file.
const MaxValueSize = 128 << 10

// LineWarning is a line of an env file that compose reads, but maybe not
// as its author meant: a key set twice (the last value wins), a $ that
// compose reads as a variable nobody set (it becomes empty), and an
// unquoted " #" that cuts a masked value short (the rest is a comment).
// Compose says nothing of the first and the third, and its warning about
// the second is one Parse must silence (a library does not print). Msg
// names the key and the fix, never the value.
type LineWarning struct {
	Line int
	Key  string
	Msg  string
}

func (w LineWarning) String() string { return fmt.Sprintf("line %d: %s", w.Line, w.Msg) }

// lookupFn resolves a variable for interpolation.
type lookupFn func(name string) (string, bool)

// parse parses data. A ${VAR} is resolved, in order, against first, the
// keys set earlier in data, then last; first and last may be nil.
func parse(data []byte, first, last lookupFn) (Env, []LineWarning, error) {
	src := string(bytes.TrimPrefix(data, []byte("\uFEFF"))) // as compose does
	stmts, err := scan(src)
	if err != nil {
		return Env{}, nil, err
	}
	var env Env
	var warnings []LineWarning
	firstLine := map[string]int{}
	resolve := func(name string) (string, bool) {
		if first != nil {
			if v, ok := first(name); ok {
				return v, true
			}
		}
		if v, ok := env.Lookup(name); ok {
			return v, true
		}
		if last != nil {
			return last(name)
		}
		return "", false
	}
	for _, st := range stmts {
		v, err := parseStatement(st, resolve)
		if err != nil {
			return Env{}, nil, err
		}
		if err := checkValue(st, v); err != nil {
			return Env{}, nil, err
		}
		warnings = append(warnings, lint(st, v, resolve)...)
		if l, ok := firstLine[st.key]; ok {
			warnings = append(warnings, LineWarning{Line: st.line, Key: st.key, Msg: fmt.Sprintf(
				"%s is set again (first on line %d): compose uses the last value; remove one of the two lines", st.key, l)})
		} else {
			firstLine[st.key] = st.line
		}
		env.Set(st.key, v)
	}
	return env, warnings, nil
}

// checkValue refuses a value no service can take, which compose passes on.
func checkValue(st statement, v string) error {
	var msg string
	switch {
	case strings.IndexByte(v, 0) >= 0:
		msg = "the value of %s has a NUL byte, which ends a string for the services: remove it"
	case !utf8.ValidString(v):
		msg = "the value of %s is not valid UTF-8: save the file as UTF-8"
	case len(v) > MaxValueSize:
		msg = fmt.Sprintf("the value of %%s is %d KiB, more than the %d KiB a setting may have: shorten it (a file's content goes in a file, not in a setting)",
			(len(v)+1023)>>10, MaxValueSize>>10)
	default:
		return nil
	}
	return &ParseError{Line: st.line, Msg: fmt.Sprintf(msg, st.key)}
}

// nonColonRef finds ${NAME-…}, ${NAME+…} and ${NAME?…}: the forms where an
// unset variable differs from an empty one.
var nonColonRef = regexp.MustCompile(`\$\{([_A-Za-z][_A-Za-z0-9]*)[-+?]`)

// parseStatement gives one statement's text to compose-go's parser and
// returns the value compose reads.
func parseStatement(st statement, resolve lookupFn) (string, error) {
	// compose-go logs a warning (through logrus, to stderr) for each plain
	// ${VAR} that is unset, and a library must not print. An unset VAR and
	// an empty one give the same result except in the ${VAR-…}, ${VAR+…} and
	// ${VAR?…} forms, so report unset only for names used in those forms.
	// (A name used both ways in one value still gets logged when unset.)
	strict := map[string]bool{}
	for _, m := range nonColonRef.FindAllStringSubmatch(st.text, -1) {
		strict[m[1]] = true
	}
	// Each reference copies a value: count what they bring, and stop
	// feeding them past MaxValueSize, so that B=${A}${A}... cannot make
	// gigabytes out of a small file.
	fed := 0
	lookup := func(name string) (string, bool) {
		if v, ok := resolve(name); ok {
			if fed += len(v); fed > MaxValueSize {
				return "", true
			}
			return v, true
		}
		return "", !strict[name]
	}
	m, err := dotenv.UnmarshalWithLookup(st.text, lookup)
	if fed > MaxValueSize {
		return "", &ParseError{Line: st.line, Msg: fmt.Sprintf(
			"the value of %s takes more than the %d KiB a setting may have from the variables it refers to: shorten it", st.key, MaxValueSize>>10)}
	}
	if err != nil {
		var missing *template.MissingRequiredError
		var invalid *template.InvalidTemplateError
		msg := fmt.Sprintf("cannot read the value of %s: check its quotes and ${...} expressions", st.key)
		switch {
		case errors.As(err, &missing):
			msg = fmt.Sprintf("the value of %s requires %s to be set", st.key, missing.Variable)
			if missing.Reason != "" {
				msg += " (" + missing.Reason + ")"
			}
			msg += fmt.Sprintf(": set %s on an earlier line", missing.Variable)
		case errors.As(err, &invalid):
			msg = fmt.Sprintf("the value of %s has an invalid ${...} expression: write $$ for a literal $, or put the value in single quotes", st.key)
		}
		return "", &ParseError{Line: st.line, Msg: msg, Err: err}
	}
	v, ok := m[st.key]
	if !ok || len(m) != 1 {
		// scan and compose-go disagree on where this statement ends; the
		// fuzz tests exist to keep this unreachable.
		return "", &ParseError{Line: st.line, Msg: fmt.Sprintf(
			"cannot tell where the value of %s ends: write it as %s=\"value\"", st.key, st.key)}
	}
	return v, nil
}

// A statement is one KEY=value of an env file, as compose-go's parser
// delimits it.
type statement struct {
	key  string // the key as compose reads it
	line int    // line of the statement's first character
	text string // from the first character (maybe "export") to the value's end
	// quote is the value's quote character, or 0 when it is unquoted.
	quote byte
	// raw is the value as written: inside the quotes, or the unquoted rest
	// of the line (comment included).
	raw string
}

var exportRE = regexp.MustCompile(`^export\s+`) // compose-go's

// scan splits src into statements exactly where compose-go's dotenv parser
// (v2.16.2, dotenv/parser.go) does, and reports syntax errors with line
// numbers and fixes but without values. It mirrors parser.parse,
// getStatementStart, locateKeyName and extractVarValue; FuzzParse checks the
// mirror against compose-go on arbitrary input.
func scan(src string) ([]statement, error) {
	var out []statement
	lines := lineCounter{src: src}
	pos := 0
	prevEnd := -1 // line on which the previous statement's quoted value closed
	prevKey := ""
	for {
		// getStatementStart: skip white space and comment lines.
		i := strings.IndexFunc(src[pos:], func(r rune) bool { return !unicode.IsSpace(r) })
		if i < 0 {
			break
		}
		pos += i
		if src[pos] == '#' {
			j := strings.IndexByte(src[pos:], '\n')
			if j < 0 {
				break
			}
			pos += j
			continue
		}
		start := pos
		line := lines.at(start)
		// Text right after a closing quote, on the same line, that is not
		// itself a valid KEY=value.
		afterQuote := func(err *ParseError) *ParseError {
			if line == prevEnd {
				err.Msg = fmt.Sprintf("unexpected text after the closing quote of %s's value: put the whole value inside the quotes, or start a comment with \" #\"", prevKey)
			}
			return err
		}

		// locateKeyName
		rest := src[start:]
		if exportRE.MatchString(rest) {
			rest = strings.TrimLeftFunc(strings.TrimPrefix(rest, "export"), isSpace)
		}
		keyEnd, sep := -1, rune(0)
	key:
		for i, r := range rest {
			if isSpace(r) {
				continue
			}
			switch r {
			case '=', ':', '\n':
				keyEnd, sep = i, r
				break key
			case '_', '.', '-', '[', ']':
			default:
				if unicode.IsLetter(r) || unicode.IsNumber(r) {
					continue
				}
				return nil, afterQuote(badKeyError(line, rest))
			}
		}
		if keyEnd < 0 {
			// compose-go would read the whole rest as the value of key "".
			return nil, afterQuote(&ParseError{Line: line, Msg: "expected KEY=value: add =value, or start the line with # to make it a comment"})
		}
		key := strings.TrimRightFunc(rest[:keyEnd], unicode.IsSpace)
		switch {
		case sep == '\n':
			// compose-go takes a bare name's value from the environment.
			return nil, afterQuote(&ParseError{Line: line, Msg: "expected KEY=value, found a name without =: add =value (a bare name takes its value from the shell, which carto-appliance does not read), or start the line with # to make it a comment"})
		case key == "":
			return nil, afterQuote(&ParseError{Line: line, Msg: "a value without a key: write KEY=value"})
		case !ValidKey(key):
			return nil, afterQuote(badKeyError(line, rest))
		}

		// extractVarValue: find the value's end.
		v := strings.TrimLeftFunc(rest[keyEnd+1:], isSpace)
		vOff := len(src) - len(v)
		end := len(src)
		if v != "" && (v[0] == '"' || v[0] == '\'') {
			q := v[0]
			closeAt := -1
			escaped := false
			for i := 1; i < len(v); i++ {
				c := v[i]
				if c != q {
					if !escaped && c == '\\' {
						escaped = true
						continue
					}
					escaped = false
					continue
				}
				if escaped {
					escaped = false
					continue
				}
				closeAt = i
				break
			}
			if closeAt < 0 {
				return nil, &ParseError{Line: line, Msg: fmt.Sprintf(
					"the value of %s opens a %c quote that is never closed: close it, or write a %c inside the value as \\%c", key, q, q, q)}
			}
			end = vOff + closeAt + 1
			prevEnd, prevKey = lines.at(end-1), key
		} else {
			if j := strings.IndexByte(v, '\n'); j >= 0 {
				end = vOff + j + 1
			}
			prevEnd, prevKey = -1, ""
		}
		st := statement{key: key, line: line, text: src[start:end]}
		if v != "" && (v[0] == '"' || v[0] == '\'') {
			st.quote, st.raw = v[0], src[vOff+1:end-1]
		} else {
			st.raw = strings.TrimSuffix(src[vOff:end], "\n")
		}
		out = append(out, st)
		pos = end
	}
	return out, nil
}

// badKeyError reports a key with a character ValidKey refuses. The key is
// quoted only when it is plainly a key (short text before "=", without
// quotes): a line without "=" may be a pasted secret.
func badKeyError(line int, rest string) *ParseError {
	l, _, _ := strings.Cut(rest, "\n")
	if k, _, ok := strings.Cut(l, "="); ok {
		k = strings.TrimSpace(k)
		if k != "" && len(k) <= 64 && !strings.ContainsAny(k, "\t\"'`") {
			return &ParseError{Line: line, Msg: fmt.Sprintf(
				"key %q has a character other than A-Z a-z 0-9 _ . -: rename the key", k)}
		}
	}
	return &ParseError{Line: line, Msg: "expected KEY=value with a key of A-Z a-z 0-9 _ . -: fix the line, or start it with # to make it a comment"}
}

// isSpace is compose-go's: white space other than a line break.
func isSpace(r rune) bool {
	switch r {
	case '\t', '\v', '\f', '\r', ' ', 0x85, 0xA0:
		return true
	}
	return false
}

// lineCounter maps byte offsets, asked in increasing order, to line numbers.
type lineCounter struct {
	src  string
	off  int // offset up to which lines were counted
	line int // lines completed before off
}

func (c *lineCounter) at(off int) int {
	if off < c.off { // not expected; count from the start
		c.off, c.line = 0, 0
	}
	c.line += strings.Count(c.src[c.off:off], "\n")
	c.off = off
	return c.line + 1
}
