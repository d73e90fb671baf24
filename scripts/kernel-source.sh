#!/usr/bin/env bash
# Download and unpack the newest linux-source-7.N Debian ships (trixie-backports, then sid).
# Prints nothing on success; the unpacked tree is $cache/src/linux-<version>, and
# $cache/src/current names it.
set -euo pipefail

cache=${RSMC_CACHE:-$HOME/.cache/rsmc}
src=$cache/src
apt_dir=$cache/apt
mkdir -p "$src" "$apt_dir/lists/partial" "$apt_dir/archives/partial"

log() { printf 'kernel-source: %s\n' "$*" >&2; }

if [ -n "${RSMC_KSRC_VERSION:-}" ] && [ -d "$src/linux-$RSMC_KSRC_VERSION" ]; then
	exit 0
fi
if [ -f "$src/current" ] && [ -d "$src/$(cat "$src/current")" ] && [ -z "${RSMC_KSRC_REFRESH:-}" ]; then
	exit 0
fi

# The Debian mirror this machine already uses (never a hard-coded host).
mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
	grep -E '^(URIs:|deb )' | grep -v -- '-security' | grep -oE 'https?://[^ ]+/debian/?' |
	head -n1 | sed 's:/*$::' || true)
[ -n "$mirror" ] || { log "no Debian mirror found in the apt sources"; exit 1; }

cat >"$apt_dir/sources.list" <<EOT
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror sid main
EOT
apt_opts=(
	-o "Dir::Etc::SourceList=$apt_dir/sources.list"
	-o "Dir::Etc::SourceParts=$apt_dir/none"
	-o "Dir::Etc::Preferences=$apt_dir/none"
	-o "Dir::Etc::PreferencesParts=$apt_dir/none"
	-o "Dir::State::Lists=$apt_dir/lists"
	-o "Dir::Cache=$apt_dir/cache"
	-o "Dir::Cache::Archives=$apt_dir/archives"
	-o "APT::Get::List-Cleanup=0"
	-o "APT::Sandbox::User=root"
)
mkdir -p "$apt_dir/cache" "$apt_dir/none"
apt-get "${apt_opts[@]}" update -q >&2

# Newest 7.N package name, then its newest version across the two suites.
pkg=$(apt-cache "${apt_opts[@]}" pkgnames linux-source-7. | sort -V | tail -n1)
[ -n "$pkg" ] || { log "no linux-source-7.N package found"; exit 1; }
log "using $pkg"
cd "$apt_dir/archives"
rm -f "${pkg}"_*.deb
apt-get "${apt_opts[@]}" download "$pkg" >&2
deb=$(ls "${pkg}"_*.deb | head -n1)
tmp=$(mktemp -d "$src/unpack.XXXXXX")
dpkg-deb -x "$deb" "$tmp"
tarball=$(ls "$tmp"/usr/src/linux-source-*.tar.xz)
tar -C "$tmp" -xf "$tarball"
tree=$(find "$tmp" -maxdepth 1 -type d -name 'linux-source-*' | head -n1)
version=$(make -s -C "$tree" kernelversion)
rm -rf "$src/linux-$version"
mv "$tree" "$src/linux-$version"
rm -rf "$tmp"
echo "linux-$version" >"$src/current"
log "kernel source $version in $src/linux-$version"
