//go:build integration

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
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
	logs := n.startAgent(t)
	eventually(t, 60*time.Second, func() error {
		if !strings.Contains(logs.String(), "event=converged") {
			return fmt.Errorf("agent has not converged yet:\n%s", logs.String())
		}
		return nil
	})

	step(t, "a killed container comes back healthy and counted", func(t *testing.T) {
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
	})

	step(t, "a service that keeps crashing is reported as a crash loop", func(t *testing.T) {
		env := baseCustomerEnv(n.domain)
		env["STANDIN_FAIL_LDS_API"] = "crash-after=1s"
		n.writeCustomerEnv(env)
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

// startAgent runs `carto-appliance agent` for this node in the background
// (outside systemd: no notify socket), stopped at cleanup.
func (n *node) startAgent(t *testing.T) *syncBuffer {
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
	return logs
}
