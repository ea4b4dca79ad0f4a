package release

import (
	"errors"
	"strings"
	"testing"
)

func TestUpgradePath(t *testing.T) {
	t.Parallel()
	// 2025.6 and 2025.11 are required stops: 2025.11.x needs 2025.6.2,
	// 2026.x needs 2025.11.1.
	idx := &Index{Channel: "stable"}
	for _, e := range [][2]string{
		{"2025.1.0", "2024.1.0"},
		{"2025.6.2", "2025.1.0"},
		{"2025.6.3", "2025.1.0"},
		{"2025.11.1", "2025.6.2"},
		{"2025.11.3", "2025.6.2"},
		{"2026.1.0", "2025.11.1"},
		{"2026.2.0", "2025.11.1"},
	} {
		idx.Releases = append(idx.Releases, IndexEntry{Version: e[0], MinUpgradeFrom: e[1]})
	}
	for _, tc := range []struct {
		installed, target string
		want              string // versions, space-separated, or the error
	}{
		{"2025.11.3", "2026.2.0", "2026.2.0"},
		{"2025.11.3", "", "2026.2.0"},
		{"2025.1.0", "2025.11.3", "2025.6.3 2025.11.3"},              // the newest stop
		{"2025.1.0", "", "2025.6.3 2025.11.3 2026.2.0"},              // two required stops
		{"2025.6.2", "2026.1.0", "2025.11.3 2026.1.0"},               // fewest steps
		{"2025.8.0", "2026.1.0", "2025.11.3 2026.1.0"},               // installed not in the channel
		{"2026.2.0", "", ""},                                         // up to date
		{"2026.3.0", "", ""},                                         // newer than the channel
		{"2026.1.0", "2026.1.0", ""},                                 // already there
		{"2026.1.0", "2025.11.3", "older than the installed"},        // no downgrade
		{"2025.11.3", "2026.5.0", "is not in the channel stable"},    // unknown target
		{"2023.1.0", "2025.6.2", "no upgrade path from 2023.1.0 to"}, // nothing reaches from so old
		{"x", "", "the installed version"},
	} {
		path, err := UpgradePath(idx, tc.installed, tc.target)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			var vs []string
			for _, e := range path {
				vs = append(vs, e.Version)
			}
			got = strings.Join(vs, " ")
		}
		if (err == nil && got != tc.want) || (err != nil && (tc.want == "" || !strings.Contains(got, tc.want))) {
			t.Errorf("%s → %q: %q, want %q", tc.installed, tc.target, got, tc.want)
		}
	}
	_, err := UpgradePath(idx, "2023.1.0", "")
	if !errors.Is(err, ErrNoPath) || !strings.Contains(err.Error(), "2025.1.0 needs at least 2024.1.0") {
		t.Errorf("no path: %v", err)
	}
	// A gap in the middle: 2025.6.x withdrawn.
	gap := &Index{Channel: "stable", Releases: append(append([]IndexEntry{}, idx.Releases[:1]...), idx.Releases[3:]...)}
	_, err = UpgradePath(gap, "2025.1.0", "2026.1.0")
	if !errors.Is(err, ErrNoPath) || !strings.Contains(err.Error(), "no release of the channel after 2025.1.0 can be installed over it (2025.11.1 needs at least 2025.6.2") {
		t.Errorf("a gap: %v", err)
	}
	gap.Releases = append([]IndexEntry{{Version: "2024.6.0", MinUpgradeFrom: "2024.1.0"}}, gap.Releases...)
	_, err = UpgradePath(gap, "2024.1.0", "2026.1.0")
	if !errors.Is(err, ErrNoPath) || !strings.Contains(err.Error(), "it leads up to 2025.1.0, and no later release can be installed over that (2025.11.1 needs at least 2025.6.2") {
		t.Errorf("a gap after two steps: %v", err)
	}
	if _, err := UpgradePath(idx, "2025.1.0", "2027.1"); !errors.Is(err, ErrNotInChannel) {
		t.Errorf("unknown target: %v", err)
	}
	if _, err := UpgradePath(&Index{Channel: "stable"}, "2025.1.0", ""); !errors.Is(err, ErrNotInChannel) {
		t.Errorf("empty channel: %v", err)
	}
}
