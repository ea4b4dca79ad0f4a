package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// HTTPClient returns the client for the appliance's own outbound calls
// (licence server, release channel, proxy test): through the proxy, except
// for NoProxy destinations, trusting the system roots plus caPEM (the proxy
// CA). With no proxy configured it goes direct.
func HTTPClient(s Settings, caPEM []byte, timeout time.Duration) (*http.Client, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if len(caPEM) > 0 && !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("the proxy CA holds no PEM certificate")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	tr.Proxy = Func(s)
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

// Func is the proxy choice for an http.Transport: the proxy except for
// NoProxy destinations, or nil (direct) with no proxy configured.
func Func(s Settings) func(*http.Request) (*url.URL, error) {
	if !s.Enabled() {
		return nil
	}
	cfg := httpproxy.Config{HTTPProxy: s.URL, HTTPSProxy: s.URL, NoProxy: strings.Join(s.NoProxy, ",")}
	fn := cfg.ProxyFunc()
	return func(r *http.Request) (*url.URL, error) { return fn(r.URL) }
}
