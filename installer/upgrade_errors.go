package installer

import "errors"

// The outcomes of a failed upgrade (SPEC §2), each with its exit code in
// the CLI: the upgrade workflow wraps them; the agent's API carries them.
var (
	// ErrUpgradeRolledBack: the upgrade failed and the previous release
	// runs again (exit code 5).
	ErrUpgradeRolledBack = errors.New("the upgrade failed and was rolled back")
	// ErrRollbackFailed: the upgrade failed and so did the rollback; the
	// stack needs the operator (exit code 6).
	ErrRollbackFailed = errors.New("the upgrade failed and its rollback failed too")
)
