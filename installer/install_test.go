//go:build licensetest

package installer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/steps"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/preflight"
)

// customerPackage writes a customer package (customer.env, key.json,
// license.json side by side) and returns install's options for it on
// fresh config and state dirs.
func customerPackage(t *testing.T) InstallOptions {
	t.Helper()
	dir := t.TempDir()
	pkg := filepath.Join(dir, "package")
	os.MkdirAll(pkg, 0o755)
	customer := filepath.Join(pkg, "customer.env")
	if err := os.Rename(writeCustomer(t, ""), customer); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(pkg, "key.json")
	os.WriteFile(key, []byte(`{"type":"service_account","private_key_id":"0a1b2c3d4e"}`), 0o600)
	os.WriteFile(filepath.Join(pkg, config.LicenseFileName), testLicense(t, func(l *license.License) { l.TenantID = "onp-test" }), 0o600)
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	return InstallOptions{Options: Options{Paths: paths}, CustomerEnv: customer, KeyFile: key}
}

// A first install imports the customer package (its licence found next
// to customer.env), runs the checks, brings the stack up and pins the
// release; run again without the package it converges to what is
// installed and changes nothing.
func TestInstall(t *testing.T) {
	f, _ := fakes(t)
	opts := customerPackage(t)
	opts.HTTPSPort = 8443
	paths := opts.Paths
	res, err := Install(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Preflight == nil || len(res.Preflight.Checks) == 0 || !slices.Contains(res.Applied.Created, routerService) || res.URL != "https://carto.example.com:8443/" {
		t.Errorf("result %+v", res)
	}
	for _, name := range []string{config.CustomerEnvFileName, config.LicenseFileName, config.ConfigFileName, config.EnvFileName} {
		if _, err := os.Stat(paths.File(name)); err != nil {
			t.Errorf("%s not installed: %v", name, err)
		}
	}
	if readFile(t, paths.KeyFile()) != readFile(t, opts.KeyFile) {
		t.Error("key.json not installed as given")
	}
	if cfg := installedConfig(t, paths); cfg.Router.HTTPSPort != 8443 {
		t.Errorf("router %+v", cfg.Router)
	}
	if st := readState(t, paths); st.Release == nil || st.History[0].Action != "install" {
		t.Errorf("state %+v", st)
	}
	if r := lastRun(t, paths); r.Action != "install" || r.Outcome != steps.Succeeded {
		t.Errorf("journal %+v", r)
	}
	if res.Status.License == nil || res.Status.License.State != license.Valid {
		t.Errorf("licence %+v", res.Status.License)
	}

	before := dirSnapshot(t, paths.ConfigDir)
	res, err = Install(t.Context(), InstallOptions{Options: Options{Paths: paths}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied.Changed() || !sameFiles(before, dirSnapshot(t, paths.ConfigDir)) {
		t.Errorf("a re-run changed something: %+v", res.Applied)
	}
	f.allClosed(t)
}

// A failed preflight check stops the install before anything is written
// or the engine is asked anything; the report says what failed.
func TestInstallPreflightFailureChangesNothing(t *testing.T) {
	f, _ := fakes(t)
	runChecks = func(context.Context, preflight.Options) *preflight.Report {
		return &preflight.Report{Failed: true, Checks: []preflight.Check{{ID: "disk", Title: "Disk", Status: preflight.Fail, Detail: "3 GiB free", Fix: "free 40 GiB"}}}
	}
	opts := customerPackage(t)
	res, err := Install(t.Context(), opts)
	var failed *preflight.FailedError
	if !errors.As(err, &failed) || !strings.Contains(err.Error(), "free 40 GiB") || res == nil || res.Preflight == nil {
		t.Fatalf("err %v, result %+v", err, res)
	}
	if len(f.Log) != 0 {
		t.Errorf("engine asked %q", f.Log)
	}
	for _, d := range []string{opts.Paths.ConfigDir, opts.Paths.StateDir} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s written", d)
		}
	}
}

// With InstallDocker, an engine that does not answer is installed from
// the distribution's packages, after the other checks passed; then the
// install goes on.
func TestInstallInstallsDocker(t *testing.T) {
	f, h := fakes(t)
	f.ConnectFailures = 1
	var ignored []string
	runChecks = func(_ context.Context, o preflight.Options) *preflight.Report {
		ignored = append(ignored, strings.Join(o.Ignore, ","))
		return &preflight.Report{}
	}
	opts := customerPackage(t)
	opts.InstallDocker = true
	if _, err := Install(t.Context(), opts); err != nil {
		t.Fatal(err)
	}
	if h.Installed["ID"] == "" {
		t.Errorf("docker not installed: %v", h.Installed)
	}
	// Checked first without the engine, then as every install does.
	if !slices.Equal(ignored, []string{"docker", ""}) {
		t.Errorf("checks ignoring %q", ignored)
	}
	f.allClosed(t)

	// An engine that answers is left alone.
	h.Installed = nil
	if _, err := Install(t.Context(), opts); err != nil || h.Installed != nil {
		t.Errorf("installed again: %v %v", h.Installed, err)
	}
}
