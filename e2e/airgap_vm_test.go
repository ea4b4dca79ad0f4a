//go:build integration

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/e2e/vm"
	"github.com/cartodb/carto-appliance/license"
)

// An operator with no internet at all installs CARTO from a bundle carried
// in by hand and later upgrades it from a second one: in a fresh VM whose
// every outbound route is rejected, a tampered bundle is refused with
// nothing changed, the install from the bundle ends healthy, and the
// upgrade from the next one keeps the rows and runs the migration.
func TestAirGapInFreshVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	first := filepath.Join(dir, "carto-"+version+".bundle")
	next := filepath.Join(dir, "carto-"+testbed.NextVersion+".bundle.gz")
	if err := reg.Bundle(ctx, channelDir, version, first, false, ""); err != nil {
		t.Fatal(err)
	}
	// The next release needs carto-appliance NextApplianceVersion: its
	// bundle carries it.
	if err := reg.Bundle(ctx, channelDir, testbed.NextVersion, next, true, binNext); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.EnsureImage(ctx, docker); err != nil {
		t.Fatal(err)
	}
	netw := vm.NewNetwork(t, docker, "airgap")
	node := vm.New(t, docker, vm.Options{Name: "carto", Network: netw.Name})
	agentJournalOnFailure(t, node)
	rejected := func(t *testing.T) string {
		return node.MustExec(t, "sh", "-c", "iptables -L OUTPUT -v -n -x | awk '$3 == \"REJECT\" {print $1}'; iptables -L FORWARD -v -n -x | awk '$3 == \"REJECT\" {print $1}'")
	}
	rows := func(t *testing.T) string {
		return vmPsqlDB(t, node, "workspace", "SELECT string_agg(v, ',' ORDER BY v) FROM e2e_keep")
	}

	step(t, "every outbound route of the VM is rejected", func(t *testing.T) {
		// The VM's own traffic and its containers' (forwarded), whatever
		// the destination; only loopback and the bridge inside stay.
		node.MustExec(t, "iptables", "-I", "OUTPUT", "1", "-o", "eth0", "-j", "REJECT")
		node.MustExec(t, "iptables", "-I", "FORWARD", "1", "-o", "eth0", "-j", "REJECT")
		if _, _, code, _ := node.Exec(ctx, "curl", "-sS", "-m", "5", "-o", "/dev/null", "http://"+netw.Gateway.String()+":9/"); code == 0 {
			t.Fatal("the VM still reaches its gateway")
		}
		if n := strings.Fields(rejected(t)); len(n) != 2 || n[0] == "0" {
			t.Fatalf("the OUTPUT REJECT did not stop the attempt: %v", n)
		}
		stagePackage(t, node)
		// A release build of carto-appliance, older than the next
		// release needs.
		replaceBinary(t, node, binOld)
		lic, err := testbed.TestLicense(baseCustomerEnv("carto.vm.test")["SELFHOSTED_TENANT_ID"], func(l *license.License) { l.AirGap = true })
		if err != nil {
			t.Fatal(err)
		}
		write(t, node, "/root/package/license.json", lic, 0o600)
	})

	install := func(t *testing.T, bundle string) (string, string, int) {
		t.Helper()
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "install", "--yes",
			"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--bundle", bundle)
		if err != nil {
			t.Fatal(err)
		}
		return out, errOut, code
	}

	step(t, "a tampered bundle is refused, naming the file and the image, and nothing changes", func(t *testing.T) {
		tampered := filepath.Join(t.TempDir(), "tampered.bundle")
		b, err := os.ReadFile(first)
		if err != nil {
			t.Fatal(err)
		}
		// A byte in the middle: inside an image file.
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(tampered, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := node.CopyFile(ctx, tampered, "/root/tampered.bundle", 0o644); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := install(t, "/root/tampered.bundle")
		if code == 0 || !strings.Contains(errOut, "/root/tampered.bundle") || !strings.Contains(errOut, "digest") || !strings.Contains(errOut, "--bundle") {
			t.Errorf("a tampered bundle: exit %d\n%s", code, errOut)
		}
		if out, _, code, _ := node.Exec(ctx, "test", "-e", "/opt/carto/appliance.yaml"); code == 0 {
			t.Errorf("the refused install wrote appliance.yaml %s", out)
		}
		if imgs := node.MustExec(t, "docker", "images", "-q"); strings.TrimSpace(imgs) != "" {
			t.Errorf("the refused install left images:\n%s", imgs)
		}
		node.MustExec(t, "rm", "/root/tampered.bundle")
	})

	step(t, "install from the bundle: images loaded, nothing pulled, healthy", func(t *testing.T) {
		if err := node.CopyFile(ctx, first, "/root/carto.bundle", 0o644); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := install(t, "/root/carto.bundle")
		if code != 0 {
			t.Fatalf("install --bundle: exit %d\n%s\n%s", code, out, errOut)
		}
		if strings.Contains(errOut, "Pulling") || !strings.Contains(errOut, "Loaded") {
			t.Errorf("install --bundle pulled, or loaded nothing:\n%s", errOut)
		}
		st := vmStatus(t, node)
		if !st.Healthy || st.Release == nil || st.Release.Installed != version {
			t.Fatalf("after install --bundle: %+v %+v", st.Release, st.Services)
		}
		// Loaded once: the engine has every image now.
		if out := node.MustExec(t, "carto-appliance", "bundle", "verify", "/root/carto.bundle"); !strings.Contains(out, "a whole, signed bundle of CARTO "+version) {
			t.Errorf("bundle verify:\n%s", out)
		}
		if out := node.MustExec(t, "carto-appliance", "bundle", "load", "/root/carto.bundle"); !strings.Contains(out, ": 0 loaded,") {
			t.Errorf("bundle load of a loaded bundle:\n%s", out)
		}
		vmPsqlDB(t, node, "workspace", "CREATE TABLE e2e_keep (v text); INSERT INTO e2e_keep VALUES ('a'), ('b');")
		t.Logf("outbound packets rejected so far (OUTPUT, FORWARD): %s", strings.Join(strings.Fields(rejected(t)), ", "))
	})

	step(t, "upgrade from the next bundle (gzip): carto-appliance updated from the bundle first, then CARTO; rows kept, the migration ran, nothing reached outside", func(t *testing.T) {
		if err := node.CopyFile(ctx, next, "/root/next.bundle.gz", 0o644); err != nil {
			t.Fatal(err)
		}
		// --check first: what the upgrade from it would do, nothing loaded.
		chk := node.MustExec(t, "carto-appliance", "upgrade", "--check", "--bundle", "/root/next.bundle.gz")
		for _, want := range []string{"Bundle:     /root/next.bundle.gz (CARTO " + testbed.NextVersion, "Upgrade to " + testbed.NextVersion + " goes through: " + testbed.NextVersion,
			"the upgrade updates carto-appliance to " + testbed.NextApplianceVersion + " from the bundle first", "new services: " + testbed.NextService} {
			if !strings.Contains(chk, want) {
				t.Errorf("upgrade --check --bundle lacks %q:\n%s", want, chk)
			}
		}
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "upgrade", "--yes", "--bundle", "/root/next.bundle.gz")
		if err != nil || code != 0 {
			t.Fatalf("upgrade --bundle: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		for _, want := range []string{"Updated carto-appliance " + testbed.OldApplianceVersion + " to " + testbed.NextApplianceVersion, "Upgraded CARTO " + version + " to " + testbed.NextVersion} {
			if !strings.Contains(out, want) {
				t.Errorf("upgrade --bundle lacks %q:\n%s", want, out)
			}
		}
		if got := node.MustExec(t, "carto-appliance", "version"); !strings.HasPrefix(got, "carto-appliance "+testbed.NextApplianceVersion+"\n") {
			t.Errorf("the binary after the upgrade: %q", got)
		}
		st := vmStatus(t, node)
		if !st.Healthy || st.Release == nil || st.Release.Installed != testbed.NextVersion {
			t.Errorf("after upgrade --bundle: %+v %+v", st.Release, st.Services)
		}
		if got := rows(t); got != "a,b" {
			t.Errorf("rows after the upgrade: %q", got)
		}
		cols := vmPsqlDB(t, node, "workspace", "SELECT string_agg(column_name, ',') FROM information_schema.columns WHERE table_name = 'carto_migrations'")
		if !strings.Contains(cols, testbed.NextColumn) {
			t.Errorf("the migration's column %s is missing: %s", testbed.NextColumn, cols)
		}
		t.Logf("outbound packets rejected (OUTPUT, FORWARD): %s", strings.Join(strings.Fields(rejected(t)), ", "))
		// The REJECTs were there all along (nothing the install did took
		// them out).
		for _, chain := range []string{"OUTPUT", "FORWARD"} {
			if _, _, code, _ := node.Exec(ctx, "iptables", "-C", chain, "-o", "eth0", "-j", "REJECT"); code != 0 {
				t.Errorf("the %s REJECT is gone:\n%s", chain, node.MustExec(t, "iptables", "-S", chain))
			}
		}
	})
}
