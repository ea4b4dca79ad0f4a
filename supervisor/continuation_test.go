package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/stack"
)

// An op that replaced the agent's binary restarts the agent, after the
// CLI got its answer.
func TestSelfUpdateRestartsTheAgentAfterTheAnswer(t *testing.T) {
	restarted := make(chan string, 1)
	// Restart waits for the CLI to have its answer: were it called
	// before the answer was sent, the answer would come only after this
	// wait, and the reason recorded says so.
	answered := make(chan struct{})
	paths := serveWith(t, ServeOptions{
		Restart: func(reason string) {
			select {
			case <-answered:
				restarted <- reason
			case <-time.After(3 * time.Second):
				restarted <- "called before the CLI had its answer"
			}
		},
		Workflows: Workflows{Upgrade: func(context.Context, installer.UpgradeOptions) (*installer.Result, error) {
			return &installer.Result{Version: "2025.11.3", SelfUpdate: &installer.SelfUpdateSummary{From: "1.2.0", To: "1.3.0", Binary: "/usr/local/bin/carto-appliance", For: "2026.1.0"}}, nil
		}},
	})
	c, err := Dial(t.Context(), paths)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case r := <-restarted:
		t.Fatalf("restarted before any op: %s", r)
	default:
	}
	res, err := Do(t.Context(), c, installer.Options{}, UpgradeOp{})
	close(answered)
	if err != nil || res.SelfUpdate == nil || res.SelfUpdate.To != "1.3.0" {
		t.Fatalf("%+v %v", res, err)
	}
	select {
	case r := <-restarted:
		if !strings.Contains(r, "1.3.0") {
			t.Errorf("restart reason %q", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the agent was not restarted")
	}
	// An agent that took no intent continues nothing.
	if _, err := c.FollowContinuation(t.Context(), installer.Options{}); !errors.Is(err, ErrNoContinuation) {
		t.Errorf("no continuation: %v", err)
	}
}

// The agent started on the new binary takes the upgrade the self-update
// left and runs it by itself; followers get every event and the result,
// whenever they come.
func TestTheNewAgentContinuesTheUpgrade(t *testing.T) {
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	os.MkdirAll(paths.StateDir, 0o700)
	intent, _ := json.Marshal(installer.UpgradeIntent{To: "2026.1.0", SkipDatabaseBackup: true, Appliance: "1.3.0", At: time.Now().UTC()})
	if err := os.WriteFile(installer.UpgradeIntentFile(paths), intent, 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []installer.UpgradeOptions
	release := make(chan struct{})
	upgrade := func(ctx context.Context, in installer.UpgradeOptions) (*installer.Result, error) {
		mu.Lock()
		o := in
		o.Options = installer.Options{}
		got = append(got, o)
		mu.Unlock()
		in.Reporter.Report(stack.Event{Service: "upgrade 2025.11.3 -> 2026.1.0", Action: stack.ActionStep, Detail: "pull running"})
		<-release
		in.Reporter.Report(stack.Event{Service: "upgrade 2025.11.3 -> 2026.1.0", Action: stack.ActionStep, Detail: "commit done"})
		return &installer.Result{Version: "2026.1.0"}, nil
	}
	ln, err := Listen(paths)
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var logMu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, ServeOptions{Paths: paths, Version: "1.3.0", Workflows: Workflows{Upgrade: upgrade},
			Logf: func(f string, a ...any) {
				logMu.Lock()
				defer logMu.Unlock()
				logs.WriteString(strings.TrimSpace(fmt.Sprintf(f, a...)) + "\n")
			}})
	}()
	c, err := Dial(t.Context(), paths)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// A follower that comes while it runs sees the first step, then the
	// rest and the result.
	var steps []string
	rep := stack.ReporterFunc(func(ev stack.Event) {
		steps = append(steps, ev.Detail)
		if ev.Detail == "pull running" {
			close(release)
		}
	})
	res, err := c.FollowContinuation(t.Context(), installer.Options{Reporter: rep})
	if err != nil || res == nil || res.Version != "2026.1.0" || strings.Join(steps, ",") != "pull running,commit done" {
		t.Fatalf("followed: %+v %v %v", res, err, steps)
	}
	mu.Lock()
	if len(got) != 1 || got[0].To != "2026.1.0" || !got[0].SkipDatabaseBackup || !got[0].NoSelfUpdate {
		t.Errorf("the workflow ran with %+v", got)
	}
	mu.Unlock()
	// One that comes after the end gets it all too.
	steps = nil
	res, err = c.FollowContinuation(t.Context(), installer.Options{Reporter: stack.ReporterFunc(func(ev stack.Event) { steps = append(steps, ev.Detail) })})
	if err != nil || res.Version != "2026.1.0" || len(steps) != 2 {
		t.Errorf("followed late: %+v %v %v", res, err, steps)
	}
	if _, err := os.Stat(installer.UpgradeIntentFile(paths)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the intent is still there: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logs.String(), `event=upgrade-continued to="2026.1.0" version=2026.1.0`) {
		t.Errorf("log:\n%s", logs.String())
	}
}

// An intent left for another binary (the update stopped before the
// rename) is dropped and logged, not run.
func TestAStaleIntentIsNotContinued(t *testing.T) {
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	os.MkdirAll(paths.StateDir, 0o700)
	intent, _ := json.Marshal(installer.UpgradeIntent{To: "2026.1.0", Appliance: "1.3.0", At: time.Now().UTC()})
	os.WriteFile(installer.UpgradeIntentFile(paths), intent, 0o600)
	ran := false
	var logs strings.Builder
	s := serverOps{paths: paths, ops: &inFlight{ops: map[int]inFlightOp{}}, changed: func() {}, logf: func(f string, a ...any) { logs.WriteString(fmt.Sprintf(f, a...)) },
		wf: Workflows{Upgrade: func(context.Context, installer.UpgradeOptions) (*installer.Result, error) {
			ran = true
			return nil, nil
		}}}
	if r := s.continueUpgrade("1.2.0"); r != nil || ran {
		t.Error("continued an intent left for another binary")
	}
	if !strings.Contains(logs.String(), "event=upgrade-intent-dropped") {
		t.Errorf("log: %s", logs.String())
	}
}
