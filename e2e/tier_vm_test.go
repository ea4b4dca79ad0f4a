//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/e2e/vm"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
)

// The tier1 layout on two fresh VMs (SPEC §10): the data node first, then
// the app node joining with the token the data node wrote; refused out of
// order; a request through the app node's router reaches every CARTO
// service, whose rows land in the data node's Postgres; from a third host
// only the app node's 80 and 443 answer; status on the app node shows the
// data node, and the data node down.
func TestTier1InFreshVMs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newTierBed(t, "tier1", 2, "data", "app")
	data, app, outside := b.vms["data"], b.vms["app"], b.outside
	nodes := fmt.Sprintf("app=%s,data=%s", app.IP(), data.IP())
	install, notInstalled, connects, upgrade, columns := b.install, b.notInstalled, b.connects, b.upgrade, b.columns
	step(t, "the app node before the data node is refused, naming the order, with nothing changed", func(t *testing.T) {
		_, errOut, code := install(t, app, "--layout", "tier1", "--role", "app", "--nodes", nodes)
		if code == 0 || !strings.Contains(errOut, "install the data node first") || !strings.Contains(errOut, "--join FILE") {
			t.Errorf("app node first: exit %d\n%s", code, errOut)
		}
		notInstalled(t, app)
	})

	step(t, "the data node installs its databases only, on its private address, and says how the app node joins", func(t *testing.T) {
		out, errOut, code := install(t, data, "--layout", "tier1", "--role", "data", "--nodes", nodes)
		if code != 0 {
			t.Fatalf("data node install: exit %d\n%s\n%s", code, out, errOut)
		}
		if !strings.Contains(out, "Next: copy "+"/var/lib/carto-appliance/"+installer.JoinTokenFileName) || !strings.Contains(out, "--join FILE --role app") {
			t.Errorf("the data node's install did not say how the app node joins:\n%s", out)
		}
		st := vmStatus(t, data)
		var names []string
		for _, s := range st.Services {
			names = append(names, s.Name)
		}
		if st.Role != "data" || !st.Healthy || strings.Join(names, ",") != "valkey,workspace-postgres" {
			t.Errorf("data node: role %q healthy %v services %v", st.Role, st.Healthy, names)
		}
		ports := data.MustExec(t, "docker", "ps", "--format", "{{.Ports}}")
		if !strings.Contains(ports, data.IP()+":5432->5432/tcp") || strings.Contains(ports, "0.0.0.0") {
			t.Errorf("the data node publishes elsewhere than its private address: %s", ports)
		}
		if mode := data.MustExec(t, "stat", "-c", "%a", "/var/lib/carto-appliance/"+installer.JoinTokenFileName); strings.TrimSpace(mode) != "600" {
			t.Errorf("join token mode %s", mode)
		}
		b.joinToken(t, app)
	})

	step(t, "the app node is refused while the data node's agent is down", func(t *testing.T) {
		data.MustExec(t, "systemctl", "stop", "carto-appliance")
		_, errOut, code := install(t, app, "--join", "/root/join-token", "--role", "app")
		data.MustExec(t, "systemctl", "start", "carto-appliance")
		// Preflight asks first: nothing is pulled for a node that could not start.
		if code != 3 || !strings.Contains(errOut, "Nodes this node depends on: the data node ("+data.IP()+"): node at "+data.IP()+":9710 is unreachable") {
			t.Errorf("app node with the data node down: exit %d\n%s", code, errOut)
		}
		notInstalled(t, app)
	})

	step(t, "the app node joins; a request through its router reaches every service, and their rows are in the data node's database", func(t *testing.T) {
		var out, errOut string
		var code int
		// The data node's agent, just started again, answers its peers
		// once it is up.
		eventually(t, 60*time.Second, func() error {
			out, errOut, code = install(t, app, "--join", "/root/join-token", "--role", "app")
			if code != 0 && strings.Contains(errOut, "is unreachable") {
				return fmt.Errorf("the data node's agent does not answer yet: %s", errOut)
			}
			return nil
		})
		if code != 0 {
			t.Fatalf("app node install: exit %d\n%s\n%s", code, out, errOut)
		}
		st := vmStatus(t, app)
		if st.Role != "app" || !st.Healthy || len(st.Peers) != 1 || !st.Peers[0].Reachable || st.Peers[0].Version != st.Version || st.Peers[0].Skew {
			t.Errorf("app node status: role %q healthy %v peers %+v", st.Role, st.Healthy, st.Peers)
		}
		for _, s := range st.Services {
			if s.Name == "workspace-postgres" || s.Name == "valkey" {
				t.Errorf("the app node runs %s", s.Name)
			}
		}
		b.routesReachEveryService(t, app.IP())
		b.rowsOnDataNode(t, st.Version)
	})

	step(t, "from a third host only the app node's 80 and 443 answer; the app node reaches the databases", func(t *testing.T) {
		for _, p := range []int{80, 443} {
			if !connects(outside, app.IP(), p) {
				t.Errorf("the app node's port %d does not answer a third host", p)
			}
		}
		for _, p := range []int{5432, 6379} {
			if connects(outside, data.IP(), p) {
				t.Errorf("the data node's port %d answers a third host", p)
			}
			if !connects(app, data.IP(), p) {
				t.Errorf("the app node does not reach the data node's port %d", p)
			}
		}
		// The peer API answers only the layout's nodes (a request
		// without the layout's secret: 401), and a third host not at all.
		peerStatus := func(from *vm.VM) string {
			code, _, _, _ := from.Exec(ctx, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", fmt.Sprintf("http://%s:9710/v1/status", data.IP()))
			return code
		}
		if code := peerStatus(app); code != "401" {
			t.Errorf("the data node's peer API answered the app node's unsigned request %s, want 401", code)
		}
		if code := peerStatus(outside); code != "000" {
			t.Errorf("the data node's peer API answered a third host %s, want no answer", code)
		}
	})

	step(t, "status on the app node shows the data node down", func(t *testing.T) {
		data.MustExec(t, "systemctl", "stop", "carto-appliance")
		defer data.MustExec(t, "systemctl", "start", "carto-appliance")
		st := vmStatus(t, app)
		if len(st.Peers) != 1 || st.Peers[0].Reachable {
			t.Errorf("peers with the data node's agent stopped: %+v", st.Peers)
		}
		if out := app.MustExec(t, "carto-appliance", "status"); !strings.Contains(out, "Peer data ("+data.IP()+"): UNREACHABLE") {
			t.Errorf("status:\n%s", out)
		}
	})

	step(t, "the app node's upgrade before the data node's is refused; the data node upgrades, and status shows the skew", func(t *testing.T) {
		b.followChannel(t)
		out, errOut, code := upgrade(t, app)
		if code == 0 || !strings.Contains(out+errOut, "upgrade the data node to "+testbed.NextVersion+" first") {
			t.Errorf("app node first: exit %d\n%s\n%s", code, out, errOut)
		}
		if st := vmStatus(t, app); st.Version != version || !st.Healthy {
			t.Errorf("app node after the refused upgrade: %s, healthy %v", st.Version, st.Healthy)
		}
		out, errOut, code = upgrade(t, data)
		if code != 0 {
			t.Fatalf("data node upgrade: exit %d\n%s\n%s", code, out, errOut)
		}
		st := vmStatus(t, app)
		if len(st.Peers) != 1 || !st.Peers[0].Skew || st.Peers[0].Version != testbed.NextVersion || !strings.Contains(strings.Join(st.Notes, "\n"), "version skew") {
			t.Errorf("app node's status with the data node upgraded: peers %+v notes %q", st.Peers, st.Notes)
		}
		if text := app.MustExec(t, "carto-appliance", "status"); !strings.Contains(text, "VERSION SKEW") {
			t.Errorf("status:\n%s", text)
		}
	})

	step(t, "upgrade --rehearse on the app node runs on the data node, which holds the database: the migration adds its column to the copy, nothing live changes", func(t *testing.T) {
		before := columns(t)
		out, errOut, code, err := app.Exec(ctx, "carto-appliance", "upgrade", "--rehearse", "--json", "--to", testbed.NextVersion)
		if err != nil {
			t.Fatal(err)
		}
		var r installer.Rehearsal
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || !r.OK || r.DataNode != data.IP() || r.From != version || r.DumpBytes == 0 ||
			len(r.Steps) != 1 || !slices.Contains(r.Steps[0].Added, "carto_migrations."+testbed.NextColumn) {
			t.Errorf("rehearsal on the app node: exit %d %v %+v\n%s", code, err, r, errOut)
		}
		if after := columns(t); after != before {
			t.Errorf("the live schema changed: %q, was %q", after, before)
		}
		if left := data.MustExec(t, "sh", "-c", "docker ps -aq --filter label=com.docker.compose.project=carto-rehearsal; docker volume ls -q --filter label=com.docker.compose.project=carto-rehearsal"); strings.TrimSpace(left) != "" {
			t.Errorf("the rehearsal left containers or volumes on the data node:\n%s", left)
		}
		if j := data.MustExec(t, "journalctl", "-u", "carto-appliance", "-o", "cat", "--no-pager"); !strings.Contains(j, "event=peer-rehearse from="+version+" to="+testbed.NextVersion) {
			t.Errorf("the data node's agent logged no rehearsal")
		}
	})

	step(t, "the app node upgrades: the data node backs the database up first, the migration reaches it, both nodes on the new version", func(t *testing.T) {
		out, errOut, code := upgrade(t, app)
		if code != 0 {
			t.Fatalf("app node upgrade: exit %d\n%s\n%s", code, out, errOut)
		}
		for _, n := range []*vm.VM{data, app} {
			if st := vmStatus(t, n); st.Version != testbed.NextVersion || !st.Healthy || len(st.Peers) != 1 || st.Peers[0].Skew {
				t.Errorf("%s node after the upgrades: version %s healthy %v peers %+v", st.Role, st.Version, st.Healthy, st.Peers)
			}
		}
		if !strings.Contains(columns(t), testbed.NextColumn) {
			t.Errorf("the app node's migration did not reach the data node: %s", columns(t))
		}
		dumps := data.MustExec(t, "sh", "-c", "ls /var/lib/carto-appliance/backups/*-for-app/workspace.dump")
		if !strings.Contains(dumps, "-upgrade-"+version+"-to-"+testbed.NextVersion+"-for-app/workspace.dump") {
			t.Errorf("the data node holds no dump for the app node's upgrade: %s", dumps)
		}
		if readme := app.MustExec(t, "sh", "-c", "cat /var/lib/carto-appliance/backups/*-upgrade-"+version+"-to-"+testbed.NextVersion+"/README"); !strings.Contains(readme, "on the data node ("+data.IP()+")") {
			t.Errorf("the app node's backup does not say where its database dump is:\n%s", readme)
		}
	})

	step(t, "rollback --restore-database on the app node puts the data node's database back", func(t *testing.T) {
		out, errOut, code, err := app.Exec(ctx, "carto-appliance", "rollback", "--yes", "--restore-database")
		if err != nil || code != 0 {
			t.Fatalf("rollback: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		if strings.Contains(columns(t), testbed.NextColumn) {
			t.Errorf("the data node's database still has the migration's column: %s", columns(t))
		}
		if st := vmStatus(t, app); st.Version != version || !st.Healthy {
			t.Errorf("app node after the rollback: %s healthy %v %+v", st.Version, st.Healthy, st.Services)
		}
	})
}

// The tier2 layout on three fresh VMs and a fourth host: data, app, then
// web, each refused before the nodes it depends on; the web node's router
// reaches every service of the app node (through forwarders under their
// names), whose rows land on the data node; from the fourth host only the
// web node's 80 and 443 answer, and each node's private ports only the
// next node; an upgrade in order (the web node first is refused) ends
// with every node on the new version; status on the web node shows the
// app node down.
func TestTier2InFreshVMs(t *testing.T) {
	t.Parallel()
	b := newTierBed(t, "tier2", 3, "data", "app", "web")
	data, app, web, outside := b.vms["data"], b.vms["app"], b.vms["web"], b.outside
	nodes := fmt.Sprintf("web=%s,app=%s,data=%s", web.IP(), app.IP(), data.IP())
	joined := func(t *testing.T, node *vm.VM, role string) {
		t.Helper()
		out, errOut, code := b.install(t, node, "--join", "/root/join-token", "--role", role)
		if code != 0 {
			t.Fatalf("%s node install: exit %d\n%s\n%s", role, code, out, errOut)
		}
	}

	step(t, "the data node installs; the web node before the app node is refused with nothing changed; the app node joins", func(t *testing.T) {
		if out, errOut, code := b.install(t, data, "--layout", "tier2", "--role", "data", "--nodes", nodes); code != 0 {
			t.Fatalf("data node install: exit %d\n%s\n%s", code, out, errOut)
		}
		b.joinToken(t, app, web)
		_, errOut, code := b.install(t, web, "--join", "/root/join-token", "--role", "web")
		if code != 3 || !strings.Contains(errOut, "the app node ("+app.IP()+"): node at "+app.IP()+":9710 is unreachable") {
			t.Errorf("web node before the app node: exit %d\n%s", code, errOut)
		}
		b.notInstalled(t, web)
		joined(t, app, "app")
	})

	step(t, "the web node joins: its router reaches every app service through the forwarders, their rows on the data node", func(t *testing.T) {
		joined(t, web, "web")
		st := vmStatus(t, web)
		if st.Role != "web" || !st.Healthy || len(st.Peers) != 2 {
			t.Errorf("web node: role %q healthy %v peers %+v services %+v", st.Role, st.Healthy, st.Peers, st.Services)
		}
		for _, p := range st.Peers {
			if !p.Reachable || p.Version != st.Version || !p.Healthy {
				t.Errorf("peer as the web node sees it: %+v", p)
			}
		}
		for _, s := range vmStatus(t, app).Services {
			if s.Name == "router-http" || s.Name == "workspace-postgres" {
				t.Errorf("the app node runs %s", s.Name)
			}
		}
		b.routesReachEveryService(t, web.IP())
		b.rowsOnDataNode(t, st.Version)
	})

	step(t, "from a fourth host only the web node's 80 and 443 answer; each node's private ports answer the next node only", func(t *testing.T) {
		for _, p := range []int{80, 443} {
			if !b.connects(outside, web.IP(), p) {
				t.Errorf("the web node's port %d does not answer the fourth host", p)
			}
			if b.connects(outside, app.IP(), p) {
				t.Errorf("the app node's port %d answers the fourth host", p)
			}
		}
		for _, p := range []int{13001, 13004} {
			if b.connects(outside, app.IP(), p) {
				t.Errorf("the app node's port %d answers the fourth host", p)
			}
			if !b.connects(web, app.IP(), p) {
				t.Errorf("the web node does not reach the app node's port %d", p)
			}
		}
		for _, p := range []int{5432, 6379} {
			if b.connects(outside, data.IP(), p) || b.connects(web, data.IP(), p) {
				t.Errorf("the data node's port %d answers a host other than the app node", p)
			}
			if !b.connects(app, data.IP(), p) {
				t.Errorf("the app node does not reach the data node's port %d", p)
			}
		}
	})

	step(t, "an upgrade in order: the web node first is refused, then data, app and web, each on the new version", func(t *testing.T) {
		b.followChannel(t)
		out, errOut, code := b.upgrade(t, web)
		if code == 0 || !strings.Contains(out+errOut, "first") {
			t.Errorf("web node first: exit %d\n%s\n%s", code, out, errOut)
		}
		for _, n := range []*vm.VM{data, app, web} {
			if out, errOut, code := b.upgrade(t, n); code != 0 {
				t.Fatalf("upgrade of %s: exit %d\n%s\n%s", n.IP(), code, out, errOut)
			}
		}
		for _, n := range []*vm.VM{data, app, web} {
			st := vmStatus(t, n)
			if st.Version != testbed.NextVersion || !st.Healthy {
				t.Errorf("%s node after the upgrade: %s healthy %v %+v", st.Role, st.Version, st.Healthy, st.Services)
			}
			for _, p := range st.Peers {
				if p.Skew || p.Version != testbed.NextVersion {
					t.Errorf("%s node sees %+v", st.Role, p)
				}
			}
		}
		if !strings.Contains(b.columns(t), testbed.NextColumn) {
			t.Errorf("the migration did not reach the data node: %s", b.columns(t))
		}
		b.routesReachEveryService(t, web.IP())
	})

	step(t, "status on the web node shows the app node down", func(t *testing.T) {
		app.MustExec(t, "systemctl", "stop", "carto-appliance")
		defer app.MustExec(t, "systemctl", "start", "carto-appliance")
		if out := web.MustExec(t, "carto-appliance", "status"); !strings.Contains(out, "Peer app ("+app.IP()+"): UNREACHABLE") || !strings.Contains(out, "Peer data ("+data.IP()+"): CARTO "+testbed.NextVersion) {
			t.Errorf("status:\n%s", out)
		}
	})
}

// tierBed is a tier layout's test hosts: a VM per role on one network with
// the registry mirror, the test channel and the customer package (its
// licence for the layout), and a host outside the layout.
type tierBed struct {
	t       *testing.T
	vms     map[string]*vm.VM
	outside *vm.VM
	regHost string
	channel *testbed.ChannelServer
}

func newTierBed(t *testing.T, layout string, nodes int, roles ...string) *tierBed {
	t.Helper()
	netw, regHost, regCA := vmNetwork(t, layout)
	srv, err := testbed.ServeChannel(netw.Gateway, channelDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	b := &tierBed{t: t, vms: map[string]*vm.VM{}, regHost: regHost, channel: srv}
	for _, r := range roles {
		n := vm.New(t, docker, vm.Options{Name: r, Network: netw.Name})
		agentJournalOnFailure(t, n)
		trustRegistry(t, n, regHost, regCA)
		write(t, n, "/usr/local/share/ca-certificates/channel-ca.crt", srv.CAPEM, 0o644)
		n.MustExec(t, "update-ca-certificates")
		stagePackage(t, n)
		lic, err := testbed.TestLicense(baseCustomerEnv("carto.vm.test")["SELFHOSTED_TENANT_ID"], func(l *license.License) {
			l.Layouts, l.Nodes = []string{"standard", layout}, nodes
		})
		if err != nil {
			t.Fatal(err)
		}
		write(t, n, "/root/package/license.json", lic, 0o600)
		b.vms[r] = n
	}
	b.outside = vm.New(t, docker, vm.Options{Name: "outside", Network: netw.Name})
	return b
}

// install runs carto-appliance install on node with the customer package.
func (b *tierBed) install(t *testing.T, node *vm.VM, args ...string) (string, string, int) {
	t.Helper()
	args = append([]string{"carto-appliance", "install", "--yes", "--customer-env", "/root/package/customer.env",
		"--key", "/root/package/key.json", "--registry", b.regHost}, args...)
	out, errOut, code, err := node.Exec(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out, errOut, code
}

// upgrade runs carto-appliance upgrade to testbed.NextVersion on node.
func (b *tierBed) upgrade(t *testing.T, node *vm.VM, args ...string) (string, string, int) {
	t.Helper()
	out, errOut, code, err := node.Exec(context.Background(), append([]string{"carto-appliance", "upgrade", "--yes", "--to", testbed.NextVersion}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out, errOut, code
}

// followChannel points every node's upgrade check at the test channel.
func (b *tierBed) followChannel(t *testing.T) {
	t.Helper()
	for _, n := range b.vms {
		n.MustExec(t, "sh", "-c", fmt.Sprintf("printf 'upgrade:\\n  channel_url: %s\\n' >> /opt/carto/appliance.yaml", b.channel.URL))
	}
}

// columns are the data node's carto_migrations columns.
func (b *tierBed) columns(t *testing.T) string {
	return vmPsqlDB(t, b.vms["data"], "workspace", "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'carto_migrations'")
}

// notInstalled fails unless a refused install left node as it was.
func (b *tierBed) notInstalled(t *testing.T, node *vm.VM) {
	t.Helper()
	if _, _, code, _ := node.Exec(context.Background(), "test", "-e", "/opt/carto/appliance.yaml"); code == 0 {
		t.Error("a refused install wrote appliance.yaml")
	}
	if out := node.MustExec(t, "docker", "ps", "-aq"); strings.TrimSpace(out) != "" {
		t.Errorf("a refused install started containers: %s", out)
	}
}

// connects says whether from reaches addr:port (a TCP handshake).
func (b *tierBed) connects(from *vm.VM, addr string, port int) bool {
	_, _, code, _ := from.Exec(context.Background(), "timeout", "3", "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", addr, port))
	return code == 0
}

// joinToken copies the data node's join token to /root/join-token of
// each node.
func (b *tierBed) joinToken(t *testing.T, to ...*vm.VM) {
	t.Helper()
	token := b.vms["data"].MustExec(t, "cat", "/var/lib/carto-appliance/"+installer.JoinTokenFileName)
	for _, n := range to {
		write(t, n, "/root/join-token", []byte(token), 0o600)
	}
}

// routesReachEveryService checks that a request through the router at
// addr, from outside the layout, reaches each CARTO service behind it.
func (b *tierBed) routesReachEveryService(t *testing.T, addr string) {
	t.Helper()
	routes := map[string]string{
		"/": "workspace-www", "/acc/x": "accounts-www", "/workspace-api/x": "workspace-api", "/api/v3/maps/x": "maps-api",
		"/api/x": "maps-api", "/imports/x": "import-api", "/lds/x": "lds-api", "/notifier/x": "notifier",
	}
	for path, image := range routes {
		body := b.outside.MustExec(t, "curl", "-ksf", "--max-time", "10", "https://"+addr+path)
		var echo struct{ Image string }
		if err := json.Unmarshal([]byte(body), &echo); err != nil || echo.Image != image {
			t.Errorf("%s through the router at %s: %q, want %s's answer", path, addr, body, image)
		}
	}
}

// rowsOnDataNode checks that the app node's workspace-api reads the
// migrations the app node ran from the data node's database, and pings
// its Valkey, and that the row is in the data node's database.
func (b *tierBed) rowsOnDataNode(t *testing.T, version string) {
	t.Helper()
	app, data := b.vms["app"], b.vms["data"]
	api := "$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' carto-workspace-api-1)"
	if got := app.MustExec(t, "sh", "-c", "curl -sf http://"+api+":3000/db"); !strings.Contains(got, `"version": "`+version+`"`) {
		t.Errorf("workspace-api's /db: %s", got)
	}
	if got := app.MustExec(t, "sh", "-c", "curl -sf http://"+api+":3000/redis"); !strings.Contains(got, "PONG") {
		t.Errorf("workspace-api's /redis: %s", got)
	}
	if got := vmPsqlDB(t, data, "workspace", "SELECT count(*) FROM carto_migrations WHERE version = '"+version+"'"); got != "1" {
		t.Errorf("the data node's carto_migrations has %s rows for %s, want the app node's migration's 1", got, version)
	}
}
