package console

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestStatusEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	srv := h.serve()
	s := h.login()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	r := openEvents(ctx, t, srv, "/events/status", s)
	for i := range 2 { // the first at once, the next at the tick
		ev, err := nextEvent(r)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ev.name != "" {
			t.Fatalf("event %d is %q, want a status message", i, ev.name)
		}
		var st StatusView
		if err := json.Unmarshal([]byte(ev.data), &st); err != nil {
			t.Fatalf("event %d: %v in %q", i, err, ev.data)
		}
		if len(st.Services) != 2 || st.Services[1].Name != "maps-api" || !st.Services[1].CrashLoop || st.Services[1].Restarts != 7 {
			t.Errorf("event %d services %+v", i, st.Services)
		}
	}
}

func TestStatusEventsEndWithTheSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	r := statusStream(t, h)
	// The stream does not keep the session alive: idle, it ends.
	h.clock.advance(sessionIdle)
	for {
		ev, err := nextEvent(r)
		if err != nil {
			t.Fatalf("the stream ended without saying the session expired: %v", err)
		}
		if ev.name == "expired" {
			return
		}
	}
}

func TestUpgradeProgressStreamed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	h.backend.steps = []progressEvent{{"backup", "running"}, {"backup", "done"}, {"pull", "running"}}
	h.backend.hold = make(chan struct{})
	srv := h.serve()
	s := h.login()

	resp := h.post("/upgrade", url.Values{"to": {"2026.1.0"}}, s)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/upgrade" {
		t.Fatalf("POST /upgrade: %d to %q, want 303 to /upgrade", resp.StatusCode, resp.Header.Get("Location"))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	r := openEvents(ctx, t, srv, "/events/upgrade", s)
	var got []string
	for len(got) < 3 {
		ev, err := nextEvent(r)
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		if ev.name != "step" {
			t.Fatalf("event %q (%s), want steps first", ev.name, ev.data)
		}
		var p progressEvent
		if err := json.Unmarshal([]byte(ev.data), &p); err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Step+"="+p.State)
	}
	if want := "backup=running backup=done pull=running"; strings.Join(got, " ") != want {
		t.Errorf("steps %q, want %q", got, want)
	}

	// One upgrade at a time.
	resp = h.post("/upgrade", url.Values{"to": {"2026.2.0"}}, s)
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("a second upgrade: status %d, want 409", resp.StatusCode)
	}
	if b := body(t, resp); !strings.Contains(b, "An upgrade to 2026.1.0 is already under way") {
		t.Errorf("the page does not say an upgrade runs:\n%s", b)
	}
	page := body(t, h.get("/upgrade", s.cookie))
	if !strings.Contains(page, `<li data-step="pull" class="state-running">pull: running</li>`) || !strings.Contains(page, "Under way") {
		t.Errorf("the upgrade page does not show the run:\n%s", page)
	}

	close(h.backend.hold)
	for {
		ev, err := nextEvent(r)
		if err != nil {
			t.Fatalf("no done event: %v", err)
		}
		if ev.name == "step" {
			continue
		}
		if ev.name != "done" || !strings.Contains(ev.data, `"done":true`) || strings.Contains(ev.data, `"error"`) {
			t.Fatalf("event %q %s, want done without error", ev.name, ev.data)
		}
		break
	}
	if n := h.backend.called("Upgrade "); n != 1 {
		t.Errorf("Upgrade called %d times, want 1 (calls %q)", n, h.backend.calls)
	}
	waitFor(t, func() bool { return h.audit.has("event=console-upgrade-done", "to=2026.1.0", "outcome=succeeded") })
	if !h.audit.has("event=console-upgrade ", "to=2026.1.0") || !h.audit.has("event=console-upgrade-refused", "to=2026.2.0") {
		t.Errorf("audit lines %q", h.audit.all())
	}
	// Ended, it no longer blocks another.
	if resp := h.post("/upgrade", url.Values{"to": {"2026.2.0"}}, s); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("an upgrade after the first ended: status %d, want 303", resp.StatusCode)
	}
}

func TestUpgradeEventsIdle(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	srv := h.serve()
	s := h.login()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ev, err := nextEvent(openEvents(ctx, t, srv, "/events/upgrade", s))
	if err != nil || ev.name != "idle" {
		t.Errorf("got %q, %v; want idle", ev.name, err)
	}
}

func TestLogsFollow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	srv := h.serve()
	s := h.login()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	r := openEvents(ctx, t, srv, "/logs?service=router&lines=10&follow=1", s)
	for _, want := range []string{"line one", "line <two>"} {
		ev, err := nextEvent(r)
		if err != nil {
			t.Fatal(err)
		}
		if ev.name != "" || ev.data != want {
			t.Errorf("event %q %q, want the line %q", ev.name, ev.data, want)
		}
	}
	if h.backend.called("Logs router 10 true") != 1 {
		t.Errorf("calls %q, want Logs router 10 true", h.backend.calls)
	}
}

func TestLineEvents(t *testing.T) {
	t.Parallel()
	w := httptest.NewRecorder()
	le := &lineEvents{ev: startEvents(w)}
	for _, chunk := range []string{"par", "tial\nwhole\r\n", "progress 1%\rprogress 2%\n", "data: x\n", "last"} {
		le.Write([]byte(chunk))
	}
	le.close()
	long := strings.Repeat("y", maxLineBytes+3)
	le.Write([]byte(long + "\n"))
	want := "data: partial\n\ndata: whole\n\ndata: progress 1%progress 2%\n\ndata: data: x\n\ndata: last\n\n" +
		"data: " + long[:maxLineBytes] + "\n\ndata: yyy\n\n"
	if got := w.Body.String(); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

// notifyingBackend tells of changes when told to.
type notifyingBackend struct {
	*fakeBackend
	changes chan struct{}
}

func (n notifyingBackend) Changes(ctx context.Context) <-chan struct{} { return n.changes }

// A backend that tells of a change has the status sent at once, not at
// the next tick.
func TestStatusEventsOnChange(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	nb := notifyingBackend{fakeBackend: h.backend, changes: make(chan struct{}, 1)}
	h.c.backend = nb
	h.c.statusEvery = time.Hour
	r := statusStream(t, h)
	h.backend.mu.Lock()
	h.backend.status.Services[1].Restarts = 8
	h.backend.mu.Unlock()
	nb.changes <- struct{}{}
	ev, err := nextEvent(r)
	if err != nil {
		t.Fatalf("no status after the change (the tick is an hour): %v", err)
	}
	var st StatusView
	if err := json.Unmarshal([]byte(ev.data), &st); err != nil || st.Services[1].Restarts != 8 {
		t.Errorf("the status sent after the change: %v %+v", err, st.Services)
	}
}

// statusStream logs in to h's console and opens its status stream (for
// the test's duration, at most 5 s), past its first status.
func statusStream(t *testing.T, h *harness) *bufio.Reader {
	t.Helper()
	srv := h.serve()
	s := h.login()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	r := openEvents(ctx, t, srv, "/events/status", s)
	if _, err := nextEvent(r); err != nil {
		t.Fatal(err)
	}
	return r
}
