package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// FetchResult is /fetch's answer.
type FetchResult struct {
	URL    string `json:"url"`
	Proxy  string `json:"proxy,omitempty"` // the proxy the request went through; empty: direct
	Status int    `json:"status,omitempty"`
	Body   string `json:"body,omitempty"`
	Error  string `json:"error,omitempty"`
	// CAWarning says why NODE_EXTRA_CA_CERTS was not used (Node only
	// warns, too).
	CAWarning string `json:"ca_warning,omitempty"`
}

// fetchURL does an outbound GET of ?url= the way a CARTO (Node) service
// would from its environment (see outbound). ?direct=1 bypasses the proxy,
// to show what a service without it would get; ?insecure=1 skips
// certificate verification for this request.
func (s *server) fetchURL(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	res := FetchResult{URL: q.Get("url")}
	if res.URL == "" {
		http.Error(w, "missing ?url=", http.StatusBadRequest)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, res.URL, nil)
	if err != nil {
		res.Error = err.Error()
		writeJSON(w, http.StatusBadRequest, res)
		return
	}
	ob := s.outbound(q.Get("direct") == "1", q.Get("insecure") == "1")
	res.CAWarning = ob.caWarning
	if p, err := ob.proxy(req); err == nil && p != nil {
		res.Proxy = p.Redacted()
	}
	resp, err := ob.client.Do(req)
	if err != nil {
		res.Error = err.Error()
		writeJSON(w, http.StatusBadGateway, res)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	res.Status, res.Body = resp.StatusCode, string(b)
	if err != nil {
		res.Error = err.Error()
	}
	writeJSON(w, http.StatusOK, res)
}

// outboundClient is /fetch's client for one request.
type outboundClient struct {
	client    *http.Client
	proxy     func(*http.Request) (*url.URL, error)
	caWarning string
}

// outbound builds the client a Node service has from its environment:
//   - HTTP_PROXY, HTTPS_PROXY, NO_PROXY, each read upper case first, then
//     lower case (what Go, curl and Node's proxy agents accept); loopback
//     and localhost are never proxied. An https:// proxy is spoken to over
//     TLS.
//   - the certificates in the file NODE_EXTRA_CA_CERTS names are trusted
//     besides the system roots (empty in the image unless SSL_CERT_FILE),
//     for the HTTPS proxy and the destinations alike;
//   - NODE_TLS_REJECT_UNAUTHORIZED=0 turns verification off (any other
//     value keeps it, as in Node).
//
// Each request gets its own connection (no keep-alive), so a proxy's
// tunnel closes, and is logged, when the request ends.
func (s *server) outbound(direct, insecure bool) outboundClient {
	env := func(upper, lower string) string {
		if v := s.getenv(upper); v != "" {
			return v
		}
		return s.getenv(lower)
	}
	var ob outboundClient
	if !direct {
		cfg := httpproxy.Config{
			HTTPProxy:  env("HTTP_PROXY", "http_proxy"),
			HTTPSProxy: env("HTTPS_PROXY", "https_proxy"),
			NoProxy:    env("NO_PROXY", "no_proxy"),
		}
		fn := cfg.ProxyFunc()
		ob.proxy = func(r *http.Request) (*url.URL, error) { return fn(r.URL) }
	} else {
		ob.proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if f := env("NODE_EXTRA_CA_CERTS", "node_extra_ca_certs"); f != "" {
		if b, err := os.ReadFile(f); err != nil {
			ob.caWarning = fmt.Sprintf("ignoring extra certs from %s, load failed: %v", f, err)
		} else if !roots.AppendCertsFromPEM(b) {
			ob.caWarning = fmt.Sprintf("ignoring extra certs from %s: no PEM certificate in it", f)
		}
		if ob.caWarning != "" {
			log.Print("fetch: ", ob.caWarning)
		}
	}
	tlsConfig := &tls.Config{RootCAs: roots}
	if insecure || env("NODE_TLS_REJECT_UNAUTHORIZED", "node_tls_reject_unauthorized") == "0" {
		tlsConfig.InsecureSkipVerify = true
	}
	ob.client = &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			Proxy:               ob.proxy,
			TLSClientConfig:     tlsConfig,
			DisableKeepAlives:   true,
			TLSHandshakeTimeout: 10 * time.Second,
		},
	}
	return ob
}
