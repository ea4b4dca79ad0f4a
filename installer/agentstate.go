package installer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cartodb/carto-appliance/config"
	"github.com/cartodb/carto-appliance/internal/atomicfile"
	"github.com/cartodb/carto-appliance/stack"
)

const agentStateFileName = config.AgentStateFileName

// agentStateFormat is the format of agent.json this binary writes.
const agentStateFormat = 1

// AgentState is what the supervisor records about the services it keeps
// up, in the state dir, for status to show.
type AgentState struct {
	// FormatVersion is agent.json's format (absent: 1); a newer one is
	// refused rather than misread.
	FormatVersion int                          `json:"format_version"`
	UpdatedAt     time.Time                    `json:"updated_at"`
	Services      map[string]AgentServiceState `json:"services"`
}

// AgentServiceState is one service as the supervisor sees it.
type AgentServiceState struct {
	// Restarts counts the times the supervisor brought the service back.
	Restarts    int       `json:"restarts"`
	LastRestart time.Time `json:"last_restart,omitzero"`
	// CrashLoop is set while the service keeps failing: restarts are then
	// spaced by a growing backoff, NextAttempt says when the next is due.
	CrashLoop   bool      `json:"crash_loop,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Backoff     string    `json:"backoff,omitempty"`
	// Probed is the container run whose healthcheck the supervisor ran
	// itself and saw pass, while the engine still reported it starting
	// (stack.ProbeStarted).
	Probed *stack.Probed `json:"probed,omitempty"`
}

// LoadAgentState reads the supervisor's record; none yet is an empty one.
func LoadAgentState(paths config.Paths) (AgentState, error) {
	paths = paths.WithDefaults()
	st := AgentState{Services: map[string]AgentServiceState{}}
	b, err := os.ReadFile(filepath.Join(paths.StateDir, agentStateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("reading the agent state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("reading the agent state: %w", err)
	}
	if st.FormatVersion > agentStateFormat {
		return AgentState{Services: map[string]AgentServiceState{}}, fmt.Errorf("the agent state %s is format %d, newer than this carto-appliance understands (%d): it was written by a newer carto-appliance",
			filepath.Join(paths.StateDir, agentStateFileName), st.FormatVersion, agentStateFormat)
	}
	if st.Services == nil {
		st.Services = map[string]AgentServiceState{}
	}
	return st, nil
}

// SaveAgentState writes the supervisor's record atomically.
func SaveAgentState(paths config.Paths, st AgentState) error {
	paths = paths.WithDefaults()
	if err := os.MkdirAll(paths.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating the state dir: %w", err)
	}
	st.FormatVersion = agentStateFormat
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(paths.StateDir, agentStateFileName), append(b, '\n'), 0o600)
}
