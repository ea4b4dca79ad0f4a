//go:build licensetest

package installer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/peer"
	"github.com/cartodb/carto-appliance/stack"
)

var tier1 = map[string]string{"app": "10.0.0.2", "data": "10.0.0.3"}

// tierPackage is a customer package whose licence allows tier1 on two
// nodes.
func tierPackage(t *testing.T) InstallOptions {
	t.Helper()
	opts := customerPackage(t)
	lic := testLicense(t, func(l *license.License) {
		l.TenantID, l.Layouts, l.Nodes = "onp-test", []string{"standard", "tier1"}, 2
	})
	if err := os.WriteFile(filepath.Join(filepath.Dir(opts.CustomerEnv), config.LicenseFileName), lic, 0o600); err != nil {
		t.Fatal(err)
	}
	return opts
}

// peers answers askPeer with what answers holds by address; an address
// it lacks is unreachable.
func fakePeers(t *testing.T, answers map[string]*peer.Status) {
	t.Helper()
	prev := askPeer
	t.Cleanup(func() { askPeer = prev })
	askPeer = func(_ context.Context, _ *peer.Client, addr string) (*peer.Status, error) {
		if st, ok := answers[addr]; ok {
			return st, nil
		}
		return nil, fmt.Errorf("node at %s:9710 is unreachable: connection refused: %w", addr, peer.ErrUnreachable)
	}
}

// The data node installs first: it runs only the databases, published on
// its private address, behind a firewall that lets only the app node in,
// and it writes the join token (0600) the app node installs with.
func TestTier1DataNodeInstall(t *testing.T) {
	f, _ := fakes(t)
	fakePeers(t, nil)
	opts := tierPackage(t)
	opts.Layout, opts.Role, opts.Nodes = config.LayoutTier1, config.RoleData, tier1
	res, err := Install(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	paths := opts.Paths
	compose := readFile(t, paths.File(stack.ComposeFileName))
	for _, want := range []string{"10.0.0.3:5432:5432", "10.0.0.3:6379:6379", "\n  valkey:\n", "\n  workspace-postgres:\n"} {
		if !strings.Contains(compose, want) {
			t.Errorf("data node's compose file lacks %q", want)
		}
	}
	if strings.Contains(compose, "maps-api") || strings.Contains(compose, "router-http") {
		t.Error("the data node runs CARTO services or the router")
	}
	fi, err := os.Stat(JoinTokenPath(paths))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("join token: %v, %v", fi, err)
	}
	if res.Status.Role != "data" || res.Status.Nodes["app"] != "10.0.0.2" {
		t.Errorf("status: role %q nodes %v", res.Status.Role, res.Status.Nodes)
	}
	if n := len(f.Rules); n == 0 || !strings.Contains(f.Rules[n-1].Rules, "--ctorigdst 10.0.0.3 -s 10.0.0.2 -j RETURN") {
		t.Errorf("firewall rules: %+v", f.Rules)
	}
	cfg := installedConfig(t, paths)
	if cfg.Layout != "tier1" || cfg.Role != "data" || cfg.Nodes["data"] != "10.0.0.3" {
		t.Errorf("appliance.yaml: %+v", cfg)
	}

	// The app node checks the licence online, not the data node.
	prevClient := licenseClient
	t.Cleanup(func() { licenseClient = prevClient })
	licenseClient = func(config.Paths, config.Config) (*http.Client, error) {
		t.Error("the data node asked the licence server")
		return nil, errors.New("not asked")
	}
	if st, err := CheckLicense(t.Context(), paths); err != nil || st.State != license.Valid {
		t.Errorf("licence on the data node: %+v, %v", st, err)
	}
	if _, err := os.Stat(licenseCheckPath(paths)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the data node recorded an online check: %v", err)
	}

	// Run again: the same token, and no way to move the node elsewhere.
	token := readFile(t, JoinTokenPath(paths))
	if _, err := Install(t.Context(), InstallOptions{Options: Options{Paths: paths}}); err != nil {
		t.Fatal(err)
	}
	if readFile(t, JoinTokenPath(paths)) != token {
		t.Error("a re-run changed the join token")
	}
	moved := InstallOptions{Options: Options{Paths: paths}, Layout: config.LayoutTier1, Role: config.RoleData, Nodes: map[string]string{"app": "10.0.0.2", "data": "10.0.0.9"}}
	if _, err := Install(t.Context(), moved); err == nil || !strings.Contains(err.Error(), "changing the layout, role or nodes of an installed node is not supported") {
		t.Errorf("moving the data node: %v", err)
	}
}

// The app node joins with the data node's token, only once the data node
// answers on the same version; before that it is refused with nothing
// written.
func TestTier1AppNodeJoinsInOrder(t *testing.T) {
	fakes(t)
	fakePeers(t, nil)
	data := tierPackage(t)
	data.Layout, data.Role, data.Nodes = config.LayoutTier1, config.RoleData, tier1
	if _, err := Install(t.Context(), data); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(t.TempDir(), "join-token")
	if err := os.WriteFile(token, []byte(readFile(t, JoinTokenPath(data.Paths))), 0o600); err != nil {
		t.Fatal(err)
	}
	version := readState(t, data.Paths).Version

	app := tierPackage(t)
	app.Layout, app.Role, app.Nodes = config.LayoutTier1, config.RoleApp, tier1
	var in *InputError
	if _, err := Install(t.Context(), app); !errors.As(err, &in) || in.Input != InputJoin || !strings.Contains(err.Error(), "install the data node first") {
		t.Fatalf("app node without the token: %v", err)
	}
	app.Nodes, app.Layout, app.Join = nil, "", token
	var refused *PeerRefusedError
	_, err := Install(t.Context(), app)
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "the data node (10.0.0.3) must be up before this app node starts its services") {
		t.Fatalf("app node before the data node answers: %v", err)
	}
	if _, err := os.Stat(app.Paths.File(config.ConfigFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused install wrote appliance.yaml: %v", err)
	}

	fakePeers(t, map[string]*peer.Status{"10.0.0.3": {Role: "data", Version: "2020.1.1", Healthy: true}})
	if _, err := Install(t.Context(), app); err == nil || !strings.Contains(err.Error(), "runs 2020.1.1: upgrade the data node to "+version+" first") {
		t.Fatalf("app node on another version than the data node: %v", err)
	}

	fakePeers(t, map[string]*peer.Status{"10.0.0.3": {Role: "data", Version: version, Healthy: true}})
	if _, err := Install(t.Context(), app); err != nil {
		t.Fatal(err)
	}
	env := readFile(t, app.Paths.File(config.EnvFileName))
	for _, want := range []string{`WORKSPACE_POSTGRES_HOST="10.0.0.3"`, `REDIS_HOST="10.0.0.3"`} {
		if !strings.Contains(env, want) {
			t.Errorf("app node's .env lacks %q", want)
		}
	}
	compose := readFile(t, app.Paths.File(stack.ComposeFileName))
	if strings.Contains(compose, "\n  workspace-postgres:\n") || !strings.Contains(compose, "\n  router-http:\n") {
		t.Error("the app node runs the database, or not the router")
	}
	if strings.Contains(compose, "10.0.0.2:") {
		t.Error("the tier1 app node publishes on its private address, which no node reaches")
	}
	if readFile(t, JoinTokenPath(app.Paths)) != readFile(t, token) {
		t.Error("the app node keeps another token than the one it joined with")
	}

	// status on the app node shows the data node, and a skew.
	fakePeers(t, map[string]*peer.Status{"10.0.0.3": {Role: "data", Version: "2099.1.1", Healthy: true}})
	st, err := GetStatus(t.Context(), app.Paths)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 1 || !st.Peers[0].Reachable || !st.Peers[0].Skew || !strings.Contains(strings.Join(st.Notes, "\n"), "version skew") {
		t.Errorf("status peers %+v notes %q", st.Peers, st.Notes)
	}
	fakePeers(t, nil)
	if st, err = GetStatus(t.Context(), app.Paths); err != nil || st.Peers[0].Reachable || !strings.Contains(strings.Join(st.Notes, "\n"), "the data node (10.0.0.3) does not answer") {
		t.Errorf("status with the data node down: %+v, %v", st, err)
	}
}

// A licence for the standard layout alone refuses a tier1 node; so does
// a customer.env with an external database.
func TestTier1Refusals(t *testing.T) {
	fakes(t)
	fakePeers(t, nil)
	opts := customerPackage(t) // its licence: standard, 1 node
	opts.Layout, opts.Role, opts.Nodes = config.LayoutTier1, config.RoleData, tier1
	if _, err := Install(t.Context(), opts); err == nil || !strings.Contains(err.Error(), "not tier1") {
		t.Errorf("tier1 under a standard licence: %v", err)
	}
	opts = tierPackage(t)
	opts.Layout, opts.Role, opts.Nodes = config.LayoutTier1, config.RoleData, tier1
	f, err := os.OpenFile(opts.CustomerEnv, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("LOCAL_POSTGRES_SCALE=0\nWORKSPACE_POSTGRES_HOST=db.corp\n")
	f.Close()
	if _, err := Install(t.Context(), opts); err == nil || !strings.Contains(err.Error(), "LOCAL_POSTGRES_SCALE=0 (an external database)") {
		t.Errorf("tier1 with an external database: %v", err)
	}
	opts.Layout = ""
	if _, err := Install(t.Context(), opts); err == nil || !strings.Contains(err.Error(), "a role, nodes and a join token are for the tier layouts") {
		t.Errorf("--role without --layout: %v", err)
	}
}

// Mid-upgrade, an installed app node on an older version than its data
// node keeps converging; a node newer than the one it depends on never
// starts, nor does a first install on another version.
func TestCheckDependenciesVersions(t *testing.T) {
	cfg := config.Config{Layout: config.LayoutTier1, Role: config.RoleApp, Nodes: tier1, Peer: config.PeerConfig{Port: 9710}}
	join := &peer.Join{Layout: "tier1", Nodes: tier1, Secret: make([]byte, 32)}
	for _, tc := range []struct {
		name, data, app string
		first           bool
		want            string // "" accepted
	}{
		{"same version", "2026.1.0", "2026.1.0", true, ""},
		{"installed, data upgraded first", "2026.1.0", "2025.11.3", false, ""},
		{"app upgraded before data", "2025.11.3", "2026.1.0", false, "upgrade the data node to 2026.1.0 first"},
		{"first install, data newer", "2026.1.0", "2025.11.3", true, "upgrade this node to 2026.1.0"},
		{"data not installed", "", "2026.1.0", true, "has no CARTO installed yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fakePeers(t, map[string]*peer.Status{"10.0.0.3": {Role: "data", Version: tc.data}})
			err := checkDependencies(t.Context(), cfg, join, tc.app, tc.first)
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
