#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets of the protocol core (rust/proto/fuzz) and runs
# each one. The corpus grows under the cache directory from run to run; a crash leaves its
# input there too, and the script fails.
#
# Usage: scripts/fuzz.sh [--smoke] [seconds per target, default 60]
#   --smoke: instead, a fixed number of runs from a fixed seed and an empty corpus, so that
#            `make check` gets the same inputs every time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
crate=$(dirname "$here")/rust/proto/fuzz

smoke=
[ "${1:-}" = --smoke ] && { smoke=1; shift; }
seconds=${1:-60}
runs=${RSMC_FUZZ_SMOKE_RUNS:-200000}

# libFuzzer's instrumentation on a stable compiler: sanitizer coverage, as cargo-fuzz passes it.
# An explicit --target keeps these flags off build scripts and proc macros.
flags=(
	--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table
	-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks
)
export RUSTFLAGS="${flags[*]}"
export CARGO_TARGET_DIR=$RSMC_CACHE/fuzz/target
host=$(rustc -vV | sed -n 's/^host: //p')
(cd "$crate" && cargo build -q --release --target "$host")

log=$(mktemp)
trap 'rm -f "$log"' EXIT
targets=$(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' "$crate/Cargo.toml")
for target in $targets; do
	bin=$CARGO_TARGET_DIR/$host/release/$target
	artifacts=$RSMC_CACHE/fuzz/artifacts/$target
	mkdir -p "$artifacts"
	if [ -n "$smoke" ]; then
		args=(-seed=1 -runs="$runs")
	else
		corpus=$RSMC_CACHE/fuzz/corpus/$target
		mkdir -p "$corpus"
		args=(-max_total_time="$seconds" "$corpus")
	fi
	if ! "$bin" "${args[@]}" -artifact_prefix="$artifacts/" >"$log" 2>&1; then
		grep -A12 -m1 -E 'panicked|ERROR: libFuzzer' "$log" || tail -n 20 "$log"
		echo "fuzz: $target FAILED; the input is in $artifacts"
		exit 1
	fi
	tail -n 1 "$log"
	echo "fuzz: $target ok"
done
