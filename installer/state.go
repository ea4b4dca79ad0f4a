package installer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cartodb/carto-appliance/internal/atomicfile"
)

const stateFileName = "state.json"

// stateFormat is the version of state.json's format this binary writes;
// a newer one is refused rather than misread.
const stateFormat = 2

// State is what the appliance remembers between runs, in the state dir.
type State struct {
	// FormatVersion is state.json's format: 1 (or absent) before the
	// release was pinned, 2 since.
	FormatVersion int `json:"format_version"`
	// Release is the CARTO release installed, pinned at the first install:
	// what every converge renders.
	Release *PinnedRelease `json:"release,omitempty"`
	// Version is the CARTO version last applied successfully.
	Version string `json:"version,omitempty"`
	// AppliedAt is when that happened.
	AppliedAt time.Time `json:"applied_at,omitzero"`
	// History lists every successful install and apply, oldest first
	// (bounded to the last 50).
	History []HistoryEntry `json:"history,omitempty"`
	// Held are the services the operator stopped (`stop`); they stay
	// stopped, through applies, agent restarts and reboots, until `start`.
	Held []string `json:"held,omitempty"`
}

// HistoryEntry is one successful change.
type HistoryEntry struct {
	At      time.Time `json:"at"`
	Action  string    `json:"action"` // install, apply
	Version string    `json:"version"`
}

const maxHistory = 50

func loadState(dir string) (State, error) {
	var s State
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading the appliance state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("reading the appliance state %s: %w", filepath.Join(dir, stateFileName), err)
	}
	if s.FormatVersion > stateFormat {
		return State{}, fmt.Errorf("the appliance state %s is format %d, newer than this carto-appliance understands (%d): it was written by a newer carto-appliance; use that one (or newer)",
			filepath.Join(dir, stateFileName), s.FormatVersion, stateFormat)
	}
	return s, nil
}

func (s *State) record(action, version string, at time.Time) {
	s.Version, s.AppliedAt = version, at
	s.History = append(s.History, HistoryEntry{At: at, Action: action, Version: version})
	if n := len(s.History); n > maxHistory {
		s.History = s.History[n-maxHistory:]
	}
}

func saveState(dir string, s State) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the state dir: %w", err)
	}
	s.FormatVersion = stateFormat
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, stateFileName), append(b, '\n'), 0o600)
}
