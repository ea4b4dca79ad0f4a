package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"
)

// ExecOptions configures Exec.
type ExecOptions struct {
	Cmd []string
	Env []string // KEY=value, added to the container's
	// Stdin, when set, is copied to the command's standard input, which is
	// then closed.
	Stdin          io.Reader
	Stdout, Stderr io.Writer // nil discards
}

// ErrNotRunning is returned by Exec for a service whose container is not
// running.
var ErrNotRunning = errors.New("not running")

// ErrInterrupted is returned by Exec when the service's container stopped
// or restarted while the command ran (the engine restarting, say): the
// command's outcome, or its exit code, says nothing of the command.
var ErrInterrupted = errors.New("the container stopped under the command")

// Exec runs a command in the running container of a service and returns
// its exit code once it ended (what `docker compose exec -T` does).
func (e *Engine) Exec(ctx context.Context, project, service string, opts ExecOptions) (int, error) {
	have, _, err := e.projectContainers(ctx, project)
	if err != nil {
		return 0, err
	}
	c, ok := have[service]
	if !ok || c.State != "running" {
		return 0, fmt.Errorf("service %s: %w", service, ErrNotRunning)
	}
	started, err := e.startedAt(ctx, c.ID)
	if err != nil {
		return 0, fmt.Errorf("service %s: %w", service, err)
	}
	code, err := e.exec(ctx, c.ID, service, opts)
	if (err != nil || code != 0) && ctx.Err() == nil && e.restartedSince(ctx, c.ID, started, err == nil) {
		cause := err
		if cause == nil {
			cause = fmt.Errorf("%s exited %d", opts.Cmd[0], code)
		}
		return 0, fmt.Errorf("service %s: %w (%v)", service, ErrInterrupted, cause)
	}
	return code, err
}

// execSettle is how long a command's failure is watched for its
// container stopping: a command killed as its container is (an engine
// restart stops every container) ends before the engine says the
// container stopped.
var execSettle = 3 * time.Second

// restartedSince reports whether container id stopped or restarted since
// started (an engine that does not answer counts). settle watches it for
// execSettle; otherwise one look.
func (e *Engine) restartedSince(ctx context.Context, id string, started time.Time, settle bool) bool {
	deadline := time.Now().Add(execSettle)
	for {
		now, err := e.startedAt(ctx, id)
		if err != nil || !now.Equal(started) {
			return true
		}
		if !settle || time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// startedAt is when the running container id last started; an error
// wrapping ErrNotRunning when it is not running.
func (e *Engine) startedAt(ctx context.Context, id string) (time.Time, error) {
	insp, err := e.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return time.Time{}, fmt.Errorf("inspecting its container: %w", err)
	}
	if !insp.Container.State.Running {
		return time.Time{}, ErrNotRunning
	}
	t, err := time.Parse(time.RFC3339Nano, insp.Container.State.StartedAt)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading its container's start %q: %w", insp.Container.State.StartedAt, err)
	}
	return t, nil
}

func (e *Engine) exec(ctx context.Context, id, service string, opts ExecOptions) (int, error) {
	created, err := e.api.ExecCreate(ctx, id, client.ExecCreateOptions{
		Cmd: opts.Cmd, Env: opts.Env, AttachStdin: opts.Stdin != nil, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return 0, fmt.Errorf("service %s: starting %s: %w", service, opts.Cmd[0], err)
	}
	att, err := e.api.ExecAttach(ctx, created.ID, client.ExecAttachOptions{})
	if err != nil {
		return 0, fmt.Errorf("service %s: starting %s: %w", service, opts.Cmd[0], err)
	}
	defer att.Close()
	// Canceling ctx must stop the copies: closing the connection does.
	stop := context.AfterFunc(ctx, func() { att.Close() })
	defer stop()
	inErr := make(chan error, 1)
	if opts.Stdin != nil {
		go func() {
			_, err := io.Copy(att.Conn, opts.Stdin)
			if cerr := att.CloseWrite(); err == nil {
				err = cerr
			}
			inErr <- err
		}()
	} else {
		inErr <- nil
	}
	stdout, stderr := orDiscard(opts.Stdout), orDiscard(opts.Stderr)
	if _, err := stdcopy.StdCopy(stdout, stderr, att.Reader); err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("service %s: reading the output of %s: %w", service, opts.Cmd[0], err)
	}
	if err := <-inErr; err != nil {
		return 0, fmt.Errorf("service %s: feeding %s: %w", service, opts.Cmd[0], err)
	}
	res, err := e.api.ExecInspect(ctx, created.ID, client.ExecInspectOptions{})
	if err != nil {
		return 0, fmt.Errorf("service %s: the result of %s: %w", service, opts.Cmd[0], err)
	}
	return res.ExitCode, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// RepoDigests are the registry digests the engine records for a local
// image ("host/name@sha256:…", one per repository it was pulled from).
func (e *Engine) RepoDigests(ctx context.Context, ref string) ([]string, error) {
	res, err := e.api.ImageInspect(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	return res.RepoDigests, nil
}
