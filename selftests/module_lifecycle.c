// SPDX-License-Identifier: GPL-2.0
/*
 * Module lifecycle: open sockets pin rsmc.ko; rsmc and stock smc.ko exclude each other.
 * Runs last: it unloads and reloads rsmc (RSMC_MODULE, RSMC_KDIR come from qemu/run).
 */
#include <errno.h>
#include <sys/socket.h>

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
 * Waits up to 30 s for the connections of earlier programs to go: a closed connection holds
 * its socket (and so the module) until its peer closed too, or until its link failed, which
 * for a peer whose device was removed takes the transport's retries.
 */
static bool connections_gone(void)
{
	long links_a, conns_a, links_b, conns_b;

	for (int tries = 0; tries < 300; tries++, msleep(100)) {
		if (rsmc_device_links("rxe_a", &links_a, &conns_a) ||
		    rsmc_device_links("rxe_b", &links_b, &conns_b))
			return false;
		if (!conns_a && !conns_b)
			return true;
	}
	return false;
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

	ASSERT_TRUE(connections_gone()) TH_LOG("rsmc connections of earlier programs remain");
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
