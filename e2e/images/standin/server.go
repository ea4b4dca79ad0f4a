package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// server holds the state of the HTTP handlers.
type server struct {
	cfg      config
	hostname string
	getenv   func(string) string
	environ  func() []string
	healthy  atomic.Bool
	// exit ends the process; tests replace it.
	exit func(code int)
}

func newServer(cfg config, healthy bool) *server {
	host, _ := os.Hostname()
	s := &server{
		cfg:      cfg,
		hostname: host,
		getenv:   os.Getenv,
		environ:  os.Environ,
		exit:     os.Exit,
	}
	s.healthy.Store(healthy)
	return s
}

// serve listens on the image's ports until ctx is cancelled.
func serve(ctx context.Context, cfg config, healthy bool) error {
	s := newServer(cfg, healthy)
	servers := map[string]http.Handler{":3000": s.handler()}
	switch cfg.Image {
	case "http-cache":
		upstream := s.getenv("STANDIN_UPSTREAM")
		if upstream == "" {
			upstream = "http://maps-api:3000"
		}
		h, err := s.cacheHandler(upstream)
		if err != nil {
			return err
		}
		servers[":6081"] = h
	case "router-metrics":
		servers[":5447"] = s.handler()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for addr, h := range servers {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", addr, err)
		}
		log.Printf("listening on %s", addr)
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				errOnce.Do(func() { firstErr = fmt.Errorf("serving %s: %w", addr, err) })
				cancel() // one port down takes the others down
			}
		})
		wg.Go(func() {
			<-ctx.Done()
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			srv.Shutdown(sctx)
		})
	}
	wg.Wait()
	log.Print("stopped")
	return firstErr
}

// handler serves the stand-in API on the component's own port.
func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /env", s.env)
	mux.HandleFunc("GET /file", s.file)
	mux.HandleFunc("GET /whoami", s.whoami)
	mux.HandleFunc("GET /db", s.db)
	mux.HandleFunc("GET /redis", s.redis)
	mux.HandleFunc("GET /fetch", s.fetchURL)
	mux.HandleFunc("POST /control/unhealthy", s.setHealth(false))
	mux.HandleFunc("POST /control/healthy", s.setHealth(true))
	mux.HandleFunc("POST /control/exit", s.controlExit)
	mux.HandleFunc("/control/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "control endpoints take POST", http.StatusMethodNotAllowed)
	})
	mux.HandleFunc("/", s.echo)
	return logRequests(mux)
}

// cacheHandler is http-cache's :6081: /health, and every other request
// proxied to upstream with X-Cache: standin added.
func (s *server) cacheHandler(upstream string) (http.Handler, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("STANDIN_UPSTREAM %q: not a URL", upstream)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(r *http.Response) error {
		r.Header.Set("X-Cache", "standin")
		return nil
	}
	proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		w.Header().Set("X-Cache", "standin")
		http.Error(w, "standin http-cache: upstream "+upstream+": "+err.Error(), http.StatusBadGateway)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.Handle("/", proxy)
	return logRequests(mux), nil
}

func (s *server) health(w http.ResponseWriter, _ *http.Request) {
	if !s.healthy.Load() {
		http.Error(w, "unhealthy", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok")
}

func (s *server) env(w http.ResponseWriter, _ *http.Request) {
	m := map[string]string{}
	for _, kv := range s.environ() {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	writeJSON(w, http.StatusOK, m)
}

func (s *server) file(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Query().Get("path")
	if p == "" {
		http.Error(w, "missing ?path=", http.StatusBadRequest)
		return
	}
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		http.Error(w, err.Error(), http.StatusNotFound)
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(b)
	}
}

// Whoami is /whoami's answer.
type Whoami struct {
	Image    string   `json:"image"`
	Version  string   `json:"version"`
	Hostname string   `json:"hostname"`
	Args     []string `json:"args"`
}

func (s *server) whoami(w http.ResponseWriter, _ *http.Request) {
	args := s.cfg.Args
	if args == nil {
		args = []string{}
	}
	writeJSON(w, http.StatusOK, Whoami{Image: s.cfg.Image, Version: s.cfg.Version, Hostname: s.hostname, Args: args})
}

// Migration is one row of carto_migrations.
type Migration struct {
	Version   string    `json:"version"`
	AppliedAt time.Time `json:"applied_at"`
}

func (s *server) db(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	dsn, err := workspaceDSN(s.getenv)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT version, applied_at FROM carto_migrations ORDER BY applied_at, version`)
	if err != nil {
		http.Error(w, "querying carto_migrations: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer rows.Close()
	out := []Migration{}
	for rows.Next() {
		var m Migration
		if err := rows.Scan(&m.Version, &m.AppliedAt); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) redis(w http.ResponseWriter, r *http.Request) {
	host, port := s.getenv("REDIS_HOST"), s.getenv("REDIS_PORT")
	if host == "" {
		http.Error(w, "REDIS_HOST is not set", http.StatusServiceUnavailable)
		return
	}
	if port == "" {
		port = "6379"
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	answer, err := redisPing(ctx, net.JoinHostPort(host, port), s.getenv("REDIS_PASSWORD"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, answer)
}

func (s *server) setHealth(healthy bool) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		s.healthy.Store(healthy)
		log.Printf("control: healthy=%t", healthy)
		io.WriteString(w, "ok")
	}
}

func (s *server) controlExit(w http.ResponseWriter, r *http.Request) {
	code := 1
	if c := r.URL.Query().Get("code"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 0 || n > 255 {
			http.Error(w, "code: expected 0-255", http.StatusBadRequest)
			return
		}
		code = n
	}
	log.Printf("control: exiting with status %d", code)
	io.WriteString(w, "ok")
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	// Let the answer reach the client before the process goes.
	time.AfterFunc(100*time.Millisecond, func() { s.exit(code) })
}

// Echo is the answer for any path the stand-in has no handler for.
type Echo struct {
	Image   string `json:"image"`
	Version string `json:"version"`
	Path    string `json:"path"`
}

func (s *server) echo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Echo{Image: s.cfg.Image, Version: s.cfg.Version, Path: r.URL.Path})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// logRequests logs every request but the healthchecks' (one every 5 s).
func logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			log.Printf("%s %s %s", r.RemoteAddr, r.Method, r.URL.RequestURI())
		}
		h.ServeHTTP(w, r)
	})
}
