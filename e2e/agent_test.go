//go:build integration

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/stack"
)

// The agent keeps the stack up without a person: a killed container comes
// back healthy with the restart counted in status; a service that keeps
// crashing is reported as a crash loop instead of being hidden; once fixed,
// the report clears.
func TestAgentKeepsStackUp(t *testing.T) {
	t.Parallel()
	n := newNode(t, "e2e-agent")
	n.writeCustomerEnv(baseCustomerEnv(n.domain))
	n.mustRun(n.installArgs()...)
	logs, agentPID := n.startAgent(t)
	eventually(t, 60*time.Second, func() error {
		if !strings.Contains(logs.String(), "event=converged") {
			return fmt.Errorf("agent has not converged yet:\n%s", logs.String())
		}
		return nil
	})

	step(t, "status and logs come from the agent over its socket", func(t *testing.T) {
		if st := n.status(); st.AgentPID != agentPID || !st.Healthy {
			t.Errorf("status: agent_pid=%d (agent %d) healthy=%v", st.AgentPID, agentPID, st.Healthy)
		}
		out, _ := n.mustRun("logs", "--tail", "3", "maps-api")
		if !strings.Contains(out, "maps-api | standin:") {
			t.Errorf("logs through the agent:\n%s", out)
		}
		fi, err := os.Stat(filepath.Join(n.stateDir, "agent.sock"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("the agent's socket: %v %v", fi, err)
		}
	})

	step(t, "a service stopped through the agent is not brought back until started", func(t *testing.T) {
		n.mustRun("stop", "sql-worker")
		if !strings.Contains(logs.String(), "event=api-stop") {
			t.Errorf("the stop did not go through the agent:\n%s", tail(logs.String(), 10))
		}
		// The agent looks at the stack a second after a container dies:
		// once it has looked since sql-worker's container ended, it has had
		// its chance to bring it back.
		insp, err := docker.ContainerInspect(context.Background(), n.container("sql-worker"), client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ended, err := time.Parse(time.RFC3339Nano, insp.Container.State.FinishedAt)
		if err != nil || ended.IsZero() {
			t.Fatalf("sql-worker's container has not ended (%q): %v", insp.Container.State.FinishedAt, err)
		}
		eventually(t, 30*time.Second, func() error {
			b, err := os.ReadFile(filepath.Join(n.stateDir, "agent.json"))
			if err != nil {
				return err
			}
			return agentLookedSince(b, ended)
		})
		if s := n.service("sql-worker"); !s.Held || s.State != "exited" || s.AgentRestarts != 0 {
			t.Errorf("sql-worker after a stop: %+v", s)
		}
		n.mustRun("start", "sql-worker")
		if s := n.service("sql-worker"); s.Held || s.Health != "healthy" {
			t.Errorf("sql-worker after a start: %+v", s)
		}
	})

	step(t, "a killed container comes back healthy and counted, healthy as soon as the agent's run of its healthcheck passes", func(t *testing.T) {
		killed := time.Now()
		if _, err := docker.ContainerKill(context.Background(), n.container("maps-api"), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, func() error {
			s := n.service("maps-api")
			if s.State != "running" || s.Health != "healthy" || s.Restarts+s.AgentRestarts < 1 {
				return fmt.Errorf("maps-api: %+v", s)
			}
			return nil
		})
		t.Logf("maps-api healthy again %s after the kill", time.Since(killed).Round(time.Millisecond))
		// The engine's first check comes an interval (5 s) after the
		// start: the agent ran the same test before.
		if !strings.Contains(logs.String(), "event=probed-healthy service=maps-api") {
			t.Errorf("the agent did not probe the restarted maps-api:\n%s", tail(logs.String(), 10))
		}
	})

	step(t, "a service that keeps crashing is reported as a crash loop, restarted ever more slowly", func(t *testing.T) {
		env := baseCustomerEnv(n.domain)
		// It lives long enough to pass the apply's health gate: a new
		// container that never becomes healthy is removed, and the old
		// one goes on serving (TestConfigApplyKeepsTheOldContainer...).
		env["STANDIN_FAIL_LDS_API"] = "crash-after=4s"
		n.writeCustomerEnv(env)
		life := watchLife(t, n.project, "lds-api")
		n.run(n.installArgs()...) // may fail: lds-api dies while it is awaited
		eventually(t, 120*time.Second, func() error {
			s := n.service("lds-api")
			if !s.CrashLoop {
				return fmt.Errorf("lds-api: %+v\nagent log:\n%s", s, tail(logs.String(), 10))
			}
			return nil
		})
		if st := n.status(); st.Healthy {
			t.Error("status says healthy during a crash loop")
		}
		eventually(t, 180*time.Second, func() error {
			return backoffGrown(restartDelays(life(n.container("lds-api"))))
		})
		t.Logf("delays between a death and the next start: %v", restartDelays(life(n.container("lds-api"))))
	})

	step(t, "fixed, the crash loop clears", func(t *testing.T) {
		n.writeCustomerEnv(baseCustomerEnv(n.domain))
		n.mustRun(n.installArgs()...)
		eventually(t, 60*time.Second, func() error {
			s := n.service("lds-api")
			if s.CrashLoop || s.Health != "healthy" {
				return fmt.Errorf("lds-api: %+v", s)
			}
			return nil
		})
	})
}

func (n *node) service(name string) stack.ServiceStatus {
	n.t.Helper()
	for _, s := range n.status().Services {
		if s.Name == name {
			return s
		}
	}
	n.t.Fatalf("status has no %s", name)
	return stack.ServiceStatus{}
}

// syncBuffer is a bytes.Buffer safe for a writer and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lifeEvent is a container's start or death, as the engine reported it.
type lifeEvent struct {
	action string // "start" or "die"
	at     time.Time
}

// restartDelays are the times between each death of a container and its
// next start: the restart backoff, without the time the container ran
// (which a busy machine stretches alike for every restart).
func restartDelays(events []lifeEvent) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(events); i++ {
		if events[i-1].action == "die" && events[i].action == "start" {
			out = append(out, events[i].at.Sub(events[i-1].at).Round(time.Millisecond))
		}
	}
	return out
}

// backoffGrown says whether restarts have come further and further
// apart: the longer of the last two delays exceeds the shortest before
// them by three seconds. The engine's backoff doubles from 100 ms, so on
// an idle machine this holds after about six restarts; on a busy one a
// start takes seconds, which hides the first steps, and it takes a few
// more: callers wait for it (bounded) rather than count restarts. The
// first delay is left out: the container first dies while the install or
// apply that brought the fault still holds the converge lock.
func backoffGrown(delays []time.Duration) error {
	if len(delays) < 6 {
		return fmt.Errorf("%d restarts so far: %v", len(delays), delays)
	}
	d := delays[1:]
	n := len(d)
	if max(d[n-1], d[n-2]) < slices.Min(d[:n-2])+3*time.Second {
		return fmt.Errorf("the delays between a death and the next start have not grown: %v", delays)
	}
	return nil
}

// watchLife follows the engine's start and die events of a service's
// containers from now until the test ends, and returns a function that
// lists one container's. (Reading past events instead would miss some:
// the engine keeps only the last 256, and the healthchecks of parallel
// tests fill that in seconds.)
func watchLife(t *testing.T, project, service string) func(containerID string) []lifeEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	res := docker.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).
		Add("type", "container").Add("event", "start").Add("event", "die").
		Add("label", "com.docker.compose.project="+project).
		Add("label", "com.docker.compose.service="+service)})
	var mu sync.Mutex
	events := map[string][]lifeEvent{}
	go func() {
		for {
			select {
			case m := <-res.Messages:
				mu.Lock()
				events[m.Actor.ID] = append(events[m.Actor.ID], lifeEvent{action: string(m.Action), at: time.Unix(0, m.TimeNano)})
				mu.Unlock()
			case <-res.Err:
				return
			}
		}
	}()
	// Events returns once the engine answered: the subscription is live.
	return func(id string) []lifeEvent {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(events[id])
	}
}

// startAgent runs `carto-appliance agent` for this node in the background
// (outside systemd: no notify socket), stopped at cleanup. It returns the
// agent's log and pid.
func (n *node) startAgent(t *testing.T) (*syncBuffer, int) {
	t.Helper()
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "agent", "--config-dir", n.configDir, "--state-dir", n.stateDir)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", tail(logs.String(), 40))
		}
	})
	return logs, cmd.Process.Pid
}
