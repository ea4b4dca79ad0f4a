//go:build integration

package e2e

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// An operator's customer.env is checked before anything changes: key.json
// does not go to a registry that customer.env alone names, a domain the
// --domain check refuses and a value no service can take are refused with
// the file, line and key; on a good install, key.json goes only to the
// registry named with --registry, the install says so, its warnings name
// customer.env's doubtful lines, and env render masks secrets by name and
// by value.
func TestCustomerEnvInputs(t *testing.T) {
	// Parallel, so that it runs after TestStandardInstallLifecycle, which
	// must be the first to pull from the run's registry.
	t.Parallel()
	n := newNode(t, "e2e-inputs")

	refused := func(t *testing.T, args []string, wants ...string) {
		t.Helper()
		n.mustRefuse(t, args, wants...)
		if _, err := os.Stat(n.configDir); !os.IsNotExist(err) {
			t.Errorf("a refused install created %s (%v)", n.configDir, err)
		}
		if c := n.containers(); len(c) != 0 {
			t.Errorf("a refused install created containers %v", c)
		}
	}

	step(t, "a registry only customer.env names does not get key.json", func(t *testing.T) {
		env := baseCustomerEnv(n.domain)
		env["DOCKER_REGISTRY_BASE_PATH"] = reg.Host
		n.writeCustomerEnv(env)
		var noRegistry []string
		for _, a := range n.installArgs() {
			if a != "--registry" && a != reg.Host {
				noRegistry = append(noRegistry, a)
			}
		}
		refused(t, noRegistry, "customer.env "+n.customerEnv, "DOCKER_REGISTRY_BASE_PATH", "names registry "+reg.Host, "key.json", "name "+reg.Host, "as the appliance's registry", "(--registry)")
	})

	step(t, "a SELFHOSTED_DOMAIN the --domain check refuses is refused", func(t *testing.T) {
		for _, bad := range []string{`"` + n.domain + `\nevil.example.com"`, "*." + n.domain, n.domain + ":8443"} {
			env := baseCustomerEnv(n.domain)
			env["SELFHOSTED_DOMAIN"] = bad
			n.writeCustomerEnv(env)
			refused(t, n.installArgs(), "customer.env "+n.customerEnv+": SELFHOSTED_DOMAIN", "is not a valid host name", "--domain")
		}
	})

	step(t, "a value with a NUL byte is refused with the file, line and key", func(t *testing.T) {
		n.writeCustomerEnv(baseCustomerEnv(n.domain))
		appendLines(t, n.customerEnv, "CUSTOM_NOTE=a\x00b\n")
		refused(t, n.installArgs(), n.customerEnv+": line "+lineOf(t, n.customerEnv, "CUSTOM_NOTE=")+": the value of CUSTOM_NOTE has a NUL byte")
	})

	step(t, "key.json goes to the registry named with --registry, warnings name the lines, env render masks", func(t *testing.T) {
		env := baseCustomerEnv(n.domain)
		env["DOCKER_REGISTRY_BASE_PATH"] = reg.Host
		env["DATABASE_URL"] = "postgres://carto:db-secret-9@db.example.com/carto"
		env["REDIS_AUTH"] = "redis-auth-secret"
		env["CUSTOM_NOTE"] = "a$b"
		env["LOG_LEVEL"] = "info"
		n.writeCustomerEnv(env)
		appendLines(t, n.customerEnv, "LOG_LEVEL=debug\n")
		out, errOut := n.mustRun(n.installArgs()...)
		if !strings.Contains(out, "Registry credentials (key.json) go to "+reg.Host+" only") {
			t.Errorf("install does not say where key.json goes:\n%s", out)
		}
		for _, w := range []string{
			"Warning: customer.env " + n.customerEnv + " line " + lineOf(t, n.customerEnv, "CUSTOM_NOTE=") + ": the value of CUSTOM_NOTE has a $",
			"Warning: customer.env " + n.customerEnv + " line " + lineOf(t, n.customerEnv, "LOG_LEVEL=debug") + ": LOG_LEVEL is set again (first on line " + lineOf(t, n.customerEnv, "LOG_LEVEL=info") + ")",
		} {
			if !strings.Contains(errOut, w) {
				t.Errorf("install warnings lack %q:\n%s", w, errOut)
			}
		}
		if !n.status().Healthy {
			t.Error("not healthy")
		}
		rendered, errOut := n.mustRun("env", "render")
		for _, w := range []string{`DATABASE_URL="postgres://carto:********@db.example.com/carto"`, `REDIS_AUTH="********"`, `LOG_LEVEL="debug"`} {
			if !strings.Contains(rendered, w) {
				t.Errorf("env render lacks %s:\n%s", w, rendered)
			}
		}
		for _, secret := range []string{"db-secret-9", "redis-auth-secret", "adm1n", "ws-pass-2"} {
			if strings.Contains(rendered, secret) {
				t.Errorf("env render shows %q", secret)
			}
		}
		if !strings.Contains(errOut, "LOG_LEVEL is set again") {
			t.Errorf("env render does not warn about the line:\n%s", errOut)
		}
	})

	step(t, "logs mask what env render masks", func(t *testing.T) {
		// A service that prints its settings: written to its PID 1's
		// output, which the engine logs.
		n.exec("lds-api", "sh", "-c", "echo 'settings: postgres://carto:db-secret-9@db.example.com/carto redis-auth-secret adm1n$ecret #x y' > /proc/1/fd/1")
		logs, _ := n.mustRun("logs", "lds-api")
		if !strings.Contains(logs, "settings: postgres://carto:********@db.example.com/carto ********") {
			t.Errorf("logs lack the masked line:\n%s", logs)
		}
		for _, secret := range []string{"db-secret-9", "redis-auth-secret", "adm1n"} {
			if strings.Contains(logs, secret) {
				t.Errorf("logs show %q", secret)
			}
		}
	})
}

func appendLines(t *testing.T, path, lines string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(lines); err != nil {
		t.Fatal(err)
	}
}

// lineOf is the number of the first line of path that starts with prefix.
func lineOf(t *testing.T, path, prefix string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			return strconv.Itoa(i + 1)
		}
	}
	t.Fatalf("no line %q in %s", prefix, path)
	return ""
}
