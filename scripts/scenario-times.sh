#!/bin/bash
# Prints each top-level test's time from a `go test -v` log, longest first,
# so that the growth of `make check` is visible scenario by scenario.
set -euo pipefail
log=${1:?usage: scenario-times.sh GO_TEST_V_LOG}
echo "scenario times (longest first):"
grep -E '^--- (PASS|FAIL|SKIP): ' "$log" |
	sed -E 's/^--- ([A-Z]+): ([^ ]+) \(([0-9.]+)s\)$/\3 \1 \2/' |
	sort -rn |
	awk '{ printf "  %8.1f s  %-4s %s\n", $1, $2, $3; total += $1 } END { printf "  %8.1f s  in all (they run in parallel)\n", total }'
