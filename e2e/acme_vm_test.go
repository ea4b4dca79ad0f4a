//go:build integration

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/e2e/proxytest"
	"github.com/cartodb/carto-appliance/e2e/vm"
	"github.com/cartodb/carto-appliance/installer"
)

// ACME mode against Pebble (a real ACME CA) in a fresh VM: install obtains
// the certificate (HTTP-01 on the VM's port 80), the agent then answers
// port 80 (challenges, and redirects to https); a forced renewal reaches
// the router by a reload while a load loop through the router sees no
// failed request and no container is touched; switching to self-signed
// gives port 80 back to the router and `certs acme` takes it again.
func TestACMEInFreshVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	netw, regHost, regCA := vmNetwork(t, "acmevm")
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})
	agentJournalOnFailure(t, node)
	const domain = "carto.vm.test"

	pb, err := proxytest.StartPebble(ctx, t.TempDir(), proxytest.PebbleOptions{ListenAddr: netw.Gateway.String(), ResolveTo: node.IP(), HTTPPort: 80})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pb.Stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble:\n%s", pb.Output())
		}
	})
	t.Logf("pebble at %s", pb.Directory)

	// The router as a browser on the host sees it: the domain resolves to
	// the VM, trusting Pebble's root only.
	var roots *x509.CertPool
	served := func() (*x509.Certificate, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", node.IP()+":443", &tls.Config{ServerName: domain, RootCAs: roots})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0], nil
	}
	// servedAfter waits until the router serves another certificate than
	// before, and returns it.
	servedAfter := func(t *testing.T, before *x509.Certificate, within time.Duration) (after *x509.Certificate) {
		t.Helper()
		eventually(t, within, func() error {
			c, err := served()
			if err != nil {
				return err
			}
			if c.SerialNumber.Cmp(before.SerialNumber) == 0 {
				return fmt.Errorf("the router still serves serial %x", before.SerialNumber)
			}
			after = c
			return nil
		})
		return after
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr)
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, net.JoinHostPort(node.IP(), port))
		},
		TLSClientConfig: &tls.Config{RootCAs: nil}, // set below, once Pebble's root is known
	}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	tr := client.Transport.(*http.Transport)

	// port80 is who answers http://domain/ on the VM: the agent's front
	// (a redirect marked with installer.FrontHeader) or the router.
	port80 := func() (byAgent bool, location string, err error) {
		resp, err := client.Get("http://" + domain + "/workspace/?x=1")
		if err != nil {
			return false, "", err
		}
		resp.Body.Close()
		return resp.Header.Get(installer.FrontHeader) != "", resp.Header.Get("Location"), nil
	}

	step(t, "install --tls-acme obtains a certificate from the CA for the domain", func(t *testing.T) {
		trustRegistry(t, node, regHost, regCA)
		stagePackage(t, node)
		write(t, node, "/root/package/acme-ca.crt", pb.CA.PEM, 0o644)
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "install", "--yes",
			"--tls-acme", "--acme-ca", pb.Directory, "--acme-email", "ops@example.com", "--acme-ca-cert", "/root/package/acme-ca.crt",
			"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--registry", regHost)
		if err != nil || code != 0 {
			t.Fatalf("install: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		rootPEM, err := pb.Roots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(rootPEM) {
			t.Fatalf("pebble's root is not PEM:\n%s", rootPEM)
		}
		tr.TLSClientConfig.RootCAs = roots
		cert, err := served()
		if err != nil {
			t.Fatalf("the router's certificate does not verify against Pebble's root for %s: %v", domain, err)
		}
		if !strings.Contains(cert.Issuer.CommonName, "Pebble") {
			t.Errorf("served certificate issued by %q, want Pebble's intermediate", cert.Issuer.CommonName)
		}
		st := vmStatus(t, node)
		if c := st.Certificate; c == nil || c.Mode != config.TLSACME || c.ACMEDirectory != pb.Directory || c.Info == nil || c.DaysLeft < 1 {
			t.Errorf("status certificate: %+v", st.Certificate)
		}
		if !strings.Contains(out, "TLS: acme certificate for "+domain) {
			t.Errorf("install did not show the certificate:\n%s", out)
		}
		// The wrong name does not verify.
		if _, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", node.IP()+":443", &tls.Config{ServerName: "other.vm.test", RootCAs: roots}); err == nil {
			t.Error("the certificate verified for other.vm.test")
		}
	})

	step(t, "the agent answers port 80: a redirect to https, and https serves the app", func(t *testing.T) {
		eventually(t, 30*time.Second, func() error {
			byAgent, loc, err := port80()
			if err != nil || !byAgent {
				return fmt.Errorf("port 80: by the agent %v, %v", byAgent, err)
			}
			if loc != "https://"+domain+"/workspace/?x=1" {
				return fmt.Errorf("redirected to %q", loc)
			}
			return nil
		})
		// Another Host is sent to the domain, not to itself, and the
		// redirect is not one browsers cache.
		foreign, err := client.Get("http://evil.example.net/login")
		if err != nil {
			t.Fatal(err)
		}
		foreign.Body.Close()
		if loc := foreign.Header.Get("Location"); foreign.StatusCode != http.StatusTemporaryRedirect || loc != "https://"+domain+"/login" || foreign.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("Host evil.example.net: %s to %q (Cache-Control %q)", foreign.Status, loc, foreign.Header.Get("Cache-Control"))
		}
		resp, err := client.Get("https://" + domain + "/workspace-api/whoami")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("https: %s", resp.Status)
		}
	})

	step(t, "a forced renewal reaches the router by a reload: no failed request, no container touched", func(t *testing.T) {
		before, err := served()
		if err != nil {
			t.Fatal(err)
		}
		containers, starts := vmContainers(t, node), vmStartTimes(t, node)
		load := startLoad(client, "https://"+domain+"/workspace-api/whoami", 4, 3*time.Minute)
		// The renewal starts once requests go through, and the load goes
		// on until some more have gone through after the router serves the
		// new certificate.
		if err := load.served(10, 30*time.Second); err != nil {
			load.stop()
			t.Fatalf("before the renewal: %v", err)
		}
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "certs", "renew")
		if err != nil || code != 0 {
			load.stop()
			t.Fatalf("certs renew: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		after := servedAfter(t, before, 30*time.Second)
		if err := load.served(10, 30*time.Second); err != nil {
			load.stop()
			t.Fatalf("after the renewal: %v", err)
		}
		ok, failed := load.stop()
		t.Logf("renewed: serial %x -> %x; load loop: %d requests, %d failed", before.SerialNumber, after.SerialNumber, ok+len(failed), len(failed))
		if len(failed) > 0 {
			t.Errorf("%d requests failed during the renewal, e.g. %v", len(failed), failed[0])
		}
		if ok < 20 {
			t.Errorf("only %d requests went through: the load loop did not load", ok)
		}
		sameContainers(t, containers, vmContainers(t, node))
		if now := vmStartTimes(t, node); fmt.Sprint(now) != fmt.Sprint(starts) {
			t.Errorf("containers restarted by the renewal:\nbefore %v\nafter  %v", starts, now)
		}
	})

	step(t, "self-signed gives port 80 back to the router; certs acme takes it again", func(t *testing.T) {
		// Run by the agent, whose front lets go of port 80 as the
		// settings leave acme mode: the router has it when the command
		// returns.
		node.MustExec(t, "carto-appliance", "certs", "self-signed")
		if byAgent, _, err := port80(); err != nil || byAgent {
			t.Errorf("port 80 by the agent %v (%v), want the router", byAgent, err)
		}
		agentRan(t, node, "certs-renew", "certs-self-signed")
		if _, err := served(); err == nil {
			t.Error("a self-signed certificate verified against Pebble's root")
		}
		node.MustExec(t, "carto-appliance", "certs", "acme")
		if _, err := served(); err != nil {
			t.Errorf("after certs acme: %v", err)
		}
		eventually(t, 30*time.Second, func() error {
			if byAgent, _, err := port80(); err != nil || !byAgent {
				return fmt.Errorf("port 80 by the agent %v (%v)", byAgent, err)
			}
			return nil
		})
		agentRan(t, node, "certs-acme")
	})

	step(t, "a refused order changes nothing", func(t *testing.T) {
		pb.Stop() // the CA is gone
		before, err := served()
		if err != nil {
			t.Fatal(err)
		}
		_, errOut, code, _ := node.Exec(ctx, "carto-appliance", "certs", "renew")
		if code == 0 || !strings.Contains(errOut, "obtaining a certificate for "+domain) || !strings.Contains(errOut, "nothing was changed") {
			t.Errorf("renew with the CA gone: exit %d\n%s", code, errOut)
		}
		now, err := served()
		if err != nil || now.SerialNumber.Cmp(before.SerialNumber) != 0 {
			t.Errorf("the served certificate changed: %v", err)
		}
		if byAgent, _, err := port80(); err != nil || !byAgent {
			t.Errorf("port 80 by the agent %v (%v) after a refused renewal", byAgent, err)
		}
	})

	step(t, "the agent renews a certificate that is due by itself (another CA, short-lived certificates)", func(t *testing.T) {
		short, err := proxytest.StartPebble(ctx, t.TempDir(), proxytest.PebbleOptions{
			ListenAddr: netw.Gateway.String(), ResolveTo: node.IP(), HTTPPort: 80, Validity: 45 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer short.Stop()
		write(t, node, "/root/package/acme-ca-2.crt", short.CA.PEM, 0o644)
		node.MustExec(t, "carto-appliance", "certs", "acme", "--ca", short.Directory, "--ca-cert", "/root/package/acme-ca-2.crt")
		rootPEM, err := short.Roots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		roots = x509.NewCertPool()
		roots.AppendCertsFromPEM(rootPEM)
		var first *x509.Certificate
		// The router reloads on HUP: its workers switch within moments.
		eventually(t, 10*time.Second, func() (err error) {
			first, err = served()
			return err
		})
		// Due with a third of its lifetime left; the agent looks when it
		// starts (and hourly).
		due := first.NotAfter.Add(-first.NotAfter.Sub(first.NotBefore) / 3)
		// Due is a time on the clock, not an event: nothing to watch for
		// until it comes.
		time.Sleep(time.Until(due) + time.Second)
		node.MustExec(t, "systemctl", "restart", "carto-appliance")
		servedAfter(t, first, 60*time.Second)
		// The router reloads before the agent's apply returns and logs it.
		eventually(t, 30*time.Second, func() error {
			journal := node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager", "-n", "50")
			if !strings.Contains(journal, "event=certificate-renewed") {
				return fmt.Errorf("the agent did not log the renewal:\n%s", journal)
			}
			return nil
		})
	})
}

// vmStartTimes is each running container of the stack in the VM with its
// start time (a restart keeps the ID, not the start time).
func vmStartTimes(t *testing.T, node *vm.VM) []string {
	t.Helper()
	out := node.MustExec(t, "docker", "ps", "--filter", "label=com.docker.compose.project=carto", "--format", "{{.ID}}")
	ids := strings.Fields(out)
	if len(ids) == 0 {
		t.Fatal("no running containers in the VM")
	}
	args := append([]string{"docker", "inspect", "--format", "{{.Name}} {{.Id}} {{.State.StartedAt}}"}, ids...)
	return strings.Split(strings.TrimSpace(node.MustExec(t, args...)), "\n")
}

// load is a bounded loop of requests from several workers.
type load struct {
	done   chan struct{}
	wg     sync.WaitGroup
	ok     atomic.Int64
	mu     sync.Mutex
	failed []error
}

// startLoad sends GETs to url from workers until stop, or until max has
// passed.
func startLoad(c *http.Client, url string, workers int, max time.Duration) *load {
	l := &load{done: make(chan struct{})}
	deadline := time.Now().Add(max)
	for i := range workers {
		// Half the workers keep connections alive across the reload, half
		// open a new one per request.
		cl := c
		if i%2 == 1 {
			tr := c.Transport.(*http.Transport).Clone()
			tr.DisableKeepAlives = true
			cl = &http.Client{Timeout: c.Timeout, Transport: tr}
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for time.Now().Before(deadline) {
				select {
				case <-l.done:
					return
				default:
				}
				resp, err := cl.Get(url)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s", resp.Status)
					}
				}
				if err != nil {
					l.mu.Lock()
					l.failed = append(l.failed, err)
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
				time.Sleep(20 * time.Millisecond) // the load's pace: it waits for nothing
			}
		}()
	}
	return l
}

// served waits until n more requests than now have gone through, at most
// within.
func (l *load) served(n int64, within time.Duration) error {
	want := l.ok.Load() + n
	return waitFor(within, func() error {
		if got := l.ok.Load(); got < want {
			l.mu.Lock()
			defer l.mu.Unlock()
			return fmt.Errorf("%d of %d requests through, %d failed", got, want, len(l.failed))
		}
		return nil
	})
}

func (l *load) stop() (int, []error) {
	close(l.done)
	l.wg.Wait()
	return int(l.ok.Load()), l.failed
}
