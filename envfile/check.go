package envfile

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/cartodb/carto-appliance/release"
)

// Problem is one thing wrong with the rendered settings. Msg names the key
// and says how to fix it; it never quotes a secret.
type Problem struct {
	Key string
	Msg string
}

// CheckError lists every problem Check found, so that the operator can fix
// them all in one pass.
type CheckError struct {
	Problems []Problem
}

func (e *CheckError) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0].Msg
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problems with the settings:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - " + p.Msg)
	}
	return b.String()
}

const packageVersionKey = "CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION"

// requiredHints say how to fill each key the embedded manifest requires.
var requiredHints = map[string]string{
	"SELFHOSTED_TENANT_ID":    "use the customer.env of the customer package CARTO sent you",
	"SELFHOSTED_DOMAIN":       "set it in customer.env to the domain users open CARTO at (or give the domain to install)",
	packageVersionKey:         "use the customer.env of the customer package CARTO sent you",
	"POSTGRES_ADMIN_PASSWORD": "set it to the password of the Postgres admin user",
	"WORKSPACE_POSTGRES_PASSWORD": "set it to the password of the workspace database user " +
		"(with the embedded database, any new strong password)",
}

var scaleKeyRE = regexp.MustCompile(`^LOCAL_[A-Z0-9_]+_SCALE$`)

// Check checks a rendered .env against the release manifest: every required
// key is set, LOCAL_*_SCALE is 0 or 1, an external Postgres or Redis
// (scale 0) names its host, and the customer package is at least the
// release's minimum. It returns nil or a *CheckError listing every problem.
func Check(env Env, m release.Manifest) error {
	var probs []Problem
	add := func(key, format string, args ...any) {
		probs = append(probs, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	reported := map[string]bool{}

	for _, k := range m.RequiredEnv {
		if env.Get(k) != "" {
			continue
		}
		hint, ok := requiredHints[k]
		if !ok {
			hint = "set it in customer.env"
		}
		state := "is empty in customer.env"
		if _, set := env.Lookup(k); !set {
			state = "is missing from customer.env"
		}
		add(k, "%s %s: %s", k, state, hint)
		reported[k] = true
	}

	for _, k := range env.keys {
		if !scaleKeyRE.MatchString(k) {
			continue
		}
		if v := env.vals[k]; v != "0" && v != "1" {
			add(k, "%s is %q: set it to 1 (run the embedded service) or 0 (use an external one)", k, MaskValue(k, v))
		}
	}

	external := func(scaleKey, hostKey, what string, embedded ...string) {
		if env.Get(scaleKey) != "0" {
			return
		}
		host := env.Get(hostKey)
		state := "is empty"
		for _, e := range embedded {
			if host == e {
				state = fmt.Sprintf("is %q, the embedded %s", MaskValue(hostKey, host), what)
			}
		}
		if host != "" && state == "is empty" {
			return
		}
		add(hostKey, "%s %s, but %s=0 asks for an external %s: set %s to the host name of your %s server, or set %s=1 to use the embedded one",
			hostKey, state, scaleKey, what, hostKey, what, scaleKey)
	}
	external("LOCAL_POSTGRES_SCALE", "WORKSPACE_POSTGRES_HOST", "Postgres", "workspace-postgres")
	external("LOCAL_REDIS_SCALE", "REDIS_HOST", "Redis", "redis", "valkey")

	if p := packageVersion(env, m, reported[packageVersionKey]); p != nil {
		probs = append(probs, *p)
	}

	if len(probs) == 0 {
		return nil
	}
	return &CheckError{Problems: probs}
}

// packageVersion checks CARTO_SELFHOSTED_CUSTOMER_PACKAGE_VERSION against
// the manifest's minimum. The legacy installer only printed this; a package
// too old for the release fails here.
func packageVersion(env Env, m release.Manifest, reported bool) *Problem {
	if m.MinCustomerPackageVersion == "" {
		return nil
	}
	raw := env.Get(packageVersionKey)
	if raw == "" {
		if reported {
			return nil
		}
		return &Problem{Key: packageVersionKey, Msg: fmt.Sprintf(
			"%s is missing from customer.env: %s", packageVersionKey, requiredHints[packageVersionKey])}
	}
	have, err := release.ParseVersion(raw)
	if err != nil {
		return &Problem{Key: packageVersionKey, Msg: fmt.Sprintf(
			"%s %q is not a version like 2025.6.2: %s", packageVersionKey, MaskValue(packageVersionKey, raw), requiredHints[packageVersionKey])}
	}
	minV, err := release.ParseVersion(m.MinCustomerPackageVersion)
	if err != nil {
		return &Problem{Key: packageVersionKey, Msg: fmt.Sprintf(
			"release %s: min_customer_package_version: %v: the release is broken, use another one", m.Version, err)}
	}
	if have.Compare(minV) >= 0 {
		return nil
	}
	return &Problem{Key: packageVersionKey, Msg: fmt.Sprintf(
		"%s is %s, older than %s, the oldest customer package release %s accepts: "+
			"download a new customer package from CARTO and replace customer.env with the one it contains",
		packageVersionKey, have, minV, m.Version)}
}
