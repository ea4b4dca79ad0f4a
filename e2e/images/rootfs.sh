#!/usr/bin/env bash
# Builds the test bed's Debian base image: one bookworm root filesystem made
# with debootstrap (minbase + the packages below) and `docker import`ed.
# The workspace-postgres, valkey and router-http test images are small
# Dockerfiles FROM it (see the directories next to this script).
#
# Usage: rootfs.sh [IMAGE_REF]
#   IMAGE_REF defaults to carto-testbed/debian-base:<first 12 hex of the
#   SHA-256 of this file>; the package list lives in this file, so changing
#   it changes the tag. e2e/testbed computes the same tag. When the engine
#   already has IMAGE_REF nothing is built. Prints IMAGE_REF on success.
#
# Environment: DEBIAN_MIRROR overrides the mirror, which is otherwise read
# from this machine's apt sources (the first bookworm entry of a .../debian
# archive). Takes about 2 minutes on a cold machine; needs root, debootstrap
# and a Docker engine (scripts/testbed-deps.sh, scripts/ensure-dockerd.sh).
set -euo pipefail

SUITE=bookworm
PACKAGES=(
	postgresql          # PostgreSQL 15: workspace-postgres
	redis-server        # Redis 7: the Valkey stand-in
	nginx-light         # router-http
	openssl             # router-http's self-signed certificate
	wget                # compose healthchecks
	ca-certificates
	procps              # ps/pkill for debugging inside the containers
)

script=$(readlink -f "${BASH_SOURCE[0]}")
hash=$(sha256sum "$script" | cut -c1-12)
ref=${1:-carto-testbed/debian-base:$hash}

die() { echo "rootfs.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap and docker import)"
command -v debootstrap >/dev/null || die "debootstrap is missing; run scripts/testbed-deps.sh"
docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/ensure-dockerd.sh"

# Two test runs may want the base at once: the second waits for the first.
exec 9>/tmp/carto-testbed-rootfs.lock
flock -w 900 9 || die "timed out waiting for another rootfs.sh to finish"

if docker image inspect "$ref" >/dev/null 2>&1; then
	echo "$ref"
	exit 0
fi

# shellcheck source=e2e/images/debian-mirror.sh
source "$(dirname "$script")/debian-mirror.sh"
mirror=$(debian_mirror "$SUITE")
[[ -n $mirror ]] || die "no Debian $SUITE mirror in /etc/apt/sources.list{,.d}; set DEBIAN_MIRROR"

work=$(mktemp -d /var/tmp/carto-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
log=$work/debootstrap.log

include=$(IFS=,; echo "${PACKAGES[*]}")
if ! debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$mirror" >"$log" 2>&1; then
	tail -n 40 "$log" >&2
	[[ -f $root/debootstrap/debootstrap.log ]] && tail -n 40 "$root/debootstrap/debootstrap.log" >&2
	die "debootstrap $SUITE from $mirror failed"
fi

# Slim down (every image and every test registry carries this layer):
# package caches, docs, translations, locale sources, PostgreSQL's JIT
# (LLVM, 130 MB; workspace-postgres runs with jit=off), and the cluster the
# postgresql package creates at install (the image runs initdb in its volume).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
	"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
	"$root"/usr/share/locale/* "$root"/usr/share/i18n \
	"$root"/usr/lib/*/libLLVM-* "$root"/usr/lib/postgresql/15/lib/llvmjit* \
	"$root"/usr/lib/postgresql/15/lib/bitcode \
	"$root"/var/lib/postgresql/15 "$root"/etc/postgresql/15 \
	"$root"/var/log/*.log "$root"/debootstrap

if ! tar --numeric-owner -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
	docker import \
		-c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		-c 'ENV LANG=C.UTF-8' \
		-c "LABEL org.cartodb.testbed.rootfs=$hash" \
		-c 'CMD ["/bin/bash"]' \
		- "$ref" >/dev/null; then
	die "docker import of $ref failed"
fi
echo "$ref"
