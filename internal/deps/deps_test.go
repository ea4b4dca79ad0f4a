// Package deps holds the test that keeps the packages' layering (as
// Tailscale's deps_test.go does): leaves never reach up to the workflows,
// the agent or the CLI; only the CLI knows cobra; nothing imports e2e.
package deps

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/cartodb/carto-appliance"

// leaves are the packages that know no workflow: they may be used by
// installer, supervisor and cmd, never the other way round.
var leaves = []string{
	"config", "host", "envfile", "license", "license/online", "stack", "certs", "proxy",
	"preflight", "firewall", "release", "templates", "internal/",
}

// above are what no leaf may reach, even through another package.
var above = []string{"installer", "supervisor", "cmd/"}

type pkg struct {
	path    string   // without the module prefix
	deps    []string // transitive, without the module prefix for the module's own
	imports []string // direct, tests' included
}

// list runs go list over the whole module, with every build tag the
// module uses, so that the e2e scenarios and licensetest files count.
func list(t *testing.T) map[string]pkg {
	t.Helper()
	const sep = "|"
	out, err := exec.Command("go", "list", "-tags", "integration,licensetest", "-f",
		`{{.ImportPath}}`+sep+`{{join .Deps " "}}`+sep+`{{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`,
		module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	trim := func(s string) string {
		if s == module {
			return ""
		}
		return strings.TrimPrefix(s, module+"/")
	}
	pkgs := map[string]pkg{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), sep, 3)
		p := pkg{path: trim(f[0])}
		for _, d := range strings.Fields(f[1]) {
			p.deps = append(p.deps, trim(d))
		}
		for _, d := range strings.Fields(f[2]) {
			p.imports = append(p.imports, trim(d))
		}
		pkgs[p.path] = p
	}
	for _, must := range []string{"installer", "supervisor", "cmd/carto-appliance", "config", "host", "envfile"} {
		if _, ok := pkgs[must]; !ok {
			t.Fatalf("go list did not list %s: the rules below would check nothing", must)
		}
	}
	return pkgs
}

// under says whether path is prefix's package or, for a prefix ending in
// "/", one below it.
func under(path, prefix string) bool {
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(path, prefix)
	}
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func anyUnder(path string, prefixes []string) bool {
	for _, p := range prefixes {
		if under(path, p) {
			return true
		}
	}
	return false
}

func TestLayering(t *testing.T) {
	pkgs := list(t)
	for _, p := range pkgs {
		isLeaf := anyUnder(p.path, leaves) && !under(p.path, "e2e")
		for _, d := range p.deps {
			if isLeaf && anyUnder(d, above) {
				t.Errorf("%s (a leaf) depends on %s", p.path, d)
			}
			if under(p.path, "installer") && (under(d, "supervisor") || under(d, "cmd/")) {
				t.Errorf("installer depends on %s: the workflows know neither the agent nor the CLI", d)
			}
			if d == "github.com/spf13/cobra" && !under(p.path, "cmd/") {
				t.Errorf("%s depends on cobra: only cmd/ parses command lines", p.path)
			}
		}
		for _, d := range p.imports {
			if under(d, "e2e") && !under(p.path, "e2e") {
				t.Errorf("%s imports %s: nothing outside the test bed may", p.path, d)
			}
		}
	}
}

// The rules can fail: a leaf that reached installer is caught.
func TestUnderMatchesPackagesNotPrefixes(t *testing.T) {
	for _, tc := range []struct {
		path, prefix string
		want         bool
	}{
		{"license/online", "license", true},
		{"licenses", "license", false},
		{"internal/atomicfile", "internal/", true},
		{"cmd/carto-appliance", "cmd/", true},
		{"installer", "installer", true},
	} {
		if got := under(tc.path, tc.prefix); got != tc.want {
			t.Errorf("under(%q, %q) = %v", tc.path, tc.prefix, got)
		}
	}
}
