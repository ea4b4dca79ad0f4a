//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/e2e/proxytest"
	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/e2e/vm"
	"github.com/cartodb/carto-appliance/license"
)

// The licence in a fresh VM behind a proxy, with a licence server the test
// runs: checked online through the proxy while valid; the server down
// starts the grace period, with its end date; revoked makes it expired and
// installs are refused (exit 4); `license update` restores it. The stack
// runs unchanged (same containers) through all of it.
func TestLicenseInFreshVM(t *testing.T) {
	t.Parallel()
	if err := proxytest.Available(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	netw, regHost, regCA := vmNetwork(t, "licvm")
	px, err := proxytest.StartTinyproxy(ctx, t.TempDir(), netw.Gateway.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Stop)
	srv := startLicenseServer(t, netw.Gateway.String())
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})
	agentJournalOnFailure(t, node)

	check := func(t *testing.T) (license.Status, int) {
		t.Helper()
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "license", "check", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var st license.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("license check --json: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		return st, code
	}
	var stack map[string]string

	step(t, "install through the proxy; the licence is checked online through it", func(t *testing.T) {
		trustRegistry(t, node, regHost, regCA)
		stagePackage(t, node)
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "install", "--yes",
			"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--registry", regHost,
			"--proxy-url", px.URL(), "--license-server", srv.url)
		if err != nil || code != 0 {
			t.Fatalf("install: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		if !strings.Contains(out, "Licence: ") {
			t.Errorf("install did not show the licence:\n%s", out)
		}
		st, code := check(t)
		if code != 0 || st.State != license.Valid || st.LastChecked == nil || st.Customer == "" || st.ExpiresAt == nil {
			t.Fatalf("license check: exit %d %+v", code, st)
		}
		// The server saw the requests come from the proxy on the host, none
		// from the VM, and the proxy's log has them.
		reqs := srv.requests()
		if len(reqs) == 0 || slices.Contains(reqs, node.IP()) {
			t.Errorf("licence server requests came from %v; the VM (%s) must go through the proxy", reqs, node.IP())
		}
		log, _ := px.AccessLog()
		if !strings.Contains(log, srv.addr) {
			t.Errorf("the proxy's log has no request to the licence server %s:\n%s", srv.addr, tail(log, 10))
		}
		// The agent checks at start too.
		eventually(t, 30*time.Second, func() error {
			if j := node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager"); !strings.Contains(j, "event=license-checked state=valid") {
				return errors.New("the agent has not logged a licence check")
			}
			return nil
		})
		stack = vmContainers(t, node)
	})

	step(t, "the licence server down: grace, with the date it ends; the stack runs on", func(t *testing.T) {
		srv.setDown(true)
		st, code := check(t)
		if code != 0 || st.State != license.Grace || st.GraceEndsAt == nil || st.LastChecked == nil {
			t.Fatalf("license check with the server down: exit %d %+v", code, st)
		}
		if want := st.LastChecked.Add(license.DefaultGrace); !st.GraceEndsAt.Equal(want) {
			t.Errorf("grace ends %s, want 14 days after the last answer (%s)", st.GraceEndsAt, want)
		}
		full := vmStatus(t, node)
		if full.License == nil || full.License.State != license.Grace || !full.Healthy {
			t.Errorf("status: healthy %v, licence %+v", full.Healthy, full.License)
		}
		if out := node.MustExec(t, "carto-appliance", "status"); !strings.Contains(out, "grace ends "+st.GraceEndsAt.Format(time.DateOnly)) {
			t.Errorf("status does not show the grace's end:\n%s", out)
		}
		sameContainers(t, stack, vmContainers(t, node))
	})

	step(t, "revoked: expired, installs refused with exit 4, the stack untouched", func(t *testing.T) {
		if err := srv.setDown(false); err != nil {
			t.Fatal(err)
		}
		srv.revoke("lic-onp-e2e")
		st, code := check(t)
		if code != 4 || st.State != license.Expired || !strings.Contains(st.Reason, "revoked") {
			t.Fatalf("license check of a revoked licence: exit %d %+v", code, st)
		}
		out := node.MustExec(t, "carto-appliance", "status")
		if !strings.Contains(out, "LICENCE EXPIRED") || !strings.Contains(out, "The stack keeps running") {
			t.Errorf("status is not loud about the expired licence:\n%s", out)
		}
		if full := vmStatus(t, node); !full.Healthy {
			t.Errorf("the stack is not healthy with an expired licence")
		}
		_, errOut, code, _ := node.Exec(ctx, "carto-appliance", "install", "--yes")
		if code != 4 || !strings.Contains(errOut, "revoked") {
			t.Errorf("install with a revoked licence: exit %d\n%s", code, errOut)
		}
		sameContainers(t, stack, vmContainers(t, node))
	})

	step(t, "license update refuses a tampered licence and installs a good one; no container touched", func(t *testing.T) {
		good, err := testbed.TestLicense("onp-e2e", func(l *license.License) { l.ID = "lic-onp-e2e-2" })
		if err != nil {
			t.Fatal(err)
		}
		var env map[string]string
		json.Unmarshal(good, &env)
		env["payload"] = strings.Replace(env["payload"], "A", "B", 1)
		tampered, _ := json.Marshal(env)
		write(t, node, "/root/package/tampered.json", tampered, 0o600)
		before := node.MustExec(t, "sha256sum", "/opt/carto/license.json")
		_, errOut, code, _ := node.Exec(ctx, "carto-appliance", "license", "update", "/root/package/tampered.json")
		if code != 4 || !strings.Contains(errOut, "the signature does not match") {
			t.Errorf("update with a tampered licence: exit %d\n%s", code, errOut)
		}
		if after := node.MustExec(t, "sha256sum", "/opt/carto/license.json"); after != before {
			t.Error("a refused licence replaced the installed one")
		}

		write(t, node, "/root/package/license-2.json", good, 0o600)
		node.MustExec(t, "carto-appliance", "license", "update", "/root/package/license-2.json")
		st, code := check(t)
		if code != 0 || st.State != license.Valid || st.ID != "lic-onp-e2e-2" {
			t.Fatalf("after license update: exit %d %+v", code, st)
		}
		sameContainers(t, stack, vmContainers(t, node))
		if full := vmStatus(t, node); !full.Healthy || full.License.State != license.Valid {
			t.Errorf("status: healthy %v, licence %+v", full.Healthy, full.License)
		}
	})
}

// licenseServer is a small licence server: POST {"id","tenant_id"} →
// {"status":"valid"|"revoked"}; down, it is not listening at all.
type licenseServer struct {
	url, addr string
	mu        sync.Mutex
	ln        net.Listener
	srv       *http.Server
	revoked   map[string]bool
	from      []string // remote IPs of the requests
}

func startLicenseServer(t *testing.T, host string) *licenseServer {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := &licenseServer{addr: ln.Addr().String(), revoked: map[string]bool{}}
	s.url = "http://" + s.addr + "/v1/check"
	s.serve(ln)
	t.Cleanup(func() { s.setDown(true) })
	return s
}

func (s *licenseServer) serve(ln net.Listener) {
	s.ln = ln
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ ID, TenantID string }
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "POST a licence id", http.StatusBadRequest)
			return
		}
		ip, _, _ := net.SplitHostPort(r.RemoteAddr)
		s.mu.Lock()
		s.from = append(s.from, ip)
		status := "valid"
		if s.revoked[req.ID] {
			status = "revoked"
		}
		s.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]string{"status": status})
	}), ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
}

func (s *licenseServer) setDown(down bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if down && s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
	if !down && s.srv == nil {
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("licence server: listening again on %s: %w", s.addr, err)
		}
		s.serve(ln)
	}
	return nil
}

func (s *licenseServer) revoke(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked[id] = true
}

func (s *licenseServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.from...)
}
