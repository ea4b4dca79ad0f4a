//go:build integration

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The router's certificate without a person (SPEC §7): by default the
// appliance's own CA issues it and install says where the CA is, so that
// real clients (curl, openssl) verify the router with it and refuse a
// wrong host name; a customer's certificate is checked before anything
// changes and, once imported, reaches the router by a reload: no container
// is recreated; with TLS offloaded to a load balancer the router serves
// plain HTTP and nothing listens on the HTTPS port.
func TestTLSCertificates(t *testing.T) {
	t.Parallel()
	n := newNode(t, "e2e-tls")
	n.writeCustomerEnv(baseCustomerEnv(n.domain))
	caPath := filepath.Join(n.configDir, "certs", "carto-ca.crt")
	resolve := func(host string) string { return fmt.Sprintf("%s:%d:127.0.0.1", host, n.httpsPort) }
	url := func(host string) string { return fmt.Sprintf("https://%s:%d/workspace-api/whoami", host, n.httpsPort) }
	curl := func(ca, host string) (string, error) {
		out, err := exec.Command("curl", "-sS", "--max-time", "10", "--cacert", ca, "--resolve", resolve(host), url(host)).CombinedOutput()
		return string(out), err
	}
	sClient := func(ca, host string) (string, error) {
		out, err := exec.Command("openssl", "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", n.httpsPort), "-servername", host,
			"-CAfile", ca, "-verify_hostname", host, "-verify_return_error", "-brief").CombinedOutput()
		return string(out), err
	}

	step(t, "install issues a certificate from the appliance's CA and says where the CA is", func(t *testing.T) {
		out, _ := n.mustRun(n.installArgs()...)
		if !strings.Contains(out, "TLS: self-signed certificate for "+n.domain) || !strings.Contains(out, "clients trust the CA in "+caPath) {
			t.Errorf("install did not say where the CA is:\n%s", out)
		}
		st := n.status()
		if c := st.Certificate; c == nil || c.Mode != "self-signed" || c.CA != caPath || c.DaysLeft < 390 || c.Warning != "" {
			t.Errorf("status certificate: %+v", c)
		}
		if fi, err := os.Stat(filepath.Join(n.stateDir, "tls", "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("the CA key: %v %v", fi, err)
		}
	})

	step(t, "curl and openssl verify the router with the CA, and refuse a wrong host name", func(t *testing.T) {
		if out, err := curl(caPath, n.domain); err != nil || !strings.Contains(out, `"workspace-api"`) {
			t.Errorf("curl --cacert: %v\n%s", err, out)
		}
		if out, err := sClient(caPath, n.domain); err != nil || !strings.Contains(out, "Verification: OK") {
			t.Errorf("openssl s_client: %v\n%s", err, out)
		}
		if out, err := curl(caPath, "wrong.example.com"); err == nil || !strings.Contains(out, "wrong.example.com") {
			t.Errorf("curl for a wrong host name succeeded or said something else: %v\n%s", err, out)
		}
		if out, err := sClient(caPath, "wrong.example.com"); err == nil || !strings.Contains(out, "hostname mismatch") {
			t.Errorf("openssl for a wrong host name: %v\n%s", err, out)
		}
	})

	step(t, "a second install keeps the certificate", func(t *testing.T) {
		before, _ := os.ReadFile(filepath.Join(n.configDir, "certs", "carto.crt"))
		n.mustRun(n.installArgs()...)
		if after, _ := os.ReadFile(filepath.Join(n.configDir, "certs", "carto.crt")); string(after) != string(before) {
			t.Error("the certificate was issued again")
		}
	})

	step(t, "certs renew issues a new certificate that the router serves after a reload", func(t *testing.T) {
		before, err := servedCertificate(n.httpsPort, n.domain)
		if err != nil {
			t.Fatal(err)
		}
		containers := n.containers()
		n.mustRun("certs", "renew")
		eventually(t, 10*time.Second, func() error {
			after, err := servedCertificate(n.httpsPort, n.domain)
			if err == nil && after == before {
				err = fmt.Errorf("the router still serves the old certificate")
			}
			return err
		})
		if changed := changedServices(containers, n.containers()); len(changed) > 0 {
			t.Errorf("containers recreated: %v", changed)
		}
		if out, err := curl(caPath, n.domain); err != nil {
			t.Errorf("curl --cacert after the renewal: %v\n%s", err, out)
		}
		out, _ := n.mustRun("certs", "status", "--json")
		if !strings.Contains(out, `"mode": "self-signed"`) || !strings.Contains(out, `"days_left": 39`) {
			t.Errorf("certs status --json:\n%s", out)
		}
	})

	step(t, "the CA may only sign for the domain: real openssl refuses a certificate for another name signed with its key", func(t *testing.T) {
		st := n.status()
		if ca := st.Certificate.CAInfo; ca == nil || len(ca.Names) != 1 || ca.Names[0] != n.domain || ca.NotAfter.After(time.Now().AddDate(3, 0, 1)) || ca.Rotated != nil || ca.Rotating != nil {
			t.Errorf("status ca_info: %+v", ca)
		}
		out, err := exec.Command("openssl", "x509", "-in", caPath, "-noout", "-text").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "X509v3 Name Constraints: critical") || !strings.Contains(string(out), "DNS:"+n.domain) {
			t.Errorf("the CA's name constraints:\n%s", out)
		}
		caKey := filepath.Join(n.stateDir, "tls", "ca.key")
		if got, err := opensslSign(t, caPath, caKey, n.domain); err != nil {
			t.Errorf("openssl verify of a certificate for the domain: %v\n%s", err, got)
		}
		for _, other := range []string{"bank.example.net", "example.com"} {
			if got, err := opensslSign(t, caPath, caKey, other); err == nil || !strings.Contains(got, "permitted subtree violation") {
				t.Errorf("openssl verify of a certificate for %s signed with the CA's key: %v\n%s", other, err, got)
			}
		}
	})

	// An install made before name constraints, as an upgraded binary
	// finds it.
	legacyCert, legacyKey := legacyCA(t, n.domain)
	tlsDir := filepath.Join(n.stateDir, "tls")
	oldOnly := filepath.Join(t.TempDir(), "old-ca.crt")
	overlap := filepath.Join(t.TempDir(), "both.crt")
	var containers map[string]string
	step(t, "the agent starts replacing an old unconstrained CA by itself: the new CA is published beside the old one", func(t *testing.T) {
		os.WriteFile(filepath.Join(tlsDir, "ca.crt"), legacyCert, 0o644)
		os.WriteFile(filepath.Join(tlsDir, "ca.key"), legacyKey, 0o600)
		os.WriteFile(caPath, legacyCert, 0o600)
		os.WriteFile(oldOnly, legacyCert, 0o644)
		containers = n.containers()
		// The agent looks at the certificate when it starts, then hourly;
		// it is stopped when this step ends.
		logs, _ := n.startAgent(t)
		// Its first converge finds the CA and says so in the journal.
		eventually(t, 90*time.Second, func() error {
			if !strings.Contains(logs.String(), `event=apply-warning err="the appliance's CA must be replaced (it has no name constraints`) {
				return fmt.Errorf("the agent has not replaced the CA:\n%s", logs.String())
			}
			return nil
		})
		eventually(t, 10*time.Second, func() error {
			if out, err := curl(oldOnly, n.domain); err != nil {
				return fmt.Errorf("a client trusting the old CA only: %v: %s", err, out)
			}
			return nil
		})
		bundle, _ := os.ReadFile(caPath)
		if c := strings.Count(string(bundle), "BEGIN CERTIFICATE"); c != 2 || !strings.HasPrefix(string(bundle), string(legacyCert)) {
			t.Errorf("the published CA file holds %d certificates, want the old CA then the new one", c)
		}
		os.WriteFile(overlap, bundle, 0o644)
		if out, err := curl(overlap, n.domain); err != nil {
			t.Errorf("a client given the new CA file during the overlap: %v\n%s", err, out)
		}
		st := n.status()
		if ca := st.Certificate.CAInfo; ca == nil || ca.Rotating == nil || !strings.Contains(ca.Reason, "no name constraints") || ca.Rotating.SwitchAt.Before(time.Now().AddDate(0, 0, 59)) {
			t.Errorf("status during the rotation: %+v", ca)
		}
	})

	step(t, "when the overlap ends the router switches to the new CA by a reload, and the old key is gone", func(t *testing.T) {
		before, _ := servedCertificate(n.httpsPort, n.domain)
		// The overlap's end moved to now; config apply is what the
		// agent's next hourly look runs.
		rotation := filepath.Join(tlsDir, "rotation.json")
		b, _ := os.ReadFile(rotation)
		var r map[string]any
		json.Unmarshal(b, &r)
		r["switch_at"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
		b, _ = json.Marshal(r)
		os.WriteFile(rotation, b, 0o600)
		if _, out := n.mustRun("config", "apply"); !strings.Contains(out, "the router now serves a certificate from the new CA") {
			t.Errorf("config apply did not say the router switched:\n%s", out)
		}
		eventually(t, 10*time.Second, func() error {
			if after, err := servedCertificate(n.httpsPort, n.domain); err != nil || after == before {
				return fmt.Errorf("the router still serves the old CA's certificate (%v)", err)
			}
			return nil
		})
		if out, err := curl(overlap, n.domain); err != nil {
			t.Errorf("a client given the CA file during the overlap, after the switch: %v\n%s", err, out)
		}
		// nginx's old workers finish their connections after the reload
		// and, for a moment, may still take a new one: a client may meet
		// the old certificate once more right after the first new one.
		eventually(t, 10*time.Second, func() error {
			if out, err := sClient(caPath, n.domain); err != nil {
				return fmt.Errorf("openssl with the CA file after the switch: %v\n%s", err, out)
			}
			if out, err := curl(oldOnly, n.domain); err == nil {
				return fmt.Errorf("a client trusting only the old CA still verifies the router after the switch:\n%s", out)
			}
			return nil
		})
		if bundle, _ := os.ReadFile(caPath); strings.Count(string(bundle), "BEGIN CERTIFICATE") != 1 || strings.Contains(string(bundle), string(legacyCert)) {
			t.Errorf("the published CA file after the switch:\n%s", bundle)
		}
		if key, _ := os.ReadFile(filepath.Join(tlsDir, "ca.key")); string(key) == string(legacyKey) {
			t.Error("the old CA's key is still the CA's key")
		}
		for _, gone := range []string{"ca.key.prev", "next-ca.key"} {
			if _, err := os.Stat(filepath.Join(tlsDir, gone)); err == nil {
				t.Errorf("%s is left after the switch", gone)
			}
		}
		if ca := n.status().Certificate.CAInfo; ca == nil || ca.Rotated == nil || ca.Rotating != nil || len(ca.Names) != 1 {
			t.Errorf("status after the rotation: %+v", ca)
		}
		if changed := changedServices(containers, n.containers()); len(changed) > 0 {
			t.Errorf("containers recreated: %v", changed)
		}
	})

	_, certFile, keyFile := n.writeServerCert()
	step(t, "a certificate for another domain or with another key is refused and nothing changes", func(t *testing.T) {
		other := newNode(t, "e2e-tls-other")
		_, otherCert, otherKey := other.writeServerCert()
		before, containers := n.snapshot(), n.containers()
		for _, tc := range []struct{ cert, key, want string }{
			{otherCert, otherKey, "covers e2e-tls-other.carto.test, not e2e-tls.carto.test"},
			{certFile, otherKey, "the key does not belong to the certificate"},
			{keyFile, keyFile, `has a "PRIVATE KEY" block where certificates are expected`},
		} {
			_, errOut, code := n.run(n.installArgs("--tls-cert", tc.cert, "--tls-key", tc.key)...)
			if code != 1 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, want 1 with %q:\n%s", code, tc.want, errOut)
			}
		}
		_, errOut, code := n.run("certs", "import", "--cert", certFile, "--key", otherKey)
		if code != 1 || !strings.Contains(errOut, "the key does not belong to the certificate") {
			t.Errorf("certs import with another key: exit %d:\n%s", code, errOut)
		}
		sameSnapshot(t, before, n.snapshot())
		if changed := changedServices(containers, n.containers()); len(changed) > 0 {
			t.Errorf("containers changed: %v", changed)
		}
	})

	step(t, "an imported certificate reaches the router by a reload, no container recreated", func(t *testing.T) {
		containers := n.containers()
		n.mustRun(n.installArgs("--tls-cert", certFile, "--tls-key", keyFile)...)
		if changed := changedServices(containers, n.containers()); len(changed) > 0 {
			t.Errorf("containers recreated: %v", changed)
		}
		want, _ := os.ReadFile(certFile)
		eventually(t, 10*time.Second, func() error {
			served, err := servedCertificate(n.httpsPort, n.domain)
			if err != nil {
				return err
			}
			if !strings.Contains(string(want), served) {
				return fmt.Errorf("the router still serves another certificate")
			}
			return nil
		})
		if c := n.status().Certificate; c == nil || c.Mode != "custom" || c.Issuer != "carto e2e CA" || c.CA != "" {
			t.Errorf("status certificate: %+v", c)
		}
		if _, errOut, code := n.run("certs", "renew"); code != 1 || !strings.Contains(errOut, "its issuer renews it") {
			t.Errorf("certs renew of a custom certificate: exit %d:\n%s", code, errOut)
		}
	})

	step(t, "each service sees only the secrets it uses, and no previous version of one", func(t *testing.T) {
		// The certificate was replaced twice above: certs/ keeps .prev
		// copies, which no container may see. The import services parse
		// uploads and call Pub/Sub: key.json, never the router's key.
		gcp := []string{"workspace-api", "workspace-subscriber", "maps-api", "sql-worker", "import-api", "import-worker", "lds-api", "cdn-invalidator-sub", "router-metrics"}
		for service := range n.containers() {
			if service == "workspace-migrations" {
				continue // exited; the unit test checks its mounts
			}
			want := ""
			switch {
			case service == "router-http":
				want = "carto.crt carto.key"
			case slices.Contains(gcp, service):
				want = "key.json"
			}
			if got := secretsSeen(t, n, service); got != want {
				t.Errorf("%s sees %q, want %q", service, got, want)
			}
		}
		if prev, _ := filepath.Glob(filepath.Join(n.configDir, "certs", "*.prev")); len(prev) == 0 {
			t.Error("certs/ keeps no previous version: the check above proves nothing about them")
		}
	})

	step(t, "certs offload: the router serves plain HTTP and nothing listens on the HTTPS port", func(t *testing.T) {
		n.mustRun("certs", "offload")
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/workspace-api/whoami", n.httpPort), nil)
		req.Host = n.domain
		client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"workspace-api"`) {
			t.Errorf("plain HTTP through the router: %s %s", resp.Status, body)
		}
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.httpsPort), 2*time.Second); err == nil {
			conn.Close()
			t.Errorf("something listens on the HTTPS port %d", n.httpsPort)
		}
		if c := n.status().Certificate; c == nil || c.Mode != "offload" || !strings.Contains(c.Note, "TLS ends at the load balancer") {
			t.Errorf("status certificate: %+v", c)
		}
		// Re-installing keeps the mode, and preflight does not ask for the
		// HTTPS port.
		containers := n.containers()
		n.mustRun(n.installArgs()...)
		if changed := changedServices(containers, n.containers()); len(changed) > 0 {
			t.Errorf("containers recreated: %v", changed)
		}
	})

	step(t, "certs self-signed goes back to the appliance's CA", func(t *testing.T) {
		n.mustRun("certs", "self-signed")
		eventually(t, 10*time.Second, func() error {
			out, err := curl(caPath, n.domain)
			if err != nil {
				return fmt.Errorf("curl --cacert: %v: %s", err, out)
			}
			return nil
		})
	})
}

// servedCertificate is the base64 body of the leaf certificate the router
// presents for host, as it appears in a PEM file.
func servedCertificate(port int, host string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{ServerName: host, InsecureSkipVerify: true}}
	conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))
	lines := strings.Split(strings.TrimSpace(pemText), "\n")
	return strings.Join(lines[1:len(lines)-1], "\n"), nil
}

// opensslSign signs a certificate for name with the CA's key, as anyone
// holding it could, and has openssl verify it against the CA file.
func opensslSign(t *testing.T, caFile, caKey, name string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	key, csr, crt, ext := filepath.Join(dir, "k.pem"), filepath.Join(dir, "r.csr"), filepath.Join(dir, "c.pem"), filepath.Join(dir, "ext.cnf")
	os.WriteFile(ext, []byte("subjectAltName=DNS:"+name+"\nextendedKeyUsage=serverAuth\n"), 0o600)
	for _, args := range [][]string{
		{"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-subj", "/CN=" + name, "-out", csr},
		{"x509", "-req", "-in", csr, "-CA", caFile, "-CAkey", caKey, "-set_serial", "7", "-days", "30", "-extfile", ext, "-out", crt},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	out, err := exec.Command("openssl", "verify", "-CAfile", caFile, "-purpose", "sslserver", crt).CombinedOutput()
	return string(out), err
}

// legacyCA is a CA as the appliance made them before name constraints:
// ten years, any name.
func legacyCA(t *testing.T, domain string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "CARTO self-hosted CA for " + domain, Organization: []string{"carto-appliance"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// secretsSeen lists, sorted and space-separated, the names of the
// appliance's secret and TLS files found anywhere in a service's
// container (key.json, the router's certificate and key, the CA's key,
// any .prev), as the container sees its file system.
func secretsSeen(t *testing.T, n *node, service string) string {
	t.Helper()
	find := []string{"/bin/busybox", "find", "/"}
	if service == "router-http" || service == "workspace-postgres" || service == "valkey" {
		find = []string{"find", "/"} // Debian images
	}
	args := append([]string{"exec", n.container(service)}, find...)
	args = append(args, "(", "-path", "/proc", "-o", "-path", "/sys", ")", "-prune", "-o",
		"(", "-name", "key.json", "-o", "-name", "carto.crt", "-o", "-name", "carto.key", "-o", "-name", "ca.key", "-o", "-name", "*.prev", ")", "-print")
	// find exits 1 on an unreadable path; what it printed counts.
	out, err := exec.Command("docker", args...).Output()
	if ee := (*exec.ExitError)(nil); err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		t.Fatalf("docker %s: %v %s", strings.Join(args, " "), err, stderrOf(err))
	}
	seen := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		seen[filepath.Base(p)] = true
	}
	names := slices.Sorted(maps.Keys(seen))
	return strings.Join(names, " ")
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}
