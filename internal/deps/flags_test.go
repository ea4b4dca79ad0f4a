package deps

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// flagDef finds the flags cmd/carto-appliance defines, e.g.
// f.StringVar(&x, "customer-env", ...) or PersistentFlags().Bool("no-service", ...).
var flagDef = regexp.MustCompile(`\.(?:String|Bool|Int|StringSlice|Duration)(?:Var)?P?\((?:&[^,]+, )?(?:prefix\+)?"([a-z][a-z-]+)"`)

// commandLines are whole command lines in the core's text: the firewall
// drop-in's ExecStartPre, and the purge marker file's note.
var commandLines = []string{"firewall restore --state-dir ", "`carto-appliance uninstall --purge`"}

// Only the CLI names its flags: the core names an input by what it is
// (installer.InputError, config.FieldError, preflight.Check.Inputs,
// host.SettingError) and cmd/ says which flag gives it, so that the web
// console can say which field does.
func TestOnlyTheCLINamesFlags(t *testing.T) {
	root := filepath.Join("..", "..")
	src, err := filepath.Glob(filepath.Join(root, "cmd", "carto-appliance", "*.go"))
	if err != nil || len(src) == 0 {
		t.Fatalf("cmd sources: %v", err)
	}
	flags := map[string]bool{}
	for _, f := range src {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range flagDef.FindAllStringSubmatch(string(b), -1) {
			flags[m[1]] = true
		}
	}
	for _, want := range []string{"customer-env", "key", "install-docker", "no-service", "url", "ca-cert", "bind-address"} {
		if !flags[want] {
			t.Fatalf("the flag finder missed --%s (found %v): fix flagDef", want, flags)
		}
	}

	checked := 0
	fset := token.NewFileSet()
	for _, dir := range append(leaves, "installer", "supervisor") {
		dir = strings.TrimSuffix(dir, "/")
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			checked++
			ast.Inspect(f, func(n ast.Node) bool {
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil || !strings.Contains(s, " ") {
					return true // a lone "--x" is an argument, not prose
				}
				for _, ok := range commandLines {
					s = strings.ReplaceAll(s, ok, "")
				}
				for _, m := range regexp.MustCompile(`--([a-z][a-z-]+)`).FindAllStringSubmatch(s, -1) {
					if flags[m[1]] {
						t.Errorf("%s: names the CLI's flag --%s: name the input instead and let cmd/ say the flag", fset.Position(lit.Pos()), m[1])
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if checked < 50 {
		t.Fatalf("only %d files checked", checked)
	}
}
