package supervisor

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/stack"
)

// serve runs the API for an empty (not installed) node and returns its
// paths.
func serve(t *testing.T) config.Paths {
	t.Helper()
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	ln, err := Listen(paths)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, paths, t.Logf) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(SocketPath(paths)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the socket outlived the agent: %v", err)
		}
	})
	return paths
}

func TestSocketIsOwnerOnly(t *testing.T) {
	paths := serve(t)
	fi, err := os.Stat(SocketPath(paths))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
}

// Errors cross the socket with their kind, so the CLI maps them to the
// same exit codes and messages as a direct run.
func TestErrorsKeepTheirKind(t *testing.T) {
	paths := serve(t)
	ctx := context.Background()
	c, err := Dial(ctx, paths)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Status(ctx); !errors.Is(err, installer.ErrNotInstalled) || !strings.Contains(err.Error(), "carto-appliance install") {
		t.Errorf("status of a node without an install: %v", err)
	}
	if err := c.Logs(ctx, new(strings.Builder), stack.LogsOptions{}); !errors.Is(err, installer.ErrNotInstalled) {
		t.Errorf("logs of a node without an install: %v", err)
	}
	res, err := c.Control(ctx, installer.Options{}, "reboot", nil)
	if err == nil || !strings.Contains(err.Error(), `unknown action "reboot"`) || res != nil {
		t.Errorf("an unknown action: %v, %+v", err, res)
	}
	events := 0
	_, err = c.Apply(ctx, installer.Options{Reporter: stack.ReporterFunc(func(stack.Event) { events++ })}, false)
	if !errors.Is(err, installer.ErrNotInstalled) {
		t.Errorf("apply without an install: %v", err)
	}
	if events != 0 {
		t.Errorf("%d events from an apply that could not start", events)
	}
}

func TestDialWithoutAgent(t *testing.T) {
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: dir, StateDir: dir}
	if _, err := Dial(context.Background(), paths); !errors.Is(err, ErrNoAgent) {
		t.Errorf("no socket: %v, want ErrNoAgent", err)
	}
	// A killed agent leaves its socket behind with nobody listening.
	ln, err := net.Listen("unix", SocketPath(paths))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Dial(context.Background(), paths); !errors.Is(err, ErrNoAgent) {
		t.Errorf("stale socket: %v, want ErrNoAgent", err)
	}
}

// The pull progress reaches the CLI as whole JSON lines, however the
// writes were cut.
func TestLineWriter(t *testing.T) {
	var got []string
	w := &lineWriter{emit: func(b []byte) { got = append(got, string(b)) }}
	for _, part := range []string{`{"id":"a","stat`, `us":"Pulling"}` + "\n" + `{"id":"b"}` + "\n" + "not json\n", `{"id":"c"}`} {
		w.Write([]byte(part))
	}
	w.flush()
	want := []string{`{"id":"a","status":"Pulling"}`, `{"id":"b"}`, `{"id":"c"}`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
}
