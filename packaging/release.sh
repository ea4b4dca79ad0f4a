#!/usr/bin/env bash
# Builds a release directory that any static HTTPS server can host:
#
#   install.sh                      the curl installer, with the release URL in it
#   carto-appliance_linux_<arch>    the binary per architecture (static)
#   SHA256SUMS                      checksums of the files above
#   SHA256SUMS.sig                  its ed25519 signature by the release key
#                                   (raw, 64 bytes; install.sh verifies it with
#                                   the public half written into it)
#   release/                        the CARTO release the binaries carry
#                                   (compose template, env template, manifest)
#   carto-appliance_<v>_<arch>.deb  deb and rpm packages of the binary (nfpm)
#   carto-appliance-<v>.<arch>.rpm
#
# Usage: RELEASE_KEY=KEY packaging/release.sh OUT_DIR RELEASE_URL [VERSION]
# RELEASE_KEY is the release signing key: an ed25519 private key, PEM
# (make release-keygen makes one). The tests' key (e2e/testbed) is refused
# unless RELEASE_TEST_KEY=1, which only the test bed sets: a release signed
# with a public test key would let anyone sign one.
# ARCHES (default "amd64 arm64") chooses the architectures.
set -euo pipefail

out=${1:?usage: release.sh OUT_DIR RELEASE_URL [VERSION]}
url=${2:?usage: release.sh OUT_DIR RELEASE_URL [VERSION]}
version=${3:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
arches=${ARCHES:-amd64 arm64}
NFPM_VERSION=v2.44.1
root=$(cd "$(dirname "$0")/.." && pwd)
# The public half of e2e/testbed's TestReleaseKey (base64 DER); a unit test
# keeps the two in step.
test_pubkey=MCowBQYDK2VwAyEA8oaMQE2+TCMEW6tjuNWc3qN3XgonbDLSUPX7i8GQsK4=

case $url in
https://*) ;;
*) echo "release.sh: the release URL must be https:// (got $url)" >&2; exit 2 ;;
esac

key=${RELEASE_KEY:-}
[[ -n $key ]] || { echo "release.sh: RELEASE_KEY must name the release signing key (an ed25519 private key, PEM; make release-keygen makes one)" >&2; exit 2; }
[[ -f $key && -r $key ]] || { echo "release.sh: RELEASE_KEY $key is not a readable file" >&2; exit 2; }
openssl pkey -in "$key" -noout -text 2>/dev/null | head -n 1 | grep -q '^ED25519 Private-Key' ||
	{ echo "release.sh: RELEASE_KEY $key is not an ed25519 private key in PEM (make release-keygen makes one)" >&2; exit 2; }
pubkey=$(openssl pkey -in "$key" -pubout -outform DER | base64 -w0)
if [[ $pubkey == "$test_pubkey" && ${RELEASE_TEST_KEY:-} != 1 ]]; then
	echo "release.sh: RELEASE_KEY $key is the tests' public release key: a release signed with it can be forged by anyone; use the release team's key" >&2
	exit 2
fi

rm -rf "$out.tmp"
mkdir -p "$out.tmp/release"
for arch in $arches; do
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -C "$root" -trimpath \
		-ldflags "-s -w -X main.version=$version" \
		-o "$out.tmp/carto-appliance_linux_$arch" ./cmd/carto-appliance
	# A release never carries the test build's stop hooks (internal/steps);
	# only the test bed (RELEASE_TEST_KEY=1) builds a test release.
	if [[ ${RELEASE_TEST_KEY:-} != 1 ]] && grep -qa CARTO_APPLIANCE_TEST_STOP_AT "$out.tmp/carto-appliance_linux_$arch"; then
		echo "release.sh: carto-appliance_linux_$arch carries the test build's stop hooks: it was built with a test tag" >&2
		exit 1
	fi
done
sed -e "s|@RELEASE_URL@|${url%/}|" -e "s|@RELEASE_PUBKEY@|$pubkey|" "$root/packaging/install.sh" >"$out.tmp/install.sh"
cp "$root"/templates/release/* "$out.tmp/release/"

# Packages. Their version must start with a digit: a build from a commit
# becomes 0.0.0~<describe>, which sorts before any release.
nfpm=$root/.cache/bin/nfpm-$NFPM_VERSION
if [[ ! -x $nfpm ]]; then
	# The module proxy is the network: a reset connection is tried again
	# (three tries, 5 s then 15 s apart) before the release fails.
	for wait in 5 15 0; do
		GOBIN=$root/.cache/bin.tmp GOFLAGS=-mod=mod go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" && break
		[[ $wait != 0 ]] || { echo "release.sh: could not build nfpm $NFPM_VERSION from the module proxy" >&2; exit 1; }
		echo "release.sh: fetching nfpm failed; trying again in ${wait}s" >&2
		sleep "$wait"
	done
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
# Signed as install.sh verifies it, and checked so: a release whose
# signature does not verify is never published.
openssl pkeyutl -sign -inkey "$key" -rawin -in "$out.tmp/SHA256SUMS" -out "$out.tmp/SHA256SUMS.sig"
printf '%s\n' '-----BEGIN PUBLIC KEY-----' "$pubkey" '-----END PUBLIC KEY-----' >"$out.tmp/release.pub"
openssl pkeyutl -verify -pubin -inkey "$out.tmp/release.pub" -rawin -in "$out.tmp/SHA256SUMS" -sigfile "$out.tmp/SHA256SUMS.sig" >/dev/null
rm "$out.tmp/release.pub"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "release $version for $arches in $out (served from $url)"
