package proxy

import (
	"slices"
	"strings"
)

// Where the appliance keeps the proxy CA, and where the CARTO services see
// it: every service that reads .env mounts a directory holding it at
// /usr/src/certs.
const (
	CAFileName      = "proxy-ca.pem"
	CAContainerPath = "/usr/src/certs/" + CAFileName
)

// Warehouses whose connections do not go through the proxy (seed 001).
var (
	tcpWarehouses = []string{"postgres", "redshift"}
	noProxyWH     = []string{"databricks"}
)

// Warehouses lists the data warehouse kinds appliance.yaml accepts.
var Warehouses = []string{"bigquery", "snowflake", "postgres", "redshift", "databricks"}

// EnvInput is what the proxy variables depend on.
type EnvInput struct {
	Settings   Settings
	Services   []string // the stack's service names, reached directly
	Peers      []string // the peer nodes' addresses, reached directly
	Warehouses []string // the data warehouses the customer connects
}

// Env returns the stack's proxy variables as key, value pairs, every one in
// upper and lower case (some libraries read only one), and notes for the
// operator. With no proxy it returns nothing.
func Env(in EnvInput) (pairs []string, notes []string) {
	s := in.Settings
	if !s.Enabled() {
		return nil, nil
	}
	add := func(key, value string) {
		pairs = append(pairs, key, value, strings.ToLower(key), value)
	}
	add("HTTP_PROXY", s.URL)
	add("HTTPS_PROXY", s.URL)
	if !s.HTTPS() {
		add("GRPC_PROXY", s.URL)
	}
	add("NO_PROXY", strings.Join(NoProxyList(in), ","))
	if s.CACert != "" {
		add("NODE_EXTRA_CA_CERTS", CAContainerPath)
	}
	if s.HTTPS() {
		v := "1"
		if !s.Rejects() {
			v = "0"
			notes = append(notes, "NODE_TLS_REJECT_UNAUTHORIZED=0: the services accept any TLS certificate, an attacker's included; give the proxy's CA (proxy.ca_cert) and keep proxy.reject_unauthorized true")
		}
		add("NODE_TLS_REJECT_UNAUTHORIZED", v)
		if slices.Contains(in.Warehouses, "snowflake") {
			notes = append(notes, "Snowflake does not work through an HTTPS proxy: .snowflakecomputing.com was added to NO_PROXY, so allow it in the egress firewall")
		}
	}
	return pairs, append(notes, BypassNotes(in.Warehouses)...)
}

// NoProxyList is NO_PROXY: localhost, 127.0.0.1, every service of the
// stack and the peer nodes (service-to-service traffic must never go
// through the proxy), the operator's entries, and Snowflake's domain for an
// HTTPS proxy. Duplicates are dropped; order is stable.
func NoProxyList(in EnvInput) []string {
	list := []string{"localhost", "127.0.0.1"}
	list = append(list, in.Services...)
	list = append(list, in.Peers...)
	list = append(list, in.Settings.NoProxy...)
	if in.Settings.HTTPS() && slices.Contains(in.Warehouses, "snowflake") {
		list = append(list, ".snowflakecomputing.com")
	}
	var out []string
	seen := map[string]bool{}
	for _, e := range list {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}

// BypassNotes says which configured warehouses bypass the proxy, for
// status and preflight: their traffic needs its own egress rule.
func BypassNotes(warehouses []string) []string {
	var notes []string
	for _, w := range warehouses {
		switch {
		case slices.Contains(tcpWarehouses, w):
			notes = append(notes, w+" connections are plain TCP and bypass the proxy: allow them in the egress firewall")
		case slices.Contains(noProxyWH, w):
			notes = append(notes, w+" does not support a proxy: its HTTPS connections bypass it; allow them in the egress firewall")
		}
	}
	return notes
}
