package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
)

// Front is the agent's server on the router's HTTP port in acme mode
// (installer.ACMEFront): the ACME CA's HTTP-01 challenges, and a redirect
// to https for everything else. It follows the installed settings: started
// when acme mode is on, moved when the address changes, closed otherwise.
// The loop syncs it at every pass; an operation the agent runs that gives
// the port back to the router syncs it at once (Release), so no process
// waits for another to notice a file.
type Front struct {
	paths config.Paths
	logf  func(string, ...any)

	mu      sync.Mutex
	addr    string
	srv     *http.Server
	handler atomic.Value // http.Handler: swapped in place when only it changes
	stamp   string       // of the settings it was last synced with
	lastErr string       // logged once, not at every retry
}

// NewFront returns the front of the node at paths, not listening yet.
func NewFront(paths config.Paths, logf func(string, ...any)) *Front {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Front{paths: paths.WithDefaults(), logf: logf}
}

// frontEvery is how often the loop looks at the settings for the front:
// it matters only for a change made without the agent (--no-service),
// which waits for the front to free the HTTP port.
const frontEvery = 5 * time.Second

func (f *Front) failed(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if msg != f.lastErr {
		f.lastErr = msg
		f.logf("%s", msg)
	}
}

// Release brings the front in line with the committed settings now: an
// operation leaving acme mode calls it (installer.Options.ReleaseHTTPPort)
// before the router publishes the HTTP port again.
func (f *Front) Release(context.Context) error {
	f.Sync()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		return fmt.Errorf("the agent's front still answers on %s although the settings leave acme mode: restart the agent (systemctl restart carto-appliance) and run this again", f.addr)
	}
	return nil
}

// Sync brings the front in line with the installed settings when they
// changed since the last look. A port it cannot bind yet (the router
// still publishes it while an install switches modes) is tried again on
// the next pass.
func (f *Front) Sync() {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Missing files (not installed yet) are a stamp of their own.
	stamp, _ := filesStamp(f.paths.ConfigDir, config.ConfigFileName, config.EnvFileName)
	if stamp == f.stamp {
		return
	}
	want, err := installer.ACMEFront(f.paths)
	if err != nil {
		f.failed("event=front-failed err=%q", oneLine(err))
		return
	}
	if want != nil && f.srv != nil && want.Addr == f.addr {
		f.handler.Store(want.Handler)
		f.stamp = stamp
		return
	}
	if f.srv != nil {
		f.logf("event=front-closed addr=%s", f.addr)
	}
	f.close()
	if want == nil {
		f.stamp = stamp
		return
	}
	ln, err := net.Listen("tcp", want.Addr)
	if err != nil {
		f.failed("event=front-failed addr=%s err=%q", want.Addr, oneLine(err))
		return
	}
	f.handler.Store(want.Handler)
	f.addr, f.stamp, f.lastErr = want.Addr, stamp, ""
	f.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.handler.Load().(http.Handler).ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	go func(srv *http.Server) {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			f.logf("event=front-stopped addr=%s err=%q", want.Addr, oneLine(err))
		}
	}(f.srv)
	f.logf("event=front-listening addr=%s", want.Addr)
}

// Close stops the front.
func (f *Front) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.close()
}

func (f *Front) close() {
	if f.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	f.srv.Shutdown(ctx)
	f.srv, f.addr = nil, ""
}
