# Sourced by the test bed's rootfs scripts (rootfs.sh, vm/rootfs.sh): the
# Debian mirror debootstrap fetches from. Not part of the images' tags: the
# mirror changes where packages come from, not what goes in.

# find_mirror prints the first Debian archive URI that serves $1, from
# deb822 .sources files and one-line sources.list entries.
find_mirror() {
	local suite=$1 f
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -e $f ]] || continue
		awk -v suite="$suite" '
			function flush() { if (uris != "" && suites ~ "(^| )" suite "( |$)") { n = split(uris, u, " "); for (i = 1; i <= n; i++) if (u[i] ~ /\/debian\/?$/) { print u[i]; found = 1; exit } } uris = ""; suites = "" }
			/^[ \t]*$/ { flush(); next }
			/^URIs:/ { sub(/^URIs:[ \t]*/, ""); uris = $0 }
			/^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
			END { if (!found) flush() }
		' "$f"
	done
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk -v suite="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1) == suite && $i ~ /\/debian\/?$/) print $i }'
}

# debian_mirror prints $DEBIAN_MIRROR, else the first mirror of $1 in this
# machine's apt sources, else nothing.
debian_mirror() {
	if [[ -n ${DEBIAN_MIRROR:-} ]]; then
		echo "$DEBIAN_MIRROR"
	else
		find_mirror "$1" 2>/dev/null | head -n1 || true
	fi
}
