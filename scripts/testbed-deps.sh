#!/usr/bin/env bash
# Installs the Debian packages the e2e test bed needs, when missing:
# the Docker engine (docker.io: Engine 20.10, API 1.41, the oldest the
# product supports), the registry (docker-registry), legacy Compose 1.29
# (docker-compose), debootstrap for the base image, busybox-static for the
# stand-in image, htpasswd (apache2-utils), openssl and iptables (dockerd).
# Runs `apt-get update` once, and only when something is missing.
set -euo pipefail

PACKAGES=(docker.io docker-registry docker-compose debootstrap busybox-static apache2-utils openssl iptables)

die() { echo "testbed-deps.sh: $*" >&2; exit 1; }

missing=()
for p in "${PACKAGES[@]}"; do
	if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) != installed ]]; then
		missing+=("$p")
	fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

[[ $(id -u) == 0 ]] || die "missing ${missing[*]}; run as root to install them"
log=$(mktemp /tmp/testbed-deps.XXXXXX.log)
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
	tail -n 30 "$log" >&2
	die "installing ${missing[*]} failed (full log: $log)"
fi
rm -f "$log"
