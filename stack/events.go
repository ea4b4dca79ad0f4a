package stack

// Action names one step the engine took for a service.
type Action string

// Actions reported during an apply, in the order a service goes through them.
const (
	ActionPulling Action = "Pulling"
	ActionPulled  Action = "Pulled"
	// An air-gap bundle's files (Service is the file, or the image's
	// name): checked against its signed index, loaded through the
	// engine, or already there.
	ActionChecking   Action = "Checking"
	ActionLoading    Action = "Loading"
	ActionLoaded     Action = "Loaded"
	ActionPresent    Action = "Present"
	ActionRemoving   Action = "Removing orphan"
	ActionCreating   Action = "Creating"
	ActionRecreating Action = "Recreating"
	ActionStarting   Action = "Starting"
	ActionWaiting    Action = "Waiting"
	ActionHealthy    Action = "Healthy"
	ActionRunning    Action = "Running"
	ActionCompleted  Action = "Completed"
	ActionUnchanged  Action = "Unchanged"
	ActionStopping   Action = "Stopping"
	ActionStopped    Action = "Stopped"
	ActionHeld       Action = "Held"
	ActionRemoved    Action = "Removed"
	ActionFailed     Action = "Failed"
	// ActionStep is a workflow's step changing state (Service is the
	// workflow, e.g. "upgrade 2025.11.3 -> 2026.1.0"; Detail the step
	// and its state).
	ActionStep Action = "Step"
)

// Event is one step of an operation, for the caller to render (terminal,
// log, admin console).
type Event struct {
	Service string `json:"service"` // compose service, or image reference for pulls
	Action  Action `json:"action"`
	Detail  string `json:"detail,omitempty"` // optional, e.g. "waiting for workspace-postgres (healthy)"
}

// Reporter receives events. Implementations must be safe for concurrent
// use: services converge in parallel.
type Reporter interface {
	Report(Event)
}

// ReporterFunc adapts a function to Reporter.
type ReporterFunc func(Event)

// Report calls f(ev).
func (f ReporterFunc) Report(ev Event) { f(ev) }

type discard struct{}

func (discard) Report(Event) {}

func reporterOrDiscard(r Reporter) Reporter {
	if r == nil {
		return discard{}
	}
	return r
}
