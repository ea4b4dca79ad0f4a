#!/bin/sh
# carto-appliance installer.
#
#   curl -fsSL https://RELEASE_URL/install.sh | sudo sh -s -- --customer-env customer.env --key key.json
#
# Downloads the carto-appliance binary for this machine from the release it
# came from over https only, checks the release's SHA256SUMS against its
# ed25519 signature (SHA256SUMS.sig, by the release key whose public half is
# written into this script when the release is built; verified with openssl
# 3.0 or later), checks the binary against SHA256SUMS, installs it as
# /usr/local/bin/carto-appliance (leaving an identical one untouched) and
# runs `carto-appliance install` with the arguments given. Re-running it
# converges. The downloads honour https_proxy/HTTPS_PROXY, and the
# --proxy-url/--proxy-ca-cert install flags when given.
#
# Environment: CARTO_APPLIANCE_RELEASE_URL overrides the release URL;
# CARTO_APPLIANCE_BIN_DIR the install directory.
#
# Everything is inside main, called from a brace group on the last line:
# the shell runs a compound command only once it has read all of it, so a
# download cut anywhere (even right after "main") is a syntax error that
# runs nothing.

main() {
	set -eu
	release_url=${CARTO_APPLIANCE_RELEASE_URL:-@RELEASE_URL@}
	bin_dir=${CARTO_APPLIANCE_BIN_DIR:-/usr/local/bin}
	case $release_url in
	@*) fail "this install.sh has no release URL: download it from a release, or set CARTO_APPLIANCE_RELEASE_URL" ;;
	esac
	release_url=${release_url%/}
	case $release_url in
	https://?*) ;;
	*) fail "the release URL must be https:// (got $release_url): the downloads are refused over plain http" ;;
	esac
	release_pubkey=@RELEASE_PUBKEY@
	case $release_pubkey in
	@*) fail "this install.sh has no release key: download it from a release built by make release" ;;
	esac

	[ "$(id -u)" = 0 ] || fail "run as root: curl -fsSL $release_url/install.sh | sudo sh -s -- ..."
	[ "$(uname -s)" = Linux ] || fail "carto-appliance runs on Linux; this is $(uname -s)"
	case $(uname -m) in
	x86_64 | amd64) arch=amd64 ;;
	aarch64 | arm64) arch=arm64 ;;
	*) fail "no carto-appliance build for $(uname -m): use an amd64 or arm64 machine" ;;
	esac
	command -v sha256sum >/dev/null 2>&1 || fail "sha256sum is missing (package coreutils)"
	check_openssl

	proxy_args "$@"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT INT TERM

	name=carto-appliance_linux_$arch
	say "Downloading $name from $release_url"
	download "$release_url/SHA256SUMS" "$tmp/SHA256SUMS"
	download_sig "$release_url/SHA256SUMS.sig" "$tmp/SHA256SUMS.sig"
	verify_sums "$tmp" "$release_pubkey"
	download "$release_url/$name" "$tmp/$name"
	want=$(awk -v f="$name" '$2 == f || $2 == "*" f { print $1 }' "$tmp/SHA256SUMS")
	[ -n "$want" ] || fail "$release_url/SHA256SUMS has no entry for $name; nothing was installed"
	have=$(sha256sum "$tmp/$name" | awk '{ print $1 }')
	[ "$have" = "$want" ] || fail "checksum mismatch for $name (got $have, SHA256SUMS says $want): the download is corrupt or was tampered with; nothing was installed"

	target=$bin_dir/carto-appliance
	if [ -f "$target" ] && [ "$(sha256sum "$target" | awk '{ print $1 }')" = "$want" ]; then
		say "$target is already this version"
	else
		mkdir -p "$bin_dir"
		# Same directory, then rename: a running agent keeps its binary and
		# nobody ever sees half a file.
		cp "$tmp/$name" "$target.new"
		chmod 0755 "$target.new"
		mv -f "$target.new" "$target"
		say "Installed $target ($("$target" version 2>/dev/null || echo "unknown version"))"
	fi

	rm -rf "$tmp"
	trap - EXIT INT TERM
	say "Running: carto-appliance install $*"
	exec "$target" install "$@"
}

say() { printf 'carto-appliance: %s\n' "$*" >&2; }
fail() {
	printf 'carto-appliance install.sh: error: %s\n' "$*" >&2
	exit 1
}

# proxy_args picks --proxy-url and --proxy-ca-cert out of the install
# arguments, for the downloads.
proxy_args() {
	dl_proxy= dl_proxy_ca=
	while [ $# -gt 0 ]; do
		case $1 in
		--proxy-url=*) dl_proxy=${1#*=} ;;
		--proxy-url) [ $# -gt 1 ] && dl_proxy=$2 ;;
		--proxy-ca-cert=*) dl_proxy_ca=${1#*=} ;;
		--proxy-ca-cert) [ $# -gt 1 ] && dl_proxy_ca=$2 ;;
		esac
		shift
	done
}

# check_openssl makes sure openssl can verify an ed25519 signature over raw
# data (pkeyutl -rawin, OpenSSL 3.0 and later) before anything is downloaded.
check_openssl() {
	command -v openssl >/dev/null 2>&1 || fail "openssl is missing: it verifies the release's signature (install the openssl package, 3.0 or later); nothing was installed"
	openssl pkeyutl -help 2>&1 | grep -q -- '-rawin' ||
		fail "$(openssl version 2>/dev/null || echo this openssl) cannot verify ed25519 signatures (pkeyutl -rawin needs OpenSSL 3.0 or later): upgrade openssl, or verify SHA256SUMS.sig on another machine and install the deb or rpm package; nothing was installed"
}

# verify_sums checks SHA256SUMS against SHA256SUMS.sig with the release's
# public key (base64 DER): no checksum is trusted before this.
verify_sums() {
	printf '%s\n' '-----BEGIN PUBLIC KEY-----' "$2" '-----END PUBLIC KEY-----' >"$1/release.pub"
	openssl pkeyutl -verify -pubin -inkey "$1/release.pub" -rawin \
		-in "$1/SHA256SUMS" -sigfile "$1/SHA256SUMS.sig" >/dev/null 2>&1 ||
		fail "$release_url/SHA256SUMS does not match its signature (SHA256SUMS.sig, by the release key): the release is corrupt or was tampered with; nothing was installed"
}

# download_sig is download with a missing signature named as such.
download_sig() {
	fetch "$1" "$2" ||
		fail "$1 could not be downloaded: without it the release's checksums cannot be trusted; nothing was installed"
}

download() {
	fetch "$1" "$2" || fail "downloading $1 failed (behind a proxy? pass --proxy-url, or set https_proxy)"
}

fetch() {
	if command -v curl >/dev/null 2>&1; then
		# https only, redirects included; a proxy may still be http://.
		set -- curl -fsSL --proto =https --proto-redir =https --retry 3 --connect-timeout 15 -o "$2" "$1"
		[ -n "$dl_proxy" ] && set -- "$@" --proxy "$dl_proxy"
		[ -n "$dl_proxy_ca" ] && set -- "$@" --proxy-cacert "$dl_proxy_ca"
	elif command -v wget >/dev/null 2>&1; then
		[ -n "$dl_proxy" ] && export https_proxy="$dl_proxy" http_proxy="$dl_proxy"
		# wget cannot refuse a redirect to http (--https-only is for
		# recursive downloads): the signature check is what holds there.
		set -- wget -q -O "$2" "$1"
	else
		fail "neither curl nor wget is installed"
	fi
	"$@"
}

{ main "$@"; }
