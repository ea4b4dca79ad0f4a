package installer

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cartodb/carto-appliance/certs"
	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/boundedread"
	"github.com/cartodb/carto-appliance/stack"
)

// TLSInput is a certificate given on the command line; empty keeps what is
// installed.
type TLSInput struct {
	CertFile  string `json:"cert_file,omitempty"`  // server certificate, PEM (the chain may follow)
	KeyFile   string `json:"key_file,omitempty"`   // its private key, PEM, without a passphrase
	ChainFile string `json:"chain_file,omitempty"` // intermediate certificates, PEM (optional)
	// Renew issues the self-signed certificate again even when it is not
	// due.
	Renew bool `json:"renew,omitempty"`
}

func (in TLSInput) empty() bool { return in.CertFile == "" && in.KeyFile == "" && in.ChainFile == "" }

// ImportCertificate installs a customer's certificate for the router
// (custom mode) after checking it, and reloads the router: nothing else is
// touched. A refused certificate changes nothing.
func ImportCertificate(ctx context.Context, opts Options, in TLSInput) (*Result, error) {
	if in.CertFile == "" || in.KeyFile == "" {
		return nil, inputErrorf(InputTLSCert, "certs import needs the certificate and its key")
	}
	return reconfigureTLS(ctx, opts, "certs import", func(c *config.Config) ([]byte, error) {
		c.TLS.Mode = config.TLSCustom
		return nil, nil
	}, in)
}

// OffloadTLS makes the router serve plain HTTP for a load balancer that
// ends TLS in front of it; the router is recreated without its HTTPS port.
func OffloadTLS(ctx context.Context, opts Options) (*Result, error) {
	return reconfigureTLS(ctx, opts, "certs offload", func(c *config.Config) ([]byte, error) {
		c.TLS.Mode = config.TLSOffload
		return nil, nil
	}, TLSInput{})
}

// UseACME switches the router to a certificate from an ACME CA (acme
// mode): it is obtained first, and a refusal changes nothing.
func UseACME(ctx context.Context, opts Options, in ACMEInput) (*Result, error) {
	paths := opts.Paths.WithDefaults()
	plan := func() (*desired, error) {
		var roots []byte
		d, err := planInstalled(paths, func(c *config.Config) (ca []byte, err error) {
			roots, err = in.apply(c)
			return nil, err
		}, TLSInput{})
		if err != nil {
			return nil, err
		}
		d.addCert(config.ACMECAFileName, roots)
		return d, nil
	}
	d, err := stamped(paths, plan)
	if err != nil {
		return nil, err
	}
	return run(ctx, opts, paths, d, plan, "certs acme")
}

// UseSelfSigned switches the router to a certificate from the appliance's
// CA (self-signed mode) and reloads it.
func UseSelfSigned(ctx context.Context, opts Options) (*Result, error) {
	return reconfigureTLS(ctx, opts, "certs self-signed", func(c *config.Config) ([]byte, error) {
		c.TLS.Mode = config.TLSSelfSigned
		return nil, nil
	}, TLSInput{})
}

// RenewCertificate issues the self-signed certificate again now, or
// renews the ACME one with the CA, and reloads the router. A custom
// certificate is renewed by its issuer.
func RenewCertificate(ctx context.Context, opts Options) (*Result, error) {
	return reconfigureTLS(ctx, opts, "certs renew", func(c *config.Config) ([]byte, error) {
		if c.TLS.Mode == config.TLSCustom {
			return nil, fmt.Errorf("the router's certificate is a custom one: its issuer renews it; install the new one with `carto-appliance certs import`")
		}
		return nil, nil
	}, TLSInput{Renew: true})
}

// GetCertificateStatus is the certificate part of status, without asking
// the engine.
func GetCertificateStatus(paths config.Paths) (*CertificateStatus, error) {
	paths = paths.WithDefaults()
	cfg, err := loadInstalledConfig(paths)
	if err != nil {
		return nil, err
	}
	return certificateStatus(paths, cfg, time.Now()), nil
}

// planTLS decides the router's certificate: the imported one (checked for
// the domain), or one from the appliance's CA, issued again when it is
// missing, for another domain or near expiry. Nothing is written: the
// files go into d.certs (and d.ca) for commit.
func planTLS(paths config.Paths, d *desired, in TLSInput, now time.Time) error {
	domain := d.env.Get("SELFHOSTED_DOMAIN")
	if in.Renew && d.cfg.TLS.Mode == config.TLSCustom {
		return fmt.Errorf("the router's certificate is a custom one: its issuer renews it")
	}
	if !in.empty() {
		if in.CertFile == "" || in.KeyFile == "" {
			return inputErrorf(InputTLSCert, "the certificate and its key go together: give both")
		}
		var files [3][]byte
		for i, f := range []struct {
			input      Input
			what, path string
		}{{InputTLSCert, "the certificate", in.CertFile}, {InputTLSKey, "the key", in.KeyFile}, {InputTLSChain, "the chain", in.ChainFile}} {
			if f.path == "" {
				continue
			}
			b, err := boundedread.ReadFile(f.path, boundedread.PEM)
			if err != nil {
				return &InputError{Input: f.input, Err: fmt.Errorf("%s: %w", f.what, err)}
			}
			files[i] = b
		}
		pair, err := certs.CheckCustom(files[0], files[1], files[2], domain, now)
		if err != nil {
			return &InputError{Input: InputTLSCert, Err: fmt.Errorf("the certificate %s: %w", in.CertFile, err)}
		}
		d.cfg.TLS.Mode = config.TLSCustom
		d.addCert(config.ServerCertFile, pair.CertPEM)
		d.addCert(config.ServerKeyFile, pair.KeyPEM)
		return nil
	}
	certsDir := filepath.Join(paths.ConfigDir, config.CertsDirName)
	switch d.cfg.TLS.Mode {
	case config.TLSCustom:
		// Imported before; status and the agent warn as it nears expiry.
		if _, err := os.Stat(filepath.Join(certsDir, config.ServerCertFile)); err != nil {
			return fmt.Errorf("appliance.yaml tls.mode is custom but %s is missing: import the certificate again", filepath.Join(certsDir, config.ServerCertFile))
		}
		return nil
	case config.TLSOffload:
		if in.Renew {
			return fmt.Errorf("TLS is offloaded to the load balancer: there is no certificate here to renew")
		}
		return nil
	case config.TLSACME:
		return planACME(paths, d, in, now)
	case "", config.TLSSelfSigned:
	default:
		return fmt.Errorf("appliance.yaml tls.mode %q: use %s, %s, %s or %s", d.cfg.TLS.Mode, config.TLSSelfSigned, config.TLSCustom, config.TLSACME, config.TLSOffload)
	}
	ca, err := planCA(paths, domain, now)
	if err != nil {
		return err
	}
	if ca.changed() {
		d.ca = ca
		if n := ca.note(paths); n != "" {
			d.warnings = append(d.warnings, n)
		}
	}
	have := certs.Pair{}
	have.CertPEM, _ = os.ReadFile(filepath.Join(certsDir, config.ServerCertFile))
	have.KeyPEM, _ = os.ReadFile(filepath.Join(certsDir, config.ServerKeyFile))
	renew, why := certs.NeedsRenewal(have, ca.cur, domain, now)
	if in.Renew && !renew {
		renew, why = true, "a renewal was asked for"
	}
	if renew {
		pair, err := ca.cur.Issue(domain, now)
		if err != nil {
			return err
		}
		d.addCert(config.ServerCertFile, pair.CertPEM)
		d.addCert(config.ServerKeyFile, pair.KeyPEM)
		if len(have.CertPEM) > 0 {
			d.warnings = append(d.warnings, fmt.Sprintf("issued a new self-signed certificate for %s (%s)", domain, why))
		}
	}
	if cur, _ := os.ReadFile(filepath.Join(certsDir, config.CACertFile)); !bytes.Equal(cur, ca.bundle()) {
		d.addCert(config.CACertFile, ca.bundle())
	}
	return nil
}

// routerService is the stack's TLS entry point.
const routerService = "router-http"

// reloadRouter makes a router that was not recreated load a new
// certificate: nginx reloads on HUP without dropping a connection, and
// no other container is touched.
func reloadRouter(ctx context.Context, eng stackEngine, project string, newCert bool, applied *stack.ApplyResult) error {
	if !newCert {
		return nil
	}
	if slices.Contains(applied.Created, routerService) || slices.Contains(applied.Recreated, routerService) || slices.Contains(applied.Started, routerService) {
		return nil // it read the new files at start
	}
	if _, err := eng.Signal(ctx, project, routerService, "HUP"); err != nil {
		return fmt.Errorf("reloading the router for the new certificate: %w", err)
	}
	return nil
}

// CertificateCheck is what the agent's periodic look at the router's
// certificate found.
type CertificateCheck struct {
	// Renew is set when the self-signed certificate must be issued again,
	// or the ACME one renewed (an Apply does it and reloads the router);
	// Why says why.
	Renew bool
	Why   string
	// Threshold and Warning are a custom certificate's expiry warning
	// (certs.ExpiryWarning): the agent logs each threshold once.
	Threshold int
	Warning   string
}

// CheckCertificate looks at the installed router certificate.
func CheckCertificate(ctx context.Context, paths config.Paths, now time.Time) (CertificateCheck, error) {
	paths = paths.WithDefaults()
	cfg, project, err := loadInstalled(ctx, paths)
	if err != nil {
		return CertificateCheck{}, err
	}
	certsDir := filepath.Join(paths.ConfigDir, config.CertsDirName)
	var have certs.Pair
	have.CertPEM, _ = os.ReadFile(filepath.Join(certsDir, config.ServerCertFile))
	have.KeyPEM, _ = os.ReadFile(filepath.Join(certsDir, config.ServerKeyFile))
	if cfg.TLS.Offload() {
		return CertificateCheck{}, nil
	}
	if cfg.TLS.UsesACME() {
		renew, why := certs.InRenewalWindow(have, project.Environment["SELFHOSTED_DOMAIN"], now)
		return CertificateCheck{Renew: renew, Why: why}, nil
	}
	if cfg.TLS.Mode == config.TLSCustom {
		info, err := certs.Describe(have.CertPEM, now)
		if err != nil {
			return CertificateCheck{Warning: err.Error()}, nil
		}
		var c CertificateCheck
		c.Threshold, c.Warning = certs.ExpiryWarning(info.NotAfter, now)
		if c.Warning != "" && c.Threshold == 0 {
			c.Threshold = -1 // expired: a threshold of its own
		}
		return c, nil
	}
	domain := project.Environment["SELFHOSTED_DOMAIN"]
	ca, err := planCA(paths, domain, now)
	switch {
	case err != nil:
		return CertificateCheck{}, err
	case ca.changed():
		return CertificateCheck{Renew: true, Why: ca.why}, nil
	}
	if published, _ := os.ReadFile(filepath.Join(certsDir, config.CACertFile)); !bytes.Equal(published, ca.bundle()) {
		return CertificateCheck{Renew: true, Why: "the published CA file is not the appliance's CA"}, nil
	}
	renew, why := certs.NeedsRenewal(have, ca.cur, domain, now)
	return CertificateCheck{Renew: renew, Why: why}, nil
}
