#!/usr/bin/env bash
# Makes sure the Docker Compose v2 CLI plugin exists in
# ${DOCKER_CONFIG:-~/.docker}/cli-plugins/docker-compose (Debian packages
# only the legacy 1.29 tool). When missing, builds COMPOSE_VERSION
# (default v2.40.3) from the Go module proxy through a throwaway module
# (`go install` refuses compose's module), about 2 minutes. The binary is
# moved into place whole, so a concurrent user never sees half a file.
set -euo pipefail

version=${COMPOSE_VERSION:-v2.40.3}
dir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
dest=$dir/docker-compose

die() { echo "compose-v2.sh: $*" >&2; exit 1; }
works() { [[ -x $dest ]] && "$dest" version --short >/dev/null 2>&1; }

works && exit 0
command -v go >/dev/null || die "go is needed to build Compose v2"
mkdir -p "$dir"

# One build at a time; a build that finished while we waited is enough.
exec 9>"$dir/.docker-compose.lock"
flock -w 900 9 || die "timed out waiting for another compose-v2.sh"
works && exit 0

work=$(mktemp -d /tmp/compose-v2.XXXXXX)
trap 'rm -rf "$work"' EXIT
log=$work/build.log
if ! (
	cd "$work" &&
		go mod init x &&
		go get "github.com/docker/compose/v2/cmd@$version" &&
		go build -trimpath -ldflags "-X github.com/docker/compose/v2/internal.Version=$version" \
			-o "$work/docker-compose" github.com/docker/compose/v2/cmd
) >"$log" 2>&1; then
	tail -n 30 "$log" >&2
	die "building Compose $version failed"
fi
install -m 0755 "$work/docker-compose" "$dir/.docker-compose.new"
mv -f "$dir/.docker-compose.new" "$dest"
works || die "the Compose $version just built does not run"
