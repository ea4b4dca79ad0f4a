#!/bin/bash
# Runs redis-server as user redis on 0.0.0.0:6379 with its data in /data.
# Extra arguments after redis-server are passed on (e.g. --requirepass X).
set -euo pipefail

if [[ ${1:-redis-server} != redis-server ]]; then
	exec "$@" # e.g. bash, for debugging
fi
[[ ${1:-} == redis-server ]] && shift

mkdir -p /data
chown redis:redis /data
exec setpriv --reuid=redis --regid=redis --init-groups \
	redis-server --bind 0.0.0.0 --port 6379 --protected-mode no --dir /data "$@"
