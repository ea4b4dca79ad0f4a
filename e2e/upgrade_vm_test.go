//go:build integration

package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/e2e/testbed"
	"github.com/cartodb/carto-appliance/e2e/vm"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/internal/steps"
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
		// Every file of the config and state dirs but agent.json, the
		// agent's record of what it saw, which each of its passes
		// rewrites (updated_at).
		files := "cd /opt/carto && sha256sum appliance.yaml customer.env .env && cd /var/lib/carto-appliance && find . -type f ! -name agent.json | sort | xargs sha256sum"
		before := node.MustExec(t, "sh", "-c", files)
		chk, errOut, code := check(t)
		if code != 0 {
			t.Fatalf("upgrade --check: exit %d\n%s", code, errOut)
		}
		// The latest requires NextVersion first: a required stop.
		if chk.Installed != version || chk.Latest != testbed.UnhealthyVersion || chk.Channel != testbed.ChannelName ||
			!slices.Equal(chk.Path, []string{testbed.NextVersion, testbed.UnhealthyVersion}) || chk.ChannelURL != srv.URL {
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
		for _, want := range []string{"Installed:  CARTO " + version, "goes through: " + testbed.NextVersion + " -> " + testbed.UnhealthyVersion, "new services: " + testbed.NextService, "new .env keys: " + testbed.NextEnvKey} {
			if !strings.Contains(text, want) {
				t.Errorf("upgrade --check lacks %q:\n%s", want, text)
			}
		}
		if after := node.MustExec(t, "sh", "-c", files); after != before {
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

	// The workspace database's rows, and its schema's columns of
	// carto_migrations, as the upgrades must keep or put back.
	rows := func(t *testing.T) string {
		return vmPsqlDB(t, node, "workspace", "SELECT string_agg(v, ',' ORDER BY v) FROM e2e_keep")
	}
	columns := func(t *testing.T) string {
		return vmPsqlDB(t, node, "workspace", "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'carto_migrations'")
	}
	upgrade := func(t *testing.T, args ...string) (string, string, int) {
		t.Helper()
		out, errOut, code, err := node.Exec(ctx, append([]string{"carto-appliance", "upgrade", "--yes"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out, errOut, code
	}
	// envOf is a variable of a service's running container.
	envOf := func(t *testing.T, service, key string) string {
		env := node.MustExec(t, "docker", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", "carto-"+service+"-1")
		for line := range strings.Lines(env) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
				return v
			}
		}
		return ""
	}
	// serving is the CARTO version a service's running container reports
	// (the stand-ins bake it into their image).
	serving := func(t *testing.T, service string) string { return envOf(t, service, "STANDIN_VERSION") }
	installed := func(t *testing.T) string {
		st := vmStatus(t, node)
		if st.Release == nil {
			t.Fatal("status has no release")
		}
		return st.Release.Installed
	}

	step(t, "upgrade --rehearse runs each release's migrations on a throwaway copy of the database, touching nothing live", func(t *testing.T) {
		before, beforeCols := vmContainers(t, node), columns(t)
		rehearse := func(to string) (installer.Rehearsal, string, int) {
			out, errOut, code, err := node.Exec(ctx, "carto-appliance", "upgrade", "--rehearse", "--json", "--to", to)
			if err != nil {
				t.Fatal(err)
			}
			var r installer.Rehearsal
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("upgrade --rehearse --json: exit %d %v\n%s\n%s", code, err, out, errOut)
			}
			return r, errOut, code
		}
		r, errOut, code := rehearse(testbed.NextVersion)
		if code != 0 || !r.OK || len(r.Steps) != 1 || !slices.Contains(r.Steps[0].Added, "carto_migrations."+testbed.NextColumn) {
			t.Errorf("rehearsing %s: exit %d %+v\n%s", testbed.NextVersion, code, r, errOut)
		}
		// Through the required stop, to a release whose migration fails.
		r, errOut, code = rehearse(testbed.BrokenMigrationVersion)
		if code == 0 || r.OK || len(r.Steps) != 2 || r.Steps[0].Error != "" || !strings.Contains(r.Steps[1].Error, "workspace-migrations") || !strings.Contains(errOut, testbed.BrokenMigrationVersion) {
			t.Errorf("rehearsing %s: exit %d %+v\n%s", testbed.BrokenMigrationVersion, code, r, errOut)
		}
		sameContainers(t, before, vmContainers(t, node))
		if cols := columns(t); cols != beforeCols {
			t.Errorf("the live schema changed: %q, was %q", cols, beforeCols)
		}
		if left := node.MustExec(t, "sh", "-c", "docker ps -aq --filter label=com.docker.compose.project=carto-rehearsal; docker network ls -q --filter label=com.docker.compose.project=carto-rehearsal; docker volume ls -q --filter label=com.docker.compose.project=carto-rehearsal"); strings.TrimSpace(left) != "" {
			t.Errorf("the rehearsal left containers, networks or volumes:\n%s", left)
		}
	})

	step(t, "an upgrade stopped at any step (the agent killed there by the test build's hook, by kill -9, by a reboot, by a Docker restart) is rolled back: one version, healthy, no row lost", func(t *testing.T) {
		vmPsqlDB(t, node, "workspace", "CREATE TABLE e2e_keep (v text); INSERT INTO e2e_keep VALUES ('a'), ('b');")
		beforeRows, beforeCols := rows(t), columns(t)
		// journal is the upgrade journal's outcome, the step running
		// and the error ("none" when no upgrade wrote one yet).
		journal := func() (outcome, running, why string, err error) {
			out, _, code, err := node.Exec(ctx, "cat", "/var/lib/carto-appliance/upgrade-journal.json")
			if err != nil || code != 0 {
				return "none", "", "", err
			}
			var r struct {
				Outcome, Error string
				Steps          []struct{ Name, State string }
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				return "", "", "", err
			}
			for _, s := range r.Steps {
				if s.State == "running" {
					running = s.Name
				}
			}
			return r.Outcome, running, r.Error, nil
		}
		// recovered waits until the agent runs again and the node is
		// back on the installed version, healthy, with the journal
		// ended as want says.
		// byRecovery says the agent's recovery ended the run (not the
		// run's own rollback, which a clean shutdown may let finish).
		recovered := func(t *testing.T, at, wantOutcome string, byRecovery bool) {
			t.Helper()
			start := time.Now()
			defer func() {
				if t.Failed() {
					// Where the agent is stuck: Go prints every goroutine
					// on SIGQUIT, into the journal.
					node.Exec(ctx, "systemctl", "kill", "-s", "QUIT", "carto-appliance")
					time.Sleep(2 * time.Second)
					out, _, _, _ := node.Exec(ctx, "journalctl", "-u", "carto-appliance", "-n", "400", "--no-pager")
					t.Logf("agent journal:\n%s", out)
				}
			}()
			eventually(t, cmp.Or(waitOverride(), 6*time.Minute), func() error {
				if out, _, _, _ := node.Exec(ctx, "systemctl", "is-active", "carto-appliance"); strings.TrimSpace(out) != "active" {
					return fmt.Errorf("the agent is %s", strings.TrimSpace(out))
				}
				if outcome, running, why, err := journal(); err != nil || outcome != wantOutcome {
					return fmt.Errorf("upgrade journal: outcome %q (want %q), running %q, error %q, %v", outcome, wantOutcome, running, why, err)
				}
				out, _, code, err := node.Exec(ctx, "carto-appliance", "status", "--json")
				var st installer.Status
				if err != nil || code != 0 || json.Unmarshal([]byte(out), &st) != nil {
					return fmt.Errorf("status: exit %d %v", code, err)
				}
				if !st.Healthy || st.Release == nil || st.Release.Installed != version {
					return fmt.Errorf("not back on %s and healthy: %+v %+v", version, st.Release, st.Services)
				}
				return nil
			})
			if got, cols := rows(t), columns(t); got != beforeRows || cols != beforeCols {
				t.Errorf("stopped at %s: rows %q columns %q; before %q %q", at, got, cols, beforeRows, beforeCols)
			}
			if v := serving(t, "maps-api"); v != version {
				t.Errorf("stopped at %s: maps-api serves %q", at, v)
			}
			if _, _, why, _ := journal(); byRecovery && wantOutcome == "rolled-back" && !strings.Contains(why, "stopped during the "+at+" step") {
				t.Errorf("stopped at %s: the journal says %q", at, why)
			}
			routesServe(t, node)
			t.Logf("stopped at %s: recovered in %s", at, time.Since(start).Round(time.Second))
		}

		// finishedOnNext checks an upgrade that ended before the stop
		// that was meant to cut it: on the new version, healthy, rows
		// kept; then rolls back, database included, for the next case.
		finishedOnNext := func(t *testing.T) {
			t.Helper()
			eventually(t, 6*time.Minute, func() error {
				if outcome, _, _, err := journal(); err != nil || outcome != "succeeded" {
					return fmt.Errorf("upgrade journal: outcome %q, %v", outcome, err)
				}
				// Exec, not vmStatus: the engine may be restarting.
				out, _, code, err := node.Exec(ctx, "carto-appliance", "status", "--json")
				var st installer.Status
				if err != nil || code != 0 || json.Unmarshal([]byte(out), &st) != nil {
					return fmt.Errorf("status: exit %d, %v", code, err)
				}
				if !st.Healthy || st.Release == nil || st.Release.Installed != testbed.NextVersion {
					return fmt.Errorf("not healthy on %s: %+v %+v", testbed.NextVersion, st.Release, st.Services)
				}
				return nil
			})
			if got := rows(t); got != beforeRows {
				t.Errorf("rows after the upgrade that ended first: %q, before %q", got, beforeRows)
			}
			routesServe(t, node)
			t.Log("the upgrade ended before it could be interrupted")
			if out, errOut, code, err := node.Exec(ctx, "carto-appliance", "rollback", "--yes", "--restore-database"); err != nil || code != 0 {
				t.Fatalf("rollback: exit %d %v\n%s\n%s", code, err, out, errOut)
			}
		}

		// The test build's hook: the agent kills itself with SIGKILL as
		// the step starts, once (systemd restarts it with the same
		// environment). A step that only prepares leaves no journal of
		// its own: the previous one stays.
		dropIn := "/etc/systemd/system/carto-appliance.service.d/stop-at.conf"
		stopAt := []string{"backup", "firewall", "commit", "converge", "reload-router", "verify"}
		if only, ok := os.LookupEnv("E2E_UPGRADE_STOP_AT"); ok {
			stopAt = strings.Fields(strings.ReplaceAll(only, ",", " ")) // to reproduce one; "" for none
		}
		for _, at := range stopAt {
			before, _, _, _ := journal()
			want := "rolled-back"
			if at == "backup" {
				want = before
			}
			write(t, node, dropIn, []byte(fmt.Sprintf("[Service]\nEnvironment=CARTO_APPLIANCE_TEST_STOP_AT=upgrade/%s\nEnvironment=CARTO_APPLIANCE_TEST_STOP_ONCE=/run/carto-stopped-at-%s\n", at, at)), 0o644)
			node.MustExec(t, "systemctl", "daemon-reload")
			node.MustExec(t, "systemctl", "restart", "carto-appliance")
			if out, errOut, code := upgrade(t, "--to", testbed.NextVersion); code == 0 {
				t.Fatalf("an upgrade whose agent was killed at %s succeeded:\n%s\n%s", at, out, errOut)
			}
			recovered(t, at, want, true)
		}
		node.MustExec(t, "rm", "-f", dropIn)
		node.MustExec(t, "systemctl", "daemon-reload")
		node.MustExec(t, "systemctl", "restart", "carto-appliance")

		// A real kill -9 of the agent, a reboot, and a restart of the
		// Docker engine, in the middle of the converge (the new
		// release's migration may have run).
		hows := []string{"kill -9", "reboot", "docker restart"}
		if only := os.Getenv("E2E_UPGRADE_STOP_HOW"); only != "" {
			hows = strings.Split(only, ",") // to reproduce one, maybe again and again
		}
		for _, how := range hows {
			type answer struct {
				code   int
				errOut string
			}
			done := make(chan answer, 1)
			go func() {
				_, errOut, code, err := node.Exec(ctx, "carto-appliance", "upgrade", "--yes", "--to", testbed.NextVersion)
				if err != nil {
					code = -1 // the VM went down under it
				}
				done <- answer{code, errOut}
			}()
			eventually(t, 3*time.Minute, func() error {
				if _, running, _, _ := journal(); running != "converge" {
					return fmt.Errorf("the upgrade is not converging yet (%q)", running)
				}
				return nil
			})
			// Into the converge: a container of the new release exists
			// (its migration runs first).
			eventually(t, 3*time.Minute, func() error {
				out, _, _, err := node.Exec(ctx, "docker", "ps", "-a", "--filter", "label=com.docker.compose.project=carto", "--format", "{{.Image}}")
				if err != nil || !strings.Contains(out, ":"+testbed.NextVersion) {
					return fmt.Errorf("no container of %s yet: %v", testbed.NextVersion, err)
				}
				return nil
			})
			switch how {
			case "reboot":
				if err := node.Reboot(ctx); err != nil {
					t.Fatal(err)
				}
			case "docker restart":
				node.MustExec(t, "systemctl", "restart", "docker")
			default:
				node.MustExec(t, "systemctl", "kill", "-s", "KILL", "carto-appliance")
			}
			ans := <-done
			switch {
			case how == "docker restart" && ans.code == 0:
				// The converge's rolls may all be done by the time the
				// engine goes down (the restart takes a second or two to
				// begin): then the upgrade is whole on the new version;
				// put back for the next case.
				finishedOnNext(t)
				continue
			case how == "docker restart" && ans.code != 5:
				// The agent lives on: the run rolls itself back once the
				// engine answers again.
				t.Errorf("an upgrade whose engine restarted: exit %d, want 5 (rolled back)\n%s", ans.code, ans.errOut)
			case how == "reboot" && ans.code == 0:
				// A reboot stops the agent cleanly (SIGTERM): it lets the
				// job under way end within its stop bound (20 s), and a
				// converge of rolls can. Then it is whole on the new
				// version; put back for the next case.
				finishedOnNext(t)
				continue
			case ans.code == 0:
				t.Errorf("the upgrade survived %s", how)
			}
			// A reboot stops the agent cleanly first: the upgrade may
			// roll itself back before systemd kills it.
			recovered(t, "converge", "rolled-back", how == "kill -9")
		}
		if partial := node.MustExec(t, "sh", "-c", "ls -d /var/lib/carto-appliance/backups/*/.partial 2>/dev/null || true"); strings.TrimSpace(partial) != "" {
			t.Errorf("half-written backups are left: %s", partial)
		}
	})

	// agentRuns waits until the agent that answers is carto-appliance v.
	agentRuns := func(t *testing.T, v string) {
		t.Helper()
		eventually(t, 2*time.Minute, func() error {
			log := node.MustExec(t, "sh", "-c", "journalctl -u carto-appliance -o cat --no-pager | grep event=agent-starting | tail -n 1")
			if !strings.Contains(log, "version="+v+" ") {
				return fmt.Errorf("the agent last started as %q", log)
			}
			if _, _, code, _ := node.Exec(ctx, "carto-appliance", "status"); code != 0 {
				return fmt.Errorf("status: exit %d", code)
			}
			return nil
		})
	}
	binaryIs := func(t *testing.T, v string) {
		t.Helper()
		if got := node.MustExec(t, "carto-appliance", "version"); !strings.HasPrefix(got, "carto-appliance "+v+"\n") {
			t.Errorf("the binary is %q, want carto-appliance %s", got, v)
		}
	}
	// runningOld puts the binary under test as a release one version too
	// old for the next release back in place, the agent running it.
	runningOld := func(t *testing.T) {
		replaceBinary(t, node, binOld)
		node.MustExec(t, "systemctl", "restart", "carto-appliance")
		agentRuns(t, testbed.OldApplianceVersion)
	}

	step(t, "the next release needs a newer carto-appliance: --check says the upgrade updates it first; a stop at the binary's swap leaves the old one, whole", func(t *testing.T) {
		runningOld(t)
		chk, errOut, code := check(t, "--to", testbed.NextVersion)
		if code != 0 {
			t.Fatalf("upgrade --check: exit %d\n%s", code, errOut)
		}
		if a := chk.Appliance; a.Installed != testbed.OldApplianceVersion || a.Needed != testbed.NextApplianceVersion || a.Offered != testbed.NextApplianceVersion || a.Reason != "" {
			t.Errorf("check: %+v", a)
		}
		if text := node.MustExec(t, "carto-appliance", "upgrade", "--check"); !strings.Contains(text, "the upgrade updates carto-appliance to "+testbed.NextApplianceVersion+" from the channel first") {
			t.Errorf("upgrade --check:\n%s", text)
		}
		// The agent kills itself as the rename starts (the download
		// checked, the old binary kept, the intent written).
		dropIn := "/etc/systemd/system/carto-appliance.service.d/stop-at.conf"
		write(t, node, dropIn, []byte("[Service]\nEnvironment=CARTO_APPLIANCE_TEST_STOP_AT=self-update/replace\nEnvironment=CARTO_APPLIANCE_TEST_STOP_ONCE=/run/carto-stopped-at-self-update\n"), 0o644)
		node.MustExec(t, "systemctl", "daemon-reload")
		node.MustExec(t, "systemctl", "restart", "carto-appliance")
		agentRuns(t, testbed.OldApplianceVersion)
		if out, errOut, code := upgrade(t, "--to", testbed.NextVersion); code == 0 {
			t.Fatalf("an upgrade whose agent was killed at the swap succeeded:\n%s\n%s", out, errOut)
		}
		node.MustExec(t, "rm", "-f", dropIn)
		node.MustExec(t, "systemctl", "daemon-reload")
		node.MustExec(t, "systemctl", "restart", "carto-appliance")
		agentRuns(t, testbed.OldApplianceVersion)
		binaryIs(t, testbed.OldApplianceVersion)
		if got := installed(t); got != version {
			t.Errorf("installed: %s", got)
		}
		if st := vmStatus(t, node); !st.Healthy {
			t.Errorf("not healthy: %+v", st.Services)
		}
		// The intent left for the new binary is not the old one's to run.
		if log := node.MustExec(t, "journalctl", "-u", "carto-appliance", "-o", "cat", "--no-pager"); !strings.Contains(log, "event=upgrade-intent-dropped") {
			t.Errorf("the old agent did not drop the intent:\n%s", tail(log, 30))
		}
		var j steps.Record
		if err := json.Unmarshal([]byte(node.MustExec(t, "cat", "/var/lib/carto-appliance/self-update-journal.json")), &j); err != nil || j.Interrupted() != "replace" {
			t.Errorf("self-update journal: %+v %v", j, err)
		}
		routesServe(t, node)
	})

	step(t, "upgrade to the next version under 100 requests a second from another host, none failed: carto-appliance updated first, the agent restarted on it and the CLI following; new images and service, the migration ran, rows kept, backup taken", func(t *testing.T) {
		load := testbed.RouterLoad(ctx, "https://"+node.IP(), "carto.vm.test", nil, 100)
		time.Sleep(2 * time.Second)
		out, errOut, code := upgrade(t, "--to", testbed.NextVersion)
		time.Sleep(2 * time.Second)
		res := load.Stop()
		t.Logf("upgrade under load: %s", res)
		if res.Failed != 0 || res.Sent < 1000 {
			t.Errorf("upgrade under load: %s; failures: %v", res, res.Samples)
		}
		if code != 0 {
			t.Fatalf("upgrade: exit %d\n%s\n%s", code, out, errOut)
		}
		for _, want := range []string{"Updated carto-appliance " + testbed.OldApplianceVersion + " to " + testbed.NextApplianceVersion, "Continuing the upgrade to CARTO " + testbed.NextVersion + " with carto-appliance " + testbed.NextApplianceVersion} {
			if !strings.Contains(out, want) {
				t.Errorf("upgrade lacks %q:\n%s", want, out)
			}
		}
		binaryIs(t, testbed.NextApplianceVersion)
		agentRuns(t, testbed.NextApplianceVersion)
		if st := node.MustExec(t, "carto-appliance", "status"); !strings.Contains(st, "carto-appliance "+testbed.NextApplianceVersion+")") || strings.Contains(st, "restart it") {
			t.Errorf("status does not show the agent on %s:\n%s", testbed.NextApplianceVersion, st)
		}
		if log := node.MustExec(t, "journalctl", "-u", "carto-appliance", "-o", "cat", "--no-pager"); !strings.Contains(log, "event=self-updated from="+testbed.OldApplianceVersion+" to="+testbed.NextApplianceVersion) ||
			!strings.Contains(log, `event=upgrade-continued to="`+testbed.NextVersion+`" version=`+testbed.NextVersion) {
			t.Errorf("the agent's log lacks the self-update or the continued upgrade:\n%s", tail(log, 40))
		}
		if left := node.MustExec(t, "sh", "-c", "ls -a /usr/local/bin; ls /var/lib/carto-appliance/appliance-previous"); strings.Contains(left, ".carto-appliance.update-") || !strings.Contains(left, "carto-appliance-"+testbed.OldApplianceVersion) {
			t.Errorf("downloads left, or the previous binary not kept:\n%s", left)
		}
		if !strings.Contains(out, "Upgraded CARTO "+version+" to "+testbed.NextVersion) || !strings.Contains(out, "Backup taken before the upgrade: /var/lib/carto-appliance/backups/") {
			t.Errorf("upgrade said:\n%s", out)
		}
		// Each step, on the terminal (plain lines here) and in the agent's log.
		if !strings.Contains(errOut, "Step backup done") || !strings.Contains(errOut, "Step verify done") {
			t.Errorf("no step progress:\n%s", errOut)
		}
		if log := node.MustExec(t, "journalctl", "-u", "carto-appliance", "--no-pager"); !strings.Contains(log, `event=step workflow="upgrade `+version+" -> "+testbed.NextVersion+`" step="converge done"`) {
			t.Errorf("the agent did not log the steps:\n%s", tail(log, 30))
		}
		if got := installed(t); got != testbed.NextVersion {
			t.Errorf("installed: %s", got)
		}
		if st := vmStatus(t, node); !st.Healthy {
			t.Errorf("not healthy after the upgrade: %+v", st.Services)
		}
		for _, svc := range []string{"maps-api", "workspace-api", testbed.NextService} {
			if v := serving(t, svc); v != testbed.NextVersion {
				t.Errorf("%s serves %q", svc, v)
			}
		}
		if got := rows(t); got != "a,b" {
			t.Errorf("rows after the upgrade: %q", got)
		}
		if !strings.Contains(columns(t), testbed.NextColumn) {
			t.Errorf("the migration's column %s is missing: %s", testbed.NextColumn, columns(t))
		}
		if v := envOf(t, "maps-api", testbed.NextEnvKey); v != testbed.NextEnvDefault {
			t.Errorf("maps-api sees %s=%q, want the release's default %s", testbed.NextEnvKey, v, testbed.NextEnvDefault)
		}
		backup := node.MustExec(t, "sh", "-c", "cd /var/lib/carto-appliance/backups/*-upgrade-"+version+"-to-"+testbed.NextVersion+" && stat -c '%a %n' . workspace.dump config/customer.env state.json")
		for _, want := range []string{"700 .", "600 workspace.dump", "600 config/customer.env", "600 state.json"} {
			if !strings.Contains(backup, want) {
				t.Errorf("backup: want %q in:\n%s", want, backup)
			}
		}
		journal := node.MustExec(t, "cat", "/var/lib/carto-appliance/upgrade-journal.json")
		if !strings.Contains(journal, `"outcome": "succeeded"`) {
			t.Errorf("upgrade journal:\n%s", journal)
		}
		// A downgrade is refused, pointing at rollback, nothing changed.
		if _, errOut, code := upgrade(t, "--to", version); code == 0 || !strings.Contains(errOut, "does not downgrade") || !strings.Contains(errOut, "rollback") {
			t.Errorf("upgrade --to %s (a downgrade): exit %d\n%s", version, code, errOut)
		}
		if got := installed(t); got != testbed.NextVersion {
			t.Errorf("installed after a refused downgrade: %s", got)
		}
	})

	step(t, "rollback --restore-database goes back over the upgrade, database included; upgrading again works", func(t *testing.T) {
		vmPsqlDB(t, node, "workspace", "INSERT INTO e2e_keep VALUES ('written-after')")
		if _, errOut, code, _ := node.Exec(ctx, "carto-appliance", "rollback"); code == 0 || !strings.Contains(errOut, "--yes") {
			t.Errorf("rollback without --yes and no terminal: exit %d\n%s", code, errOut)
		}
		out, errOut, code, err := node.Exec(ctx, "carto-appliance", "rollback", "--yes", "--restore-database")
		if err != nil || code != 0 || !strings.Contains(out, "Rolled CARTO "+testbed.NextVersion+" back to "+version) {
			t.Fatalf("rollback: exit %d %v\n%s\n%s", code, err, out, errOut)
		}
		if got := installed(t); got != version {
			t.Errorf("installed after the rollback: %s", got)
		}
		if got, cols := rows(t), columns(t); got != "a,b" || strings.Contains(cols, testbed.NextColumn) {
			t.Errorf("after the rollback: rows %q columns %q", got, cols)
		}
		if v := serving(t, "maps-api"); v != version {
			t.Errorf("maps-api serves %q after the rollback", v)
		}
		if st := vmStatus(t, node); !st.Healthy {
			t.Errorf("not healthy after the rollback: %+v", st.Services)
		}
		// docker compose (v2, the host's plugin) agrees that the stack is
		// the previous release's exactly: its up -d recreates nothing.
		plugin := filepath.Join(cmp.Or(os.Getenv("DOCKER_CONFIG"), filepath.Join(os.Getenv("HOME"), ".docker")), "cli-plugins", "docker-compose")
		if err := node.CopyFile(ctx, plugin, "/root/.docker/cli-plugins/docker-compose", 0o755); err != nil {
			t.Fatal(err)
		}
		before := slices.Sorted(maps.Keys(vmContainers(t, node)))
		composeOut := node.MustExec(t, "docker", "compose", "-p", "carto", "-f", "/opt/carto/docker-compose.yml", "up", "-d")
		if after := slices.Sorted(maps.Keys(vmContainers(t, node))); !slices.Equal(before, after) || strings.Contains(composeOut, "Recreate") {
			t.Errorf("docker compose up -d after the rollback recreated containers:\n%s", composeOut)
		}
		// Upgrading again, from the old carto-appliance, the CLI killed
		// once the agent restarted on the new one: the agent finishes
		// the upgrade by itself.
		runningOld(t)
		done := make(chan int, 1)
		go func() {
			_, _, code, _ := node.Exec(ctx, "carto-appliance", "upgrade", "--yes", "--to", testbed.NextVersion)
			done <- code
		}()
		agentRuns(t, testbed.NextApplianceVersion)
		node.MustExec(t, "pkill", "-KILL", "-f", "carto-appliance upgrade")
		if code := <-done; code == 0 {
			t.Error("the killed CLI exited 0")
		}
		eventually(t, 6*time.Minute, func() error {
			if log := node.MustExec(t, "journalctl", "-u", "carto-appliance", "-o", "cat", "--no-pager"); strings.Count(log, `event=upgrade-continued to="`+testbed.NextVersion+`" version=`+testbed.NextVersion) != 2 {
				return fmt.Errorf("the agent did not finish the upgrade by itself:\n%s", tail(log, 40))
			}
			if got := installed(t); got != testbed.NextVersion {
				return fmt.Errorf("installed: %s", got)
			}
			if st := vmStatus(t, node); !st.Healthy {
				return fmt.Errorf("not healthy: %+v", st.Services)
			}
			return nil
		})
		binaryIs(t, testbed.NextApplianceVersion)
	})

	step(t, "a migration that fails: exit 5, back on the previous version with the same rows and schema", func(t *testing.T) {
		before, beforeCols := rows(t), columns(t)
		out, errOut, code := upgrade(t, "--to", testbed.BrokenMigrationVersion)
		if code != 5 || !strings.Contains(errOut, "rolled back") || !strings.Contains(errOut, "workspace-migrations") {
			t.Fatalf("upgrade to a failing migration: exit %d\n%s\n%s", code, out, errOut)
		}
		if got := installed(t); got != testbed.NextVersion {
			t.Errorf("installed after the rollback: %s", got)
		}
		if got, cols := rows(t), columns(t); got != before || cols != beforeCols {
			t.Errorf("after the rollback: rows %q columns %q; before %q %q", got, cols, before, beforeCols)
		}
		if st := vmStatus(t, node); !st.Healthy {
			t.Errorf("not healthy after the rollback: %+v", st.Services)
		}
		if v := serving(t, "maps-api"); v != testbed.NextVersion {
			t.Errorf("maps-api serves %q after the rollback", v)
		}
	})

	step(t, "a release whose service never turns healthy after migrating: exit 5, the database put back from the backup", func(t *testing.T) {
		vmPsqlDB(t, node, "workspace", "INSERT INTO e2e_keep VALUES ('c')")
		before, beforeCols := rows(t), columns(t)
		out, errOut, code := upgrade(t, "--to", testbed.UnhealthyVersion)
		if code != 5 || !strings.Contains(errOut, "maps-api") || !strings.Contains(errOut, "database from the backup") {
			t.Fatalf("upgrade to an unhealthy release: exit %d\n%s\n%s", code, out, errOut)
		}
		if got, cols := rows(t), columns(t); got != before || cols != beforeCols || strings.Contains(cols, testbed.UnhealthyColumn) {
			t.Errorf("after the rollback: rows %q columns %q; before %q %q", got, cols, before, beforeCols)
		}
		if got := installed(t); got != testbed.NextVersion {
			t.Errorf("installed after the rollback: %s", got)
		}
		if st := vmStatus(t, node); !st.Healthy {
			t.Errorf("not healthy after the rollback: %+v", st.Services)
		}
		journal := node.MustExec(t, "cat", "/var/lib/carto-appliance/upgrade-journal.json")
		if !strings.Contains(journal, `"outcome": "rolled-back"`) || !strings.Contains(journal, `"undone"`) {
			t.Errorf("upgrade journal:\n%s", journal)
		}
	})
}

// waitOverride shortens the recovery wait when reproducing a hang
// (E2E_UPGRADE_WAIT, a duration); 0 otherwise.
func waitOverride() time.Duration {
	d, _ := time.ParseDuration(os.Getenv("E2E_UPGRADE_WAIT"))
	return d
}

// routesServe waits (30 s at most) until every route of the test router
// answers 200 through the VM's own port 443. Past that it fails the test
// with what the router sees: its upstreams' addresses in Docker's DNS, the
// fences in its network namespace, its neighbours, the project network's
// endpoints and its error log. status can say healthy while a route is
// dead (health is each container's own): this is what a user sees.
func routesServe(t *testing.T, node *vm.VM) {
	t.Helper()
	var probe strings.Builder
	for _, p := range testbed.RouterPaths {
		fmt.Fprintf(&probe, "echo %s $(curl -sk -o /dev/null -m 5 -w '%%{http_code}' --resolve carto.vm.test:443:127.0.0.1 https://carto.vm.test%s); ", p, p)
	}
	var last string
	err := waitFor(30*time.Second, func() error {
		out, _, _, err := node.Exec(context.Background(), "sh", "-c", probe.String())
		if err != nil {
			return err
		}
		last = out
		for line := range strings.Lines(out) {
			if !strings.HasSuffix(strings.TrimSpace(line), " 200") {
				return fmt.Errorf("a route of the router does not answer:\n%s", out)
			}
		}
		return nil
	})
	if err == nil {
		return
	}
	const diagnosis = `r=carto-router-http-1
pid=$(docker inspect -f '{{.State.Pid}}' $r)
echo "== the router's upstreams in Docker's DNS"
for n in workspace-www accounts-www workspace-api http-cache maps-api import-api lds-api notifier; do
	echo "$n: $(docker exec $r getent ahostsv4 $n | awk '{print $1}' | sort -u | tr '\n' ' ')"
done
echo "== the project network's endpoints"
docker network inspect carto_default -f '{{range .Containers}}{{println .Name .IPv4Address}}{{end}}'
echo "== fences and neighbours in the router (pid $pid)"
nsenter -t "$pid" -n iptables -S OUTPUT
nsenter -t "$pid" -n ip -4 neigh show
echo "== the router's log, but its 200s"
docker logs --tail 200 $r 2>&1 | grep -v '" 200 ' | tail -n 30`
	diag, _, _, _ := node.Exec(context.Background(), "bash", "-c", diagnosis)
	t.Errorf("%v\n(last probe:\n%s)\n%s", err, last, diag)
}
