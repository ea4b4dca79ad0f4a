#!/bin/bash
# Starts PostgreSQL 15 like the official image's entrypoint: on first start
# (no PG_VERSION in $PGDATA) runs initdb with POSTGRES_USER/POSTGRES_PASSWORD
# and creates POSTGRES_DB; then runs the server as user postgres, listening
# on every address with scram-sha-256 for TCP and trust on the local socket.
set -euo pipefail

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:=/var/lib/postgresql/data}"

log() { echo "workspace-postgres: $*" >&2; }
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

if [[ ${1:-postgres} != postgres && ${1:-} != -* ]]; then
	exec "$@" # e.g. bash, for debugging
fi
[[ ${1:-} == postgres ]] && shift

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"

if [[ ! -s $PGDATA/PG_VERSION ]]; then
	if [[ -z ${POSTGRES_PASSWORD:-} ]]; then
		log "POSTGRES_PASSWORD is empty: refusing to create a database superuser without a password"
		exit 1
	fi
	log "initialising $PGDATA for user $POSTGRES_USER"
	pwfile=$(mktemp)
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	chown postgres "$pwfile"
	as_postgres initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
		--auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
	rm -f "$pwfile"
	echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
	# No JIT: the base image leaves LLVM out.
	printf '%s\n' "listen_addresses = '*'" "jit = off" >>"$PGDATA/postgresql.conf"

	if [[ $POSTGRES_DB != postgres ]]; then
		# A server on the local socket only, so that healthchecks over TCP
		# stay red until the database exists.
		as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -s start
		echo 'CREATE DATABASE :"db";' |
			as_postgres psql -q -v ON_ERROR_STOP=1 -v db="$POSTGRES_DB" -U "$POSTGRES_USER" -d postgres
		as_postgres pg_ctl -D "$PGDATA" -m fast -w -s stop
	fi
	log "initialised"
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" "$@"
