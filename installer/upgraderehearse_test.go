//go:build licensetest

package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/peer"
	"github.com/cartodb/carto-appliance/stack"
)

// The rehearsal's stack is the database and the migrations, under its own
// name, with no published port, volumes and networks of its own (never
// the live ones), the config dir's files mounted.
func TestRehearsalProject(t *testing.T) {
	paths, _ := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""))
	live, err := stack.Load(t.Context(), paths.ConfigDir, "carto-rehearsal")
	if err != nil {
		t.Fatal(err)
	}
	p, err := rehearsalProject(live, paths.ConfigDir, "/opt/carto-live")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.ServiceNames(); !slices.Equal(got, []string{"workspace-migrations", databaseService}) {
		t.Errorf("services: %v", got)
	}
	for name, s := range p.Services {
		if len(s.Ports) > 0 {
			t.Errorf("%s publishes %v", name, s.Ports)
		}
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind && !strings.HasPrefix(v.Source, "/opt/carto-live/") {
				t.Errorf("%s mounts %s", name, v.Source)
			}
		}
	}
	for k, v := range p.Volumes {
		if v.Name != "carto-rehearsal_"+k || v.External {
			t.Errorf("volume %s: %+v", k, v)
		}
	}
	if _, err := rehearsalProject(&types.Project{Name: "x", Services: types.Services{"a": {Name: "a"}}}, "/", "/"); err == nil {
		t.Error("a stack without the database was rehearsed")
	}
}

// A rehearsal dumps the live database, runs the database alone on the
// copy, restores the dump there, runs the migrations and reports the
// columns they changed, then removes the copy; the live stack is not
// touched. A failing migration is reported, and the copy removed too.
func TestRehearseUpgrade(t *testing.T) {
	paths, f := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""))
	migrated := false
	f.ExecFunc = func(project string, cmd []string) (fakeExec, bool) {
		if !strings.Contains(strings.Join(cmd, " "), "information_schema.columns") {
			return fakeExec{}, false
		}
		if project != "carto-rehearsal" {
			t.Errorf("the schema was read in %s", project)
		}
		if migrated {
			return fakeExec{Out: "carto_migrations.id\ncarto_migrations.new_column\n"}, true
		}
		return fakeExec{Out: "carto_migrations.id\ncarto_migrations.old_column\n"}, true
	}
	f.Log, f.Applies = nil, nil
	f.ApplyErrs = []error{nil, nil}
	// The second apply (the migrations) flips the schema.
	f.OnApply = func(p *types.Project, o stack.ApplyOptions) {
		if p.Name != "carto-rehearsal" {
			t.Errorf("applied the live project %s", p.Name)
		}
		if len(o.Held) == 0 {
			migrated = true
		}
	}
	before := withoutPrev(dirSnapshot(t, paths.ConfigDir))
	r, err := RehearseUpgrade(t.Context(), RehearseOptions{Options: Options{Paths: paths}})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || r.From != "2025.11.3" || len(r.Steps) != 1 || r.Steps[0].To != "2026.1.0" || !slices.Equal(r.Steps[0].Added, []string{"carto_migrations.new_column"}) || !slices.Equal(r.Steps[0].Removed, []string{"carto_migrations.old_column"}) || r.DumpBytes == 0 {
		t.Errorf("rehearsal: %+v", r)
	}
	calls := strings.Join(f.calls(""), "\n")
	for _, want := range []string{"exec workspace-postgres pg_dump -U", "exec workspace-postgres pg_dumpall -U postgres --globals-only", "exec workspace-postgres psql -U postgres -d postgres -q\n", "exec workspace-postgres pg_restore -U postgres -d postgres --create", "down carto-rehearsal"} {
		if !strings.Contains(calls, want) {
			t.Errorf("no %q in:\n%s", want, calls)
		}
	}
	if len(f.Applies) != 2 || !slices.Contains(f.Applies[0].Held, "workspace-migrations") || len(f.Applies[1].Held) != 0 {
		t.Errorf("applies: %+v", f.Applies)
	}
	if !sameFiles(before, withoutPrev(dirSnapshot(t, paths.ConfigDir))) {
		t.Error("the config dir changed")
	}
	if st, _ := loadState(paths.StateDir); st.Release.Version != "2025.11.3" {
		t.Errorf("pinned: %s", st.Release.Version)
	}
	if matches, _ := filepath.Glob(filepath.Join(paths.StateDir, "rehearsal-*")); len(matches) > 0 {
		t.Errorf("left behind: %v", matches)
	}

	// The migrations fail: reported, the copy removed.
	f.Log = nil
	f.ApplyErrs = []error{nil, &stack.ServiceError{Service: "workspace-migrations", Reason: "exited 1", Logs: []string{"ERROR: column no_such_column does not exist"}}}
	r, err = RehearseUpgrade(t.Context(), RehearseOptions{Options: Options{Paths: paths}})
	if err != nil || r.OK || len(r.Steps) != 1 || !strings.Contains(r.Steps[0].Error, "no_such_column") {
		t.Errorf("a failing migration: %+v %v", r, err)
	}
	if !slices.Contains(f.calls(""), "down carto-rehearsal") {
		t.Error("the copy was not removed")
	}

	// An engine failure is an error; the copy is removed all the same.
	f.Log = nil
	f.ApplyErrs = []error{errors.New("engine gone")}
	if _, err := RehearseUpgrade(t.Context(), RehearseOptions{Options: Options{Paths: paths}}); err == nil || !strings.Contains(err.Error(), "engine gone") {
		t.Errorf("engine failure: %v", err)
	}
	if !slices.Contains(f.calls(""), "down carto-rehearsal") {
		t.Error("the copy was not removed after an engine failure")
	}

	// Another rehearsal under way (the web node's, asked of the data
	// node): refused at once, its work dir and copy left alone.
	unlock, ok, err := tryLockFile(paths, rehearsalLockName, "the rehearsal lock")
	if err != nil || !ok {
		t.Fatalf("taking the rehearsal lock: %v %v", ok, err)
	}
	defer unlock()
	running := filepath.Join(paths.StateDir, rehearsalDirPrefix+"running")
	if err := os.Mkdir(running, 0o700); err != nil {
		t.Fatal(err)
	}
	f.Log = nil
	if _, err := RehearseUpgrade(t.Context(), RehearseOptions{Options: Options{Paths: paths}}); err == nil || !strings.Contains(err.Error(), "another upgrade rehearsal runs on this node") {
		t.Errorf("a second rehearsal at once: %v", err)
	}
	if _, err := os.Stat(running); err != nil {
		t.Errorf("the running rehearsal's work dir: %v", err)
	}
	if calls := f.calls(""); slices.ContainsFunc(calls, func(c string) bool { return strings.Contains(c, "rehearsal") }) {
		t.Errorf("the second rehearsal touched the copy: %q", calls)
	}
}

// On a tier layout the data node rehearses with each release rendered
// whole (its own rendering has no migrations: a rehearsal of that would
// prove nothing); an app node has the data node rehearse its path, over
// the peer API, and shows the findings as the data node's.
func TestRehearseOnATierLayout(t *testing.T) {
	paths, f := upgradeNode(t, channelRelease(t, "2026.1.0", "2025.11.3", "", ""))
	join, err := peer.NewJoin(config.LayoutTier1, map[string]string{config.RoleData: "10.0.0.3", config.RoleApp: "10.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.WriteTokenFile(JoinTokenPath(paths), join); err != nil {
		t.Fatal(err)
	}
	be := func(role string, port int) {
		cfg, err := loadInstalledConfig(paths)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Layout, cfg.Role, cfg.Nodes, cfg.Peer.Port = config.LayoutTier1, role, join.Nodes, port
		if err := config.Save(paths.File(config.ConfigFileName), cfg); err != nil {
			t.Fatal(err)
		}
	}

	// The data node, asked by the app node on 2025.11.3.
	be(config.RoleData, 0)
	var rehearsed []string
	f.OnApply = func(p *types.Project, o stack.ApplyOptions) {
		if len(o.Held) == 0 {
			rehearsed = p.ServiceNames()
		}
	}
	found, err := RehearseForPeer(t.Context(), paths, peer.RehearseRequest{From: "2025.11.3", To: "2026.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	var r Rehearsal
	if err := json.Unmarshal(found, &r); err != nil || !r.OK || r.From != "2025.11.3" || len(r.Steps) != 1 || r.Steps[0].To != "2026.1.0" {
		t.Errorf("the data node's rehearsal: %s %v", found, err)
	}
	if !slices.Contains(rehearsed, "workspace-migrations") {
		t.Errorf("the data node's copy ran %v: no migrations", rehearsed)
	}
	if _, err := RehearseForPeer(t.Context(), paths, peer.RehearseRequest{From: "2025.11.3", To: "latest; rm -rf /"}); err == nil {
		t.Error("a request naming no version was rehearsed")
	}

	// The app node: the data node answers on the peer API.
	var asked []peer.RehearseRequest
	srv := httptest.NewServer(peer.Serve(join.Secret, peer.Ops{Rehearse: func(_ context.Context, r peer.RehearseRequest) (json.RawMessage, error) {
		asked = append(asked, r)
		return found, nil
	}}))
	defer srv.Close()
	// 10.0.0.3:9710 is this test's server.
	prev := peerOpsHTTP
	t.Cleanup(func() { peerOpsHTTP = prev })
	peerOpsHTTP = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != "10.0.0.3:9710" {
			return nil, fmt.Errorf("dialled %s, not the data node", addr)
		}
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}}}
	be(config.RoleApp, 0)
	f.Log = nil
	got, err := RehearseUpgrade(t.Context(), RehearseOptions{Options: Options{Paths: paths}})
	if err != nil {
		t.Fatal(err)
	}
	if !got.OK || got.DataNode != "10.0.0.3" || len(got.Steps) != 1 || len(asked) != 1 || asked[0] != (peer.RehearseRequest{From: "2025.11.3", To: "2026.1.0"}) {
		t.Errorf("the app node's rehearsal: %+v; the data node was asked %+v", got, asked)
	}
	if calls := f.calls(""); slices.ContainsFunc(calls, func(c string) bool { return strings.HasPrefix(c, "exec ") || strings.HasPrefix(c, "apply ") }) {
		t.Errorf("the app node ran things itself: %q", calls)
	}
}
