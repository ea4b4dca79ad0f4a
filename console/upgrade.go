package console

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// upgrades is the upgrade the console started last: one at a time.
type upgrades struct {
	mu  sync.Mutex
	run *upgradeRun // guarded by mu; nil until the first
}

// start begins a run to to, unless one is under way (then it returns
// that one and false).
func (u *upgrades) start(to string, now time.Time) (*upgradeRun, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.run != nil && !u.run.snapshot(0).Done {
		return u.run, false
	}
	u.run = &upgradeRun{to: to, started: now, changed: make(chan struct{})}
	return u.run, true
}

func (u *upgrades) last() *upgradeRun {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.run
}

// progressEvent is one step's change of state, as the Backend reports it
// and /events/upgrade streams it.
type progressEvent struct {
	Step  string `json:"step"`
	State string `json:"state"`
}

// upgradeRun is one upgrade's progress; streams wait on changed, which
// is closed and replaced at every change.
type upgradeRun struct {
	to      string
	started time.Time

	mu      sync.Mutex
	events  []progressEvent // guarded by mu
	done    bool            // guarded by mu
	err     string          // guarded by mu
	ended   time.Time       // guarded by mu
	changed chan struct{}   // guarded by mu
}

// runView is a run as the upgrade page and its stream show it.
type runView struct {
	To      string          `json:"to"`
	Started time.Time       `json:"started"`
	Events  []progressEvent `json:"-"`
	Done    bool            `json:"done"`
	Ended   time.Time       `json:"ended,omitzero"`
	Error   string          `json:"error,omitempty"`
	// Steps are each step's last state, in the order they started.
	Steps []progressEvent `json:"-"`
	// changed is closed at the run's next change.
	changed <-chan struct{}
}

func (run *upgradeRun) progress(step, state string) {
	run.mu.Lock()
	defer run.mu.Unlock()
	if run.done {
		return // the Backend promised not to; a late call changes nothing
	}
	run.events = append(run.events, progressEvent{Step: step, State: state})
	run.notify()
}

func (run *upgradeRun) finish(err error, now time.Time) {
	run.mu.Lock()
	defer run.mu.Unlock()
	run.done, run.ended = true, now
	if err != nil {
		run.err = err.Error()
	}
	run.notify()
}

func (run *upgradeRun) notify() {
	close(run.changed)
	run.changed = make(chan struct{})
}

// snapshot is the run now, with its events from the from'th on.
func (run *upgradeRun) snapshot(from int) runView {
	run.mu.Lock()
	defer run.mu.Unlock()
	v := runView{To: run.to, Started: run.started, Done: run.done, Ended: run.ended, Error: run.err, changed: run.changed}
	v.Events = append(v.Events, run.events[min(from, len(run.events)):]...)
	at := map[string]int{}
	for _, e := range run.events {
		if i, ok := at[e.Step]; ok {
			v.Steps[i].State = e.State
			continue
		}
		at[e.Step] = len(v.Steps)
		v.Steps = append(v.Steps, e)
	}
	return v
}

// upgradeData is the upgrade page's.
type upgradeData struct {
	Check      *UpgradeView
	CheckError string
	// Run is the upgrade the console started last; nil when none.
	Run *runView
	// To is the version the form proposes.
	To string
}

func (c *console) upgradePage(w http.ResponseWriter, r *http.Request, s session) {
	c.renderUpgrade(w, r, http.StatusOK, c.pageFor(s, "Upgrade", "upgrade"), "")
}

func (c *console) renderUpgrade(w http.ResponseWriter, r *http.Request, status int, p page, to string) {
	d := &upgradeData{To: to}
	if run := c.upgrades.last(); run != nil {
		v := run.snapshot(0)
		d.Run = &v
	}
	check, err := c.backend.UpgradeCheck(r.Context())
	if err != nil {
		d.CheckError = "Checking for upgrades: " + err.Error()
	} else {
		d.Check = check
		if d.To == "" {
			d.To = check.Latest
		}
	}
	p.Data = d
	c.render(w, status, "upgrade", p)
}

// startUpgrade starts an upgrade in the background and sends the
// operator to the upgrade page, which streams its progress.
func (c *console) startUpgrade(w http.ResponseWriter, r *http.Request, s session) {
	p := c.pageFor(s, "Upgrade", "upgrade")
	to := strings.TrimSpace(r.PostForm.Get("to"))
	if err := checkVersion(to); err != nil {
		p.Error = err.Error()
		c.renderUpgrade(w, r, http.StatusBadRequest, p, to)
		return
	}
	ip := clientIP(r)
	run, ok := c.upgrades.start(to, c.now())
	if !ok {
		c.logf("event=console-upgrade-refused ip=%s to=%s running=%s", ip, to, run.to)
		p.Error = fmt.Sprintf("An upgrade to %s is already under way (started %s): wait for it to end.", run.to, run.started.UTC().Format(time.RFC3339))
		c.renderUpgrade(w, r, http.StatusConflict, p, to)
		return
	}
	c.logf("event=console-upgrade ip=%s to=%s", ip, to)
	// The upgrade outlives the request: the operator may close the tab.
	ctx := context.WithoutCancel(r.Context())
	go func() {
		err := c.runUpgrade(ctx, run)
		run.finish(err, c.now())
		if err != nil {
			c.logf("event=console-upgrade-done ip=%s to=%s outcome=failed err=%q", ip, to, err)
		} else {
			c.logf("event=console-upgrade-done ip=%s to=%s outcome=succeeded", ip, to)
		}
	}()
	http.Redirect(w, r, "/upgrade", http.StatusSeeOther)
}

// runUpgrade runs the Backend's upgrade; a panic in it ends the run as
// failed instead of the agent.
func (c *console) runUpgrade(ctx context.Context, run *upgradeRun) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the upgrade stopped on an internal error: %v", p)
		}
	}()
	return c.backend.Upgrade(ctx, run.to, run.progress)
}

// upgradeEvents streams the last upgrade's steps: those so far, then each
// as it changes, then its end ("done"). With no upgrade it says "idle".
func (c *console) upgradeEvents(w http.ResponseWriter, r *http.Request, s session) {
	ctx := r.Context()
	run := c.upgrades.last()
	ev := startEvents(w)
	if run == nil {
		ev.send("idle", []byte("{}"))
		return
	}
	// The session is checked now and then: the stream does not keep it
	// alive, and it must not outlive it.
	tick := time.NewTicker(c.statusEvery)
	defer tick.Stop()
	sent := 0
	for {
		v := run.snapshot(sent)
		for _, e := range v.Events {
			if ev.sendJSON("step", e) != nil {
				return
			}
		}
		sent += len(v.Events)
		if v.Done {
			ev.sendJSON("done", v)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-v.changed:
		case <-tick.C:
			if !c.sessions.alive(s.id, c.now()) {
				ev.send("expired", []byte("{}"))
				return
			}
		}
	}
}
