// Package proxy owns the corporate forward proxy settings (SPEC §5.2, seed
// 001): their validation, the stack's proxy variables, the Docker engine's
// systemd drop-in, and HTTP clients for the appliance's own outbound calls,
// plus the egress check behind `proxy test`.
package proxy

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Settings is appliance.yaml's proxy section. The zero value means no proxy.
type Settings struct {
	// URL is http://host:port or https://host:port. No credentials: CARTO
	// Self-Hosted does not support proxy password authentication.
	URL string `yaml:"url,omitempty"`
	// NoProxy lists extra hosts, domains (.example.com), addresses and CIDRs
	// reached directly. localhost, 127.0.0.1, the stack's services and the
	// peer nodes are always added.
	NoProxy []string `yaml:"no_proxy,omitempty"`
	// CACert is the proxy's CA certificate as a file name in the config
	// dir's certs/ (the appliance copies the operator's file there). Only
	// for an HTTPS proxy, or one that re-signs TLS with its own CA.
	CACert string `yaml:"ca_cert,omitempty"`
	// RejectUnauthorized is NODE_TLS_REJECT_UNAUTHORIZED for an HTTPS proxy.
	// Default true; false makes the services accept any certificate.
	RejectUnauthorized *bool `yaml:"reject_unauthorized,omitempty"`
}

// Enabled reports whether a proxy is configured.
func (s Settings) Enabled() bool { return s.URL != "" }

// HTTPS reports whether the services talk TLS to the proxy itself.
func (s Settings) HTTPS() bool { return strings.HasPrefix(strings.ToLower(s.URL), "https://") }

// Rejects is the effective RejectUnauthorized (default true).
func (s Settings) Rejects() bool { return s.RejectUnauthorized == nil || *s.RejectUnauthorized }

// ParseURL checks a proxy URL and returns it normalised (lowercase scheme
// and host, explicit port, no trailing slash). The error names what is
// wrong and never repeats a password.
func ParseURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", errors.New("proxy URL is empty: give http://host:port or https://host:port")
	}
	if !strings.Contains(raw, "://") {
		return "", fmt.Errorf("proxy URL %q has no scheme: give http://%s or https://%s", redact(raw), redact(raw), redact(raw))
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		return "", fmt.Errorf("proxy URL %q is not a URL: give http://host:port or https://host:port", redact(raw))
	}
	if u.User != nil {
		return "", fmt.Errorf("proxy URL %s has credentials: password authentication is not supported by CARTO Self-Hosted; let this VM through the proxy by its address instead, and give the URL without user:password@", u.Redacted())
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("proxy URL %q: unknown scheme %q: use http:// or https://", raw, u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return "", fmt.Errorf("proxy URL %q has no host: give %s://host:port", raw, scheme)
	}
	if !validHost(host) {
		return "", fmt.Errorf("proxy URL %q: %q is not a host name or IP address", raw, host)
	}
	port := u.Port()
	if port == "" {
		if strings.HasSuffix(u.Host, ":") {
			return "", fmt.Errorf("proxy URL %q: the port is empty: give %s://%s:PORT", raw, scheme, host)
		}
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("proxy URL %q: bad port %q: give a port between 1 and 65535", raw, port)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("proxy URL %q: a proxy URL has no path, query or fragment: give %s://%s:%s", raw, scheme, host, port)
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(host), port), nil
}

// redact hides anything between "//" and "@" in a string that failed to
// parse as a URL, in case it held a password.
func redact(raw string) string {
	start := 0
	if i := strings.Index(raw, "//"); i >= 0 {
		start = i + 2
	}
	if j := strings.LastIndex(raw, "@"); j >= start {
		return raw[:start] + "xxxxx" + raw[j:]
	}
	return raw
}

func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// ParseNoProxy splits a comma (or space) separated list and checks each
// entry: a host name, a domain suffix (.example.com or *.example.com), an
// IP address or a CIDR, optionally with :port.
func ParseNoProxy(list string) ([]string, error) {
	var out []string
	for _, e := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		if err := checkNoProxyEntry(e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func checkNoProxyEntry(e string) error {
	if strings.Contains(e, "://") || strings.Contains(e, "/") && !isCIDR(e) {
		return fmt.Errorf("no-proxy entry %q: give a host, .domain, IP address or CIDR, without scheme or path", e)
	}
	if isCIDR(e) || e == "*" {
		return nil
	}
	host := strings.TrimPrefix(strings.TrimPrefix(e, "*"), ".")
	if h, p, err := net.SplitHostPort(host); err == nil {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("no-proxy entry %q: bad port %q", e, p)
		}
		host = h
	}
	if !validHost(host) {
		return fmt.Errorf("no-proxy entry %q: give a host, .domain, IP address or CIDR", e)
	}
	return nil
}

func isCIDR(s string) bool {
	_, _, err := net.ParseCIDR(s)
	return err == nil
}

// CheckCA verifies that pemData holds at least one X.509 certificate and
// nothing that is not PEM (a private key in the file is refused: it must
// not be copied into a directory mounted in every container).
func CheckCA(pemData []byte, name string) error {
	rest := pemData
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("CA file %s holds a %q block: give only the proxy CA's certificate(s), PEM encoded", name, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("CA file %s: certificate %d does not parse: %v", name, n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("CA file %s is not a PEM certificate: give the proxy CA's certificate in PEM form (-----BEGIN CERTIFICATE-----); convert DER with `openssl x509 -inform der -in FILE -out ca.pem`", name)
	}
	if strings.TrimSpace(string(rest)) != "" {
		return fmt.Errorf("CA file %s has text after its last certificate that is not PEM: give only PEM certificates", name)
	}
	return nil
}
