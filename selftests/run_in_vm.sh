#!/usr/bin/env bash
# Runs inside the VM (qemu/run): prints the KUnit results of rsmc's suites and the TAP output
# of every kselftest, between markers that scripts/check.sh parses, then checks the kernel
# log for splats. Always exits 0 once it got that far: the verdict is the host's.
cd "$(dirname "$0")"
out=${RSMC_SELFTEST_OUT:-out}

echo "### kunit"
for suite in /sys/kernel/debug/kunit/rsmc_*; do
	[ -e "$suite/results" ] && cat "$suite/results"
done

# In the Makefile's order: module_lifecycle, which unloads and reloads rsmc, comes last.
for test in $(make -s print-tests); do
	echo "### kselftest $test"
	started=$SECONDS
	timeout "${RSMC_TEST_TIMEOUT:-600}" "$out/$test"
	echo "### exit $test $?"
	echo "time: $test took $((SECONDS - started)) s"
	# RSMC_KMEMLEAK_EACH=1 (debug kernel): attribute leaks to the program after which they
	# appear. Off by default: each scan of the guest's memory takes a while there.
	if [ -n "${RSMC_KMEMLEAK_EACH:-}" ] && [ -e /sys/kernel/debug/kmemleak ]; then
		echo scan >/sys/kernel/debug/kmemleak
		echo "kmemleak after $test: $(grep -c unreferenced /sys/kernel/debug/kmemleak)" >&2
	fi
done

echo "### kmemleak"
if [ -e /sys/kernel/debug/kmemleak ]; then
	# Two scans: kmemleak reports an object only once it was unreferenced in both.
	echo scan >/sys/kernel/debug/kmemleak
	sleep 6
	echo scan >/sys/kernel/debug/kmemleak
	cat /sys/kernel/debug/kmemleak
fi
# Splats before rsmc was loaded (the kernel's own, while booting) are listed apart.
splat='BUG:|WARNING:|Oops|KASAN|UBSAN|possible recursive locking|circular locking|inconsistent lock|sleeping function called|refcount_t:|Kernel panic'
mark='rsmc-check: loading rsmc'
dmesg >/tmp/rsmc-dmesg
grep -q "$mark" /tmp/rsmc-dmesg || mark='^'
echo "### boot log"
sed "/$mark/,\$d" /tmp/rsmc-dmesg | grep -E -A20 "$splat" || true
echo "### kernel log"
sed -n "/$mark/,\$p" /tmp/rsmc-dmesg | grep -E -A20 "$splat" || true
echo "### end"
