#!/usr/bin/env bash
# Build rsmc.ko (and print its path) against KDIR, or the cached test kernel.
# Usage: scripts/module.sh [--debug] [extra kbuild args, e.g. CLIPPY=1]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
. "$here/env.sh"

flavour=()
if [ "${1:-}" = --debug ]; then
	flavour=(--debug)
	shift
fi
kdir=${KDIR:-$("$here/kernel.sh" "${flavour[@]}")}
kdir=$(cd "$kdir" && pwd)
# Objects go outside the repository, one directory per kernel they target and checkout.
out=$RSMC_CACHE/obj/${kdir//\//_}${top//\//_}
mkdir -p "$out"
make -s -C "$kdir" M="$top" MO="$out" LLVM="$KLLVM" RUSTC="$KRUSTC" CLIPPY_DRIVER=/usr/bin/clippy-driver \
	"$@" modules >&2
echo "$out/rsmc.ko"
