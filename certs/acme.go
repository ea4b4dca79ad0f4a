package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// LetsEncrypt is the ACME directory used when none is given.
const LetsEncrypt = certmagic.LetsEncryptProductionCA

// ACMEOptions says where and how certificates are obtained (acme mode).
type ACMEOptions struct {
	// Directory is the ACME directory URL.
	Directory string
	// Email is the account's contact: the CA writes there about expiring
	// certificates and policy changes.
	Email string
	// Roots, PEM, are trusted for the directory's TLS besides the system's
	// (a private ACME CA, or a proxy that inspects TLS).
	Roots []byte
	// StorageDir holds the account, the certificates and the challenge
	// tokens (certmagic's file storage): the agent and the command line
	// share it, so either may answer a challenge the other started.
	StorageDir string
	// ListenHost and HTTPPort are where the HTTP-01 challenge is answered
	// when no one (the agent) already serves that port.
	ListenHost string
	HTTPPort   int
	// Proxy is how the ACME client reaches the directory; nil means
	// directly.
	Proxy func(*http.Request) (*url.URL, error)
}

// MaxRootsSize bounds a file of root certificates to trust (Mozilla's
// whole bundle is about 220 KB).
const MaxRootsSize = 1 << 20

// CheckRoots checks a file of root certificates to trust for an ACME
// directory's TLS: PEM certificates only, each readable, at least one of
// them a CA (a server's own certificate is not a root).
func CheckRoots(data []byte) error {
	if len(data) > MaxRootsSize {
		return fmt.Errorf("it is larger than %d bytes: give only the CA certificates to trust", MaxRootsSize)
	}
	certs, err := parseCerts(data, "it")
	if err != nil {
		return err
	}
	for _, c := range certs {
		if c.BasicConstraintsValid && c.IsCA {
			return nil
		}
	}
	return fmt.Errorf("it holds no CA certificate (%s is not a CA): give the root certificate of the CA that signed the ACME server's certificate", describe(certs[0]))
}

// ACME obtains and renews one domain's certificate with certmagic. The
// certificate lives in certmagic's storage; Certificate exports it.
type ACME struct {
	domain string
	cfg    *certmagic.Config
	issuer *certmagic.ACMEIssuer
}

// NewACME checks opts and prepares a client; it does not contact the CA.
func NewACME(opts ACMEOptions, domain string) (*ACME, error) {
	u, err := url.Parse(opts.Directory)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("ACME directory %q is not an https:// URL", opts.Directory)
	}
	if !strings.Contains(opts.Email, "@") {
		return nil, fmt.Errorf("ACME e-mail %q is not an address: the CA writes there about the certificate", opts.Email)
	}
	if domain == "" || net.ParseIP(domain) != nil {
		return nil, fmt.Errorf("ACME needs a DNS name for the domain, not %q", domain)
	}
	var roots *x509.CertPool
	if len(opts.Roots) > 0 {
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(opts.Roots) {
			return nil, errors.New("the ACME CA's root certificates hold no PEM certificate")
		}
	}
	proxy := opts.Proxy
	if proxy == nil {
		// certmagic's default is the process's environment, which the
		// agent does not have: the appliance's own proxy settings decide.
		proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	logger := zap.NewNop()
	a := &ACME{domain: domain}
	// Each ACME gets its own cache: the appliance manages one name and
	// never serves TLS itself, so certmagic's background maintenance is
	// not started (the agent's hourly check drives renewals).
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return a.cfg, nil },
		Logger:           logger,
	})
	cache.Stop()
	a.cfg = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: opts.StorageDir},
		Logger:  logger,
	})
	a.issuer = certmagic.NewACMEIssuer(a.cfg, certmagic.ACMEIssuer{
		CA:                      opts.Directory,
		Email:                   opts.Email,
		Agreed:                  true,
		DisableTLSALPNChallenge: true,
		ListenHost:              opts.ListenHost,
		AltHTTPPort:             opts.HTTPPort,
		TrustedRoots:            roots,
		HTTPProxy:               proxy,
		CertObtainTimeout:       5 * time.Minute,
		Logger:                  logger,
	})
	a.cfg.Issuers = []certmagic.Issuer{a.issuer}
	return a, nil
}

// Obtain gets a certificate when storage has none for the domain, renews
// the stored one when it is due (or always, with force), and returns the
// stored certificate and whether it is a new one.
func (a *ACME) Obtain(ctx context.Context, force bool) (Pair, bool, error) {
	before, _ := a.Certificate(ctx)
	if err := a.cfg.RenewCertSync(ctx, a.domain, force); err != nil {
		return Pair{}, false, fmt.Errorf("obtaining a certificate for %s from %s: %w", a.domain, a.issuer.CA, err)
	}
	after, err := a.Certificate(ctx)
	if err != nil {
		return Pair{}, false, err
	}
	return after, string(after.CertPEM) != string(before.CertPEM), nil
}

// Certificate is the stored certificate (leaf and chain) and key.
func (a *ACME) Certificate(ctx context.Context) (Pair, error) {
	key := a.issuer.IssuerKey()
	var p Pair
	var err error
	if p.CertPEM, err = a.cfg.Storage.Load(ctx, certmagic.StorageKeys.SiteCert(key, a.domain)); err != nil {
		return Pair{}, fmt.Errorf("reading the ACME certificate for %s: %w", a.domain, err)
	}
	if p.KeyPEM, err = a.cfg.Storage.Load(ctx, certmagic.StorageKeys.SitePrivateKey(key, a.domain)); err != nil {
		return Pair{}, fmt.Errorf("reading the ACME certificate's key for %s: %w", a.domain, err)
	}
	return p, nil
}

// IsChallenge says whether r asks for an HTTP-01 key authorization.
func IsChallenge(r *http.Request) bool { return certmagic.LooksLikeHTTPChallenge(r) }

// AnswerChallenge answers an HTTP-01 challenge of this client's CA from
// memory or from storage (whichever process started it), and says
// whether it did.
func (a *ACME) AnswerChallenge(w http.ResponseWriter, r *http.Request) bool {
	return a.issuer.HandleHTTPChallenge(w, r)
}

// RedirectToHTTPS sends every request to the same path on
// https://domain (with port unless 443), whatever Host it names: a Host
// taken from the request would let anyone make the appliance's port 80
// send users elsewhere. The redirect is a 307: not cached unless told
// (a 301 or 308 would be kept by browsers and send users to this port and
// domain after the router changed either), and the method and body are
// kept (a 302 lets clients turn a POST into a GET, losing the body).
// HSTS, served over https, is what makes https stick.
func RedirectToHTTPS(domain string, port int) http.Handler {
	host := domain
	ip := net.ParseIP(domain)
	switch {
	case port != 443 && port != 0:
		host = net.JoinHostPort(domain, strconv.Itoa(port))
	case ip != nil && ip.To4() == nil:
		host = "[" + domain + "]"
	}
	valid := ip != nil || (domain != "" && hostnameRE.MatchString(domain))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !valid {
			http.Error(w, "the appliance's domain is not a host name: set SELFHOSTED_DOMAIN", http.StatusInternalServerError)
			return
		}
		uri := r.URL.RequestURI()
		if !strings.HasPrefix(uri, "/") {
			uri = "/" + uri
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, "https://"+host+uri, http.StatusTemporaryRedirect)
	})
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$`)

// InRenewalWindow says whether an ACME certificate is due: a third of its
// lifetime left (certmagic's default), or it does not cover domain.
func InRenewalWindow(p Pair, domain string, now time.Time) (bool, string) {
	chain, err := parseCerts(p.CertPEM, "certificate")
	if err != nil || len(chain) == 0 {
		return true, "there is no certificate yet"
	}
	leaf := chain[0]
	if leaf.VerifyHostname(domain) != nil {
		return true, fmt.Sprintf("the certificate does not cover %s", domain)
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if left := leaf.NotAfter.Sub(now); left < life/3 {
		return true, fmt.Sprintf("it expires in %s", left.Round(time.Hour))
	}
	return false, ""
}
