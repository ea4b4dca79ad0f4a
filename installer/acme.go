package installer

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cartodb/carto-appliance/certs"
	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/envfile"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/proxy"
	"github.com/cartodb/carto-appliance/stack"
)

// FrontHeader marks the answers of the agent's HTTP front (acme mode), so
// that preflight knows the HTTP port is held by the appliance itself.
const FrontHeader = "X-Carto-Appliance"

// ACMEInput selects acme mode on the command line.
type ACMEInput struct {
	Enabled    bool   `json:"enabled,omitempty"`      // acme mode asked for; any other field selects it too
	Directory  string `json:"directory,omitempty"`    // ACME directory URL; empty keeps the installed one (or Let's Encrypt)
	Email      string `json:"email,omitempty"`        // account contact; empty keeps the installed one
	CACertFile string `json:"ca_cert_file,omitempty"` // PEM roots to trust for the directory
}

func (in ACMEInput) given() bool {
	return in.Enabled || in.Directory != "" || in.Email != "" || in.CACertFile != ""
}

// apply sets acme mode on cfg and returns the roots file's contents.
func (in ACMEInput) apply(cfg *config.Config) ([]byte, error) {
	cfg.TLS.Mode = config.TLSACME
	if cfg.TLS.ACME == nil {
		cfg.TLS.ACME = &config.ACMEConfig{}
	}
	a := cfg.TLS.ACME
	if in.Directory != "" {
		a.Directory = in.Directory
	}
	if in.Email != "" {
		a.Email = in.Email
	}
	if in.CACertFile == "" {
		return nil, nil
	}
	ca, err := readACMERoots(in.CACertFile, "the ACME CA's roots")
	if err != nil {
		return nil, &InputError{Input: InputACMECACert, Err: err}
	}
	a.CACert = config.ACMECAFileName
	return ca, nil
}

// readACMERoots reads a file of root certificates for the ACME directory:
// a regular file of at most certs.MaxRootsSize (boundedread), checked by
// certs.CheckRoots. field names where the
// path came from, for errors.
func readACMERoots(path, field string) ([]byte, error) {
	b, err := boundedread.ReadFile(path, certs.MaxRootsSize)
	if err != nil { // its errors name the path
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if err := certs.CheckRoots(b); err != nil {
		return nil, fmt.Errorf("%s %s: %w", field, path, err)
	}
	return b, nil
}

// acmePlan is a certificate to obtain before the router gets it.
type acmePlan struct {
	force bool   // renew even when it is not due
	why   string // why one is needed
}

// planACME decides whether the router needs a certificate from the CA:
// none yet, one not for the domain, one due for renewal, or one that is
// not the CA's (acme mode just chosen: the stored one is used if still
// good, without asking the CA).
func planACME(paths config.Paths, d *desired, in TLSInput, now time.Time) error {
	if in.Renew {
		d.acme = &acmePlan{force: true, why: "a renewal was asked for"}
		return nil
	}
	domain := d.env.Get("SELFHOSTED_DOMAIN")
	certsDir := filepath.Join(paths.ConfigDir, config.CertsDirName)
	var have certs.Pair
	have.CertPEM, _ = os.ReadFile(filepath.Join(certsDir, config.ServerCertFile))
	have.KeyPEM, _ = os.ReadFile(filepath.Join(certsDir, config.ServerKeyFile))
	if due, why := certs.InRenewalWindow(have, domain, now); due {
		d.acme = &acmePlan{why: why}
		return nil
	}
	a := d.cfg.TLS.ACME
	stored, err := certs.NewACME(certs.ACMEOptions{Directory: a.DirectoryURL(), Email: a.Email, StorageDir: filepath.Join(paths.StateDir, config.ACMEDirName)}, domain)
	if err != nil {
		return err
	}
	if p, err := stored.Certificate(context.Background()); err != nil || !bytes.Equal(p.CertPEM, have.CertPEM) {
		d.acme = &acmePlan{why: "the router's certificate is not from the ACME CA"}
	}
	return nil
}

// acmeClient is the ACME client for cfg. roots and proxyCA are the
// files' contents when they are about to be installed (nil reads the
// installed ones).
func acmeClient(paths config.Paths, cfg config.Config, domain string, roots, proxyCA []byte) (*certs.ACME, error) {
	certsDir := filepath.Join(paths.ConfigDir, config.CertsDirName)
	a := cfg.TLS.ACME
	if a == nil {
		a = &config.ACMEConfig{}
	}
	if roots == nil && a.CACert != "" {
		b, err := readACMERoots(filepath.Join(certsDir, config.ACMECAFileName), "appliance.yaml tls.acme.ca_cert")
		if err != nil {
			return nil, &InputError{Input: InputACMECACert, Err: fmt.Errorf("%w; give the CA file again", err)}
		}
		roots = b
	}
	if proxyCA == nil && cfg.Proxy.CACert != "" {
		proxyCA, _ = os.ReadFile(filepath.Join(certsDir, cfg.Proxy.CACert))
	}
	r := cfg.Defaults().Router
	host := r.BindAddress
	if host == "0.0.0.0" {
		host = ""
	}
	return certs.NewACME(certs.ACMEOptions{
		Directory: a.DirectoryURL(), Email: a.Email,
		// A proxy that inspects TLS re-signs the directory's certificate.
		Roots:      joinPEM(roots, proxyCA),
		StorageDir: filepath.Join(paths.StateDir, config.ACMEDirName),
		ListenHost: host, HTTPPort: r.HTTPPort,
		Proxy: proxy.Func(cfg.Proxy),
	}, domain)
}

// joinPEM concatenates PEM files, each on lines of its own (a file
// without a final newline would glue its END line to the next BEGIN).
func joinPEM(files ...[]byte) []byte {
	var out []byte
	for _, f := range files {
		if f = bytes.TrimSpace(f); len(f) > 0 {
			out = append(append(out, f...), '\n')
		}
	}
	return out
}

// obtainACME gets the planned certificate, for the run to commit; nil
// (and no error) when it is left to the locked part. The CA validates
// on the HTTP port: the agent's front answers the challenge there, or
// this process does while nothing listens. When the router publishes the
// port (switching to acme from another mode) it is stopped for the few
// seconds this takes and started again if it fails; that only with
// mayStop, under the converge lock (the agent would revive it otherwise):
// without, such a certificate is left for the locked part. Obtaining
// outside the lock keeps a slow CA from stalling the agent's resyncs.
func obtainACME(ctx context.Context, eng stackEngine, paths config.Paths, d *desired, held []string, mayStop bool) (*obtained, error) {
	if d.acme == nil {
		return &obtained{}, nil
	}
	domain := d.env.Get("SELFHOSTED_DOMAIN")
	client, err := acmeClient(paths, d.cfg, domain, d.certs[config.ACMECAFileName], d.certs[proxy.CAFileName])
	if err != nil {
		return nil, err
	}
	if !mayStop {
		_, owner, err := eng.PortOwner(ctx, d.cfg.Defaults().Router.HTTPPort)
		if err != nil || owner == d.cfg.Defaults().Project {
			return nil, err // the run's certificate step obtains it
		}
	}
	if err := rememberDirectory(paths, d.cfg.TLS.ACME.DirectoryURL()); err != nil {
		return nil, fmt.Errorf("recording the ACME directory: %w", err)
	}
	resume, err := freeHTTPPort(ctx, eng, paths, d.cfg, held)
	if err != nil {
		return nil, err
	}
	octx := ctx
	if resume != nil {
		// The router is down meanwhile: a CA that does not answer must
		// not keep it down for certmagic's five minutes.
		var cancel context.CancelFunc
		octx, cancel = context.WithTimeout(ctx, routerDownLimit)
		defer cancel()
	}
	pair, _, err := client.Obtain(octx, d.acme.force)
	if err != nil {
		port := d.cfg.Defaults().Router.HTTPPort
		hint := fmt.Sprintf("check that %s resolves to this machine and that the CA reaches it on port 80", domain)
		if port != 80 {
			hint += fmt.Sprintf(" (forwarded to router.http_port %d)", port)
		}
		if resume != nil {
			if rerr := resume(); rerr != nil {
				return nil, fmt.Errorf("%w; %s; starting the router again failed too (%v): run `carto-appliance config apply`", err, hint, rerr)
			}
		}
		return nil, fmt.Errorf("%w; %s; nothing was changed", err, hint)
	}
	got := &obtained{}
	current, _ := os.ReadFile(filepath.Join(paths.ConfigDir, config.CertsDirName, config.ServerCertFile))
	if !bytes.Equal(current, pair.CertPEM) {
		got.certs = map[string][]byte{config.ServerCertFile: pair.CertPEM, config.ServerKeyFile: pair.KeyPEM}
		if len(current) > 0 {
			got.note = fmt.Sprintf("obtained a new certificate for %s from %s (%s)", domain, d.cfg.TLS.ACME.DirectoryURL(), d.acme.why)
		}
	}
	return got, nil
}

// obtained is what an ACME order of a run brought: the certificate and key
// to commit (none when the CA answered with the one installed) and what to
// tell the operator. The plan itself is left as planned.
type obtained struct {
	certs map[string][]byte
	note  string
}

// acmeDeferrable says whether the agent's converge may leave a planned
// ACME renewal to later while the router has a certificate: the agent
// renews beside its loop, so that a slow or unreachable CA delays neither
// its start nor its resyncs.
func acmeDeferrable(paths config.Paths, d *desired) bool {
	if d.acme == nil || d.acme.force {
		return false
	}
	_, err := os.Stat(filepath.Join(paths.ConfigDir, config.CertsDirName, config.ServerCertFile))
	return err == nil
}

// routerDownLimit bounds an ACME order while the router is stopped for it.
const routerDownLimit = 2 * time.Minute

// freeHTTPPort stops the installed router when it publishes the HTTP port,
// and returns how to bring it back (nil when nothing was stopped).
func freeHTTPPort(ctx context.Context, eng stackEngine, paths config.Paths, cfg config.Config, held []string) (func() error, error) {
	project := cfg.Defaults().Project
	_, owner, err := eng.PortOwner(ctx, cfg.Defaults().Router.HTTPPort)
	if err != nil || owner != project {
		return nil, err
	}
	installed, err := stack.Load(ctx, paths.ConfigDir, project)
	if err != nil {
		return nil, err
	}
	if _, err := eng.Stop(ctx, installed, []string{routerService}, nil); err != nil {
		return nil, fmt.Errorf("freeing the HTTP port for the ACME challenge: %w", err)
	}
	return func() error {
		_, err := eng.Apply(context.WithoutCancel(ctx), installed, stack.ApplyOptions{Held: held, Redact: envfile.MaskText})
		return err
	}, nil
}

// Front is what the agent serves on the router's HTTP port in acme mode:
// the CA's HTTP-01 challenges, and a redirect to https for everything
// else.
type Front struct {
	Addr    string
	Handler http.Handler
}

// ACMEFront is the front for the installed settings, nil when the
// appliance is not in acme mode.
func ACMEFront(paths config.Paths) (*Front, error) {
	paths = paths.WithDefaults()
	cfg, found, err := config.Load(paths.File(config.ConfigFileName))
	if err != nil || !found || !cfg.TLS.UsesACME() {
		return nil, err
	}
	env, err := installedEnv(paths)
	if err != nil {
		return nil, err
	}
	domain := env.Get("SELFHOSTED_DOMAIN")
	r := cfg.Defaults().Router
	project := cfg.Defaults().Project
	redirect := certs.RedirectToHTTPS(domain, r.HTTPSPort)
	storage := filepath.Join(paths.StateDir, config.ACMEDirName)
	return &Front{
		Addr: net.JoinHostPort(r.BindAddress, strconv.Itoa(r.HTTPPort)),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set(FrontHeader, project)
			// Challenges are stored by CA: besides the installed one, a
			// CA that an install or certs acme is switching to right now.
			if certs.IsChallenge(req) {
				for _, dir := range knownDirectories(paths, cfg.TLS.ACME.DirectoryURL()) {
					c, err := certs.NewACME(certs.ACMEOptions{Directory: dir, Email: cfg.TLS.ACME.Email, StorageDir: storage}, domain)
					if err == nil && c.AnswerChallenge(w, req) {
						return
					}
				}
			}
			redirect.ServeHTTP(w, req)
		}),
	}, nil
}

// directoriesFile lists, in the ACME storage, every directory certificates
// were asked from, so that the agent's front answers the challenges of a
// CA an install is switching to before the settings say so.
const directoriesFile = "directories"

// rememberDirectory adds dir to the directories file.
func rememberDirectory(paths config.Paths, dir string) error {
	known := knownDirectories(paths)
	if slices.Contains(known, dir) {
		return nil
	}
	path := filepath.Join(paths.StateDir, config.ACMEDirName, directoriesFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, []byte(strings.Join(append(known, dir), "\n")+"\n"), 0o600)
}

// knownDirectories is first, then the directories file's others.
func knownDirectories(paths config.Paths, first ...string) []string {
	b, _ := os.ReadFile(filepath.Join(paths.StateDir, config.ACMEDirName, directoriesFile))
	out := first
	for _, d := range strings.Fields(string(b)) {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// frontHandover bounds the wait for the agent to free the HTTP port.
const frontHandover = 15 * time.Second

// waitFrontGone makes sure, when the router is to publish the HTTP port
// again (acme mode left), that the agent's front has let go of it: at once
// through release when the agent runs this, else by waiting for the
// agent's loop to look at the committed settings.
func waitFrontGone(ctx context.Context, prev, next config.Config, release func(context.Context) error) error {
	if !prev.TLS.UsesACME() || next.TLS.UsesACME() {
		return nil
	}
	if release != nil {
		return release(ctx)
	}
	r := prev.Defaults().Router
	project := prev.Defaults().Project
	deadline := time.Now().Add(frontHandover)
	for servedByFront(ctx, r.BindAddress, r.HTTPPort, project) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent still answers on port %d after %s: restart it (systemctl restart carto-appliance) and run this again", r.HTTPPort, frontHandover)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// servedByFront says whether the agent's front answers on addr:port for
// project.
func servedByFront(ctx context.Context, addr string, port int, project string) bool {
	if addr == "" || addr == "0.0.0.0" {
		addr = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(addr, strconv.Itoa(port))+"/", nil)
	if err != nil {
		return false
	}
	c := &http.Client{
		Transport:     &http.Transport{Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.Header.Get(FrontHeader) == project
}
