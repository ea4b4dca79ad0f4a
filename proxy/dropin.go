package proxy

import (
	"fmt"
	"strings"
)

// Docker engine integration: the engine pulls images itself and never
// reads .env, so it gets the proxy through a systemd drop-in for
// docker.service. Go programs (dockerd included) add the directories of
// SSL_CERT_DIR to their trusted roots, which lets the engine trust the
// proxy's CA, for the proxy's own TLS and for registries it re-signs,
// without changing the host's trust store.
const (
	DockerDropInDir  = "/etc/systemd/system/docker.service.d"
	DockerDropInName = "carto-proxy.conf"
	// DockerCADir holds the proxy CA for the engine.
	DockerCADir = "/etc/docker/carto-proxy-ca"
	// systemCertDir is Debian's trust store, kept first in SSL_CERT_DIR.
	systemCertDir = "/etc/ssl/certs"
)

// DockerDropIn renders the drop-in for s, or nil when no proxy is set
// (the caller then removes the file).
func DockerDropIn(s Settings, noProxy []string) []byte {
	if !s.Enabled() {
		return nil
	}
	var b strings.Builder
	b.WriteString("# Written by carto-appliance (proxy set/clear); do not edit.\n[Service]\n")
	env := func(k, v string) { fmt.Fprintf(&b, "Environment=%s\n", systemdQuote(k+"="+v)) }
	env("HTTP_PROXY", s.URL)
	env("HTTPS_PROXY", s.URL)
	env("NO_PROXY", strings.Join(noProxy, ","))
	if s.CACert != "" {
		env("SSL_CERT_DIR", systemCertDir+":"+DockerCADir)
	}
	return []byte(b.String())
}

// systemdQuote quotes one Environment= assignment for a unit file.
func systemdQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "%", "%%", "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}
