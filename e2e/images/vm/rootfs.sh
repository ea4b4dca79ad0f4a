#!/usr/bin/env bash
# Builds the image of the test bed's "fresh VMs" (package e2e/vm): a Debian
# bookworm root filesystem made with debootstrap, with systemd as PID 1 and
# Debian's Docker Engine 20.10 (docker.io) enabled, `docker import`ed.
#
# Usage: rootfs.sh [IMAGE_REF]
#   IMAGE_REF defaults to carto-testbed/vm:<first 12 hex of the SHA-256 of
#   this file>; everything that goes into the image is in this file, so
#   changing it changes the tag. e2e/vm computes the same tag. When the
#   engine already has IMAGE_REF nothing is built. Prints IMAGE_REF on success.
#
# Environment: DEBIAN_MIRROR overrides the mirror, which is otherwise read
# from this machine's apt sources (the first bookworm entry of a .../debian
# archive). Takes about a minute on a cold machine; needs root, debootstrap
# and a Docker engine (scripts/testbed-deps.sh, scripts/ensure-dockerd.sh).
#
# The image only works when run the way e2e/vm.Start runs it (systemd needs
# the host's cgroups and most capabilities; the inner engine needs
# /var/lib/docker on a volume, see daemon.json below).
set -euo pipefail

SUITE=bookworm
PACKAGES=(
	systemd systemd-sysv dbus # PID 1
	docker.io                 # Docker Engine 20.10, containerd, runc, the docker CLI
	iptables                  # dockerd's NAT and port publishing (nft backend, as on Debian 12)
	curl ca-certificates      # what a fresh cloud VM has to fetch an installer
	procps iproute2 less      # ps, ip, a pager: debugging inside a VM
)
# No kmod: a container has no /lib/modules of the host's kernel, and
# containerd and dockerd only log that `modprobe` is missing.

# Units that make no sense in a container, or that would do work at random
# moments of a test (apt downloads, fstrim, e2scrub). Masked, so that
# `systemctl is-system-running` says `running` and nothing starts behind a
# scenario's back.
# (systemd-udevd needs no mask: it skips itself, /sys being read-only.)
MASK=(
	getty@tty1.service console-getty.service e2scrub_reap.service
	apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer
)

# The inner engine. overlay2 needs /var/lib/docker on a filesystem that is
# not overlayfs (the container's root is): e2e/vm mounts a Docker volume
# there. Naming the driver makes a VM started without that volume fail
# loudly instead of falling back to vfs (which copies every image layer for
# each container: ~10x slower container starts, 2.5x the disk).
# The systemd cgroup driver puts inner containers under the VM's own
# cgroup (with cgroupfs they would land in the host's /docker/<id>, outside
# the VM's memory limit); it is also the default on cgroup v2 hosts, which
# real Debian 12 VMs are.
DAEMON_JSON='{
	"storage-driver": "overlay2",
	"exec-opts": ["native.cgroupdriver=systemd"]
}'

script=$(readlink -f "${BASH_SOURCE[0]}")
hash=$(sha256sum "$script" | cut -c1-12)
ref=${1:-carto-testbed/vm:$hash}

die() { echo "vm/rootfs.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap and docker import)"
command -v debootstrap >/dev/null || die "debootstrap is missing; run scripts/testbed-deps.sh"
docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/ensure-dockerd.sh"

# Two test runs may want the image at once: the second waits for the first.
exec 9>/tmp/carto-testbed-vm-rootfs.lock
flock -w 900 9 || die "timed out waiting for another vm/rootfs.sh to finish"

if docker image inspect "$ref" >/dev/null 2>&1; then
	echo "$ref"
	exit 0
fi

# shellcheck source=e2e/images/debian-mirror.sh
source "$(dirname "$script")/../debian-mirror.sh"
mirror=$(debian_mirror "$SUITE")
[[ -n $mirror ]] || die "no Debian $SUITE mirror in /etc/apt/sources.list{,.d}; set DEBIAN_MIRROR"

work=$(mktemp -d /var/tmp/carto-vm-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
log=$work/debootstrap.log

include=$(IFS=,; echo "${PACKAGES[*]}")
if ! debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$mirror" >"$log" 2>&1; then
	tail -n 40 "$log" >&2
	[[ -f $root/debootstrap/debootstrap.log ]] && tail -n 40 "$root/debootstrap/debootstrap.log" >&2
	die "debootstrap $SUITE from $mirror failed"
fi

# Every VM gets its own machine-id at first boot: systemd generates one
# when /etc/machine-id is empty, but would copy dbus's if it found one.
: >"$root/etc/machine-id"
ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"

mkdir -p "$root/etc/docker"
printf '%s\n' "$DAEMON_JSON" >"$root/etc/docker/daemon.json"

for unit in "${MASK[@]}"; do
	ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# Slim down: package caches and lists (a fresh VM runs apt-get update),
# docs, translations.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
	"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
	"$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/var/log/journal/* \
	"$root"/debootstrap

# `docker import` (Engine 20.10) takes no STOPSIGNAL: e2e/vm sets
# SIGRTMIN+3, systemd's "halt", on each container instead.
if ! tar --numeric-owner -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
	docker import \
		-c 'ENV container=docker' \
		-c "LABEL org.cartodb.testbed=1 org.cartodb.testbed.vm=$hash" \
		-c 'CMD ["/sbin/init"]' \
		- "$ref" >/dev/null; then
	die "docker import of $ref failed"
fi
echo "$ref"
