// SPDX-License-Identifier: GPL-2.0
/*
 * Busy polling of AF_SMC sockets over RDMA. Every RDMA connection carries the NAPI id of its
 * RDMA device (SO_INCOMING_NAPI_ID on the client is rxe_a's, on the server rxe_b's, as debugfs
 * lists them), so that the kernel's busy-poll paths spin on the NAPI that reaps the device's
 * completions. A 64-byte ping-pong (client in rsmc_a, plain blocking echo server in rsmc_b)
 * runs in each way of waiting for the reply: recv (SO_BUSY_POLL), epoll (EPIOCSPARAMS), poll
 * (net.core.busy_poll with SO_BUSY_POLL) and io_uring (IORING_REGISTER_NAPI, polled in the wait
 * or by an SQPOLL thread). With busy polling preferred and the NAPI's interrupt deferral on
 * (rsmc/napi_defer), rxe_a's debugfs counters show the spinning thread reaping the completions
 * and next to no completion events (interrupts); with busy polling off, softirq polls reap
 * them, each reply after an event. A thread spinning in recv for longer than the test waits
 * sees rxe_a deleted under it (and the test adds it back): recv fails with the connection's
 * abort instead of spinning on. And a spinning reader gives its CPU to a task that wakes on it.
 * IPv4 only: the NAPI paths are those of IPv6 too.
 */
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include "busy_poll_uapi.h"
#include "kselftest_harness.h"
#include "rsmc_selftest.h"

#define NS_CLIENT "rsmc_a"
#define NS_SERVER "rsmc_b"
#define ADDR_B "192.0.2.2"
#define DEV_CLIENT "rxe_a"
#define DEV_SERVER "rxe_b"

#define BUSY_POLL_SYSCTL "/proc/sys/net/core/busy_poll"

/* SO_RCVTIMEO and SO_SNDTIMEO of every socket: a hang fails a call instead of the test. */
#define GUARD_S 30

/*
 * The ping-pong: untimed warm-up round trips, then the counted ones (fewer on the debug
 * kernel, where each takes ~20 ms), of MSG_LEN bytes.
 */
#define WARMUP 20
#define ROUND_TRIPS (rsmc_debug_kernel() ? 100 : 500)
#define MSG_LEN 64

/*
 * Busy polling as the client asks for it, in every way of waiting: long enough to cover a
 * round trip under emulation (ten times longer on the debug kernel), so that the reply is
 * reaped by the spinning client.
 */
#define BUSY_USECS (rsmc_debug_kernel() ? 50000 : 5000)
#define BUSY_BUDGET 8
/*
 * rxe_a's NAPI interrupt deferral while busy polling: napi_defer_hard_irqs, gro_flush_timeout
 * (ten times longer on the debug kernel, so that its slow submission paths, io_uring's above
 * all, start spinning before the timer polls the reply in).
 */
#define DEFER_HARD_IRQS 1000
#define DEFER_TIMEOUT_NS (rsmc_debug_kernel() ? 5000000ULL : 500000ULL)

/* net.core.busy_poll as the program found it, put back after each test. */
static long saved_busy_poll;

static void __attribute__((constructor)) save_busy_poll(void)
{
	if (rsmc_read_long(BUSY_POLL_SYSCTL, &saved_busy_poll))
		saved_busy_poll = 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Sockets.                                                                                   */

/* An AF_SMC socket in namespace @ns. Leaves the calling thread in @ns. */
static int socket_in(struct __test_metadata *_metadata, const char *ns)
{
	int fd;

	ASSERT_EQ(0, rsmc_enter_netns(ns)) TH_LOG("setns %s: %s", ns, strerror(errno));
	fd = socket(AF_SMC, SOCK_STREAM, SMCPROTO_SMC);
	ASSERT_LE(0, fd) TH_LOG("socket(AF_SMC): %s", strerror(errno));
	return fd;
}

/*
 * A connected AF_SMC pair: *cfd in rsmc_a connected to a listener on 192.0.2.2 in rsmc_b, *sfd
 * accepted from it, both with the guard timeouts. Leaves the calling thread in rsmc_a.
 */
static void smc_pair(struct __test_metadata *_metadata, int *cfd, int *sfd)
{
	const struct timeval guard = { .tv_sec = GUARD_S };
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	struct pollfd pfd = { .events = POLLIN };
	int lfd = socket_in(_metadata, NS_SERVER);

	ASSERT_EQ(1, inet_pton(AF_INET, ADDR_B, &sin.sin_addr));
	ASSERT_EQ(0, bind(lfd, (struct sockaddr *)&sin, sizeof(sin)))
		TH_LOG("bind: %s", strerror(errno));
	ASSERT_EQ(0, listen(lfd, 8)) TH_LOG("listen: %s", strerror(errno));
	ASSERT_EQ(0, getsockname(lfd, (struct sockaddr *)&sin, &len))
		TH_LOG("getsockname: %s", strerror(errno));
	*cfd = socket_in(_metadata, NS_CLIENT);
	ASSERT_EQ(0, connect(*cfd, (struct sockaddr *)&sin, sizeof(sin)))
		TH_LOG("connect: %s", strerror(errno));
	pfd.fd = lfd;
	ASSERT_EQ(1, poll(&pfd, 1, EVENT_WAIT_MS)) TH_LOG("no connection to accept");
	*sfd = accept4(lfd, NULL, NULL, 0);
	ASSERT_LE(0, *sfd) TH_LOG("accept4: %s", strerror(errno));
	EXPECT_EQ(0, close(lfd));
	for (int i = 0; i < 2; i++) {
		int fd = i ? *sfd : *cfd;

		ASSERT_EQ(0, setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &guard, sizeof(guard)));
		ASSERT_EQ(0, setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &guard, sizeof(guard)));
	}
}

static const char *mode_name(uint32_t mode)
{
	switch (mode) {
	case RSMC_MODE_NONE: return "NONE";
	case RSMC_MODE_RDMA: return "RDMA";
	case RSMC_MODE_TCP: return "TCP";
	}
	return "unknown";
}

/* Whether @fd moves its data over RDMA, as getsockopt(SOL_SMC, RSMC_INFO) says. */
static bool expect_rdma(struct __test_metadata *_metadata, const char *who, int fd)
{
	struct rsmc_info i;
	socklen_t len = sizeof(i);

	memset(&i, 0, sizeof(i));
	EXPECT_EQ(0, getsockopt(fd, SOL_SMC, RSMC_INFO, &i, &len))
		TH_LOG("%s: getsockopt(SOL_SMC, RSMC_INFO): %s", who, strerror(errno));
	EXPECT_EQ((__u32)RSMC_MODE_RDMA, i.mode)
		TH_LOG("%s: mode %s, fallback_reason 0x%08x, peer_decline_code 0x%08x; want RDMA",
		       who, mode_name(i.mode), i.fallback_reason, i.peer_decline_code);
	return i.mode == RSMC_MODE_RDMA;
}

static unsigned int napi_id_of(struct __test_metadata *_metadata, const char *who, int fd)
{
	unsigned int id = 0;
	socklen_t len = sizeof(id);

	EXPECT_EQ(0, getsockopt(fd, SOL_SOCKET, SO_INCOMING_NAPI_ID, &id, &len))
		TH_LOG("%s: getsockopt(SO_INCOMING_NAPI_ID): %s", who, strerror(errno));
	EXPECT_EQ(sizeof(id), len) TH_LOG("%s: SO_INCOMING_NAPI_ID length", who);
	return id;
}

/* ---------------------------------------------------------------------------------------- */
/* napi_id_on_both_ends                                                                       */

TEST(napi_id_on_both_ends)
{
	long nr_cpus = rsmc_kernel_nr_cpus();
	long want_c = rsmc_device_napi_id(DEV_CLIENT), want_s = rsmc_device_napi_id(DEV_SERVER);
	unsigned int id_c, id_s;
	char buf[MSG_LEN];
	int cfd, sfd;

	signal(SIGPIPE, SIG_IGN);
	ASSERT_LT(0, want_c) TH_LOG("%s not in %s", DEV_CLIENT, RSMC_DEVICES_FILE);
	ASSERT_LT(0, want_s) TH_LOG("%s not in %s", DEV_SERVER, RSMC_DEVICES_FILE);
	smc_pair(_metadata, &cfd, &sfd);
	/* Over TCP the socket would carry no NAPI id of rsmc's. */
	ASSERT_TRUE(expect_rdma(_metadata, "client", cfd));
	ASSERT_TRUE(expect_rdma(_metadata, "server", sfd));

	id_c = napi_id_of(_metadata, "client", cfd);
	id_s = napi_id_of(_metadata, "server", sfd);
	EXPECT_EQ(want_c, id_c) TH_LOG("client: SO_INCOMING_NAPI_ID is not %s's", DEV_CLIENT);
	EXPECT_EQ(want_s, id_s) TH_LOG("server: SO_INCOMING_NAPI_ID is not %s's", DEV_SERVER);
	if (nr_cpus > 0) {
		/* Below MIN_NAPI_ID (NR_CPUS + 1) the busy-poll paths take an id for a CPU. */
		EXPECT_LE(nr_cpus + 1, id_c);
		EXPECT_LE(nr_cpus + 1, id_s);
	} else {
		TH_LOG("CONFIG_NR_CPUS unknown (RSMC_KDIR unset?): only checking ids are nonzero");
		EXPECT_LT(0u, id_c);
		EXPECT_LT(0u, id_s);
	}

	/* Traffic leaves them as they are. */
	memset(buf, 'n', sizeof(buf));
	ASSERT_EQ(MSG_LEN, write_all(cfd, buf, sizeof(buf))) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(MSG_LEN, read_all(sfd, buf, sizeof(buf))) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(MSG_LEN, write_all(sfd, buf, sizeof(buf))) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(MSG_LEN, read_all(cfd, buf, sizeof(buf))) TH_LOG("%s", strerror(errno));
	EXPECT_EQ(id_c, napi_id_of(_metadata, "client after traffic", cfd));
	EXPECT_EQ(id_s, napi_id_of(_metadata, "server after traffic", sfd));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* Ping-pong in each way of waiting, with busy polling on and off.                            */

enum wait_mode { WAIT_RECV, WAIT_EPOLL, WAIT_POLL, WAIT_URING };

/* The client spins on CPU 0, the echo server runs on CPU 1. */
#define CLIENT_CPU 0
#define SERVER_CPU 1

/* A way for the client to wait for data. */
struct wait_way {
	const char *name;
	enum wait_mode mode;
	/*
	 * WAIT_URING: the ring's SQPOLL thread, on the client's CPU, submits the receives and
	 * busy polls in its loop; the client sleeps in its wait.
	 */
	bool sqpoll;
};

/* A variant of @fixture for each way of waiting. */
#define WAIT_WAY_VARIANTS(fixture)							\
	FIXTURE_VARIANT_ADD(fixture, recv) {						\
		.way = { .name = "recv", .mode = WAIT_RECV },				\
	};										\
	FIXTURE_VARIANT_ADD(fixture, epoll) {						\
		.way = { .name = "epoll", .mode = WAIT_EPOLL },				\
	};										\
	FIXTURE_VARIANT_ADD(fixture, poll) {						\
		.way = { .name = "poll", .mode = WAIT_POLL },				\
	};										\
	FIXTURE_VARIANT_ADD(fixture, io_uring) {					\
		.way = { .name = "io_uring", .mode = WAIT_URING },			\
	};										\
	FIXTURE_VARIANT_ADD(fixture, io_uring_sqpoll) {					\
		.way = { .name = "io_uring+sqpoll", .mode = WAIT_URING, .sqpoll = true },	\
	}

FIXTURE(busy) {};

FIXTURE_VARIANT(busy) {
	struct wait_way way;
};

WAIT_WAY_VARIANTS(busy);

/* Puts the knobs the tests turn back as they were: returns NULL, or what failed. */
static const char *restore_knobs(void)
{
	if (rsmc_set_napi_defer("rxe_a", 0, 0))
		return "writing rxe_a 0 0 to " RSMC_NAPI_DEFER_FILE;
	if (rsmc_write_long(BUSY_POLL_SYSCTL, saved_busy_poll))
		return "restoring " BUSY_POLL_SYSCTL;
	return NULL;
}

/*
 * Sets net.core.busy_poll, which poll() busy-polls with, to @usecs. The root namespace's:
 * call it before smc_pair() moves this thread.
 */
static void set_busy_poll(struct __test_metadata *_metadata, long usecs)
{
	long got;

	ASSERT_EQ(0, rsmc_write_long(BUSY_POLL_SYSCTL, usecs))
		TH_LOG("writing %s: %s", BUSY_POLL_SYSCTL, strerror(errno));
	ASSERT_EQ(0, rsmc_read_long(BUSY_POLL_SYSCTL, &got));
	ASSERT_EQ(usecs, got);
}

FIXTURE_SETUP(busy)
{
	/* In case a test before was killed by its timeout, which skips the teardown. */
	const char *failed = restore_knobs();

	signal(SIGPIPE, SIG_IGN);
	ASSERT_EQ(NULL, failed) TH_LOG("%s: %s", failed, strerror(errno));
}

/*
 * In the parent: /proc/sys/net belongs to the namespace of the thread that opens it, and the
 * test leaves its main thread in rsmc_a, which has no net.core.busy_poll. (Not EXPECT: after an
 * ASSERT in the child, the shared trigger flag would print its message whatever the outcome.)
 */
FIXTURE_TEARDOWN_PARENT(busy)
{
	const char *failed = restore_knobs();

	if (failed) {
		TH_LOG("%s: %s", failed, strerror(errno));
		_metadata->exit_code = KSFT_FAIL;
	}
}

/* How the client waits for its replies. */
struct waiter {
	const char *name;
	enum wait_mode mode;
	int wait_ms;		/* how long one wait lasts, at most */
	int fd;
	int epfd;		/* WAIT_EPOLL */
	bool have_ring;		/* WAIT_URING */
	struct io_uring ring;
};

/*
 * Sets up @way for @fd, busy polling for @busy_usecs (0: not at all) where the way of waiting
 * takes its own setting; SO_BUSY_POLL and net.core.busy_poll are the caller's. A wait lasts up
 * to EVENT_WAIT_MS.
 */
static void waiter_init(struct __test_metadata *_metadata, struct waiter *w,
			const struct wait_way *way, int fd, unsigned int busy_usecs)
{
	enum wait_mode mode = way->mode;
	bool busy = busy_usecs;

	memset(w, 0, sizeof(*w));
	w->name = way->name;
	w->mode = mode;
	w->wait_ms = EVENT_WAIT_MS;
	w->fd = fd;
	w->epfd = -1;
	if (mode == WAIT_EPOLL) {
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		ASSERT_LE(0, w->epfd) TH_LOG("epoll_create1: %s", strerror(errno));
		if (busy) {
			struct epoll_params p = {
				.busy_poll_usecs = busy_usecs,
				.busy_poll_budget = BUSY_BUDGET,
				.prefer_busy_poll = 1,
			}, back;

			ASSERT_EQ(0, ioctl(w->epfd, EPIOCSPARAMS, &p))
				TH_LOG("ioctl(EPIOCSPARAMS): %s", strerror(errno));
			memset(&back, 0xa5, sizeof(back));
			ASSERT_EQ(0, ioctl(w->epfd, EPIOCGPARAMS, &back))
				TH_LOG("ioctl(EPIOCGPARAMS): %s", strerror(errno));
			EXPECT_EQ(0, memcmp(&p, &back, sizeof(p))) TH_LOG("EPIOCGPARAMS differs");
		}
		/* After the parameters: epoll takes the socket's NAPI id only with them on. */
		ASSERT_EQ(0, epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev))
			TH_LOG("epoll_ctl: %s", strerror(errno));
	} else if (mode == WAIT_URING) {
		struct io_uring_params params = { 0 };
		int ret;

		if (way->sqpoll) {
			params.flags = IORING_SETUP_SQPOLL | IORING_SETUP_SQ_AFF;
			params.sq_thread_cpu = CLIENT_CPU;
			/* Polling on between receives, however slow the round trips. */
			params.sq_thread_idle = 1000 + busy_usecs / 1000;
		}
		ret = io_uring_queue_init_params(8, &w->ring, &params);

		ASSERT_EQ(0, ret) TH_LOG("io_uring_queue_init: %s", strerror(-ret));
		w->have_ring = true;
		if (busy) {
			/* Dynamic tracking: the ring spins on the NAPIs of the sockets it waits on. */
			struct rsmc_io_uring_napi napi = {
				.busy_poll_to = busy_usecs,
				.prefer_busy_poll = 1,
				.opcode = RSMC_IO_URING_NAPI_REGISTER_OP,
				.op_param = RSMC_IO_URING_NAPI_TRACKING_DYNAMIC,
			};

			ASSERT_EQ(0, rsmc_io_uring_register_napi(w->ring.ring_fd, &napi))
				TH_LOG("io_uring_register(IORING_REGISTER_NAPI): %s",
				       strerror(errno));
		}
	}
}

static void waiter_fini(struct waiter *w)
{
	if (w->epfd >= 0)
		close(w->epfd);
	if (w->have_ring)
		io_uring_queue_exit(&w->ring);
}

/* One receive the mode's way: bytes (> 0), 0 at EOF, or -errno (-ETIMEDOUT: nothing came). */
static ssize_t waiter_recv(struct waiter *w, void *buf, size_t len)
{
	for (;;) {
		struct pollfd pfd = { .fd = w->fd, .events = POLLIN };
		struct __kernel_timespec ts = { .tv_sec = w->wait_ms / 1000 };
		struct io_uring_cqe *cqe = NULL;
		struct io_uring_sqe *sqe;
		struct epoll_event ev;
		ssize_t n;
		int r;

		switch (w->mode) {
		case WAIT_RECV:
			n = recv(w->fd, buf, len, 0);
			break;
		case WAIT_EPOLL:
		case WAIT_POLL:
			if (w->mode == WAIT_EPOLL)
				r = epoll_wait(w->epfd, &ev, 1, w->wait_ms);
			else
				r = poll(&pfd, 1, w->wait_ms);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				return -errno;
			if (r == 0)
				return -ETIMEDOUT;
			n = recv(w->fd, buf, len, MSG_DONTWAIT);
			break;
		default:
			sqe = io_uring_get_sqe(&w->ring);
			if (!sqe)
				return -EBUSY;
			io_uring_prep_recv(sqe, w->fd, buf, len, 0);
			r = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
			if (r < 0 && r != -EINTR && r != -ETIME)
				return r;
			do
				r = io_uring_wait_cqe_timeout(&w->ring, &cqe, &ts);
			while (r == -EINTR);
			if (r == -ETIME)
				return -ETIMEDOUT;
			if (r < 0)
				return r;
			r = cqe->res;
			io_uring_cqe_seen(&w->ring, cqe);
			if (r == -EINTR || r == -EAGAIN)
				continue;
			return r;
		}
		if (n >= 0)
			return n;
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
	}
}

/* Message @i: different in every round trip and at every byte. */
static void fill_msg(uint8_t *buf, unsigned int i)
{
	uint32_t x = (i + 1) * 2654435761u;

	for (int k = 0; k < MSG_LEN; k++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		buf[k] = x;
	}
}

/* The server: echoes @count messages of MSG_LEN bytes with plain blocking calls. */
struct echo {
	int fd;
	int count;
	/* results */
	int done;		/* messages echoed */
	int err;		/* errno of a failed call, 0 if none */
	const char *failed;	/* which call failed */
};

static void *echo_server(void *arg)
{
	struct echo *e = arg;
	uint8_t buf[MSG_LEN];
	ssize_t n;

	for (e->done = 0; e->done < e->count; e->done++) {
		n = read_all(e->fd, buf, sizeof(buf));
		if (n != MSG_LEN) {
			e->err = n < 0 ? errno : EPIPE;
			e->failed = n < 0 ? "recv" : "recv (EOF)";
			break;
		}
		if (write_all(e->fd, buf, sizeof(buf)) != MSG_LEN) {
			e->err = errno;
			e->failed = "send";
			break;
		}
	}
	return NULL;
}

/* Round trips @first .. @first + @count - 1: send, wait the mode's way, check every byte. */
static void ping_pong(struct __test_metadata *_metadata, struct waiter *w, unsigned int first,
		      unsigned int count)
{
	uint8_t out[MSG_LEN], back[MSG_LEN];

	for (unsigned int i = first; i < first + count; i++) {
		size_t got = 0;

		fill_msg(out, i);
		ASSERT_EQ(MSG_LEN, write_all(w->fd, out, sizeof(out)))
			TH_LOG("round trip %u: send: %s", i, strerror(errno));
		while (got < sizeof(back)) {
			ssize_t n = waiter_recv(w, back + got, sizeof(back) - got);

			ASSERT_LT(0, n) TH_LOG("round trip %u: %s after %zu of %d bytes: %s", i,
					       w->name, got, MSG_LEN,
					       n ? strerror(-n) : "EOF");
			got += n;
		}
		for (int k = 0; k < MSG_LEN; k++) {
			ASSERT_EQ(out[k], back[k]) TH_LOG("round trip %u: byte %d of the reply wrong",
							  i, k);
		}
	}
}

/* Counters of rxe_a over the counted round trips. */
struct deltas {
	unsigned long long cq_events, completions;
	unsigned long long softirq_polls, softirq_completions;
	unsigned long long busy_polls, busy_completions;
};

/*
 * The ping-pong of the busy and softirq tests, waiting @way: a client in rsmc_a that busy-polls
 * (@busy) or not, against a blocking echo server in rsmc_b that never does. Returns the
 * counters of rxe_a over the ROUND_TRIPS counted round trips, and logs them.
 */
static void run_ping_pong(struct __test_metadata *_metadata, const struct wait_way *way,
			  bool busy, struct deltas *d)
{
	enum wait_mode mode = way->mode;
	struct rsmc_device_stats before, after;
	struct echo e = { .count = WARMUP + ROUND_TRIPS };
	unsigned int defer_irqs = busy ? DEFER_HARD_IRQS : 0, got_irqs;
	unsigned long long defer_ns = busy ? DEFER_TIMEOUT_NS : 0, got_ns;
	long busy_poll = busy && mode == WAIT_POLL ? BUSY_USECS : 0;
	cpu_set_t client_cpu, server_cpu, saved;
	struct timespec deadline;
	pthread_attr_t attr;
	struct waiter w;
	pthread_t t;
	double t0, t1;
	int cfd, sfd;

	/*
	 * The knobs first, from the root namespace: smc_pair() moves this thread, and the
	 * sysctl is the root namespace's. poll() busy-polls only with net.core.busy_poll on;
	 * epoll would with it too, so it is on only for poll.
	 */
	ASSERT_EQ(0, rsmc_set_napi_defer("rxe_a", defer_irqs, defer_ns))
		TH_LOG("writing %s: %s", RSMC_NAPI_DEFER_FILE, strerror(errno));
	ASSERT_EQ(0, rsmc_get_napi_defer("rxe_a", &got_irqs, &got_ns));
	ASSERT_TRUE(got_irqs == defer_irqs && got_ns == defer_ns)
		TH_LOG("napi_defer reads %u %llu after writing %u %llu", got_irqs, got_ns,
		       defer_irqs, defer_ns);
	set_busy_poll(_metadata, busy_poll);

	smc_pair(_metadata, &cfd, &sfd);
	/* Over TCP, there would be no RDMA completions to count. */
	ASSERT_TRUE(expect_rdma(_metadata, "client", cfd));
	ASSERT_TRUE(expect_rdma(_metadata, "server", sfd));
	/* Explicit 0s: whatever net.core.busy_read says, only the client spins, if asked. */
	ASSERT_EQ(0, set_int(sfd, SOL_SOCKET, SO_BUSY_POLL, 0)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, set_int(cfd, SOL_SOCKET, SO_BUSY_POLL, busy ? BUSY_USECS : 0))
		TH_LOG("SO_BUSY_POLL: %s", strerror(errno));
	if (busy) {
		/* Prefer, and a budget above the default, need CAP_NET_ADMIN: we are root. */
		ASSERT_EQ(0, set_int(cfd, SOL_SOCKET, SO_PREFER_BUSY_POLL, 1))
			TH_LOG("SO_PREFER_BUSY_POLL: %s", strerror(errno));
		ASSERT_EQ(0, set_int(cfd, SOL_SOCKET, SO_BUSY_POLL_BUDGET, BUSY_BUDGET))
			TH_LOG("SO_BUSY_POLL_BUDGET: %s", strerror(errno));
	}
	waiter_init(_metadata, &w, way, cfd, busy ? BUSY_USECS : 0);

	/*
	 * Busy polling wants a CPU of its own: the client spins on CPU 0, the echo server runs
	 * on CPU 1. On a shared CPU every round trip would wait for the spinner to give way,
	 * and io_uring's busy poll ends there (then sleeps until the deferral timer).
	 */
	ASSERT_LE(2, sysconf(_SC_NPROCESSORS_ONLN)) TH_LOG("the test needs two CPUs");
	CPU_ZERO(&client_cpu);
	CPU_SET(CLIENT_CPU, &client_cpu);
	CPU_ZERO(&server_cpu);
	CPU_SET(SERVER_CPU, &server_cpu);
	ASSERT_EQ(0, sched_getaffinity(0, sizeof(saved), &saved));
	ASSERT_EQ(0, sched_setaffinity(0, sizeof(client_cpu), &client_cpu))
		TH_LOG("sched_setaffinity: %s", strerror(errno));
	ASSERT_EQ(0, pthread_attr_init(&attr));
	ASSERT_EQ(0, pthread_attr_setaffinity_np(&attr, sizeof(server_cpu), &server_cpu));

	e.fd = sfd;
	ASSERT_EQ(0, pthread_create(&t, &attr, echo_server, &e));
	ASSERT_EQ(0, pthread_attr_destroy(&attr));
	/* Warm-up: the NAPI settles into its steady state (queue armed, or deferral timer). */
	ping_pong(_metadata, &w, 0, WARMUP);
	ASSERT_EQ(0, rsmc_device_stats(DEV_CLIENT, &before))
		TH_LOG("%s: no counters in %s", DEV_CLIENT, RSMC_DEVICES_FILE);
	t0 = now_ms();
	ping_pong(_metadata, &w, WARMUP, ROUND_TRIPS);
	t1 = now_ms();
	ASSERT_EQ(0, rsmc_device_stats(DEV_CLIENT, &after))
		TH_LOG("%s: no counters in %s", DEV_CLIENT, RSMC_DEVICES_FILE);

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += EVENT_WAIT_MS / 1000;
	ASSERT_EQ(0, pthread_timedjoin_np(t, NULL, &deadline)) TH_LOG("echo server still running");
	ASSERT_EQ(0, sched_setaffinity(0, sizeof(saved), &saved));
	EXPECT_EQ(0, e.err) TH_LOG("echo server: %s: %s", e.failed, strerror(e.err));
	EXPECT_EQ(e.count, e.done);
	EXPECT_EQ(before.napi_id, after.napi_id) TH_LOG("%s changed under the test", DEV_CLIENT);

	d->cq_events = after.cq_events - before.cq_events;
	d->completions = after.completions - before.completions;
	d->softirq_polls = after.softirq_polls - before.softirq_polls;
	d->softirq_completions = after.softirq_completions - before.softirq_completions;
	d->busy_polls = after.busy_polls - before.busy_polls;
	d->busy_completions = after.busy_completions - before.busy_completions;
	TH_LOG("%s, busy polling %s: %d round trips of %d bytes in %.0f ms (%.1f us each); %s: "
	       "cq_events %llu (%.2f/msg), completions %llu (%.2f/msg): softirq %llu polls "
	       "%llu completions (%.2f/msg), busy %llu polls %llu completions (%.2f/msg)",
	       way->name, busy ? "on" : "off", ROUND_TRIPS, MSG_LEN, t1 - t0,
	       (t1 - t0) * 1e3 / ROUND_TRIPS, DEV_CLIENT, d->cq_events,
	       (double)d->cq_events / ROUND_TRIPS, d->completions,
	       (double)d->completions / ROUND_TRIPS, d->softirq_polls, d->softirq_completions,
	       (double)d->softirq_completions / ROUND_TRIPS, d->busy_polls, d->busy_completions,
	       (double)d->busy_completions / ROUND_TRIPS);

	waiter_fini(&w);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/*
 * With busy polling preferred and interrupts deferred, the client's spinning reaps rxe_a's
 * completions, and the completion queue stays unarmed: (next to) no events per message.
 */
TEST_F_TIMEOUT(busy, busy_poll_reaps_completions, 300)
{
	unsigned long long want = ROUND_TRIPS / 2;
	struct deltas d;

	/*
	 * io_uring's wait spins only after its submission path; on the debug kernel that path is
	 * long enough for most replies to come before it (as the deferral timer's softirq
	 * polls). Its spin also ends, by design, as soon as another task wants the CPU (a
	 * soft-RoCE kworker, often). Its busy polls must still reap a share. An SQPOLL thread
	 * polls all along, and goes on polling after it gave way.
	 */
	if (variant->way.mode == WAIT_URING && !variant->way.sqpoll)
		want = ROUND_TRIPS / 10;
	run_ping_pong(_metadata, &variant->way, true, &d);
	EXPECT_LE(want, d.busy_completions)
		TH_LOG("%s: busy polling reaped %llu of %llu completions in %d round trips",
		       variant->way.name, d.busy_completions, d.completions, ROUND_TRIPS);
	EXPECT_GE(ROUND_TRIPS / 10ULL, d.cq_events)
		TH_LOG("%s: %llu completion events in %d round trips while busy polling",
		       variant->way.name, d.cq_events, ROUND_TRIPS);
}

/* Without busy polling, softirq polls reap everything, and each reply comes with an event. */
TEST_F_TIMEOUT(busy, softirq_without_busy_poll, 300)
{
	struct deltas d;

	run_ping_pong(_metadata, &variant->way, false, &d);
	EXPECT_EQ(0ULL, d.busy_polls) TH_LOG("%s: busy polls without busy polling",
					  variant->way.name);
	EXPECT_EQ(0ULL, d.busy_completions);
	EXPECT_LE((unsigned long long)ROUND_TRIPS, d.softirq_completions)
		TH_LOG("%s: softirq reaped %llu completions in %d round trips",
		       variant->way.name, d.softirq_completions, ROUND_TRIPS);
	EXPECT_LE(ROUND_TRIPS / 2ULL, d.cq_events)
		TH_LOG("%s: %llu completion events in %d round trips without busy polling",
		       variant->way.name, d.cq_events, ROUND_TRIPS);
}

/* ---------------------------------------------------------------------------------------- */
/* The RDMA device goes away under a spinning reader, in each way of waiting (it deletes      */
/* rxe_a, then adds it back).                                                                 */

FIXTURE(removal) {};

FIXTURE_VARIANT(removal) {
	struct wait_way way;
};

WAIT_WAY_VARIANTS(removal);

FIXTURE_SETUP(removal)
{
	const char *failed = rsmc_restore_rxe('a');
	const char *knobs = restore_knobs();

	signal(SIGPIPE, SIG_IGN);
	ASSERT_EQ(NULL, failed) TH_LOG("rxe_a missing: %s failed", failed);
	ASSERT_EQ(NULL, knobs) TH_LOG("%s: %s", knobs, strerror(errno));
}

/* In the parent: runs even when the test failed (an ASSERT aborts the child). */
FIXTURE_TEARDOWN_PARENT(removal)
{
	const char *failed = rsmc_restore_rxe('a');
	const char *knobs = restore_knobs();

	if (failed) {
		TH_LOG("adding rxe_a back: %s failed", failed);
		_metadata->exit_code = KSFT_FAIL;
	}
	if (knobs) {
		TH_LOG("%s: %s", knobs, strerror(errno));
		_metadata->exit_code = KSFT_FAIL;
	}
}

/* How long after the removal the reader may take to fail. */
#define REMOVAL_GUARD_S 20
/*
 * The reader's busy-poll time: longer than REMOVAL_GUARD_S, so that only the connection's
 * abort can end its spinning in time, not the busy-poll time running out.
 */
#define SPIN_USECS (GUARD_S * 1000000)

/* A thread that waits for one byte. */
struct spinner {
	struct waiter w;
	/* results */
	ssize_t ret;		/* waiter_recv()'s */
	double end_ms;
	bool finished;
};

static void *spin_wait(void *arg)
{
	struct spinner *s = arg;
	char c;

	s->ret = waiter_recv(&s->w, &c, 1);
	s->end_ms = now_ms();
	__atomic_store_n(&s->finished, true, __ATOMIC_RELEASE);
	return NULL;
}

static const char *ret_text(ssize_t ret)
{
	return ret < 0 ? strerror(-ret) : ret ? "a byte" : "EOF";
}

/*
 * The reader busy polls for longer than the test waits (io_uring's wait caps its spin at 10 ms,
 * then sleeps; its SQPOLL thread spins on), so only the connection's abort can end its wait.
 */
TEST_F_TIMEOUT(removal, spinner_survives_device_removal, 180)
{
	const char *name = variant->way.name;
	struct spinner s = { .ret = -2 };
	struct rsmc_device_stats s0, s1;
	struct timespec deadline;
	double t_start, t_del, t_done;
	pthread_t t;
	int cfd, sfd, ret;

	if (variant->way.mode == WAIT_POLL)
		set_busy_poll(_metadata, SPIN_USECS);
	smc_pair(_metadata, &cfd, &sfd);
	/* Over TCP, removing the RDMA device would prove nothing. */
	ASSERT_TRUE(expect_rdma(_metadata, "client", cfd));
	ASSERT_TRUE(expect_rdma(_metadata, "server", sfd));
	/* The guard SO_RCVTIMEO (GUARD_S) stays: it bounds the sleep after the spinning. */
	ASSERT_EQ(0, set_int(cfd, SOL_SOCKET, SO_BUSY_POLL, SPIN_USECS))
		TH_LOG("SO_BUSY_POLL %d: %s", SPIN_USECS, strerror(errno));
	waiter_init(_metadata, &s.w, &variant->way, cfd, SPIN_USECS);
	s.w.wait_ms = GUARD_S * 1000;
	ASSERT_EQ(0, rsmc_device_stats(DEV_CLIENT, &s0));

	t_start = now_ms();
	ASSERT_EQ(0, pthread_create(&t, NULL, spin_wait, &s));
	msleep(300);
	/* No data comes: the reader still waits, busy polling rxe_a's NAPI. */
	ASSERT_FALSE(__atomic_load_n(&s.finished, __ATOMIC_ACQUIRE))
		TH_LOG("%s returned %s with no data sent", name, ret_text(s.ret));
	ASSERT_EQ(0, rsmc_device_stats(DEV_CLIENT, &s1));
	EXPECT_LT(s0.busy_polls, s1.busy_polls) TH_LOG("the reader does not busy-poll %s",
						       DEV_CLIENT);

	/* The deadline counts from the start of the removal, which may itself wait. */
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += REMOVAL_GUARD_S;
	t_del = now_ms();
	ret = system("ip netns exec " NS_CLIENT " rdma link del " DEV_CLIENT);
	t_done = now_ms();
	ASSERT_EQ(0, ret) TH_LOG("rdma link del %s failed", DEV_CLIENT);
	TH_LOG("%s deleted in %.0f ms, %.0f ms into the spinning (%llu busy polls in its first "
	       "%.0f ms)", DEV_CLIENT, t_done - t_del, t_del - t_start,
	       s1.busy_polls - s0.busy_polls, t_del - t_start);

	ASSERT_EQ(0, pthread_timedjoin_np(t, NULL, &deadline))
		TH_LOG("%s still waiting %.0f s after the removal", name, (now_ms() - t_del) / 1e3);
	EXPECT_TRUE(s.ret < 0 && is_abort_errno(-s.ret))
		TH_LOG("%s returned %s %.0f ms after the removal began; want ECONNABORTED, "
		       "ECONNRESET or EPIPE", name, ret_text(s.ret), s.end_ms - t_del);
	TH_LOG("%s failed %.0f ms after the removal began: %s", name, s.end_ms - t_del,
	       ret_text(s.ret));
	EXPECT_EQ(-1, rsmc_device_napi_id(DEV_CLIENT)) TH_LOG("rsmc still lists %s", DEV_CLIENT);
	waiter_fini(&s.w);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* busy_poller_yields_cpu                                                                     */

/* How often, and for how long, the test thread naps while the reader spins on its CPU. */
#define NAPS 20
#define NAP_MS 2

/*
 * A busy poller spins with preemption off. A task woken on its CPU must not wait for the next
 * tick (4 ms at HZ=250) to run: with soft-RoCE that task may be the kworker carrying the very
 * packet the poller waits for. The reader and this thread share one CPU; the thread naps and
 * wakes while the reader spins with no data to read, and rxe_a's busy_yields counter shows
 * the spinner giving way.
 */
TEST(busy_poller_yields_cpu)
{
	static const struct wait_way recv_way = { .name = "recv", .mode = WAIT_RECV };
	struct spinner s = { .ret = -2 };
	struct rsmc_device_stats s0, s1;
	cpu_set_t one_cpu, saved;
	double late_max = 0;
	bool spun_through;
	pthread_t t;
	int cfd, sfd;
	char c = 'y';

	smc_pair(_metadata, &cfd, &sfd);
	ASSERT_TRUE(expect_rdma(_metadata, "client", cfd));
	ASSERT_EQ(0, set_int(cfd, SOL_SOCKET, SO_BUSY_POLL, SPIN_USECS))
		TH_LOG("SO_BUSY_POLL %d: %s", SPIN_USECS, strerror(errno));
	ASSERT_EQ(0, sched_getaffinity(0, sizeof(saved), &saved));
	CPU_ZERO(&one_cpu);
	CPU_SET(0, &one_cpu);
	/* The reader inherits this thread's CPU. */
	ASSERT_EQ(0, sched_setaffinity(0, sizeof(one_cpu), &one_cpu))
		TH_LOG("sched_setaffinity: %s", strerror(errno));
	ASSERT_EQ(0, rsmc_device_stats(DEV_CLIENT, &s0));

	waiter_init(_metadata, &s.w, &recv_way, cfd, 0);
	ASSERT_EQ(0, pthread_create(&t, NULL, spin_wait, &s));
	for (int i = 0; i < NAPS; i++) {
		double t0 = now_ms(), late;

		msleep(NAP_MS);
		late = now_ms() - t0 - NAP_MS;
		if (late > late_max)
			late_max = late;
	}
	ASSERT_EQ(0, rsmc_device_stats(DEV_CLIENT, &s1));
	spun_through = !__atomic_load_n(&s.finished, __ATOMIC_ACQUIRE);
	ASSERT_EQ(1, send(sfd, &c, 1, 0)) TH_LOG("send: %s", strerror(errno));
	ASSERT_EQ(0, pthread_join(t, NULL));
	ASSERT_EQ(0, sched_setaffinity(0, sizeof(saved), &saved));

	EXPECT_TRUE(spun_through) TH_LOG("recv returned %s with no data sent", ret_text(s.ret));
	EXPECT_EQ(1, s.ret) TH_LOG("recv returned %s", ret_text(s.ret));
	EXPECT_LT(s0.busy_polls, s1.busy_polls) TH_LOG("the reader does not busy-poll %s",
						       DEV_CLIENT);
	EXPECT_LT(s0.busy_yields, s1.busy_yields)
		TH_LOG("the spinning reader never yielded its CPU to this thread");
	TH_LOG("%llu busy polls yielded the CPU, of %llu; %d naps of %d ms woke up to %.1f ms late",
	       s1.busy_yields - s0.busy_yields, s1.busy_polls - s0.busy_polls, NAPS, NAP_MS,
	       late_max);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

TEST_HARNESS_MAIN
