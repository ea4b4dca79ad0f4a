package supervisor

// The agent's API: what the CLI asks the running agent, over a unix socket
// in the state dir that only root (and the agent's own user) may use. It is
// HTTP with JSON bodies; long operations answer with a stream of JSON lines
// (events, image pull progress, then the result or the error) so that the
// CLI renders them as it would a direct run.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/preflight"
	"github.com/cartodb/carto-appliance/stack"
)

// SocketName is the API socket's name in the state dir.
const SocketName = "agent.sock"

// maxSocketPath is sun_path's size on Linux, terminating NUL included.
const maxSocketPath = 108

// SocketPath is where the agent of these paths listens.
func SocketPath(paths config.Paths) string {
	return filepath.Join(paths.WithDefaults().StateDir, SocketName)
}

// APIVersion is the version of the agent's API, in its paths (/v1/...)
// and answered by GET /v1/version. A CLI speaking another one refuses to
// talk to the agent (its requests and answers would be misread) and says
// to restart the agent, which then runs the binary on disk.
const APIVersion = 1

// VersionInfo is the body of GET /v1/version.
type VersionInfo struct {
	// API is the API version the agent speaks (APIVersion).
	API int `json:"api"`
	// Binary is the agent's carto-appliance version.
	Binary string `json:"binary"`
	PID    int    `json:"pid"`
}

// ApplyRequest is the body of POST /v1/apply.
type ApplyRequest struct {
	Pull stack.PullPolicy `json:"pull,omitempty"`
	// RestartEngine allows restarting the Docker engine when its proxy
	// settings change (the CLI's --yes: the agent cannot ask).
	RestartEngine bool `json:"restart_engine,omitempty"`
}

// ControlRequest is the body of POST /v1/control.
type ControlRequest struct {
	Action   installer.ControlAction `json:"action"`
	Services []string                `json:"services,omitempty"`
}

// message is one line of an operation's stream.
type message struct {
	Event  *stack.Event      `json:"event,omitempty"`
	Pull   json.RawMessage   `json:"pull,omitempty"`
	Result *installer.Result `json:"result,omitempty"`
	Error  *apiError         `json:"error,omitempty"`
}

// apiError carries an error across the socket. Kind keeps what the CLI
// maps to an exit code; Preflight keeps a failed preflight's report.
type apiError struct {
	Message   string            `json:"message"`
	Kind      string            `json:"kind,omitempty"`
	Preflight *preflight.Report `json:"preflight,omitempty"`
}

// ErrBadRequest is an agent's refusal of a request it cannot read (a CLI
// of another version): a usage error.
var ErrBadRequest = errors.New("the agent refused the request")

// Error kinds on the wire, and the sentinel each stands for on both sides.
// A kind is matched in this order: the first the error wraps wins.
var errorKinds = []struct {
	kind     string
	sentinel error
}{
	{"usage", ErrBadRequest},
	{"unknown_service", installer.ErrUnknownService},
	{"license_invalid", license.ErrInvalid},
	{"rollback_failed", installer.ErrRollbackFailed},
	{"upgrade_rolled_back", installer.ErrUpgradeRolledBack},
	{"not_installed", installer.ErrNotInstalled},
}

// kindPreflight is a *preflight.FailedError, which carries its report.
const kindPreflight = "preflight_failed"

func toAPIError(err error) *apiError {
	e := &apiError{Message: err.Error()}
	var pf *preflight.FailedError
	if errors.As(err, &pf) {
		e.Kind, e.Preflight = kindPreflight, pf.Report
		return e
	}
	for _, k := range errorKinds {
		if errors.Is(err, k.sentinel) {
			e.Kind = k.kind
			break
		}
	}
	return e
}

// Listen creates the API socket, replacing a stale one (the agent lock
// makes sure no other agent owns it), readable and writable by its owner
// only.
func Listen(paths config.Paths) (net.Listener, error) {
	path := SocketPath(paths)
	if len(path) >= maxSocketPath {
		return nil, fmt.Errorf("the socket path %s is longer than a unix socket allows (%d bytes): use a shorter --state-dir", path, maxSocketPath-1)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating the state dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing the stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("securing %s: %w", path, err)
	}
	return ln, nil
}

type peerKey struct{}

// Workflows are what the API runs: the installer's (a fake in tests). A
// nil one is the installer's.
type Workflows struct {
	Status  func(context.Context, config.Paths) (*installer.Status, error)
	Logs    func(context.Context, config.Paths, io.Writer, stack.LogsOptions) error
	Apply   func(context.Context, installer.Options) (*installer.Result, error)
	Control func(context.Context, installer.Options, installer.ControlAction, []string) (*installer.Result, error)
}

func (w Workflows) withDefaults() Workflows {
	if w.Status == nil {
		w.Status = installer.GetStatus
	}
	if w.Logs == nil {
		w.Logs = installer.Logs
	}
	if w.Apply == nil {
		w.Apply = installer.Apply
	}
	if w.Control == nil {
		w.Control = installer.Control
	}
	return w
}

// ServeOptions configures Serve.
type ServeOptions struct {
	Paths config.Paths
	// Version is the agent's binary version, answered by GET /v1/version.
	Version string
	Logf    func(string, ...any)
	// Changed is called after every operation that may have changed the
	// installed settings or the stack (whatever its outcome), so that the
	// agent's loop looks at once rather than at its next pass.
	Changed func()
	// StopBound is how long an operation under way when ctx ends is
	// waited for before it is cancelled; 0 means DefaultStopBound.
	StopBound time.Duration
	Workflows Workflows
}

// Serve answers the CLI on ln until ctx ends, then drains: operations
// under way (an apply) are waited for up to the stop bound, followed logs
// are cut. Requests from a user other than root or the agent's own are
// refused, whatever the socket's mode.
func Serve(ctx context.Context, ln net.Listener, opts ServeOptions) error {
	paths := opts.Paths.WithDefaults()
	wf := opts.Workflows.withDefaults()
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	changed := opts.Changed
	if changed == nil {
		changed = func() {}
	}
	bound := opts.StopBound
	if bound == 0 {
		bound = DefaultStopBound
	}
	// Operations finish even if the CLI goes away (a stack left half
	// converged would be worse) and outlive the stop signal up to the
	// bound; then they are cancelled.
	opsCtx, cancelOps := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelOps()
	ops := &inFlight{ops: map[int]inFlightOp{}}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, VersionInfo{API: APIVersion, Binary: opts.Version, PID: os.Getpid()})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := wf.Status(r.Context(), paths)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, toAPIError(err))
			return
		}
		st.AgentPID = os.Getpid()
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/logs", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		lo := stack.LogsOptions{Services: q["service"], Since: q.Get("since"), Tail: q.Get("tail")}
		lo.Follow, _ = strconv.ParseBool(q.Get("follow"))
		// Followed logs never end by themselves: a stop cuts them.
		lctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		defer context.AfterFunc(ctx, cancel)()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		// Errors after the first line cannot change the status any more:
		// they end the stream with a trailer the client reads.
		w.Header().Set("Trailer", "X-Error")
		fw := &flushWriter{w: w}
		if err := wf.Logs(lctx, paths, fw, lo); err != nil && lctx.Err() == nil {
			if !fw.wrote {
				writeJSON(w, http.StatusInternalServerError, toAPIError(err))
				return
			}
			w.Header().Set("X-Error", err.Error())
		}
	})
	mux.HandleFunc("POST /v1/apply", func(w http.ResponseWriter, r *http.Request) {
		var req ApplyRequest
		if !readJSON(w, r, &req) {
			return
		}
		logf("event=api-apply pull=%s", req.Pull)
		runOp(w, ops, "apply", changed, func(o installer.Options) (*installer.Result, error) {
			o.Paths, o.Pull = paths, req.Pull
			o.ConfirmEngineRestart = func(string) bool { return req.RestartEngine }
			return wf.Apply(opsCtx, o)
		})
	})
	mux.HandleFunc("POST /v1/control", func(w http.ResponseWriter, r *http.Request) {
		var req ControlRequest
		if !readJSON(w, r, &req) {
			return
		}
		logf("event=api-%s services=%q", req.Action, req.Services)
		runOp(w, ops, string(req.Action), changed, func(o installer.Options) (*installer.Result, error) {
			o.Paths = paths
			return wf.Control(opsCtx, o, req.Action, req.Services)
		})
	})
	uid := os.Geteuid()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			peer, ok := r.Context().Value(peerKey{}).(*syscall.Ucred)
			if !ok || (peer.Uid != 0 && int(peer.Uid) != uid) {
				writeJSON(w, http.StatusForbidden, &apiError{Message: "only root may use the carto-appliance agent: run the command as root (sudo)"})
				return
			}
			mux.ServeHTTP(w, r)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if uc, ok := c.(*net.UnixConn); ok {
				if cred, err := peerCred(uc); err == nil {
					return context.WithValue(ctx, peerKey{}, cred)
				}
			}
			return ctx
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		<-ctx.Done()
		draining := ops.list()
		for _, op := range draining {
			logf("event=api-draining op=%s running_for=%s bound=%s", op.name, time.Since(op.started).Round(time.Millisecond), bound)
		}
		sctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		// Shutdown closes the socket at once (a CLI then works directly,
		// after the drained apply releases the converge lock) and waits
		// for the operations' answers to end.
		if err := srv.Shutdown(sctx); err != nil {
			for _, op := range ops.list() {
				logf("event=api-op-cut op=%s err=%q", op.name, "still running at the stop bound: cancelled; the next start converges again")
			}
			cancelOps()
			srv.Close()
			return
		}
		for _, op := range draining {
			logf("event=api-drained op=%s took=%s", op.name, time.Since(op.started).Round(time.Millisecond))
		}
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving the agent's API: %w", err)
	}
	<-drained
	return nil
}

// inFlight tracks the operations under way, for the drain's log.
type inFlight struct {
	mu   sync.Mutex
	next int
	ops  map[int]inFlightOp
}

type inFlightOp struct {
	name    string
	started time.Time
}

func (f *inFlight) add(name string) (remove func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.next
	f.next++
	f.ops[id] = inFlightOp{name: name, started: time.Now()}
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.ops, id)
	}
}

func (f *inFlight) list() []inFlightOp {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]inFlightOp, 0, len(f.ops))
	for _, op := range f.ops {
		out = append(out, op)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].started.Before(out[b].started) })
	return out
}

// runOp runs an operation that may change the stack, tracked for the
// drain, and streams its progress and outcome.
func runOp(w http.ResponseWriter, ops *inFlight, name string, changed func(), op func(installer.Options) (*installer.Result, error)) {
	defer ops.add(name)()
	defer changed()
	stream(w, op)
}

// peerCred is who is on the other end of a unix connection, as the kernel
// says (SO_PEERCRED).
func peerCred(c *net.UnixConn) (*syscall.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, credErr
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, &apiError{Message: "reading the request: " + err.Error()})
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// stream runs an operation and sends its events, its pull progress and
// then its result or error as JSON lines.
func stream(w http.ResponseWriter, op func(installer.Options) (*installer.Result, error)) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	send := func(m message) {
		mu.Lock()
		defer mu.Unlock()
		// A CLI that went away stops reading; the operation goes on.
		if enc.Encode(m) == nil {
			http.NewResponseController(w).Flush()
		}
	}
	pulls := &lineWriter{emit: func(line []byte) { send(message{Pull: json.RawMessage(line)}) }}
	res, err := op(installer.Options{
		Reporter: stack.ReporterFunc(func(ev stack.Event) { send(message{Event: &ev}) }),
		Progress: pulls,
	})
	pulls.flush()
	m := message{Result: res}
	if err != nil {
		m.Error = toAPIError(err)
	}
	send(m)
}

// lineWriter turns the pull progress writes into whole JSON lines.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func([]byte)
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if line := l.buf[:i]; json.Valid(line) {
			l.emit(append([]byte(nil), line...))
		}
		l.buf = l.buf[i+1:]
	}
}

func (l *lineWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if json.Valid(l.buf) {
		l.emit(l.buf)
	}
	l.buf = nil
}

// flushWriter sends every write at once: followed logs must not sit in a
// buffer.
type flushWriter struct {
	w     http.ResponseWriter
	wrote bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	f.wrote = true
	n, err := f.w.Write(p)
	http.NewResponseController(f.w).Flush()
	return n, err
}
