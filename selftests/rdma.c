// SPDX-License-Identifier: GPL-2.0
/*
 * AF_SMC over RDMA. Between rsmc_a and rsmc_b, which both have an RDMA device, connections move
 * their data over RDMA: getsockopt(SOL_SMC, RSMC_INFO) says so on both ends, and its byte
 * counters show no payload on the internal TCP connection. Streams of up to 1 GiB each way
 * arrive intact (with plain TCP over the same veth as a throughput reference), 64 connections
 * at once, half-close, non-blocking connect and abort keep TCP semantics. A connection falls
 * back to TCP, with the reason in RSMC_INFO, when the peer is plain TCP, when no RDMA device
 * serves the route, and after the RDMA device goes away mid-transfer (the last test: it deletes
 * rxe_b and adds it back). Clients live in rsmc_a, servers in rsmc_b; every test runs over IPv4
 * and IPv6.
 */
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>

#include "kselftest_harness.h"
#include "rsmc_selftest.h"
#include "rsmc_pair.h"

/* link_linger_ms as the test found it: tests change it, and a failed one must not leave it. */
FIXTURE(rdma) {
	long linger_ms;
};

FIXTURE_VARIANT(rdma) {
	const struct topo *topo;
};

FIXTURE_VARIANT_ADD(rdma, ipv4) { .topo = &topo4 };
FIXTURE_VARIANT_ADD(rdma, ipv6) { .topo = &topo6 };

FIXTURE_SETUP(rdma)
{
	signal(SIGPIPE, SIG_IGN);
	ASSERT_EQ(0, rsmc_read_long(RSMC_LINK_LINGER_FILE, &self->linger_ms));
}

FIXTURE_TEARDOWN(rdma)
{
	EXPECT_EQ(0, rsmc_write_long(RSMC_LINK_LINGER_FILE, self->linger_ms));
}

/* ---------------------------------------------------------------------------------------- */
/* Deterministic data: byte i of stream `seed` is byte i % 8 (little-endian) of the word       */
/* number i / 8, a keyed bijective hash of i / 8. Every byte is checked at its stream offset. */

static uint64_t pattern_key(uint64_t seed)
{
	return (seed + 1) * 0xd1b54a32d192ed03ULL;
}

static inline uint64_t pattern_word(uint64_t key, uint64_t idx)
{
	uint64_t x = (idx ^ key) * 0x9e3779b97f4a7c15ULL;

	return x ^ (x >> 29);
}

static inline uint8_t pattern_byte(uint64_t key, uint64_t off)
{
	return pattern_word(key, off >> 3) >> (8 * (off & 7));
}

static void pattern_fill(uint8_t *buf, uint64_t seed, uint64_t off, size_t len)
{
	uint64_t key = pattern_key(seed), w;
	size_t n = 0;

	for (; n < len && ((off + n) & 7); n++)
		buf[n] = pattern_byte(key, off + n);
	for (; len - n >= 8; n += 8) {
		w = htole64(pattern_word(key, (off + n) >> 3));
		memcpy(buf + n, &w, 8);
	}
	for (; n < len; n++)
		buf[n] = pattern_byte(key, off + n);
}

/* Index of the first byte of @buf that differs from stream @seed at @off, or -1. */
static ssize_t pattern_mismatch(const uint8_t *buf, uint64_t seed, uint64_t off, size_t len)
{
	uint64_t key = pattern_key(seed), w;
	size_t n = 0;

	for (; n < len && ((off + n) & 7); n++)
		if (buf[n] != pattern_byte(key, off + n))
			return n;
	for (; len - n >= 8; n += 8) {
		memcpy(&w, buf + n, 8);
		if (w != htole64(pattern_word(key, (off + n) >> 3)))
			break;	/* the byte loop finds which byte */
	}
	for (; n < len; n++)
		if (buf[n] != pattern_byte(key, off + n))
			return n;
	return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Sockets and addresses.                                                                    */

/* write_all() and read_all() on a non-blocking socket, waiting with epoll in between. */
static ssize_t io_all_nb(struct __test_metadata *_metadata, int fd, void *buf, size_t len,
			 bool wr)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = wr ? send(fd, (char *)buf + done, len - done, MSG_NOSIGNAL)
			       : recv(fd, (char *)buf + done, len - done, 0);

		if (n > 0) {
			done += n;
			continue;
		}
		if (n == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -1;
		if (!wait_events(_metadata, fd, wr ? EPOLLOUT : EPOLLIN, EVENT_WAIT_MS)) {
			errno = ETIMEDOUT;
			return -1;
		}
	}
	return done;
}

/* ---------------------------------------------------------------------------------------- */
/* RSMC_INFO.                                                                                 */

static const char *mode_name(uint32_t mode)
{
	switch (mode) {
	case RSMC_MODE_NONE: return "NONE";
	case RSMC_MODE_RDMA: return "RDMA";
	case RSMC_MODE_TCP: return "TCP";
	}
	return "unknown";
}

static const char *decl_name(uint32_t code)
{
	switch (code) {
	case 0: return "none";
	case RSMC_DECL_MEM: return "MEM";
	case RSMC_DECL_TIMEOUT_CL: return "TIMEOUT_CL";
	case RSMC_DECL_CNFERR: return "CNFERR";
	case RSMC_DECL_PEERNOSMC: return "PEERNOSMC";
	case RSMC_DECL_NOSMCRDEV: return "NOSMCRDEV";
	case RSMC_DECL_VERSMISMAT: return "VERSMISMAT";
	case RSMC_DECL_PEERDECL: return "PEERDECL";
	case RSMC_DECL_SYNCERR: return "SYNCERR";
	}
	return "unknown";
}

/* getsockopt(SOL_SMC, RSMC_INFO) of the whole struct; returns whether it worked. */
static bool get_info(struct __test_metadata *_metadata, const char *who, int fd,
		     struct rsmc_info *info)
{
	socklen_t len = sizeof(*info);
	int ret;

	memset(info, 0xa5, sizeof(*info));
	ret = getsockopt(fd, SOL_SMC, RSMC_INFO, info, &len);
	EXPECT_EQ(0, ret) TH_LOG("%s: getsockopt(SOL_SMC, RSMC_INFO): %s", who, strerror(errno));
	if (ret)
		return false;
	EXPECT_EQ(sizeof(*info), len) TH_LOG("%s: RSMC_INFO length", who);
	return len == sizeof(*info);
}

/*
 * Checks mode, fallback_reason and peer_decline_code of @fd (and that reserved is 0); returns
 * whether they are as wanted. The info goes to *@out if not NULL.
 */
static bool expect_mode(struct __test_metadata *_metadata, const char *who, int fd,
			uint32_t mode, uint32_t reason, uint32_t peer, struct rsmc_info *out)
{
	struct rsmc_info i;
	bool ok;

	if (!get_info(_metadata, who, fd, &i))
		return false;
	ok = i.mode == mode && i.fallback_reason == reason && i.peer_decline_code == peer;
	EXPECT_TRUE(ok) TH_LOG("%s: mode %s, fallback_reason %s (0x%08x), peer_decline_code %s "
			       "(0x%08x); want %s, %s, %s", who, mode_name(i.mode),
			       decl_name(i.fallback_reason), i.fallback_reason,
			       decl_name(i.peer_decline_code), i.peer_decline_code,
			       mode_name(mode), decl_name(reason), decl_name(peer));
	EXPECT_EQ(0u, i.reserved) TH_LOG("%s: reserved", who);
	if (out)
		*out = i;
	return ok;
}

static void expect_bytes(struct __test_metadata *_metadata, const char *who,
			 const struct rsmc_info *i, uint64_t rdma_tx, uint64_t rdma_rx,
			 uint64_t tcp_tx, uint64_t tcp_rx)
{
	EXPECT_TRUE(i->rdma_tx_bytes == rdma_tx && i->rdma_rx_bytes == rdma_rx &&
		    i->tcp_tx_bytes == tcp_tx && i->tcp_rx_bytes == tcp_rx)
		TH_LOG("%s: rdma tx %llu rx %llu, tcp tx %llu rx %llu; want rdma tx %llu rx %llu, "
		       "tcp tx %llu rx %llu", who, (unsigned long long)i->rdma_tx_bytes,
		       (unsigned long long)i->rdma_rx_bytes, (unsigned long long)i->tcp_tx_bytes,
		       (unsigned long long)i->tcp_rx_bytes, (unsigned long long)rdma_tx,
		       (unsigned long long)rdma_rx, (unsigned long long)tcp_tx,
		       (unsigned long long)tcp_rx);
}

/* Mode and byte counters together; the counters only if the mode could be read. */
static void expect_info(struct __test_metadata *_metadata, const char *who, int fd,
			uint32_t mode, uint32_t reason, uint32_t peer, uint64_t rdma_tx,
			uint64_t rdma_rx, uint64_t tcp_tx, uint64_t tcp_rx)
{
	struct rsmc_info i;

	memset(&i, 0, sizeof(i));
	expect_mode(_metadata, who, fd, mode, reason, peer, &i);
	if (i.mode == mode)
		expect_bytes(_metadata, who, &i, rdma_tx, rdma_rx, tcp_tx, tcp_rx);
}

/* Both ends of a connection move their data over RDMA: @c_tx bytes one way, @s_tx the other. */
static void expect_rdma_pair(struct __test_metadata *_metadata, int cfd, int sfd,
			     uint64_t c_tx, uint64_t s_tx)
{
	expect_info(_metadata, "client", cfd, RSMC_MODE_RDMA, 0, 0, c_tx, s_tx, 0, 0);
	expect_info(_metadata, "server", sfd, RSMC_MODE_RDMA, 0, 0, s_tx, c_tx, 0, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Threads moving a pattern stream through a socket.                                          */

struct xfer {
	int fd;
	uint64_t seed;
	uint64_t total;		/* bytes to send / expected before EOF */
	uint32_t rng;		/* chunk size generator state; 0: always XFER_MAX_CHUNK */
	size_t chunk;		/* if not 0, every chunk's size (overrides rng) */
	bool shut_wr;		/* sender: shutdown(SHUT_WR) once done */
	/* results */
	uint64_t done;		/* bytes sent / received (read by others while running) */
	double end_ms;		/* now_ms() when the thread ended */
	int err;		/* errno of a failed call, 0 if none */
	const char *failed;	/* which call failed */
	int64_t mismatch;	/* receiver: stream offset of the first wrong byte, or -1 */
	bool eof;		/* receiver: saw EOF */
};

#define XFER_MAX_CHUNK (256 * 1024)

static size_t xfer_chunk(struct xfer *x)
{
	if (x->chunk)
		return x->chunk;
	return x->rng ? random_chunk(&x->rng, XFER_MAX_CHUNK) : XFER_MAX_CHUNK;
}

static void *xfer_send(void *arg)
{
	struct xfer *x = arg;
	uint8_t *buf = malloc(XFER_MAX_CHUNK);

	if (!buf) {
		x->err = ENOMEM, x->failed = "malloc";
		goto out;
	}
	while (x->done < x->total) {
		size_t chunk = xfer_chunk(x);
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
		__atomic_store_n(&x->done, x->done + n, __ATOMIC_RELAXED);
	}
	if (!x->err && x->shut_wr && shutdown(x->fd, SHUT_WR))
		x->err = errno, x->failed = "shutdown";
out:
	free(buf);
	x->end_ms = now_ms();
	return NULL;
}

static void *xfer_recv(void *arg)
{
	struct xfer *x = arg;
	uint8_t *buf = malloc(XFER_MAX_CHUNK);

	x->mismatch = -1;
	if (!buf) {
		x->err = ENOMEM, x->failed = "malloc";
		goto out;
	}
	for (;;) {
		ssize_t n = recv(x->fd, buf, xfer_chunk(x), 0), bad;

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
			bad = pattern_mismatch(buf, x->seed, x->done, n);
			if (bad >= 0 && (x->mismatch < 0 || (int64_t)(x->done + bad) < x->mismatch))
				x->mismatch = x->done + bad;
		}
		__atomic_store_n(&x->done, x->done + n, __ATOMIC_RELAXED);
	}
out:
	free(buf);
	x->end_ms = now_ms();
	return NULL;
}

static uint64_t xfer_done(const struct xfer *x)
{
	return __atomic_load_n(&x->done, __ATOMIC_RELAXED);
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
 * x[0] sends @n12 bytes on fd1, x[1] receives them on fd2; x[2] sends @n21 bytes on fd2, x[3]
 * receives them on fd1. Senders shut down their write side when done, receivers read to EOF.
 * @random_chunks: send and receive in chunks of random size, else in XFER_MAX_CHUNK.
 */
static void duplex_init(struct xfer x[4], int fd1, int fd2, uint64_t n12, uint64_t n21,
			uint32_t seed, bool random_chunks)
{
	uint32_t r = random_chunks ? seed * 4 : 0;

	x[0] = (struct xfer){ .fd = fd1, .seed = seed, .total = n12, .rng = r ? r + 1 : 0,
			      .shut_wr = true };
	x[1] = (struct xfer){ .fd = fd2, .seed = seed, .total = n12, .rng = r ? r + 2 : 0 };
	x[2] = (struct xfer){ .fd = fd2, .seed = seed + 1, .total = n21, .rng = r ? r + 3 : 0,
			      .shut_wr = true };
	x[3] = (struct xfer){ .fd = fd1, .seed = seed + 1, .total = n21, .rng = r ? r + 4 : 0 };
}

static void duplex_start(struct __test_metadata *_metadata, struct xfer x[4], pthread_t t[4])
{
	for (int i = 0; i < 4; i++) {
		ASSERT_EQ(0, pthread_create(&t[i], NULL, i % 2 ? xfer_recv : xfer_send, &x[i]));
	}
}

/* Sends @n12 bytes fd1 -> fd2 and @n21 bytes fd2 -> fd1 at the same time; checks every byte. */
static void duplex(struct __test_metadata *_metadata, int fd1, int fd2, uint64_t n12,
		   uint64_t n21, uint32_t seed, bool random_chunks, struct xfer x[4])
{
	pthread_t t[4];

	duplex_init(x, fd1, fd2, n12, n21, seed, random_chunks);
	duplex_start(_metadata, x, t);
	for (int i = 0; i < 4; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
	}
	check_xfer(_metadata, "client->server", &x[0], &x[1]);
	check_xfer(_metadata, "server->client", &x[2], &x[3]);
}

/* ---------------------------------------------------------------------------------------- */
/* RSMC_INFO before any connection                                                            */

TEST_F(rdma, info_unconnected)
{
	int fd = socket_in(_metadata, variant->topo, NS_CLIENT, true, 0);

	expect_info(_metadata, "unconnected socket", fd, RSMC_MODE_NONE, 0, 0, 0, 0, 0, 0);
	EXPECT_EQ(0, close(fd));
}

/* ---------------------------------------------------------------------------------------- */
/* echo, and the getsockopt/setsockopt semantics of RSMC_INFO                                 */

static bool all_bytes(const uint8_t *p, uint8_t val, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != val)
			return false;
	return true;
}

TEST_F(rdma, echo)
{
	static const size_t sizes[] = { 1, 2, 17, 100, 1000, 1460, 4096, 9000, 16384 };
	uint8_t out[16384], back[16384], got[16384], raw[sizeof(struct rsmc_info) + 16];
	struct rsmc_info full;
	uint64_t total = 0;
	socklen_t len;
	int cfd, sfd;

	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];

		pattern_fill(out, 100 + i, 0, n);
		ASSERT_EQ((ssize_t)n, write_all(cfd, out, n)) TH_LOG("%s", strerror(errno));
		ASSERT_EQ((ssize_t)n, read_all(sfd, got, n)) TH_LOG("%s", strerror(errno));
		EXPECT_EQ(0, memcmp(out, got, n)) TH_LOG("server got wrong bytes, message %zu", i);
		ASSERT_EQ((ssize_t)n, write_all(sfd, got, n)) TH_LOG("%s", strerror(errno));
		ASSERT_EQ((ssize_t)n, read_all(cfd, back, n)) TH_LOG("%s", strerror(errno));
		EXPECT_EQ(0, memcmp(out, back, n)) TH_LOG("echo differs, message %zu", i);
		total += n;
	}
	/* Everything sent has been read: the counters are final. */
	expect_rdma_pair(_metadata, cfd, sfd, total, total);

	if (get_info(_metadata, "client", cfd, &full)) {
		/* A short buffer gets a prefix of the struct, and len says how much. */
		memset(raw, 0xa5, sizeof(raw));
		len = 4;
		EXPECT_EQ(0, getsockopt(cfd, SOL_SMC, RSMC_INFO, raw, &len)) TH_LOG("%s",
										 strerror(errno));
		EXPECT_EQ(4u, len);
		EXPECT_EQ(0, memcmp(raw, &full, 4)) TH_LOG("4-byte read is not the mode");
		EXPECT_TRUE(all_bytes(raw + 4, 0xa5, sizeof(raw) - 4))
			TH_LOG("bytes past len 4 written");
		/* len 0: nothing copied, and that is no error. */
		len = 0;
		EXPECT_EQ(0, getsockopt(cfd, SOL_SMC, RSMC_INFO, raw, &len)) TH_LOG("%s",
										 strerror(errno));
		EXPECT_EQ(0u, len);
		EXPECT_TRUE(all_bytes(raw + 4, 0xa5, sizeof(raw) - 4)) TH_LOG("len 0 wrote bytes");
		/* A longer buffer gets the struct, and len shrinks to its size. */
		len = sizeof(raw);
		EXPECT_EQ(0, getsockopt(cfd, SOL_SMC, RSMC_INFO, raw, &len)) TH_LOG("%s",
										 strerror(errno));
		EXPECT_EQ(sizeof(struct rsmc_info), len);
		EXPECT_EQ(0, memcmp(raw, &full, sizeof(full))) TH_LOG("info changed while idle");
		EXPECT_TRUE(all_bytes(raw + sizeof(full), 0xa5, sizeof(raw) - sizeof(full)))
			TH_LOG("bytes past the struct written");
	}
	/* Read-only: as TCP answers an option it does not know. */
	memset(&full, 0, sizeof(full));
	errno = 0;
	EXPECT_EQ(-1, setsockopt(cfd, SOL_SMC, RSMC_INFO, &full, sizeof(full)));
	EXPECT_EQ(ENOPROTOOPT, errno) TH_LOG("setsockopt(SOL_SMC, RSMC_INFO): %s",
					     strerror(errno));

	EXPECT_EQ(0, close(cfd));
	/* The client's close reaches the server as EOF. */
	EXPECT_EQ(0, recv(sfd, got, 1, 0));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* Connections between the same two devices share one link                                   */

#define SHARED_CONNS 8

/* Waits up to 10 s for both devices to have @links links and @conns connections on them. */
static bool links_settle(long links, long conns, long got[4])
{
	for (int tries = 0; tries < 200; tries++, msleep(50)) {
		if (rsmc_device_links("rxe_a", &got[0], &got[1]) ||
		    rsmc_device_links("rxe_b", &got[2], &got[3]))
			return false;
		if (got[0] == links && got[1] == conns && got[2] == links && got[3] == conns)
			return true;
	}
	return false;
}

/* Waits up to 10 s for @dev to have @conns connections; their number then, or -1. */
static long conns_settle(const char *dev, long conns)
{
	long links, got = -1;

	for (int tries = 0; tries < 200; tries++, msleep(50)) {
		if (rsmc_device_links(dev, &links, &got))
			return -1;
		if (got == conns)
			break;
	}
	return got;
}

TEST_F_TIMEOUT(rdma, shared_link, 120)
{
	int cfd[SHARED_CONNS], sfd[SHARED_CONNS];
	uint8_t byte = 0x5a, got;
	long n[4] = { 0 };

	/* Earlier tests' connections are gone once both of their ends closed; with lingering
	 * off, so are their links. */
	ASSERT_EQ(0, rsmc_write_long(RSMC_LINK_LINGER_FILE, 0)) TH_LOG("%s", strerror(errno));
	ASSERT_TRUE(links_settle(0, 0, n))
		TH_LOG("left over: rxe_a %ld links %ld conns, rxe_b %ld links %ld conns", n[0],
		       n[1], n[2], n[3]);
	for (int i = 0; i < SHARED_CONNS; i++) {
		smc_pair(_metadata, variant->topo, &cfd[i], &sfd[i]);
		ASSERT_TRUE(expect_mode(_metadata, "client", cfd[i], RSMC_MODE_RDMA, 0, 0, NULL));
		ASSERT_EQ(1, write_all(cfd[i], &byte, 1));
		ASSERT_EQ(1, read_all(sfd[i], &got, 1));
		ASSERT_EQ(1, write_all(sfd[i], &got, 1));
		ASSERT_EQ(1, read_all(cfd[i], &got, 1));
		EXPECT_EQ(byte, got);
	}
	EXPECT_TRUE(links_settle(1, SHARED_CONNS, n))
		TH_LOG("rxe_a %ld links %ld conns, rxe_b %ld links %ld conns; want 1 and %d", n[0],
		       n[1], n[2], n[3], SHARED_CONNS);
	/* debugfs lists each end, open. */
	EXPECT_EQ(SHARED_CONNS, rsmc_count_connections("rxe_a", "closing 0 peer_closed 0"));
	EXPECT_EQ(SHARED_CONNS, rsmc_count_connections("rxe_b", "closing 0 peer_closed 0"));
	/* Closing one end keeps its ring until the other end closes too. */
	for (int i = 0; i < SHARED_CONNS; i++)
		EXPECT_EQ(0, close(cfd[i]));
	EXPECT_TRUE(links_settle(1, SHARED_CONNS, n))
		TH_LOG("rxe_a %ld links %ld conns, rxe_b %ld links %ld conns after the clients closed",
		       n[0], n[1], n[2], n[3]);
	for (int i = 0; i < SHARED_CONNS; i++) {
		EXPECT_EQ(0, recv(sfd[i], &got, 1, 0)) TH_LOG("no EOF on connection %d", i);
	}
	/* The clients' ends closed and wait for their peers, which heard of it. */
	EXPECT_EQ(SHARED_CONNS, rsmc_count_connections("rxe_a", "closing 1 peer_closed 0"));
	EXPECT_EQ(SHARED_CONNS, rsmc_count_connections("rxe_b", "closing 0 peer_closed 1"));
	for (int i = 0; i < SHARED_CONNS; i++)
		EXPECT_EQ(0, close(sfd[i]));
	EXPECT_TRUE(links_settle(0, 0, n))
		TH_LOG("rxe_a %ld links %ld conns, rxe_b %ld links %ld conns after all closed", n[0],
		       n[1], n[2], n[3]);
	EXPECT_EQ(0, rsmc_count_connections("rxe_a", ""));
	EXPECT_EQ(0, rsmc_count_connections("rxe_b", ""));
}

/*
 * A link stays a while once its last connection left (debugfs link_linger_ms), and the next
 * connection between the same devices takes it rather than setting up a new one; then it goes.
 */
#define LINGER_MS 4000

/*
 * Leaves one idle link between rxe_a and rxe_b, lingering for @linger_ms: earlier links go
 * first, then a connection exchanges a byte and closes.
 */
static void make_idle_link(struct __test_metadata *_metadata, const struct topo *topo,
			   long linger_ms)
{
	long n[4] = { 0 };
	uint8_t byte = 0x5a;
	char text[4096];
	int cfd, sfd;

	/* Earlier tests' idle links go at once. */
	ASSERT_EQ(0, rsmc_write_long(RSMC_LINK_LINGER_FILE, 0)) TH_LOG("%s", strerror(errno));
	ASSERT_TRUE(links_settle(0, 0, n))
		TH_LOG("left over: rxe_a %ld links %ld conns, rxe_b %ld links %ld conns", n[0],
		       n[1], n[2], n[3]);
	ASSERT_EQ(0, rsmc_write_long(RSMC_LINK_LINGER_FILE, linger_ms));

	smc_pair(_metadata, topo, &cfd, &sfd);
	ASSERT_TRUE(expect_mode(_metadata, "client", cfd, RSMC_MODE_RDMA, 0, 0, NULL));
	ASSERT_EQ(1, write_all(cfd, &byte, 1));
	ASSERT_EQ(1, read_all(sfd, &byte, 1));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	ASSERT_TRUE(links_settle(1, 0, n))
		TH_LOG("rxe_a %ld links %ld conns, rxe_b %ld links %ld conns after both closed:\n%s",
		       n[0], n[1], n[2], n[3], rsmc_state_text(text, sizeof(text)));
}

TEST_F_TIMEOUT(rdma, idle_link_lingers, 120)
{
	long n[4] = { 0 };
	double idle_from;
	int cfd, sfd;

	make_idle_link(_metadata, variant->topo, LINGER_MS);
	idle_from = now_ms();

	/* The next connection takes the idle link: one link, not two. */
	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	EXPECT_TRUE(expect_mode(_metadata, "client", cfd, RSMC_MODE_RDMA, 0, 0, NULL));
	EXPECT_TRUE(links_settle(1, 1, n))
		TH_LOG("rxe_a %ld links %ld conns, rxe_b %ld links %ld conns with a new connection",
		       n[0], n[1], n[2], n[3]);
	EXPECT_GT(LINGER_MS, now_ms() - idle_from) TH_LOG("too slow to see the link reused");
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));

	/* Idle again, it goes after LINGER_MS (links_settle waits up to 10 s). */
	EXPECT_TRUE(links_settle(1, 0, n));
	idle_from = now_ms();
	EXPECT_TRUE(links_settle(0, 0, n))
		TH_LOG("rxe_a %ld links %ld conns, rxe_b %ld links %ld conns after lingering", n[0],
		       n[1], n[2], n[3]);
	EXPECT_LT(LINGER_MS / 2, now_ms() - idle_from) TH_LOG("the idle link went after %.0f ms",
							      now_ms() - idle_from);
}

/*
 * The receive ring and send buffer of a connection that ended stay with its device (debugfs
 * spare_bytes), and the next connection takes them rather than allocating its own. What it
 * reads is what its peer wrote, whatever the ring held before.
 */
#define SPARE_MSG 4096

static void spare_bytes(struct __test_metadata *_metadata, unsigned long long got[2])
{
	struct rsmc_device_stats s;

	ASSERT_EQ(0, rsmc_device_stats("rxe_a", &s));
	got[0] = s.spare_bytes;
	ASSERT_EQ(0, rsmc_device_stats("rxe_b", &s));
	got[1] = s.spare_bytes;
}

/* Closes both ends and waits until both devices have @conns connections again. */
static void close_pair(struct __test_metadata *_metadata, int cfd, int sfd, const long conns[2])
{
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	ASSERT_EQ(conns[0], conns_settle("rxe_a", conns[0]));
	ASSERT_EQ(conns[1], conns_settle("rxe_b", conns[1]));
	/* A release gives its buffers back right after the connection leaves its link. */
	msleep(100);
}

TEST_F(rdma, ended_connections_buffers_serve_the_next)
{
	unsigned long long ended[2], open[2], again[2];
	uint8_t out[SPARE_MSG], in[SPARE_MSG];
	long links, conns[2];
	int cfd, sfd;

	ASSERT_EQ(0, rsmc_device_links("rxe_a", &links, &conns[0]));
	ASSERT_EQ(0, rsmc_device_links("rxe_b", &links, &conns[1]));
	memset(out, 0xaa, sizeof(out));
	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	expect_rdma_pair(_metadata, cfd, sfd, 0, 0);
	ASSERT_EQ(SPARE_MSG, write_all(cfd, out, SPARE_MSG));
	ASSERT_EQ(SPARE_MSG, read_all(sfd, in, SPARE_MSG));
	close_pair(_metadata, cfd, sfd, conns);
	spare_bytes(_metadata, ended);
	/* A ring and a send buffer of at least 16 KiB each, on each side. */
	EXPECT_LE(32768ull, ended[0]);
	EXPECT_LE(32768ull, ended[1]);

	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	expect_rdma_pair(_metadata, cfd, sfd, 0, 0);
	spare_bytes(_metadata, open);
	EXPECT_GT(ended[0], open[0]) TH_LOG("the client side allocated new buffers");
	EXPECT_GT(ended[1], open[1]) TH_LOG("the server side allocated new buffers");
	for (int i = 0; i < SPARE_MSG; i++)
		out[i] = (uint8_t)i;
	ASSERT_EQ(SPARE_MSG, write_all(sfd, out, SPARE_MSG));
	ASSERT_EQ(SPARE_MSG, read_all(cfd, in, SPARE_MSG));
	EXPECT_EQ(0, memcmp(out, in, SPARE_MSG));
	EXPECT_EQ(-1, recv(cfd, in, 1, MSG_DONTWAIT)) TH_LOG("more bytes than the peer wrote");
	close_pair(_metadata, cfd, sfd, conns);
	spare_bytes(_metadata, again);
	EXPECT_EQ(ended[0], again[0]);
	EXPECT_EQ(ended[1], again[1]);
}

/* ---------------------------------------------------------------------------------------- */
/* The payload goes over RDMA, none of it over TCP                                            */

#define NOT_TCP_BYTES (16ULL << 20)

TEST_F_TIMEOUT(rdma, rdma_not_tcp, 120)
{
	struct xfer snd = { .seed = 21, .total = NOT_TCP_BYTES, .rng = 11, .shut_wr = true };
	struct xfer rcv = { .seed = 21, .total = NOT_TCP_BYTES, .rng = 12 };
	pthread_t t;
	int cfd, sfd;

	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	snd.fd = cfd;
	rcv.fd = sfd;
	ASSERT_EQ(0, pthread_create(&t, NULL, xfer_send, &snd));
	xfer_recv(&rcv);
	ASSERT_EQ(0, pthread_join(t, NULL));
	check_xfer(_metadata, "client->server", &snd, &rcv);
	/* The receiver saw EOF: all 16 MiB have been written to and read from its ring. */
	expect_info(_metadata, "sender", cfd, RSMC_MODE_RDMA, 0, 0, NOT_TCP_BYTES, 0, 0, 0);
	expect_info(_metadata, "receiver", sfd, RSMC_MODE_RDMA, 0, 0, 0, NOT_TCP_BYTES, 0, 0);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* Small sends, carried inline in cursor messages                                             */

/* The most data bytes a cursor message carries inline (rust/proto/cdc.rs, MAX_INLINE). */
#define INLINE_MAX 211

/*
 * Sends of INLINE_MAX bytes each way at once, so that every byte travels inline in a cursor
 * message and none by RDMA WRITE: the receiver places them in its ring itself. 211 is prime,
 * so sends straddle the end of the rings as they go round them several times. Every byte
 * arrives, in order, and RSMC_INFO counts them all as RDMA payload.
 */
TEST_F_TIMEOUT(rdma, inline_sends_wrap_rings, 180)
{
	uint64_t bytes = rsmc_debug_kernel() ? 1ULL << 20 : 8ULL << 20;
	struct xfer x[4];
	pthread_t t[4];
	int cfd, sfd;

	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	duplex_init(x, cfd, sfd, bytes, bytes, 57, true);
	x[0].chunk = x[2].chunk = INLINE_MAX;
	duplex_start(_metadata, x, t);
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(0, pthread_join(t[i], NULL));
	check_xfer(_metadata, "client->server", &x[0], &x[1]);
	check_xfer(_metadata, "server->client", &x[2], &x[3]);
	expect_rdma_pair(_metadata, cfd, sfd, bytes, bytes);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 1 GiB each way, over rsmc and over plain TCP                                               */

#define BULK_BYTES (1ULL << 30)

/*
 * Bytes each way of stream_1g and tcp_1g_reference: 1 GiB over IPv4; 128 MiB over IPv6 (the
 * same data path, only the handshake differs); 8 MiB on the debug kernel, which is there to
 * find bugs, not to move data (rxe is an order of magnitude slower under it). RSMC_BULK_MIB
 * overrides them.
 */
static uint64_t bulk_bytes(const struct topo *v)
{
	const char *env = getenv("RSMC_BULK_MIB");

	if (env && atoi(env) > 0)
		return (uint64_t)atoi(env) << 20;
	if (rsmc_debug_kernel())
		return 8ULL << 20;
	if (v->family == AF_INET6)
		return 128ULL << 20;
	return BULK_BYTES;
}

/* MiB/s of each 1 GiB test, shared by the forked test processes: [smc?][ipv6?]. */
static double (*bulk_rates)[2];

static void __attribute__((constructor)) bulk_rates_init(void)
{
	void *p = mmap(NULL, sizeof(double[2][2]), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	bulk_rates = p == MAP_FAILED ? NULL : p;
}

/* Moves @bytes each way at once over the pair; prints and returns MiB/s, both ways. */
static double bulk(struct __test_metadata *_metadata, const struct topo *v, bool smc, int cfd,
		   int sfd, uint64_t bytes)
{
	const double mib = bytes / (1024.0 * 1024.0);
	const char *what = smc ? "stream_1g" : "tcp_1g_reference";
	double t0 = now_ms(), secs;
	struct xfer x[4];

	duplex(_metadata, cfd, sfd, bytes, bytes, 31, false, x);
	secs = (now_ms() - t0) / 1e3;
	ksft_print_msg("%s %s: %.0f MiB each way at once in %.1f s: client->server %.1f MiB/s, "
		       "server->client %.1f MiB/s, %.1f MiB/s together\n", what, v->name, mib,
		       secs, mib * 1e3 / (x[1].end_ms - t0), mib * 1e3 / (x[3].end_ms - t0),
		       2 * mib / secs);
	if (bulk_rates)
		bulk_rates[smc][v->family == AF_INET6] = 2 * mib / secs;
	return 2 * mib / secs;
}

TEST_F_TIMEOUT(rdma, stream_1g, 600)
{
	uint64_t bytes = bulk_bytes(variant->topo);
	int cfd, sfd;

	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	bulk(_metadata, variant->topo, true, cfd, sfd, bytes);
	expect_rdma_pair(_metadata, cfd, sfd, bytes, bytes);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* What the guest's CPU allows the pattern alone: generating it, per thread. */
static double pattern_rate(void)
{
	const size_t len = XFER_MAX_CHUNK;
	uint8_t *buf = malloc(len);
	double t0 = now_ms();
	uint64_t off;

	if (!buf)
		return 0;
	for (off = 0; off < (64u << 20); off += len)
		pattern_fill(buf, 1, off, len);
	free(buf);
	return 64 * 1e3 / (now_ms() - t0);
}

TEST_F_TIMEOUT(rdma, tcp_1g_reference, 600)
{
	const struct topo *v = variant->topo;
	double tcp, smc;
	int cfd, sfd;

	make_pair(_metadata, v, false, false, &cfd, &sfd);
	tcp = bulk(_metadata, v, false, cfd, sfd, bulk_bytes(v));
	smc = bulk_rates ? bulk_rates[1][v->family == AF_INET6] : 0;
	if (smc > 0)
		ksft_print_msg("%s: rsmc %.1f MiB/s, TCP %.1f MiB/s: rsmc/TCP %.2f\n", v->name, smc,
			       tcp, smc / tcp);
	ksft_print_msg("%s: generating the pattern alone runs at %.0f MiB/s per thread\n",
		       v->name, pattern_rate());
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* 64 connections at once                                                                     */

#define NCONN 64
#define CONN_BYTES (64 * 1024)

struct conn {
	const struct topo *v;
	uint16_t port;
	uint32_t id;
	int fd;
	pthread_barrier_t *connected;
	/* results */
	const char *failed;
	int err;
	bool ok;		/* the echo worked */
	bool have_info;		/* info holds RSMC_INFO, read once all data was read */
	int info_err;
	struct rsmc_info info;
};

static void conn_info(struct conn *c, int fd)
{
	socklen_t len = sizeof(c->info);

	if (getsockopt(fd, SOL_SMC, RSMC_INFO, &c->info, &len))
		c->info_err = errno;
	else if (len != sizeof(c->info))
		c->info_err = EMSGSIZE;
	else
		c->have_info = true;
}

/* Request: the id, then pattern 1000 + id; the reply is the request echoed; then EOF. */
static void *conn_client(void *arg)
{
	struct conn *c = arg;
	uint8_t *out = malloc(CONN_BYTES), *back = malloc(CONN_BYTES);
	ssize_t n;
	int fd = -1;
	char ch;

	if (!out || !back)
		c->failed = "malloc";
	else if (rsmc_enter_netns(NS_CLIENT))
		c->failed = "setns", c->err = errno;
	else if ((fd = stream_socket(c->v, true, 0)) < 0)
		c->failed = "socket", c->err = errno;
	else if (connect_to(c->v, fd, c->v->addr_b, c->port))
		c->failed = "connect", c->err = errno;
	/* All connections are open before any of them moves data. */
	pthread_barrier_wait(c->connected);
	if (c->failed)
		goto out;
	memcpy(out, &c->id, sizeof(c->id));
	pattern_fill(out + sizeof(c->id), 1000 + c->id, 0, CONN_BYTES - sizeof(c->id));
	if (write_all(fd, out, CONN_BYTES) != CONN_BYTES) {
		c->failed = "send", c->err = errno;
		goto out;
	}
	n = read_all(fd, back, CONN_BYTES);
	if (n != CONN_BYTES) {
		c->failed = n < 0 ? "recv" : "reply length", c->err = n < 0 ? errno : 0;
		goto out;
	}
	if (memcmp(out, back, CONN_BYTES)) {
		c->failed = "reply content";
		goto out;
	}
	conn_info(c, fd);
	if (shutdown(fd, SHUT_WR)) {
		c->failed = "shutdown", c->err = errno;
		goto out;
	}
	n = recv(fd, &ch, 1, 0);
	if (n) {
		c->failed = n < 0 ? "recv EOF" : "data after the reply", c->err = n < 0 ? errno : 0;
		goto out;
	}
	c->ok = true;
out:
	if (fd >= 0)
		close(fd);
	free(out);
	free(back);
	return NULL;
}

static void *conn_server(void *arg)
{
	struct conn *c = arg;
	uint8_t *buf = malloc(CONN_BYTES);
	ssize_t n;
	uint32_t id;
	char ch;

	if (!buf) {
		c->failed = "malloc";
		goto out;
	}
	n = read_all(c->fd, buf, CONN_BYTES);
	if (n != CONN_BYTES) {
		c->failed = n < 0 ? "recv" : "request length", c->err = n < 0 ? errno : 0;
		goto out;
	}
	memcpy(&id, buf, sizeof(id));
	c->id = id;
	if (id >= NCONN) {
		c->failed = "request id";
		goto out;
	}
	if (pattern_mismatch(buf + sizeof(id), 1000 + id, 0, CONN_BYTES - sizeof(id)) >= 0) {
		c->failed = "request content";
		goto out;
	}
	if (write_all(c->fd, buf, CONN_BYTES) != CONN_BYTES) {
		c->failed = "send", c->err = errno;
		goto out;
	}
	/* EOF once the client has read the whole reply: the counters are final then. */
	n = recv(c->fd, &ch, 1, 0);
	if (n) {
		c->failed = n < 0 ? "recv EOF" : "data after the request", c->err = n < 0 ? errno : 0;
		goto out;
	}
	conn_info(c, c->fd);
	c->ok = true;
out:
	close(c->fd);
	free(buf);
	return NULL;
}

/* Whether @c ended in RDMA mode with CONN_BYTES each way over RDMA and none over TCP. */
static bool conn_rdma(const struct conn *c)
{
	const struct rsmc_info *i = &c->info;

	return c->have_info && i->mode == RSMC_MODE_RDMA && !i->fallback_reason &&
	       !i->peer_decline_code && i->rdma_tx_bytes == CONN_BYTES &&
	       i->rdma_rx_bytes == CONN_BYTES && !i->tcp_tx_bytes && !i->tcp_rx_bytes;
}

static void log_conn_info(struct __test_metadata *_metadata, const char *who, int n,
			  const struct conn *c)
{
	const struct rsmc_info *i = &c->info;

	if (!c->have_info) {
		TH_LOG("%s %d: RSMC_INFO: %s", who, n, strerror(c->info_err));
		return;
	}
	TH_LOG("%s %d: mode %s, fallback_reason %s, peer_decline_code %s, rdma tx %llu rx %llu, "
	       "tcp tx %llu rx %llu", who, n, mode_name(i->mode), decl_name(i->fallback_reason),
	       decl_name(i->peer_decline_code), (unsigned long long)i->rdma_tx_bytes,
	       (unsigned long long)i->rdma_rx_bytes, (unsigned long long)i->tcp_tx_bytes,
	       (unsigned long long)i->tcp_rx_bytes);
}

TEST_F_TIMEOUT(rdma, concurrent_64, 180)
{
	struct conn cli[NCONN] = {}, srv[NCONN] = {};
	pthread_t ct[NCONN], st[NCONN];
	pthread_barrier_t connected;
	bool seen[NCONN] = {};
	int not_rdma = 0, first = -1;
	pthread_attr_t attr;
	uint16_t port;
	int lfd;

	lfd = listen_in(_metadata, variant->topo, NS_SERVER, variant->topo->addr_b, true, &port);
	ASSERT_EQ(0, pthread_barrier_init(&connected, NULL, NCONN));
	ASSERT_EQ(0, pthread_attr_init(&attr));
	ASSERT_EQ(0, pthread_attr_setstacksize(&attr, 256 * 1024));
	for (uint32_t i = 0; i < NCONN; i++) {
		cli[i] = (struct conn){ .v = variant->topo, .port = port, .id = i, .fd = -1,
					.connected = &connected };
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
		EXPECT_TRUE(cli[i].ok) TH_LOG("client %d: %s: %s", i, cli[i].failed,
					      strerror(cli[i].err));
		EXPECT_TRUE(srv[i].ok) TH_LOG("server conn %d (id %u): %s: %s", i, srv[i].id,
					      srv[i].failed, strerror(srv[i].err));
		if (srv[i].ok) {
			EXPECT_FALSE(seen[srv[i].id]) TH_LOG("id %u accepted twice", srv[i].id);
			seen[srv[i].id] = true;
		}
		if (!conn_rdma(&cli[i]) || !conn_rdma(&srv[i])) {
			not_rdma++;
			if (first < 0)
				first = i;
		}
	}
	EXPECT_EQ(0, not_rdma) TH_LOG("%d of %d connections not all RDMA, with %d bytes each way",
				      not_rdma, NCONN, CONN_BYTES);
	if (first >= 0) {
		log_conn_info(_metadata, "first such: client", first, &cli[first]);
		log_conn_info(_metadata, "first such: server conn", first, &srv[first]);
	}
	pthread_attr_destroy(&attr);
	pthread_barrier_destroy(&connected);
	EXPECT_EQ(0, close(lfd));
}

/* ---------------------------------------------------------------------------------------- */
/* Short-lived connections                                                                    */

/*
 * Short-lived connections one after another, as requests each answered and done: the server
 * closes as soon as it has answered, the client as soon as it has the answer, and connects
 * again at once. Every one moves its data over RDMA. The link of one connection is torn down
 * while the next is set up, and its queue pair's flushed work requests complete meanwhile;
 * they once reached the next connection's new link, which failed its handshake (the client
 * fell back to TCP, and the server's accept waited seconds for an abort to a queue pair that
 * was gone).
 *
 * A client and a server thread run each such sequence. The threads only use EXPECT (an
 * ASSERT would jump out of the test's own thread) and stop at the first failure.
 */
struct churn {
	struct __test_metadata *_metadata;
	const struct topo *topo;
	int lfd;
	uint16_t port;
	int conns;
	int rdma_client;	/* connections made in RDMA mode */
	int rdma_server;	/* connections accepted in RDMA mode */
};

static void *churn_serve(void *arg)
{
	struct churn *c = arg;
	struct __test_metadata *_metadata = c->_metadata;
	struct pollfd pfd = { .fd = c->lfd, .events = POLLIN };
	char ch;

	for (int n = 0; n < c->conns; n++) {
		int fd = poll(&pfd, 1, EVENT_WAIT_MS) == 1 ? accept(c->lfd, NULL, NULL) : -1;
		bool ok;

		EXPECT_LE(0, fd) TH_LOG("server: no connection %d: %s", n, strerror(errno));
		if (fd < 0)
			break;
		ok = read(fd, &ch, 1) == 1 && write(fd, &ch, 1) == 1;
		EXPECT_TRUE(ok) TH_LOG("server: connection %d: %s", n, strerror(errno));
		if (ok && expect_mode(_metadata, "server", fd, RSMC_MODE_RDMA, 0, 0, NULL))
			c->rdma_server++;
		EXPECT_EQ(0, close(fd));
		if (!ok)
			break;
	}
	return NULL;
}

static void *churn_connect(void *arg)
{
	struct churn *c = arg;
	struct __test_metadata *_metadata = c->_metadata;
	char ch;

	/* Each thread has its own network namespace: this one's clients live in rsmc_a. */
	EXPECT_EQ(0, rsmc_enter_netns(NS_CLIENT)) TH_LOG("setns: %s", strerror(errno));
	for (int n = 0; n < c->conns; n++) {
		int fd = stream_socket(c->topo, true, 0);
		bool ok = fd >= 0 && !connect_to(c->topo, fd, c->topo->addr_b, c->port) &&
			  write(fd, "q", 1) == 1 && read(fd, &ch, 1) == 1;

		EXPECT_TRUE(ok) TH_LOG("client: connection %d: %s", n, strerror(errno));
		if (ok && expect_mode(_metadata, "client", fd, RSMC_MODE_RDMA, 0, 0, NULL))
			c->rdma_client++;
		if (fd >= 0)
			EXPECT_EQ(0, close(fd));
		if (!ok)
			break;
	}
	return NULL;
}

#define CHURN_MAX 4

/*
 * @n (up to CHURN_MAX) sequences of @conns connections each, all at once; all over RDMA, and
 * all gone from both sides once closed.
 */
static void churn(struct __test_metadata *_metadata, const struct topo *v, int n, int conns)
{
	struct churn c[CHURN_MAX];
	pthread_t t[2 * CHURN_MAX];

	ASSERT_GE(CHURN_MAX, n);
	for (int i = 0; i < n; i++) {
		c[i] = (struct churn){ ._metadata = _metadata, .topo = v, .conns = conns };
		c[i].lfd = listen_in(_metadata, v, NS_SERVER, v->addr_b, true, &c[i].port);
	}
	for (int i = 0; i < n; i++) {
		ASSERT_EQ(0, pthread_create(&t[2 * i], NULL, churn_serve, &c[i]));
		ASSERT_EQ(0, pthread_create(&t[2 * i + 1], NULL, churn_connect, &c[i]));
	}
	for (int i = 0; i < 2 * n; i++)
		ASSERT_EQ(0, pthread_join(t[i], NULL));
	for (int i = 0; i < n; i++) {
		EXPECT_EQ(0, close(c[i].lfd));
		EXPECT_EQ(conns, c[i].rdma_client) TH_LOG("sequence %d", i);
		EXPECT_EQ(conns, c[i].rdma_server) TH_LOG("sequence %d", i);
	}
	/* Each end heard the other's close: none waits for its fin timeout. */
	assert_connections_gone(_metadata, "connections closed at both ends");
}

TEST_F_TIMEOUT(rdma, short_connections_in_a_row, 120)
{
	churn(_metadata, variant->topo, 1, 60);
}

/*
 * Four such sequences at once while idle links go after 3 ms: connections keep joining links
 * that are about to go, and offering links whose other end just went.
 */
TEST_F_TIMEOUT(rdma, short_connections_while_links_come_and_go, 180)
{
	ASSERT_EQ(0, rsmc_write_long(RSMC_LINK_LINGER_FILE, 3)) TH_LOG("%s", strerror(errno));
	churn(_metadata, variant->topo, CHURN_MAX, 25);
}

/* ---------------------------------------------------------------------------------------- */
/* half-close                                                                                 */

#define HALF_UP (1ULL << 20)
#define HALF_DOWN ((1ULL << 20) + 4099)

TEST_F_TIMEOUT(rdma, half_close, 120)
{
	struct xfer up = { .seed = 41, .total = HALF_UP, .rng = 3, .shut_wr = true };
	struct xfer up_rcv = { .seed = 41, .total = HALF_UP, .rng = 5 };
	struct xfer down = { .seed = 42, .total = HALF_DOWN, .rng = 7 };
	struct xfer down_rcv = { .seed = 42, .total = HALF_DOWN, .rng = 9 };
	struct timespec deadline;
	double t0;
	pthread_t t;
	int cfd, sfd;
	char c;

	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	/* Client sends, then shuts down its write side: the server reads it all, then EOF. */
	up.fd = cfd;
	up_rcv.fd = sfd;
	ASSERT_EQ(0, pthread_create(&t, NULL, xfer_send, &up));
	xfer_recv(&up_rcv);
	ASSERT_EQ(0, pthread_join(t, NULL));
	check_xfer(_metadata, "client->server before SHUT_WR", &up, &up_rcv);
	EXPECT_EQ(0, recv(sfd, &c, 1, 0)) TH_LOG("EOF does not stay");
	errno = 0;
	EXPECT_EQ(-1, send(cfd, "z", 1, MSG_NOSIGNAL));
	EXPECT_EQ(EPIPE, errno) TH_LOG("send after SHUT_WR: %s", strerror(errno));

	/* The server still sends; the client reads it all. */
	down.fd = sfd;
	down_rcv.fd = cfd;
	ASSERT_EQ(0, pthread_create(&t, NULL, xfer_recv, &down_rcv));
	xfer_send(&down);
	EXPECT_EQ(0, down.err) TH_LOG("server send after client SHUT_WR: %s: %s", down.failed,
				      strerror(down.err));
	for (t0 = now_ms(); xfer_done(&down_rcv) < HALF_DOWN && now_ms() - t0 < 30000;)
		msleep(10);
	EXPECT_EQ(HALF_DOWN, xfer_done(&down_rcv)) TH_LOG("client did not get all of it");
	expect_rdma_pair(_metadata, cfd, sfd, HALF_UP, HALF_DOWN);

	/* The server closes: the client gets EOF after the data. */
	EXPECT_EQ(0, close(sfd));
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += EVENT_WAIT_MS / 1000;
	ASSERT_EQ(0, pthread_timedjoin_np(t, NULL, &deadline)) TH_LOG("client got no EOF");
	check_xfer(_metadata, "server->client after SHUT_WR", &down, &down_rcv);
	EXPECT_EQ(0, recv(cfd, &c, 1, 0));
	EXPECT_EQ(0, close(cfd));
}

/*
 * A closed connection keeps its receive ring for the peer until the peer closes too, but, as a
 * TCP socket in FIN_WAIT2, no longer than net.ipv4.tcp_fin_timeout of its namespace. Then it
 * aborts, as that socket would answer the peer with a reset.
 */
#define FIN_TIMEOUT_FILE "/proc/sys/net/ipv4/tcp_fin_timeout"
#define FIN_TIMEOUT_S 2

/*
 * Closes @cfd (the client's end, one of @conns_a connections on rxe_a) while the server's end
 * @sfd stays open: the server reads EOF, and the client's end stays for half of @wait_s, then
 * goes within conns_settle()'s 10 s. @what names the bound on the wait, for the logs.
 */
static void expect_client_end_waits(struct __test_metadata *_metadata, int cfd, int sfd,
				    long conns_a, int wait_s, const char *what)
{
	long links, got;
	double t0;
	char c;

	EXPECT_EQ(0, close(cfd));
	t0 = now_ms();
	EXPECT_EQ(0, recv(sfd, &c, 1, 0)) TH_LOG("no EOF after the client's close");
	/* The server has not closed: the client's end stays, for a while. */
	msleep(wait_s * 1000 / 2);
	ASSERT_EQ(0, rsmc_device_links("rxe_a", &links, &got));
	EXPECT_EQ(conns_a, got) TH_LOG("the client's end went before %s", what);
	got = conns_settle("rxe_a", conns_a - 1);
	EXPECT_EQ(conns_a - 1, got) TH_LOG("the client's end still there %.0f ms after its close",
					   now_ms() - t0);
	if (got == conns_a - 1)
		TH_LOG("the client's end went %.0f ms after its close (%s %d s)", now_ms() - t0,
		       what, wait_s);
}

TEST_F_TIMEOUT(rdma, closed_waits_for_peer_up_to_fin_timeout, 120)
{
	long links, conns_a, conns_b, saved;
	int cfd, sfd;
	double t0;

	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	expect_rdma_pair(_metadata, cfd, sfd, 0, 0);
	ASSERT_EQ(0, rsmc_device_links("rxe_a", &links, &conns_a));
	ASSERT_EQ(0, rsmc_device_links("rxe_b", &links, &conns_b));
	/* smc_pair() leaves this thread in the client's namespace, whose sysctl counts. */
	ASSERT_EQ(0, rsmc_read_long(FIN_TIMEOUT_FILE, &saved));
	ASSERT_EQ(0, rsmc_write_long(FIN_TIMEOUT_FILE, FIN_TIMEOUT_S)) TH_LOG("%s", strerror(errno));

	expect_client_end_waits(_metadata, cfd, sfd, conns_a, FIN_TIMEOUT_S, "the fin timeout");
	EXPECT_EQ(0, rsmc_write_long(FIN_TIMEOUT_FILE, saved)) TH_LOG("%s", strerror(errno));

	/* The server's end got the abort: its writes fail, and its close does not wait. */
	errno = 0;
	EXPECT_EQ(-1, send(sfd, "x", 1, MSG_NOSIGNAL));
	EXPECT_TRUE(is_abort_errno(errno)) TH_LOG("send after the peer's abort: %s",
						  strerror(errno));
	t0 = now_ms();
	EXPECT_EQ(0, close(sfd));
	EXPECT_GT(1000, now_ms() - t0) TH_LOG("the server's close took %.0f ms", now_ms() - t0);
	EXPECT_EQ(conns_b - 1, conns_settle("rxe_b", conns_b - 1));
}

/*
 * TCP_LINGER2 on the socket bounds that wait as it bounds its TCP socket's FIN_WAIT2, whatever
 * net.ipv4.tcp_fin_timeout says (60 s here).
 */
#define LINGER2_S 2

TEST_F_TIMEOUT(rdma, tcp_linger2_bounds_the_wait_for_the_peer, 120)
{
	int linger2 = LINGER2_S, cfd, sfd;
	long links, conns_a, conns_b;

	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	expect_rdma_pair(_metadata, cfd, sfd, 0, 0);
	ASSERT_EQ(0, rsmc_device_links("rxe_a", &links, &conns_a));
	ASSERT_EQ(0, rsmc_device_links("rxe_b", &links, &conns_b));
	ASSERT_EQ(0, setsockopt(cfd, IPPROTO_TCP, TCP_LINGER2, &linger2, sizeof(linger2)))
		TH_LOG("setsockopt(TCP_LINGER2): %s", strerror(errno));

	expect_client_end_waits(_metadata, cfd, sfd, conns_a, LINGER2_S, "TCP_LINGER2");
	/* The server's end goes too, released in the background: the next test counts from here. */
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(conns_b - 1, conns_settle("rxe_b", conns_b - 1));
}

/*
 * The fin timeout and the peer's close race: clients close, and their servers close spread
 * around the moment the clients' fin timeout fires. Each connection goes once, by whichever
 * comes first, and nothing is left on either side.
 */
#define FIN_RACE_CONNS 16

TEST_F_TIMEOUT(rdma, fin_timeout_races_peer_close, 180)
{
	int cfd[FIN_RACE_CONNS], sfd[FIN_RACE_CONNS];
	long links, conns_a, conns_b, saved;
	double t0, t_closed;

	ASSERT_EQ(0, rsmc_device_links("rxe_a", &links, &conns_a));
	ASSERT_EQ(0, rsmc_device_links("rxe_b", &links, &conns_b));
	for (int i = 0; i < FIN_RACE_CONNS; i++)
		smc_pair(_metadata, variant->topo, &cfd[i], &sfd[i]);
	expect_rdma_pair(_metadata, cfd[0], sfd[0], 0, 0);
	ASSERT_EQ(0, rsmc_read_long(FIN_TIMEOUT_FILE, &saved));
	ASSERT_EQ(0, rsmc_write_long(FIN_TIMEOUT_FILE, 1)) TH_LOG("%s", strerror(errno));

	t0 = now_ms();
	for (int i = 0; i < FIN_RACE_CONNS; i++)
		EXPECT_EQ(0, close(cfd[i]));
	/* From 0.8 s to 1.2 s after the clients' close, 25 ms apart. */
	msleep(800);
	for (int i = 0; i < FIN_RACE_CONNS; i++) {
		EXPECT_EQ(0, close(sfd[i]));
		msleep(25);
	}
	t_closed = now_ms();
	EXPECT_EQ(0, rsmc_write_long(FIN_TIMEOUT_FILE, saved)) TH_LOG("%s", strerror(errno));
	EXPECT_EQ(conns_a, conns_settle("rxe_a", conns_a));
	EXPECT_EQ(conns_b, conns_settle("rxe_b", conns_b));
	TH_LOG("servers closed from 800 to %.0f ms after the clients, all gone at %.0f ms",
	       t_closed - t0, now_ms() - t0);
}

/*
 * Both ends close right after the last byte went, in every order: the client first, the server
 * first, or both at once from two threads, with that byte sent either way. Each connection goes
 * from both sides as soon as each end heard of the other's close, not after a fin timeout.
 * Every other six rounds start on a new link: turning lingering off right after the last
 * connection left must end the idle link, however that races with its leaving.
 */
#define CLOSE_ORDER_ROUNDS 60

static void *close_in_thread(void *fd)
{
	return (void *)(long)close(*(int *)fd);
}

TEST_F_TIMEOUT(rdma, every_close_order_releases_both_ends, 180)
{
	long links, conns_a, conns_b, n[4];
	char text[4096];

	ASSERT_EQ(0, rsmc_device_links("rxe_a", &links, &conns_a));
	ASSERT_EQ(0, rsmc_device_links("rxe_b", &links, &conns_b));
	for (int round = 0; round < CLOSE_ORDER_ROUNDS; round++) {
		static const char *const orders[] = { "client first", "server first", "at once" };
		int order = round % 3, from_server = round / 3 % 2, cfd, sfd;
		uint8_t byte = round;
		void *thread_ret;
		pthread_t t;
		bool gone;

		if (round / 6 % 2) {
			ASSERT_EQ(0, rsmc_write_long(RSMC_LINK_LINGER_FILE, 0));
			ASSERT_TRUE(links_settle(0, 0, n))
				TH_LOG("round %d: rxe_a %ld links %ld conns, rxe_b %ld links %ld conns:\n%s",
				       round, n[0], n[1], n[2], n[3],
				       rsmc_state_text(text, sizeof(text)));
			ASSERT_EQ(0, rsmc_write_long(RSMC_LINK_LINGER_FILE, self->linger_ms));
		}
		smc_pair(_metadata, variant->topo, &cfd, &sfd);
		ASSERT_EQ(1, write_all(from_server ? sfd : cfd, &byte, 1));
		ASSERT_EQ(1, read_all(from_server ? cfd : sfd, &byte, 1));
		switch (order) {
		case 0:
			EXPECT_EQ(0, close(cfd));
			EXPECT_EQ(0, close(sfd));
			break;
		case 1:
			EXPECT_EQ(0, close(sfd));
			EXPECT_EQ(0, close(cfd));
			break;
		default:
			ASSERT_EQ(0, pthread_create(&t, NULL, close_in_thread, &cfd));
			EXPECT_EQ(0, close(sfd));
			ASSERT_EQ(0, pthread_join(t, &thread_ret));
			EXPECT_EQ(0, (long)thread_ret);
		}
		gone = conns_settle("rxe_a", conns_a) == conns_a &&
		       conns_settle("rxe_b", conns_b) == conns_b;
		EXPECT_TRUE(gone) TH_LOG("round %d (%s, byte from the %s) left:\n%s", round,
					 orders[order], from_server ? "server" : "client",
					 rsmc_state_text(text, sizeof(text)));
		if (!gone)
			break;
	}
}

/*
 * Connections on one link close while their writes fill its send queue: a closing end's last
 * message may find no send credit. It must still go, and the connections go at once on both
 * sides, not after the fin timeout (60 s here) of an end that never heard of its peer's close.
 */
#define FULL_SQ_CONNS 16
#define FULL_SQ_ROUNDS 8
#define FULL_SQ_WRITE_MS 500

TEST_F_TIMEOUT(rdma, closing_with_the_send_queue_full, 180)
{
	int cfd[FULL_SQ_CONNS], sfd[FULL_SQ_CONNS];
	static uint8_t buf[65536];
	long links, conns_a, conns_b;
	char left[4096];

	signal(SIGPIPE, SIG_IGN);
	ASSERT_EQ(0, rsmc_device_links("rxe_a", &links, &conns_a));
	ASSERT_EQ(0, rsmc_device_links("rxe_b", &links, &conns_b));
	for (int round = 0; round < FULL_SQ_ROUNDS; round++) {
		double t0;

		for (int i = 0; i < FULL_SQ_CONNS; i++) {
			smc_pair(_metadata, variant->topo, &cfd[i], &sfd[i]);
			ASSERT_EQ(0, fcntl(cfd[i], F_SETFL, O_NONBLOCK));
			ASSERT_EQ(0, fcntl(sfd[i], F_SETFL, O_NONBLOCK));
		}
		expect_rdma_pair(_metadata, cfd[0], sfd[0], 0, 0);
		/* Small writes, many in flight at once on the shared link. */
		t0 = now_ms();
		while (now_ms() - t0 < FULL_SQ_WRITE_MS) {
			for (int i = 0; i < FULL_SQ_CONNS; i++) {
				while (write(cfd[i], buf, 1024) > 0)
					;
				EXPECT_EQ(EAGAIN, errno) TH_LOG("write: %s", strerror(errno));
				read(sfd[i], buf, sizeof(buf));
			}
		}
		/* Both ends close with writes in flight (the server's with data unread). */
		for (int i = 0; i < FULL_SQ_CONNS; i++) {
			EXPECT_EQ(0, close(cfd[i]));
			EXPECT_EQ(0, close(sfd[i]));
		}
		t0 = now_ms();
		ASSERT_EQ(conns_a, conns_settle("rxe_a", conns_a))
			TH_LOG("round %d, left:\n%s", round, rsmc_state_text(left, sizeof(left)));
		ASSERT_EQ(conns_b, conns_settle("rxe_b", conns_b))
			TH_LOG("round %d, left:\n%s", round, rsmc_state_text(left, sizeof(left)));
		TH_LOG("round %d: all gone %.0f ms after the close", round, now_ms() - t0);
	}
}

/* ---------------------------------------------------------------------------------------- */
/* non-blocking connect                                                                       */

#define NB_BYTES 4096

TEST_F(rdma, nonblocking_connect_epoll)
{
	const struct topo *v = variant->topo;
	uint8_t out[NB_BYTES], got[NB_BYTES];
	int lfd, cfd, sfd, ret, ev, err = -1;
	socklen_t len = sizeof(err);
	uint16_t port;

	lfd = listen_in(_metadata, v, NS_SERVER, v->addr_b, true, &port);
	cfd = socket_in(_metadata, v, NS_CLIENT, true, SOCK_NONBLOCK);
	ret = connect_to(v, cfd, v->addr_b, port);
	if (ret)
		ASSERT_EQ(EINPROGRESS, errno) TH_LOG("connect: %s", strerror(errno));
	ev = wait_events(_metadata, cfd, EPOLLOUT, EVENT_WAIT_MS);
	EXPECT_TRUE(ev & EPOLLOUT) TH_LOG("events 0x%x", ev);
	EXPECT_FALSE(ev & (EPOLLERR | EPOLLHUP)) TH_LOG("events 0x%x", ev);
	ASSERT_EQ(0, getsockopt(cfd, SOL_SOCKET, SO_ERROR, &err, &len)) TH_LOG("%s",
										strerror(errno));
	EXPECT_EQ(0, err) TH_LOG("SO_ERROR %s", strerror(err));
	/* Connected means the handshake is over, as after a blocking connect. */
	expect_mode(_metadata, "client once writable", cfd, RSMC_MODE_RDMA, 0, 0, NULL);
	sfd = accept_within(_metadata, lfd, 0);

	pattern_fill(out, 71, 0, sizeof(out));
	ASSERT_EQ(NB_BYTES, io_all_nb(_metadata, cfd, out, sizeof(out), true))
		TH_LOG("%s", strerror(errno));
	ASSERT_EQ(NB_BYTES, read_all(sfd, got, sizeof(got))) TH_LOG("%s", strerror(errno));
	EXPECT_EQ(0, memcmp(out, got, sizeof(got)));
	pattern_fill(out, 72, 0, sizeof(out));
	ASSERT_EQ(NB_BYTES, write_all(sfd, out, sizeof(out))) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(NB_BYTES, io_all_nb(_metadata, cfd, got, sizeof(got), false))
		TH_LOG("%s", strerror(errno));
	EXPECT_EQ(0, memcmp(out, got, sizeof(got)));
	expect_rdma_pair(_metadata, cfd, sfd, NB_BYTES, NB_BYTES);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, close(lfd));
}

/* ---------------------------------------------------------------------------------------- */
/* SO_RCVLOWAT                                                                               */

#define LOWAT (64 * 1024)
/*
 * A handshake takes well under a second here. One that read its messages under the
 * application's SO_RCVLOWAT would wait out its timeout (5 s; 30 s on debug kernels): TCP wakes
 * a reader only once that many bytes are in.
 */
#define HANDSHAKE_MAX_MS 4000

struct late_write {
	int fd;
	const uint8_t *data;
	size_t len;
	ssize_t ret;
};

static void *write_late(void *arg)
{
	struct late_write *w = arg;

	usleep(200 * 1000);
	w->ret = write_all(w->fd, w->data, w->len);
	return NULL;
}

/* As TCP: the listener's SO_RCVLOWAT is inherited; poll and recv wait for that many bytes. */
TEST_F(rdma, so_rcvlowat)
{
	const struct topo *v = variant->topo;
	static uint8_t out[LOWAT], got[2 * LOWAT];
	struct late_write w = { .data = out + 1000, .len = LOWAT - 1000 };
	struct pollfd pfd = { .events = POLLIN };
	int lfd, cfd, sfd, lowat = LOWAT;
	uint16_t port;
	pthread_t t;
	double start;

	lfd = listen_in(_metadata, v, NS_SERVER, v->addr_b, true, &port);
	ASSERT_EQ(0, setsockopt(lfd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)));
	cfd = socket_in(_metadata, v, NS_CLIENT, true, 0);
	ASSERT_EQ(0, setsockopt(cfd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)));
	start = now_ms();
	ASSERT_EQ(0, connect_to(v, cfd, v->addr_b, port)) TH_LOG("connect: %s", strerror(errno));
	sfd = accept_within(_metadata, lfd, 0);
	EXPECT_GT(HANDSHAKE_MAX_MS, now_ms() - start) TH_LOG("connect + accept took %.0f ms",
							      now_ms() - start);
	expect_mode(_metadata, "client", cfd, RSMC_MODE_RDMA, 0, 0, NULL);
	expect_mode(_metadata, "server", sfd, RSMC_MODE_RDMA, 0, 0, NULL);

	pattern_fill(out, 73, 0, sizeof(out));
	ASSERT_EQ(1000, write_all(cfd, out, 1000));
	pfd.fd = sfd;
	EXPECT_EQ(0, poll(&pfd, 1, 300)) TH_LOG("readable below SO_RCVLOWAT: 0x%x", pfd.revents);
	w.fd = cfd;
	ASSERT_EQ(0, pthread_create(&t, NULL, write_late, &w));
	EXPECT_EQ(LOWAT, recv(sfd, got, sizeof(got), 0)) TH_LOG("%s", strerror(errno));
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(LOWAT - 1000, w.ret);
	EXPECT_EQ(0, memcmp(out, got, LOWAT));

	ASSERT_EQ(LOWAT, write_all(cfd, out, LOWAT));
	EXPECT_TRUE(wait_events(_metadata, sfd, EPOLLIN, EVENT_WAIT_MS) & EPOLLIN);
	EXPECT_EQ(LOWAT, recv(sfd, got, sizeof(got), 0)) TH_LOG("%s", strerror(errno));
	expect_rdma_pair(_metadata, cfd, sfd, 2 * LOWAT, 0);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, close(lfd));
}

/*
 * SO_RCVLOWAT set while a non-blocking connect still handshakes takes effect once the connect
 * is done: the handshake does not read under it. Set it over and over until then, so that
 * some of the calls land while the handshake reads.
 */
TEST_F(rdma, so_rcvlowat_during_nonblocking_connect)
{
	const struct topo *v = variant->topo;
	int lfd, cfd, sfd, ret, lowat = LOWAT, got_lowat = 0, sets = 0;
	struct pollfd pfd = { .events = POLLOUT };
	socklen_t len = sizeof(got_lowat);
	static uint8_t out[1000];
	uint16_t port;
	double start;

	lfd = listen_in(_metadata, v, NS_SERVER, v->addr_b, true, &port);
	cfd = socket_in(_metadata, v, NS_CLIENT, true, SOCK_NONBLOCK);
	start = now_ms();
	ret = connect_to(v, cfd, v->addr_b, port);
	if (ret)
		ASSERT_EQ(EINPROGRESS, errno) TH_LOG("connect: %s", strerror(errno));
	pfd.fd = cfd;
	do {
		ASSERT_EQ(0, setsockopt(cfd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)));
		sets++;
		ret = poll(&pfd, 1, 1);
	} while (ret == 0 && now_ms() - start < EVENT_WAIT_MS);
	EXPECT_EQ(1, ret) TH_LOG("not connected after %d SO_RCVLOWAT sets", sets);
	EXPECT_GT(HANDSHAKE_MAX_MS, now_ms() - start) TH_LOG("connect took %.0f ms, %d sets",
							      now_ms() - start, sets);
	expect_mode(_metadata, "client", cfd, RSMC_MODE_RDMA, 0, 0, NULL);
	ASSERT_EQ(0, getsockopt(cfd, SOL_SOCKET, SO_RCVLOWAT, &got_lowat, &len));
	EXPECT_EQ(LOWAT, got_lowat);
	sfd = accept_within(_metadata, lfd, 0);

	/* It took effect on the data path too. */
	ASSERT_EQ((ssize_t)sizeof(out), write_all(sfd, out, sizeof(out)));
	pfd = (struct pollfd){ .fd = cfd, .events = POLLIN };
	EXPECT_EQ(0, poll(&pfd, 1, 300)) TH_LOG("readable below SO_RCVLOWAT: 0x%x", pfd.revents);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, close(lfd));
}

/* ---------------------------------------------------------------------------------------- */
/* abort                                                                                      */

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

#define ABORT_BYTES 16384

TEST_F(rdma, abort)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct blocked_read r = { .ret = -2 };
	uint8_t out[ABORT_BYTES], got[ABORT_BYTES];
	struct timespec deadline;
	pthread_t t;
	int cfd, sfd;

	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	/* Some traffic first, so that the connection is in full use when it is reset. */
	pattern_fill(out, 81, 0, sizeof(out));
	ASSERT_EQ(ABORT_BYTES, write_all(cfd, out, sizeof(out)));
	ASSERT_EQ(ABORT_BYTES, read_all(sfd, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(out, got, sizeof(got)));
	ASSERT_EQ(ABORT_BYTES, write_all(sfd, got, sizeof(got)));
	ASSERT_EQ(ABORT_BYTES, read_all(cfd, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(out, got, sizeof(got)));
	expect_rdma_pair(_metadata, cfd, sfd, ABORT_BYTES, ABORT_BYTES);

	/* The server blocks in recv; the client closes with SO_LINGER {1, 0}: a reset. */
	r.fd = sfd;
	ASSERT_EQ(0, pthread_create(&t, NULL, read_one, &r));
	msleep(300);
	ASSERT_EQ(0, setsockopt(cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)))
		TH_LOG("SO_LINGER: %s", strerror(errno));
	EXPECT_EQ(0, close(cfd));
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += EVENT_WAIT_MS / 1000;
	ASSERT_EQ(0, pthread_timedjoin_np(t, NULL, &deadline)) TH_LOG("recv still blocked");
	EXPECT_EQ(-1, r.ret);
	EXPECT_EQ(ECONNRESET, r.err) TH_LOG("recv: %s", strerror(r.err));
	/* The error was reported; the connection is gone for sending too. */
	errno = 0;
	EXPECT_EQ(-1, send(sfd, "x", 1, MSG_NOSIGNAL));
	EXPECT_EQ(EPIPE, errno) TH_LOG("send after reset: %s", strerror(errno));
	EXPECT_EQ(0, close(sfd));
}

/* ---------------------------------------------------------------------------------------- */
/* fallback                                                                                   */

#define FALLBACK_UP ((1ULL << 20) + 1)
#define FALLBACK_DOWN ((1ULL << 20) + 2)

TEST_F_TIMEOUT(rdma, fallback_plain_tcp_server, 120)
{
	struct xfer x[4];
	int cfd, sfd;

	make_pair(_metadata, variant->topo, true, false, &cfd, &sfd);
	duplex(_metadata, cfd, sfd, FALLBACK_UP, FALLBACK_DOWN, 91, true, x);
	expect_info(_metadata, "AF_SMC client of a TCP server", cfd, RSMC_MODE_TCP,
		    RSMC_DECL_PEERNOSMC, 0, 0, 0, FALLBACK_UP, FALLBACK_DOWN);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

TEST_F_TIMEOUT(rdma, fallback_plain_tcp_client, 120)
{
	struct xfer x[4];
	int cfd, sfd;

	make_pair(_metadata, variant->topo, false, true, &cfd, &sfd);
	duplex(_metadata, cfd, sfd, FALLBACK_UP, FALLBACK_DOWN, 93, true, x);
	expect_info(_metadata, "AF_SMC server of a TCP client", sfd, RSMC_MODE_TCP,
		    RSMC_DECL_PEERNOSMC, 0, 0, 0, FALLBACK_DOWN, FALLBACK_UP);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/* Both ends in rsmc_a, over loopback: no RDMA device serves the route. */
TEST_F_TIMEOUT(rdma, fallback_no_rdma_route, 120)
{
	const struct topo *v = variant->topo;
	struct xfer x[4];
	uint16_t port;
	int lfd, cfd, sfd;

	lfd = listen_in(_metadata, v, NS_CLIENT, v->addr_lo, true, &port);
	cfd = socket_in(_metadata, v, NS_CLIENT, true, 0);
	ASSERT_EQ(0, connect_to(v, cfd, v->addr_lo, port)) TH_LOG("connect: %s", strerror(errno));
	sfd = accept_within(_metadata, lfd, 0);
	duplex(_metadata, cfd, sfd, FALLBACK_UP, FALLBACK_DOWN, 95, true, x);
	expect_info(_metadata, "loopback client", cfd, RSMC_MODE_TCP, RSMC_DECL_NOSMCRDEV, 0, 0, 0,
		    FALLBACK_UP, FALLBACK_DOWN);
	expect_info(_metadata, "loopback server", sfd, RSMC_MODE_TCP, RSMC_DECL_PEERDECL,
		    RSMC_DECL_NOSMCRDEV, 0, 0, FALLBACK_DOWN, FALLBACK_UP);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	EXPECT_EQ(0, close(lfd));
}

/* ---------------------------------------------------------------------------------------- */
/* The RDMA device goes away mid-transfer (last: it deletes rxe_b, then adds it back).        */

FIXTURE(removal) {};

FIXTURE_VARIANT(removal) {
	const struct topo *topo;
};

FIXTURE_VARIANT_ADD(removal, ipv4) { .topo = &topo4 };
FIXTURE_VARIANT_ADD(removal, ipv6) { .topo = &topo6 };

/*
 * Adds rxe_b again if it is gone, as qemu/guest-setup creates it, then waits (up to 10 s) for
 * its IPv4 and IPv6 GIDs and for rsmc to list it. Returns NULL once all is back, else what
 * failed.
 */
static const char *restore_rxe_b(void)
{
	int i, ret;

	if (access("/sys/class/infiniband/rxe_b", F_OK)) {
		ret = system("ip netns exec rsmc_b rdma link add rxe_b type rxe netdev veth_b");
		if (ret)
			return "rdma link add rxe_b";
	}
	ret = system("g=/sys/class/infiniband/rxe_b/ports/1/gids; for _ in $(seq 200); do "
		     "grep -qx 0000:0000:0000:0000:0000:ffff:c000:0202 $g/* 2>/dev/null && "
		     "grep -qx 2001:0db8:0000:0000:0000:0000:0000:0002 $g/* 2>/dev/null && exit 0; "
		     "sleep 0.05; done; exit 1");
	if (ret)
		return "waiting for the GIDs of rxe_b";
	for (i = 0; i < 200 && rsmc_device_napi_id("rxe_b") < 0; i++)
		msleep(50);
	return i < 200 ? NULL : "waiting for rsmc to list rxe_b";
}

FIXTURE_SETUP(removal)
{
	const char *failed = restore_rxe_b();

	signal(SIGPIPE, SIG_IGN);
	ASSERT_EQ(NULL, failed) TH_LOG("rxe_b missing: %s failed", failed);
}

/*
 * In the parent: runs even when the test was killed by its timeout. (Not EXPECT: after an
 * ASSERT in the child, the shared trigger flag would print its message whatever the outcome.)
 */
FIXTURE_TEARDOWN_PARENT(removal)
{
	const char *failed = restore_rxe_b();

	if (failed) {
		TH_LOG("adding rxe_b back: %s failed", failed);
		_metadata->exit_code = KSFT_FAIL;
	}
}

/* How long a transfer may stall before the guard timeouts report it as hung. */
#define REMOVAL_GUARD_S 20

/* Bytes each way before the device goes. */
#define FLOWING_BYTES (1u << 20)

/*
 * Starts a transfer each way between @cfd and @sfd (threads @t, state @x) and waits until data
 * flows both ways: several wraps of the rings. A hang then shows up as EAGAIN after the guard
 * time, not as a test timeout.
 */
static void flowing_duplex(struct __test_metadata *_metadata, int cfd, int sfd, int seed,
			   struct xfer x[4], pthread_t t[4])
{
	const struct timeval guard = { .tv_sec = REMOVAL_GUARD_S };

	for (int i = 0; i < 2; i++) {
		int fd = i ? sfd : cfd;

		ASSERT_EQ(0, setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &guard, sizeof(guard)));
		ASSERT_EQ(0, setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &guard, sizeof(guard)));
	}
	duplex_init(x, cfd, sfd, BULK_BYTES, BULK_BYTES, seed, false);
	duplex_start(_metadata, x, t);
	for (double t0 = now_ms(); now_ms() - t0 < 60000; msleep(20))
		if (xfer_done(&x[1]) >= FLOWING_BYTES && xfer_done(&x[3]) >= FLOWING_BYTES)
			break;
	EXPECT_LE(FLOWING_BYTES, xfer_done(&x[1])) TH_LOG("client->server stalled");
	EXPECT_LE(FLOWING_BYTES, xfer_done(&x[3])) TH_LOG("server->client stalled");
}

TEST_F_TIMEOUT(removal, device_removal, 300)
{
	static const char *const name[4] = {
		"client sender", "server receiver", "server sender", "client receiver",
	};
	const struct topo *v = variant->topo;
	struct timespec deadline;
	struct xfer x[4], y[4];
	double t_del;
	pthread_t t[4];
	int cfd, sfd;

	smc_pair(_metadata, v, &cfd, &sfd);
	/* Over TCP, removing the RDMA device would prove nothing. */
	ASSERT_TRUE(expect_mode(_metadata, "client", cfd, RSMC_MODE_RDMA, 0, 0, NULL));
	ASSERT_TRUE(expect_mode(_metadata, "server", sfd, RSMC_MODE_RDMA, 0, 0, NULL));
	flowing_duplex(_metadata, cfd, sfd, 101, x, t);

	ASSERT_EQ(0, system("ip netns exec rsmc_b rdma link del rxe_b"));
	t_del = now_ms();
	TH_LOG("rxe_b deleted after %llu and %llu bytes", (unsigned long long)xfer_done(&x[1]),
	       (unsigned long long)xfer_done(&x[3]));

	/* Every side fails, in TCP's ways, well within the guard time; none may hang. */
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 3 * REMOVAL_GUARD_S;
	for (int i = 0; i < 4; i++) {
		ASSERT_EQ(0, pthread_timedjoin_np(t[i], NULL, &deadline))
			TH_LOG("%s still blocked %.0f s after the removal", name[i],
			       (now_ms() - t_del) / 1e3);
	}
	for (int i = 0; i < 4; i++) {
		EXPECT_GT(x[i].total, x[i].done) TH_LOG("%s completed", name[i]);
		EXPECT_NE(EAGAIN, x[i].err) TH_LOG("%s hung for %d s (%s)", name[i],
						   REMOVAL_GUARD_S, x[i].failed);
		if (i % 2)
			EXPECT_EQ(-1, x[i].mismatch) TH_LOG("%s: wrong byte at stream offset %lld",
							    name[i], (long long)x[i].mismatch);
	}
	/*
	 * As TCP reports a reset once per socket: a sender fails (with the error, or EPIPE
	 * after its receiver took it); a receiver fails, or ends at EOF if its sender took it.
	 */
	for (int snd = 0; snd < 4; snd += 2) {
		int rcv = 3 - snd;

		EXPECT_TRUE(is_abort_errno(x[snd].err))
			TH_LOG("%s ended %.1f s after the removal with %s%s%s; want ECONNABORTED, "
			       "ECONNRESET or EPIPE", name[snd], (x[snd].end_ms - t_del) / 1e3,
			       x[snd].failed ?: "no error", x[snd].err ? ": " : "",
			       x[snd].err ? strerror(x[snd].err) : "");
		EXPECT_TRUE(is_abort_errno(x[rcv].err) ||
			    (x[rcv].eof && x[snd].err != EPIPE && is_abort_errno(x[snd].err)))
			TH_LOG("%s ended %.1f s after the removal with %s%s%s%s", name[rcv],
			       (x[rcv].end_ms - t_del) / 1e3, x[rcv].failed ?: "no error",
			       x[rcv].err ? ": " : "", x[rcv].err ? strerror(x[rcv].err) : "",
			       x[rcv].eof ? " (EOF) and its sender saw no reset" : "");
	}
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));

	/* A new connection works, over TCP: rsmc_b has no RDMA device now and declines. */
	smc_pair(_metadata, v, &cfd, &sfd);
	duplex(_metadata, cfd, sfd, FALLBACK_UP, FALLBACK_DOWN, 103, true, y);
	expect_info(_metadata, "client after removal", cfd, RSMC_MODE_TCP, RSMC_DECL_PEERDECL,
		    RSMC_DECL_NOSMCRDEV, 0, 0, FALLBACK_UP, FALLBACK_DOWN);
	expect_info(_metadata, "server without device", sfd, RSMC_MODE_TCP, RSMC_DECL_NOSMCRDEV, 0,
		    0, 0, FALLBACK_DOWN, FALLBACK_UP);
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
}

/*
 * Waits up to 10 s for rxe_a to have @links links and @conns connections; whether it did.
 * @got: what it had last.
 */
static bool rxe_a_settles(long links, long conns, long got[2])
{
	for (int tries = 0; tries < 200; tries++, msleep(50)) {
		if (rsmc_device_links("rxe_a", &got[0], &got[1]))
			return false;
		if (got[0] == links && got[1] == conns)
			return true;
	}
	return false;
}

/*
 * Well below the time the transport's retries take to fail what is in flight to a peer that
 * is gone (over 5 s with rsmc's queue pair attributes on rxe).
 */
#define PEER_GONE_MS 3000

/*
 * A device that goes tells the peer of each of its links (LLC DELETE LINK): the peer's end
 * goes at once. Without that, an idle link would linger (link_linger_ms), and a busy one
 * would hold its connections until the transport's retries failed what they had in flight.
 */
TEST_F_TIMEOUT(removal, peer_ends_its_links_when_the_device_goes, 180)
{
	long linger, got[2];
	struct xfer x[4];
	pthread_t t[4];
	int cfd, sfd;
	double t_del;

	ASSERT_EQ(0, rsmc_read_long(RSMC_LINK_LINGER_FILE, &linger));
	/* An idle link, which would stay for longer than this test takes. */
	make_idle_link(_metadata, variant->topo, 120000);
	ASSERT_EQ(0, system("ip netns exec rsmc_b rdma link del rxe_b"));
	EXPECT_TRUE(rxe_a_settles(0, 0, got))
		TH_LOG("rxe_a still has %ld links with %ld connections after rxe_b went", got[0],
		       got[1]);

	/* A link with data in flight both ways. */
	ASSERT_EQ(NULL, restore_rxe_b());
	smc_pair(_metadata, variant->topo, &cfd, &sfd);
	ASSERT_TRUE(expect_mode(_metadata, "client", cfd, RSMC_MODE_RDMA, 0, 0, NULL));
	flowing_duplex(_metadata, cfd, sfd, 107, x, t);
	ASSERT_EQ(0, system("ip netns exec rsmc_b rdma link del rxe_b"));
	t_del = now_ms();
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(0, pthread_join(t[i], NULL));
	EXPECT_EQ(0, close(cfd));
	EXPECT_EQ(0, close(sfd));
	EXPECT_TRUE(rxe_a_settles(0, 0, got))
		TH_LOG("rxe_a still has %ld links with %ld connections after rxe_b went", got[0],
		       got[1]);
	EXPECT_GT(PEER_GONE_MS, now_ms() - t_del)
		TH_LOG("rxe_a's link and connections went %.0f ms after rxe_b", now_ms() - t_del);
	EXPECT_EQ(0, rsmc_write_long(RSMC_LINK_LINGER_FILE, linger));
}

TEST_HARNESS_MAIN
