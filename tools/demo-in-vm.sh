#!/usr/bin/env bash
# Runs inside the test VM (see scripts/demo.sh): 1-byte ping-pong latency between rsmc_a
# (client) and rsmc_b (server) over rsmc with busy polling off and on, in each wait mode,
# next to TCP over the same veth, raw verbs (qperf rc_lat, waiting on / polling the CQ) over
# the same rxe pair, and stock Linux SMC-R (smc.ko, SMC-Rv2). One run, so ratios are fair.
# With RSMC_DEMO_CONNECT_ITERS set (`make bench`), also round trips on a new connection each
# over rsmc, TCP and stock SMC-R: the cost of connection setup and teardown.
#
# The host's load drifts over a run (steal time under TCG), and where rxe's kworkers land, so
# which spinner must give way to them, varies from one connection to the next: every path is
# measured in each of a few interleaved rounds, on fresh connections, and the table shows the
# median of its rounds.
set -euo pipefail
cd "$(dirname "$0")"
pp=$PWD/out/pingpong
iters=${RSMC_DEMO_ITERS:-2000}
size=${RSMC_DEMO_SIZE:-1}
rounds=${RSMC_DEMO_ROUNDS:-3}
round_iters=$(((iters + rounds - 1) / rounds))
# Round trips on a new connection each (connect to close), per round and path; 0: none.
connect_iters=${RSMC_DEMO_CONNECT_ITERS:-0}
# Spin for longer than nearly every round trip: ~50 µs on hardware, but about a millisecond
# under TCG, with a tail of several. A spinner that gives up first sleeps until the NAPI's
# deferral timer polls (0.5 ms): 1000 µs here doubled the busy-poll p50.
busy_usecs=${RSMC_DEMO_BUSY_USECS:-5000}
results=$(mktemp)
port=7100
# Busy polling wants a CPU of its own: every client (rsmc, TCP, verbs, SMC-R alike) runs on
# CPU 0 and every server on CPU 1, so neither spinner waits for the other to give way.
on_client_cpu=(taskset -c 0)
on_server_cpu=(taskset -c 1)

# server FAMILY MODE [BUSY_ARGS...]: start a ping-pong server in rsmc_b on a fresh port, and
# wait (up to 10 s: the host may be loaded) until it listens.
server() {
	local i
	port=$((port + 1))
	ip netns exec rsmc_b "${on_server_cpu[@]}" "$pp" server -f "$1" -p "$port" -m "$2" "${@:3}" >/dev/null 2>&1 &
	server_pid=$!
	for i in $(seq 100); do
		ip netns exec rsmc_b ss -Hltn "sport = :$port" | grep -q . && return 0
		sleep 0.1
	done
}

# set_defer ON: rsmc's NAPI interrupt deferral on both devices, on (1) or off (0).
set_defer() {
	local dev
	[ -w /sys/kernel/debug/rsmc/napi_defer ] || return 0
	for dev in rxe_a rxe_b; do
		echo "$dev $(($1 * 1000)) $(($1 * 500000))" >/sys/kernel/debug/rsmc/napi_defer
	done
}

# measure LABEL FAMILY MODE BUSY [ARGS...]: one client run against a fresh server, both given
# ARGS, the client also client_args; appends a result line.
client_args=()
measure() {
	local label=$1 family=$2 mode=$3 busy=$4 busy_args=("${@:5}") sqpoll=0
	[ "$busy" = 1 ] && busy_args+=(-b -B "$busy_usecs" --prefer)
	[[ " ${*:5} " == *" --sqpoll "* ]] && sqpoll=1
	# Both ends spin, as qperf --cq_poll 1 does; with prefer, the NAPIs' interrupt deferral
	# keeps completion interrupts off while they do.
	set_defer "$busy"
	server "$family" "$mode" "${busy_args[@]}"
	# `ip netns exec` mounts a /sys of its own, without the debugfs where pingpong finds rsmc's
	# NAPI counters.
	if ip netns exec rsmc_a sh -c 'mount -t debugfs none /sys/kernel/debug 2>/dev/null; exec "$@"' sh \
		"${on_client_cpu[@]}" "$pp" client -a 192.0.2.2 -f "$family" -p "$port" -m "$mode" \
		-s "$size" -n "$round_iters" "${busy_args[@]}" "${client_args[@]}" --label "$label" \
		>>"$results"; then :
	else
		echo "label=$label family=$family mode=$mode busy=$busy sqpoll=$sqpoll failed=1" >>"$results"
	fi
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
}

# qperf_rtt CQ_POLL LABEL: raw verbs RC latency with RDMA CM; qperf prints one-way latency
# (its mean), doubled here to a round trip.
qperf_rtt() {
	local out
	out=$(ip netns exec rsmc_a "${on_client_cpu[@]}" qperf -cm1 --cq_poll "$1" -m "$size" -t 3 192.0.2.2 rc_lat 2>&1) || true
	awk -v mode="$2" '/latency/ {
		v = $3; if ($4 == "ms") v *= 1000; if ($4 == "ns") v /= 1000
		printf "label=verbs family=rc mode=%s busy=- p50_us=%.1f p99_us=- mean_us=%.1f napi_id=-\n", mode, 2 * v, 2 * v
	}' <<<"$out" >>"$results"
}

# measure_connect LABEL FAMILY: round trips on a new connection each, if asked for.
measure_connect() {
	[ "$connect_iters" -gt 0 ] || return 0
	client_args=(--reconnect -n "$connect_iters" -w 10)
	measure "$1" "$2" recv 0
	client_args=()
}

# Stock SMC-R owns AF_SMC only while rsmc is unloaded.
measure_smc_r() {
	if rmmod rsmc && insmod "$RSMC_KDIR/net/smc/smc.ko" && out/smc_ueid RSMC-DEMO; then
		measure smc-r smc recv 0
		measure smc-r smc epoll 0
		measure_connect smc-r smc
	else
		echo "label=smc-r family=smc mode=recv busy=0 failed=1" >>"$results"
	fi
	rmmod smc 2>/dev/null || true
	[ -d /sys/module/rsmc ] || insmod "$RSMC_MODULE"
}

ip netns exec rsmc_b "${on_server_cpu[@]}" qperf >/dev/null 2>&1 &
qperf_pid=$!
sleep 0.5
for round in $(seq "$rounds"); do
	# recv busy-polls with SO_BUSY_POLL, epoll with EPIOCSPARAMS, io_uring with registered
	# NAPI (all set by pingpong -b); poll/select can only use the global sysctl.
	for mode in recv epoll poll io_uring; do
		for busy in 0 1; do
			[ "$mode" = poll ] && sysctl -qw net.core.busy_poll=$((busy * busy_usecs))
			measure rsmc smc "$mode" "$busy"
		done
	done
	# io_uring's wait ends its spin whenever a soft-RoCE kworker needs the CPU, and then
	# sleeps; an SQPOLL thread that busy polls gives way and spins on. Without busy polling,
	# that thread would only compete for the CPU, so it is measured with busy polling only.
	measure rsmc smc io_uring 1 --sqpoll
	sysctl -qw net.core.busy_poll=0
	measure tcp tcp recv 0
	measure tcp tcp epoll 0
	measure_connect rsmc smc
	measure_connect tcp tcp
	qperf_rtt 0 cq_wait
	qperf_rtt 1 cq_poll
	measure_smc_r
done
kill "$qperf_pid" 2>/dev/null || true

echo
echo "$size-byte ping-pong round-trip time, one VM run (TCG: compare ratios): the median of"
echo "$rounds interleaved rounds of $round_iters round trips each; p50_range: the rounds' p50s;"
echo "on rsmc, cq/rt: completion queue events (interrupts) per round trip, busy%: the share of"
echo "the client's completions that busy polling reaped"
awk '
function sorted(key, what, c,    i, j, x) {
	for (i = 1; i <= c; i++) v[i] = val[key, what, i] + 0
	for (i = 2; i <= c; i++) {
		x = v[i]
		for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]
		v[j + 1] = x
	}
}
function median(key, what, c, format) {
	if (val[key, what, 1] == "-") return "-"
	sorted(key, what, c)
	return sprintf(format, (c % 2) ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2)
}
function ratio(a, b) { return (a > 0 && b > 0) ? sprintf("%.2f", a / b) : "-" }
{
	delete f
	for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
	if (f["sqpoll"] == 1) f["mode"] = f["mode"] "+sqpoll"
	if (f["reconnect"] == 1) f["mode"] = "connect"
	key = f["label"] " " f["mode"] " " f["busy"]
	if (!(key in count)) { count[key] = 0; order[++n] = key }
	if (f["failed"]) next
	c = ++count[key]
	val[key, "p50", c] = f["p50_us"]; val[key, "p99", c] = f["p99_us"]
	val[key, "mean", c] = f["mean_us"]
	reaped = f["busy_completions"] + f["softirq_completions"]
	val[key, "irq", c] = (f["cq_events"] == "") ? "-" : f["cq_events"] / f["iters"]
	val[key, "busy", c] = (f["cq_events"] == "" || !reaped) ? "-" : \
		100 * f["busy_completions"] / reaped
}
END {
	printf "%-6s %-15s %-5s %9s %9s %9s %-10s %6s %5s\n", "path", "mode", "busy", "p50_us",
		"p99_us", "mean_us", " p50_range", "cq/rt", "busy%"
	for (i = 1; i <= n; i++) {
		key = order[i]; c = count[key]; split(key, k, " ")
		if (!c) { printf "%-6s %-15s %-5s %9s\n", k[1], k[2], k[3], "FAILED"; continue }
		p50[key] = median(key, "p50", c, "%.1f")
		range = sprintf("%.0f-%.0f", v[1], v[c])
		p99 = median(key, "p99", c, "%.1f")
		mean = median(key, "mean", c, "%.1f")
		printf "%-6s %-15s %-5s %9s %9s %9s  %-9s %6s %5s\n", k[1], k[2], k[3], p50[key], p99,
			mean, range, median(key, "irq", c, "%.2f"), median(key, "busy", c, "%.0f")
	}
	print ""
	print "busy-poll p50 as a fraction of: rsmc without busy polling (for io_uring+sqpoll: plain"
	print "io_uring without), stock SMC-R (same mode, else recv), raw verbs polling the CQ"
	printf "%-15s %9s %9s %9s\n", "mode", "rsmc_off", "smc-r", "verbs"
	split("recv epoll poll io_uring io_uring+sqpoll", modes, " ")
	for (i = 1; i <= 5; i++) {
		m = modes[i]; busy = p50["rsmc " m " 1"]; off = m; sub(/\+sqpoll$/, "", off)
		smcr = p50["smc-r " m " 0"]; if (smcr == "") smcr = p50["smc-r recv 0"]
		printf "%-15s %9s %9s %9s\n", m, ratio(busy, p50["rsmc " off " 0"]), ratio(busy, smcr),
			ratio(busy, p50["verbs cq_poll -"])
	}
	if (("rsmc connect 0") in p50) {
		print ""
		print "connect: one round trip on a new connection, from socket() to close(); its p50"
		printf "on rsmc as a fraction of stock SMC-R: %s, of TCP: %s\n",
			ratio(p50["rsmc connect 0"], p50["smc-r connect 0"]),
			ratio(p50["rsmc connect 0"], p50["tcp connect 0"])
	}
}' "$results"
! grep -q 'failed=1' "$results"
