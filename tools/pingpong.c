// SPDX-License-Identifier: GPL-2.0
/*
 * pingpong - request/response (ping-pong) latency client/server for
 * AF_SMC (rsmc or stock smc.ko) and plain TCP, with optional kernel
 * busy polling.
 *
 * Usage:
 *   pingpong server [-a BINDADDR] [-f smc|smc6|tcp|tcp6] [-p PORT] [-m MODE]
 *                   [-b] [-B USEC] [--prefer] [--budget N] [--sqpoll]
 *                   [--nodelay|--no-nodelay]
 *   pingpong client -a ADDR [-f smc|smc6|tcp|tcp6] [-p PORT] [-s SIZE]
 *                   [-n ITERS] [-w WARMUP] [-m MODE] [-b] [-B USEC]
 *                   [--prefer] [--budget N] [--sqpoll] [--label TEXT]
 *                   [--nodelay|--no-nodelay] [--timeout SEC] [--reconnect]
 *
 *   -f FAMILY  smc  = socket(AF_SMC, SOCK_STREAM, 0), IPv4 address (default)
 *              smc6 = socket(AF_SMC, SOCK_STREAM, 1), IPv6 address
 *              tcp  = socket(AF_INET, SOCK_STREAM, 0)
 *              tcp6 = socket(AF_INET6, SOCK_STREAM, 0)
 *   -a ADDR    client: server address/host name (required);
 *              server: optional bind address (default: any)
 *   -p PORT    TCP port (default 7000)
 *   -m MODE    how each side waits for the reply/request (default recv):
 *              recv     blocking recv(2)
 *              epoll    epoll_wait(2) on the socket, then recv(MSG_DONTWAIT)
 *              poll     poll(2) on the socket, then recv(MSG_DONTWAIT)
 *              io_uring IORING_OP_RECV + io_uring_submit_and_wait()
 *              Sends are always plain blocking send(2) in every mode.
 *   -b         enable busy polling:
 *              - all modes: setsockopt(SO_BUSY_POLL, USEC) on the socket
 *                (values above net.core.busy_read need CAP_NET_ADMIN)
 *              - epoll: ioctl(EPIOCSPARAMS, {busy_poll_usecs=USEC,
 *                busy_poll_budget=N (default 8), prefer_busy_poll=--prefer})
 *              - poll: poll(2) only busy polls when the sysctl
 *                net.core.busy_poll is non-zero (it also sets the poll
 *                duration); a process cannot set this per call, so the
 *                CALLER must set it (sysctl -w net.core.busy_poll=50).
 *                A warning is printed when it is 0.
 *              - io_uring: IORING_REGISTER_NAPI {busy_poll_to=USEC,
 *                prefer_busy_poll=--prefer, dynamic tracking}
 *   -B USEC    busy poll time in microseconds (default 50); implies -b
 *   --prefer   setsockopt(SO_PREFER_BUSY_POLL, 1) (and prefer flag for
 *              epoll/io_uring); implies -b
 *   --budget N setsockopt(SO_BUSY_POLL_BUDGET, N) and epoll budget; implies -b
 *   --sqpoll   io_uring only: the ring gets an SQPOLL thread, pinned to the first CPU
 *              the process may run on. It submits the receives and, with -b, busy
 *              polls the registered NAPIs in its loop, while the process sleeps in
 *              its wait. A wait that polls (no --sqpoll) ends its spin as soon as
 *              another task needs the CPU, and then sleeps until something else
 *              reaps the completion; the SQPOLL thread gives way and spins on.
 *   --reconnect  client: every round trip on a connection of its own: connect, the
 *              size header, one message each way, close; its time covers all of it
 *              (connection setup and teardown as a short request sees them)
 *   -s SIZE    message size in bytes, 1..16384 (default 1)
 *   -n ITERS   timed round trips (default 10000)
 *   -w WARMUP  untimed warm-up round trips (default 1000)
 *   --label T  free-form label echoed in the result line (whitespace and
 *              '=' are replaced by '_'; default "-")
 *   --nodelay / --no-nodelay
 *              TCP_NODELAY on (default) / off. For AF_SMC sockets it is
 *              attempted at IPPROTO_TCP level and failure is ignored.
 *   --timeout SEC  client: abort with exit code 1 if the whole run takes
 *              longer than SEC seconds (default 0 = no limit)
 *
 * Protocol: after connect the client sends a 4-byte header, the message size
 * as a big-endian u32. The server then echoes every SIZE-byte message until
 * the client closes, and then accepts the next connection (one connection
 * at a time, forever). A client dying mid-run only ends that connection.
 *
 * Client output (one line on stdout, key=value, space separated):
 *   label=L family=F mode=M busy=0|1 size=S iters=N p50_us=.. p99_us=..
 *   mean_us=.. min_us=.. napi_id=ID max_us=.. p90_us=.. p999_us=..
 *   busy_usec=USEC prefer=0|1 budget=N warmup=W sqpoll=0|1 reconnect=0|1
 * RTTs are measured per round trip with clock_gettime(CLOCK_MONOTONIC).
 * napi_id is getsockopt(SO_INCOMING_NAPI_ID) on the client socket after the
 * run (0 if none or unsupported). budget=0 means "not set".
 * On an rsmc socket, where rsmc's debugfs file is readable, the line ends with
 * the NAPI counters of the client's device over the timed round trips:
 *   cq_events=.. softirq_polls=.. softirq_completions=.. busy_polls=..
 *   busy_completions=.. busy_yields=..
 *
 * Exit codes: 0 ok, 1 error, 2 echoed data mismatch.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "busy_poll_uapi.h"
#include "rsmc_devices.h"

/* ---- UAPI fallbacks (system headers are older than the target kernel) ---- */

#ifndef AF_SMC
#define AF_SMC 43
#endif
#ifndef SO_BUSY_POLL
#define SO_BUSY_POLL 46
#endif
#ifndef SO_INCOMING_NAPI_ID
#define SO_INCOMING_NAPI_ID 56
#endif
#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif

/* ---- configuration ---- */

#define MAX_SIZE 16384
#define DEFAULT_PORT 7000

enum family { FAM_SMC, FAM_SMC6, FAM_TCP, FAM_TCP6 };
static const char *const family_names[] = { "smc", "smc6", "tcp", "tcp6" };

enum mode { MODE_RECV, MODE_EPOLL, MODE_POLL, MODE_URING };
static const char *const mode_names[] = { "recv", "epoll", "poll", "io_uring" };

struct cfg {
	int server;
	const char *addr;
	enum family family;
	int port;
	enum mode mode;
	int busy;
	unsigned int busy_usec;
	int prefer;
	int budget; /* 0 = not set */
	int sqpoll;
	int reconnect;
	int nodelay;
	unsigned int size;
	long iters;
	long warmup;
	const char *label;
	unsigned int timeout;
};

static struct cfg cfg = {
	.family = FAM_SMC,
	.port = DEFAULT_PORT,
	.mode = MODE_RECV,
	.busy_usec = 50,
	.nodelay = 1,
	.size = 1,
	.iters = 10000,
	.warmup = 1000,
	.label = "-",
};

static const char *prog = "pingpong";

static void err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void err(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void __attribute__((noreturn)) usage(int code)
{
	FILE *f = code ? stderr : stdout;

	fprintf(f,
"Usage:\n"
"  %1$s server [-a BINDADDR] [-f smc|smc6|tcp|tcp6] [-p PORT] [-m MODE]\n"
"                   [-b] [-B USEC] [--prefer] [--budget N] [--sqpoll]\n"
"                   [--no-nodelay]\n"
"  %1$s client -a ADDR [-f smc|smc6|tcp|tcp6] [-p PORT] [-s SIZE] [-n ITERS]\n"
"                   [-w WARMUP] [-m MODE] [-b] [-B USEC] [--prefer] [--budget N]\n"
"                   [--sqpoll] [--label TEXT] [--nodelay|--no-nodelay]\n"
"                   [--timeout SEC] [--reconnect]\n"
"\n"
"  -f FAMILY   smc  AF_SMC proto 0, IPv4 address (default)\n"
"              smc6 AF_SMC proto 1, IPv6 address\n"
"              tcp  AF_INET;  tcp6 AF_INET6\n"
"  -a ADDR     client: server address (required); server: bind address (default any)\n"
"  -p PORT     port (default %2$d)\n"
"  -m MODE     how to wait for the reply/request (default recv):\n"
"              recv      blocking recv()\n"
"              epoll     epoll_wait() then recv(MSG_DONTWAIT)\n"
"              poll      poll() then recv(MSG_DONTWAIT)\n"
"              io_uring  IORING_OP_RECV + io_uring_submit_and_wait()\n"
"              (sends are plain blocking send() in all modes)\n"
"  -b          busy polling on: SO_BUSY_POLL=USEC on the socket, plus\n"
"                epoll:    EPIOCSPARAMS {USEC, budget (default 8), --prefer}\n"
"                poll:     needs sysctl net.core.busy_poll > 0, set by the CALLER\n"
"                          (e.g. sysctl -w net.core.busy_poll=50); warns if 0\n"
"                io_uring: IORING_REGISTER_NAPI {busy_poll_to=USEC, --prefer}\n"
"  -B USEC     busy poll usecs (default 50); implies -b\n"
"  --prefer    SO_PREFER_BUSY_POLL=1 (+ epoll/io_uring prefer flag); implies -b\n"
"  --budget N  SO_BUSY_POLL_BUDGET=N (+ epoll budget); implies -b\n"
"  --sqpoll    io_uring: an SQPOLL ring; its thread, on our first CPU, submits\n"
"              and (with -b) busy polls the NAPIs while we sleep in the wait\n"
"  --reconnect client: each round trip on a new connection (connect, header,\n"
"              one message each way, close), all of it timed\n"
"  -s SIZE     message size 1..%3$d bytes (default 1)\n"
"  -n ITERS    timed round trips (default 10000)\n"
"  -w WARMUP   untimed warm-up round trips (default 1000)\n"
"  --label T   label echoed in the result line (default -)\n"
"  --nodelay   TCP_NODELAY (default on; ignored failure on AF_SMC)\n"
"  --no-nodelay  do not set TCP_NODELAY\n"
"  --timeout S client: abort (exit 1) if the run exceeds S seconds (default 0=off)\n"
"  -h, --help  this text\n"
"\n"
"The client prints one line:\n"
"  label=L family=F mode=M busy=0|1 size=S iters=N p50_us=X p99_us=X mean_us=X\n"
"  min_us=X napi_id=ID max_us=X p90_us=X p999_us=X busy_usec=U prefer=0|1\n"
"  budget=N warmup=W sqpoll=0|1 reconnect=0|1\n"
"napi_id = SO_INCOMING_NAPI_ID of the client socket after the run (0 = none).\n"
"On rsmc, with " RSMC_DEVICES_FILE " readable, then the client device's NAPI\n"
"counters over the timed round trips: cq_events=N softirq_polls=N\n"
"  softirq_completions=N busy_polls=N busy_completions=N busy_yields=N\n"
"Protocol: client sends a big-endian u32 SIZE header, then SIZE-byte messages\n"
"that the server echoes. The server handles one connection at a time, forever.\n"
"Exit codes: 0 ok, 1 error, 2 echoed data mismatch.\n",
		prog, DEFAULT_PORT, MAX_SIZE);
	exit(code);
}

static long parse_num(const char *opt, const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		err("invalid value for %s: '%s' (expected %ld..%ld)", opt, s,
		    min, max);
		exit(1);
	}
	return v;
}

static int lookup(const char *s, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(s, names[i]))
			return i;
	return -1;
}

static void parse_args(int argc, char **argv)
{
	enum { O_PREFER = 256, O_BUDGET, O_LABEL, O_NODELAY, O_NO_NODELAY,
	       O_TIMEOUT, O_SQPOLL, O_RECONNECT };
	static const struct option longopts[] = {
		{ "addr", required_argument, NULL, 'a' },
		{ "family", required_argument, NULL, 'f' },
		{ "port", required_argument, NULL, 'p' },
		{ "mode", required_argument, NULL, 'm' },
		{ "size", required_argument, NULL, 's' },
		{ "iters", required_argument, NULL, 'n' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "busy", no_argument, NULL, 'b' },
		{ "busy-usec", required_argument, NULL, 'B' },
		{ "prefer", no_argument, NULL, O_PREFER },
		{ "budget", required_argument, NULL, O_BUDGET },
		{ "sqpoll", no_argument, NULL, O_SQPOLL },
		{ "reconnect", no_argument, NULL, O_RECONNECT },
		{ "label", required_argument, NULL, O_LABEL },
		{ "nodelay", no_argument, NULL, O_NODELAY },
		{ "no-nodelay", no_argument, NULL, O_NO_NODELAY },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, i;

	if (argc < 2)
		usage(1);
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
		usage(0);
	if (!strcmp(argv[1], "server"))
		cfg.server = 1;
	else if (strcmp(argv[1], "client")) {
		err("first argument must be 'server' or 'client' (see --help)");
		exit(1);
	}
	argc--;
	argv++;

	while ((c = getopt_long(argc, argv, "a:f:p:m:s:n:w:bB:h", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'a':
			cfg.addr = optarg;
			break;
		case 'f':
			i = lookup(optarg, family_names, 4);
			if (i < 0) {
				err("unknown family '%s' (smc|smc6|tcp|tcp6)",
				    optarg);
				exit(1);
			}
			cfg.family = i;
			break;
		case 'p':
			cfg.port = parse_num("-p", optarg, 1, 65535);
			break;
		case 'm':
			i = lookup(optarg, mode_names, 4);
			if (i < 0) {
				err("unknown mode '%s' (recv|epoll|poll|io_uring)",
				    optarg);
				exit(1);
			}
			cfg.mode = i;
			break;
		case 's':
			cfg.size = parse_num("-s", optarg, 1, MAX_SIZE);
			break;
		case 'n':
			cfg.iters = parse_num("-n", optarg, 1, 100000000);
			break;
		case 'w':
			cfg.warmup = parse_num("-w", optarg, 0, 100000000);
			break;
		case 'b':
			cfg.busy = 1;
			break;
		case 'B':
			cfg.busy_usec = parse_num("-B", optarg, 1, INT_MAX);
			cfg.busy = 1;
			break;
		case O_PREFER:
			cfg.prefer = 1;
			cfg.busy = 1;
			break;
		case O_BUDGET:
			cfg.budget = parse_num("--budget", optarg, 1, 65535);
			cfg.busy = 1;
			break;
		case O_SQPOLL:
			cfg.sqpoll = 1;
			break;
		case O_RECONNECT:
			cfg.reconnect = 1;
			break;
		case O_LABEL:
			cfg.label = optarg;
			break;
		case O_NODELAY:
			cfg.nodelay = 1;
			break;
		case O_NO_NODELAY:
			cfg.nodelay = 0;
			break;
		case O_TIMEOUT:
			cfg.timeout = parse_num("--timeout", optarg, 0, 86400);
			break;
		case 'h':
			usage(0);
		default:
			usage(1);
		}
	}
	if (optind < argc) {
		err("unexpected argument '%s'", argv[optind]);
		exit(1);
	}
	if (!cfg.server && !cfg.addr) {
		err("client needs -a ADDR");
		exit(1);
	}
	if (cfg.reconnect && cfg.server) {
		err("--reconnect is for the client");
		exit(1);
	}
	if (cfg.sqpoll && cfg.mode != MODE_URING) {
		err("--sqpoll needs -m io_uring");
		exit(1);
	}
}

/* ---- sockets ---- */

static int fam_is_v6(void)
{
	return cfg.family == FAM_SMC6 || cfg.family == FAM_TCP6;
}

static int fam_is_smc(void)
{
	return cfg.family == FAM_SMC || cfg.family == FAM_SMC6;
}

static int make_socket(void)
{
	int domain, proto = 0, fd;

	switch (cfg.family) {
	case FAM_SMC:
		domain = AF_SMC;
		break;
	case FAM_SMC6:
		domain = AF_SMC;
		proto = 1; /* SMCPROTO_SMC6 */
		break;
	case FAM_TCP:
		domain = AF_INET;
		break;
	default:
		domain = AF_INET6;
		break;
	}
	fd = socket(domain, SOCK_STREAM | SOCK_CLOEXEC, proto);
	if (fd < 0) {
		err("socket(%s, SOCK_STREAM, %d) [%s]: %s",
		    domain == AF_SMC ? "AF_SMC" :
		    domain == AF_INET ? "AF_INET" : "AF_INET6",
		    proto, family_names[cfg.family], strerror(errno));
		if (domain == AF_SMC && errno == EAFNOSUPPORT)
			err("hint: is the AF_SMC module (rsmc or smc) loaded?");
	}
	return fd;
}

static int set_int(int fd, int level, int opt, int val, const char *name)
{
	if (setsockopt(fd, level, opt, &val, sizeof(val)) < 0) {
		err("setsockopt(%s=%d): %s", name, val, strerror(errno));
		return -1;
	}
	return 0;
}

/* Per-connection socket options. Returns -1 on a hard error. */
static int setup_conn_socket(int fd)
{
	int one = 1;

	if (cfg.nodelay) {
		if (fam_is_smc())
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
					 sizeof(one));
		else if (set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1,
				 "TCP_NODELAY"))
			return -1;
	}
	if (cfg.busy) {
		if (set_int(fd, SOL_SOCKET, SO_BUSY_POLL, (int)cfg.busy_usec,
			    "SO_BUSY_POLL"))
			return -1;
		if (cfg.prefer && set_int(fd, SOL_SOCKET, SO_PREFER_BUSY_POLL,
					  1, "SO_PREFER_BUSY_POLL"))
			return -1;
		if (cfg.budget && set_int(fd, SOL_SOCKET, SO_BUSY_POLL_BUDGET,
					  cfg.budget, "SO_BUSY_POLL_BUDGET"))
			return -1;
	}
	return 0;
}

static unsigned int napi_id_of(int fd)
{
	unsigned int id = 0;
	socklen_t len = sizeof(id);

	if (getsockopt(fd, SOL_SOCKET, SO_INCOMING_NAPI_ID, &id, &len) < 0)
		return 0;
	return id;
}

/*
 * Only the initial network namespace shows net.core.busy_poll (it is global): elsewhere it
 * cannot be checked, and there is nothing to warn about.
 */
static void warn_poll_sysctl(void)
{
	FILE *f;
	long v = -1;

	if (!cfg.busy || cfg.mode != MODE_POLL)
		return;
	f = fopen("/proc/sys/net/core/busy_poll", "r");
	if (!f)
		return;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	if (v == 0)
		err("warning: -b -m poll but net.core.busy_poll is 0: poll(2) "
		    "will not busy poll; set it first, e.g. sysctl -w "
		    "net.core.busy_poll=%u", cfg.busy_usec);
}

/* ---- waiting / I/O ---- */

struct waiter {
	int fd;
	int epfd;
	int have_ring;
	struct io_uring ring;
};

static int waiter_init_ring(struct waiter *w)
{
	struct io_uring_params params;
	int ret;

	if (cfg.mode != MODE_URING)
		return 0;
	memset(&params, 0, sizeof(params));
	if (cfg.sqpoll) {
		cpu_set_t allowed;

		if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0) {
			err("sched_getaffinity: %s", strerror(errno));
			return -1;
		}
		params.flags = IORING_SETUP_SQPOLL | IORING_SETUP_SQ_AFF;
		while (!CPU_ISSET(params.sq_thread_cpu, &allowed))
			params.sq_thread_cpu++;
		/* Asleep between connections, awake through a run's round trips. */
		params.sq_thread_idle = 1000;
	}
	ret = io_uring_queue_init_params(8, &w->ring, &params);
	if (ret < 0) {
		err("io_uring_queue_init: %s", strerror(-ret));
		return -1;
	}
	w->have_ring = 1;
	if (cfg.busy) {
		struct rsmc_io_uring_napi napi = {
			.busy_poll_to = cfg.busy_usec,
			.prefer_busy_poll = cfg.prefer,
			.opcode = RSMC_IO_URING_NAPI_REGISTER_OP,
			.op_param = RSMC_IO_URING_NAPI_TRACKING_DYNAMIC,
		};

		if (rsmc_io_uring_register_napi(w->ring.ring_fd, &napi) < 0) {
			err("io_uring_register(IORING_REGISTER_NAPI, "
			    "busy_poll_to=%u prefer=%d): %s", cfg.busy_usec,
			    cfg.prefer, strerror(errno));
			io_uring_queue_exit(&w->ring);
			w->have_ring = 0;
			return -1;
		}
	}
	return 0;
}

/* Attach the waiter to a connected socket (epoll instance per connection). */
static int waiter_attach(struct waiter *w, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	w->fd = fd;
	w->epfd = -1;
	if (cfg.mode != MODE_EPOLL)
		return 0;

	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0) {
		err("epoll_create1: %s", strerror(errno));
		return -1;
	}
	if (cfg.busy) {
		struct epoll_params p;

		memset(&p, 0, sizeof(p));
		p.busy_poll_usecs = cfg.busy_usec;
		p.busy_poll_budget = cfg.budget ? cfg.budget : 8;
		p.prefer_busy_poll = cfg.prefer;
		if (ioctl(w->epfd, EPIOCSPARAMS, &p) < 0) {
			err("ioctl(EPIOCSPARAMS, usecs=%u budget=%u prefer=%u): %s",
			    p.busy_poll_usecs, p.busy_poll_budget,
			    p.prefer_busy_poll, strerror(errno));
			goto fail;
		}
	}
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		err("epoll_ctl(ADD): %s", strerror(errno));
		goto fail;
	}
	return 0;
fail:
	close(w->epfd);
	w->epfd = -1;
	return -1;
}

static void waiter_detach(struct waiter *w)
{
	if (w->epfd >= 0)
		close(w->epfd);
	w->epfd = -1;
}

/*
 * One receive step according to the mode. Returns bytes (> 0), 0 on EOF,
 * -errno on error. Never returns -EAGAIN/-EINTR.
 */
static ssize_t recv_some(struct waiter *w, void *buf, size_t len)
{
	ssize_t n;

	for (;;) {
		switch (cfg.mode) {
		case MODE_RECV:
			n = recv(w->fd, buf, len, 0);
			break;
		case MODE_EPOLL: {
			struct epoll_event ev;
			int r = epoll_wait(w->epfd, &ev, 1, -1);

			if (r < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			if (r == 0)
				continue;
			n = recv(w->fd, buf, len, MSG_DONTWAIT);
			break;
		}
		case MODE_POLL: {
			struct pollfd pfd = { .fd = w->fd, .events = POLLIN };
			int r = poll(&pfd, 1, -1);

			if (r < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			if (r == 0)
				continue;
			n = recv(w->fd, buf, len, MSG_DONTWAIT);
			break;
		}
		default: { /* MODE_URING */
			struct io_uring_sqe *sqe;
			struct io_uring_cqe *cqe;
			int r;

			sqe = io_uring_get_sqe(&w->ring);
			if (!sqe)
				return -EBUSY;
			io_uring_prep_recv(sqe, w->fd, buf, len, 0);
			r = io_uring_submit_and_wait(&w->ring, 1);
			if (r < 0 && r != -EINTR)
				return r;
			do {
				r = io_uring_wait_cqe(&w->ring, &cqe);
			} while (r == -EINTR);
			if (r < 0)
				return r;
			r = cqe->res;
			io_uring_cqe_seen(&w->ring, cqe);
			if (r == -EINTR || r == -EAGAIN)
				continue;
			return r;
		}
		}
		if (n >= 0)
			return n;
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
			continue;
		return -errno;
	}
}

/* 1 = got len bytes, 0 = EOF (at offset 0 or mid-message), -errno error. */
static int recv_full(struct waiter *w, void *buf, size_t len, size_t *got)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = recv_some(w, (char *)buf + off, len - off);

		if (n < 0) {
			if (got)
				*got = off;
			return (int)n;
		}
		if (n == 0) {
			if (got)
				*got = off;
			return 0;
		}
		off += n;
	}
	if (got)
		*got = off;
	return 1;
}

static int send_full(int fd, const void *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = send(fd, (const char *)buf + off, len - off,
				 MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		off += n;
	}
	return 0;
}

/* ---- address handling ---- */

static int resolve(const char *host, int passive, struct sockaddr_storage *ss,
		   socklen_t *sslen)
{
	struct addrinfo hints, *res;
	char port[16];
	int r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = fam_is_v6() ? AF_INET6 : AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	snprintf(port, sizeof(port), "%d", cfg.port);
	r = getaddrinfo(host, port, &hints, &res);
	if (r) {
		err("cannot resolve '%s' as %s address: %s",
		    host ? host : "(any)", fam_is_v6() ? "IPv6" : "IPv4",
		    gai_strerror(r));
		return -1;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static void addr_str(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		port = ntohs(sin->sin_port);
		snprintf(out, len, "%s:%d", host, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		port = ntohs(sin6->sin6_port);
		snprintf(out, len, "[%s]:%d", host, port);
	} else {
		snprintf(out, len, "(family %d)", ss->ss_family);
	}
}

/* ---- server ---- */

static void serve_conn(int cfd, struct waiter *w, const char *peer)
{
	static unsigned char buf[MAX_SIZE];
	uint32_t hdr;
	unsigned long msgs = 0;
	const char *end = "eof";
	char why[128] = "";
	size_t got;
	int r;

	if (setup_conn_socket(cfd) || waiter_attach(w, cfd)) {
		err("conn %s: setup failed, closing", peer);
		return;
	}
	r = recv_full(w, &hdr, sizeof(hdr), &got);
	if (r <= 0) {
		err("conn %s: no size header (%s)", peer,
		    r ? strerror(-r) : "EOF");
		goto out;
	}
	hdr = ntohl(hdr);
	if (hdr < 1 || hdr > MAX_SIZE) {
		err("conn %s: bad size header %u (1..%d), closing", peer, hdr,
		    MAX_SIZE);
		goto out;
	}
	for (;;) {
		r = recv_full(w, buf, hdr, &got);
		if (r == 0) {
			if (got) {
				end = "eof-mid-message";
				snprintf(why, sizeof(why), " got=%zu", got);
			}
			break;
		}
		if (r < 0) {
			end = "recv-error";
			snprintf(why, sizeof(why), " err='%s'", strerror(-r));
			break;
		}
		r = send_full(cfd, buf, hdr);
		if (r < 0) {
			end = "send-error";
			snprintf(why, sizeof(why), " err='%s'", strerror(-r));
			break;
		}
		msgs++;
	}
	fprintf(stderr, "%s: conn %s size=%u msgs=%lu napi_id=%u end=%s%s\n",
		prog, peer, hdr, msgs, napi_id_of(cfd), end, why);
out:
	waiter_detach(w);
}

static int run_server(void)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	struct waiter w;
	int lfd, one = 1;
	char a[80];

	memset(&w, 0, sizeof(w));
	w.epfd = -1;
	if (resolve(cfg.addr, 1, &ss, &sslen))
		return 1;
	lfd = make_socket();
	if (lfd < 0)
		return 1;
	if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		err("warning: setsockopt(SO_REUSEADDR): %s", strerror(errno));
	if (bind(lfd, (struct sockaddr *)&ss, sslen) < 0) {
		addr_str(&ss, a, sizeof(a));
		err("bind(%s): %s", a, strerror(errno));
		return 1;
	}
	if (listen(lfd, 16) < 0) {
		err("listen: %s", strerror(errno));
		return 1;
	}
	if (waiter_init_ring(&w))
		return 1;
	warn_poll_sysctl();
	addr_str(&ss, a, sizeof(a));
	fprintf(stderr,
		"%s: server listening on %s family=%s mode=%s busy=%d busy_usec=%u prefer=%d budget=%d "
		"sqpoll=%d\n",
		prog, a, family_names[cfg.family], mode_names[cfg.mode],
		cfg.busy, cfg.busy ? cfg.busy_usec : 0, cfg.prefer,
		cfg.budget, cfg.sqpoll);

	for (;;) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		int cfd = accept4(lfd, (struct sockaddr *)&peer, &plen,
				  SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED ||
			    errno == EPROTO || errno == ENETDOWN ||
			    errno == ENOPROTOOPT || errno == EHOSTDOWN ||
			    errno == ENONET || errno == EHOSTUNREACH ||
			    errno == EOPNOTSUPP || errno == ENETUNREACH)
				continue;
			err("accept: %s", strerror(errno));
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				sleep(1);
				continue;
			}
			return 1;
		}
		addr_str(&peer, a, sizeof(a));
		serve_conn(cfd, &w, a);
		close(cfd);
	}
}

/* ---- client ---- */

static void on_alarm(int sig)
{
	static const char msg[] = "pingpong: timeout, aborting\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing to do */
	}
	_exit(1);
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void fill_pattern(unsigned char *p, size_t len, uint64_t iter)
{
	/* Different for every iteration and every byte position. */
	uint32_t x = (uint32_t)(iter * 2654435761u) ^ 0x5bd1e995u;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (unsigned char)(x ^ iter);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* nearest-rank percentile on a sorted array */
static double pct_us(const uint64_t *s, long n, double p)
{
	long idx = (long)((p * n) + 0.999999999) - 1;

	if (idx < 0)
		idx = 0;
	if (idx >= n)
		idx = n - 1;
	return s[idx] / 1000.0;
}

/* Label for the result line: whitespace and '=' become '_', empty -> "-". */
static void print_label(const char *s)
{
	if (!*s)
		s = "-";
	for (; *s; s++)
		putchar(*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' ||
			*s == '=' ? '_' : *s);
}

/* A connected client socket, attached to the waiter, the size header sent; -1 on failure. */
static int open_conn(struct waiter *w, const struct sockaddr_storage *ss, socklen_t sslen,
		     const char *a)
{
	uint32_t hdr = htonl(cfg.size);
	int fd = make_socket(), r;

	if (fd < 0)
		return -1;
	if (setup_conn_socket(fd))
		goto fail;
	if (connect(fd, (const struct sockaddr *)ss, sslen) < 0) {
		err("connect(%s, %s): %s", a, family_names[cfg.family], strerror(errno));
		goto fail;
	}
	if (waiter_attach(w, fd))
		goto fail;
	r = send_full(fd, &hdr, sizeof(hdr));
	if (r < 0) {
		err("send(size header): %s", strerror(-r));
		waiter_detach(w);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

static int run_client(void)
{
	static unsigned char sbuf[MAX_SIZE], rbuf[MAX_SIZE];
	struct sockaddr_storage ss;
	socklen_t sslen;
	struct waiter w;
	uint64_t *rtt, sum = 0;
	unsigned int napi_id = 0;
	long total = cfg.warmup + cfg.iters;
	struct rsmc_device_stats before, after;
	int fd, r, have_counters = 0;
	char a[80];

	if (cfg.timeout) {
		signal(SIGALRM, on_alarm);
		alarm(cfg.timeout);
	}
	rtt = calloc(cfg.iters, sizeof(*rtt));
	if (!rtt) {
		err("out of memory");
		return 1;
	}
	memset(&w, 0, sizeof(w));
	w.epfd = -1;
	if (resolve(cfg.addr, 0, &ss, &sslen))
		return 1;
	addr_str(&ss, a, sizeof(a));
	warn_poll_sysctl();
	if (waiter_init_ring(&w))
		return 1;
	fd = cfg.reconnect ? -1 : open_conn(&w, &ss, sslen, a);
	if (!cfg.reconnect && fd < 0)
		return 1;

	for (long i = 0; i < total; i++) {
		uint64_t t0, t1;
		size_t got;

		/* With --reconnect, the NAPI the connections before this one used. */
		if (i == cfg.warmup)
			have_counters = !rsmc_device_find(NULL, cfg.reconnect ? napi_id :
							  napi_id_of(fd), &before);
		fill_pattern(sbuf, cfg.size, (uint64_t)i);
		t0 = now_ns();
		if (cfg.reconnect) {
			fd = open_conn(&w, &ss, sslen, a);
			if (fd < 0)
				return 1;
		}
		r = send_full(fd, sbuf, cfg.size);
		if (r < 0) {
			err("send (iteration %ld): %s", i, strerror(-r));
			return 1;
		}
		r = recv_full(&w, rbuf, cfg.size, &got);
		if (cfg.reconnect) {
			napi_id = napi_id_of(fd);
			waiter_detach(&w);
			close(fd);
		}
		t1 = now_ns();
		if (r <= 0) {
			err("recv (iteration %ld, got %zu/%u bytes): %s", i,
			    got, cfg.size,
			    r ? strerror(-r) : "connection closed by server");
			return 1;
		}
		if (memcmp(sbuf, rbuf, cfg.size)) {
			size_t k = 0;

			while (sbuf[k] == rbuf[k])
				k++;
			err("data mismatch at iteration %ld, byte %zu: sent 0x%02x got 0x%02x",
			    i, k, sbuf[k], rbuf[k]);
			return 2;
		}
		if (i >= cfg.warmup) {
			rtt[i - cfg.warmup] = t1 - t0;
			sum += t1 - t0;
		}
	}
	if (cfg.timeout)
		alarm(0);

	if (!cfg.reconnect)
		napi_id = napi_id_of(fd);
	have_counters = have_counters && !rsmc_device_find(NULL, napi_id, &after);

	if (!cfg.reconnect) {
		waiter_detach(&w);
		close(fd);
	}
	if (w.have_ring)
		io_uring_queue_exit(&w.ring);

	qsort(rtt, cfg.iters, sizeof(*rtt), cmp_u64);
	fputs("label=", stdout);
	print_label(cfg.label);
	printf(" family=%s mode=%s busy=%d size=%u iters=%ld "
	       "p50_us=%.2f p99_us=%.2f mean_us=%.2f min_us=%.2f napi_id=%u "
	       "max_us=%.2f p90_us=%.2f p999_us=%.2f busy_usec=%u prefer=%d "
	       "budget=%d warmup=%ld sqpoll=%d reconnect=%d",
	       family_names[cfg.family],
	       mode_names[cfg.mode], cfg.busy, cfg.size, cfg.iters,
	       pct_us(rtt, cfg.iters, 0.50), pct_us(rtt, cfg.iters, 0.99),
	       (double)sum / cfg.iters / 1000.0, rtt[0] / 1000.0, napi_id,
	       rtt[cfg.iters - 1] / 1000.0, pct_us(rtt, cfg.iters, 0.90),
	       pct_us(rtt, cfg.iters, 0.999), cfg.busy ? cfg.busy_usec : 0,
	       cfg.prefer, cfg.budget, cfg.warmup, cfg.sqpoll, cfg.reconnect);
	if (have_counters)
		printf(" cq_events=%llu softirq_polls=%llu softirq_completions=%llu busy_polls=%llu "
		       "busy_completions=%llu busy_yields=%llu",
		       after.cq_events - before.cq_events,
		       after.softirq_polls - before.softirq_polls,
		       after.softirq_completions - before.softirq_completions,
		       after.busy_polls - before.busy_polls,
		       after.busy_completions - before.busy_completions,
		       after.busy_yields - before.busy_yields);
	putchar('\n');
	fflush(stdout);
	free(rtt);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	parse_args(argc, argv);
	return cfg.server ? run_server() : run_client();
}
