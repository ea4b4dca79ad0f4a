//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/e2e/vm"
)

// support-bundle in a fresh VM (SPEC §12): the bundle of a running install
// holds status, settings, every service's log lines, the agent's journal,
// the engine's and the host's facts, and not one secret of the customer
// package, key.json or the licence, even one a service wrote in its log;
// with the Docker engine stopped, the bundle still holds the host's facts
// and says what it could not collect.
func TestSupportBundleInFreshVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	netw, regHost, regCA := vmNetwork(t, "bundle")
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})
	agentJournalOnFailure(t, node)
	trustRegistry(t, node, regHost, regCA)
	stagePackage(t, node)
	out, errOut, code, err := node.Exec(ctx, "carto-appliance", "install", "--yes",
		"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--registry", regHost)
	if err != nil || code != 0 {
		t.Fatalf("install: exit %d %v\n%s\n%s", code, err, out, errOut)
	}
	// The fixture's secrets: customer.env's passwords, key.json's private
	// key and id, the licence's signed payload and signature.
	secrets := []string{"adm1n$ecret #x y", "ws-pass-2"}
	keyJSON, err := os.ReadFile(reg.KeyJSONPath)
	if err != nil {
		t.Fatal(err)
	}
	var key struct {
		PrivateKey   string `json:"private_key"`
		PrivateKeyID string `json:"private_key_id"`
	}
	if err := json.Unmarshal(keyJSON, &key); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, key.PrivateKeyID)
	for _, line := range strings.Split(key.PrivateKey, "\n") {
		if len(line) > 40 { // the key's base64 lines, not its BEGIN/END
			secrets = append(secrets, line)
		}
	}
	var lic struct{ Payload, Signature string }
	if err := json.Unmarshal([]byte(node.MustExec(t, "cat", "/opt/carto/license.json")), &lic); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, lic.Payload, lic.Signature)
	if len(secrets) < 6 {
		t.Fatalf("too few secrets to look for: %d", len(secrets))
	}
	// A service writes a secret into its log: the stand-in logs the
	// request line with its query.
	node.MustExec(t, "curl", "-ks", "-o", "/dev/null", "--resolve", "carto.vm.test:443:127.0.0.1",
		"https://carto.vm.test/workspace-api/x?password=ws-pass-2")
	unpack := func(t *testing.T, file string) string {
		t.Helper()
		node.MustExec(t, "sh", "-c", "rm -rf /root/unpacked && mkdir /root/unpacked && tar -xzf "+file+" -C /root/unpacked")
		return strings.TrimSpace(node.MustExec(t, "sh", "-c", "ls -d /root/unpacked/*"))
	}

	step(t, "the bundle of a running install tells the whole story and holds no secret", func(t *testing.T) {
		out := node.MustExec(t, "carto-appliance", "support-bundle", "-o", "/root/bundle.tar.gz")
		if !strings.Contains(out, "Support bundle: /root/bundle.tar.gz") {
			t.Errorf("support-bundle said:\n%s", out)
		}
		if mode := strings.TrimSpace(node.MustExec(t, "stat", "-c", "%a", "/root/bundle.tar.gz")); mode != "600" {
			t.Errorf("bundle mode %s", mode)
		}
		dir := unpack(t, "/root/bundle.tar.gz")
		for _, f := range []string{"status.json", "preflight.json", "config/appliance.yaml", "config/customer.env", "config/.env",
			"engine/info.json", "engine/containers.json", "logs/maps-api.log", "logs/workspace-api.log", "agent/journal.txt",
			"host/meminfo", "host/df.txt", "state/state.json", "REDACTIONS", "MANIFEST"} {
			if _, _, code, _ := node.Exec(ctx, "test", "-s", dir+"/"+f); code != 0 {
				t.Errorf("%s is missing or empty", f)
			}
		}
		if j := node.MustExec(t, "cat", dir+"/agent/journal.txt"); !strings.Contains(j, "event=") {
			t.Errorf("agent journal:\n%s", tail(j, 5))
		}
		if l := node.MustExec(t, "cat", dir+"/logs/workspace-api.log"); !strings.Contains(l, "/workspace-api/x?password=********") {
			t.Errorf("the secret's log line is not there, masked:\n%s", tail(l, 10))
		}
		for _, s := range secrets {
			if _, _, code, _ := node.Exec(ctx, "grep", "-rqF", "--", s, dir); code == 0 {
				t.Errorf("the bundle holds a secret of the fixture (%d characters, starting %q)", len(s), s[:3])
			}
		}
		if red := node.MustExec(t, "cat", dir+"/REDACTIONS"); !strings.Contains(red, "WORKSPACE_POSTGRES_PASSWORD") {
			t.Errorf("REDACTIONS:\n%s", red)
		}
	})

	step(t, "with the Docker engine stopped, the bundle still has the host's facts and says what it could not collect", func(t *testing.T) {
		node.MustExec(t, "systemctl", "stop", "docker.socket", "docker")
		defer node.MustExec(t, "systemctl", "start", "docker")
		out := node.MustExec(t, "carto-appliance", "support-bundle", "-o", "/root/broken.tar.gz")
		if !strings.Contains(out, "Not collected: engine/containers.json") {
			t.Errorf("support-bundle said:\n%s", out)
		}
		dir := unpack(t, "/root/broken.tar.gz")
		for _, f := range []string{"host/facts.json", "host/meminfo", "host/df.txt", "config/appliance.yaml", "agent/journal.txt", "MANIFEST"} {
			if _, _, code, _ := node.Exec(ctx, "test", "-s", dir+"/"+f); code != 0 {
				t.Errorf("%s is missing or empty", f)
			}
		}
		if m := node.MustExec(t, "cat", dir+"/MANIFEST"); !strings.Contains(m, "Could not be collected:") || !strings.Contains(m, "engine/containers.json") {
			t.Errorf("MANIFEST:\n%s", m)
		}
	})
}
