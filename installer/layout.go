package installer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/peer"
	"github.com/cartodb/carto-appliance/release"
	"github.com/cartodb/carto-appliance/stack"
)

// JoinTokenFileName (state dir) is the tier layout's join token: its
// layout, nodes and the secret the nodes' agents sign their peer API
// with. The data node's install writes it; the other nodes install with a
// copy of it and keep their own.
const JoinTokenFileName = "join-token"

// JoinTokenPath is where this node keeps the layout's join token.
func JoinTokenPath(paths config.Paths) string {
	return filepath.Join(paths.WithDefaults().StateDir, JoinTokenFileName)
}

// applyLayout sets cfg's layout, role and nodes from the install's
// options and returns the join token the node installs with (nil for the
// standard layout). The first role of a layout (the data node) creates the
// token; every other node joins with the file it wrote, so that the nodes
// list and the secret are one and the same on every node: typed twice,
// they could differ.
func (o InstallOptions) applyLayout(paths config.Paths, cfg *config.Config, found bool) (*peer.Join, error) {
	installed, err := readJoin(paths)
	if err != nil {
		return nil, err
	}
	given := o.Layout != "" || o.Role != "" || len(o.Nodes) > 0 || o.Join != ""
	if !given {
		if cfg.Distributed() && installed == nil {
			return nil, inputErrorf(InputJoin, "appliance.yaml says this is the %s node of a %s layout, but %s is missing: copy the join token file from the data node and give it to the install", cfg.Role, cfg.Layout, JoinTokenPath(paths))
		}
		return installed, nil
	}
	next := *cfg
	if o.Role != "" {
		next.Role = o.Role
	}
	var join *peer.Join
	switch {
	case o.Join != "":
		if join, err = peer.ReadTokenFile(o.Join); err != nil {
			return nil, &InputError{Input: InputJoin, Err: fmt.Errorf("the join token %s: %w", o.Join, err)}
		}
		if o.Layout != "" && o.Layout != join.Layout {
			return nil, inputErrorf(InputLayout, "the layout %s, but the join token %s is for a %s layout: leave the layout out (the token says it)", o.Layout, o.Join, join.Layout)
		}
		if len(o.Nodes) > 0 && !maps.Equal(o.Nodes, join.Nodes) {
			return nil, inputErrorf(InputNodes, "the nodes given differ from those of the join token %s (%s): leave them out (the token says them)", o.Join, nodeList(join.Nodes))
		}
		next.Layout, next.Nodes = join.Layout, join.Nodes
	default:
		if o.Layout != "" {
			next.Layout = o.Layout
		}
		if len(o.Nodes) > 0 {
			next.Nodes = o.Nodes
		}
	}
	if was := cfg.Defaults(); found && (was.Layout != next.Defaults().Layout || was.Role != next.Role || !maps.Equal(cfg.Nodes, next.Nodes)) {
		this := "a standard node"
		if cfg.Distributed() {
			this = fmt.Sprintf("the %s node of a %s layout (%s)", was.Role, was.Layout, nodeList(cfg.Nodes))
		}
		return nil, inputErrorf(InputLayout, "this node is installed as %s: changing the layout, role or nodes of an installed node is not supported; uninstall it first (keep a backup of its data)", this)
	}
	if next.Defaults().Layout == config.LayoutStandard {
		if next.Role != "" || len(next.Nodes) > 0 || o.Join != "" {
			return nil, inputErrorf(InputLayout, "a role, nodes and a join token are for the tier layouts: give the layout tier1, or leave them out for the standard layout")
		}
		*cfg = next
		return nil, nil
	}
	if err := next.Validate(); err != nil {
		return nil, err
	}
	first := next.LayoutRoles()[0]
	switch {
	case join != nil && installed != nil && string(join.Secret) != string(installed.Secret):
		return nil, inputErrorf(InputJoin, "the join token %s is not the one this node was installed with (%s): give that one", o.Join, JoinTokenPath(paths))
	case join != nil:
	case installed != nil:
		join = installed
	case next.Role == first:
		if join, err = peer.NewJoin(next.Layout, next.Nodes); err != nil {
			return nil, err
		}
	default:
		return nil, inputErrorf(InputJoin, "a %s node joins the layout the %s node created: install the %s node first, then copy the join token file its install wrote (%s) here and give it to this install",
			next.Role, first, first, JoinTokenPath(paths))
	}
	*cfg = next
	return join, nil
}

// readJoin is the join token this node keeps, or nil.
func readJoin(paths config.Paths) (*peer.Join, error) {
	path := JoinTokenPath(paths)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	j, err := peer.ReadTokenFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading this node's join token: %w", err)
	}
	return j, nil
}

func nodeList(nodes map[string]string) string {
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(nodes)) {
		parts = append(parts, r+"="+nodes[r])
	}
	return strings.Join(parts, ",")
}

// PeerState is one other node of the layout as this node sees it.
type PeerState struct {
	Role      string `json:"role"`
	Address   string `json:"address"`
	Reachable bool   `json:"reachable"`
	Version   string `json:"version,omitempty"`
	Healthy   bool   `json:"healthy"`
	// Unhealthy are its services that are not healthy.
	Unhealthy []string `json:"unhealthy,omitempty"`
	// Error says why it could not be asked.
	Error string `json:"error,omitempty"`
	// Skew says its version differs from this node's.
	Skew bool `json:"skew,omitempty"`
	// License is the licence's state there.
	License string `json:"license,omitempty"`
}

// Bounds of one question to a peer. A node that is down refuses the
// connection (or does not answer the 3 s dial) at once; a node that is up
// but busy (converging, under load) may take seconds to inspect its
// containers: status shows it as not answering after peerShowTimeout,
// while an install or upgrade deciding on it waits peerDecideTimeout
// rather than refuse for nothing.
const (
	peerShowTimeout   = 10 * time.Second
	peerDecideTimeout = 30 * time.Second
)

// askPeer asks one peer; workflow tests answer in its place.
var askPeer = func(ctx context.Context, c *peer.Client, addr string) (*peer.Status, error) {
	return c.Status(ctx, addr)
}

// askPeers asks the nodes of roles for their status, all at once.
func askPeers(ctx context.Context, cfg config.Config, join *peer.Join, roles []string, version string, timeout time.Duration) []PeerState {
	client := &peer.Client{Secret: join.Secret, Port: cfg.PeerPort()}
	out := make([]PeerState, len(roles))
	var wg sync.WaitGroup
	for i, r := range roles {
		out[i] = PeerState{Role: r, Address: cfg.Nodes[r]}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			st, err := askPeer(ctx, client, out[i].Address)
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			out[i].Reachable, out[i].Version, out[i].Healthy, out[i].Unhealthy, out[i].License = true, st.Version, st.Healthy, st.Unhealthy, st.License
			out[i].Skew = st.Version != version
		})
	}
	wg.Wait()
	return out
}

// otherRoles are the roles of cfg's layout but its own.
func otherRoles(cfg config.Config) []string {
	return slices.DeleteFunc(cfg.LayoutRoles(), func(r string) bool { return r == cfg.Role })
}

// PeerRefusedError is a node of the layout that this node's change
// depends on and that is not ready for it.
type PeerRefusedError struct{ Err error }

func (e *PeerRefusedError) Error() string { return e.Err.Error() }
func (e *PeerRefusedError) Unwrap() error { return e.Err }

// checkDependencies refuses to start this node's services on version
// while a node it depends on is unreachable or runs an older version (the
// layout installs and upgrades data -> app -> web, one node at a time),
// and a first install on another version than those nodes. An installed
// node on an older version than a node it depends on is mid-upgrade: it
// keeps converging (status reports the skew) until its own upgrade.
func checkDependencies(ctx context.Context, cfg config.Config, join *peer.Join, version string, first bool) error {
	deps := cfg.Dependencies()
	if len(deps) == 0 {
		return nil
	}
	if join == nil {
		return inputErrorf(InputJoin, "no join token for this %s node: give this install the one the data node wrote", cfg.Role)
	}
	for _, p := range askPeers(ctx, cfg, join, deps, version, peerDecideTimeout) {
		switch {
		case !p.Reachable:
			return &PeerRefusedError{fmt.Errorf("the %s node (%s) must be up before this %s node starts its services (the %s layout goes %s), but it did not answer: %s; install or start it first, and check this node reaches %s port %d",
				p.Role, p.Address, cfg.Role, cfg.Layout, strings.Join(cfg.LayoutRoles(), " -> "), p.Error, p.Address, cfg.PeerPort())}
		case p.Version == "":
			return &PeerRefusedError{fmt.Errorf("the %s node (%s) has no CARTO installed yet: install it first", p.Role, p.Address)}
		case p.Version != version && (first || mustParse(version).Compare(mustParse(p.Version)) > 0):
			how := fmt.Sprintf("upgrade the %s node to %s first (the %s layout upgrades %s, one node at a time)", p.Role, version, cfg.Layout, strings.Join(cfg.LayoutRoles(), " -> "))
			if mustParse(version).Compare(mustParse(p.Version)) < 0 {
				how = fmt.Sprintf("upgrade this node to %s (carto-appliance upgrade), as the %s node was", p.Version, p.Role)
			}
			return &PeerRefusedError{fmt.Errorf("this %s node would run CARTO %s, but the %s node (%s) runs %s: %s", cfg.Role, version, p.Role, p.Address, p.Version, how)}
		}
	}
	return nil
}

// checkPeers is the "peers" step of a change of a tier layout's node.
func checkPeers(ctx context.Context, paths config.Paths, d *desired) error {
	join := d.join
	if join == nil {
		var err error
		if join, err = readJoin(paths); err != nil {
			return err
		}
	}
	installed, err := loadState(paths.StateDir)
	if err != nil {
		return err
	}
	return checkDependencies(ctx, d.cfg, join, d.release.Manifest.Version, installed.Version == "")
}

// NodeStatus is what this node answers its peers: its role, version and
// health (never its peers', which would have the nodes ask one another in
// a circle).
func NodeStatus(ctx context.Context, paths config.Paths) (*peer.Status, error) {
	cfg, st, err := installedStatus(ctx, paths.WithDefaults())
	if err != nil {
		return nil, err
	}
	out := &peer.Status{Role: cfg.Role, Version: st.Version, Healthy: st.Healthy, Services: len(st.Services), Time: time.Now().UTC()}
	if st.License != nil {
		out.License = string(st.License.State)
	}
	for _, s := range st.Services {
		if s.State != "running" && s.State != "completed" || s.Health == "unhealthy" || s.Health == "starting" {
			out.Unhealthy = append(out.Unhealthy, s.Name)
		}
	}
	return out, nil
}

// PeerEndpoint is what the agent of a tier layout's node serves its peers
// on.
type PeerEndpoint struct {
	// Addr is this node's private address and the peer port.
	Addr string
	// Secret is the layout's, from the join token.
	Secret []byte
	// From are the layout's nodes' addresses: the only ones answered.
	From []netip.Addr
}

// PeerAPI is where and to whom the agent of a tier layout's node serves
// its peers; ok is false on a standard node.
func PeerAPI(paths config.Paths) (ep PeerEndpoint, ok bool, err error) {
	paths = paths.WithDefaults()
	cfg, found, err := config.Load(paths.File(config.ConfigFileName))
	if err != nil || !found || !cfg.Distributed() {
		return PeerEndpoint{}, false, err
	}
	join, err := readJoin(paths)
	if err != nil {
		return PeerEndpoint{}, false, err
	}
	if join == nil {
		return PeerEndpoint{}, false, fmt.Errorf("this %s node has no join token (%s): install it again with the data node's", cfg.Role, JoinTokenPath(paths))
	}
	ep = PeerEndpoint{Addr: fmt.Sprintf("%s:%d", cfg.Address(), cfg.PeerPort()), Secret: join.Secret}
	for _, a := range cfg.Nodes {
		if ip, err := netip.ParseAddr(a); err == nil {
			ep.From = append(ep.From, ip)
		}
	}
	return ep, true, nil
}

// nodeRole is the role status and the role label name: stack.RoleAll on
// a standard node.
func nodeRole(cfg config.Config) string {
	if cfg.Distributed() {
		return cfg.Role
	}
	return stack.RoleAll
}

// peerProblems are the nodes d's node depends on that do not answer as
// nodes of its layout, each with why (preflight's "peers" check).
func peerProblems(ctx context.Context, paths config.Paths, d *desired) []string {
	join := d.join
	if join == nil {
		var err error
		if join, err = readJoin(paths); err != nil || join == nil {
			return []string{"no join token on this node: give this install the one the data node wrote"}
		}
	}
	var out []string
	for _, p := range askPeers(ctx, d.cfg, join, d.cfg.Dependencies(), d.release.Manifest.Version, peerDecideTimeout) {
		if !p.Reachable {
			out = append(out, fmt.Sprintf("the %s node (%s): %s", p.Role, p.Address, p.Error))
			continue
		}
		if o := (config.Config{Layout: d.cfg.Layout, Role: p.Role}); o.Clients() == d.cfg.Role {
			out = append(out, unreachablePorts(ctx, d, p)...)
		}
	}
	return out
}

// unreachablePorts are the ports the node p serves this one on (its
// services' x-carto-peer-port) that this node cannot connect to: a
// firewall between the nodes, or p's services down.
func unreachablePorts(ctx context.Context, d *desired, p PeerState) []string {
	ports, err := stack.PeerPorts(d.release.Compose, p.Role)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, port := range ports {
		addr := net.JoinHostPort(p.Address, strconv.Itoa(port))
		c, err := (&net.Dialer{Timeout: peerShowTimeout}).DialContext(ctx, "tcp", addr)
		if err != nil {
			out = append(out, fmt.Sprintf("the %s node's port %s: %v", p.Role, addr, err))
			continue
		}
		c.Close()
	}
	return out
}

// roleRequirements are what a node of cfg's role needs, from the
// release's figures for a node that runs everything: releases state no
// figures per role (yet), so the split is the appliance's. The node that
// runs the CARTO services keeps the whole CPU and memory figures (an
// import worker alone needs 8 GB for a 1 GB file) and needs room for its
// images; the data node keeps the whole disk figure (the database grows
// there) with half the memory.
func roleRequirements(cfg config.Config, whole release.Requirements) release.Requirements {
	if !cfg.Distributed() {
		return whole
	}
	r := whole
	roles := cfg.ServiceRoles()
	switch {
	case slices.Contains(roles, config.RoleApp):
		r.DiskGiB = release.Requirement{Min: min(whole.DiskGiB.Min, 20), Recommended: min(whole.DiskGiB.Recommended, 60)}
	case slices.Contains(roles, config.RoleData):
		r.CPUs = half(whole.CPUs, 2)
		r.MemoryGiB = half(whole.MemoryGiB, 1)
	}
	return r
}

// half is half of a whole node's requirement, never below floor (nor the
// whole's own minimum, when that is lower).
func half(whole release.Requirement, floor float64) release.Requirement {
	m := max(whole.Min/2, min(floor, whole.Min))
	return release.Requirement{Min: m, Recommended: max(whole.Recommended/2, m)}
}
