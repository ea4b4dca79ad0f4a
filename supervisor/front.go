package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/installer"
)

// front is the agent's server on the router's HTTP port in acme mode
// (installer.ACMEFront): the ACME CA's HTTP-01 challenges, and a redirect
// to https for everything else. It follows the installed settings: started
// when acme mode is on, moved when the address changes, closed otherwise.
type front struct {
	addr    string
	srv     *http.Server
	handler atomic.Value // http.Handler: swapped in place when only it changes
	stamp   string       // of the settings it was last synced with
	lastErr string       // logged once, not at every retry
}

// frontEvery is how often the settings are looked at for the front: an
// install leaving acme mode waits for the agent to free the HTTP port.
const frontEvery = time.Second

func (s *sup) frontFailed(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if msg != s.front.lastErr {
		s.front.lastErr = msg
		s.opts.Logf("%s", msg)
	}
}

// syncFront brings the front in line with the installed settings when
// they changed since the last look. A port it cannot bind yet (the router
// still publishes it while an install switches modes) is tried again on
// the next pass.
func (s *sup) syncFront() {
	// Missing files (not installed yet) are a stamp of their own.
	stamp, _ := filesStamp(s.opts.Paths.ConfigDir, config.ConfigFileName, config.EnvFileName)
	f := &s.front
	if stamp == f.stamp {
		return
	}
	want, err := installer.ACMEFront(s.opts.Paths)
	if err != nil {
		s.frontFailed("event=front-failed err=%q", oneLine(err))
		return
	}
	if want != nil && f.srv != nil && want.Addr == f.addr {
		f.handler.Store(want.Handler)
		f.stamp = stamp
		return
	}
	if f.srv != nil {
		s.opts.Logf("event=front-closed addr=%s", f.addr)
	}
	f.close()
	if want == nil {
		f.stamp = stamp
		return
	}
	ln, err := net.Listen("tcp", want.Addr)
	if err != nil {
		s.frontFailed("event=front-failed addr=%s err=%q", want.Addr, oneLine(err))
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
			s.opts.Logf("event=front-stopped addr=%s err=%q", want.Addr, oneLine(err))
		}
	}(f.srv)
	s.opts.Logf("event=front-listening addr=%s", want.Addr)
}

func (f *front) close() {
	if f.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	f.srv.Shutdown(ctx)
	f.srv, f.addr = nil, ""
}
