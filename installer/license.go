package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/proxy"
)

// LicenseFileName is the licence in the config dir, as CARTO signed it.
const LicenseFileName = "license.json"

// licenseCheckFile keeps the licence server's last word in the state dir.
const licenseCheckFile = "license-check.json"

// DefaultLicenseServer is where licences are checked online.
const DefaultLicenseServer = "https://licenses.carto.com/v1/check"

// LicenseConfig is appliance.yaml's license section.
type LicenseConfig struct {
	// Server is the licence server's check URL (https, no credentials);
	// empty means DefaultLicenseServer.
	Server string `yaml:"server,omitempty"`
	// GraceDays is how long the licence stays valid while the server gives
	// no trusted answer: 1 to license.MaxGraceDays; 0 means 14.
	GraceDays int `yaml:"grace_days,omitempty"`
}

func (c LicenseConfig) server() string {
	if c.Server == "" {
		return DefaultLicenseServer
	}
	return c.Server
}

func (c LicenseConfig) grace() time.Duration { return time.Duration(c.GraceDays) * 24 * time.Hour }

func validateLicense(c LicenseConfig) error {
	if c.Server != "" {
		if err := checkLicenseServer(c.Server, "appliance.yaml license.server"); err != nil {
			return err
		}
	}
	if c.GraceDays < 0 || c.GraceDays > license.MaxGraceDays {
		return fmt.Errorf("appliance.yaml license.grace_days %d: give a number of days from 1 to %d, or 0 for the default 14", c.GraceDays, license.MaxGraceDays)
	}
	return nil
}

// checkLicenseServer refuses a licence server URL that is not https or
// carries credentials; field names where it came from. The URL itself is
// never repeated whole: it may hold a password.
func checkLicenseServer(raw, field string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%s: not a URL: give the licence server's https:// URL, e.g. %s", field, DefaultLicenseServer)
	}
	if u.User != nil {
		return fmt.Errorf("%s %s: remove the user name and password from the URL: the licence server takes none, and they would show in status and logs", field, redactURL(u))
	}
	if u.Scheme != "https" {
		return fmt.Errorf("%s %s: the licence server must be reached over https: use https://%s%s", field, redactURL(u), u.Host, u.EscapedPath())
	}
	return nil
}

// redactURL is u without what may be a secret (user info, query,
// fragment): what messages say of a URL.
func redactURL(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
}

// serverName is the configured server as messages show it.
func (c LicenseConfig) serverName() string {
	u, err := url.Parse(c.server())
	if err != nil {
		return "the licence server"
	}
	return redactURL(u)
}

// planLicense reads and judges the licence an install uses: file, or the
// customer package's license.json next to customerEnv, or the installed
// one. A licence that is invalid, expired, revoked, past its grace, or not
// for this tenant and layout is refused (license.ErrInvalid: exit 4)
// before anything changes.
func planLicense(paths Paths, d *desired, file, customerEnv string) error {
	if file == "" && customerEnv != "" {
		if p := filepath.Join(filepath.Dir(customerEnv), LicenseFileName); fileExists(p) {
			file = p
		}
	}
	if file == "" {
		file = paths.file(LicenseFileName)
	}
	data, err := boundedread.ReadFile(file, boundedread.License)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: no licence at %s: pass --license FILE, the license.json of your CARTO customer package", license.ErrInvalid, file)
	}
	if err != nil {
		return fmt.Errorf("reading the licence (--license): %w", err)
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
func evaluateLicense(paths Paths, cfg Config, env envfile.Env, data []byte, now time.Time) license.Status {
	if len(data) == 0 {
		return license.Status{State: license.Invalid, Reason: "no licence is installed: install the license.json of your CARTO customer package with `carto-appliance license update FILE`"}
	}
	l, err := license.Parse(data)
	usage := license.Usage{TenantID: env.Get("SELFHOSTED_TENANT_ID"), Layout: cfg.Defaults().Layout, Nodes: 1}
	return license.Evaluate(l, err, usage, loadLicenseCheck(paths), cfg.License.grace(), now)
}

func loadLicenseCheck(paths Paths) license.Online {
	var o license.Online
	b, err := os.ReadFile(filepath.Join(paths.StateDir, licenseCheckFile))
	if err == nil {
		json.Unmarshal(b, &o)
	}
	// Older versions recorded a failure with the server's URL whole.
	o.Error = urlUserinfo.ReplaceAllString(o.Error, "$1")
	return o
}

var urlUserinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s@]*@`)

func saveLicenseCheck(paths Paths, o license.Online) error {
	if err := os.MkdirAll(paths.StateDir, 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(o, "", "  ")
	return atomicfile.Write(filepath.Join(paths.StateDir, licenseCheckFile), append(b, '\n'), 0o600)
}

// installedLicense reads what licence status needs of the installation.
func installedLicense(paths Paths) (Config, envfile.Env, []byte, error) {
	cfg, found, err := LoadConfig(paths.file(ConfigFileName))
	if err != nil {
		return Config{}, envfile.Env{}, nil, err
	}
	if !found {
		return Config{}, envfile.Env{}, nil, fmt.Errorf("%w: no %s; run `carto-appliance install` first", ErrNotInstalled, paths.file(ConfigFileName))
	}
	env, err := installedEnv(paths)
	if err != nil {
		return Config{}, envfile.Env{}, nil, err
	}
	data, err := os.ReadFile(paths.file(LicenseFileName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Config{}, envfile.Env{}, nil, fmt.Errorf("reading the licence: %w", err)
	}
	return cfg, env, data, nil
}

// installedEnv is the rendered .env: the domain and tenant in use.
func installedEnv(paths Paths) (envfile.Env, error) {
	b, err := os.ReadFile(paths.file(EnvFileName))
	if err == nil {
		var env envfile.Env
		if env, err = envfile.Parse(b); err == nil {
			return env, nil
		}
	}
	return envfile.Env{}, fmt.Errorf("reading the installed %s: %w; run `carto-appliance config apply` to render it again", paths.file(EnvFileName), err)
}

// refuseLicense is install's and update's refusal of a licence (exit 4).
func refuseLicense(file string, st license.Status) error {
	return fmt.Errorf("%w: %s: %s", license.ErrInvalid, file, strings.TrimPrefix(st.Reason, license.ErrInvalid.Error()+": "))
}

// GetLicenseStatus is the installed licence's state, from what the
// licence server last said (no network).
func GetLicenseStatus(paths Paths) (*license.Status, error) {
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
func CheckLicense(ctx context.Context, paths Paths) (*license.Status, error) {
	paths = paths.WithDefaults()
	cfg, env, data, err := installedLicense(paths)
	if err != nil {
		return nil, err
	}
	l, perr := license.Parse(data)
	if perr == nil && !l.AirGap {
		o := loadLicenseCheck(paths)
		if o.ID != l.ID {
			o = license.Online{ID: l.ID}
		}
		now := time.Now().UTC()
		revoked, err := askLicenseServer(ctx, paths, cfg, l)
		if err != nil {
			if o.FailingSince.IsZero() {
				o.FailingSince = now
			}
			o.Error = err.Error()
		} else {
			o.Checked, o.Revoked, o.FailingSince, o.Error = now, revoked, time.Time{}, ""
		}
		if err := saveLicenseCheck(paths, o); err != nil {
			return nil, err
		}
	}
	st := evaluateLicense(paths, cfg, env, data, time.Now())
	return &st, nil
}

// licenseClient is the HTTP client of the online check; tests swap it
// for one that trusts their server.
var licenseClient = func(paths Paths, cfg Config) (*http.Client, error) {
	var ca []byte
	if cfg.Proxy.CACert != "" {
		ca, _ = os.ReadFile(filepath.Join(paths.ConfigDir, CertsDirName, cfg.Proxy.CACert))
	}
	return proxy.HTTPClient(cfg.Proxy, ca, 20*time.Second)
}

// askLicenseServer posts the licence's id and tenant with a fresh nonce to
// the server and says whether it is revoked. An error is a server that
// gave no trusted answer: unreachable, refused by the proxy, not a licence
// server, or an answer that is unsigned, badly signed, replayed or stale
// (license.ErrUntrustedAnswer).
func askLicenseServer(ctx context.Context, paths Paths, cfg Config, l *license.License) (bool, error) {
	if err := checkLicenseServer(cfg.License.server(), "appliance.yaml license.server"); err != nil {
		return false, err
	}
	base, err := licenseClient(paths, cfg)
	if err != nil {
		return false, err
	}
	client := *base
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.URL.Scheme != "https" || len(via) >= 5 {
			return fmt.Errorf("redirected to %s: the licence server must stay on https", redactURL(r.URL))
		}
		return nil
	}
	lreq, err := license.NewRequest(l)
	if err != nil {
		return false, err
	}
	body, _ := json.Marshal(lreq)
	server := cfg.License.serverName()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.License.server(), bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("asking %s: %w", server, unwrapURLError(err))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("asking %s: %w", server, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%s answered %s", server, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return false, fmt.Errorf("reading %s's answer: %w", server, err)
	}
	a, err := license.VerifyAnswer(data, lreq, time.Now())
	if err != nil {
		return false, fmt.Errorf("%s: %w", server, err)
	}
	return a.Status == license.AnswerRevoked, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// UpdateLicense installs a new licence after judging it as install does;
// the running stack is not touched. A refused licence changes nothing.
func UpdateLicense(ctx context.Context, paths Paths, file string) (*license.Status, error) {
	paths = paths.WithDefaults()
	cfg, env, _, err := installedLicense(paths)
	if err != nil {
		return nil, err
	}
	data, err := boundedread.ReadFile(file, boundedread.License)
	if err != nil {
		return nil, fmt.Errorf("reading the licence (license update FILE): %w", err)
	}
	st := evaluateLicense(paths, cfg, env, data, time.Now())
	if st.State == license.Invalid || st.State == license.Expired {
		return &st, refuseLicense(file, st)
	}
	if err := atomicfile.Write(paths.file(LicenseFileName), data, 0o600); err != nil {
		return nil, err
	}
	return &st, nil
}
