//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/e2e/vm"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
)

// Upgrades in a fresh VM, against the test bed's channel served over
// https: the release the binary carries and testbed.NextRelease (new
// images reporting their version, a new service, a new .env key with a
// default, a schema migration), signed with the tests' release key.
func TestUpgradeInFreshVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	netw, regHost, regCA := vmNetwork(t, "upgvm")
	srv, err := testbed.ServeChannel(netw.Gateway, channelDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})
	agentJournalOnFailure(t, node)

	check := func(t *testing.T, args ...string) (installer.UpgradeCheck, string, int) {
		t.Helper()
		out, errOut, code, err := node.Exec(ctx, append([]string{"carto-appliance", "upgrade", "--check", "--json"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		var chk installer.UpgradeCheck
		if code == 0 {
			if err := json.Unmarshal([]byte(out), &chk); err != nil {
				t.Fatalf("upgrade --check --json: %v\n%s", err, out)
			}
		}
		return chk, errOut, code
	}
	var stack map[string]string

	step(t, "install, following the test channel", func(t *testing.T) {
		trustRegistry(t, node, regHost, regCA)
		// The channel's certificate is from a test CA: the VM trusts it
		// as it would a public CA.
		write(t, node, "/usr/local/share/ca-certificates/channel-ca.crt", srv.CAPEM, 0o644)
		node.MustExec(t, "update-ca-certificates")
		stagePackage(t, node)
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "install", "--yes",
			"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--registry", regHost)
		if err != nil || code != 0 {
			t.Fatalf("install: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		node.MustExec(t, "sh", "-c", fmt.Sprintf("printf 'upgrade:\\n  channel_url: %s\\n' >> /opt/carto/appliance.yaml", srv.URL))
		stack = vmContainers(t, node)
	})

	step(t, "upgrade --check shows the next version and what it changes, and changes nothing", func(t *testing.T) {
		before := node.MustExec(t, "sh", "-c", "cd /opt/carto && sha256sum appliance.yaml customer.env .env && cd /var/lib/carto-appliance && find . -type f | sort | xargs sha256sum")
		chk, errOut, code := check(t)
		if code != 0 {
			t.Fatalf("upgrade --check: exit %d\n%s", code, errOut)
		}
		if chk.Installed != version || chk.Latest != testbed.NextVersion || chk.Channel != testbed.ChannelName ||
			!slices.Equal(chk.Path, []string{testbed.NextVersion}) || chk.ChannelURL != srv.URL {
			t.Errorf("check: %+v", chk)
		}
		if !chk.License.Allowed || (chk.License.State != license.Valid && chk.License.State != license.Grace) {
			t.Errorf("licence: %+v", chk.License)
		}
		if c := chk.Changes; c == nil || !slices.Equal(c.ImagesAdded, []string{testbed.NextImage}) ||
			!slices.Equal(c.ServicesAdded, []string{testbed.NextService}) || !slices.Equal(c.EnvAdded, []string{testbed.NextEnvKey}) ||
			len(c.ImagesRemoved)+len(c.ServicesRemoved)+len(c.EnvRemoved) != 0 {
			t.Errorf("changes: %+v", chk.Changes)
		}
		text := node.MustExec(t, "carto-appliance", "upgrade", "--check")
		for _, want := range []string{"Installed:  CARTO " + version, "Upgrade to " + testbed.NextVersion, "new services: " + testbed.NextService, "new .env keys: " + testbed.NextEnvKey} {
			if !strings.Contains(text, want) {
				t.Errorf("upgrade --check lacks %q:\n%s", want, text)
			}
		}
		if after := node.MustExec(t, "sh", "-c", "cd /opt/carto && sha256sum appliance.yaml customer.env .env && cd /var/lib/carto-appliance && find . -type f | sort | xargs sha256sum"); after != before {
			t.Errorf("upgrade --check changed files:\n%s\n---\n%s", before, after)
		}
		sameContainers(t, stack, vmContainers(t, node))
	})

	step(t, "a tampered release, a version not in the channel and an unreachable channel are refused, naming what and where", func(t *testing.T) {
		srv.Tampered.Store(true)
		_, errOut, code := check(t)
		srv.Tampered.Store(false)
		if code == 0 || !strings.Contains(errOut, testbed.NextVersion) || !strings.Contains(errOut, srv.URL) {
			t.Errorf("a tampered manifest: exit %d\n%s", code, errOut)
		}
		_, errOut, code = check(t, "--to", "2030.1.0")
		if code == 0 || !strings.Contains(errOut, "2030.1.0") || !strings.Contains(errOut, testbed.NextVersion) {
			t.Errorf("--to a version not in the channel: exit %d\n%s", code, errOut)
		}
		node.MustExec(t, "sed", "-i", "s|channel_url: .*|channel_url: https://"+netw.Gateway.String()+":9/|", "/opt/carto/appliance.yaml")
		_, errOut, code = check(t)
		node.MustExec(t, "sed", "-i", "s|channel_url: .*|channel_url: "+srv.URL+"|", "/opt/carto/appliance.yaml")
		if code == 0 || !strings.Contains(errOut, netw.Gateway.String()+":9") {
			t.Errorf("an unreachable channel: exit %d\n%s", code, errOut)
		}
		sameContainers(t, stack, vmContainers(t, node))
	})
}
