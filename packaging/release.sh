#!/usr/bin/env bash
# Builds a release directory that any static HTTPS server can host:
#
#   install.sh                      the curl installer, with the release URL in it
#   carto-appliance_linux_<arch>    the binary per architecture (static)
#   SHA256SUMS                      checksums of the files above
#   release/                        the CARTO release the binaries carry
#                                   (compose template, env template, manifest)
#   carto-appliance_<v>_<arch>.deb  deb and rpm packages of the binary (nfpm)
#   carto-appliance-<v>.<arch>.rpm
#
# Usage: packaging/release.sh OUT_DIR RELEASE_URL [VERSION]
# ARCHES (default "amd64 arm64") chooses the architectures.
set -euo pipefail

out=${1:?usage: release.sh OUT_DIR RELEASE_URL [VERSION]}
url=${2:?usage: release.sh OUT_DIR RELEASE_URL [VERSION]}
version=${3:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
arches=${ARCHES:-amd64 arm64}
NFPM_VERSION=v2.44.1
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

# Packages. Their version must start with a digit: a build from a commit
# becomes 0.0.0~<describe>, which sorts before any release.
nfpm=$root/.cache/bin/nfpm-$NFPM_VERSION
if [[ ! -x $nfpm ]]; then
	GOBIN=$root/.cache/bin.tmp GOFLAGS=-mod=mod go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
	mkdir -p "$root/.cache/bin"
	mv "$root/.cache/bin.tmp/nfpm" "$nfpm"
fi
pkg_version=$version
[[ $pkg_version =~ ^[0-9] ]] || pkg_version=0.0.0~${version//-/.}
for arch in $arches; do
	# nfpm expands variables in some fields only: fill in the config.
	sed -e "s|\${PKG_ARCH}|$arch|" -e "s|\${PKG_VERSION}|$pkg_version|" \
		-e "s|\${PKG_BINARY}|$out.tmp/carto-appliance_linux_$arch|" \
		"$root/packaging/nfpm.yaml" >"$out.tmp/nfpm.yaml"
	for packager in deb rpm; do
		(cd "$root" && "$nfpm" package --config "$out.tmp/nfpm.yaml" --packager "$packager" --target "$out.tmp/" >/dev/null)
	done
	rm "$out.tmp/nfpm.yaml"
done
(cd "$out.tmp" && sha256sum install.sh carto-appliance_linux_* ./*.deb ./*.rpm release/* | sed 's| \./| |' >SHA256SUMS)
rm -rf "$out"
mv "$out.tmp" "$out"
echo "release $version for $arches in $out (served from $url)"
