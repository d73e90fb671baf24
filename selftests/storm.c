// SPDX-License-Identifier: GPL-2.0
/*
 * Random socket calls on connected AF_SMC sockets, from a fixed seed: sends and receives with
 * random flags, lengths and control messages (zerocopy cookies among them), socket options at
 * every level with random names, values and lengths, ioctls, shutdowns, polls, and connections
 * closed or aborted and made anew. No call may report a bad address for a good buffer, nor
 * return more than it was asked for; once both ends closed, every connection must go; and
 * make check fails on anything the kernel reported meanwhile (KASAN, lockdep and kmemleak on
 * the debug kernel). Over RDMA (IPv4 and IPv6), and with connections fallen back to TCP.
 */
#include <errno.h>
#include <linux/rsmc.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "rsmc_selftest.h"
#include "rsmc_pair.h"

#define PAIRS 4
#define ENDS (2 * PAIRS)
#define BUF_LEN (64 * 1024)
#define OPT_LEN 256

FIXTURE(storm) {
	int fd[ENDS];		/* pair i: client fd[2i] in rsmc_a, server fd[2i + 1] in rsmc_b */
	int lfd;
	uint16_t port;
	uint32_t rng;
	long sent, received, reconnects;	/* bytes, bytes, pairs made anew */
	char buf[BUF_LEN];
	char opt[OPT_LEN];
};

FIXTURE_VARIANT(storm) {
	const struct topo *topo;
	bool smc_server;	/* false: a plain TCP server, so every connection falls back */
};

FIXTURE_VARIANT_ADD(storm, rdma_ipv4) { .topo = &topo4, .smc_server = true };
FIXTURE_VARIANT_ADD(storm, rdma_ipv6) { .topo = &topo6, .smc_server = true };
FIXTURE_VARIANT_ADD(storm, fallback_ipv4) { .topo = &topo4, .smc_server = false };

/* Connects pair @i, non-blocking once connected, as every call of the storm must not wait. */
static void connect_pair(struct __test_metadata *_metadata, FIXTURE_DATA(storm) *self,
			 const FIXTURE_VARIANT(storm) *variant, int i)
{
	int c = socket_in(_metadata, variant->topo, NS_CLIENT, true, 0);

	ASSERT_EQ(0, connect_to(variant->topo, c, variant->topo->addr_b, self->port))
		TH_LOG("connect: %s", strerror(errno));
	self->fd[2 * i] = c;
	self->fd[2 * i + 1] = accept_within(_metadata, self->lfd, 0);
	for (int end = 2 * i; end <= 2 * i + 1; end++)
		ASSERT_EQ(0, fcntl(self->fd[end], F_SETFL, O_NONBLOCK));
	if (variant->smc_server) {
		struct rsmc_info info = {};
		socklen_t len = sizeof(info);

		ASSERT_EQ(0, getsockopt(c, SOL_SMC, RSMC_INFO, &info, &len));
		ASSERT_EQ((__u32)RSMC_MODE_RDMA, info.mode)
			TH_LOG("fell back: %#x", info.fallback_reason);
	}
}

FIXTURE_SETUP(storm)
{
	signal(SIGPIPE, SIG_IGN);
	for (int end = 0; end < ENDS; end++)
		self->fd[end] = -1;
	/* RSMC_STORM_SEED= explores other sequences; make check runs the default. */
	self->rng = getenv("RSMC_STORM_SEED") ? strtoul(getenv("RSMC_STORM_SEED"), NULL, 0) :
						0x5eed5;
	if (!self->rng)
		self->rng = 1;
	self->lfd = listen_in(_metadata, variant->topo, NS_SERVER, variant->topo->addr_b,
			      variant->smc_server, &self->port);
	for (int i = 0; i < PAIRS; i++)
		connect_pair(_metadata, self, variant, i);
}

FIXTURE_TEARDOWN(storm)
{
	for (int end = 0; end < ENDS; end++)
		if (self->fd[end] >= 0)
			close(self->fd[end]);
	close(self->lfd);
}

static uint32_t rnd(FIXTURE_DATA(storm) *self, uint32_t n)
{
	return xorshift32(&self->rng) % n;
}

/* An int option value: mostly the edges, sometimes anything. */
static int random_int(FIXTURE_DATA(storm) *self)
{
	static const int edges[] = { 0, 1, -1, 2, 4096, 65536, 1 << 30, INT32_MAX, INT32_MIN };

	if (rnd(self, 4))
		return edges[rnd(self, sizeof(edges) / sizeof(edges[0]))];
	return (int)xorshift32(&self->rng);
}

/* Fills the option buffer and returns a length for it: mostly an int, sometimes any. */
static socklen_t random_opt(FIXTURE_DATA(storm) *self)
{
	int val = random_int(self);

	for (int i = 0; i < OPT_LEN; i++)
		self->opt[i] = (char)xorshift32(&self->rng);
	memcpy(self->opt, &val, sizeof(val));
	return rnd(self, 4) ? sizeof(int) : rnd(self, 33);
}

/*
 * A random option name. Left out: options whose value points to user memory (filters, BPF
 * programs, TCP_ZEROCOPY_RECEIVE), that load modules by name (TCP_ULP, TCP_CONGESTION), that
 * could make close() wait (SO_LINGER, which the storm sets itself), and two that make TCP
 * itself warn on the plain TCP peer of the fallback variant: repair mode, which lets the
 * caller rewrite sequence numbers, and SO_PEEK_OFF (7.3.4 warns "TCP recvmsg seq # bug" on a
 * peek after a partial read with an offset near 2^31; AF_SMC does not take the option).
 */
static void random_name(FIXTURE_DATA(storm) *self, int *level, int *name)
{
	static const int levels[] = { SOL_SOCKET, SOL_TCP, SOL_SMC };
	static const int skipped[][2] = {
		{ SOL_SOCKET, SO_LINGER },		{ SOL_SOCKET, SO_PEEK_OFF },
		{ SOL_SOCKET, SO_ATTACH_FILTER },
		{ SOL_SOCKET, SO_ATTACH_BPF },		{ SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF },
		{ SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF }, { SOL_TCP, TCP_ULP },
		{ SOL_TCP, TCP_CONGESTION },		{ SOL_TCP, TCP_ZEROCOPY_RECEIVE },
		{ SOL_TCP, TCP_REPAIR },		{ SOL_TCP, TCP_REPAIR_QUEUE },
		{ SOL_TCP, TCP_QUEUE_SEQ },		{ SOL_TCP, TCP_REPAIR_OPTIONS },
		{ SOL_TCP, TCP_REPAIR_WINDOW },		{ SOL_TCP, 42 /* TCP_AO_REPAIR */ },
	};
	bool skip;

	do {
		*level = levels[rnd(self, 3)];
		*name = rnd(self, 82);
		skip = false;
		for (size_t i = 0; i < sizeof(skipped) / sizeof(skipped[0]); i++)
			skip |= skipped[i][0] == *level && skipped[i][1] == *name;
	} while (skip);
}

static void storm_send(struct __test_metadata *_metadata, FIXTURE_DATA(storm) *self, int fd)
{
	static const int optional[] = { MSG_MORE, MSG_OOB, MSG_ZEROCOPY, MSG_EOR };
	int flags = MSG_DONTWAIT | MSG_NOSIGNAL;
	char control[CMSG_SPACE(16)] = {};
	size_t len = rnd(self, 8) ? random_chunk(&self->rng, BUF_LEN) : 0;
	struct iovec iov = { .iov_base = self->buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++)
		if (!rnd(self, 4))
			flags |= optional[i];
	if (!rnd(self, 3)) {
		struct cmsghdr *cm = (struct cmsghdr *)control;
		/* A cookie as documented, or a cookie of the wrong size, or an unknown type. */
		size_t data_len = rnd(self, 2) ? sizeof(uint32_t) : rnd(self, 9);

		cm->cmsg_level = rnd(self, 8) ? SOL_SMC : SOL_SOCKET;
		cm->cmsg_type = rnd(self, 8) ? RSMC_ZC_COOKIE : (int)rnd(self, 100);
		cm->cmsg_len = CMSG_LEN(data_len);
		memcpy(CMSG_DATA(cm), &self->rng, sizeof(self->rng));
		msg.msg_control = control;
		msg.msg_controllen = CMSG_SPACE(data_len);
	}
	n = sendmsg(fd, &msg, flags);
	ASSERT_TRUE(n >= 0 || (errno != EFAULT && errno != ENOSYS))
		TH_LOG("sendmsg(%zu bytes, flags %#x): %s", len, flags, strerror(errno));
	ASSERT_LE(n, (ssize_t)len) TH_LOG("sendmsg of %zu bytes returned %zd", len, n);
	self->sent += n > 0 ? n : 0;
}

static void storm_recv(struct __test_metadata *_metadata, FIXTURE_DATA(storm) *self, int fd)
{
	static const int optional[] = { MSG_PEEK, MSG_TRUNC, MSG_WAITALL, MSG_OOB, MSG_ERRQUEUE };
	int flags = MSG_DONTWAIT;
	char control[128];
	size_t len = rnd(self, 8) ? random_chunk(&self->rng, BUF_LEN) : 0;
	size_t split = rnd(self, len + 1);
	struct iovec iov[2] = {
		{ .iov_base = self->buf, .iov_len = split },
		{ .iov_base = self->buf + split, .iov_len = len - split },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
	size_t controllen = rnd(self, 2) ? rnd(self, sizeof(control) + 1) : 0;
	ssize_t n;

	for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++)
		if (!rnd(self, 5))
			flags |= optional[i];
	msg.msg_control = controllen ? control : NULL;
	msg.msg_controllen = controllen;
	n = recvmsg(fd, &msg, flags);
	ASSERT_TRUE(n >= 0 || (errno != EFAULT && errno != ENOSYS))
		TH_LOG("recvmsg(%zu bytes, flags %#x): %s", len, flags, strerror(errno));
	/* MSG_TRUNC without MSG_ERRQUEUE discards bytes; with it, a cookie batch reports a
	 * truncation; either way no more than asked. */
	ASSERT_LE(n, (ssize_t)len) TH_LOG("recvmsg of %zu bytes (flags %#x) returned %zd", len,
					  flags, n);
	ASSERT_LE(msg.msg_controllen, controllen);
	if (!(flags & (MSG_PEEK | MSG_ERRQUEUE)))
		self->received += n > 0 ? n : 0;
}

static void storm_sockopt(struct __test_metadata *_metadata, FIXTURE_DATA(storm) *self, int fd)
{
	int level, name, ret;
	socklen_t len, given;

	random_name(self, &level, &name);
	if (rnd(self, 2)) {
		len = random_opt(self);
		ret = setsockopt(fd, level, name, self->opt, len);
		ASSERT_TRUE(!ret || errno != ENOSYS) TH_LOG("setsockopt(%d, %d)", level, name);
		/* Only SOL_SMC is rsmc's own; the other levels may take pointers. */
		ASSERT_TRUE(!ret || level != SOL_SMC || errno != EFAULT)
			TH_LOG("setsockopt(SOL_SMC, %d, %u bytes): EFAULT", name, len);
		return;
	}
	given = len = rnd(self, 2) ? sizeof(int) : rnd(self, OPT_LEN + 1);
	ret = getsockopt(fd, level, name, self->opt, &len);
	ASSERT_TRUE(!ret || errno != ENOSYS) TH_LOG("getsockopt(%d, %d)", level, name);
	ASSERT_TRUE(!ret || level != SOL_SMC || errno != EFAULT)
		TH_LOG("getsockopt(SOL_SMC, %d, %u bytes): EFAULT", name, given);
	if (!ret)
		ASSERT_LE(len, given) TH_LOG("getsockopt(%d, %d) wrote %u of %u bytes", level, name,
					      len, given);
}

static void storm_misc(struct __test_metadata *_metadata, FIXTURE_DATA(storm) *self, int fd)
{
	static const unsigned long cmds[] = { SIOCINQ, SIOCOUTQ, SIOCOUTQNSD, SIOCATMARK };
	struct sockaddr_storage ss;
	struct pollfd pfd = { .fd = fd, .events = POLLIN | POLLOUT | POLLPRI | POLLRDHUP };
	socklen_t len = rnd(self, sizeof(ss) + 1);
	int val, ret;

	switch (rnd(self, 4)) {
	case 0:
		ret = ioctl(fd, cmds[rnd(self, 4)], &val);
		ASSERT_TRUE(!ret || (errno != EFAULT && errno != ENOSYS)) TH_LOG("ioctl");
		break;
	case 1:
		ASSERT_LE(0, poll(&pfd, 1, 0)) TH_LOG("poll: %s", strerror(errno));
		break;
	case 2:
		ret = rnd(self, 2) ? getsockname(fd, (struct sockaddr *)&ss, &len) :
				     getpeername(fd, (struct sockaddr *)&ss, &len);
		ASSERT_TRUE(!ret || errno != EFAULT) TH_LOG("get{sock,peer}name: EFAULT");
		break;
	default:
		/* Rarely (a pair is made anew every 256 calls or so): shut down one way or
		 * both, or ask for nonsense. */
		if (!rnd(self, 32)) {
			ret = shutdown(fd, (int)rnd(self, 5) - 1);
			ASSERT_TRUE(!ret || errno == EINVAL || errno == ENOTCONN)
				TH_LOG("shutdown: %s", strerror(errno));
		}
		break;
	}
}

/* Pair @i ends, closed or aborted (SO_LINGER {1, 0}) on either side, and a new one replaces it. */
static void storm_reconnect(struct __test_metadata *_metadata, FIXTURE_DATA(storm) *self,
			    const FIXTURE_VARIANT(storm) *variant, int i)
{
	for (int end = 2 * i; end <= 2 * i + 1; end++) {
		struct linger abort_now = { .l_onoff = 1, .l_linger = 0 };

		if (!rnd(self, 3))
			setsockopt(self->fd[end], SOL_SOCKET, SO_LINGER, &abort_now,
				   sizeof(abort_now));
		ASSERT_EQ(0, close(self->fd[end]));
		self->fd[end] = -1;
	}
	connect_pair(_metadata, self, variant, i);
	self->reconnects++;
}

/* Makes @steps random calls on random ends. */
static void storm_run(struct __test_metadata *_metadata, FIXTURE_DATA(storm) *self,
		      const FIXTURE_VARIANT(storm) *variant, int steps)
{
	double start = now_ms();

	for (int step = 0; step < steps; step++) {
		int end = rnd(self, ENDS);
		int fd = self->fd[end];

		switch (rnd(self, 16)) {
		case 0 ... 4:
			storm_send(_metadata, self, fd);
			break;
		case 5 ... 9:
			storm_recv(_metadata, self, fd);
			break;
		case 10 ... 11:
			storm_sockopt(_metadata, self, fd);
			break;
		case 12 ... 14:
			storm_misc(_metadata, self, fd);
			break;
		default:
			if (!rnd(self, 16))
				storm_reconnect(_metadata, self, variant, end / 2);
			break;
		}
	}
	TH_LOG("%d calls in %.0f ms: %ld bytes sent, %ld received, %ld pairs made anew", steps,
	       now_ms() - start, self->sent, self->received, self->reconnects);
}

static void close_all(struct __test_metadata *_metadata, FIXTURE_DATA(storm) *self)
{
	for (int end = 0; end < ENDS; end++) {
		ASSERT_EQ(0, close(self->fd[end]));
		self->fd[end] = -1;
	}
}

static int storm_steps(void)
{
	return rsmc_debug_kernel() ? 20000 : 100000;
}

TEST_F_TIMEOUT(storm, random_calls_then_close_leave_nothing, 300)
{
	storm_run(_metadata, self, variant, storm_steps());
	close_all(_metadata, self);
	assert_connections_gone(_metadata, "connections closed at both ends");
}

/*
 * The same from two processes that share the sockets, so that sends, receives, options and
 * shutdowns race on each one. The second process makes its new pairs on a listener of its own.
 */
TEST_F_TIMEOUT(storm, two_processes_share_the_sockets, 300)
{
	int status;
	pid_t child = fork();

	ASSERT_LE(0, child) TH_LOG("fork: %s", strerror(errno));
	if (!child) {
		self->rng = self->rng * 2654435761u | 1;
		self->lfd = listen_in(_metadata, variant->topo, NS_SERVER, variant->topo->addr_b,
				      variant->smc_server, &self->port);
		storm_run(_metadata, self, variant, storm_steps() / 2);
		close_all(_metadata, self);
		_exit(0);
	}
	storm_run(_metadata, self, variant, storm_steps() / 2);
	ASSERT_EQ(child, waitpid(child, &status, 0));
	ASSERT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status))
		TH_LOG("the other process ended with status %#x", status);
	close_all(_metadata, self);
	assert_connections_gone(_metadata, "connections closed at both ends");
}

TEST_HARNESS_MAIN
