// SPDX-License-Identifier: GPL-2.0
/*
 * AF_SMC stream socket semantics, checked as TCP behaves: data integrity, concurrency,
 * half-close, non-blocking connect/accept, recv flags, timeouts, addresses, abort, interop with
 * plain TCP, TCP option pass-through and graceful close. Clients live in rsmc_a, servers in
 * rsmc_b; every test runs over IPv4 and IPv6. Whatever carries the data (the fallback TCP
 * socket today, RDMA later), these must hold.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "kselftest_harness.h"
#include "rsmc_selftest.h"

#define NS_CLIENT "rsmc_a"
#define NS_SERVER "rsmc_b"

/* setsockopt() timeouts are rounded to jiffies; an expiry may come up to one tick early. */
#define JIFFY_SLACK_MS 10

FIXTURE(stream) {};

FIXTURE_VARIANT(stream) {
	int family;		/* AF_INET or AF_INET6: the addresses, and the plain TCP peer */
	int protocol;		/* SMCPROTO_SMC or SMCPROTO_SMC6 */
	const char *addr_a;	/* client side (rsmc_a) */
	const char *addr_b;	/* server side (rsmc_b) */
};

FIXTURE_VARIANT_ADD(stream, ipv4) {
	.family = AF_INET,
	.protocol = SMCPROTO_SMC,
	.addr_a = "192.0.2.1",
	.addr_b = "192.0.2.2",
};

FIXTURE_VARIANT_ADD(stream, ipv6) {
	.family = AF_INET6,
	.protocol = SMCPROTO_SMC6,
	.addr_a = "2001:db8::1",
	.addr_b = "2001:db8::2",
};

FIXTURE_SETUP(stream)
{
	signal(SIGPIPE, SIG_IGN);
}

FIXTURE_TEARDOWN(stream) {}

typedef FIXTURE_VARIANT(stream) variant_t;

/* ---------------------------------------------------------------------------------------- */
/* Deterministic data: byte i of stream `seed` is byte (i % 8) of splitmix64(seed, i / 8).  */

static uint64_t mix64(uint64_t seed, uint64_t k)
{
	uint64_t z = k * 0x9e3779b97f4a7c15ULL + seed * 0xd1b54a32d192ed03ULL + 1;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void pattern_fill(uint8_t *buf, uint64_t seed, uint64_t off, size_t len)
{
	size_t n = 0;
	uint64_t w;

	while (n < len && (off & 7)) {
		w = mix64(seed, off >> 3);
		buf[n++] = ((uint8_t *)&w)[off & 7];
		off++;
	}
	for (; len - n >= 8; n += 8, off += 8) {
		w = mix64(seed, off >> 3);
		memcpy(buf + n, &w, 8);
	}
	while (n < len) {
		w = mix64(seed, off >> 3);
		buf[n++] = ((uint8_t *)&w)[off & 7];
		off++;
	}
}

/* Index of the first byte of @buf that differs from the pattern, or -1. @scratch >= @len. */
static ssize_t pattern_mismatch(const uint8_t *buf, uint64_t seed, uint64_t off, size_t len,
				uint8_t *scratch)
{
	pattern_fill(scratch, seed, off, len);
	if (!memcmp(buf, scratch, len))
		return -1;
	for (size_t i = 0; i < len; i++)
		if (buf[i] != scratch[i])
			return i;
	return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Sockets and addresses.                                                                    */

static socklen_t make_sockaddr(const variant_t *v, const char *ip, uint16_t port,
			       struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (v->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		if (inet_pton(AF_INET, ip, &sin->sin_addr) != 1)
			return 0;
		return sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) != 1)
			return 0;
		return sizeof(*sin6);
	}
}

static const char *sockaddr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip, sizeof(ip));
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, ip, sizeof(ip));
	snprintf(buf, len, "family %d [%s]:%u", ss->ss_family, ip, sockaddr_port(ss));
	return buf;
}

/* Same family, address and port. */
static bool sockaddr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		return x->sin6_port == y->sin6_port &&
		       !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
	}
	return false;
}

/*
 * A stream socket in the current namespace: AF_SMC, or plain TCP when !smc. Building with
 * -DSTREAM_REFERENCE_TCP makes every socket plain TCP, to check the tests against TCP itself.
 */
static int stream_socket(const variant_t *v, bool smc, int flags)
{
#ifdef STREAM_REFERENCE_TCP
	smc = false;
#endif
	if (smc)
		return socket(AF_SMC, SOCK_STREAM | flags, v->protocol);
	return socket(v->family, SOCK_STREAM | flags, 0);
}

/*
 * A listener in rsmc_b on addr_b:@port (0: any free port, written back to *@bound).
 * Leaves the calling thread in rsmc_b.
 */
static int listen_b(struct __test_metadata *_metadata, const variant_t *v, bool smc,
		    uint16_t port, int flags, bool reuseaddr, uint16_t *bound)
{
	struct sockaddr_storage ss;
	socklen_t len = make_sockaddr(v, v->addr_b, port, &ss);
	int fd, one = 1;

	ASSERT_NE(0u, len);
	ASSERT_EQ(0, rsmc_enter_netns(NS_SERVER)) TH_LOG("setns: %s", strerror(errno));
	fd = stream_socket(v, smc, flags);
	ASSERT_LE(0, fd) TH_LOG("socket: %s", strerror(errno));
	if (reuseaddr)
		ASSERT_EQ(0, setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)))
			TH_LOG("SO_REUSEADDR: %s", strerror(errno));
	ASSERT_EQ(0, bind(fd, (struct sockaddr *)&ss, len)) TH_LOG("bind: %s", strerror(errno));
	ASSERT_EQ(0, listen(fd, 128)) TH_LOG("listen: %s", strerror(errno));
	len = sizeof(ss);
	ASSERT_EQ(0, getsockname(fd, (struct sockaddr *)&ss, &len))
		TH_LOG("getsockname: %s", strerror(errno));
	ASSERT_NE(0, sockaddr_port(&ss));
	if (port)
		ASSERT_EQ(port, sockaddr_port(&ss));
	if (bound)
		*bound = sockaddr_port(&ss);
	return fd;
}

/* A client socket in rsmc_a (not yet connected). Leaves the calling thread in rsmc_a. */
static int client_a(struct __test_metadata *_metadata, const variant_t *v, bool smc, int flags)
{
	int fd;

	ASSERT_EQ(0, rsmc_enter_netns(NS_CLIENT)) TH_LOG("setns: %s", strerror(errno));
	fd = stream_socket(v, smc, flags);
	ASSERT_LE(0, fd) TH_LOG("socket: %s", strerror(errno));
	return fd;
}

static int connect_b(const variant_t *v, int fd, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = make_sockaddr(v, v->addr_b, port, &ss);

	return connect(fd, (struct sockaddr *)&ss, len);
}

/* Connects a client in rsmc_a to @port on rsmc_b with a blocking connect. */
static int connect_a_to_b(struct __test_metadata *_metadata, const variant_t *v, bool smc,
			  uint16_t port)
{
	int fd = client_a(_metadata, v, smc, 0);

	ASSERT_EQ(0, connect_b(v, fd, port)) TH_LOG("connect: %s", strerror(errno));
	return fd;
}

/* A connected pair, AF_SMC or plain TCP at both ends: *cfd in rsmc_a, *sfd accepted in rsmc_b. */
static void stream_pair(struct __test_metadata *_metadata, const variant_t *v, bool smc, int *cfd,
			int *sfd)
{
	uint16_t port;
	int lfd = listen_b(_metadata, v, smc, 0, 0, false, &port);

	*cfd = connect_a_to_b(_metadata, v, smc, port);
	*sfd = accept_within(_metadata, lfd, 0);
	EXPECT_EQ(0, close(lfd));
}

static void smc_pair(struct __test_metadata *_metadata, const variant_t *v, int *cfd, int *sfd)
{
	stream_pair(_metadata, v, true, cfd, sfd);
}

/* ---------------------------------------------------------------------------------------- */
/* Threads moving a pattern stream through a socket.                                          */

struct xfer {
	int fd;
	uint64_t seed;
	uint64_t total;		/* bytes to send / expected before EOF */
	uint32_t rng;		/* chunk size generator state (non-zero) */
	bool shut_wr;		/* sender: shutdown(SHUT_WR) once done */
	/* results */
	uint64_t done;		/* bytes sent / received */
	int err;		/* errno of a failed call, 0 if none */
	const char *failed;	/* which call failed */
	int64_t mismatch;	/* receiver: stream offset of the first wrong byte, or -1 */
	bool eof;		/* receiver: saw EOF */
};

#define XFER_MAX_CHUNK (256 * 1024)

static void *xfer_send(void *arg)
{
	struct xfer *x = arg;
	uint8_t *buf = malloc(XFER_MAX_CHUNK);

	if (!buf) {
		x->err = ENOMEM, x->failed = "malloc";
		return NULL;
	}
	while (x->done < x->total) {
		size_t chunk = random_chunk(&x->rng, XFER_MAX_CHUNK);
		ssize_t n;

		if (chunk > x->total - x->done)
			chunk = x->total - x->done;
		pattern_fill(buf, x->seed, x->done, chunk);
		n = send(x->fd, buf, chunk, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			x->err = n ? errno : EIO, x->failed = "send";
			break;
		}
		x->done += n;
	}
	if (!x->err && x->shut_wr && shutdown(x->fd, SHUT_WR))
		x->err = errno, x->failed = "shutdown";
	free(buf);
	return NULL;
}

static void *xfer_recv(void *arg)
{
	struct xfer *x = arg;
	uint8_t *buf = malloc(XFER_MAX_CHUNK), *scratch = malloc(XFER_MAX_CHUNK);

	x->mismatch = -1;
	if (!buf || !scratch) {
		x->err = ENOMEM, x->failed = "malloc";
		goto out;
	}
	for (;;) {
		size_t chunk = random_chunk(&x->rng, XFER_MAX_CHUNK);
		ssize_t n = recv(x->fd, buf, chunk, 0), bad;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			x->err = errno, x->failed = "recv";
			break;
		}
		if (n == 0) {
			x->eof = true;
			break;
		}
		if (x->mismatch < 0) {
			/* Bytes past the expected total are wrong by definition. */
			if (x->done + n > x->total)
				x->mismatch = x->total;
			bad = pattern_mismatch(buf, x->seed, x->done, n, scratch);
			if (bad >= 0 && (x->mismatch < 0 || (int64_t)(x->done + bad) < x->mismatch))
				x->mismatch = x->done + bad;
		}
		x->done += n;
	}
out:
	free(buf);
	free(scratch);
	return NULL;
}

static void check_xfer(struct __test_metadata *_metadata, const char *what,
		       const struct xfer *snd, const struct xfer *rcv)
{
	EXPECT_EQ(0, snd->err) TH_LOG("%s: sender %s: %s", what, snd->failed, strerror(snd->err));
	EXPECT_EQ(snd->total, snd->done) TH_LOG("%s: sent", what);
	EXPECT_EQ(0, rcv->err) TH_LOG("%s: receiver %s: %s", what, rcv->failed, strerror(rcv->err));
	EXPECT_EQ(-1, rcv->mismatch) TH_LOG("%s: first wrong byte at stream offset %lld", what,
					    (long long)rcv->mismatch);
	EXPECT_EQ(rcv->total, rcv->done) TH_LOG("%s: received", what);
	EXPECT_TRUE(rcv->eof) TH_LOG("%s: no EOF", what);
}

/*
 * Sends @n12 pattern bytes fd1 -> fd2 and @n21 bytes fd2 -> fd1 at the same time, each sender
 * shutting down its write side when done, each receiver reading to EOF; verifies every byte.
 */
static void duplex(struct __test_metadata *_metadata, int fd1, int fd2, uint64_t n12,
		   uint64_t n21, uint32_t seed)
{
	struct xfer x[4] = {
		{ .fd = fd1, .seed = seed, .total = n12, .rng = seed * 4 + 1, .shut_wr = true },
		{ .fd = fd2, .seed = seed, .total = n12, .rng = seed * 4 + 2 },
		{ .fd = fd2, .seed = seed + 1, .total = n21, .rng = seed * 4 + 3, .shut_wr = true },
		{ .fd = fd1, .seed = seed + 1, .total = n21, .rng = seed * 4 + 4 },
	};
	pthread_t t[4];

	for (int i = 0; i < 4; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, i % 2 ? xfer_recv : xfer_send, &x[i]));
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(0, pthread_join(t[i], NULL));
	check_xfer(_metadata, "1->2", &x[0], &x[1]);
	check_xfer(_metadata, "2->1", &x[2], &x[3]);
}

/* ---------------------------------------------------------------------------------------- */
/* 1. echo                                                                                    */

TEST_F(stream, echo_round_trips)
{
	static const size_t sizes[] = { 1, 2, 17, 100, 1000, 1460, 4096, 9000, 16384 };
	uint8_t out[16384], back[16384], got[16384];
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t len = sizes[i];

		pattern_fill(out, 100 + i, 0, len);
		ASSERT_EQ((ssize_t)len, write_all(cfd, out, len)) TH_LOG("%s", strerror(errno));
		ASSERT_EQ((ssize_t)len, read_all(sfd, got, len)) TH_LOG("%s", strerror(errno));
		EXPECT_EQ(0, memcmp(out, got, len)) TH_LOG("server got wrong bytes, msg %zu", i);
		ASSERT_EQ((ssize_t)len, write_all(sfd, got, len)) TH_LOG("%s", strerror(errno));
		ASSERT_EQ((ssize_t)len, read_all(cfd, back, len)) TH_LOG("%s", strerror(errno));
		EXPECT_EQ(0, memcmp(out, back, len)) TH_LOG("echo differs, message %zu", i);
	}
	EXPECT_EQ(0, close(cfd));
	/* The client's close reaches the server as EOF. */
	EXPECT_EQ(0, recv(sfd, got, 1, 0));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 2. bulk                                                                                    */

/*
 * 64 MiB each way in random chunks; 4 MiB on the debug kernel, where every small send costs
 * an order of magnitude more.
 */
static unsigned long long bulk_bytes(void)
{
	return rsmc_debug_kernel() ? 4ULL << 20 : 64ULL << 20;
}

TEST_F_TIMEOUT(stream, bulk_both_directions_64mib, 240)
{
	unsigned long long bytes = bulk_bytes();
	double t0;
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	t0 = now_ms();
	duplex(_metadata, cfd, sfd, bytes, bytes, 7);
	TH_LOG("%llu MiB each way in %.1f s", bytes >> 20, (now_ms() - t0) / 1e3);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 3. many connections                                                                        */

#define NCONN 64

struct conn {
	struct __test_metadata *md;
	const variant_t *v;
	uint16_t port;
	uint32_t id;
	int fd;
	size_t len;
	/* results */
	const char *failed;
	int err;
	bool ok;
	/* a client's reply length, and how its connection ran (struct rsmc_info) */
	ssize_t got;
	uint32_t mode, fallback_reason;
};

/* Request and reply sizes differ per connection. */
static size_t conn_len(uint32_t id)
{
	return 8192 + id * 1031;
}

static void *conn_client(void *arg)
{
	struct conn *c = arg;
	size_t len = conn_len(c->id);
	uint8_t *buf = malloc(len + 1), *scratch = malloc(len + 1);
	ssize_t n;
	int fd = -1;

	if (!buf || !scratch) {
		c->failed = "malloc";
		goto out;
	}
	if (rsmc_enter_netns(NS_CLIENT)) {
		c->failed = "setns", c->err = errno;
		goto out;
	}
	fd = stream_socket(c->v, true, 0);
	if (fd < 0) {
		c->failed = "socket", c->err = errno;
		goto out;
	}
	if (connect_b(c->v, fd, c->port)) {
		c->failed = "connect", c->err = errno;
		goto out;
	}
	/* Request: the id, then pattern 1000 + id. */
	memcpy(buf, &c->id, sizeof(c->id));
	pattern_fill(buf + sizeof(c->id), 1000 + c->id, 0, len - sizeof(c->id));
	if (write_all(fd, buf, len) != (ssize_t)len || shutdown(fd, SHUT_WR)) {
		c->failed = "send", c->err = errno;
		goto out;
	}
	/* Reply: pattern 2000 + id, then EOF. */
	n = read_all(fd, buf, len + 1);
	if (n != (ssize_t)len) {
		struct rsmc_info info = {};
		socklen_t ilen = sizeof(info);

		c->failed = n < 0 ? "recv" : "reply length", c->err = n < 0 ? errno : 0;
		c->got = n;
		c->len = len;
		if (!getsockopt(fd, SOL_SMC, RSMC_INFO, &info, &ilen))
			c->mode = info.mode, c->fallback_reason = info.fallback_reason;
		goto out;
	}
	if (pattern_mismatch(buf, 2000 + c->id, 0, len, scratch) >= 0) {
		c->failed = "reply content";
		goto out;
	}
	c->ok = true;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(scratch);
	return NULL;
}

static void *conn_server(void *arg)
{
	struct conn *c = arg;
	uint8_t *buf = malloc(conn_len(NCONN) + 1), *scratch = malloc(conn_len(NCONN) + 1);
	uint32_t id;
	size_t len;
	ssize_t n;

	if (!buf || !scratch) {
		c->failed = "malloc";
		goto out;
	}
	if (read_all(c->fd, &id, sizeof(id)) != sizeof(id) || id >= NCONN) {
		c->failed = "request id", c->err = errno;
		goto out;
	}
	c->id = id;
	len = conn_len(id) - sizeof(id);
	n = read_all(c->fd, buf, len + 1);
	if (n != (ssize_t)len) {
		c->failed = n < 0 ? "recv" : "request length", c->err = n < 0 ? errno : 0;
		goto out;
	}
	if (pattern_mismatch(buf, 1000 + id, 0, len, scratch) >= 0) {
		c->failed = "request content";
		goto out;
	}
	len = conn_len(id);
	pattern_fill(buf, 2000 + id, 0, len);
	if (write_all(c->fd, buf, len) != (ssize_t)len) {
		c->failed = "send", c->err = errno;
		goto out;
	}
	c->ok = true;
out:
	close(c->fd);
	free(buf);
	free(scratch);
	return NULL;
}

TEST_F_TIMEOUT(stream, concurrent_connections_64, 120)
{
	struct conn cli[NCONN] = {}, srv[NCONN] = {};
	pthread_t ct[NCONN], st[NCONN];
	bool seen[NCONN] = {};
	pthread_attr_t attr;
	uint16_t port;
	int lfd;

	lfd = listen_b(_metadata, variant, true, 0, 0, false, &port);
	ASSERT_EQ(0, pthread_attr_init(&attr));
	ASSERT_EQ(0, pthread_attr_setstacksize(&attr, 256 * 1024));
	for (uint32_t i = 0; i < NCONN; i++) {
		cli[i] = (struct conn){ .v = variant, .port = port, .id = i, .fd = -1 };
		ASSERT_EQ(0, pthread_create(&ct[i], &attr, conn_client, &cli[i]));
	}
	for (int i = 0; i < NCONN; i++) {
		srv[i].fd = accept_within(_metadata, lfd, 0);
		ASSERT_EQ(0, pthread_create(&st[i], &attr, conn_server, &srv[i]));
	}
	for (int i = 0; i < NCONN; i++) {
		ASSERT_EQ(0, pthread_join(ct[i], NULL));
		ASSERT_EQ(0, pthread_join(st[i], NULL));
	}
	for (int i = 0; i < NCONN; i++) {
		EXPECT_TRUE(cli[i].ok) TH_LOG("client %d: %s: %s (got %zd of %zu, mode %u, fallback "
					      "0x%x)", i, cli[i].failed, strerror(cli[i].err),
					      cli[i].got, cli[i].len, cli[i].mode,
					      cli[i].fallback_reason);
		EXPECT_TRUE(srv[i].ok) TH_LOG("server conn %d (id %u): %s: %s", i, srv[i].id,
					      srv[i].failed, strerror(srv[i].err));
		if (srv[i].ok) {
			EXPECT_FALSE(seen[srv[i].id]) TH_LOG("id %u accepted twice", srv[i].id);
			seen[srv[i].id] = true;
		}
	}
	pthread_attr_destroy(&attr);
	EXPECT_EQ(0, close(lfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 4. half-close                                                                              */

TEST_F(stream, half_close_server_reads_data_then_eof)
{
	char buf[16];
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	ASSERT_EQ(5, write_all(cfd, "hello", 5));
	ASSERT_EQ(0, shutdown(cfd, SHUT_WR)) TH_LOG("shutdown: %s", strerror(errno));
	ASSERT_EQ(5, read_all(sfd, buf, 5));
	EXPECT_EQ(0, memcmp(buf, "hello", 5));
	EXPECT_EQ(0, read(sfd, buf, sizeof(buf)));
	/* EOF stays. */
	EXPECT_EQ(0, read(sfd, buf, sizeof(buf)));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

TEST_F(stream, half_close_server_can_still_send)
{
	/* More than the socket buffers hold, read by the client as it comes. */
	struct xfer snd = { .seed = 41, .total = 4 << 20, .rng = 3, .shut_wr = true };
	struct xfer rcv = { .seed = 41, .total = 4 << 20, .rng = 5 };
	pthread_t t;
	int cfd, sfd;
	char c;

	smc_pair(_metadata, variant, &cfd, &sfd);
	snd.fd = sfd;
	rcv.fd = cfd;
	ASSERT_EQ(0, shutdown(cfd, SHUT_WR)) TH_LOG("shutdown: %s", strerror(errno));
	EXPECT_EQ(0, read(sfd, &c, 1)) TH_LOG("no EOF after SHUT_WR");
	ASSERT_EQ(0, pthread_create(&t, NULL, xfer_send, &snd));
	xfer_recv(&rcv);
	ASSERT_EQ(0, pthread_join(t, NULL));
	check_xfer(_metadata, "server->client after client SHUT_WR", &snd, &rcv);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

struct racing_sender {
	int fd;
	size_t chunk;
	uint64_t accepted;	/* bytes the sends returned */
	int err;		/* errno of the send that failed */
};

static void *send_until_shut(void *arg)
{
	static char buf[64 * 1024];
	struct racing_sender *s = arg;

	for (;;) {
		ssize_t n = send(s->fd, buf, s->chunk, MSG_NOSIGNAL);

		if (n < 0) {
			s->err = errno;
			return NULL;
		}
		s->accepted += n;
	}
}

struct counting_reader {
	int fd;
	uint64_t received;
	int err;
};

static void *read_to_eof(void *arg)
{
	static char buf[64 * 1024];
	struct counting_reader *r = arg;

	for (;;) {
		ssize_t n = recv(r->fd, buf, sizeof(buf), 0);

		if (n <= 0) {
			r->err = n ? errno : 0;
			return NULL;
		}
		r->received += n;
	}
}

/*
 * shutdown(SHUT_WR) from one thread while another sends, as TCP: every byte a send returned
 * reaches the peer before its end of file, the sender then fails with EPIPE, and the
 * connection stays up the other way. Inline-sized and ring-sized sends, at random moments.
 */
TEST_F_TIMEOUT(stream, shutdown_while_sending_loses_nothing, 120)
{
	static const size_t chunks[] = { 100, 16 << 10, 64 << 10 };
	int rounds = rsmc_debug_kernel() ? 4 : 20;
	uint32_t rng = 0x5eed;

	for (int round = 0; round < rounds; round++) {
		for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
			struct racing_sender snd = { .chunk = chunks[i] };
			struct counting_reader rcv = {};
			pthread_t ts, tr;
			int cfd, sfd;
			char c = 'x';

			smc_pair(_metadata, variant, &cfd, &sfd);
			snd.fd = cfd;
			rcv.fd = sfd;
			ASSERT_EQ(0, pthread_create(&tr, NULL, read_to_eof, &rcv));
			ASSERT_EQ(0, pthread_create(&ts, NULL, send_until_shut, &snd));
			usleep(xorshift32(&rng) % 5000);
			ASSERT_EQ(0, shutdown(cfd, SHUT_WR)) TH_LOG("shutdown: %s", strerror(errno));
			ASSERT_EQ(0, pthread_join(ts, NULL));
			ASSERT_EQ(0, pthread_join(tr, NULL));
			EXPECT_EQ(EPIPE, snd.err) TH_LOG("send: %s", strerror(snd.err));
			EXPECT_EQ(0, rcv.err) TH_LOG("recv: %s", strerror(rcv.err));
			ASSERT_EQ(snd.accepted, rcv.received)
				TH_LOG("round %d, %zu-byte sends: %llu bytes sent, %llu received",
				       round, chunks[i], (unsigned long long)snd.accepted,
				       (unsigned long long)rcv.received);
			ASSERT_EQ(1, send(sfd, &c, 1, 0)) TH_LOG("reply: %s", strerror(errno));
			ASSERT_EQ(1, recv(cfd, &c, 1, 0)) TH_LOG("reply: %s", strerror(errno));
			EXPECT_EQ(0, close(cfd));
			EXPECT_EQ(0, close(sfd));
		}
	}
}

TEST_F(stream, half_close_epollrdhup_on_server)
{
	int ev;
	char c;
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	/* Nothing pending yet: neither readable nor RDHUP. */
	EXPECT_EQ(0, wait_events(_metadata, sfd, EPOLLIN | EPOLLRDHUP, 0));
	ASSERT_EQ(1, write_all(cfd, "x", 1));
	ASSERT_EQ(0, shutdown(cfd, SHUT_WR));
	ASSERT_EQ(1, read_all(sfd, &c, 1));
	ev = wait_events(_metadata, sfd, EPOLLIN | EPOLLRDHUP, EVENT_WAIT_MS);
	EXPECT_TRUE(ev & EPOLLRDHUP) TH_LOG("events 0x%x", ev);
	EXPECT_TRUE(ev & EPOLLIN) TH_LOG("events 0x%x", ev);
	EXPECT_FALSE(ev & (EPOLLERR | EPOLLHUP)) TH_LOG("events 0x%x", ev);
	/* The server still writes: the client stays writable, the server too. */
	ev = wait_events(_metadata, sfd, EPOLLOUT, EVENT_WAIT_MS);
	EXPECT_TRUE(ev & EPOLLOUT) TH_LOG("events 0x%x", ev);
	ASSERT_EQ(1, write_all(sfd, "y", 1));
	ASSERT_EQ(1, read_all(cfd, &c, 1));
	EXPECT_EQ('y', c);
	/* Both sides shut down: the client sees EOF and RDHUP too. */
	EXPECT_EQ(0, close(sfd));
	ev = wait_events(_metadata, cfd, EPOLLIN | EPOLLRDHUP, EVENT_WAIT_MS);
	EXPECT_TRUE(ev & EPOLLRDHUP) TH_LOG("events 0x%x", ev);
	EXPECT_TRUE(ev & EPOLLHUP) TH_LOG("events 0x%x (both directions shut down)", ev);
	EXPECT_EQ(0, read(cfd, &c, 1));
	EXPECT_EQ(0, close(cfd));
}

TEST_F(stream, send_after_shut_wr_is_epipe)
{
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	ASSERT_EQ(0, shutdown(cfd, SHUT_WR));
	errno = 0;
	EXPECT_EQ(-1, send(cfd, "z", 1, MSG_NOSIGNAL));
	EXPECT_EQ(EPIPE, errno) TH_LOG("errno %s", strerror(errno));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 5. non-blocking connect                                                                    */

TEST_F(stream, nonblocking_connect_completes_with_epollout)
{
	uint16_t port;
	int lfd, cfd, sfd, ret, err = -1;
	int ev;
	char buf[8];

	lfd = listen_b(_metadata, variant, true, 0, 0, false, &port);
	cfd = client_a(_metadata, variant, true, SOCK_NONBLOCK);
	ret = connect_b(variant, cfd, port);
	if (ret)
		ASSERT_EQ(EINPROGRESS, errno) TH_LOG("connect: %s", strerror(errno));
	ev = wait_events(_metadata, cfd, EPOLLOUT, EVENT_WAIT_MS);
	EXPECT_TRUE(ev & EPOLLOUT) TH_LOG("events 0x%x", ev);
	EXPECT_FALSE(ev & (EPOLLERR | EPOLLHUP)) TH_LOG("events 0x%x", ev);
	ASSERT_EQ(0, get_int(cfd, SOL_SOCKET, SO_ERROR, &err)) TH_LOG("%s", strerror(errno));
	EXPECT_EQ(0, err) TH_LOG("SO_ERROR %s", strerror(err));
	sfd = accept_within(_metadata, lfd, 0);
	/* Data both ways; the client is non-blocking, so wait for it to become readable. */
	ASSERT_EQ(4, write_all(cfd, "ping", 4));
	ASSERT_EQ(4, read_all(sfd, buf, 4));
	EXPECT_EQ(0, memcmp(buf, "ping", 4));
	ASSERT_EQ(4, write_all(sfd, "pong", 4));
	EXPECT_TRUE(wait_events(_metadata, cfd, EPOLLIN, EVENT_WAIT_MS) & EPOLLIN);
	EXPECT_EQ(4, recv(cfd, buf, sizeof(buf), 0));
	EXPECT_EQ(0, memcmp(buf, "pong", 4));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, close(lfd));
}

/* A port on rsmc_b's address with nothing listening. */
static uint16_t unused_port(struct __test_metadata *_metadata, const variant_t *v)
{
	struct sockaddr_storage ss;
	socklen_t len = make_sockaddr(v, v->addr_b, 0, &ss);
	int fd;

	ASSERT_EQ(0, rsmc_enter_netns(NS_SERVER));
	fd = socket(v->family, SOCK_STREAM, 0);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, bind(fd, (struct sockaddr *)&ss, len));
	len = sizeof(ss);
	ASSERT_EQ(0, getsockname(fd, (struct sockaddr *)&ss, &len));
	/* Bound but never listening: closing it leaves no TIME_WAIT behind. */
	EXPECT_EQ(0, close(fd));
	return sockaddr_port(&ss);
}

TEST_F(stream, nonblocking_connect_refused)
{
	uint16_t port = unused_port(_metadata, variant);
	int cfd, ret, err = -1;
	int ev;

	cfd = client_a(_metadata, variant, true, SOCK_NONBLOCK);
	ret = connect_b(variant, cfd, port);
	if (ret == 0 || errno != ECONNREFUSED) {
		if (ret)
			ASSERT_EQ(EINPROGRESS, errno) TH_LOG("connect: %s", strerror(errno));
		ev = wait_events(_metadata, cfd, EPOLLOUT, EVENT_WAIT_MS);
		EXPECT_TRUE(ev & EPOLLERR) TH_LOG("events 0x%x", ev);
		EXPECT_TRUE(ev & EPOLLOUT) TH_LOG("events 0x%x", ev);
		ASSERT_EQ(0, get_int(cfd, SOL_SOCKET, SO_ERROR, &err));
		EXPECT_EQ(ECONNREFUSED, err) TH_LOG("SO_ERROR %d (%s)", err, strerror(err));
		/* Reading SO_ERROR clears it. */
		ASSERT_EQ(0, get_int(cfd, SOL_SOCKET, SO_ERROR, &err));
		EXPECT_EQ(0, err) TH_LOG("SO_ERROR %d (%s) on second read", err, strerror(err));
	}
	EXPECT_EQ(0, close(cfd));
}

TEST_F(stream, blocking_connect_refused)
{
	uint16_t port = unused_port(_metadata, variant);
	int cfd = client_a(_metadata, variant, true, 0);

	errno = 0;
	EXPECT_EQ(-1, connect_b(variant, cfd, port));
	EXPECT_EQ(ECONNREFUSED, errno) TH_LOG("errno %s", strerror(errno));
	EXPECT_EQ(0, close(cfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 6. accept                                                                                  */

TEST_F(stream, nonblocking_accept_empty_is_eagain)
{
	uint16_t port;
	int lfd = listen_b(_metadata, variant, true, 0, SOCK_NONBLOCK, false, &port);

	errno = 0;
	EXPECT_EQ(-1, accept(lfd, NULL, NULL));
	EXPECT_EQ(EAGAIN, errno) TH_LOG("errno %s", strerror(errno));
	errno = 0;
	EXPECT_EQ(-1, accept4(lfd, NULL, NULL, SOCK_NONBLOCK));
	EXPECT_EQ(EAGAIN, errno) TH_LOG("errno %s", strerror(errno));
	EXPECT_EQ(0, wait_events(_metadata, lfd, EPOLLIN, 0));
	EXPECT_EQ(0, close(lfd));
}

TEST_F(stream, listener_epollin_when_connection_pending)
{
	uint16_t port;
	int lfd = listen_b(_metadata, variant, true, 0, SOCK_NONBLOCK, false, &port);
	int cfd = connect_a_to_b(_metadata, variant, true, port), sfd;
	int ev = wait_events(_metadata, lfd, EPOLLIN, EVENT_WAIT_MS);

	EXPECT_TRUE(ev & EPOLLIN) TH_LOG("events 0x%x", ev);
	sfd = accept(lfd, NULL, NULL);
	EXPECT_LE(0, sfd) TH_LOG("accept: %s", strerror(errno));
	/* Queue empty again. */
	errno = 0;
	EXPECT_EQ(-1, accept(lfd, NULL, NULL));
	EXPECT_EQ(EAGAIN, errno);
	if (sfd >= 0)
		EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(lfd));
}

TEST_F(stream, accept4_flags_apply_to_new_socket)
{
	uint16_t port;
	int lfd = listen_b(_metadata, variant, true, 0, SOCK_NONBLOCK, false, &port);
	int c1 = connect_a_to_b(_metadata, variant, true, port);
	int c2 = connect_a_to_b(_metadata, variant, true, port);
	int s1, s2;
	char c;

	s1 = accept_within(_metadata, lfd, SOCK_NONBLOCK | SOCK_CLOEXEC);
	EXPECT_EQ(O_NONBLOCK, fcntl(s1, F_GETFL) & O_NONBLOCK);
	EXPECT_EQ(FD_CLOEXEC, fcntl(s1, F_GETFD) & FD_CLOEXEC);
	/* The new socket really is non-blocking. */
	errno = 0;
	EXPECT_EQ(-1, recv(s1, &c, 1, 0));
	EXPECT_EQ(EAGAIN, errno) TH_LOG("errno %s", strerror(errno));

	/* Without flags the accepted socket is blocking, whatever the listener is. */
	s2 = accept_within(_metadata, lfd, 0);
	EXPECT_EQ(0, fcntl(s2, F_GETFL) & O_NONBLOCK);
	EXPECT_EQ(0, fcntl(s2, F_GETFD) & FD_CLOEXEC);

	EXPECT_EQ(0, close(s1));
	EXPECT_EQ(0, close(s2));
	EXPECT_EQ(0, close(c1));
	EXPECT_EQ(0, close(c2));
	EXPECT_EQ(0, close(lfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 7. recv flags, scatter/gather, partial writes                                              */

TEST_F(stream, msg_peek_then_read_same_bytes)
{
	uint8_t out[100], peek[100], peek2[100], got[100];
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	pattern_fill(out, 51, 0, sizeof(out));
	ASSERT_EQ(100, write_all(cfd, out, sizeof(out)));
	ASSERT_TRUE(wait_events(_metadata, sfd, EPOLLIN, EVENT_WAIT_MS) & EPOLLIN);
	/* One 100-byte send arrives together, as with TCP. */
	EXPECT_EQ(100, recv(sfd, peek, sizeof(peek), MSG_PEEK));
	EXPECT_EQ(0, memcmp(out, peek, sizeof(out)));
	/* Peeking again sees the same bytes; a short peek sees their start. */
	EXPECT_EQ(10, recv(sfd, peek2, 10, MSG_PEEK));
	EXPECT_EQ(0, memcmp(out, peek2, 10));
	EXPECT_EQ(100, recv(sfd, got, sizeof(got), 0));
	EXPECT_EQ(0, memcmp(out, got, sizeof(got)));
	/* Consumed now. */
	errno = 0;
	EXPECT_EQ(-1, recv(sfd, got, sizeof(got), MSG_PEEK | MSG_DONTWAIT));
	EXPECT_EQ(EAGAIN, errno);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* The int an ioctl of @fd reports; -1 (errno set) if it fails. */
static int ioctl_int(int fd, unsigned long cmd)
{
	int n;

	return ioctl(fd, cmd, &n) ? -1 : n;
}

/*
 * As TCP's: SIOCINQ (FIONREAD) counts the bytes a read would return; SIOCOUTQ the bytes
 * written and not yet acknowledged by the peer, SIOCOUTQNSD those not yet sent, so both drain
 * to 0 once the peer has the data, whether it read it or not. A listener has no such queue.
 */
TEST_F(stream, ioctl_counts_queued_bytes)
{
	uint8_t out[1000], got[400];
	int lfd, cfd, sfd, tries;
	uint16_t port;

	lfd = listen_b(_metadata, variant, true, 0, 0, false, &port);
	EXPECT_EQ(-1, ioctl_int(lfd, SIOCINQ));
	EXPECT_EQ(EINVAL, errno);
	cfd = connect_a_to_b(_metadata, variant, true, port);
	sfd = accept_within(_metadata, lfd, 0);
	EXPECT_EQ(0, close(lfd));
	EXPECT_EQ(0, ioctl_int(sfd, SIOCINQ));

	pattern_fill(out, 53, 0, sizeof(out));
	ASSERT_EQ(1000, write_all(cfd, out, sizeof(out)));
	ASSERT_TRUE(wait_events(_metadata, sfd, EPOLLIN, EVENT_WAIT_MS) & EPOLLIN);
	/* One 1000-byte send arrives together, as with TCP. */
	EXPECT_EQ(1000, ioctl_int(sfd, SIOCINQ));
	EXPECT_EQ(1000, ioctl_int(sfd, FIONREAD));
	ASSERT_EQ(400, recv(sfd, got, sizeof(got), 0));
	EXPECT_EQ(0, memcmp(out, got, sizeof(got)));
	EXPECT_EQ(600, ioctl_int(sfd, SIOCINQ));

	for (tries = 0; tries < 200 && ioctl_int(cfd, SIOCOUTQ) != 0; tries++)
		msleep(10);
	EXPECT_EQ(0, ioctl_int(cfd, SIOCOUTQ)) TH_LOG("never acknowledged: %s", strerror(errno));
	EXPECT_EQ(0, ioctl_int(cfd, SIOCOUTQNSD));
	EXPECT_EQ(0, ioctl_int(cfd, SIOCINQ));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

struct pieces {
	int fd;
	const uint8_t *data;
	size_t piece, count;
	int delay_ms;
	ssize_t ret;
};

static void *send_pieces(void *arg)
{
	struct pieces *p = arg;

	p->ret = 0;
	for (size_t i = 0; i < p->count; i++) {
		msleep(p->delay_ms);
		if (write_all(p->fd, p->data + i * p->piece, p->piece) != (ssize_t)p->piece) {
			p->ret = -1;
			break;
		}
		p->ret += p->piece;
	}
	return NULL;
}

TEST_F(stream, msg_waitall_gets_full_amount)
{
	uint8_t out[4000], got[4000];
	struct pieces p = { .data = out, .piece = 1000, .count = 4, .delay_ms = 100 };
	pthread_t t;
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	pattern_fill(out, 52, 0, sizeof(out));
	p.fd = cfd;
	ASSERT_EQ(0, pthread_create(&t, NULL, send_pieces, &p));
	EXPECT_EQ((ssize_t)sizeof(got), recv(sfd, got, sizeof(got), MSG_WAITALL))
		TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ((ssize_t)sizeof(out), p.ret);
	EXPECT_EQ(0, memcmp(out, got, sizeof(got)));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

TEST_F(stream, msg_waitall_returns_short_at_eof)
{
	uint8_t out[3000], got[4000];
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	pattern_fill(out, 53, 0, sizeof(out));
	ASSERT_EQ(3000, write_all(cfd, out, sizeof(out)));
	ASSERT_EQ(0, shutdown(cfd, SHUT_WR));
	EXPECT_EQ(3000, recv(sfd, got, sizeof(got), MSG_WAITALL)) TH_LOG("%s", strerror(errno));
	EXPECT_EQ(0, memcmp(out, got, sizeof(out)));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

TEST_F(stream, msg_dontwait_without_data_is_eagain)
{
	char c;
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	errno = 0;
	EXPECT_EQ(-1, recv(sfd, &c, 1, MSG_DONTWAIT));
	EXPECT_EQ(EAGAIN, errno) TH_LOG("errno %s", strerror(errno));
	errno = 0;
	EXPECT_EQ(-1, recv(cfd, &c, 1, MSG_DONTWAIT));
	EXPECT_EQ(EAGAIN, errno) TH_LOG("errno %s", strerror(errno));
	/* The socket itself stays blocking: data then arrives to a plain recv. */
	EXPECT_EQ(0, fcntl(sfd, F_GETFL) & O_NONBLOCK);
	ASSERT_EQ(1, write_all(cfd, "q", 1));
	EXPECT_EQ(1, recv(sfd, &c, 1, 0));
	EXPECT_EQ('q', c);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

TEST_F(stream, readv_writev_several_iovecs)
{
	uint8_t out[1 + 10 + 100 + 1000 + 3000], got[sizeof(out)];
	struct iovec wv[5] = {
		{ out, 1 }, { out + 1, 10 }, { out + 11, 0 }, { out + 11, 100 },
		{ out + 111, 4000 },
	};
	/* Split the reading side differently. */
	size_t rsplit[4] = { 7, 500, 1, sizeof(got) - 508 };
	struct iovec rv[4];
	size_t done = 0, off = 0;
	int cfd, sfd, iov0 = 0;
	struct msghdr msg = { .msg_iov = wv, .msg_iovlen = 5 };
	uint8_t a[3], b[sizeof(out) - 3];
	struct iovec r2[2] = { { a, sizeof(a) }, { b, sizeof(b) } };
	struct msghdr rmsg = { .msg_iov = r2, .msg_iovlen = 2 };

	smc_pair(_metadata, variant, &cfd, &sfd);
	pattern_fill(out, 54, 0, sizeof(out));
	EXPECT_EQ((ssize_t)sizeof(out), writev(cfd, wv, 5)) TH_LOG("%s", strerror(errno));
	for (int i = 0; i < 4; i++) {
		rv[i] = (struct iovec){ got + off, rsplit[i] };
		off += rsplit[i];
	}
	/* readv may return early; continue from where it stopped. */
	while (done < sizeof(got)) {
		ssize_t n = readv(sfd, rv + iov0, 4 - iov0);

		ASSERT_LT(0, n) TH_LOG("readv: %zd %s", n, strerror(errno));
		done += n;
		while (n > 0) {
			size_t take = (size_t)n < rv[iov0].iov_len ? (size_t)n : rv[iov0].iov_len;

			rv[iov0].iov_base = (char *)rv[iov0].iov_base + take;
			rv[iov0].iov_len -= take;
			n -= take;
			if (!rv[iov0].iov_len)
				iov0++;
		}
	}
	EXPECT_EQ(sizeof(got), done);
	EXPECT_EQ(0, memcmp(out, got, sizeof(got))) TH_LOG("readv data differs");

	/* The other way, with sendmsg/recvmsg. */
	EXPECT_EQ((ssize_t)sizeof(out), sendmsg(sfd, &msg, MSG_NOSIGNAL));
	EXPECT_EQ((ssize_t)sizeof(out), recvmsg(cfd, &rmsg, MSG_WAITALL));
	EXPECT_EQ(0, memcmp(out, a, sizeof(a)));
	EXPECT_EQ(0, memcmp(out + sizeof(a), b, sizeof(b)));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

#define FILL_CHUNK (64 * 1024)
#define FILL_LIMIT (256ULL << 20)

/* Sends pattern @seed on non-blocking @fd until EAGAIN; returns the bytes sent. */
static uint64_t fill_until_eagain(struct __test_metadata *_metadata, int fd, uint64_t seed,
				  int *partial)
{
	uint8_t *buf = malloc(FILL_CHUNK);
	uint64_t sent = 0;

	ASSERT_NE(NULL, buf);
	*partial = 0;
	for (;;) {
		ssize_t n;

		pattern_fill(buf, seed, sent, FILL_CHUNK);
		n = send(fd, buf, FILL_CHUNK, MSG_NOSIGNAL);
		if (n < 0) {
			ASSERT_EQ(EAGAIN, errno) TH_LOG("send: %s", strerror(errno));
			break;
		}
		ASSERT_LT(0, n);
		if (n < FILL_CHUNK)
			(*partial)++;
		sent += n;
		ASSERT_GT(FILL_LIMIT, sent) TH_LOG("send never reported a full buffer");
	}
	free(buf);
	return sent;
}

TEST_F(stream, nonblocking_partial_writes_fill_then_drain)
{
	uint8_t *buf = malloc(FILL_CHUNK), *scratch = malloc(FILL_CHUNK);
	uint64_t sent, got = 0, more;
	int cfd, sfd, partial;
	ssize_t bad;
	int ev;

	ASSERT_NE(NULL, buf);
	ASSERT_NE(NULL, scratch);
	smc_pair(_metadata, variant, &cfd, &sfd);
	ASSERT_EQ(0, fcntl(cfd, F_SETFL, O_NONBLOCK));
	sent = fill_until_eagain(_metadata, cfd, 55, &partial);
	TH_LOG("%llu bytes until EAGAIN, %d partial sends", (unsigned long long)sent, partial);
	/* Full: not writable. */
	ev = wait_events(_metadata, cfd, EPOLLOUT, 0);
	EXPECT_FALSE(ev & EPOLLOUT) TH_LOG("events 0x%x with a full send buffer", ev);

	while (got < sent) {
		ssize_t n;

		ASSERT_TRUE(wait_events(_metadata, sfd, EPOLLIN, EVENT_WAIT_MS) & EPOLLIN)
			TH_LOG("stalled after %llu of %llu bytes", (unsigned long long)got,
			       (unsigned long long)sent);
		n = recv(sfd, buf, FILL_CHUNK, MSG_DONTWAIT);
		ASSERT_LT(0, n) TH_LOG("recv: %zd %s", n, strerror(errno));
		ASSERT_GE(sent, got + n) TH_LOG("more bytes arrived than were sent");
		bad = pattern_mismatch(buf, 55, got, n, scratch);
		ASSERT_EQ(-1, bad) TH_LOG("wrong byte at stream offset %llu",
					  (unsigned long long)(got + bad));
		got += n;
	}
	EXPECT_EQ(sent, got);
	errno = 0;
	EXPECT_EQ(-1, recv(sfd, buf, 1, MSG_DONTWAIT));
	EXPECT_EQ(EAGAIN, errno);
	/* Drained: writable again, and fills again. */
	ev = wait_events(_metadata, cfd, EPOLLOUT, EVENT_WAIT_MS);
	EXPECT_TRUE(ev & EPOLLOUT) TH_LOG("events 0x%x after draining", ev);
	more = fill_until_eagain(_metadata, cfd, 56, &partial);
	EXPECT_LT(0u, more);
	free(buf);
	free(scratch);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 8. timeouts                                                                                */

TEST_F(stream, so_rcvtimeo_expires_with_eagain)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = 400000 }, back = {};
	socklen_t len = sizeof(back);
	double t0, elapsed;
	char c;
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	ASSERT_EQ(0, setsockopt(sfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)))
		TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, getsockopt(sfd, SOL_SOCKET, SO_RCVTIMEO, &back, &len));
	EXPECT_EQ(0, back.tv_sec);
	EXPECT_LE(399000, back.tv_usec);
	EXPECT_GE(404000, back.tv_usec);
	t0 = now_ms();
	errno = 0;
	EXPECT_EQ(-1, recv(sfd, &c, 1, 0));
	elapsed = now_ms() - t0;
	EXPECT_EQ(EAGAIN, errno) TH_LOG("errno %s", strerror(errno));
	EXPECT_LE(400 - JIFFY_SLACK_MS, elapsed) TH_LOG("returned after %.1f ms", elapsed);
	EXPECT_GT(5000, elapsed) TH_LOG("returned after %.1f ms", elapsed);
	/* Data arriving before the timeout is returned. */
	ASSERT_EQ(1, write_all(cfd, "r", 1));
	EXPECT_EQ(1, recv(sfd, &c, 1, 0));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

TEST_F(stream, so_sndtimeo_accepted)
{
	struct timeval tv = { .tv_sec = 2, .tv_usec = 500000 }, back = {};
	socklen_t len = sizeof(back);
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	EXPECT_EQ(0, setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
		TH_LOG("%s", strerror(errno));
	EXPECT_EQ(0, getsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &back, &len));
	EXPECT_EQ(2, back.tv_sec);
	EXPECT_LE(499000, back.tv_usec);
	EXPECT_GE(504000, back.tv_usec);
	/* Sending still works. */
	EXPECT_EQ(1, write_all(cfd, "s", 1));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

TEST_F(stream, so_sndtimeo_expires_on_full_buffer)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = 300000 };
	uint8_t *buf = calloc(1, FILL_CHUNK);
	double t0 = 0, elapsed = 0;
	uint64_t sent = 0;
	int cfd, sfd;
	ssize_t n;

	ASSERT_NE(NULL, buf);
	smc_pair(_metadata, variant, &cfd, &sfd);
	ASSERT_EQ(0, setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)));
	/* Blocking sends with nobody reading: once full, a send times out with EAGAIN. */
	for (;;) {
		t0 = now_ms();
		n = send(cfd, buf, FILL_CHUNK, MSG_NOSIGNAL);
		elapsed = now_ms() - t0;
		if (n < 0)
			break;
		sent += n;
		ASSERT_GT(FILL_LIMIT, sent) TH_LOG("send never blocked");
	}
	EXPECT_EQ(EAGAIN, errno) TH_LOG("errno %s", strerror(errno));
	EXPECT_LE(300 - JIFFY_SLACK_MS, elapsed) TH_LOG("failed after %.1f ms", elapsed);
	EXPECT_GT(5000, elapsed) TH_LOG("failed after %.1f ms", elapsed);
	free(buf);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 9. addresses                                                                               */

TEST_F(stream, getsockname_getpeername_match_peer)
{
	struct sockaddr_storage c_local, c_peer, s_local, s_peer, l_local, want_b, want_a;
	socklen_t len, want_len = variant->family == AF_INET ? sizeof(struct sockaddr_in)
							      : sizeof(struct sockaddr_in6);
	struct sockaddr_storage acc_peer;
	socklen_t acc_len = sizeof(acc_peer);
	char s1[80], s2[80];
	uint16_t port;
	int lfd, cfd, sfd;

	lfd = listen_b(_metadata, variant, true, 0, 0, false, &port);
	len = sizeof(l_local);
	ASSERT_EQ(0, getsockname(lfd, (struct sockaddr *)&l_local, &len));
	EXPECT_EQ(want_len, len);
	make_sockaddr(variant, variant->addr_b, port, &want_b);
	EXPECT_TRUE(sockaddr_equal(&want_b, &l_local))
		TH_LOG("listener %s", sockaddr_str(&l_local, s1, sizeof(s1)));

	cfd = connect_a_to_b(_metadata, variant, true, port);
	ASSERT_TRUE(wait_events(_metadata, lfd, EPOLLIN, EVENT_WAIT_MS) & EPOLLIN);
	sfd = accept(lfd, (struct sockaddr *)&acc_peer, &acc_len);
	ASSERT_LE(0, sfd) TH_LOG("accept: %s", strerror(errno));
	EXPECT_EQ(want_len, acc_len);

	len = sizeof(c_local);
	ASSERT_EQ(0, getsockname(cfd, (struct sockaddr *)&c_local, &len));
	EXPECT_EQ(want_len, len);
	len = sizeof(c_peer);
	ASSERT_EQ(0, getpeername(cfd, (struct sockaddr *)&c_peer, &len));
	EXPECT_EQ(want_len, len);
	len = sizeof(s_local);
	ASSERT_EQ(0, getsockname(sfd, (struct sockaddr *)&s_local, &len));
	EXPECT_EQ(want_len, len);
	len = sizeof(s_peer);
	ASSERT_EQ(0, getpeername(sfd, (struct sockaddr *)&s_peer, &len));
	EXPECT_EQ(want_len, len);

	/* The client is on addr_a with some ephemeral port; the server on addr_b:port. */
	make_sockaddr(variant, variant->addr_a, sockaddr_port(&c_local), &want_a);
	EXPECT_NE(0, sockaddr_port(&c_local));
	EXPECT_TRUE(sockaddr_equal(&want_a, &c_local))
		TH_LOG("client local %s", sockaddr_str(&c_local, s1, sizeof(s1)));
	EXPECT_TRUE(sockaddr_equal(&want_b, &c_peer))
		TH_LOG("client peer %s", sockaddr_str(&c_peer, s1, sizeof(s1)));
	EXPECT_TRUE(sockaddr_equal(&c_local, &s_peer))
		TH_LOG("client local %s, server peer %s", sockaddr_str(&c_local, s1, sizeof(s1)),
		       sockaddr_str(&s_peer, s2, sizeof(s2)));
	EXPECT_TRUE(sockaddr_equal(&c_peer, &s_local))
		TH_LOG("client peer %s, server local %s", sockaddr_str(&c_peer, s1, sizeof(s1)),
		       sockaddr_str(&s_local, s2, sizeof(s2)));
	EXPECT_TRUE(sockaddr_equal(&s_peer, &acc_peer))
		TH_LOG("accept() gave %s", sockaddr_str(&acc_peer, s1, sizeof(s1)));

	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, close(lfd));
}

TEST_F(stream, getpeername_unconnected_is_enotconn)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int fd = client_a(_metadata, variant, true, 0);

	errno = 0;
	EXPECT_EQ(-1, getpeername(fd, (struct sockaddr *)&ss, &len));
	EXPECT_EQ(ENOTCONN, errno) TH_LOG("errno %s", strerror(errno));
	EXPECT_EQ(0, close(fd));
}

/* ---------------------------------------------------------------------------------------- */
/* 10. abort                                                                                  */

static void abort_close(struct __test_metadata *_metadata, int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	ASSERT_EQ(0, setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)))
		TH_LOG("SO_LINGER: %s", strerror(errno));
	EXPECT_EQ(0, close(fd));
}

TEST_F(stream, linger0_close_resets_peer)
{
	int ev;
	char c;
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	abort_close(_metadata, cfd);
	ev = wait_events(_metadata, sfd, EPOLLIN | EPOLLRDHUP, EVENT_WAIT_MS);
	EXPECT_TRUE((ev & (EPOLLERR | EPOLLHUP)) == (EPOLLERR | EPOLLHUP) || (ev & EPOLLIN))
		TH_LOG("events 0x%x", ev);
	errno = 0;
	EXPECT_EQ(-1, recv(sfd, &c, 1, 0));
	EXPECT_EQ(ECONNRESET, errno) TH_LOG("errno %s", strerror(errno));
	EXPECT_EQ(0, close(sfd));
}

/*
 * After the peer reset the connection, as TCP: shutdown() fails with ENOTCONN and leaves the
 * pending error, which the next recv() reports once; then end of file. Plain TCP first, so the
 * test states the kernel's behaviour before holding rsmc to it.
 */
TEST_F(stream, shutdown_after_peer_reset_is_enotconn)
{
	for (int smc = 0; smc <= 1; smc++) {
		const char *kind = smc ? "AF_SMC" : "TCP";
		int cfd, sfd, ev;
		char c;

		stream_pair(_metadata, variant, smc, &cfd, &sfd);
		abort_close(_metadata, cfd);
		ev = wait_events(_metadata, sfd, EPOLLERR, EVENT_WAIT_MS);
		ASSERT_TRUE(ev & EPOLLERR) TH_LOG("%s: no reset, events 0x%x", kind, ev);
		errno = 0;
		EXPECT_EQ(-1, shutdown(sfd, SHUT_WR));
		EXPECT_EQ(ENOTCONN, errno) TH_LOG("%s: shutdown: %s", kind, strerror(errno));
		errno = 0;
		EXPECT_EQ(-1, recv(sfd, &c, 1, 0));
		EXPECT_EQ(ECONNRESET, errno) TH_LOG("%s: recv: %s", kind, strerror(errno));
		EXPECT_EQ(0, recv(sfd, &c, 1, 0)) TH_LOG("%s: recv: %s", kind, strerror(errno));
		EXPECT_EQ(0, close(sfd));
	}
}

struct blocked_read {
	int fd;
	ssize_t ret;
	int err;
};

static void *read_one(void *arg)
{
	struct blocked_read *r = arg;
	char c;

	r->ret = recv(r->fd, &c, 1, 0);
	r->err = errno;
	return NULL;
}

TEST_F(stream, linger0_close_fails_pending_read)
{
	struct blocked_read r = { .ret = -2 };
	struct timespec deadline;
	pthread_t t;
	int cfd, sfd;

	smc_pair(_metadata, variant, &cfd, &sfd);
	r.fd = sfd;
	ASSERT_EQ(0, pthread_create(&t, NULL, read_one, &r));
	msleep(300);
	abort_close(_metadata, cfd);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += EVENT_WAIT_MS / 1000;
	ASSERT_EQ(0, pthread_timedjoin_np(t, NULL, &deadline)) TH_LOG("read still blocked");
	EXPECT_EQ(-1, r.ret);
	EXPECT_EQ(ECONNRESET, r.err) TH_LOG("errno %s", strerror(r.err));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 11. interop with plain TCP                                                                 */

#define INTEROP_BYTES (4u << 20)

TEST_F_TIMEOUT(stream, smc_client_to_tcp_server, 90)
{
	uint16_t port;
	int lfd = listen_b(_metadata, variant, false, 0, 0, false, &port);
	int cfd = connect_a_to_b(_metadata, variant, true, port);
	int sfd = accept_within(_metadata, lfd, 0);

	duplex(_metadata, cfd, sfd, INTEROP_BYTES, INTEROP_BYTES + 12345, 11);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, close(lfd));
}

TEST_F_TIMEOUT(stream, tcp_client_to_smc_server, 90)
{
	uint16_t port;
	int lfd = listen_b(_metadata, variant, true, 0, 0, false, &port);
	int cfd = connect_a_to_b(_metadata, variant, false, port);
	int sfd = accept_within(_metadata, lfd, 0);

	duplex(_metadata, cfd, sfd, INTEROP_BYTES + 777, INTEROP_BYTES, 13);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, close(lfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 12. options                                                                                */

#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif

/*
 * An accepted socket starts with its listener's socket options, as a TCP child does (a copy
 * of the listener, sk_clone_lock): timeouts, linger, keepalive, priority, mark, buffer sizes,
 * low-water mark, busy polling, zerocopy and address reuse. (SO_BUSY_POLL_BUDGET is inherited
 * too, but cannot be read back.)
 */
TEST_F(stream, accepted_socket_inherits_listener_options)
{
	static const struct {
		int name, val;
	} ints[] = {
		{ SO_KEEPALIVE, 1 }, { SO_PRIORITY, 5 }, { SO_MARK, 42 }, { SO_RCVBUF, 65536 },
		{ SO_SNDBUF, 131072 }, { SO_RCVLOWAT, 5 }, { SO_BUSY_POLL, 77 },
		{ SO_PREFER_BUSY_POLL, 1 }, { SO_ZEROCOPY, 1 }, { SO_REUSEADDR, 1 },
		{ SO_REUSEPORT, 1 },
	};
	struct timeval rcvtimeo = { .tv_sec = 7, .tv_usec = 250000 }, sndtimeo = { .tv_sec = 3 };
	struct linger linger = { .l_onoff = 1, .l_linger = 9 };
	int lfd, cfd, sfd, want, got;
	struct timeval tv;
	struct linger l;
	socklen_t len;
	uint16_t port;

	lfd = listen_b(_metadata, variant, true, 0, 0, false, &port);
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		ASSERT_EQ(0, set_int(lfd, SOL_SOCKET, ints[i].name, ints[i].val))
			TH_LOG("option %d: %s", ints[i].name, strerror(errno));
	}
	ASSERT_EQ(0, setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &rcvtimeo, sizeof(rcvtimeo)));
	ASSERT_EQ(0, setsockopt(lfd, SOL_SOCKET, SO_SNDTIMEO, &sndtimeo, sizeof(sndtimeo)));
	ASSERT_EQ(0, setsockopt(lfd, SOL_SOCKET, SO_LINGER, &linger, sizeof(linger)));
	cfd = connect_a_to_b(_metadata, variant, true, port);
	sfd = accept_within(_metadata, lfd, 0);
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		/* As the listener reports it (the buffer sizes come back doubled). */
		ASSERT_EQ(0, get_int(lfd, SOL_SOCKET, ints[i].name, &want))
			TH_LOG("option %d: %s", ints[i].name, strerror(errno));
		ASSERT_EQ(0, get_int(sfd, SOL_SOCKET, ints[i].name, &got))
			TH_LOG("option %d: %s", ints[i].name, strerror(errno));
		EXPECT_EQ(want, got) TH_LOG("option %d", ints[i].name);
	}
	/* Timeouts come back rounded to jiffies. */
	len = sizeof(tv);
	ASSERT_EQ(0, getsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &rcvtimeo, &len));
	ASSERT_EQ(0, getsockopt(sfd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len));
	EXPECT_EQ(rcvtimeo.tv_sec, tv.tv_sec);
	EXPECT_EQ(rcvtimeo.tv_usec, tv.tv_usec);
	ASSERT_EQ(0, getsockopt(lfd, SOL_SOCKET, SO_SNDTIMEO, &sndtimeo, &len));
	ASSERT_EQ(0, getsockopt(sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len));
	EXPECT_EQ(sndtimeo.tv_sec, tv.tv_sec);
	EXPECT_EQ(sndtimeo.tv_usec, tv.tv_usec);
	len = sizeof(l);
	ASSERT_EQ(0, getsockopt(sfd, SOL_SOCKET, SO_LINGER, &l, &len));
	EXPECT_EQ(1, l.l_onoff);
	EXPECT_EQ(9, l.l_linger);
	EXPECT_EQ(0, close(lfd));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/*
 * TCP_ULP is refused, as stock SMC refuses it: an upper-layer protocol (kTLS, say) would take
 * over the internal TCP socket. Before connecting, on a connection over RDMA and on one that
 * fell back to TCP.
 */
TEST_F(stream, tcp_ulp_is_eopnotsupp)
{
	uint16_t port;
	int lfd = listen_b(_metadata, variant, false, 0, 0, false, &port);
	int fds[3], cfd, sfd;

	fds[0] = client_a(_metadata, variant, true, 0);
	smc_pair(_metadata, variant, &cfd, &sfd);
	fds[1] = cfd;
	fds[2] = connect_a_to_b(_metadata, variant, true, port);
	for (int i = 0; i < 3; i++) {
		errno = 0;
		EXPECT_EQ(-1, setsockopt(fds[i], SOL_TCP, TCP_ULP, "tls", 3));
		EXPECT_EQ(EOPNOTSUPP, errno) TH_LOG("socket %d: %s", i, strerror(errno));
		EXPECT_EQ(0, close(fds[i]));
	}
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, close(lfd));
}

TEST_F(stream, tcp_nodelay_roundtrip)
{
	int cfd, sfd, fd, val = -1;

	smc_pair(_metadata, variant, &cfd, &sfd);
	ASSERT_EQ(0, get_int(cfd, IPPROTO_TCP, TCP_NODELAY, &val)) TH_LOG("%s", strerror(errno));
	EXPECT_EQ(0, val);
	ASSERT_EQ(0, set_int(cfd, IPPROTO_TCP, TCP_NODELAY, 1)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, get_int(cfd, IPPROTO_TCP, TCP_NODELAY, &val)) TH_LOG("%s", strerror(errno));
	EXPECT_NE(0, val);
	ASSERT_EQ(0, set_int(cfd, IPPROTO_TCP, TCP_NODELAY, 0));
	ASSERT_EQ(0, get_int(cfd, IPPROTO_TCP, TCP_NODELAY, &val));
	EXPECT_EQ(0, val);
	/* Also on an unconnected socket. */
	fd = client_a(_metadata, variant, true, 0);
	ASSERT_EQ(0, set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1));
	ASSERT_EQ(0, get_int(fd, IPPROTO_TCP, TCP_NODELAY, &val));
	EXPECT_NE(0, val);
	EXPECT_EQ(0, close(fd));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

TEST_F(stream, tcp_maxseg_readable)
{
	int cfd, sfd, mss = -1;

	smc_pair(_metadata, variant, &cfd, &sfd);
	ASSERT_EQ(0, get_int(cfd, IPPROTO_TCP, TCP_MAXSEG, &mss)) TH_LOG("%s", strerror(errno));
	/* veth MTU 9000: at most 8960 (IPv4) / 8940 (IPv6) bytes of payload. */
	EXPECT_LT(0, mss);
	EXPECT_GE(8960, mss);
	ASSERT_EQ(0, get_int(sfd, IPPROTO_TCP, TCP_MAXSEG, &mss)) TH_LOG("%s", strerror(errno));
	EXPECT_LT(0, mss);
	EXPECT_GE(8960, mss);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

TEST_F(stream, tcp_keepalive_params_roundtrip)
{
	int cfd, sfd, val = -1;

	smc_pair(_metadata, variant, &cfd, &sfd);
	ASSERT_EQ(0, set_int(cfd, IPPROTO_TCP, TCP_KEEPIDLE, 77)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, get_int(cfd, IPPROTO_TCP, TCP_KEEPIDLE, &val));
	EXPECT_EQ(77, val);
	ASSERT_EQ(0, set_int(cfd, IPPROTO_TCP, TCP_KEEPINTVL, 9)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, get_int(cfd, IPPROTO_TCP, TCP_KEEPINTVL, &val));
	EXPECT_EQ(9, val);
	/* Out of range, as TCP rejects it. */
	errno = 0;
	EXPECT_EQ(-1, set_int(cfd, IPPROTO_TCP, TCP_KEEPIDLE, 0));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

TEST_F(stream, so_keepalive_roundtrip)
{
	int cfd, sfd, val = -1;

	smc_pair(_metadata, variant, &cfd, &sfd);
	ASSERT_EQ(0, get_int(cfd, SOL_SOCKET, SO_KEEPALIVE, &val)) TH_LOG("%s", strerror(errno));
	EXPECT_EQ(0, val);
	ASSERT_EQ(0, set_int(cfd, SOL_SOCKET, SO_KEEPALIVE, 1)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, get_int(cfd, SOL_SOCKET, SO_KEEPALIVE, &val)) TH_LOG("%s", strerror(errno));
	EXPECT_EQ(1, val);
	ASSERT_EQ(0, set_int(cfd, SOL_SOCKET, SO_KEEPALIVE, 0));
	ASSERT_EQ(0, get_int(cfd, SOL_SOCKET, SO_KEEPALIVE, &val));
	EXPECT_EQ(0, val);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/*
 * A connection on @port whose server side closes first (so its end lingers in TIME_WAIT), then
 * the listener closes too. @reuseaddr: set on the listener.
 */
static void close_connection_on_port(struct __test_metadata *_metadata, const variant_t *v,
				     uint16_t port, bool reuseaddr, uint16_t *bound)
{
	int lfd = listen_b(_metadata, v, true, port, 0, reuseaddr, bound);
	int cfd = connect_a_to_b(_metadata, v, true, *bound);
	int sfd = accept_within(_metadata, lfd, 0);
	char c;

	ASSERT_EQ(1, write_all(cfd, "a", 1));
	ASSERT_EQ(1, read_all(sfd, &c, 1));
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, recv(cfd, &c, 1, 0));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(lfd));
	/* Let the client's FIN reach the server side. */
	msleep(200);
}

TEST_F(stream, so_reuseaddr_rebinds_listener_port)
{
	struct sockaddr_storage ss;
	uint16_t port;
	socklen_t len;
	int lfd, cfd, sfd, val = -1;

	close_connection_on_port(_metadata, variant, 0, true, &port);
	lfd = listen_b(_metadata, variant, true, port, 0, true, NULL);
	ASSERT_EQ(0, get_int(lfd, SOL_SOCKET, SO_REUSEADDR, &val));
	EXPECT_EQ(1, val);
	len = sizeof(ss);
	ASSERT_EQ(0, getsockname(lfd, (struct sockaddr *)&ss, &len));
	EXPECT_EQ(port, sockaddr_port(&ss));
	/* And it serves. */
	cfd = connect_a_to_b(_metadata, variant, true, port);
	sfd = accept_within(_metadata, lfd, 0);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, close(lfd));
}

TEST_F(stream, rebind_without_reuseaddr_is_eaddrinuse)
{
	struct sockaddr_storage ss;
	socklen_t len;
	uint16_t port;
	int fd;

	close_connection_on_port(_metadata, variant, 0, false, &port);
	ASSERT_EQ(0, rsmc_enter_netns(NS_SERVER));
	fd = stream_socket(variant, true, 0);
	ASSERT_LE(0, fd);
	len = make_sockaddr(variant, variant->addr_b, port, &ss);
	errno = 0;
	EXPECT_EQ(-1, bind(fd, (struct sockaddr *)&ss, len));
	EXPECT_EQ(EADDRINUSE, errno) TH_LOG("errno %s", strerror(errno));
	EXPECT_EQ(0, close(fd));
}

/* ---------------------------------------------------------------------------------------- */
/* 13. graceful close                                                                         */

#define DRAIN_BYTES (8u << 20)

struct late_reader {
	struct xfer x;
	int delay_ms;
};

static void *read_late(void *arg)
{
	struct late_reader *r = arg;

	msleep(r->delay_ms);
	return xfer_recv(&r->x);
}

TEST_F_TIMEOUT(stream, close_drains_unsent_data, 90)
{
	struct late_reader r = {};
	uint8_t *buf = malloc(DRAIN_BYTES);
	pthread_t t;
	int cfd, sfd;

	ASSERT_NE(NULL, buf);
	smc_pair(_metadata, variant, &cfd, &sfd);
	r.x = (struct xfer){ .fd = sfd, .seed = 61, .total = DRAIN_BYTES, .rng = 17 };
	r.delay_ms = 500;
	ASSERT_EQ(0, pthread_create(&t, NULL, read_late, &r));
	pattern_fill(buf, 61, 0, DRAIN_BYTES);
	EXPECT_EQ((ssize_t)DRAIN_BYTES, write_all(cfd, buf, DRAIN_BYTES))
		TH_LOG("%s", strerror(errno));
	/* Close at once: what is still queued must arrive all the same. */
	EXPECT_EQ(0, close(cfd));
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(0, r.x.err) TH_LOG("%s: %s", r.x.failed, strerror(r.x.err));
	EXPECT_EQ(-1, r.x.mismatch) TH_LOG("first wrong byte at %lld", (long long)r.x.mismatch);
	EXPECT_EQ(DRAIN_BYTES, r.x.done);
	EXPECT_TRUE(r.x.eof);
	free(buf);
	EXPECT_EQ(0, close(sfd));
}

TEST_F_TIMEOUT(stream, close_with_full_send_buffer_delivers_all, 90)
{
	uint8_t *buf = malloc(FILL_CHUNK), *scratch = malloc(FILL_CHUNK);
	uint64_t sent, got = 0;
	int cfd, sfd, partial;

	ASSERT_NE(NULL, buf);
	ASSERT_NE(NULL, scratch);
	smc_pair(_metadata, variant, &cfd, &sfd);
	ASSERT_EQ(0, fcntl(cfd, F_SETFL, O_NONBLOCK));
	sent = fill_until_eagain(_metadata, cfd, 62, &partial);
	/* Nothing has been read yet when the sender closes. */
	EXPECT_EQ(0, close(cfd));
	for (;;) {
		ssize_t n = recv(sfd, buf, FILL_CHUNK, 0), bad;

		ASSERT_LE(0, n) TH_LOG("recv after %llu bytes: %s", (unsigned long long)got,
				       strerror(errno));
		if (n == 0)
			break;
		ASSERT_GE(sent, got + n) TH_LOG("more bytes arrived than were sent");
		bad = pattern_mismatch(buf, 62, got, n, scratch);
		ASSERT_EQ(-1, bad) TH_LOG("wrong byte at stream offset %llu",
					  (unsigned long long)(got + bad));
		got += n;
	}
	EXPECT_EQ(sent, got);
	free(buf);
	free(scratch);
	EXPECT_EQ(0, close(sfd));
}

TEST_HARNESS_MAIN
