package proxy

// The egress check behind `carto-appliance proxy test` (SPEC §5.2): can
// this machine reach each domain CARTO needs, through the proxy when one
// is set, and if not, why.

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Target is one domain to check.
type Target struct {
	// Domain is a host name, optionally with :port (default 443). A leading
	// "." (".snowflakecomputing.com") or "*." marks a domain suffix, whose
	// hosts are per customer: it is reported as not checkable.
	Domain   string
	Optional bool   // needed only by a feature the customer may not use
	Feature  string // what needs it: "core", "snowflake", "mapbox", …
}

// Result is the outcome of one Target.
type Result struct {
	Domain   string `json:"domain"`
	Optional bool   `json:"optional"`
	Feature  string `json:"feature,omitempty"`
	// OK: an HTTPS request got an HTTP answer, whatever its status: the
	// check tests the network path, not the API behind it.
	OK bool `json:"ok"`
	// Via is "proxy" or "direct" (NO_PROXY), as the client routes the
	// request; empty when the client's transport does not say.
	Via string `json:"via,omitempty"`
	// Kind classifies a failure (one of the Kind constants); empty when OK.
	Kind string `json:"kind,omitempty"`
	// Reason says what failed and what to do, in a sentence; empty when OK.
	Reason  string        `json:"reason,omitempty"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Failure kinds, from the most specific cause found in the error.
const (
	// KindDNS: the name does not resolve (here, or at the proxy).
	KindDNS = "dns"
	// KindConnectRefused: the proxy refused the CONNECT (403, 407), or the
	// connection to the domain was refused or could not be made.
	KindConnectRefused = "connect-refused"
	// KindTLSUnknownAuthority: a certificate (the domain's, possibly
	// re-signed by a TLS-inspecting proxy, or the HTTPS proxy's own) is
	// signed by a CA this machine does not trust.
	KindTLSUnknownAuthority = "tls-unknown-authority"
	// KindTimeout: no answer in time (the client's timeout or the context).
	KindTimeout = "timeout"
	// KindProxyUnreachable: the proxy itself cannot be reached.
	KindProxyUnreachable = "proxy-unreachable"
	// KindNotCheckable: a wildcard domain; its real hosts are per customer
	// (e.g. <account>.snowflakecomputing.com) and must be given by name.
	KindNotCheckable = "not-checkable"
	// KindOther: anything else; Reason carries the error.
	KindOther = "other"
)

// DefaultParallel is Check's parallelism when given 0 or less.
const DefaultParallel = 8

// DefaultTimeout bounds each request of a check when the client has no
// Timeout of its own.
const DefaultTimeout = 30 * time.Second

// Check reaches every target over HTTPS with client (HEAD, then GET when
// the server answers 405 or 501), at most parallel at a time, and returns
// one Result per target in the targets' order. Each request is bounded by
// client.Timeout (DefaultTimeout when 0) and by ctx. Redirects are not
// followed: any HTTP answer means the path works. Wildcard targets are
// reported as KindNotCheckable without a request.
//
// When the client's transport is an *http.Transport, Check works on a copy
// of it that also reads the proxy's answer to a refused CONNECT (status,
// X-Squid-Error, page text) to tell a DNS failure at the proxy from a
// refused connection. Squid 5 and tinyproxy answer a CONNECT to a name that
// does not exist exactly as to a host that refuses the connection (500
// ERR_CANNOT_FORWARD, 500 "Unable to connect"); for those, Check asks this
// machine's resolver whether the name exists and reports dns when it
// answers "no such host" (NXDOMAIN).
func Check(ctx context.Context, client *http.Client, targets []Target, parallel int) []Result {
	return newChecker(client, net.DefaultResolver).run(ctx, targets, parallel)
}

// checker is one Check run.
type checker struct {
	client *http.Client
	// proxyFor is the transport's proxy selection; nil when the transport
	// is not an *http.Transport (Via is then unknown).
	proxyFor func(*http.Request) (*url.URL, error)
	known    bool // whether proxyFor reflects the transport
	// resolver answers whether a name a proxy could not reach exists.
	resolver *net.Resolver
}

func newChecker(client *http.Client, resolver *net.Resolver) *checker {
	if client == nil {
		client = http.DefaultClient
	}
	c := &checker{resolver: resolver}
	cl := *client
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cl.Jar = nil
	if cl.Timeout <= 0 {
		cl.Timeout = DefaultTimeout
	}
	rt := cl.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	if t, ok := rt.(*http.Transport); ok {
		t = t.Clone()
		t.DisableKeepAlives = true // one connection per check, none left behind
		prev := t.OnProxyConnectResponse
		t.OnProxyConnectResponse = func(ctx context.Context, proxyURL *url.URL, req *http.Request, resp *http.Response) error {
			if prev != nil {
				if err := prev(ctx, proxyURL, req, resp); err != nil {
					return err
				}
			}
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			return readProxyRefusal(ctx, proxyURL, req.Host, resp)
		}
		c.proxyFor, c.known = t.Proxy, true
		cl.Transport = t
	}
	c.client = &cl
	return c
}

func (c *checker) run(ctx context.Context, targets []Target, parallel int) []Result {
	if parallel <= 0 {
		parallel = DefaultParallel
	}
	results := make([]Result, len(targets))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
			}
			results[i] = c.check(ctx, t)
		})
	}
	wg.Wait()
	return results
}

func (c *checker) check(ctx context.Context, t Target) (r Result) {
	start := time.Now()
	r = Result{Domain: t.Domain, Optional: t.Optional, Feature: t.Feature}
	defer func() { r.Elapsed = time.Since(start) }()
	if isWildcard(t.Domain) {
		suffix := strings.TrimPrefix(t.Domain, "*")
		r.Kind = KindNotCheckable
		r.Reason = fmt.Sprintf("not checkable: wildcard %s: its hosts are per customer; check one of its hosts by name (<name>%s) and allow the whole suffix in the proxy", t.Domain, suffix)
		return r
	}
	u, err := targetURL(t.Domain)
	if err != nil {
		r.Kind, r.Reason = KindOther, err.Error()
		return r
	}
	r.Via = c.via(u)
	err = c.reach(ctx, u)
	if err == nil {
		r.OK = true
		return r
	}
	r.Kind, r.Reason = c.classify(ctx, u, err)
	return r
}

// reach does HEAD u, then GET u when HEAD is not allowed.
func (c *checker) reach(ctx context.Context, u *url.URL) error {
	status, err := c.do(ctx, http.MethodHead, u)
	if err == nil && (status == http.StatusMethodNotAllowed || status == http.StatusNotImplemented) {
		_, err = c.do(ctx, http.MethodGet, u)
	}
	return err
}

func (c *checker) do(ctx context.Context, method string, u *url.URL) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "carto-appliance-proxy-test")
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	// A TLS-inspecting proxy answers for the server with its own error
	// page; that is a refusal, not the server.
	if code := resp.Header.Get("X-Squid-Error"); code != "" {
		return 0, &proxyRefusal{Target: u.Host, StatusCode: resp.StatusCode, Status: resp.Status, SquidError: code, inTunnel: true}
	}
	return resp.StatusCode, nil
}

func (c *checker) via(u *url.URL) string {
	if !c.known {
		return ""
	}
	if c.proxyFor == nil {
		return "direct"
	}
	p, err := c.proxyFor(&http.Request{Method: http.MethodHead, URL: u, Host: u.Host, Header: http.Header{}})
	if err != nil || p == nil {
		return "direct"
	}
	return "proxy"
}

func isWildcard(domain string) bool {
	return strings.HasPrefix(domain, ".") || strings.HasPrefix(domain, "*.")
}

// targetURL is https://domain/ for a host or host:port (a full https://
// URL is accepted too).
func targetURL(domain string) (*url.URL, error) {
	d := strings.TrimSpace(domain)
	if strings.Contains(d, "://") {
		u, err := url.Parse(d)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("%q is not a domain: give host or host:port", domain)
		}
		d = u.Host
	}
	if ip := net.ParseIP(d); ip != nil && ip.To4() == nil {
		d = "[" + d + "]" // a bare IPv6 address
	}
	u := &url.URL{Scheme: "https", Host: d, Path: "/"}
	if u.Hostname() == "" || strings.ContainsAny(d, "/?#@ ") {
		return nil, fmt.Errorf("%q is not a domain: give host or host:port", domain)
	}
	return u, nil
}

// proxyRefusal is the proxy's answer to a CONNECT other than 200 (or, with
// inTunnel, an error page a TLS-inspecting proxy served for the server).
type proxyRefusal struct {
	Proxy      string // the proxy URL, credentials removed
	Target     string // host:port asked for
	StatusCode int
	Status     string // "403 Forbidden"
	SquidError string // X-Squid-Error, e.g. "ERR_DNS_FAIL 0"
	page       string // the start of the answer's body, lower case
	inTunnel   bool
}

func (e *proxyRefusal) Error() string {
	s := fmt.Sprintf("proxy answered CONNECT %s with %s", e.Target, e.Status)
	if e.inTunnel {
		s = fmt.Sprintf("proxy answered for %s with %s", e.Target, e.Status)
	}
	if e.SquidError != "" {
		s += " (" + e.SquidError + ")"
	}
	return s
}

// readProxyRefusal reads the refusal's headers and the start of its page,
// waiting at most 2 s (or ctx) for the page: its text can name the cause.
func readProxyRefusal(ctx context.Context, proxyURL *url.URL, target string, resp *http.Response) error {
	e := &proxyRefusal{Target: target, StatusCode: resp.StatusCode, Status: resp.Status, SquidError: resp.Header.Get("X-Squid-Error")}
	if proxyURL != nil {
		e.Proxy = proxyURL.Redacted()
	}
	if resp.Body != nil {
		page := make(chan string, 1)
		go func() { // ends when the transport closes the connection, at the latest
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
			page <- strings.ToLower(string(b))
		}()
		wait := time.NewTimer(2 * time.Second)
		defer wait.Stop()
		select {
		case e.page = <-page:
		case <-wait.C:
		case <-ctx.Done():
		}
	}
	return e
}

// Text that proxies put in answers about names that do not resolve:
// squid's ERR_DNS_FAIL page, resolver messages quoted by others.
var dnsWords = []string{"err_dns_fail", "unable to determine ip address", "could not resolve", "cannot resolve", "name or service not known", "no such host", "nxdomain", "host not found", "unknown host", "dns lookup", "dns error", "dns resolution"}

// classify names the failure in err, from the most specific cause.
func (c *checker) classify(ctx context.Context, u *url.URL, err error) (kind, reason string) {
	host := u.Hostname()
	var refusal *proxyRefusal
	if errors.As(err, &refusal) {
		return c.classifyRefusal(ctx, host, refusal)
	}
	var opErr *net.OpError
	viaProxy := errors.As(err, &opErr) && opErr.Op == "proxyconnect"
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) {
		issuer := ""
		if unknownCA.Cert != nil {
			issuer = fmt.Sprintf(" (issued by %q)", unknownCA.Cert.Issuer.String())
		}
		if viaProxy {
			return KindTLSUnknownAuthority, fmt.Sprintf("the HTTPS proxy's own certificate is signed by an unknown authority%s: give the proxy's CA (proxy.ca_cert)", issuer)
		}
		return KindTLSUnknownAuthority, fmt.Sprintf("the certificate %s presented is signed by an unknown authority%s: if the proxy inspects TLS, give its CA (proxy.ca_cert)", host, issuer)
	}
	if viaProxy {
		return KindProxyUnreachable, fmt.Sprintf("cannot reach the proxy: %v", opErr.Err)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsTimeout {
			return KindDNS, fmt.Sprintf("looking up %s timed out (%v): check this machine's DNS", dnsErr.Name, dnsErr.Err)
		}
		return KindDNS, fmt.Sprintf("%s does not resolve: %v", dnsErr.Name, dnsErr.Err)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return KindConnectRefused, fmt.Sprintf("%s refused the connection", u.Host)
	}
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()) {
		return KindTimeout, fmt.Sprintf("no answer from %s in time: a firewall may drop the traffic", u.Host)
	}
	if errors.Is(err, context.Canceled) {
		return KindOther, "the check was cancelled"
	}
	// Without our hook (a transport that is not an *http.Transport), Go
	// reports a refused CONNECT by the status text alone.
	switch unwrapAll(err).Error() {
	case "Forbidden", "Proxy Authentication Required":
		return KindConnectRefused, fmt.Sprintf("the proxy refused to connect to %s: %v", u.Host, unwrapAll(err))
	case "Gateway Timeout":
		return KindTimeout, fmt.Sprintf("the proxy got no answer from %s in time", u.Host)
	}
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	if errors.As(err, &hostErr) || errors.As(err, &invalid) {
		return KindOther, fmt.Sprintf("TLS with %s: %v", host, unwrapAll(err))
	}
	return KindOther, unwrapAll(err).Error()
}

func (c *checker) classifyRefusal(ctx context.Context, host string, e *proxyRefusal) (kind, reason string) {
	said := e.Status
	if e.SquidError != "" {
		said += ", " + e.SquidError
	}
	switch {
	case e.StatusCode == http.StatusProxyAuthRequired:
		return KindConnectRefused, fmt.Sprintf("the proxy demands authentication (%s), which CARTO Self-Hosted does not support: let this machine through the proxy by its address", said)
	case e.inTunnel:
		return KindConnectRefused, fmt.Sprintf("a TLS-inspecting proxy answered for %s (%s): allow it in the proxy", e.Target, said)
	case e.StatusCode < 500:
		return KindConnectRefused, fmt.Sprintf("the proxy refused %s (%s): allow it in the proxy", e.Target, said)
	case e.StatusCode == http.StatusGatewayTimeout:
		return KindTimeout, fmt.Sprintf("the proxy got no answer from %s in time (%s)", e.Target, said)
	}
	text := strings.ToLower(e.SquidError) + " " + e.page
	switch {
	case strings.HasPrefix(e.SquidError, "ERR_DNS_FAIL") || containsAny(text, dnsWords):
		return KindDNS, fmt.Sprintf("the proxy cannot resolve %s (%s)", host, said)
	case strings.HasPrefix(e.SquidError, "ERR_CONNECT_FAIL 110") || strings.Contains(text, "timed out"):
		return KindTimeout, fmt.Sprintf("the proxy could not connect to %s in time (%s)", e.Target, said)
	}
	// Ambiguous (see Check): does the name exist at all?
	if net.ParseIP(host) == nil && c.resolver != nil {
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := c.resolver.LookupHost(lctx, host)
		cancel()
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return KindDNS, fmt.Sprintf("%s does not exist in DNS (the proxy answered %s; this machine's resolver says no such host)", host, said)
		}
	}
	return KindConnectRefused, fmt.Sprintf("the proxy could not connect to %s (%s)", e.Target, said)
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// unwrapAll returns the innermost error of a single-error chain (the
// *url.Error and *net.OpError layers only repeat the method and address).
func unwrapAll(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
