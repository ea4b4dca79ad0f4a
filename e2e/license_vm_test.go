//go:build integration

package e2e

import (
	"context"
	"crypto/tls"
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
// runs, over https: checked online through the proxy while valid; an
// unsigned answer, or a signed one replayed for another check, counts as
// no answer (grace, logged as untrusted); the server down starts the grace
// period, with its end date; revoked makes it expired and
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
		// The licence server's certificate is from a test CA: the VM
		// trusts it as it would a public CA.
		write(t, node, "/usr/local/share/ca-certificates/licence-ca.crt", srv.caPEM, 0o644)
		node.MustExec(t, "update-ca-certificates")
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

	step(t, "an unsigned or replayed answer is no answer: grace runs, logged as untrusted; the stack runs on", func(t *testing.T) {
		before, code := check(t)
		if code != 0 || before.State != license.Valid || before.LastChecked == nil {
			t.Fatalf("license check: exit %d %+v", code, before)
		}
		for _, tc := range []struct{ mode, want string }{
			{"unsigned", "not signed"},
			{"replay", "nonce is not the one sent"},
		} {
			srv.setMode(tc.mode)
			st, code := check(t)
			if code != 0 || st.State != license.Grace || !strings.Contains(st.Reason, "untrusted licence server answer") || !strings.Contains(st.Reason, tc.want) {
				t.Errorf("license check with a server answering %s: exit %d %+v, want grace and %q", tc.mode, code, st, tc.want)
			}
			if st.LastChecked == nil || !st.LastChecked.Equal(*before.LastChecked) || st.GraceEndsAt == nil || !st.GraceEndsAt.Equal(before.LastChecked.Add(license.DefaultGrace)) {
				t.Errorf("%s: last checked %v, grace ends %v: want both from the last signed answer (%s)", tc.mode, st.LastChecked, st.GraceEndsAt, before.LastChecked)
			}
		}
		if n := srv.requestNonces(); len(n) < 2 || n[len(n)-1] == n[len(n)-2] || n[len(n)-1] == "" {
			t.Errorf("the checks' nonces %v: want a fresh one each time", n)
		}
		// The agent checks at start: it logs the replayed answer as
		// untrusted and the state as grace, never as valid.
		node.MustExec(t, "systemctl", "restart", "carto-appliance")
		eventually(t, 60*time.Second, func() error {
			j := node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager")
			for _, line := range strings.Split(j, "\n") {
				if strings.Contains(line, "event=license-checked state=grace") && strings.Contains(line, "untrusted licence server answer") && strings.Contains(line, "nonce") {
					return nil
				}
			}
			return errors.New("the agent has not logged the replayed answer as untrusted")
		})
		sameContainers(t, stack, vmContainers(t, node))
		srv.setMode("")
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
		agentRan(t, node, "install")
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
		agentRan(t, node, `license-update file="/root/package/tampered.json"`, `license-update file="/root/package/license-2.json"`, "license-check")
		sameContainers(t, stack, vmContainers(t, node))
		if full := vmStatus(t, node); !full.Healthy || full.License.State != license.Valid {
			t.Errorf("status: healthy %v, licence %+v", full.Healthy, full.License)
		}
	})
}

// licenseServer is a small licence server over https (its CA is caPEM):
// POST license.Request → an answer signed with the tests' server key over
// the request's nonce (testbed.TestAnswer); down, it is not listening at
// all. Its mode makes it misbehave: "unsigned" answers as servers did
// before answers were signed, "replay" sends back the last signed answer
// (another check's nonce).
type licenseServer struct {
	url, addr string
	caPEM     []byte
	tls       *tls.Config
	mu        sync.Mutex
	srv       *http.Server
	revoked   map[string]bool
	mode      string
	last      []byte   // the last signed answer
	from      []string // remote IPs of the requests
	nonces    []string
}

func startLicenseServer(t *testing.T, host string) *licenseServer {
	ca, err := proxytest.NewCA("licence server CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.TLSCertificate(host)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := &licenseServer{addr: ln.Addr().String(), caPEM: ca.PEM, revoked: map[string]bool{},
		tls: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	s.url = "https://" + s.addr + "/v1/check"
	s.serve(ln)
	t.Cleanup(func() { s.setDown(true) })
	return s
}

func (s *licenseServer) serve(ln net.Listener) {
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req license.Request
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "POST a licence check", http.StatusBadRequest)
			return
		}
		ip, _, _ := net.SplitHostPort(r.RemoteAddr)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.from = append(s.from, ip)
		s.nonces = append(s.nonces, req.Nonce)
		status := "valid"
		if s.revoked[req.ID] {
			status = "revoked"
		}
		switch s.mode {
		case "unsigned":
			json.NewEncoder(w).Encode(map[string]string{"status": status})
		case "replay":
			w.Write(s.last)
		default:
			b, err := testbed.TestAnswer(req, status)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			s.last = b
			w.Write(b)
		}
	}), ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(tls.NewListener(ln, s.tls))
}

func (s *licenseServer) setMode(mode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = mode
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

func (s *licenseServer) requestNonces() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.nonces...)
}
