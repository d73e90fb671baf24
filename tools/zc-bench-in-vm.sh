#!/usr/bin/env bash
# Runs inside the test VM (see `make bench`): a 64 KiB-send stream from rsmc_a to rsmc_b over
# rsmc, copied and then with MSG_ZEROCOPY, in one VM run; prints throughput and the sender's
# CPU time per GiB of each, and their ratios.
set -euo pipefail
cd "$(dirname "$0")"
mib=${RSMC_ZC_BENCH_MIB:-512}
port=7300
results=$(mktemp)

for mode in copy zerocopy; do
	port=$((port + 1))
	ip netns exec rsmc_b out/zcstream server -p "$port" >/dev/null &
	server=$!
	sleep 0.5
	flag=()
	[ "$mode" = zerocopy ] && flag=(-z)
	ip netns exec rsmc_a out/zcstream client -a 192.0.2.2 -p "$port" -n "$mib" "${flag[@]}" \
		| tee -a "$results"
	wait "$server"
done

awk '{
	for (i = 1; i <= NF; i++) { split($i, kv, "="); f[$1, kv[1]] = kv[2] }
} END {
	c = "mode=copy"; z = "mode=zerocopy"
	printf "\n64 KiB sends, %s MiB, one VM run (TCG: compare ratios)\n", mib
	printf "%-9s %8s %14s %8s\n", "mode", "MiB/s", "cpu_s_per_GiB", "copied"
	printf "%-9s %8s %14s %8s\n", "copy", f[c, "mib_s"], f[c, "cpu_s_per_gib"], "-"
	printf "%-9s %8s %14s %8s\n", "zerocopy", f[z, "mib_s"], f[z, "cpu_s_per_gib"], f[z, "copied"]
	printf "zerocopy/copy: throughput %.2f, CPU per byte %.2f\n",
		f[z, "mib_s"] / f[c, "mib_s"], f[z, "cpu_s_per_gib"] / f[c, "cpu_s_per_gib"]
}' mib="$mib" "$results"
