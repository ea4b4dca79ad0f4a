package config

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// Layouts (SPEC §10): how many VMs the stack is spread over.
const (
	LayoutStandard = "standard" // one VM runs everything
	LayoutTier1    = "tier1"    // an app VM (web and app services) and a data VM
	LayoutTier2    = "tier2"    // a web VM (the router), an app VM and a data VM
)

// Node roles of the tier layouts, in install and upgrade order: a node
// depends on every role before its own.
const (
	RoleData = "data"
	RoleApp  = "app"
	RoleWeb  = "web"
)

// Layouts are the layouts appliance.yaml accepts.
var Layouts = []string{LayoutStandard, LayoutTier1, LayoutTier2}

// layoutRoles are each tier layout's node roles, in install order.
var layoutRoles = map[string][]string{
	LayoutTier1: {RoleData, RoleApp},
	LayoutTier2: {RoleData, RoleApp, RoleWeb},
}

// Distributed says whether the stack spans more than this VM.
func (c Config) Distributed() bool { return layoutRoles[c.Layout] != nil }

// LayoutRoles are the node roles of c's layout in install order; none for
// the standard layout.
func (c Config) LayoutRoles() []string { return slices.Clone(layoutRoles[c.Layout]) }

// ServiceRoles are the release template's service roles (x-carto-role)
// this node runs: every one on a standard node; on tier1 the app node also
// runs the web services (the router), as only tier2 has a web node.
func (c Config) ServiceRoles() []string {
	switch {
	case !c.Distributed():
		return []string{RoleData, RoleApp, RoleWeb}
	case c.Layout == LayoutTier1 && c.Role == RoleApp:
		return []string{RoleApp, RoleWeb}
	}
	return []string{c.Role}
}

// ServesRouter says whether this node publishes the router (80/443): the
// standard node, or the node that runs the web services.
func (c Config) ServesRouter() bool { return slices.Contains(c.ServiceRoles(), RoleWeb) }

// ChecksLicenseOnline says whether this node asks the licence server: the
// single node, or in a tier layout the app node, which reaches the
// internet for CARTO's services anyway (a data node may not at all). The
// others show its answer.
func (c Config) ChecksLicenseOnline() bool { return !c.Distributed() || c.Role == RoleApp }

// LicenseChecker is the role of the node that checks the licence online.
func (c Config) LicenseChecker() string { return RoleApp }

// Address is this node's private address in a tier layout.
func (c Config) Address() string { return c.Nodes[c.Role] }

// Dependencies are the roles this node needs up, on its version, before
// it starts its services: those before it in the layout's order.
func (c Config) Dependencies() []string {
	roles := layoutRoles[c.Layout]
	i := slices.Index(roles, c.Role)
	if i < 0 {
		return nil
	}
	return slices.Clone(roles[:i])
}

// Dependents are the roles that depend on this node.
func (c Config) Dependents() []string {
	roles := layoutRoles[c.Layout]
	i := slices.Index(roles, c.Role)
	if i < 0 {
		return nil
	}
	return slices.Clone(roles[i+1:])
}

// Clients is the role that reaches what this node publishes on its
// private address: the next in the layout's order (the data node's
// databases serve the app node, the app node's services the web node's
// router), none for the last.
func (c Config) Clients() string {
	roles := layoutRoles[c.Layout]
	i := slices.Index(roles, c.Role)
	if i < 0 || i+1 >= len(roles) {
		return ""
	}
	return roles[i+1]
}

// Peers are the other nodes' addresses, by role, sorted by role order.
func (c Config) Peers() []string {
	var out []string
	for _, r := range layoutRoles[c.Layout] {
		if r != c.Role {
			out = append(out, c.Nodes[r])
		}
	}
	return out
}

// PeerPort is where the agents of a tier layout answer one another.
func (c Config) PeerPort() int {
	if c.Peer.Port == 0 {
		return DefaultPeerPort
	}
	return c.Peer.Port
}

// DefaultPeerPort is the peer API's port on each node's private address.
const DefaultPeerPort = 9710

// PeerConfig is appliance.yaml's peer section: how the nodes of a tier
// layout reach one another's agent.
type PeerConfig struct {
	Port int `yaml:"port,omitempty"` // default 9710
}

// NodeCount is the number of VMs of c's layout (what the licence counts).
func (c Config) NodeCount() int {
	if n := len(layoutRoles[c.Layout]); n > 0 {
		return n
	}
	return 1
}

func validateLayout(c Config) error {
	layout := c.Defaults().Layout
	if !slices.Contains(Layouts, layout) {
		return fieldErrorf("layout", "appliance.yaml layout %q: use one of %s", layout, strings.Join(Layouts, ", "))
	}
	roles := layoutRoles[layout]
	if roles == nil {
		if c.Role != "" || len(c.Nodes) > 0 {
			return fieldErrorf("role", "appliance.yaml role and nodes are for the tier layouts; the standard layout runs everything on this VM: remove them, or set layout to tier1")
		}
		return nil
	}
	if !slices.Contains(roles, c.Role) {
		return fieldErrorf("role", "appliance.yaml role %q: a %s node is one of %s", c.Role, layout, strings.Join(roles, ", "))
	}
	seen := map[netip.Addr]string{}
	for _, r := range roles {
		a := c.Nodes[r]
		if a == "" {
			return fieldErrorf("nodes", "appliance.yaml nodes: no address for the %s node; a %s layout lists %s, e.g. %s", r, layout, strings.Join(roles, ", "), exampleNodes(roles))
		}
		ip, err := netip.ParseAddr(a)
		if err != nil || !ip.Is4() || ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() {
			return fieldErrorf("nodes", "appliance.yaml nodes %s=%q: give the node's private IPv4 address, the one the other nodes reach it at (not a name, 0.0.0.0 or 127.0.0.1)", r, a)
		}
		if other, dup := seen[ip]; dup {
			return fieldErrorf("nodes", "appliance.yaml nodes: %s and %s are both %s: each role runs on its own VM", other, r, a)
		}
		seen[ip] = r
	}
	for _, r := range slices.Sorted(maps.Keys(c.Nodes)) {
		if !slices.Contains(roles, r) {
			return fieldErrorf("nodes", "appliance.yaml nodes %q: a %s layout has the roles %s only", r, layout, strings.Join(roles, ", "))
		}
	}
	if p := c.Peer.Port; p < 0 || p > 65535 {
		return fieldErrorf("peer.port", "appliance.yaml peer.port %d: give a TCP port between 1 and 65535", p)
	}
	if !c.ServesRouter() && c.TLS.Mode != "" && c.TLS.Mode != TLSSelfSigned {
		return fieldErrorf("tls.mode", "appliance.yaml tls.mode %s: the %s node serves no router; the router's certificate lives on the %s node: set TLS there", c.TLS.Mode, c.Role, routerRole(layout))
	}
	if !c.ServesRouter() && len(c.Network.AllowedSources) > 0 {
		return fieldErrorf("network.allowed_sources", "appliance.yaml network.allowed_sources: the %s node publishes no router; set the allow-list on the node that serves it (%s)", c.Role, routerRole(layout))
	}
	return nil
}

func routerRole(layout string) string {
	if layout == LayoutTier2 {
		return RoleWeb
	}
	return RoleApp
}

func exampleNodes(roles []string) string {
	parts := make([]string, len(roles))
	for i, r := range roles {
		parts[i] = fmt.Sprintf("%s=10.0.0.%d", r, i+1)
	}
	return strings.Join(parts, ",")
}
