#!/usr/bin/env bash
# Builds a release directory that any static HTTPS server can host:
#
#   install.sh                      the curl installer, with the release URL in it
#   carto-appliance_linux_<arch>    the binary per architecture (static)
#   SHA256SUMS                      checksums of the files above
#   release/                        the CARTO release the binaries carry
#                                   (compose template, env template, manifest)
#
# Usage: packaging/release.sh OUT_DIR RELEASE_URL [VERSION]
# ARCHES (default "amd64 arm64") chooses the architectures.
set -euo pipefail

out=${1:?usage: release.sh OUT_DIR RELEASE_URL [VERSION]}
url=${2:?usage: release.sh OUT_DIR RELEASE_URL [VERSION]}
version=${3:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
arches=${ARCHES:-amd64 arm64}
root=$(cd "$(dirname "$0")/.." && pwd)

case $url in
https://*) ;;
*) echo "release.sh: the release URL must be https:// (got $url)" >&2; exit 2 ;;
esac

rm -rf "$out.tmp"
mkdir -p "$out.tmp/release"
for arch in $arches; do
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -C "$root" -trimpath \
		-ldflags "-s -w -X main.version=$version" \
		-o "$out.tmp/carto-appliance_linux_$arch" ./cmd/carto-appliance
done
sed "s|@RELEASE_URL@|${url%/}|" "$root/packaging/install.sh" >"$out.tmp/install.sh"
cp "$root"/templates/release/* "$out.tmp/release/"
(cd "$out.tmp" && sha256sum install.sh carto-appliance_linux_* release/* >SHA256SUMS)
rm -rf "$out"
mv "$out.tmp" "$out"
echo "release $version for $arches in $out (served from $url)"
