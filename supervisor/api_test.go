package supervisor

import (
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
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
	"github.com/cartodb/carto-appliance/license"
	"github.com/cartodb/carto-appliance/preflight"
	"github.com/cartodb/carto-appliance/stack"
)

// serve runs the API for an empty (not installed) node and returns its
// paths.
func serve(t *testing.T) config.Paths {
	t.Helper()
	return serveWith(t, ServeOptions{})
}

// serveWith runs the API with opts (its paths in a temp dir) until the
// test ends.
func serveWith(t *testing.T, opts ServeOptions) config.Paths {
	t.Helper()
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	ln, err := Listen(paths)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opts.Paths = paths
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	go func() { done <- Serve(ctx, ln, opts) }()
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
	res, err := Do(ctx, c, installer.Options{}, ControlOp{Action: "reboot"})
	if err == nil || !strings.Contains(err.Error(), `unknown action "reboot"`) || res != nil {
		t.Errorf("an unknown action: %v, %+v", err, res)
	}
	events := 0
	_, err = Do(ctx, c, installer.Options{Reporter: stack.ReporterFunc(func(stack.Event) { events++ })}, ApplyOp{})
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

// Every field that crosses the socket has a JSON name of its own, in
// snake_case: renaming a Go field must not change the wire (nor `status
// --json`, which prints the same types).
func TestWireTypesAreTagged(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] || typ.PkgPath() == "time" || typ == reflect.TypeOf(json.RawMessage{}) {
			return
		}
		seen[typ] = true
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			tag, ok := f.Tag.Lookup("json")
			name, _, _ := strings.Cut(tag, ",")
			switch {
			case f.Anonymous && !ok:
				// Embedded: its fields are inlined, each checked.
			case !ok || name == "":
				t.Errorf("%s.%s (%s) has no JSON name", path, f.Name, typ)
				continue
			case name == "-":
				continue
			case !regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`).MatchString(name):
				t.Errorf("%s.%s: JSON name %q is not snake_case", path, f.Name, name)
			}
			walk(f.Type, path+"."+f.Name)
		}
	}
	for _, v := range []any{VersionInfo{}, ApplyOp{}, ControlOp{}, InstallOp{}, ProxySetOp{}, ProxyClearOp{}, CertsOp{}, UpgradeOp{}, RollbackOp{}, LicenseUpdateOp{}, LicenseCheckOp{}, licenseAnswer{}, message{}, apiError{}} {
		walk(reflect.TypeOf(v), reflect.TypeOf(v).Name())
	}
}

// Every error kind crosses the socket as the sentinel (or, for a failed
// preflight, the error with its report) the CLI maps to an exit code.
func TestErrorKindsCrossTheSocket(t *testing.T) {
	report := &preflight.Report{Failed: true, Checks: []preflight.Check{{ID: "memory", Title: "Memory", Status: preflight.Fail, Detail: "2 GiB", Fix: "give the VM 16 GiB"}}}
	var next error
	paths := serveWith(t, ServeOptions{Workflows: Workflows{
		Apply: func(context.Context, installer.Options) (*installer.Result, error) {
			return &installer.Result{Preflight: report}, next
		},
	}})
	ctx := context.Background()
	c, err := Dial(ctx, paths)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, sentinel := range []error{installer.ErrUnknownService, license.ErrInvalid, installer.ErrUpgradeRolledBack, installer.ErrRollbackFailed, installer.ErrNotInstalled, ErrBadRequest} {
		next = fmt.Errorf("doing it: %w", sentinel)
		_, err := Do(ctx, c, installer.Options{}, ApplyOp{})
		if !errors.Is(err, sentinel) || err.Error() != next.Error() {
			t.Errorf("sent %q, got %v (kind lost: %v)", next, err, !errors.Is(err, sentinel))
		}
	}
	next = &preflight.FailedError{Report: report}
	res, err := Do(ctx, c, installer.Options{}, ApplyOp{})
	var pf *preflight.FailedError
	if !errors.As(err, &pf) || len(pf.Report.Failures()) != 1 || pf.Report.Failures()[0].Fix != "give the VM 16 GiB" || err.Error() != next.Error() {
		t.Errorf("a failed preflight came back as %v (%#v)", err, pf)
	}
	if res == nil || res.Preflight == nil || !res.Preflight.Failed {
		t.Errorf("the result lost its preflight report: %+v", res)
	}
	next = errors.New("plain")
	if _, err := Do(ctx, c, installer.Options{}, ApplyOp{}); errors.Is(err, installer.ErrNotInstalled) || errors.As(err, &pf) {
		t.Errorf("a plain error gained a kind: %v", err)
	}
}

// A CLI newer than the running agent (or older) refuses to talk to it,
// and says what to do.
func TestDialChecksTheAPIVersion(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"an agent from before versioning", http.NotFound, "systemctl restart carto-appliance"},
		{"an older agent", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, VersionInfo{API: APIVersion - 1, Binary: "0.9", PID: 7})
		}, "systemctl restart carto-appliance"},
		{"a newer agent", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, VersionInfo{API: APIVersion + 1, Binary: "9.9", PID: 7})
		}, "older than the running agent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			paths := config.Paths{ConfigDir: dir, StateDir: dir}
			ln, err := net.Listen("unix", SocketPath(paths))
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: tc.handler}
			go srv.Serve(ln)
			defer srv.Close()
			_, err = Dial(context.Background(), paths)
			if !errors.Is(err, ErrAPIVersion) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrAPIVersion saying %q", err, tc.want)
			}
		})
	}
}

// Stopping the API waits for an apply under way (its CLI gets the result)
// and cuts followed logs.
func TestServeDrainsAnApplyAndCutsFollowedLogs(t *testing.T) {
	dir := t.TempDir()
	paths := config.Paths{ConfigDir: filepath.Join(dir, "config"), StateDir: filepath.Join(dir, "state")}
	ln, err := Listen(paths)
	if err != nil {
		t.Fatal(err)
	}
	applying, release := make(chan struct{}), make(chan struct{})
	var applyCtx context.Context
	var log logLines
	changed := make(chan struct{}, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ln, ServeOptions{Paths: paths, Logf: log.logf, StopBound: 10 * time.Second,
			Changed: func() { changed <- struct{}{} },
			Workflows: Workflows{
				Apply: func(ctx context.Context, o installer.Options) (*installer.Result, error) {
					applyCtx = ctx
					close(applying)
					<-release
					return &installer.Result{Version: "2026.1"}, ctx.Err()
				},
				Logs: func(ctx context.Context, _ config.Paths, w io.Writer, _ stack.LogsOptions) error {
					w.Write([]byte("a line\n"))
					<-ctx.Done()
					return ctx.Err()
				},
			}})
	}()
	c, err := Dial(ctx, paths)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	logsDone := make(chan error, 1)
	following := make(chan struct{})
	var once sync.Once
	lw := writerFunc(func(p []byte) (int, error) { once.Do(func() { close(following) }); return len(p), nil })
	go func() { logsDone <- c.Logs(context.Background(), lw, stack.LogsOptions{Follow: true}) }()
	<-following
	type outcome struct {
		res *installer.Result
		err error
	}
	applied := make(chan outcome, 1)
	go func() {
		res, err := Do(context.Background(), c, installer.Options{}, ApplyOp{})
		applied <- outcome{res, err}
	}()
	<-applying
	cancel()
	select {
	case err := <-logsDone:
		if err != nil {
			t.Errorf("followed logs ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("followed logs held the stop")
	}
	eventuallyTrue(t, func() bool { return log.has("event=api-draining op=apply") })
	select {
	case <-served:
		t.Fatal("Serve returned while an apply was under way")
	default:
	}
	if applyCtx.Err() != nil {
		t.Error("the apply was cancelled by the stop")
	}
	close(release)
	o := <-applied
	if o.err != nil || o.res == nil || o.res.Version != "2026.1" {
		t.Errorf("the drained apply answered %+v, %v", o.res, o.err)
	}
	if err := <-served; err != nil {
		t.Error(err)
	}
	if !log.has("event=api-drained op=apply") {
		t.Errorf("no api-drained line:\n%s", log.String())
	}
	select {
	case <-changed:
	default:
		t.Error("the loop was not told of the apply")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
