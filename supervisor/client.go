package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/host"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/preflight"
	"github.com/cartodb/carto-appliance/stack"
)

// ErrNoAgent is returned by Dial when no agent listens: the caller then
// works directly on the engine.
var ErrNoAgent = errors.New("the carto-appliance agent is not running")

// Client talks to the running agent.
type Client struct {
	socket string
	http   *http.Client
	agent  VersionInfo
}

// Dial connects to the agent of these paths. It returns ErrNoAgent when
// the socket is missing or nobody listens on it, and a clear error when
// the caller may not use it.
func Dial(ctx context.Context, paths config.Paths) (*Client, error) {
	socket := SocketPath(paths)
	if len(socket) >= maxSocketPath {
		return nil, ErrNoAgent // the agent could not listen there either
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return nil, ErrNoAgent
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("the carto-appliance agent's socket %s: permission denied; run the command as root (sudo)", socket)
	case err != nil:
		return nil, fmt.Errorf("connecting to the carto-appliance agent at %s: %w", socket, err)
	}
	conn.Close()
	c := &Client{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
	}}}
	if err := c.checkVersion(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// ErrAPIVersion is returned by Dial when the running agent speaks another
// API version than this binary (the binary was replaced, the agent not
// restarted yet).
var ErrAPIVersion = errors.New("the running carto-appliance agent speaks another API version")

// checkVersion makes sure the agent speaks this binary's API. An agent
// from before versioning has no /v1/version and answers 404.
func (c *Client) checkVersion(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/version", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("asking the carto-appliance agent (%s) its version: %w", c.socket, err)
	}
	defer resp.Body.Close()
	var v VersionInfo
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return fmt.Errorf("reading the carto-appliance agent's version: %w", err)
		}
	}
	if resp.StatusCode == http.StatusForbidden {
		var e apiError
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Message != "" {
			return e.err()
		}
	}
	if v.API > APIVersion {
		return fmt.Errorf("%w: this binary speaks v%d, the agent v%d (carto-appliance %s): this binary is older than the running agent; use the installed one (%s or %s)", ErrAPIVersion, APIVersion, v.API, v.Binary, host.DefaultBinary, host.PackageBinary)
	}
	c.agent = v
	if v.API != APIVersion {
		agent := "an older one"
		if v.API != 0 {
			agent = fmt.Sprintf("v%d (carto-appliance %s, pid %d)", v.API, v.Binary, v.PID)
		}
		return fmt.Errorf("%w: this binary speaks v%d, the agent %s: restart the agent so that it runs this binary: systemctl restart carto-appliance", ErrAPIVersion, APIVersion, agent)
	}
	return nil
}

// Close releases the client's connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Status is `status` as the agent sees it.
func (c *Client) Status(ctx context.Context) (*installer.Status, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/status", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st installer.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("reading the agent's status: %w", err)
	}
	return &st, nil
}

// Logs copies the services' logs to w until they end (or ctx does, when
// following).
func (c *Client) Logs(ctx context.Context, w io.Writer, opts stack.LogsOptions) error {
	q := url.Values{"service": opts.Services, "since": {opts.Since}, "tail": {opts.Tail}}
	if opts.Follow {
		q.Set("follow", "true")
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/logs?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		if ctx.Err() != nil {
			return nil // following ends by cancellation
		}
		return fmt.Errorf("reading logs from the agent: %w", err)
	}
	if msg := resp.Trailer.Get("X-Error"); msg != "" {
		return errors.New(msg)
	}
	return nil
}

// post sends req as JSON to path.
func (c *Client) post(ctx context.Context, path string, req any) (*http.Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodPost, path, bytes.NewReader(body))
}

func (c *Client) operation(ctx context.Context, path string, req any, opts installer.Options) (*installer.Result, error) {
	resp, err := c.post(ctx, path, req)
	if err != nil {
		return nil, err
	}
	return readStream(ctx, resp, opts)
}

// FollowContinuation follows the upgrade the agent continues after a
// self-update (continuation.go) to its result, rendering its events as
// an op's; ErrNoContinuation when there is none.
func (c *Client) FollowContinuation(ctx context.Context, opts installer.Options) (*installer.Result, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/upgrade/continuation", nil)
	if err != nil {
		return nil, err
	}
	return readStream(ctx, resp, opts)
}

// Agent is the running agent's version, as it answered Dial.
func (c *Client) Agent() VersionInfo { return c.agent }

// readStream reads an operation's stream of messages to its result.
func readStream(ctx context.Context, resp *http.Response, opts installer.Options) (*installer.Result, error) {
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var m message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("reading the agent's answer: %w", err)
		}
		switch {
		case m.Event != nil:
			if opts.Reporter != nil {
				opts.Reporter.Report(*m.Event)
			}
		case m.Pull != nil:
			if opts.Progress != nil {
				opts.Progress.Write(append(m.Pull, '\n'))
			}
		default:
			if m.Error != nil {
				return m.Result, m.Error.err()
			}
			return m.Result, nil
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	// The operation goes on in the agent: say where to look.
	return nil, fmt.Errorf("the agent's answer ended before the result (%v); it may still be working: see `carto-appliance status` and journalctl -u carto-appliance", sc.Err())
}

// licenseOperation sends a licence op and reads its answer.
func (c *Client) licenseOperation(ctx context.Context, path string, req any) (*license.Status, error) {
	resp, err := c.post(ctx, path, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var ans licenseAnswer
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		return nil, fmt.Errorf("reading the agent's answer: %w", err)
	}
	if ans.Error != nil {
		return ans.Status, ans.Error.err()
	}
	return ans.Status, nil
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the carto-appliance agent (%s): %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e apiError
		if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Message == "" {
			return nil, fmt.Errorf("the carto-appliance agent answered %s", resp.Status)
		}
		return nil, e.err()
	}
	return resp, nil
}

// remoteError is an error the agent returned; Is matches the sentinel of
// its kind and As gives a failed preflight's report and the input or
// field it names, so that callers treat it like the direct run's (same
// exit code, same report, same flag named).
type remoteError struct{ apiError }

func (e *remoteError) Error() string { return e.Message }

func (e *remoteError) Is(target error) bool {
	for _, k := range errorKinds {
		if k.kind == e.Kind {
			return k.sentinel == target
		}
	}
	return false
}

func (e *remoteError) As(target any) bool {
	switch t := target.(type) {
	case **preflight.FailedError:
		if e.Kind == kindPreflight && e.Preflight != nil {
			*t = &preflight.FailedError{Report: e.Preflight}
			return true
		}
	case **installer.InputError:
		if e.Input != "" {
			*t = &installer.InputError{Input: e.Input, Err: errors.New(e.Message)}
			return true
		}
	case **config.FieldError:
		if e.Field != "" {
			*t = &config.FieldError{Field: e.Field, Err: errors.New(e.Message)}
			return true
		}
	}
	return false
}

func (e *apiError) err() error { return &remoteError{*e} }
