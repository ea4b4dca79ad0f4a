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
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
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

// apiError carries an error across the socket; Kind keeps the sentinel
// errors the CLI maps to exit codes.
type apiError struct {
	Message string `json:"message"`
	Kind    string `json:"kind,omitempty"`
}

var errorKinds = map[string]error{
	"not_installed":   installer.ErrNotInstalled,
	"unknown_service": installer.ErrUnknownService,
}

func toAPIError(err error) *apiError {
	e := &apiError{Message: err.Error()}
	for kind, sentinel := range errorKinds {
		if errors.Is(err, sentinel) {
			e.Kind = kind
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

// Serve answers the CLI on ln until ctx ends. Requests from a user other
// than root or the agent's own are refused, whatever the socket's mode.
func Serve(ctx context.Context, ln net.Listener, paths config.Paths, logf func(string, ...any)) error {
	paths = paths.WithDefaults()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := installer.GetStatus(r.Context(), paths)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, toAPIError(err))
			return
		}
		st.AgentPID = os.Getpid()
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/logs", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		opts := stack.LogsOptions{Services: q["service"], Since: q.Get("since"), Tail: q.Get("tail")}
		opts.Follow, _ = strconv.ParseBool(q.Get("follow"))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		// Errors after the first line cannot change the status any more:
		// they end the stream with a trailer the client reads.
		w.Header().Set("Trailer", "X-Error")
		fw := &flushWriter{w: w}
		if err := installer.Logs(r.Context(), paths, fw, opts); err != nil {
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
		stream(w, func(o installer.Options) (*installer.Result, error) {
			o.Paths, o.Pull = paths, req.Pull
			o.ConfirmEngineRestart = func(string) bool { return req.RestartEngine }
			// The operation finishes even if the CLI goes away: a stack
			// left half-converged would be worse.
			return installer.Apply(context.WithoutCancel(r.Context()), o)
		})
	})
	mux.HandleFunc("POST /v1/control", func(w http.ResponseWriter, r *http.Request) {
		var req ControlRequest
		if !readJSON(w, r, &req) {
			return
		}
		logf("event=api-%s services=%q", req.Action, req.Services)
		stream(w, func(o installer.Options) (*installer.Result, error) {
			o.Paths = paths
			return installer.Control(context.WithoutCancel(r.Context()), o, req.Action, req.Services)
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
	go func() {
		<-ctx.Done()
		// Followed logs would hold a graceful shutdown forever.
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving the agent's API: %w", err)
	}
	return nil
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
