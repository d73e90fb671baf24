#!/usr/bin/env bash
# `make check`: host tests of the protocol core, then KUnit and kselftests in the test VM.
# Prints each tier's counts and ends with "N passed, N failed"; exits non-zero on any failure.
# Usage: scripts/check.sh [--debug]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cd "$top"

flavour=()
[ "${1:-}" = --debug ] && flavour=(--debug)
passed=0
failed=0
summary=()
fail() {
	echo "check: FAIL: $*"
	failed=$((failed + 1))
}

"$here/deps.sh" || { echo "check: deps failed"; echo "0 passed, 1 failed"; exit 1; }

# Tier 1: host tests of the pure protocol core.
host_log=$(mktemp)
trap 'rm -f "$host_log" "${fuzz_log:-}" "${vm_log:-}" "${build_log:-}"' EXIT
(cd rust/proto && cargo test 2>&1) | tee "$host_log"
read -r hp hf < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } }
	END { print p + 0, f + 0 }' "$host_log")
grep -q '^test result:' "$host_log" || fail "host tests did not build or run"
[ "$hp" -gt 0 ] || fail "no host tests ran"
passed=$((passed + hp))
failed=$((failed + hf))
summary+=("host (cargo test): $hp passed, $hf failed")

# Tier 1b: the protocol core's fuzz targets, each for a fixed number of runs from a fixed
# seed (`make fuzz` runs them for longer, on a growing corpus).
fuzz_log=$(mktemp)
"$here/fuzz.sh" --smoke 2>&1 | tee "$fuzz_log"
[ "${PIPESTATUS[0]}" = 0 ] || fail "fuzz smoke run"
fp=$(grep -c '^fuzz: .* ok$' "$fuzz_log")
ft=$(grep -c '^\[\[bin\]\]$' rust/proto/fuzz/Cargo.toml)
[ "$fp" = "$ft" ] || fail "fuzz: $fp of $ft targets ran clean"
passed=$((passed + fp))
summary+=("fuzz smoke (libFuzzer): $fp of $ft targets clean")

# Build what the VM needs, with clippy; a build failure fails everything after it, and any
# compiler, clippy or objtool warning is a failure too.
build_log=$(mktemp)
if ! module=$("$here/module.sh" "${flavour[@]}" CLIPPY=1 2> >(tee "$build_log" >&2)) ||
	! make -s -C selftests; then
	fail "build"
	printf '%s\n' "${summary[@]}"
	echo "$passed passed, $failed failed"
	exit 1
fi
lp=0
if grep -q 'warning' "$build_log"; then
	fail "module build (CLIPPY=1) has warnings"
else
	lp=$((lp + 1))
fi
if (cd rust/proto && cargo clippy -q --all-targets -- -D warnings) &&
	(cd rust/proto/fuzz && CARGO_TARGET_DIR=${RSMC_CACHE:-$HOME/.cache/rsmc}/fuzz/clippy cargo clippy -q -- -D warnings); then
	lp=$((lp + 1))
else
	fail "host clippy"
fi
if rustfmt --check rust/rsmc_main.rs rust/proto/host.rs rust/proto/fuzz/*.rs >/dev/null; then
	lp=$((lp + 1))
else
	fail "rustfmt: run 'rustfmt rust/rsmc_main.rs rust/proto/host.rs rust/proto/fuzz/*.rs'"
fi
passed=$((passed + lp))
summary+=("lint (module clippy, host clippy, rustfmt): $lp of 3 clean")

# Tier 2 and 3: KUnit (run at insmod) and kselftests, in one VM boot.
vm_log=$(mktemp)
RSMC_MODULE=$module "$top/qemu/run" "${flavour[@]}" -- "$top/selftests/run_in_vm.sh" 2>&1 | tee "$vm_log"
vm_status=${PIPESTATUS[0]}
[ "$vm_status" = 0 ] || fail "VM exited with status $vm_status"
grep -q '^### end' "$vm_log" || fail "VM run did not complete"

section() { # print the lines after marker $1 up to the next marker
	awk -v start="$1" '$0 == start { on = 1; next } /^### / { on = 0 } on' "$vm_log"
}

# KUnit: every suite declared in the sources must have run; count its cases.
kunit=$(section "### kunit")
kp=$(grep -cE '^    ok [0-9]+ ' <<<"$kunit")
kf=$(grep -cE '^    not ok [0-9]+ ' <<<"$kunit")
for suite in $(grep -rhoE 'kunit_tests\(rsmc_[a-z0-9_]+\)' rust | sed -E 's/.*\((.*)\)/\1/' | sort -u); do
	grep -qE "^(not )?ok [0-9]+ $suite\$" <<<"$kunit" || fail "KUnit suite $suite did not run"
done
[ "$kp" -gt 0 ] || fail "no KUnit cases ran"
passed=$((passed + kp))
failed=$((failed + kf))
summary+=("kunit: $kp passed, $kf failed")

# kselftests: count TAP results per test program; a crash or a short plan is a failure.
sp=0 sf=0 ss=0
for test in $(make -s -C selftests print-tests); do
	tap=$(section "### kselftest $test")
	p=$(grep -E '^ok [0-9]+ ' <<<"$tap" | grep -vc '# SKIP')
	s=$(grep -cE '^ok [0-9]+ .*# SKIP' <<<"$tap")
	f=$(grep -cE '^not ok [0-9]+ ' <<<"$tap")
	plan=$(sed -nE 's/^1\.\.([0-9]+)$/\1/p' <<<"$tap" | head -n1)
	[ -n "$plan" ] && [ "$plan" = $((p + s + f)) ] || fail "$test: plan ${plan:-missing}, $((p + s + f)) results"
	grep -q "^### exit $test 0\$" "$vm_log" || [ "$f" -gt 0 ] || fail "$test exited non-zero"
	sp=$((sp + p)) sf=$((sf + f)) ss=$((ss + s))
done
[ "$sp" -gt 0 ] || fail "no kselftests passed"
passed=$((passed + sp))
failed=$((failed + sf))
summary+=("kselftest: $sp passed, $sf failed, $ss skipped")

# kmemleak (debug kernel): any unreferenced object after two scans is a failure.
leaks=$(section "### kmemleak")
if [ -n "$leaks" ]; then
	fail "kmemleak reports:"
	echo "$leaks" | head -60
fi

# The kernel log must be free of splats (KASAN, lockdep, WARN, BUG, refcount, panic) from
# the moment rsmc is loaded; what the kernel reported while booting, before, is shown only.
boot=$(section "### boot log")
if [ -n "$boot" ]; then
	echo "check: warning: the kernel reported this while booting, before rsmc was loaded:"
	echo "$boot"
fi
splats=$(section "### kernel log")
if [ -n "$splats" ]; then
	fail "kernel log has reports:"
	echo "$splats"
fi

echo "== rsmc check${flavour:+ (debug kernel)} =="
grep -E '^time: ' "$vm_log" | sed 's/^time: /kselftest time: /' || true
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
