// Package loadgen sends a steady stream of GET requests to an HTTP(S)
// endpoint and counts those that fail, to measure what a change of the
// stack behind it (an upgrade, a config apply, compose's up -d) costs the
// users who happen to be using it at that moment.
//
// Half the requests go over kept-alive connections (as a browser's do),
// half over a new TCP (and TLS) connection each (as a script's or a
// health checker's): a router that is replaced breaks the first kind in
// flight and refuses the second, so both are counted.
package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultRate        = 100
	DefaultTimeout     = 30 * time.Second
	DefaultMaxDuration = 10 * time.Minute
	DefaultMaxInFlight = 256
	// maxRate keeps the ticker's period above zero; one machine's bench
	// does not need more.
	maxRate = 10000
)

// Options configures a load.
type Options struct {
	// BaseURL is where requests go, e.g. https://10.0.0.5:18443; each
	// request's URL is BaseURL followed by one of Paths.
	BaseURL string
	// Host is the Host header and, for https, the TLS server name (e.g.
	// the stack's domain); empty: BaseURL's host.
	Host string
	// TLS is the client's TLS configuration for an https BaseURL (its
	// ServerName defaults to Host); nil: the system's roots.
	TLS *tls.Config
	// Paths are requested round-robin; empty: "/".
	Paths []string
	// Rate is the requests per second; 0: DefaultRate.
	Rate int
	// Timeout bounds each request, body included; 0: DefaultTimeout.
	Timeout time.Duration
	// MaxDuration stops the load by itself, so that a caller that never
	// gets to Stop (a hung command) does not load the stack forever; 0:
	// DefaultMaxDuration.
	MaxDuration time.Duration
	// MaxInFlight caps the requests waiting for an answer; a tick that
	// finds it reached is counted as failed ("overloaded") instead of
	// piling up; 0: DefaultMaxInFlight.
	MaxInFlight int
}

func (o Options) withDefaults() Options {
	if o.Rate <= 0 {
		o.Rate = DefaultRate
	}
	o.Rate = min(o.Rate, maxRate)
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxDuration <= 0 {
		o.MaxDuration = DefaultMaxDuration
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if len(o.Paths) == 0 {
		o.Paths = []string{"/"}
	}
	o.BaseURL = strings.TrimSuffix(o.BaseURL, "/")
	return o
}

// The two halves of the requests, by how they connect.
const (
	keptAlive = iota
	newConn
	halves
)

// errMaxDuration is the cause of the pacing loop's end when MaxDuration
// ran out (rather than Stop or the caller's context).
var errMaxDuration = errors.New("the load's maximum duration elapsed")

// Load is a running load; Stop ends it and says what failed.
type Load struct {
	opts       Options
	transports [halves]*http.Transport
	clients    [halves]*http.Client
	// reqCtx is the caller's context: Stop ends the pacing, never the
	// requests in flight, which are waited for and counted.
	reqCtx   context.Context
	stop     context.CancelFunc
	loopDone chan struct{}
	inFlight chan struct{}
	wg       sync.WaitGroup
	start    time.Time

	mu  sync.Mutex
	rec recorder

	once   sync.Once
	result Result
}

// Start begins sending requests at opts.Rate until Stop, MaxDuration or
// the end of ctx (which also cancels the requests in flight).
func Start(ctx context.Context, opts Options) *Load {
	opts = opts.withDefaults()
	loopCtx, stop := context.WithTimeoutCause(ctx, opts.MaxDuration, errMaxDuration)
	l := &Load{
		opts:     opts,
		reqCtx:   ctx,
		stop:     stop,
		loopDone: make(chan struct{}),
		inFlight: make(chan struct{}, opts.MaxInFlight),
		start:    time.Now(),
		rec:      newRecorder(),
	}
	for half := range halves {
		l.transports[half] = newTransport(opts, half == keptAlive)
		l.clients[half] = &http.Client{
			Transport: l.transports[half],
			// A redirect is the router's answer (http to https, a
			// login): it counts as served, not followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	go l.pace(loopCtx)
	return l
}

// newTransport is one half's transport: HTTP/1.1 (a custom TLS config
// leaves HTTP/2 off, as the router serves it), never through a proxy of
// the environment (the target is this machine).
func newTransport(opts Options, keepAlive bool) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsConfig(opts),
		TLSHandshakeTimeout: opts.Timeout,
		DisableKeepAlives:   !keepAlive,
		// As many idle connections as may be in flight, so that the
		// kept-alive half reuses rather than closes them after a burst.
		MaxIdleConnsPerHost: opts.MaxInFlight,
		DisableCompression:  true,
	}
}

func tlsConfig(opts Options) *tls.Config {
	cfg := &tls.Config{}
	if opts.TLS != nil {
		cfg = opts.TLS.Clone()
	}
	if cfg.ServerName == "" && opts.Host != "" {
		cfg.ServerName = opts.Host
		if h, _, err := net.SplitHostPort(opts.Host); err == nil {
			cfg.ServerName = h
		}
	}
	return cfg
}

// Done is closed once the load stops sending (Stop, MaxDuration or the
// caller's context); requests may still be in flight.
func (l *Load) Done() <-chan struct{} { return l.loopDone }

// Stop stops sending, waits for the requests in flight (each bounded by
// Timeout) and returns the result; later calls return the same result.
func (l *Load) Stop() Result {
	l.once.Do(func() {
		l.stop()
		<-l.loopDone
		l.wg.Wait()
		for _, t := range l.transports {
			t.CloseIdleConnections()
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.result = l.rec.result()
	})
	return l.result
}

// pace fires one request per tick. A ticker drops ticks its reader
// misses, but fire never blocks, so none is missed but by the scheduler.
func (l *Load) pace(ctx context.Context) {
	defer close(l.loopDone)
	tick := time.NewTicker(time.Second / time.Duration(l.opts.Rate))
	defer tick.Stop()
	for i := 0; ; i++ {
		l.fire(i)
		select {
		case <-ctx.Done():
			l.mu.Lock()
			l.rec.duration = time.Since(l.start)
			l.rec.stoppedAtLimit = errors.Is(context.Cause(ctx), errMaxDuration)
			l.mu.Unlock()
			return
		case <-tick.C:
		}
	}
}

// fire sends the i-th request without waiting for it. Paths go
// round-robin and each round over them alternates the half, so that every
// path is requested both ways.
func (l *Load) fire(i int) {
	path := l.opts.Paths[i%len(l.opts.Paths)]
	half := (i / len(l.opts.Paths)) % halves
	at := time.Since(l.start)
	select {
	case l.inFlight <- struct{}{}:
	default:
		l.record(outcome{at: at, path: path, half: half, kind: KindOverloaded,
			detail: fmt.Sprintf("%d requests already in flight", l.opts.MaxInFlight)})
		return
	}
	l.wg.Add(1)
	go func() {
		defer func() {
			<-l.inFlight
			l.wg.Done()
		}()
		began := time.Now()
		kind, detail := l.get(path, half)
		l.record(outcome{at: at, path: path, half: half, kind: kind, detail: detail, latency: time.Since(began), answered: true})
	}()
}

// get requests path and reads the answer whole; kind is empty on success.
func (l *Load) get(path string, half int) (kind, detail string) {
	ctx, cancel := context.WithTimeout(l.reqCtx, l.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.opts.BaseURL+path, nil)
	if err != nil {
		return KindRequest, fmt.Sprintf("building the request: %v", err)
	}
	if l.opts.Host != "" {
		req.Host = l.opts.Host
	}
	var tr progress
	req = req.WithContext(httptrace.WithClientTrace(ctx, tr.trace()))
	resp, err := l.clients[half].Do(req)
	if err != nil {
		return Classify(err), err.Error() + tr.String()
	}
	defer resp.Body.Close()
	// Read to the end: a body cut short is a failure the user sees, and
	// only a drained connection is reused.
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return Classify(err), fmt.Sprintf("reading the answer: %v%s", err, tr.String())
	}
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Sprint(resp.StatusCode), resp.Status
	}
	return "", ""
}

func (l *Load) record(o outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rec.add(o)
}

// progress is how far a request got, for a failure's detail: which hop
// a request that hung was waiting on (the connection to the router, its
// TLS handshake, or the router's answer, i.e. its upstream).
type progress struct {
	mu    sync.Mutex
	steps []string
	start time.Time
}

func (p *progress) trace() *httptrace.ClientTrace {
	p.start = time.Now()
	note := func(format string, args ...any) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.steps = append(p.steps, fmt.Sprintf("+%s ", time.Since(p.start).Round(time.Millisecond))+fmt.Sprintf(format, args...))
	}
	return &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			note("connection from %s (reused %t)", i.Conn.LocalAddr(), i.Reused)
		},
		ConnectDone: func(_, addr string, err error) {
			if err != nil {
				note("connect to %s: %v", addr, err)
			}
		},
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			if err != nil {
				note("TLS: %v", err)
			} else {
				note("TLS done")
			}
		},
		WroteRequest:         func(i httptrace.WroteRequestInfo) { note("request sent") },
		GotFirstResponseByte: func() { note("first byte of the answer") },
	}
}

// String is the steps reached, with the wall-clock time the request
// began (to match the router's and the appliance's logs).
func (p *progress) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf(" [began %s; %s]", p.start.Format("15:04:05.000"), strings.Join(p.steps, ", "))
}
