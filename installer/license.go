package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/license/online"
	"github.com/cartodb/carto-appliance/proxy"
)

// planLicense reads and judges the licence an install uses: file, or the
// customer package's license.json next to customerEnv, or the installed
// one. A licence that is invalid, expired, revoked, past its grace, or not
// for this tenant and layout is refused (license.ErrInvalid: exit 4)
// before anything changes.
func planLicense(paths config.Paths, d *desired, file, customerEnv string) error {
	if file == "" && customerEnv != "" {
		if p := filepath.Join(filepath.Dir(customerEnv), config.LicenseFileName); fileExists(p) {
			file = p
		}
	}
	if file == "" {
		file = paths.File(config.LicenseFileName)
	}
	data, err := boundedread.ReadFile(file, boundedread.License)
	if errors.Is(err, fs.ErrNotExist) {
		return inputErrorf(InputLicense, "%w: no licence at %s: give the license.json of your CARTO customer package", license.ErrInvalid, file)
	}
	if err != nil {
		return &InputError{Input: InputLicense, Err: fmt.Errorf("reading the licence: %w", err)}
	}
	st := evaluateLicense(paths, d.cfg, d.env, data, time.Now())
	switch st.State {
	case license.Invalid, license.Expired:
		return refuseLicense(file, st)
	case license.Grace, license.Expiring:
		d.warnings = append(d.warnings, "licence: "+st.Reason)
	}
	d.license = data
	return nil
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// evaluateLicense is the licence's state for this installation.
func evaluateLicense(paths config.Paths, cfg config.Config, env envfile.Env, data []byte, now time.Time) license.Status {
	if len(data) == 0 {
		return license.Status{State: license.Invalid, Reason: "no licence is installed: install the license.json of your CARTO customer package with `carto-appliance license update FILE`"}
	}
	l, err := license.Parse(data)
	usage := license.Usage{TenantID: env.Get("SELFHOSTED_TENANT_ID"), Layout: cfg.Defaults().Layout, Nodes: cfg.NodeCount()}
	return license.Evaluate(l, err, usage, loadLicenseCheck(paths), cfg.License.Grace(), now)
}

func licenseCheckPath(paths config.Paths) string {
	return filepath.Join(paths.StateDir, config.LicenseCheckFileName)
}

func loadLicenseCheck(paths config.Paths) license.Online { return online.Load(licenseCheckPath(paths)) }

func saveLicenseCheck(paths config.Paths, o license.Online) error {
	return online.Save(licenseCheckPath(paths), o)
}

// installedLicense reads what licence status needs of the installation.
func installedLicense(paths config.Paths) (config.Config, envfile.Env, []byte, error) {
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return config.Config{}, envfile.Env{}, nil, err
	}
	env, err := installedEnv(paths)
	if err != nil {
		return config.Config{}, envfile.Env{}, nil, err
	}
	data, err := os.ReadFile(paths.File(config.LicenseFileName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return config.Config{}, envfile.Env{}, nil, fmt.Errorf("reading the licence: %w", err)
	}
	return cfg, env, data, nil
}

// installedEnv is the rendered .env: the domain and tenant in use.
func installedEnv(paths config.Paths) (envfile.Env, error) {
	b, err := os.ReadFile(paths.File(config.EnvFileName))
	if err == nil {
		var env envfile.Env
		if env, err = envfile.Parse(b); err == nil {
			return env, nil
		}
	}
	return envfile.Env{}, fmt.Errorf("reading the installed %s: %w; run `carto-appliance config apply` to render it again", paths.File(config.EnvFileName), err)
}

// refuseLicense is install's and update's refusal of a licence (exit 4).
func refuseLicense(file string, st license.Status) error {
	return fmt.Errorf("%w: %s: %s", license.ErrInvalid, file, strings.TrimPrefix(st.Reason, license.ErrInvalid.Error()+": "))
}

// GetLicenseStatus is the installed licence's state, from what the
// licence server last said (no network).
func GetLicenseStatus(paths config.Paths) (*license.Status, error) {
	paths = paths.WithDefaults()
	cfg, env, data, err := installedLicense(paths)
	if err != nil {
		return nil, err
	}
	st := evaluateLicense(paths, cfg, env, data, time.Now())
	return &st, nil
}

// CheckLicense asks the licence server about the installed licence now
// (through the proxy), records its answer or the failure, and returns the
// licence's state. An air-gap licence is not checked online. Nothing of the
// stack changes, whatever the answer.
func CheckLicense(ctx context.Context, paths config.Paths) (*license.Status, error) {
	paths = paths.WithDefaults()
	cfg, env, data, err := installedLicense(paths)
	if err != nil {
		return nil, err
	}
	l, perr := license.Parse(data)
	if perr == nil && !l.AirGap && cfg.ChecksLicenseOnline() {
		revoked, err := askLicenseServer(ctx, paths, cfg, l)
		o := online.Record(loadLicenseCheck(paths), l.ID, revoked, err, time.Now().UTC())
		if err := saveLicenseCheck(paths, o); err != nil {
			return nil, err
		}
	}
	st := evaluateLicense(paths, cfg, env, data, time.Now())
	return &st, nil
}

// licenseClient is the HTTP client of the online check; tests swap it
// for one that trusts their server.
var licenseClient = func(paths config.Paths, cfg config.Config) (*http.Client, error) {
	var ca []byte
	if cfg.Proxy.CACert != "" {
		ca, _ = os.ReadFile(filepath.Join(paths.ConfigDir, config.CertsDirName, cfg.Proxy.CACert))
	}
	return proxy.HTTPClient(cfg.Proxy, ca, 20*time.Second)
}

// askLicenseServer asks cfg's licence server, through the proxy, whether
// l is revoked (online.Client.Ask).
func askLicenseServer(ctx context.Context, paths config.Paths, cfg config.Config, l *license.License) (bool, error) {
	if err := config.CheckLicenseServer(cfg.License.ServerURL(), "appliance.yaml license.server"); err != nil {
		return false, err
	}
	client, err := licenseClient(paths, cfg)
	if err != nil {
		return false, err
	}
	return online.Client{Server: cfg.License.ServerURL(), HTTP: client}.Ask(ctx, l)
}

// UpdateLicense installs a new licence after judging it as install does;
// the running stack is not touched. A refused licence changes nothing.
func UpdateLicense(ctx context.Context, paths config.Paths, file string) (*license.Status, error) {
	paths = paths.WithDefaults()
	cfg, env, _, err := installedLicense(paths)
	if err != nil {
		return nil, err
	}
	data, err := boundedread.ReadFile(file, boundedread.License)
	if err != nil {
		return nil, &InputError{Input: InputLicense, Err: fmt.Errorf("reading the licence: %w", err)}
	}
	st := evaluateLicense(paths, cfg, env, data, time.Now())
	if st.State == license.Invalid || st.State == license.Expired {
		return &st, refuseLicense(file, st)
	}
	if err := atomicfile.Write(paths.File(config.LicenseFileName), data, 0o600); err != nil {
		return nil, err
	}
	return &st, nil
}
