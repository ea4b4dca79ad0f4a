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
	"reflect"
	"sort"
	"strconv"
	"strings"
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

// message is one line of an operation's stream.
type message struct {
	Event  *stack.Event      `json:"event,omitempty"`
	Pull   json.RawMessage   `json:"pull,omitempty"`
	Result *installer.Result `json:"result,omitempty"`
	Error  *apiError         `json:"error,omitempty"`
}

// apiError carries an error across the socket. Kind keeps what the CLI
// maps to an exit code; Preflight keeps a failed preflight's report;
// Input and Field the operator's input or appliance.yaml field an error
// names, which the CLI turns into the flag that gives it.
type apiError struct {
	Message   string            `json:"message"`
	Kind      string            `json:"kind,omitempty"`
	Preflight *preflight.Report `json:"preflight,omitempty"`
	Input     installer.Input   `json:"input,omitempty"`
	Field     string            `json:"field,omitempty"`
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
	{"no_continuation", ErrNoContinuation},
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
	var ie *installer.InputError
	if errors.As(err, &ie) {
		e.Input = ie.Input
	}
	var fe *config.FieldError
	if errors.As(err, &fe) {
		e.Field = fe.Field
	}
	return e
}

// Listen creates the API socket, replacing a stale one (the agent lock
// makes sure no other agent owns it), readable and writable by its owner
// only.
func Listen(paths config.Paths) (net.Listener, error) {
	path := SocketPath(paths)
	if len(path) >= maxSocketPath {
		return nil, &installer.InputError{Input: installer.InputStateDir, Err: fmt.Errorf("the socket path %s is longer than a unix socket allows (%d bytes): use a shorter state dir", path, maxSocketPath-1)}
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
	Status            func(context.Context, config.Paths) (*installer.Status, error)
	Logs              func(context.Context, config.Paths, io.Writer, stack.LogsOptions) error
	Apply             func(context.Context, installer.Options) (*installer.Result, error)
	Control           func(context.Context, installer.Options, installer.ControlAction, []string) (*installer.Result, error)
	Install           func(context.Context, installer.InstallOptions) (*installer.Result, error)
	SetProxy          func(context.Context, installer.Options, installer.ProxyInput) (*installer.Result, error)
	ClearProxy        func(context.Context, installer.Options) (*installer.Result, error)
	ImportCertificate func(context.Context, installer.Options, installer.TLSInput) (*installer.Result, error)
	UseSelfSigned     func(context.Context, installer.Options) (*installer.Result, error)
	OffloadTLS        func(context.Context, installer.Options) (*installer.Result, error)
	UseACME           func(context.Context, installer.Options, installer.ACMEInput) (*installer.Result, error)
	RenewCertificate  func(context.Context, installer.Options) (*installer.Result, error)
	UpdateLicense     func(context.Context, config.Paths, string) (*license.Status, error)
	CheckLicense      func(context.Context, config.Paths) (*license.Status, error)
	Upgrade           func(context.Context, installer.UpgradeOptions) (*installer.Result, error)
	Rollback          func(context.Context, installer.RollbackOptions) (*installer.Result, error)
}

func (w Workflows) withDefaults() Workflows {
	orInstaller(&w.Status, installer.GetStatus)
	orInstaller(&w.Logs, installer.Logs)
	orInstaller(&w.Apply, installer.Apply)
	orInstaller(&w.Control, installer.Control)
	orInstaller(&w.Install, installer.Install)
	orInstaller(&w.SetProxy, installer.SetProxy)
	orInstaller(&w.ClearProxy, installer.ClearProxy)
	orInstaller(&w.ImportCertificate, installer.ImportCertificate)
	orInstaller(&w.UseSelfSigned, installer.UseSelfSigned)
	orInstaller(&w.OffloadTLS, installer.OffloadTLS)
	orInstaller(&w.UseACME, installer.UseACME)
	orInstaller(&w.RenewCertificate, installer.RenewCertificate)
	orInstaller(&w.UpdateLicense, installer.UpdateLicense)
	orInstaller(&w.Upgrade, installer.Upgrade)
	orInstaller(&w.Rollback, installer.Rollback)
	orInstaller(&w.CheckLicense, installer.CheckLicense)
	return w
}

// orInstaller sets *f to def when it is nil.
func orInstaller[F any](f *F, def F) {
	if reflect.ValueOf(*f).IsNil() {
		*f = def
	}
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
	// Front is the agent's front on the HTTP port, which the operations
	// it runs release at once when they leave acme mode; nil: they wait
	// for the loop to notice.
	Front *Front
	// Restart is called once an op replaced the agent's binary (a
	// self-update), after its answer: the agent must exit and be started
	// again on the new binary. nil: the agent runs on, on the old one.
	Restart   func(reason string)
	Workflows Workflows
	// Notices are the loop's, which the console's live status follows;
	// nil: its tick alone.
	Notices *Notices
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
		st.AgentPID, st.AgentVersion = os.Getpid(), opts.Version
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
	srvOps := serverOps{wf: wf, paths: paths, ctx: opsCtx, ops: ops, changed: changed, logf: logf, restart: opts.Restart, notices: opts.Notices}
	if opts.Front != nil {
		srvOps.release = opts.Front.Release
	}
	srvOps.cont = srvOps.continueUpgrade(opts.Version)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		serveConsole(ctx, srvOps)
	}()
	defer func() { <-consoleDone }()
	mux.HandleFunc("GET /v1/upgrade/continuation", srvOps.followContinuation)
	handleOp[ApplyOp](mux, srvOps)
	handleOp[ControlOp](mux, srvOps)
	handleOp[InstallOp](mux, srvOps)
	handleOp[ProxySetOp](mux, srvOps)
	handleOp[ProxyClearOp](mux, srvOps)
	handleOp[CertsOp](mux, srvOps)
	handleOp[UpgradeOp](mux, srvOps)
	handleOp[RollbackOp](mux, srvOps)
	handleLicenseOp[LicenseUpdateOp](mux, srvOps)
	handleLicenseOp[LicenseCheckOp](mux, srvOps)
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
		err := srv.Shutdown(sctx)
		if err == nil && srvOps.cont != nil {
			// Not a connection: Shutdown does not wait for it.
			select {
			case <-srvOps.cont.finished:
			case <-sctx.Done():
				err = sctx.Err()
			}
		}
		if err != nil {
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

// serverOps is what the handlers of the changing operations share.
type serverOps struct {
	wf    Workflows
	paths config.Paths
	// ctx is the operations' own: they finish even if the CLI goes away
	// (a stack left half converged would be worse) and outlive the stop
	// signal up to the stop bound.
	ctx     context.Context
	ops     *inFlight
	changed func()
	logf    func(string, ...any)
	release func(context.Context) error
	restart func(reason string)
	// cont is the upgrade a self-update left, continued by this agent;
	// nil when there is none.
	cont *relay
	// notices are the loop's (ServeOptions.Notices).
	notices *Notices
}

// start logs the op, tracks it for the drain and returns what ends it:
// the agent's loop then looks at what the op changed at once.
func (s serverOps) start(name, event string) (end func()) {
	// Tracked before it is logged: whoever sees the line may stop the
	// agent at once, and the drain must then wait for this op.
	remove := s.ops.add(name)
	s.logf("event=api-%s", event)
	return func() {
		remove()
		s.changed()
	}
}

// handle serves POST /v1/<name> for the request type T, whose decoded
// value serve answers.
func handle[T interface{ Name() string }](mux *http.ServeMux, serve func(http.ResponseWriter, T)) {
	var zero T
	mux.HandleFunc("POST /v1/"+zero.Name(), func(w http.ResponseWriter, r *http.Request) {
		var req T
		if readJSON(w, r, &req) {
			serve(w, req)
		}
	})
}

// handleOp serves the op type T, streaming its progress and outcome.
func handleOp[T Op](mux *http.ServeMux, s serverOps) {
	handle(mux, func(w http.ResponseWriter, op T) {
		name, _, _ := strings.Cut(op.event(), " ")
		end := s.start(name, op.event())
		res := stream(w, func(o installer.Options) (*installer.Result, error) { return s.run(op, o) })
		end()
		s.selfUpdated(res)
	})
}

// run runs op with the options the agent gives every op.
func (s serverOps) run(op Op, o installer.Options) (*installer.Result, error) {
	// A workflow's steps go to the agent's log too.
	rep := o.Reporter
	o.Reporter = stack.ReporterFunc(func(ev stack.Event) {
		if ev.Action == stack.ActionStep {
			s.logf("event=step workflow=%q step=%q", ev.Service, ev.Detail)
		}
		rep.Report(ev)
	})
	o.Paths = s.paths
	o.ConfirmEngineRestart = func(string) bool { return op.restartsEngine() }
	o.ReleaseHTTPPort = s.release
	return op.run(s.ctx, s.wf, o)
}

// selfUpdated restarts the agent on the binary an op just installed, once
// the op's answer is sent: it continues the op from there
// (continuation.go).
func (s serverOps) selfUpdated(res *installer.Result) {
	if res == nil || res.SelfUpdate == nil {
		return
	}
	su := res.SelfUpdate
	s.logf("event=self-updated from=%s to=%s binary=%q previous=%q continue_to=%q", su.From, su.To, su.Binary, su.Previous, su.For)
	if s.restart != nil {
		s.restart(fmt.Sprintf("carto-appliance updated itself to %s", su.To))
	}
}

// licenseAnswer is the body of a licence op's answer.
type licenseAnswer struct {
	Status *license.Status `json:"status,omitempty"`
	Error  *apiError       `json:"error,omitempty"`
}

// handleLicenseOp serves the licence op type T.
func handleLicenseOp[T LicenseOp](mux *http.ServeMux, s serverOps) {
	handle(mux, func(w http.ResponseWriter, op T) {
		defer s.start(op.event(), op.event())()
		st, err := op.run(s.ctx, s.wf, s.paths)
		ans := licenseAnswer{Status: st}
		if err != nil {
			ans.Error = toAPIError(err)
		}
		writeJSON(w, http.StatusOK, ans)
	})
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
// then its result or error as JSON lines; it returns the result.
func stream(w http.ResponseWriter, op func(installer.Options) (*installer.Result, error)) *installer.Result {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	res, _ := runSending(streamTo(w), op)
	return res
}

// streamTo sends messages as JSON lines to w, each flushed.
func streamTo(w http.ResponseWriter) func(message) {
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	return func(m message) {
		mu.Lock()
		defer mu.Unlock()
		// A CLI that went away stops reading; the operation goes on.
		if enc.Encode(m) == nil {
			http.NewResponseController(w).Flush()
		}
	}
}

// runSending runs an operation, sending its events, its pull progress and
// then its result or error, which it returns.
func runSending(send func(message), op func(installer.Options) (*installer.Result, error)) (*installer.Result, error) {
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
	return res, err
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
