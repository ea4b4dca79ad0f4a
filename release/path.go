package release

import (
	"errors"
	"fmt"
	"slices"
)

// ErrNoPath is wrapped when no sequence of the channel's releases leads
// from the installed version to the target.
var ErrNoPath = errors.New("no upgrade path")

// UpgradePath is the releases of idx to install one after the other to go
// from installed to target ("" for the channel's latest), oldest first,
// ending with target: each step's min_upgrade_from is at most the version
// before it, so a release's required stops are gone through. It takes the
// fewest steps and, among those, the newest release at each stop. An
// empty path means installed is already the target (or, for "", at least
// the latest).
func UpgradePath(idx *Index, installed, target string) ([]IndexEntry, error) {
	from, err := ParseVersion(installed)
	if err != nil {
		return nil, fmt.Errorf("the installed version: %w", err)
	}
	if len(idx.Releases) == 0 {
		return nil, fmt.Errorf("%w: channel %s lists no release", ErrNotInChannel, idx.Channel)
	}
	rels := slices.Clone(idx.Releases)
	slices.SortFunc(rels, func(a, b IndexEntry) int { return mustVersion(a.Version).Compare(mustVersion(b.Version)) })
	last := rels[len(rels)-1]
	if target == "" {
		if mustVersion(last.Version).Compare(from) <= 0 {
			return nil, nil
		}
		target = last.Version
	}
	goal, ok := idx.Entry(target)
	if !ok {
		return nil, fmt.Errorf("version %s is %w %s (it lists %s)", target, ErrNotInChannel, idx.Channel, idx.versions())
	}
	switch c := mustVersion(goal.Version).Compare(from); {
	case c == 0:
		return nil, nil
	case c < 0:
		return nil, fmt.Errorf("version %s is older than the installed %s: upgrade does not downgrade (carto-appliance rollback goes back over the last upgrade)", goal.Version, installed)
	}

	// Nodes: the installed version (0) and the releases after it up to the
	// target, oldest first. A step a→b is allowed when b's
	// min_upgrade_from ≤ a. steps[i] is the fewest steps from i to the
	// target, computed from the target down since steps only go up.
	nodes := []Version{from}
	var entries []IndexEntry
	for _, e := range rels {
		v := mustVersion(e.Version)
		if v.Compare(from) > 0 && v.Compare(mustVersion(goal.Version)) <= 0 {
			nodes = append(nodes, v)
			entries = append(entries, e)
		}
	}
	can := func(a, b int) bool { return mustVersion(entries[b-1].MinUpgradeFrom).Compare(nodes[a]) <= 0 }
	const none = -1
	steps := make([]int, len(nodes))
	n := len(nodes) - 1 // the target
	steps[n] = 0
	for a := n - 1; a >= 0; a-- {
		steps[a] = none
		for b := a + 1; b <= n; b++ {
			if steps[b] != none && can(a, b) && (steps[a] == none || steps[b]+1 < steps[a]) {
				steps[a] = steps[b] + 1
			}
		}
	}
	if steps[0] == none {
		// Say how far the channel does lead, and what the rest needs.
		reach, furthest := make([]bool, len(nodes)), 0
		reach[0] = true
		for b := 1; b <= n; b++ {
			for a := 0; a < b && !reach[b]; a++ {
				reach[b] = reach[a] && can(a, b)
			}
			if reach[b] {
				furthest = b
			}
		}
		stuck := entries[furthest] // the release after the furthest
		if furthest == 0 {
			return nil, fmt.Errorf("%w from %s to %s in channel %s: no release of the channel after %s can be installed over it (%s needs at least %s installed)", ErrNoPath, installed, goal.Version, idx.Channel, installed, stuck.Version, stuck.MinUpgradeFrom)
		}
		return nil, fmt.Errorf("%w from %s to %s in channel %s: it leads up to %s, and no later release can be installed over that (%s needs at least %s installed)", ErrNoPath, installed, goal.Version, idx.Channel, entries[furthest-1].Version, stuck.Version, stuck.MinUpgradeFrom)
	}
	var path []IndexEntry
	for a := 0; a != n; {
		next := none
		for b := n; b > a; b-- { // newest first
			if steps[b] == steps[a]-1 && can(a, b) {
				next = b
				break
			}
		}
		path = append(path, entries[next-1])
		a = next
	}
	return path, nil
}
