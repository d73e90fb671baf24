#!/usr/bin/env bash
# Install everything rsmc needs on Debian bookworm (run as root). Idempotent.
#
# The kernel source comes from a newer Debian suite. That suite is NEVER added to the
# system's apt sources: a private apt configuration under the cache directory only
# downloads the linux-source .deb, so no bookworm package can be upgraded by accident.
set -euo pipefail

cache=${RSMC_CACHE:-$HOME/.cache/rsmc}
stamp=$cache/deps.stamp
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$cache"

log() { printf 'deps: %s\n' "$*" >&2; }

# Bump when the package list changes so old stamps are ignored.
deps_version=5
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$deps_version" ] && [ -z "${RSMC_DEPS_FORCE:-}" ]; then
	exit 0
fi

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

packages=(
	build-essential bc flex bison libelf-dev libssl-dev cpio kmod rsync
	rustc-web rust-web-src cargo-web rust-web-clippy
	clang-19 lld-19 llvm-19 libclang-19-dev
	qemu-system-x86
	rdma-core ibverbs-utils rdmacm-utils perftest qperf iproute2 iperf3 liburing-dev
	libibverbs-dev librdmacm-dev
)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# bindgen for the kernel's Rust bindings (kernel 7.x wants >= 0.71.1).
bindgen_root=$cache/bindgen
if ! "$bindgen_root/bin/bindgen" --version >/dev/null 2>&1; then
	log "installing bindgen-cli"
	cargo install --locked --root "$bindgen_root" bindgen-cli
fi

"$here/kernel-source.sh"

echo "$deps_version" >"$stamp"
log "done"
