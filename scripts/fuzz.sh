#!/usr/bin/env bash
# Runs every Fuzz* target of the module for FUZZTIME each (go test -fuzz takes
# one target per run). A run that fails only with the toolchain's "context
# deadline exceeded" at the end of the time (the coordinator stopping while
# it minimizes a new input; no failing input is written) is run once more;
# any real failure (a "Failing input written" crasher) fails at once.
set -euo pipefail
fuzztime=${FUZZTIME:-10s}
minimize=${FUZZMINIMIZE:-2s}
go=${GO:-go}
for pkg in $($go list ./...); do
	for t in $($go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		for attempt in 1 2; do
			echo "fuzz $pkg $t ($fuzztime)"
			if out=$($go test "$pkg" -run '^$' -fuzz "^$t\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" 2>&1); then
				echo "$out" | tail -n 1
				break
			fi
			# The failure's message first (its values can be long enough
			# that the tail shows only their end), then how it ended.
			echo "$out" | grep -m 1 -A 8 -e '--- FAIL' || true
			echo "$out" | tail -n 6
			if [[ $attempt == 1 && $out == *"context deadline exceeded"* && $out != *"Failing input written"* ]]; then
				echo "fuzz: $t stopped by the toolchain while minimizing (no failing input); running it again"
				continue
			fi
			exit 1
		done
	done
done
