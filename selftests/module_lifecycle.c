// SPDX-License-Identifier: GPL-2.0
/*
 * Module lifecycle: open sockets pin rsmc.ko; busy pollers of its NAPIs do not, and survive its
 * unload; rsmc and stock smc.ko exclude each other. Runs last: it unloads and reloads rsmc
 * (RSMC_MODULE, RSMC_KDIR come from qemu/run).
 */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <sys/socket.h>

#include "busy_poll_uapi.h"
#include "kselftest_harness.h"
#include "rsmc_selftest.h"

static const char *rsmc_ko(void)
{
	return getenv("RSMC_MODULE");
}

static int load_smc(void)
{
	char path[512];
	const char *kdir = getenv("RSMC_KDIR");

	if (!kdir)
		return -1;
	snprintf(path, sizeof(path), "%s/net/smc/smc.ko", kdir);
	return rsmc_load_module(path);
}

/*
 * Unloads rsmc, waiting up to 10 s for the last references of closed sockets to go: a released
 * connection drops its socket from a work item, a moment after it left its link.
 */
static int delete_when_released(void)
{
	int ret = -1;

	for (int tries = 0; tries < 100; tries++, msleep(100)) {
		ret = rsmc_delete_module("rsmc");
		if (!ret || errno != EWOULDBLOCK)
			break;
	}
	return ret;
}

TEST(open_socket_pins_module)
{
	int fd;

	/*
	 * A closed connection holds its socket (and so the module) until its peer closed too, or
	 * until its link failed, which for a peer whose device was removed takes the transport's
	 * retries. Earlier programs close both ends of their connections, so none waits out
	 * net.ipv4.tcp_fin_timeout (60 s): 20 s (the test has 30 s) is enough.
	 */
	assert_connections_gone(_metadata, "connections of earlier programs");
	fd = socket(AF_SMC, SOCK_STREAM, 0);
	ASSERT_LE(0, fd);
	errno = 0;
	EXPECT_EQ(-1, rsmc_delete_module("rsmc"));
	EXPECT_EQ(EWOULDBLOCK, errno);
	/* Still fully working while pinned. */
	EXPECT_LE(0, rsmc_device_napi_id("rxe_a"));

	ASSERT_EQ(0, close(fd));
	ASSERT_EQ(0, delete_when_released()) TH_LOG("rmmod: %s", strerror(errno));
	/* Gone, with its devices (no socket() here: it would autoload stock smc.ko). */
	EXPECT_EQ(-1, access("/sys/module/rsmc", F_OK));
	EXPECT_EQ(-1, rsmc_device_napi_id("rxe_a"));

	ASSERT_NE(NULL, rsmc_ko());
	ASSERT_EQ(0, rsmc_load_module(rsmc_ko())) TH_LOG("insmod: %s", strerror(errno));
	/* The reloaded module picks up the existing devices again. */
	EXPECT_LE(0, rsmc_device_napi_id("rxe_a"));
	EXPECT_LE(0, rsmc_device_napi_id("rxe_b"));
	fd = socket(AF_SMC, SOCK_STREAM, 0);
	EXPECT_LE(0, fd);
	close(fd);
}

/* How long one io_uring wait busy polls (io_uring's cap), and waits. */
#define URING_SPIN_USECS 10000

/*
 * An io_uring ring that busy polls the NAPIs of both devices by id (static tracking: no socket
 * involved), with busy polling preferred. With @sqpoll, its SQPOLL thread polls all along.
 */
static int napi_polling_ring(struct io_uring *ring, bool sqpoll, const int napi_ids[2])
{
	struct io_uring_params params = {
		.flags = sqpoll ? IORING_SETUP_SQPOLL : 0,
		.sq_thread_idle = 60000,
	};
	struct rsmc_io_uring_napi napi = {
		.busy_poll_to = URING_SPIN_USECS,
		.prefer_busy_poll = 1,
		.opcode = RSMC_IO_URING_NAPI_REGISTER_OP,
		.op_param = RSMC_IO_URING_NAPI_TRACKING_STATIC,
	};
	int ret = io_uring_queue_init_params(8, ring, &params);

	if (ret) {
		errno = -ret;
		return -1;
	}
	if (rsmc_io_uring_register_napi(ring->ring_fd, &napi))
		return -1;
	for (int i = 0; i < 2; i++) {
		struct rsmc_io_uring_napi add = {
			.opcode = RSMC_IO_URING_NAPI_STATIC_ADD_ID,
			.op_param = napi_ids[i],
		};

		if (rsmc_io_uring_register_napi(ring->ring_fd, &add))
			return -1;
	}
	return 0;
}

/* A thread that waits on a ring with nothing to complete, busy polling in each wait. */
struct uring_waiter {
	struct io_uring ring;
	bool stop;
	/* results */
	unsigned long waits;	/* waits that timed out, as they all should */
	int err;		/* how a wait failed otherwise, as -errno; 0 if none did */
};

static void *wait_on_ring(void *arg)
{
	struct uring_waiter *w = arg;
	struct __kernel_timespec ts = { .tv_nsec = URING_SPIN_USECS * 1000 };
	struct io_uring_cqe *cqe;
	int ret;

	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		ret = io_uring_wait_cqe_timeout(&w->ring, &cqe, &ts);
		if (ret != -ETIME && ret != -EINTR) {
			w->err = ret ? ret : -EPROTO;
			break;
		}
		__atomic_add_fetch(&w->waits, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

/*
 * A NAPI id is no reference to rsmc: rings busy poll both devices' NAPIs, one in an SQPOLL
 * thread and one in a thread's waits, with interrupt deferral on (so that each busy poll arms
 * the NAPI's timer), while rsmc unloads. The unload takes the NAPIs away under them; they go
 * on polling nothing, and a reloaded rsmc works. Use-after-free shows on the debug kernel.
 */
TEST(unload_under_napi_pollers)
{
	struct uring_waiter waiter = { 0 };
	struct rsmc_device_stats s0, s1;
	struct io_uring sq_ring;
	unsigned long waits;
	int napi_ids[2], fd;
	pthread_t t;

	assert_connections_gone(_metadata, "connections of earlier programs");
	napi_ids[0] = rsmc_device_napi_id("rxe_a");
	napi_ids[1] = rsmc_device_napi_id("rxe_b");
	ASSERT_LT(0, napi_ids[0]);
	ASSERT_LT(0, napi_ids[1]);
	ASSERT_EQ(0, rsmc_set_napi_defer("rxe_a", 1000, 500000))
		TH_LOG("writing %s: %s", RSMC_NAPI_DEFER_FILE, strerror(errno));
	ASSERT_EQ(0, rsmc_device_stats("rxe_a", &s0));

	ASSERT_EQ(0, napi_polling_ring(&sq_ring, true, napi_ids))
		TH_LOG("SQPOLL ring: %s", strerror(errno));
	ASSERT_EQ(0, napi_polling_ring(&waiter.ring, false, napi_ids))
		TH_LOG("ring: %s", strerror(errno));
	ASSERT_EQ(0, pthread_create(&t, NULL, wait_on_ring, &waiter));
	msleep(200);
	ASSERT_EQ(0, rsmc_device_stats("rxe_a", &s1));
	EXPECT_LT(s0.busy_polls, s1.busy_polls) TH_LOG("nothing busy polls rxe_a");
	TH_LOG("%llu busy polls of rxe_a in 200 ms", s1.busy_polls - s0.busy_polls);

	ASSERT_EQ(0, delete_when_released()) TH_LOG("rmmod under busy pollers: %s",
						     strerror(errno));
	EXPECT_EQ(-1, access("/sys/module/rsmc", F_OK));
	/* The waits go on, polling a NAPI id that is gone. */
	waits = __atomic_load_n(&waiter.waits, __ATOMIC_ACQUIRE);
	msleep(100);
	EXPECT_LT(waits, __atomic_load_n(&waiter.waits, __ATOMIC_ACQUIRE))
		TH_LOG("the waiting thread stopped: %s", strerror(-waiter.err));

	__atomic_store_n(&waiter.stop, true, __ATOMIC_RELEASE);
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(0, waiter.err) TH_LOG("a wait failed: %s", strerror(-waiter.err));
	io_uring_queue_exit(&waiter.ring);
	io_uring_queue_exit(&sq_ring);

	ASSERT_NE(NULL, rsmc_ko());
	ASSERT_EQ(0, rsmc_load_module(rsmc_ko())) TH_LOG("insmod: %s", strerror(errno));
	EXPECT_LE(0, rsmc_device_napi_id("rxe_a"));
	fd = socket(AF_SMC, SOCK_STREAM, 0);
	EXPECT_LE(0, fd);
	close(fd);
}

/*
 * The loser's init fails with -EEXIST from sock_register(), which the module loader reports
 * to userspace as EBUSY (EEXIST means "a module of that name is loaded").
 */
TEST(stock_smc_and_rsmc_exclude_each_other)
{
	int fd;

	/* rsmc owns AF_SMC: stock smc.ko cannot load. */
	errno = 0;
	EXPECT_EQ(-1, load_smc());
	EXPECT_EQ(EBUSY, errno) TH_LOG("smc.ko: %s", strerror(errno));
	EXPECT_EQ(-1, access("/sys/module/smc", F_OK));

	/* Stock smc.ko owns AF_SMC: rsmc cannot load, and says why. */
	ASSERT_EQ(0, delete_when_released()) TH_LOG("rmmod rsmc: %s", strerror(errno));
	ASSERT_EQ(0, load_smc()) TH_LOG("smc.ko: %s", strerror(errno));
	errno = 0;
	EXPECT_EQ(-1, rsmc_load_module(rsmc_ko()));
	EXPECT_EQ(EBUSY, errno);
	EXPECT_EQ(-1, access("/sys/module/rsmc", F_OK));
	EXPECT_EQ(0, system("dmesg | grep -q 'rsmc: AF_SMC is already registered'"));
	/* Nothing of the failed load stays behind. */
	EXPECT_EQ(-1, access("/sys/kernel/debug/rsmc", F_OK));

	/* Back to rsmc. */
	ASSERT_EQ(0, rsmc_delete_module("smc")) TH_LOG("rmmod smc: %s", strerror(errno));
	ASSERT_EQ(0, rsmc_load_module(rsmc_ko())) TH_LOG("insmod: %s", strerror(errno));
	fd = socket(AF_SMC, SOCK_STREAM, 0);
	EXPECT_LE(0, fd);
	close(fd);
	EXPECT_LE(0, rsmc_device_napi_id("rxe_a"));
}

TEST_HARNESS_MAIN
