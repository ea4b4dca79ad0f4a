//go:build integration

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/cartodb/carto-appliance/stack"
)

// A command run in a service's container answers its own exit code; one
// whose container restarts under it (as at an engine restart) is
// ErrInterrupted, a transient error, not the exit code the kill left.
func TestExecInterruptedByARestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	eng := localEngine(t)
	project := "e2e-exec-" + randHex(4)
	created, err := docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{Image: images.Base, Cmd: []string{"sleep", "600"},
			Labels: map[string]string{"com.docker.compose.project": project, "com.docker.compose.service": "db"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		docker.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true})
	})
	if _, err := docker.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	run := func(cmd ...string) (int, error) {
		return eng.Exec(ctx, project, "db", stack.ExecOptions{Cmd: cmd})
	}

	var out bytes.Buffer
	if code, err := eng.Exec(ctx, project, "db", stack.ExecOptions{Cmd: []string{"sh", "-c", "echo hi; exit 3"}, Stdout: &out}); code != 3 || err != nil || out.String() != "hi\n" {
		t.Errorf("exit 3: got %d %v %q", code, err, out.String())
	}

	done := make(chan error, 1)
	go func() {
		code, err := run("sh", "-c", "touch /tmp/started; sleep 120")
		done <- fmt.Errorf("exit %d: %w", code, err)
	}()
	eventually(t, 30*time.Second, func() error {
		if code, err := run("test", "-e", "/tmp/started"); code != 0 || err != nil {
			return fmt.Errorf("the command has not started (%d %v)", code, err)
		}
		return nil
	})
	if _, err := docker.ContainerRestart(ctx, created.ID, client.ContainerRestartOptions{Timeout: new(0)}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, stack.ErrInterrupted) || !stack.Transient(err) {
			t.Errorf("the command cut by the restart: %v, want ErrInterrupted", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the command cut by the restart has not returned")
	}
	// The restarted container runs commands again.
	if code, err := run("true"); code != 0 || err != nil {
		t.Errorf("after the restart: %d %v", code, err)
	}
	// A stopped one: not running, transient too.
	if _, err := docker.ContainerStop(ctx, created.ID, client.ContainerStopOptions{Timeout: new(0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := run("true"); !errors.Is(err, stack.ErrNotRunning) || !stack.Transient(err) {
		t.Errorf("in a stopped container: %v, want ErrNotRunning", err)
	}
}
