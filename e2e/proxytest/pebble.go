package proxytest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Pebble is Let's Encrypt's ACME test server (Debian package pebble) with
// pebble-challtestsrv as its DNS: every name resolves to one address, the
// machine under test, where Pebble validates the HTTP-01 challenges.
type Pebble struct {
	// Directory is the ACME directory URL.
	Directory string
	// CA signed the directory's TLS certificate: what the appliance is
	// given to trust (an internal ACME CA's root).
	CA *CA

	dir   string
	mgmt  string
	procs []*Proxy
}

// PebbleOptions configures StartPebble.
type PebbleOptions struct {
	// ListenAddr is where Pebble and its DNS listen (free ports).
	ListenAddr string
	// ResolveTo is the address every name resolves to; Pebble validates
	// HTTP-01 on its HTTPPort.
	ResolveTo string
	HTTPPort  int
	// Validity of the certificates; 0 is Pebble's default (5 years).
	Validity time.Duration
}

// StartPebble runs Pebble and its DNS, with their configuration and output
// in dir. It runs until Stop or until ctx ends.
func StartPebble(ctx context.Context, dir string, opts PebbleOptions) (pb *Pebble, err error) {
	listenAddr := opts.ListenAddr
	pebbleBin, err := binary("pebble")
	if err != nil {
		return nil, err
	}
	dnsBin, err := binary("pebble-challtestsrv")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	pb = &Pebble{dir: dir}
	defer func() {
		if err != nil {
			pb.Stop()
		}
	}()
	if pb.CA, err = NewCA("pebble directory CA"); err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := pb.CA.Issue(listenAddr)
	if err != nil {
		return nil, err
	}
	certFile, keyFile := filepath.Join(dir, "directory.crt"), filepath.Join(dir, "directory.key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}

	// The DNS: A queries get resolveTo; no AAAA (the VM has no IPv6), and
	// none of its own challenge servers.
	dns := &Proxy{Kind: "pebble-challtestsrv", Dir: dir}
	var dnsAddr string
	err = startOnFreePort(listenAddr, func(port int) error {
		dnsPort, err := freePort(listenAddr)
		if err != nil {
			return err
		}
		dnsAddr = net.JoinHostPort(listenAddr, strconv.Itoa(dnsPort))
		dns.Addr = net.JoinHostPort(listenAddr, strconv.Itoa(port))
		return launch(ctx, dns, filepath.Join(dir, "challtestsrv.out"), dnsBin,
			"-defaultIPv4", opts.ResolveTo, "-defaultIPv6", "", "-dns01", dnsAddr,
			"-http01", "", "-https01", "", "-tlsalpn01", "", "-management", dns.Addr)
	})
	if err != nil {
		return nil, fmt.Errorf("starting pebble-challtestsrv on %s: %w", listenAddr, err)
	}
	pb.procs = append(pb.procs, dns)

	// Deterministic where Pebble is random on purpose: no validation
	// delays, no rejected nonces, and no reuse of a valid authorization
	// (each order is validated again, so a renewal exercises the
	// challenge answer too).
	p := &Proxy{Kind: "pebble", Dir: dir, env: []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"}}
	err = startOnFreePort(listenAddr, func(port int) error {
		mgmtPort, err := freePort(listenAddr)
		if err != nil {
			return err
		}
		p.Addr = net.JoinHostPort(listenAddr, strconv.Itoa(port))
		pb.mgmt = net.JoinHostPort(listenAddr, strconv.Itoa(mgmtPort))
		settings := map[string]any{
			"listenAddress": p.Addr, "managementListenAddress": pb.mgmt,
			"certificate": certFile, "privateKey": keyFile,
			"httpPort": opts.HTTPPort, "tlsPort": 443,
			"ocspResponderURL": "", "externalAccountBindingRequired": false,
		}
		if opts.Validity > 0 {
			settings["certificateValidityPeriod"] = int(opts.Validity.Seconds())
		}
		conf, _ := json.Marshal(map[string]any{"pebble": settings})
		confFile := filepath.Join(dir, "pebble.json")
		if err := os.WriteFile(confFile, conf, 0o644); err != nil {
			return err
		}
		return launch(ctx, p, filepath.Join(dir, "pebble.out"), pebbleBin, "-config", confFile, "-dnsserver", dnsAddr)
	})
	if err != nil {
		return nil, fmt.Errorf("starting pebble on %s: %w", listenAddr, err)
	}
	pb.procs = append(pb.procs, p)
	pb.Directory = "https://" + p.Addr + "/dir"
	return pb, nil
}

// Roots is the root certificate Pebble issues under (it makes a new one at
// each start), PEM: what clients of the issued certificates trust.
func (pb *Pebble) Roots(ctx context.Context) ([]byte, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{RootCAs: pb.CA.Pool()},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+pb.mgmt+"/roots/0", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking pebble for its root: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("asking pebble for its root: %s %v", resp.Status, err)
	}
	return b, nil
}

// Output is the end of Pebble's log (orders, validations and their
// errors).
func (pb *Pebble) Output() string {
	b, _ := os.ReadFile(filepath.Join(pb.dir, "pebble.out"))
	return tail(string(b), 40)
}

// Stop stops Pebble and its DNS.
func (pb *Pebble) Stop() {
	for _, p := range pb.procs {
		p.Stop()
	}
}
