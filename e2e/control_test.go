//go:build integration

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/installer"
)

// start, stop and restart without an agent: a stopped service stays
// stopped (held) with everything that depends on it, through config apply;
// starting a service brings back what it needs; restart keeps the
// container; nothing is recreated along the way; a wrong name is a usage
// error that changes nothing.
func TestStartStopRestart(t *testing.T) {
	t.Parallel()
	n := newNode(t, "e2e-control")
	n.writeCustomerEnv(baseCustomerEnv(n.domain))
	n.mustRun(n.installArgs()...)
	installed := n.containers()
	// Every container left is the one install created.
	sameAsInstalled := func(t *testing.T) {
		t.Helper()
		if changed := changedServices(installed, n.containers()); len(changed) > 0 {
			t.Errorf("containers recreated: %v", changed)
		}
	}
	// held checks that exactly the held services are down, and returns
	// the status.
	held := func(t *testing.T) installer.Status {
		t.Helper()
		st := n.status()
		for _, s := range st.Services {
			if s.Held != slices.Contains(st.Held, s.Name) {
				t.Errorf("%s: held=%v but the status lists %v", s.Name, s.Held, st.Held)
			}
			// A completed one-shot service is down either way.
			if s.Held && s.State == "running" || !s.Held && s.State != "running" && s.State != "completed" {
				t.Errorf("%s: held=%v state=%s", s.Name, s.Held, s.State)
			}
		}
		return st
	}

	step(t, "stop maps-api stops it and what depends on it; status says they are held", func(t *testing.T) {
		out, _ := n.mustRun("stop", "maps-api")
		want := []string{"http-cache", "maps-api", "router-http", "router-metrics"}
		if !strings.Contains(out, strings.Join(want, ", ")+" stopped by the operator") {
			t.Errorf("stop said:\n%s", out)
		}
		if st := held(t); st.Healthy || !slices.Equal(st.Held, want) {
			t.Errorf("status: healthy=%v held=%v, want held %v", st.Healthy, st.Held, want)
		}
		sameAsInstalled(t)
	})

	step(t, "config apply keeps them stopped", func(t *testing.T) {
		n.mustRun("config", "apply")
		if st := held(t); len(st.Held) != 4 {
			t.Errorf("held after apply: %v", st.Held)
		}
		sameAsInstalled(t)
	})

	step(t, "stopping the database stops everything that depends on it", func(t *testing.T) {
		n.mustRun("stop", "workspace-postgres")
		st := held(t)
		for _, s := range []string{"workspace-postgres", "workspace-api", "lds-api", "maps-api"} {
			if !slices.Contains(st.Held, s) {
				t.Errorf("%s is not held: %v", s, st.Held)
			}
		}
		if slices.Contains(st.Held, "valkey") {
			t.Errorf("valkey does not need the database but was stopped")
		}
	})

	step(t, "start maps-api brings back the database it needs, and nothing else", func(t *testing.T) {
		n.mustRun("start", "maps-api")
		st := held(t)
		for _, s := range []string{"workspace-postgres", "maps-api"} {
			if slices.Contains(st.Held, s) {
				t.Errorf("%s is still held", s)
			}
		}
		if !slices.Contains(st.Held, "workspace-api") || !slices.Contains(st.Held, "http-cache") {
			t.Errorf("services that were not asked for were started: held %v", st.Held)
		}
		if s := n.service("maps-api"); s.Health != "healthy" {
			t.Errorf("maps-api: %+v", s)
		}
		sameAsInstalled(t)
	})

	step(t, "restart maps-api keeps its container and waits until it is healthy", func(t *testing.T) {
		// The engine's start event says the container was started again
		// (StartedAt, with a second's resolution in some engines, could
		// not without waiting for the clock).
		id := n.container("maps-api")
		life := watchLife(t, n.project, "maps-api")
		n.mustRun("restart", "maps-api")
		if s := n.service("maps-api"); s.Health != "healthy" {
			t.Errorf("maps-api after restart: health %s", s.Health)
		}
		// The event reaches the watcher a moment after the engine sent it.
		eventually(t, 10*time.Second, func() error {
			if !slices.ContainsFunc(life(id), func(e lifeEvent) bool { return e.action == "start" }) {
				return fmt.Errorf("the engine reported no start of maps-api's container %.12s", id)
			}
			return nil
		})
		sameAsInstalled(t)
	})

	step(t, "a service the stack does not have is a usage error that changes nothing", func(t *testing.T) {
		before := n.snapshot()
		_, errOut, code := n.run("stop", "maps-apy")
		if code != 2 || !strings.Contains(errOut, `no such service "maps-apy"`) || !strings.Contains(errOut, "maps-api") {
			t.Errorf("exit %d:\n%s", code, errOut)
		}
		sameSnapshot(t, before, n.snapshot())
	})

	step(t, "start with no name brings everything back healthy, nothing recreated", func(t *testing.T) {
		n.mustRun("start")
		eventually(t, 30*time.Second, func() error {
			if st := n.status(); !st.Healthy || len(st.Held) > 0 {
				return fmt.Errorf("healthy=%v held=%v", st.Healthy, st.Held)
			}
			return nil
		})
		sameAsInstalled(t)
	})
}
