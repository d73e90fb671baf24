#!/usr/bin/env bash
# Build (or reuse) the test kernel and print its build directory.
# Usage: scripts/kernel.sh [--debug]
# The build lives outside the repository, keyed by kernel version and a hash of the config
# fragments, so it is rebuilt only when one of those changes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
. "$here/env.sh"

fragments=("$top/qemu/kernel.config")
flavour=normal
if [ "${1:-}" = --debug ]; then
	fragments+=("$top/qemu/kernel-debug.config")
	flavour=debug
fi

ksrc=$(rsmc_kernel_src)
version=$(make -s -C "$ksrc" kernelversion)
hash=$(cat "${fragments[@]}" | sha256sum | cut -c1-12)
out=$RSMC_CACHE/build/$version-$flavour-$hash
log() { printf 'kernel: %s\n' "$*" >&2; }

if [ -f "$out/.rsmc-built" ]; then
	echo "$out"
	exit 0
fi

# One build per tree at a time (two would corrupt it); a waiter reuses the finished build.
mkdir -p "$RSMC_CACHE/build"
exec 9>"$out.lock"
flock 9
if [ -f "$out/.rsmc-built" ]; then
	echo "$out"
	exit 0
fi

kmake() { make -C "$ksrc" O="$out" LLVM="$KLLVM" RUSTC="$KRUSTC" "$@"; }

log "building $version ($flavour) in $out"
start=$(date +%s)
# An interrupted build resumes where it stopped; only an unconfigured tree starts afresh.
if [ ! -f "$out/.rsmc-configured" ]; then
	rm -rf "$out"
	mkdir -p "$out"
	kmake -s tinyconfig >&2
	"$ksrc/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "${fragments[@]}" >/dev/null
	kmake -s olddefconfig >&2

	# Fail early if Kconfig dropped an option we asked for (a missing dependency or tool).
	dropped=0
	for frag in "${fragments[@]}"; do
		while IFS= read -r line; do
			case "$line" in
			CONFIG_*=n) opt=${line%%=*}
				grep -q "^$opt=" "$out/.config" && { log "$opt should be off"; dropped=1; } ;;
			CONFIG_*) grep -qx "$line" "$out/.config" || { log "not set: $line"; dropped=1; } ;;
			esac
		done <"$frag"
	done
	[ "$dropped" = 0 ] || { log "kernel config incomplete (see above)"; exit 1; }
	touch "$out/.rsmc-configured"
fi

# `all` builds vmlinux, bzImage and the modules (smc.ko) in one dependency graph.
kmake -j"$(($(nproc) + 1))" all >&2
touch "$out/.rsmc-built"
log "built in $(($(date +%s) - start)) s"
echo "$out"
