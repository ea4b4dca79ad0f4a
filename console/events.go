package console

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// eventStream writes server-sent events, each flushed at once.
type eventStream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func startEvents(w http.ResponseWriter) *eventStream {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	// A reverse proxy in front must not hold events back.
	h.Set("X-Accel-Buffering", "no")
	rc := http.NewResponseController(w)
	// A stream lasts longer than the server's write timeout, if it has
	// one. Should lifting it fail, the stream ends at the deadline and
	// the page's EventSource connects again.
	_ = rc.SetWriteDeadline(time.Time{})
	w.WriteHeader(http.StatusOK)
	e := &eventStream{w: w, rc: rc}
	e.flush()
	return e
}

// send writes one event; an empty name is the default "message". data
// spans several data: lines when it holds newlines.
func (e *eventStream) send(name string, data []byte) error {
	var b bytes.Buffer
	if name != "" {
		b.WriteString("event: " + name + "\n")
	}
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		b.WriteString("data: ")
		b.Write(line)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	if _, err := e.w.Write(b.Bytes()); err != nil {
		return err
	}
	e.flush()
	return nil
}

func (e *eventStream) sendJSON(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return e.send(name, b)
}

func (e *eventStream) flush() {
	// A writer that cannot flush sends everything at the end: late, but
	// still right.
	_ = e.rc.Flush()
}

// statusEvents streams the status every statusEvery, and at once after
// each change the backend tells of, until the client leaves or the session
// ends (the stream does not keep it alive).
func (c *console) statusEvents(w http.ResponseWriter, r *http.Request, s session) {
	ctx := r.Context()
	ev := startEvents(w)
	tick := time.NewTicker(c.statusEvery)
	defer tick.Stop()
	var changes <-chan struct{} // nil: the tick alone
	if n, ok := c.backend.(ChangeNotifier); ok {
		changes = n.Changes(ctx)
	}
	for {
		if !c.sessions.alive(s.id, c.now()) {
			ev.send("expired", []byte("{}"))
			return
		}
		st, err := c.backend.Status(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			err = ev.sendJSON("failure", map[string]string{"error": "reading the status: " + err.Error()})
		default:
			err = ev.sendJSON("", st)
		}
		if err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changes:
		}
	}
}

// maxLineBytes splits longer log lines into several events.
const maxLineBytes = 16 << 10

// lineEvents is the writer a followed log goes to: each line an event.
type lineEvents struct {
	mu      sync.Mutex
	ev      *eventStream
	partial []byte // guarded by mu: the last line, until its newline
}

func (l *lineEvents) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			for len(l.partial) >= maxLineBytes {
				if err := l.sendLine(l.partial[:maxLineBytes]); err != nil {
					return 0, err
				}
				l.partial = l.partial[maxLineBytes:]
			}
			break
		}
		line := append(l.partial, p[:i]...)
		l.partial = nil
		p = p[i+1:]
		for len(line) > maxLineBytes {
			if err := l.sendLine(line[:maxLineBytes]); err != nil {
				return 0, err
			}
			line = line[maxLineBytes:]
		}
		if err := l.sendLine(line); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// close sends what is left of the last line.
func (l *lineEvents) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) == 0 {
		return nil
	}
	defer func() { l.partial = nil }()
	return l.sendLine(l.partial)
}

func (l *lineEvents) sendLine(line []byte) error {
	// A carriage return ends an event's line too (progress bars write
	// them): dropped, it cannot cut the event.
	return l.ev.send("", bytes.ReplaceAll(line, []byte("\r"), nil))
}

// tailBuffer keeps the last max bytes of a log tail, whole lines only: a
// page does not hold gigabytes, and the backend is not made to fail.
type tailBuffer struct {
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.truncated = true
		t.buf.Next(over)
	}
	return len(p), nil
}

// String is the text kept, from the first whole line when cut.
func (t *tailBuffer) String() string {
	b := t.buf.Bytes()
	if t.truncated {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}
