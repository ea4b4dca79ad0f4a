package loadgen

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Failure kinds besides an answer's status code ("502", "404", ...).
const (
	KindOverloaded = "overloaded" // a tick found MaxInFlight requests waiting
	KindTimeout    = "timeout"
	KindCanceled   = "canceled" // the caller's context ended
	KindRefused    = "connection refused"
	KindReset      = "connection reset"
	KindBrokenPipe = "broken pipe"
	KindEOF        = "EOF" // the connection closed before a whole answer
	KindUnreach    = "unreachable"
	KindTLS        = "tls"
	KindRequest    = "bad request" // the request could not be built (BaseURL)
	KindOther      = "other"
)

// maxSamples is how many failures are kept whole, the first ones: enough
// to see when and how it started, bounded however long it fails.
const maxSamples = 10

// Classify names the kind of a request's error, among a few short kinds
// that a table can show.
func Classify(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return KindTimeout
	case errors.Is(err, context.Canceled):
		return KindCanceled
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindRefused
	case errors.Is(err, syscall.ECONNRESET):
		return KindReset
	case errors.Is(err, syscall.EPIPE):
		return KindBrokenPipe
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return KindEOF
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return KindUnreach
	case isTLS(err):
		return KindTLS
	}
	return KindOther
}

func isTLS(err error) bool {
	var alert tls.AlertError
	var header tls.RecordHeaderError
	var verify *tls.CertificateVerificationError
	return errors.As(err, &alert) || errors.As(err, &header) || errors.As(err, &verify) ||
		strings.Contains(err.Error(), "tls: ")
}

// Result is what a load sent and what failed.
type Result struct {
	// Sent counts every request due, those skipped as overloaded
	// included, so that Failed/Sent is the share users would have lost.
	Sent, Failed int
	// Duration is how long the load sent requests.
	Duration time.Duration
	// StoppedAtLimit says the load ended by MaxDuration rather than Stop:
	// what it measured may have gone on after it.
	StoppedAtLimit bool
	// Kinds counts the failures by kind (a status code or an error kind).
	Kinds map[string]int
	// PathFailures counts the failures by path.
	PathFailures map[string]int
	// MaxLatency and P99 are over the requests sent (failed ones
	// included: a timeout is a long wait for its user).
	MaxLatency, P99 time.Duration
	// Samples are the first failures.
	Samples []Failure
}

// Failure is one failed request.
type Failure struct {
	At        time.Duration // since the load started
	Path      string
	KeepAlive bool // on the kept-alive half
	Kind      string
	Detail    string // the error or status line
}

func (f Failure) String() string {
	conn := "new connection"
	if f.KeepAlive {
		conn = "kept alive"
	}
	return fmt.Sprintf("+%s %s (%s): %s: %s", roundLatency(f.At), f.Path, conn, f.Kind, f.Detail)
}

// String is the result on one line, e.g. "2/3012 failed (max 41ms, p99
// 12ms): 502 x2".
func (r Result) String() string {
	s := fmt.Sprintf("%d/%d failed (max %s, p99 %s)", r.Failed, r.Sent, roundLatency(r.MaxLatency), roundLatency(r.P99))
	if k := r.KindsString(); k != "" {
		s += ": " + k
	}
	if r.StoppedAtLimit {
		s += " (stopped at its maximum duration)"
	}
	return s
}

// KindsString is the failures by kind, most frequent first, e.g. "502
// x10, EOF x2"; empty when none failed.
func (r Result) KindsString() string { return countsString(r.Kinds) }

// PathsString is the failures by path, most frequent first.
func (r Result) PathsString() string { return countsString(r.PathFailures) }

func countsString(counts map[string]int) string {
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b string) int {
		return cmp.Or(cmp.Compare(counts[b], counts[a]), strings.Compare(a, b))
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s x%d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}

// roundLatency keeps a latency readable: milliseconds, or tens of
// microseconds below one.
func roundLatency(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// outcome is one request's end.
type outcome struct {
	at       time.Duration
	path     string
	half     int
	kind     string // empty: it succeeded
	detail   string
	latency  time.Duration
	answered bool // it was sent (not skipped as overloaded)
}

// recorder accumulates outcomes; the Load's mutex guards it.
type recorder struct {
	sent, failed   int
	duration       time.Duration
	stoppedAtLimit bool
	kinds, paths   map[string]int
	samples        []Failure
	// latencies are kept whole for the p99: 8 bytes a request, under
	// 5 MiB at 1000 requests per second for 10 minutes.
	latencies []time.Duration
}

func newRecorder() recorder {
	return recorder{kinds: map[string]int{}, paths: map[string]int{}}
}

func (r *recorder) add(o outcome) {
	r.sent++
	if o.answered {
		r.latencies = append(r.latencies, o.latency)
	}
	if o.kind == "" {
		return
	}
	r.failed++
	r.kinds[o.kind]++
	r.paths[o.path]++
	if len(r.samples) < maxSamples {
		r.samples = append(r.samples, Failure{At: o.at, Path: o.path, KeepAlive: o.half == keptAlive, Kind: o.kind, Detail: o.detail})
	}
}

func (r *recorder) result() Result {
	res := Result{
		Sent: r.sent, Failed: r.failed, Duration: r.duration, StoppedAtLimit: r.stoppedAtLimit,
		Kinds: maps.Clone(r.kinds), PathFailures: maps.Clone(r.paths), Samples: slices.Clone(r.samples),
	}
	if len(r.latencies) == 0 {
		return res
	}
	sorted := slices.Clone(r.latencies)
	slices.Sort(sorted)
	res.MaxLatency = sorted[len(sorted)-1]
	// The smallest latency at least 99% of the requests stayed under.
	res.P99 = sorted[(len(sorted)*99+99)/100-1]
	return res
}
