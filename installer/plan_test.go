package installer

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/cartodb/carto-appliance/config"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to write it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("the plan differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// planFixture is a fresh node's paths and a customer package for
// planInstall.
func planFixture(t *testing.T) (paths config.Paths, customer, key string) {
	t.Helper()
	dir := t.TempDir()
	paths = config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	key = filepath.Join(dir, "key.json")
	os.WriteFile(key, []byte(`{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nX\n-----END PRIVATE KEY-----\n"}`), 0o600)
	return paths, writeCustomer(t, ""), key
}

// The plans of a first install and of a later apply, as text: what is
// written, what changes in .env (keys only), the certificates, the
// allow-list, the services and the steps.
func TestPlanGolden(t *testing.T) {
	paths, customer, key := planFixture(t)

	d, err := planInstall(paths, InstallOptions{Options: Options{Paths: paths}, CustomerEnv: customer, KeyFile: key,
		AllowedSources: []string{"10.0.0.0/8"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.describe(paths, "install")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "plan-install.golden", strings.ReplaceAll(p.String(), carried(t).Manifest.Version, "VERSION"))
	if strings.Contains(p.String(), "admin-pass") {
		t.Error("the plan shows a password")
	}
	// The run's commit step, as an install runs it: files, then the pin.
	c := &convergeRun{paths: paths, d: d}
	if err := c.commit(context.Background()); err != nil {
		t.Fatal(err)
	}

	// customer.env changes one setting and adds one.
	b, _ := os.ReadFile(customer)
	os.WriteFile(customer, []byte(strings.Replace(string(b), "admin-pass", "admin-pass-2", 1)+"CARTO_MAPS_API_KEY_EXTRA=x\n"), 0o600)
	os.WriteFile(paths.File(config.CustomerEnvFileName), []byte(strings.Replace(string(b), "admin-pass", "admin-pass-2", 1)+"CARTO_MAPS_API_KEY_EXTRA=x\n"), 0o600)
	p, err = PlanApply(paths)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "plan-apply.golden", strings.ReplaceAll(p.String(), carried(t).Manifest.Version, "VERSION"))
}

// The commit step's undo puts back every file it replaced, removes those
// it created, and the pin a first install recorded: what upgrade's
// rollback relies on.
func TestCommitUndo(t *testing.T) {
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	customer := writeCustomer(t, "")
	key := filepath.Join(dir, "key.json")
	os.WriteFile(key, []byte(`{"type":"service_account"}`), 0o600)
	ctx := context.Background()

	d, err := planInstall(paths, InstallOptions{Options: Options{Paths: paths}, CustomerEnv: customer, KeyFile: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := &convergeRun{paths: paths, d: d}
	if err := first.commit(ctx); err != nil {
		t.Fatal(err)
	}
	installed := dirSnapshot(t, paths.ConfigDir)
	if st, _ := loadState(paths.StateDir); st.Release == nil {
		t.Fatal("the first commit recorded no pin")
	}

	b, _ := os.ReadFile(customer)
	os.WriteFile(paths.File(config.CustomerEnvFileName), []byte(strings.Replace(string(b), "admin-pass", "admin-pass-2", 1)), 0o600)
	d2, err := planInstalled(paths, nil, TLSInput{})
	if err != nil {
		t.Fatal(err)
	}
	if d2.pin != nil {
		t.Fatal("a pinned node plans a new pin")
	}
	os.WriteFile(paths.File(config.CustomerEnvFileName), b, 0o600) // as installed, until the commit
	d2.customer = []byte(strings.Replace(string(b), "admin-pass", "admin-pass-2", 1))
	second := &convergeRun{paths: paths, d: d2}
	if err := second.commit(ctx); err != nil {
		t.Fatal(err)
	}
	if sameFiles(installed, dirSnapshot(t, paths.ConfigDir)) {
		t.Fatal("the second commit changed nothing")
	}
	if err := second.undoCommit(ctx); err != nil {
		t.Fatal(err)
	}
	// atomicfile's .prev copies say what came before; the files are what count.
	after := dirSnapshot(t, paths.ConfigDir)
	for p, v := range installed {
		if !strings.HasSuffix(p, ".prev") && after[p] != v {
			t.Errorf("after undo %s differs from the installed one", p)
		}
	}
	for p := range after {
		if _, ok := installed[p]; !ok && !strings.HasSuffix(p, ".prev") {
			t.Errorf("after undo %s is there, which the install did not write", p)
		}
	}
	if st, _ := loadState(paths.StateDir); st.Release == nil {
		t.Error("undoing a later commit removed the first install's pin")
	}

	// Undoing the first install's commit leaves no input, rendering or pin.
	if err := first.undoCommit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{config.ConfigFileName, config.CustomerEnvFileName, config.EnvFileName} {
		if _, err := os.Stat(paths.File(name)); err == nil {
			t.Errorf("%s is still there after undoing the first commit", name)
		}
	}
	if st, _ := loadState(paths.StateDir); st.Release != nil {
		t.Error("undoing the first commit kept its pin")
	}
}

// install --console-password-file: the plan carries the password's bcrypt
// hash, never the password; an empty or a short one is the operator's
// input error, naming the console password.
func TestPlanInstallConsolePassword(t *testing.T) {
	paths, customer, key := planFixture(t)
	plan := func(password string) (*desired, error) {
		file := filepath.Join(t.TempDir(), "pw")
		os.WriteFile(file, []byte(password), 0o600)
		return planInstall(paths, InstallOptions{Options: Options{Paths: paths}, CustomerEnv: customer, KeyFile: key, ConsolePasswordFile: file}, nil)
	}
	d, err := plan("console password 1234\nsecond line ignored\n")
	if err != nil {
		t.Fatal(err)
	}
	if h := d.cfg.Console.PasswordHash; bcrypt.CompareHashAndPassword([]byte(h), []byte("console password 1234")) != nil {
		t.Errorf("the plan's hash %q is not the password's", h)
	}
	y, _ := d.cfg.Marshal()
	if strings.Contains(string(y), "console password") {
		t.Error("appliance.yaml would hold the password")
	}
	for _, bad := range []string{"\n", "short\n"} {
		var in *InputError
		if _, err := plan(bad); !errors.As(err, &in) || in.Input != InputConsolePassword {
			t.Errorf("password file %q: %v", bad, err)
		}
	}
}
