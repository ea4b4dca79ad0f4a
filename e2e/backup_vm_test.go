//go:build integration

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/e2e/vm"
)

// backup on one fresh VM and restore on another (SPEC §12): the same
// release, settings, certificate served, licence and database rows; a
// corrupted backup and a wrong passphrase refused with nothing changed;
// the agent's scheduled backups, kept to backup.keep.
func TestBackupRestoreInFreshVMs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	netw, regHost, regCA := vmNetwork(t, "backup")
	a := vm.New(t, docker, vm.Options{Name: "carto-a", Network: netw.Name})
	b := vm.New(t, docker, vm.Options{Name: "carto-b", Network: netw.Name})
	agentJournalOnFailure(t, a)
	agentJournalOnFailure(t, b)
	for _, n := range []*vm.VM{a, b} {
		trustRegistry(t, n, regHost, regCA)
		stagePackage(t, n)
		write(t, n, "/root/pass", []byte("correct horse battery staple\n"), 0o600)
	}
	out, errOut, code, err := a.Exec(ctx, "carto-appliance", "install", "--yes",
		"--customer-env", "/root/package/customer.env", "--key", "/root/package/key.json", "--registry", regHost)
	if err != nil || code != 0 {
		t.Fatalf("install on A: exit %d %v\n%s\n%s", code, err, out, errOut)
	}
	vmPsqlDB(t, a, "workspace", "CREATE TABLE e2e_keep (v text); INSERT INTO e2e_keep VALUES ('a'), ('b')")
	rows := func(n *vm.VM) string {
		return vmPsqlDB(t, n, "workspace", "SELECT string_agg(v, ',' ORDER BY v) FROM e2e_keep")
	}
	// fingerprint is the certificate the router serves.
	fingerprint := func(n *vm.VM) string {
		return strings.TrimSpace(n.MustExec(t, "sh", "-c", "openssl s_client -connect 127.0.0.1:443 -servername carto.vm.test </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"))
	}
	untouched := func(t *testing.T) {
		t.Helper()
		if _, _, code, _ := b.Exec(ctx, "test", "-e", "/opt/carto/appliance.yaml"); code == 0 {
			t.Error("a refused restore wrote appliance.yaml")
		}
		if out := b.MustExec(t, "docker", "ps", "-aq"); strings.TrimSpace(out) != "" {
			t.Errorf("a refused restore started containers: %s", out)
		}
	}

	step(t, "backup on A, encrypted, while the stack serves", func(t *testing.T) {
		out := a.MustExec(t, "carto-appliance", "backup", "-o", "/root/a.cbk", "--passphrase-file", "/root/pass")
		if !strings.Contains(out, "database included; encrypted") {
			t.Errorf("backup said:\n%s", out)
		}
		raw, err := base64.StdEncoding.DecodeString(a.MustExec(t, "base64", "-w0", "/root/a.cbk"))
		if err != nil {
			t.Fatal(err)
		}
		write(t, b, "/root/a.cbk", raw, 0o600)
		corrupt := slices.Clone(raw)
		corrupt[len(corrupt)/2] ^= 0x40
		write(t, b, "/root/corrupt.cbk", corrupt, 0o600)
		write(t, b, "/root/wrong", []byte("not the passphrase\n"), 0o600)
		for _, secret := range []string{"adm1n$ecret #x y", "ws-pass-2", "BEGIN PRIVATE KEY"} {
			if strings.Contains(string(raw), secret) {
				t.Errorf("the encrypted backup holds %q in clear", secret)
			}
		}
	})

	step(t, "a backup with the database stopped says to start the stack, and writes nothing", func(t *testing.T) {
		a.MustExec(t, "carto-appliance", "stop", "workspace-postgres")
		out, errOut, code, err := a.Exec(ctx, "carto-appliance", "backup", "-o", "/root/stopped.cbk")
		a.MustExec(t, "carto-appliance", "start")
		if err != nil || code == 0 || !strings.Contains(errOut, "start the stack (carto-appliance start)") {
			t.Errorf("backup with the database stopped: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		if _, _, code, _ := a.Exec(ctx, "test", "-e", "/root/stopped.cbk"); code == 0 {
			t.Error("a failed backup left its file")
		}
		eventually(t, 2*time.Minute, func() error {
			if st := vmStatus(t, a); !st.Healthy {
				return fmt.Errorf("A not healthy again after start")
			}
			return nil
		})
	})

	step(t, "on B a corrupted backup and a wrong passphrase are refused, nothing changed", func(t *testing.T) {
		for _, c := range []struct{ file, pass, want string }{
			{"/root/corrupt.cbk", "/root/pass", "corrupt"},
			{"/root/a.cbk", "/root/wrong", "passphrase"},
		} {
			_, errOut, code, _ := b.Exec(ctx, "carto-appliance", "restore", c.file, "--passphrase-file", c.pass)
			if code == 0 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "nothing was changed") {
				t.Errorf("restore %s with %s: exit %d\n%s", c.file, c.pass, code, errOut)
			}
			untouched(t)
		}
	})

	step(t, "a restore failing once begun (B does not trust the registry) is undone", func(t *testing.T) {
		ca := "/etc/docker/certs.d/" + regHost + "/ca.crt"
		b.MustExec(t, "mv", ca, "/root/registry-ca.crt")
		_, errOut, code, _ := b.Exec(ctx, "carto-appliance", "restore", "/root/a.cbk", "--passphrase-file", "/root/pass")
		b.MustExec(t, "mv", "/root/registry-ca.crt", ca)
		if code == 0 || !strings.Contains(errOut, "the restore was undone") {
			t.Errorf("restore without the registry's CA: exit %d\n%s", code, errOut)
		}
		untouched(t)
		if out := b.MustExec(t, "sh", "-c", "docker volume ls -q; ls -A /opt/carto 2>/dev/null; ls -A /var/lib/carto-appliance 2>/dev/null; iptables -S 2>/dev/null | grep -c CARTO- || true"); strings.TrimSpace(out) != "0" {
			t.Errorf("the undone restore left volumes, files or firewall rules:\n%s", out)
		}
	})

	step(t, "restore on B: same release, rows, certificate and status as A", func(t *testing.T) {
		out, errOut, code, err := b.Exec(ctx, "carto-appliance", "restore", "/root/a.cbk", "--passphrase-file", "/root/pass")
		if err != nil || code != 0 {
			t.Fatalf("restore: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		if got := rows(b); got != "a,b" {
			t.Errorf("rows on B: %q", got)
		}
		if fa, fb := fingerprint(a), fingerprint(b); fa != fb || fa == "" {
			t.Errorf("certificates: A %q, B %q", fa, fb)
		}
		sa, sb := vmStatus(t, a), vmStatus(t, b)
		if sa.Version != sb.Version || !sb.Healthy || sa.Domain != sb.Domain || len(sa.Services) != len(sb.Services) ||
			sa.License == nil || sb.License == nil || sa.License.State != sb.License.State || sb.AgentPID == 0 {
			t.Errorf("status differs: A %s %s healthy %v %d services, B %s %s healthy %v %d services agent %d",
				sa.Version, sa.Domain, sa.Healthy, len(sa.Services), sb.Version, sb.Domain, sb.Healthy, len(sb.Services), sb.AgentPID)
		}
		if _, errOut, code, _ := b.Exec(ctx, "carto-appliance", "restore", "/root/a.cbk", "--passphrase-file", "/root/pass"); code == 0 || !strings.Contains(errOut, "this node is installed") {
			t.Errorf("a second restore onto the installed node: exit %d\n%s", code, errOut)
		}
	})

	step(t, "the agent takes scheduled backups and keeps backup.keep of them", func(t *testing.T) {
		b.MustExec(t, "carto-appliance", "config", "set", "backup.every=1m", "backup.keep=1")
		since := time.Now()
		eventually(t, 3*time.Minute, func() error {
			log := b.MustExec(t, "journalctl", "-u", "carto-appliance", "-o", "cat", "--no-pager", "--since", fmt.Sprintf("@%d", since.Unix()))
			if n := strings.Count(log, "event=backup-taken"); n < 2 {
				return fmt.Errorf("%d scheduled backups taken", n)
			}
			return nil
		})
		files := strings.Fields(b.MustExec(t, "sh", "-c", "ls /var/lib/carto-appliance/scheduled-backups/"))
		if len(files) != 1 || !strings.HasSuffix(files[0], ".cbk") {
			t.Errorf("scheduled backups kept: %v", files)
		}
	})
}
