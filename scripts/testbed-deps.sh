#!/usr/bin/env bash
# Installs the Debian packages the e2e test bed needs, when missing:
# the Docker engine (docker.io: Engine 20.10, API 1.41, the oldest the
# product supports), the registry (docker-registry), legacy Compose 1.29
# (docker-compose), debootstrap for the base image, busybox-static for the
# stand-in image, htpasswd (apache2-utils), openssl and iptables (dockerd,
# and the proxy scenarios' block of the direct route), and pebble (the
# ACME scenario's CA, with pebble-challtestsrv as its DNS; no service),
# and chromium with a font (the admin console's scenario drives it headless).
# Also the forward proxies of the proxy scenarios (e2e/proxytest): tinyproxy
# (HTTP proxy) and squid (HTTPS proxy; Debian's GnuTLS build serves
# https_port, squid-openssl does too and is accepted in its place). The
# tests run their own instances with their own configs and ports, so these
# packages are installed without starting their services, which are then
# disabled.
# Runs `apt-get update` once, and only when something is missing.
set -euo pipefail

PACKAGES=(docker.io docker-registry docker-compose debootstrap busybox-static apache2-utils openssl iptables iproute2 pebble chromium fonts-dejavu-core)
PROXY_PACKAGES=(tinyproxy squid)

die() { echo "testbed-deps.sh: $*" >&2; exit 1; }

installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]; }

missing=() missing_proxies=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done
for p in "${PROXY_PACKAGES[@]}"; do
	[[ $p == squid ]] && installed squid-openssl && continue
	installed "$p" || missing_proxies+=("$p")
done
[[ ${#missing[@]} -eq 0 && ${#missing_proxies[@]} -eq 0 ]] && exit 0

[[ $(id -u) == 0 ]] || die "missing ${missing[*]} ${missing_proxies[*]}; run as root to install them"
log=$(mktemp /tmp/testbed-deps.XXXXXX.log)
export DEBIAN_FRONTEND=noninteractive
apt_install() {
	if ! { apt-get install -y -q --no-install-recommends "$@"; } >>"$log" 2>&1; then
		tail -n 30 "$log" >&2
		die "installing $* failed (full log: $log)"
	fi
}
apt-get update -q >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "apt-get update failed (full log: $log)"; }
[[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"

if [[ ${#missing_proxies[@]} -gt 0 ]]; then
	# policy-rc.d answering 101 keeps maintainer scripts (invoke-rc.d,
	# deb-systemd-invoke) from starting the services; one already there
	# (Docker images ship one) is left alone.
	policy=/usr/sbin/policy-rc.d
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\n# testbed-deps.sh: no service starts while it installs\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		trap 'rm -f "$policy"' EXIT
	fi
	apt_install "${missing_proxies[@]}"
	# Whatever the policy was: not running now, not started at boot.
	for svc in "${missing_proxies[@]}"; do
		if [[ -d /run/systemd/system ]]; then
			systemctl disable --now "$svc.service" >>"$log" 2>&1 || true
		else
			[[ -x /etc/init.d/$svc ]] && /etc/init.d/"$svc" stop >>"$log" 2>&1 || true
			update-rc.d "$svc" disable >>"$log" 2>&1 || true
		fi
	done
fi
rm -f "$log"
