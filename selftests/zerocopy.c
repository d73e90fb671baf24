// SPDX-License-Identifier: GPL-2.0
/*
 * MSG_ZEROCOPY on AF_SMC sockets: SO_ZEROCOPY; every zerocopy send notified exactly once on the
 * error queue, by TCP's id ranges (under the control message a TCP socket of the same family
 * uses) or by the cookie the send carried, in batches as large as the reader's buffer, with
 * MSG_PEEK and MSG_TRUNC; EPOLLERR while notifications wait; the RLIMIT_MEMLOCK limit. Over
 * RDMA (IPv4 and IPv6) and over the TCP fallback.
 */
#include <errno.h>
#include <time.h>
#include <linux/capability.h>
#include <linux/errqueue.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "rsmc_selftest.h"
#include "rsmc_pair.h"

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#ifndef SO_EE_ORIGIN_ZEROCOPY
#define SO_EE_ORIGIN_ZEROCOPY 5
#endif

/* Bytes of each small send. */
#define SEND_LEN 1000
/* How long notifications may take to arrive. */
#define NOTIFY_WAIT_MS 10000

FIXTURE(zc) {
	int cfd, sfd;
	pthread_t drain;
	bool drain_joined;
	bool check_pattern;	/* the drain thread checks every byte against pattern_at() */
	uint64_t drained;	/* bytes the server read, once the drain thread ended */
	int64_t mismatch;	/* stream offset of the first wrong byte, or -1 */
};

FIXTURE_VARIANT(zc) {
	const struct topo *topo;
	bool smc_server;	/* false: the server is plain TCP and the client falls back */
};

FIXTURE_VARIANT_ADD(zc, rdma_ipv4) { .topo = &topo4, .smc_server = true };
FIXTURE_VARIANT_ADD(zc, rdma_ipv6) { .topo = &topo6, .smc_server = true };
FIXTURE_VARIANT_ADD(zc, tcp_ipv4) { .topo = &topo4, .smc_server = false };

/* Byte @off of the stream the integrity test sends. */
static inline uint8_t pattern_at(uint64_t off)
{
	return (uint8_t)((off * 0x9e3779b1u) >> 24) ^ (uint8_t)(off >> 16);
}

/* Reads and counts everything the server gets until EOF, checking it if asked to. */
static void *drain(void *arg)
{
	FIXTURE_DATA(zc) *self = arg;
	static uint8_t buf[65536];
	ssize_t n;

	while ((n = read(self->sfd, buf, sizeof(buf))) > 0) {
		if (__atomic_load_n(&self->check_pattern, __ATOMIC_ACQUIRE) && self->mismatch < 0) {
			for (ssize_t i = 0; i < n; i++) {
				if (buf[i] != pattern_at(self->drained + i)) {
					self->mismatch = self->drained + i;
					break;
				}
			}
		}
		self->drained += n;
	}
	return NULL;
}

FIXTURE_SETUP(zc)
{
	uint32_t mode = 0;
	socklen_t len = sizeof(mode);

	signal(SIGPIPE, SIG_IGN);
	make_pair(_metadata, variant->topo, true, variant->smc_server, &self->cfd, &self->sfd);
	/* The first field of struct rsmc_info is the mode. */
	ASSERT_EQ(0, getsockopt(self->cfd, SOL_SMC, RSMC_INFO, &mode, &len));
	ASSERT_EQ((uint32_t)(variant->smc_server ? RSMC_MODE_RDMA : RSMC_MODE_TCP), mode);
	ASSERT_EQ(0, set_int(self->cfd, SOL_SOCKET, SO_ZEROCOPY, 1));
	self->drained = 0;
	self->drain_joined = false;
	self->check_pattern = false;
	self->mismatch = -1;
	ASSERT_EQ(0, pthread_create(&self->drain, NULL, drain, self));
}

FIXTURE_TEARDOWN(zc)
{
	shutdown(self->cfd, SHUT_WR);
	if (!self->drain_joined)
		pthread_join(self->drain, NULL);
	close(self->cfd);
	close(self->sfd);
}

/* Ends the client's sending and returns how many bytes the server read. */
static uint64_t finish_drain(FIXTURE_DATA(zc) *self)
{
	shutdown(self->cfd, SHUT_WR);
	pthread_join(self->drain, NULL);
	self->drain_joined = true;
	return self->drained;
}

/* One send of @len bytes with @flags, carrying @cookie unless it is NULL. */
static ssize_t send_cookie(int fd, const void *buf, size_t len, int flags, const uint32_t *cookie)
{
	char control[CMSG_SPACE(sizeof(uint32_t))] = { 0 };
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cmsg;

	if (cookie) {
		msg.msg_control = control;
		msg.msg_controllen = sizeof(control);
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SMC;
		cmsg->cmsg_type = RSMC_ZC_COOKIE;
		cmsg->cmsg_len = CMSG_LEN(sizeof(*cookie));
		memcpy(CMSG_DATA(cmsg), cookie, sizeof(*cookie));
	}
	return sendmsg(fd, &msg, flags);
}

/* Whether a notification waits (POLLERR) within @ms. */
static bool notified_within(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = 0 };

	return poll(&p, 1, ms) == 1 && (p.revents & POLLERR);
}

/* Ids notified with SO_EE_CODE_ZEROCOPY_COPIED, by read_range(). */
static uint32_t copied_ids;

/*
 * Reads one id-range notification: marks [lo, hi] in @seen (of @n ids) and fails on an id seen
 * before or out of range. Returns the number of ids, 0 if none was queued.
 */
static uint32_t read_range(struct __test_metadata *_metadata, int fd, const struct topo *v,
			   bool *seen, uint32_t n)
{
	char control[256];
	struct msghdr msg = { .msg_control = control, .msg_controllen = sizeof(control) };
	struct sock_extended_err *ee;
	struct cmsghdr *cmsg;
	uint32_t lo, hi;

	if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
		EXPECT_EQ(EAGAIN, errno) TH_LOG("recvmsg(MSG_ERRQUEUE): %s", strerror(errno));
		return 0;
	}
	cmsg = CMSG_FIRSTHDR(&msg);
	EXPECT_NE(NULL, cmsg) TH_LOG("an id notification without a control message");
	if (!cmsg)
		return 0;
	/* As a TCP socket of the same family reports it. */
	EXPECT_EQ(v->family == AF_INET ? SOL_IP : SOL_IPV6, cmsg->cmsg_level);
	EXPECT_EQ(v->family == AF_INET ? IP_RECVERR : IPV6_RECVERR, cmsg->cmsg_type);
	ee = (struct sock_extended_err *)CMSG_DATA(cmsg);
	EXPECT_EQ(0u, ee->ee_errno);
	EXPECT_EQ(SO_EE_ORIGIN_ZEROCOPY, ee->ee_origin);
	lo = ee->ee_info;
	hi = ee->ee_data;
	EXPECT_TRUE(lo <= hi && hi < n) TH_LOG("range [%u, %u] outside the %u ids sent", lo, hi, n);
	if (lo > hi || hi >= n)
		return 0;
	for (uint32_t id = lo; id <= hi; id++) {
		EXPECT_FALSE(seen[id]) TH_LOG("id %u notified twice", id);
		seen[id] = true;
	}
	if (ee->ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
		copied_ids += hi - lo + 1;
	return hi - lo + 1;
}

/* Reads id notifications until @n ids were notified or none comes for NOTIFY_WAIT_MS. */
static uint32_t read_all_ranges(struct __test_metadata *_metadata, int fd, const struct topo *v,
				bool *seen, uint32_t n, uint32_t got)
{
	while (got < n) {
		uint32_t ids = read_range(_metadata, fd, v, seen, n);

		if (!ids && !notified_within(fd, NOTIFY_WAIT_MS))
			break;
		got += ids;
	}
	return got;
}

/*
 * Reads a cookie batch into @out (room for @room cookies) with @flags (MSG_ERRQUEUE added);
 * returns the cookies read, -1 with errno if the read failed. *@pending and *@msg_flags get
 * what the control message and the message say.
 */
static int read_cookies(struct __test_metadata *_metadata, int fd, uint32_t *out, size_t room,
			int flags, uint32_t *pending, int *msg_flags)
{
	char control[CMSG_SPACE(sizeof(struct rsmc_zc_cookies))];
	struct iovec iov = { .iov_base = out, .iov_len = room * sizeof(*out) };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = control, .msg_controllen = sizeof(control),
	};
	struct rsmc_zc_cookies info;
	struct cmsghdr *cmsg;
	ssize_t n = recvmsg(fd, &msg, flags | MSG_ERRQUEUE);

	if (n < 0)
		return -1;
	cmsg = CMSG_FIRSTHDR(&msg);
	EXPECT_TRUE(cmsg && cmsg->cmsg_level == SOL_SMC && cmsg->cmsg_type == RSMC_ZC_COOKIES)
		TH_LOG("a cookie batch without its RSMC_ZC_COOKIES control message");
	if (!cmsg || cmsg->cmsg_level != SOL_SMC || cmsg->cmsg_type != RSMC_ZC_COOKIES) {
		errno = EPROTO;
		return -1;
	}
	memcpy(&info, CMSG_DATA(cmsg), sizeof(info));
	EXPECT_EQ(n, (ssize_t)(info.count * sizeof(uint32_t)));
	EXPECT_LE(info.count, info.pending);
	*pending = info.pending;
	*msg_flags = msg.msg_flags;
	return info.count;
}

TEST_F(zc, ids_each_notified_once)
{
	const uint32_t n = 1000;
	static char buf[SEND_LEN];
	bool *seen = calloc(n, sizeof(*seen));
	uint32_t got = 0;

	ASSERT_NE(NULL, seen);
	for (uint32_t i = 0; i < n; i++) {
		ASSERT_EQ(SEND_LEN, send(self->cfd, buf, SEND_LEN, MSG_ZEROCOPY))
			TH_LOG("send %u: %s", i, strerror(errno));
		/* Read as we go, as applications do. */
		if (i % 64 == 0)
			got += read_range(_metadata, self->cfd, variant->topo, seen, n);
	}
	got = read_all_ranges(_metadata, self->cfd, variant->topo, seen, n, got);
	EXPECT_EQ(n, got) TH_LOG("%u of %u ids notified", got, n);
	EXPECT_FALSE(notified_within(self->cfd, 0)) TH_LOG("a notification too many");
	EXPECT_EQ((uint64_t)n * SEND_LEN, finish_drain(self));
	free(seen);
}

/*
 * 64 KiB sends from a pool of buffers, each rewritten (with the stream's next bytes) only once
 * its send was notified: every byte arrives as it was when sent. Over RDMA they go zerocopy;
 * over TCP they are copied. 2 GiB over RDMA and IPv4, 64 MiB otherwise and 4 MiB on the debug
 * kernel.
 */
#define BIG_LEN (64u << 10)
#define POOL 8

TEST_F_TIMEOUT(zc, big_sends_zerocopied_and_intact, 900)
{
	const uint32_t n = rsmc_debug_kernel()				? 64 :
			   variant->smc_server && variant->topo == &topo4	? 32768 :
										  1024;
	uint8_t *pool = mmap(NULL, POOL * BIG_LEN, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bool *seen = calloc(n, sizeof(*seen));
	uint32_t got = 0, id;
	uint64_t off = 0;

	ASSERT_NE(MAP_FAILED, pool);
	ASSERT_NE(NULL, seen);
	copied_ids = 0;
	__atomic_store_n(&self->check_pattern, true, __ATOMIC_RELEASE);
	for (id = 0; id < n; id++) {
		uint8_t *buf = pool + (id % POOL) * BIG_LEN;

		/* The buffer's previous send (id - POOL) must be notified before it is rewritten. */
		while (id >= POOL && !seen[id - POOL]) {
			uint32_t ids = read_range(_metadata, self->cfd, variant->topo, seen, n);

			got += ids;
			if (!ids) {
				ASSERT_TRUE(notified_within(self->cfd, NOTIFY_WAIT_MS))
					TH_LOG("send %u never notified", id - POOL);
			}
		}
		for (uint32_t i = 0; i < BIG_LEN; i++)
			buf[i] = pattern_at(off + i);
		ASSERT_EQ((ssize_t)BIG_LEN, send(self->cfd, buf, BIG_LEN, MSG_ZEROCOPY))
			TH_LOG("send %u: %s", id, strerror(errno));
		off += BIG_LEN;
	}
	got = read_all_ranges(_metadata, self->cfd, variant->topo, seen, n, got);
	EXPECT_EQ(n, got);
	EXPECT_EQ(off, finish_drain(self));
	EXPECT_EQ(-1, self->mismatch) TH_LOG("wrong byte at stream offset %lld",
					     (long long)self->mismatch);
	TH_LOG("%s: %u of %u sends zerocopied", variant->topo->name, n - copied_ids, n);
	if (variant->smc_server) {
		EXPECT_EQ(0u, copied_ids) TH_LOG("sends over RDMA were copied");
	} else {
		EXPECT_EQ(n, copied_ids) TH_LOG("the TCP fallback cannot send zerocopy");
	}
	munmap(pool, POOL * BIG_LEN);
	free(seen);
}

TEST_F(zc, flag_ignored_without_so_zerocopy)
{
	char buf[SEND_LEN] = { 0 }, control[64];
	struct msghdr msg = { .msg_control = control, .msg_controllen = sizeof(control) };

	ASSERT_EQ(0, set_int(self->cfd, SOL_SOCKET, SO_ZEROCOPY, 0));
	ASSERT_EQ(SEND_LEN, send(self->cfd, buf, SEND_LEN, MSG_ZEROCOPY));
	EXPECT_FALSE(notified_within(self->cfd, 200));
	EXPECT_EQ(-1, recvmsg(self->cfd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT));
	EXPECT_EQ(EAGAIN, errno);
	EXPECT_EQ((uint64_t)SEND_LEN, finish_drain(self));
}

TEST_F(zc, cookies_each_returned_once_in_order)
{
	const uint32_t n = 3000;
	uint32_t out[64], next = 0, pending, state = 7;
	static char buf[SEND_LEN];
	int flags, got;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t cookie = i * 7 + 1;

		ASSERT_EQ(SEND_LEN, send_cookie(self->cfd, buf, SEND_LEN, MSG_ZEROCOPY, &cookie))
			TH_LOG("send %u: %s", i, strerror(errno));
	}
	while (next < n) {
		/* Batches of 1 to 64 cookies, as many as the buffer takes. */
		size_t room = 1 + xorshift32(&state) % 64;

		got = read_cookies(_metadata, self->cfd, out, room, MSG_DONTWAIT, &pending, &flags);
		if (got < 0) {
			ASSERT_EQ(EAGAIN, errno) TH_LOG("recvmsg: %s", strerror(errno));
			ASSERT_TRUE(notified_within(self->cfd, NOTIFY_WAIT_MS))
				TH_LOG("%u of %u cookies returned", next, n);
			continue;
		}
		ASSERT_LT(0, got);
		EXPECT_EQ(pending > room, !!(flags & MSG_TRUNC));
		for (int i = 0; i < got; i++, next++)
			ASSERT_EQ(next * 7 + 1, out[i]) TH_LOG("cookie %u", next);
	}
	EXPECT_FALSE(notified_within(self->cfd, 0)) TH_LOG("a notification too many");
	EXPECT_EQ((uint64_t)n * SEND_LEN, finish_drain(self));
}

TEST_F(zc, peek_and_truncation_lose_no_cookie)
{
	const uint32_t n = 50;
	uint32_t out[n], pending = 0, cookie;
	static char buf[SEND_LEN];
	int flags = 0, got;

	for (cookie = 0; cookie < n; cookie++)
		ASSERT_EQ(SEND_LEN, send_cookie(self->cfd, buf, SEND_LEN, MSG_ZEROCOPY, &cookie));
	/* A peek with room for one: it says how many wait, and takes none. */
	for (int tries = 0; tries < 100; tries++, msleep(50)) {
		got = read_cookies(_metadata, self->cfd, out, 1, MSG_PEEK | MSG_DONTWAIT, &pending,
				   &flags);
		if (got < 0)
			ASSERT_EQ(EAGAIN, errno) TH_LOG("peek: %s", strerror(errno));
		if (got == 1 && pending == n)
			break;
	}
	ASSERT_EQ(n, pending);
	EXPECT_TRUE(flags & MSG_TRUNC);
	EXPECT_EQ(0u, out[0]);
	/* No room at all: still no cookie lost. */
	ASSERT_EQ(0, read_cookies(_metadata, self->cfd, out, 0, 0, &pending, &flags));
	EXPECT_TRUE(flags & MSG_TRUNC);
	/* The retry sized by the peek gets them all. */
	ASSERT_EQ((int)n, read_cookies(_metadata, self->cfd, out, pending, 0, &pending, &flags));
	EXPECT_FALSE(flags & MSG_TRUNC);
	for (cookie = 0; cookie < n; cookie++)
		EXPECT_EQ(cookie, out[cookie]);
	EXPECT_EQ(-1, read_cookies(_metadata, self->cfd, out, n, MSG_DONTWAIT, &pending, &flags));
	EXPECT_EQ(EAGAIN, errno);
	EXPECT_EQ((uint64_t)n * SEND_LEN, finish_drain(self));
}

TEST_F(zc, cookie_and_id_sends_mix)
{
	const uint32_t n = 400;
	uint32_t out[n], next = 0, ids = 0, pending, cookie;
	static char buf[SEND_LEN];
	bool seen[n / 2];
	int flags, got;

	memset(seen, 0, sizeof(seen));
	for (uint32_t i = 0; i < n; i++) {
		cookie = i;
		ASSERT_EQ(SEND_LEN, send_cookie(self->cfd, buf, SEND_LEN, MSG_ZEROCOPY,
						i % 2 ? &cookie : NULL));
	}
	/* Cookies first: the odd sends, in order. */
	while (next < n / 2) {
		got = read_cookies(_metadata, self->cfd, out, n, MSG_DONTWAIT, &pending, &flags);
		if (got < 0) {
			ASSERT_EQ(EAGAIN, errno);
			ASSERT_TRUE(notified_within(self->cfd, NOTIFY_WAIT_MS));
			continue;
		}
		for (int i = 0; i < got; i++, next++)
			ASSERT_EQ(2 * next + 1, out[i]);
	}
	/* Then the even sends, by id: only they took ids, so the ids are 0 to n / 2 - 1. */
	ids = read_all_ranges(_metadata, self->cfd, variant->topo, seen, n / 2, 0);
	EXPECT_EQ(n / 2, ids);
	EXPECT_EQ((uint64_t)n * SEND_LEN, finish_drain(self));
}

TEST_F(zc, cookie_needs_a_zerocopy_send)
{
	uint32_t cookie = 1;
	char buf[16] = { 0 };

	EXPECT_EQ(-1, send_cookie(self->cfd, buf, sizeof(buf), 0, &cookie));
	EXPECT_EQ(EINVAL, errno);
	ASSERT_EQ(0, set_int(self->cfd, SOL_SOCKET, SO_ZEROCOPY, 0));
	EXPECT_EQ(-1, send_cookie(self->cfd, buf, sizeof(buf), MSG_ZEROCOPY, &cookie));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(0u, finish_drain(self));
}

TEST_F(zc, epollerr_while_notifications_wait)
{
	bool seen[1] = { false };
	char buf[SEND_LEN] = { 0 };

	EXPECT_FALSE(notified_within(self->cfd, 0));
	ASSERT_EQ(SEND_LEN, send(self->cfd, buf, SEND_LEN, MSG_ZEROCOPY));
	EXPECT_TRUE(notified_within(self->cfd, NOTIFY_WAIT_MS));
	EXPECT_EQ(1u, read_all_ranges(_metadata, self->cfd, variant->topo, seen, 1, 0));
	EXPECT_FALSE(notified_within(self->cfd, 0));
	EXPECT_EQ((uint64_t)SEND_LEN, finish_drain(self));
}

/* Unread notifications of both kinds are freed with the socket (kmemleak checks, on debug). */
TEST_F(zc, close_with_unread_notifications)
{
	static char buf[SEND_LEN];

	for (uint32_t i = 0; i < 100; i++)
		ASSERT_EQ(SEND_LEN, send_cookie(self->cfd, buf, SEND_LEN, MSG_ZEROCOPY,
						i % 2 ? &i : NULL));
	EXPECT_TRUE(notified_within(self->cfd, NOTIFY_WAIT_MS));
	EXPECT_EQ(100u * SEND_LEN, finish_drain(self));
}

/* Without CAP_IPC_LOCK, RLIMIT_MEMLOCK bounds what zerocopy sends pin: over it, ENOBUFS. */
TEST_F(zc, memlock_limit_is_enobufs)
{
	static char buf[1 << 20];
	pid_t child = fork();
	int status;

	ASSERT_LE(0, child);
	if (!child) {
		struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
		struct __user_cap_data_struct caps[2];
		struct rlimit lim = { .rlim_cur = 64 << 10, .rlim_max = 64 << 10 };

		if (syscall(SYS_capget, &hdr, caps))
			_exit(10);
		caps[0].effective &= ~(1u << CAP_IPC_LOCK);
		if (syscall(SYS_capset, &hdr, caps) || setrlimit(RLIMIT_MEMLOCK, &lim))
			_exit(11);
		if (send(self->cfd, buf, sizeof(buf), MSG_ZEROCOPY) != -1)
			_exit(12);
		_exit(errno == ENOBUFS ? 0 : 13);
	}
	ASSERT_EQ(child, waitpid(child, &status, 0));
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("10, 11: capget, capset or setrlimit failed; 12: the "
						 "send succeeded; 13: it failed with another errno");
	/* Within the limit again (the parent has CAP_IPC_LOCK): the socket still works. */
	EXPECT_EQ(SEND_LEN, send(self->cfd, buf, SEND_LEN, MSG_ZEROCOPY));
	EXPECT_EQ((uint64_t)SEND_LEN, finish_drain(self));
}

/*
 * The kernel's msg_zerocopy test in its rsmc mode (built from the kernel tree with
 * msg_zerocopy.sed): a receiver in rsmc_b, a sender in rsmc_a that expects every notification
 * zerocopied (-Z 1) and reports zc=y, with as many ids notified as it sent.
 */
FIXTURE(kernel_test) {};
FIXTURE_VARIANT(kernel_test) {
	const struct topo *topo;
	const char *flag;
	int port;
};
FIXTURE_VARIANT_ADD(kernel_test, ipv4) { .topo = &topo4, .flag = "-4", .port = 8100 };
FIXTURE_VARIANT_ADD(kernel_test, ipv6) { .topo = &topo6, .flag = "-6", .port = 8101 };
FIXTURE_SETUP(kernel_test) {}
FIXTURE_TEARDOWN(kernel_test) {}

/*
 * A process that exits with zerocopy sends in flight: its pages stay pinned until the device is
 * done, then everything is released (kmemleak and KASAN check, on the debug kernel).
 */
TEST_F(zc, exit_with_sends_in_flight)
{
	pid_t child = fork();
	int status;

	ASSERT_LE(0, child);
	if (!child) {
		uint8_t *buf = mmap(NULL, BIG_LEN, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (buf == MAP_FAILED)
			_exit(1);
		for (int i = 0; i < 32; i++) {
			uint32_t cookie = i;

			if (send_cookie(self->cfd, buf, BIG_LEN, MSG_ZEROCOPY,
					i % 2 ? &cookie : NULL) != (ssize_t)BIG_LEN)
				_exit(2);
		}
		/* Exits without reading a notification; its mapping goes with it. */
		_exit(0);
	}
	ASSERT_EQ(child, waitpid(child, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status));
	/* The parent's descriptor is the last: closing it releases the socket. */
	EXPECT_EQ(32ull * BIG_LEN, finish_drain(self));
}

TEST_F_TIMEOUT(kernel_test, msg_zerocopy_reports_zc, 120)
{
	const struct topo *v = variant->topo;
	unsigned long tx = 0, txc = 0, mb = 0;
	char cmd[512], line[512];
	bool zc = false, missing = false, gap = false, refused = false;
	FILE *out;
	pid_t rx;
	int status;

	rx = fork();
	ASSERT_LE(0, rx);
	if (!rx) {
		snprintf(cmd, sizeof(cmd),
			 "ip netns exec " NS_SERVER " out/msg_zerocopy %s -r -t 2 -p %d -D %s rsmc",
			 variant->flag, variant->port, v->addr_b);
		_exit(system(cmd) ? 1 : 0);
	}
	snprintf(cmd, sizeof(cmd),
		 "ip netns exec " NS_CLIENT " out/msg_zerocopy %s -v -t 2 -z -Z 1 -p %d -D %s -S %s "
		 "rsmc 2>&1; echo exit=$?", variant->flag, variant->port, v->addr_b, v->addr_a);
	/* The receiver listens when it is ready (seconds on the debug kernel): until then, retry. */
	for (int attempt = 0; attempt < 40; attempt++) {
		refused = false;
		msleep(250);
		out = popen(cmd, "r");
		ASSERT_NE(NULL, out);
		while (fgets(line, sizeof(line), out)) {
			refused |= strstr(line, "Connection refused") != NULL;
			if (refused)
				continue;
			TH_LOG("%s", strtok(line, "\n"));
			if (sscanf(line, "tx=%lu (%lu MB) txc=%lu", &tx, &mb, &txc) == 3)
				zc = strstr(line, "zc=y");
			missing |= !strncmp(line, "missing notifications", 21);
			gap |= !strncmp(line, "gap:", 4);
			if (!strncmp(line, "exit=", 5))
				EXPECT_STREQ("exit=0", line);
		}
		pclose(out);
		if (!refused)
			break;
	}
	ASSERT_FALSE(refused) TH_LOG("the receiver never listened");
	ASSERT_EQ(rx, waitpid(rx, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("the receiver failed");
	EXPECT_LT(0ul, tx);
	EXPECT_EQ(tx, txc) TH_LOG("%lu sends, %lu notified", tx, txc);
	EXPECT_TRUE(zc);
	EXPECT_FALSE(missing);
	EXPECT_FALSE(gap) TH_LOG("ids notified out of order or twice");
}

TEST(so_zerocopy_option)
{
	int fd = socket(AF_SMC, SOCK_STREAM, SMCPROTO_SMC), val;
	short shortval = 1;

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, get_int(fd, SOL_SOCKET, SO_ZEROCOPY, &val));
	EXPECT_EQ(0, val);
	EXPECT_EQ(0, set_int(fd, SOL_SOCKET, SO_ZEROCOPY, 1));
	ASSERT_EQ(0, get_int(fd, SOL_SOCKET, SO_ZEROCOPY, &val));
	EXPECT_EQ(1, val);
	EXPECT_EQ(-1, set_int(fd, SOL_SOCKET, SO_ZEROCOPY, 2));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &shortval, sizeof(shortval)));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(0, set_int(fd, SOL_SOCKET, SO_ZEROCOPY, 0));
	ASSERT_EQ(0, get_int(fd, SOL_SOCKET, SO_ZEROCOPY, &val));
	EXPECT_EQ(0, val);
	close(fd);
}

TEST_HARNESS_MAIN
