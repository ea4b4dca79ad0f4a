package steps

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// trace records what the steps did, in order.
type trace struct{ log []string }

func (tr *trace) step(name string, fail, failUndo bool) Step {
	s := Step{Name: name, Do: func(context.Context) error {
		tr.log = append(tr.log, "do "+name)
		if fail {
			return errors.New(name + " broke, password=hunter22")
		}
		return nil
	}}
	if name != "pull" { // a step with nothing to undo
		s.Undo = func(context.Context) error {
			tr.log = append(tr.log, "undo "+name)
			if failUndo {
				return errors.New("cannot undo " + name)
			}
			return nil
		}
	}
	return s
}

func states(r *Record) []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Name+":"+s.State)
	}
	return out
}

func TestRun(t *testing.T) {
	t.Parallel()
	redact := func(s string) string { return strings.ReplaceAll(s, "hunter22", "****") }
	for _, tc := range []struct {
		name        string
		on          OnFailure
		failAt      string
		failUndo    string
		wantLog     []string
		wantStates  []string
		wantOutcome string
		wantErr     string
	}{
		{name: "all done", on: Undo,
			wantLog:    []string{"do files", "do pull", "do converge"},
			wantStates: []string{"files:done", "pull:done", "converge:done"}, wantOutcome: Succeeded},
		{name: "keep", on: Keep, failAt: "converge",
			wantLog:    []string{"do files", "do pull", "do converge"},
			wantStates: []string{"files:done", "pull:done", "converge:failed"}, wantOutcome: Stopped, wantErr: "converge broke"},
		{name: "undo, last first, skipping steps with nothing to undo", on: Undo, failAt: "converge",
			wantLog:    []string{"do files", "do pull", "do converge", "undo converge", "undo files"},
			wantStates: []string{"files:undone", "pull:done", "converge:failed-undone"}, wantOutcome: RolledBack, wantErr: "converge broke"},
		{name: "undo fails", on: Undo, failAt: "converge", failUndo: "files",
			wantLog:    []string{"do files", "do pull", "do converge", "undo converge", "undo files"},
			wantStates: []string{"files:undo-failed", "pull:done", "converge:failed-undone"}, wantOutcome: Broken, wantErr: "undoing files failed too"},
		{name: "the failed step's own undo fails", on: Undo, failAt: "converge", failUndo: "converge",
			wantLog:    []string{"do files", "do pull", "do converge", "undo converge"},
			wantStates: []string{"files:done", "pull:done", "converge:undo-failed"}, wantOutcome: Broken, wantErr: "undoing converge failed too"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := Journal{Path: filepath.Join(t.TempDir(), "journal.json"), Redact: redact}
			tr := &trace{}
			var steps []Step
			for _, n := range []string{"files", "pull", "converge"} {
				steps = append(steps, tr.step(n, n == tc.failAt, n == tc.failUndo))
			}
			err := Run(context.Background(), j, "apply", steps, tc.on)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Run = %v, want %q", err, tc.wantErr)
			}
			var rb *RollbackError
			if errors.As(err, &rb) != (tc.wantOutcome == Broken) {
				t.Errorf("RollbackError: %v, want %v", errors.As(err, &rb), tc.wantOutcome == Broken)
			}
			if !slices.Equal(tr.log, tc.wantLog) {
				t.Errorf("did %q, want %q", tr.log, tc.wantLog)
			}
			r, err := j.Load()
			if err != nil {
				t.Fatal(err)
			}
			if r.Action != "apply" || r.Outcome != tc.wantOutcome || r.Unfinished() || !slices.Equal(states(r), tc.wantStates) {
				t.Errorf("journal %s %s %q, want %s %q", r.Action, r.Outcome, states(r), tc.wantOutcome, tc.wantStates)
			}
			if strings.Contains(r.Error+strings.Join(states(r), ""), "hunter22") {
				t.Errorf("the journal holds a secret: %+v", r)
			}
			for _, s := range r.Steps {
				if strings.Contains(s.Error, "hunter22") {
					t.Errorf("step %s's error holds a secret: %s", s.Name, s.Error)
				}
			}
		})
	}
}

// A process killed during a step leaves the journal saying which one.
func TestJournalWrittenBeforeEachStep(t *testing.T) {
	t.Parallel()
	j := Journal{Path: filepath.Join(t.TempDir(), "journal.json")}
	var seen [][]string
	look := func(context.Context) error {
		r, err := j.Load()
		if err != nil || r == nil || !r.Unfinished() {
			t.Errorf("during the run: record %+v, %v; want an unfinished one", r, err)
			return nil
		}
		seen = append(seen, states(r))
		return nil
	}
	if err := Run(context.Background(), j, "install", []Step{{Name: "a", Do: look}, {Name: "b", Do: look}}, Keep); err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"a:running", "b:pending"}, {"a:done", "b:running"}}
	if len(seen) != 2 || !slices.Equal(seen[0], want[0]) || !slices.Equal(seen[1], want[1]) {
		t.Errorf("the journal during the steps: %q, want %q", seen, want)
	}
	if r, _ := (Journal{Path: filepath.Join(t.TempDir(), "none.json")}).Load(); r != nil {
		t.Errorf("no journal file: %+v, want nil", r)
	}
}

// Undo runs to the end even when the run's context is cancelled (the
// agent stopping, Ctrl-C): a half-undone node is the worst outcome.
func TestUndoIgnoresCancellation(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	j := Journal{Path: filepath.Join(t.TempDir(), "journal.json")}
	undone := false
	err := Run(ctx, j, "upgrade", []Step{
		{Name: "files", Do: func(context.Context) error { return nil }, Undo: func(ctx context.Context) error {
			undone = ctx.Err() == nil
			return nil
		}},
		{Name: "converge", Do: func(context.Context) error { cancel(); return context.Canceled }},
	}, Undo)
	if !errors.Is(err, context.Canceled) || !undone {
		t.Errorf("Run = %v, undone with a live context: %v", err, undone)
	}
}

// A run refused while it only prepares leaves the journal of the last run
// as it was; a preparing step that says it changed something is journaled.
func TestPreparingRunWritesNothing(t *testing.T) {
	t.Parallel()
	j := Journal{Path: filepath.Join(t.TempDir(), "journal.json")}
	ok := func(context.Context) error { return nil }
	refused := func(context.Context) error { return errors.New("unauthorized") }
	if err := Run(t.Context(), j, "install", []Step{{Name: "stage", Do: ok, Prepares: true}, {Name: "commit", Do: ok}}, Keep); err != nil {
		t.Fatal(err)
	}
	last, err := j.Load()
	if err != nil || last == nil || last.Outcome != Succeeded {
		t.Fatalf("the first run's journal: %+v, %v", last, err)
	}

	err = Run(t.Context(), j, "apply", []Step{{Name: "stage", Do: ok, Prepares: true}, {Name: "pull", Do: refused, Prepares: true}, {Name: "commit", Do: ok}}, Keep)
	if err == nil {
		t.Fatal("the refused pull did not fail the run")
	}
	if got, _ := j.Load(); got == nil || got.Action != "install" || !got.StartedAt.Equal(last.StartedAt) {
		t.Errorf("a run refused while preparing changed the journal: %+v", got)
	}

	changed := func(ctx context.Context) error { Changed(ctx); return nil }
	err = Run(t.Context(), j, "apply", []Step{{Name: "engine-proxy", Do: changed, Prepares: true}, {Name: "pull", Do: refused, Prepares: true}}, Keep)
	if err == nil {
		t.Fatal("the refused pull did not fail the run")
	}
	got, _ := j.Load()
	if got == nil || got.Action != "apply" || got.Outcome != Stopped || !slices.Equal(states(got), []string{"engine-proxy:done", "pull:failed"}) {
		t.Errorf("a preparing step that changed something was not journaled: %+v", got)
	}

	// A run that only prepares is recorded once it succeeded.
	if err := Run(t.Context(), j, "check", []Step{{Name: "stage", Do: ok, Prepares: true}}, Keep); err != nil {
		t.Fatal(err)
	}
	if got, _ := j.Load(); got == nil || got.Action != "check" || got.Outcome != Succeeded {
		t.Errorf("a successful preparing run: %+v", got)
	}
}

// The journal keeps the workflow's details at every write, and another
// process resolves an unfinished run: rolled back (the interrupted step
// failed-undone, the ones before undone) or finished.
func TestDetailsAndResolve(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.json")
	backup := ""
	j := Journal{Path: path, Details: func() any { return map[string]string{"backup": backup} }}
	var seen []string
	stop := errors.New("stop")
	steps := []Step{
		{Name: "backup", Prepares: true, Do: func(context.Context) error { backup = "/b/1"; return nil }},
		{Name: "commit", Do: func(context.Context) error { return nil }},
		{Name: "converge", Do: func(context.Context) error {
			r, _ := j.Load()
			seen = append(seen, backupOf(r))
			return stop
		}},
		{Name: "verify", Do: func(context.Context) error { return nil }},
	}
	// Keep leaves converge failed: read as the journal a killed process
	// leaves (converge running) once its outcome is wiped.
	if err := Run(t.Context(), j, "upgrade 1 -> 2", steps, Keep); !errors.Is(err, stop) {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != "/b/1" {
		t.Errorf("details while converging: %q", seen)
	}
	r, _ := j.Load()
	if r.Interrupted() != "" {
		t.Errorf("a finished run is interrupted at %q", r.Interrupted())
	}
	r.Outcome, r.Steps[2].State = "", Running
	if r.Interrupted() != "converge" || !r.Reached("converge") || r.Reached("verify") {
		t.Fatalf("interrupted %q: %v", r.Interrupted(), states(r))
	}
	if err := (Journal{Path: path}).Resolve(r, RolledBack, "interrupted"); err != nil {
		t.Fatal(err)
	}
	r, _ = j.Load()
	if got, want := states(r), []string{"backup:undone", "commit:undone", "converge:failed-undone", "verify:pending"}; !slices.Equal(got, want) || r.Outcome != RolledBack || r.Error != "interrupted" || backupOf(r) != "/b/1" {
		t.Errorf("rolled back: %v %q %q %s", got, r.Outcome, r.Error, r.Details)
	}

	r.Outcome, r.Steps[3].State = "", Running
	(Journal{Path: path}).Note(r, "retry later")
	if r, _ = j.Load(); !r.Unfinished() || r.Error != "retry later" {
		t.Errorf("a note ended the run: %+v", r)
	}
	(Journal{Path: path}).Resolve(r, Succeeded, "interrupted, finished")
	if r, _ = j.Load(); r.Outcome != Succeeded || slices.ContainsFunc(r.Steps, func(s StepRecord) bool { return s.State != Done }) {
		t.Errorf("finished: %v %q", states(r), r.Outcome)
	}
}

func backupOf(r *Record) string {
	var d struct{ Backup string }
	json.Unmarshal(r.Details, &d)
	return d.Backup
}

// Resume leaves a failed run unfinished, for the next process to
// complete.
func TestResumeLeavesTheRunUnfinished(t *testing.T) {
	j := Journal{Path: filepath.Join(t.TempDir(), "journal.json")}
	var tr trace
	err := Run(t.Context(), j, "rollback 2 -> 1", []Step{tr.step("restore", true, false), tr.step("after", false, false)}, Resume)
	if err == nil {
		t.Fatal("no error")
	}
	r, _ := j.Load()
	if !r.Unfinished() || r.Interrupted() != "restore" || !strings.Contains(r.Error, "restore broke") || !slices.Equal(tr.log, []string{"do restore"}) {
		t.Errorf("after a failed resumable run: %v %q %q %v", states(r), r.Outcome, r.Error, tr.log)
	}
}

// An undo whose error UndoLater accepts leaves the run unfinished, at the
// step whose undo failed, for the next process to roll back; any other
// undo error ends it rollback-failed.
func TestUndoLaterLeavesTheRunUnfinished(t *testing.T) {
	later := func(err error) bool { return strings.Contains(err.Error(), "cannot undo files") }
	for _, failUndo := range []string{"files", "converge"} {
		j := Journal{Path: filepath.Join(t.TempDir(), "journal.json"), UndoLater: later}
		var tr trace
		err := Run(t.Context(), j, "upgrade 1 -> 2", []Step{tr.step("files", false, failUndo == "files"), tr.step("converge", true, failUndo == "converge")}, Undo)
		var rb *RollbackError
		if !errors.As(err, &rb) || rb.Later != (failUndo == "files") {
			t.Fatalf("undo of %s failing: %v (later %v)", failUndo, err, rb != nil && rb.Later)
		}
		r, _ := j.Load()
		if failUndo == "converge" {
			if r.Outcome != Broken {
				t.Errorf("an undo error UndoLater refuses: outcome %q", r.Outcome)
			}
			continue
		}
		if !r.Unfinished() || r.Interrupted() != "files" || !strings.Contains(r.Error, "cannot undo files") ||
			!slices.Equal(states(r), []string{"files:undo-failed", "converge:failed-undone"}) {
			t.Errorf("left for later: %v %q %q", states(r), r.Outcome, r.Error)
		}
	}
}

// Observe is told every state each step takes, in order, undo included.
func TestObserveSeesEveryState(t *testing.T) {
	var seen []string
	j := Journal{Path: filepath.Join(t.TempDir(), "journal.json"), Observe: func(step, state string) { seen = append(seen, step+" "+state) }}
	var tr trace
	Run(t.Context(), j, "upgrade", []Step{tr.step("commit", false, false), tr.step("converge", true, false)}, Undo)
	want := []string{"commit running", "commit done", "converge running", "converge failed", "converge failed-undone", "commit undone"}
	if !slices.Equal(seen, want) {
		t.Errorf("observed %q, want %q", seen, want)
	}
}
