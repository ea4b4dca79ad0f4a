// Command standin plays every CARTO service image in the test bed: one static
// binary, told which image it is by the baked STANDIN_IMAGE and
// STANDIN_VERSION, serving the component's ports and /health, reporting the
// environment and files it sees, reaching Postgres and Redis when
// configured, and failing on demand so upgrades and rollbacks get exercised.
//
// Modes:
//   - server (default): HTTP on :3000, plus :6081 for http-cache (a stand-in
//     Varnish that proxies to maps-api) and :5447 for router-metrics.
//   - migrate: for workspace-db, or when started as onprem-init-db.sh (the
//     compose template's entrypoint): create the workspace role, database and
//     carto_migrations table, record STANDIN_VERSION, exit 0. A release's
//     schema change (STANDIN_MIGRATE_SQL) runs once, with that record.
//
// Faults from configuration: STANDIN_FAIL, or the more specific
// STANDIN_FAIL_<IMAGE> (non-alphanumerics as _, upper case, e.g.
// STANDIN_FAIL_MAPS_API), set to "exit", "unhealthy" or "crash-after=5s".
// Command-line arguments (the template passes e.g. `node .../index.js`) are
// accepted and only logged.
//
// Multi-call (multicall.go): the image's /bin/sh and /bin/wget are the
// stand-in too, in front of busybox: shells run without the proxy
// variables and wget honours NO_PROXY, as CARTO's own probes do (busybox
// wget ignores NO_PROXY: the compose healthchecks would ask the proxy for
// http://127.0.0.1:3000/health).
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// failExitCode is the status of a stand-in told to fail ("exit" or
// "crash-after").
const failExitCode = 3

func main() {
	log.SetFlags(0)
	log.SetPrefix("standin: ")
	os.Exit(run())
}

func run() int {
	if code, ok := multicall(os.Args); ok {
		return code
	}
	cfg := configFromEnv(os.Getenv, os.Args)
	log.Printf("image=%s version=%s mode=%s args=%q", cfg.Image, cfg.Version, cfg.Mode, cfg.Args)

	fail, err := parseFail(failSetting(cfg.Image, os.Getenv))
	if err != nil {
		log.Print(err)
		return 2
	}
	if fail.Kind == failExit {
		log.Print("told to fail")
		return failExitCode
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	switch cfg.Mode {
	case modeMigrate:
		if err := migrate(ctx, cfg, os.Getenv); err != nil {
			log.Printf("migration failed: %v", err)
			return 1
		}
		return 0
	default:
		if fail.Kind == failCrashAfter {
			time.AfterFunc(fail.After, func() {
				log.Printf("told to crash after %s", fail.After)
				os.Exit(failExitCode)
			})
		}
		if err := serve(ctx, cfg, fail.Kind != failUnhealthy); err != nil {
			log.Print(err)
			return 1
		}
		return 0
	}
}

const (
	modeServer  = "server"
	modeMigrate = "migrate"
)

// config is what the stand-in knows about itself.
type config struct {
	Image   string   // STANDIN_IMAGE, e.g. "maps-api"; "standin" when unset
	Version string   // STANDIN_VERSION; "dev" when unset
	Mode    string   // modeServer or modeMigrate
	Args    []string // command-line arguments, logged and reported only
}

// configFromEnv works out the image, version and mode. The mode is migrate
// when started as onprem-init-db.sh, when STANDIN_MODE says so, or for the
// workspace-db image; STANDIN_MODE=server overrides the image.
func configFromEnv(getenv func(string) string, args []string) config {
	c := config{
		Image:   getenv("STANDIN_IMAGE"),
		Version: getenv("STANDIN_VERSION"),
		Mode:    modeServer,
	}
	if c.Image == "" {
		c.Image = "standin"
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if len(args) > 1 {
		c.Args = args[1:]
	}
	switch {
	case len(args) > 0 && filepath.Base(args[0]) == "onprem-init-db.sh":
		c.Mode = modeMigrate
	case getenv("STANDIN_MODE") != "":
		c.Mode = getenv("STANDIN_MODE")
	case c.Image == "workspace-db":
		c.Mode = modeMigrate
	}
	return c
}

const (
	failNone       = ""
	failExit       = "exit"
	failUnhealthy  = "unhealthy"
	failCrashAfter = "crash-after"
)

// fault is a parsed STANDIN_FAIL value.
type fault struct {
	Kind  string        // one of the fail* constants
	After time.Duration // for failCrashAfter
}

// failEnvKey is the per-image fault variable: STANDIN_FAIL_ followed by the
// image name with every non-alphanumeric as _ and in upper case.
func failEnvKey(image string) string {
	var b strings.Builder
	b.WriteString("STANDIN_FAIL_")
	for _, r := range strings.ToUpper(image) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// failSetting returns the fault setting for image: the per-image variable
// wins over STANDIN_FAIL (which a test may bake into an image variant).
func failSetting(image string, getenv func(string) string) string {
	if v := getenv(failEnvKey(image)); v != "" {
		return v
	}
	return getenv("STANDIN_FAIL")
}

func parseFail(s string) (fault, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "" || s == "none":
		return fault{Kind: failNone}, nil
	case s == failExit || s == failUnhealthy:
		return fault{Kind: s}, nil
	case strings.HasPrefix(s, failCrashAfter+"="):
		d, err := time.ParseDuration(strings.TrimPrefix(s, failCrashAfter+"="))
		if err != nil || d < 0 {
			return fault{}, fmt.Errorf("STANDIN_FAIL %q: bad duration; expected e.g. crash-after=5s", s)
		}
		return fault{Kind: failCrashAfter, After: d}, nil
	}
	return fault{}, fmt.Errorf("STANDIN_FAIL %q: expected exit, unhealthy or crash-after=<duration>", s)
}
