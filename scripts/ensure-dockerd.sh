#!/usr/bin/env bash
# Makes sure a Docker engine answers: when `docker info` fails, starts
# dockerd (through systemd when it runs the machine, else in the background
# with its log in /var/log/dockerd.log) and waits for it, at most
# DOCKERD_WAIT seconds (default 60).
set -euo pipefail

wait_s=${DOCKERD_WAIT:-60}
log=/var/log/dockerd.log

die() { echo "ensure-dockerd.sh: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 && exit 0

command -v dockerd >/dev/null || die "dockerd is missing; run scripts/testbed-deps.sh"
if [[ -n ${DOCKER_HOST:-} && $DOCKER_HOST != unix:///var/run/docker.sock ]]; then
	die "DOCKER_HOST=$DOCKER_HOST does not answer, and only a local engine can be started"
fi
[[ $(id -u) == 0 ]] || die "no Docker engine answers; starting one needs root"

if [[ -d /run/systemd/system ]] && systemctl cat docker.service >/dev/null 2>&1; then
	systemctl start docker.service || die "systemctl start docker failed; see journalctl -u docker"
elif ! pgrep -x dockerd >/dev/null; then # one may be starting already
	setsid -f dockerd >>"$log" 2>&1 </dev/null
fi

for ((i = 0; i < wait_s * 2; i++)); do
	docker info >/dev/null 2>&1 && exit 0
	sleep 0.5
done
[[ -f $log ]] && tail -n 20 "$log" >&2
die "no Docker engine answers after ${wait_s}s (log: $log)"
