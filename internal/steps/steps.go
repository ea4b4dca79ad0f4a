// Package steps runs a workflow as a list of named steps, each with its
// undo, and journals the progress in a file: a process killed mid-way
// leaves a record of where it stopped, for the next run to resume, roll
// back (an upgrade) or simply converge again (an apply). It knows nothing
// of what the steps do.
package steps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
)

// Step is one thing a workflow does.
type Step struct {
	Name string
	Do   func(ctx context.Context) error
	// Undo puts back what Do changed; nil when there is nothing to put
	// back (a pull, a check).
	Undo func(ctx context.Context) error
	// Prepares marks a step that changes nothing an operator would find
	// changed (it checks, stages in a temporary place, pulls images),
	// unless its Do calls Changed. The journal is first written when a
	// step that changes starts: a run refused while preparing (a
	// registry refusing the key, a bad rendering) leaves the journal of
	// the last run as it was, as it leaves everything else.
	Prepares bool
}

// beforeStep is called as each step starts, once the journal says so. A
// test build stops the process there when asked (stophook.go), to reach
// every step of a workflow in a kill test; a release build has no hook.
var beforeStep = func(action, step string) {}

type changedKey struct{}

// Changed tells the run that the Prepares step calling it did change
// something after all (e.g. the engine's proxy settings): the journal is
// written from then on.
func Changed(ctx context.Context) {
	if f, ok := ctx.Value(changedKey{}).(func()); ok {
		f()
	}
}

// OnFailure says what Run does with the steps done before one fails.
type OnFailure int

const (
	// Keep leaves them: the inputs were committed, the next run
	// converges to them again (install, apply).
	Keep OnFailure = iota
	// Undo undoes them, last first, the failed step first of all
	// (upgrade).
	Undo
	// Resume leaves the run unfinished, as a process that stopped would:
	// the next process completes it (rollback).
	Resume
)

// Step states in the journal.
const (
	Pending = "pending"
	Running = "running"
	Done    = "done"
	Failed  = "failed"
	Undone  = "undone"
	// FailedUndone is a step that failed, and whose partial work was
	// undone.
	FailedUndone = "failed-undone"
	UndoFailed   = "undo-failed"
)

// Outcomes of a run in the journal; a record without one is unfinished.
const (
	Succeeded  = "succeeded"
	Stopped    = "failed"      // failed, done steps kept
	RolledBack = "rolled-back" // failed, done steps undone
	Broken     = "rollback-failed"
)

// Record is one run as the journal holds it.
type Record struct {
	Action    string       `json:"action"`
	StartedAt time.Time    `json:"started_at"`
	EndedAt   time.Time    `json:"ended_at,omitzero"`
	Outcome   string       `json:"outcome,omitempty"`
	Error     string       `json:"error,omitempty"`
	Steps     []StepRecord `json:"steps"`
	// Details are what the workflow needs to finish or roll back the run
	// in another process (Journal.Details), as JSON.
	Details json.RawMessage `json:"details,omitempty"`
}

// StepRecord is one step's progress.
type StepRecord struct {
	Name  string    `json:"name"`
	State string    `json:"state"`
	At    time.Time `json:"at,omitzero"`
	Error string    `json:"error,omitempty"`
}

// Unfinished reports whether the run stopped without an outcome: the
// process ended (killed, crashed, rebooted) in the middle of a step.
func (r *Record) Unfinished() bool { return r.Outcome == "" }

// Interrupted is the step an unfinished run stopped in: the one running,
// or whose undo was under way, or else the first not done. "" for a
// finished run.
func (r *Record) Interrupted() string {
	if !r.Unfinished() {
		return ""
	}
	for _, s := range r.Steps {
		if s.State != Done {
			return s.Name
		}
	}
	return ""
}

// Reached reports whether the run started the named step.
func (r *Record) Reached(name string) bool {
	for _, s := range r.Steps {
		if s.Name == name {
			return s.State != Pending
		}
	}
	return false
}

// Resolve ends an unfinished run that another process finished
// (Succeeded: every step reached is done) or rolled back (RolledBack:
// every step reached is undone, the interrupted one failed-undone); why
// is the interruption, kept as the run's error.
func (j Journal) Resolve(r *Record, outcome, why string) error {
	now := time.Now().UTC()
	stopped := r.Interrupted()
	for i, s := range r.Steps {
		switch {
		case outcome == Succeeded:
			r.Steps[i].State = Done
		case s.Name == stopped:
			r.Steps[i].State, r.Steps[i].Error = FailedUndone, why
		case s.State != Pending:
			r.Steps[i].State = Undone
		default:
			continue
		}
		r.Steps[i].At = now
	}
	r.Outcome, r.EndedAt, r.Error = outcome, now, why
	return j.save(r)
}

// Note records on an unfinished run why it is still unfinished (a
// recovery that failed, to be tried again), leaving it unfinished.
func (j Journal) Note(r *Record, why string) error {
	r.Error = why
	return j.save(r)
}

// Journal is the file a workflow's progress is written to, before and
// after each step.
type Journal struct {
	Path string
	// Redact masks secrets in the errors recorded; nil keeps them as is.
	Redact func(string) string
	// Details, when set, is saved with the record at every write: what
	// the run has learnt that another process needs to finish or undo
	// it (e.g. where its backup is).
	Details func() any
	// Observe, when set, is told each step's new state as it is
	// journaled: progress for the operator and the agent's log.
	Observe func(step, state string)
	// UndoLater, when set, says of an undo's error that the undo may
	// succeed later (what it needed did not answer): the run is then
	// left unfinished, as a process that stopped in it would leave it,
	// for the next process to roll back; the RollbackError says Later.
	UndoLater func(error) bool
}

// Load reads the last run's record; nil when there is none.
func (j Journal) Load() (*Record, error) {
	b, err := os.ReadFile(j.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the journal: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("reading the journal %s: %w", j.Path, err)
	}
	return &r, nil
}

func (j Journal) save(r *Record) error {
	if j.Details != nil {
		d, err := json.Marshal(j.Details())
		if err != nil {
			return fmt.Errorf("writing the journal: %w", err)
		}
		r.Details = d
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(j.Path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing the journal: %w", err)
	}
	return nil
}

// RollbackError is a failed run whose undo failed too: the node is
// neither as before nor as planned.
type RollbackError struct {
	Err     error  // why the run failed
	Step    string // the step whose undo failed
	UndoErr error
	// Later says the run was left unfinished for another process to
	// roll back (Journal.UndoLater).
	Later bool
}

func (e *RollbackError) Error() string {
	return fmt.Sprintf("%v; undoing %s failed too: %v", e.Err, e.Step, e.UndoErr)
}

func (e *RollbackError) Unwrap() error { return e.Err }

// Run runs the steps in order, journaling each, until one fails; then,
// with Undo, it undoes those done, last first. The journal is written
// before a step starts, so that a process killed in it leaves the step
// "running"; a run that fails while it only prepares writes nothing.
func Run(ctx context.Context, j Journal, action string, steps []Step, on OnFailure) error {
	r := &Record{Action: action, StartedAt: time.Now().UTC()}
	for _, s := range steps {
		r.Steps = append(r.Steps, StepRecord{Name: s.Name, State: Pending})
	}
	// Nothing is written while the run only prepares.
	writing := false
	save := func() error {
		if !writing {
			return nil
		}
		return j.save(r)
	}
	startWriting := func() error {
		if writing {
			return nil
		}
		writing = true
		return save()
	}
	ctx = context.WithValue(ctx, changedKey{}, func() { startWriting() })
	mark := func(i int, state string, err error) error {
		r.Steps[i].State, r.Steps[i].At, r.Steps[i].Error = state, time.Now().UTC(), j.errText(err)
		if j.Observe != nil {
			j.Observe(r.Steps[i].Name, state)
		}
		return save()
	}
	end := func(outcome string, err error) {
		r.Outcome, r.EndedAt, r.Error = outcome, time.Now().UTC(), j.errText(err)
		// A journal that cannot be written after the run is reported by
		// the next one; the run's own outcome matters more here.
		_ = save()
	}
	for i, s := range steps {
		if !s.Prepares {
			if err := startWriting(); err != nil {
				return err
			}
		}
		if err := mark(i, Running, nil); err != nil {
			return err
		}
		beforeStep(action, s.Name)
		if err := s.Do(ctx); err != nil {
			mark(i, Failed, err)
			switch on {
			case Keep:
				end(Stopped, err)
				return err
			case Resume:
				r.Error = j.errText(err)
				save()
				return err
			}
			// The failed step is undone too, first: it may have done
			// part of its work (a converge that recreated some
			// services), so an Undo must cope with a partial Do.
			undoMark := func(k int, state string, uerr error) error {
				if k == i && state == Undone {
					// The journal keeps why the step failed.
					return mark(k, FailedUndone, err)
				}
				return mark(k, state, uerr)
			}
			if uerr := undo(ctx, steps[:i+1], undoMark); uerr != nil {
				rb := uerr.withCause(err)
				if j.UndoLater != nil && j.UndoLater(uerr.err) {
					rb.Later = true
					r.Error = j.errText(rb)
					save()
					return rb
				}
				end(Broken, uerr)
				return rb
			}
			end(RolledBack, err)
			return err
		}
		if err := mark(i, Done, nil); err != nil {
			return err
		}
	}
	// A run that only prepared is recorded too once it succeeded.
	startWriting()
	end(Succeeded, nil)
	return nil
}

type undoFailure struct {
	step string
	err  error
}

func (u *undoFailure) Error() string { return u.err.Error() }

func (u *undoFailure) withCause(err error) *RollbackError {
	return &RollbackError{Err: err, Step: u.step, UndoErr: u.err}
}

// undo undoes done steps, last first; it stops at the first undo that
// fails, as the ones before it may depend on it.
func undo(ctx context.Context, done []Step, mark func(int, string, error) error) *undoFailure {
	// Undo must finish whatever the caller's context does: a half-undone
	// node is the worst outcome.
	ctx = context.WithoutCancel(ctx)
	for i := len(done) - 1; i >= 0; i-- {
		s := done[i]
		if s.Undo == nil {
			continue
		}
		if err := s.Undo(ctx); err != nil {
			mark(i, UndoFailed, err)
			return &undoFailure{step: s.Name, err: err}
		}
		mark(i, Undone, nil)
	}
	return nil
}

func (j Journal) errText(err error) string {
	if err == nil {
		return ""
	}
	if j.Redact != nil {
		return j.Redact(err.Error())
	}
	return err.Error()
}
