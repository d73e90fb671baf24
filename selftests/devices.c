// SPDX-License-Identifier: GPL-2.0
/* rsmc sees both rxe devices of the VM, each with its own valid NAPI id. */
#include "kselftest_harness.h"
#include "rsmc_selftest.h"

TEST(both_rxe_devices_seen)
{
	EXPECT_LE(0, rsmc_device_napi_id("rxe_a"));
	EXPECT_LE(0, rsmc_device_napi_id("rxe_b"));
}

TEST(napi_ids_valid_and_distinct)
{
	long min_napi_id = rsmc_kernel_nr_cpus() + 1;
	long a = rsmc_device_napi_id("rxe_a");
	long b = rsmc_device_napi_id("rxe_b");

	ASSERT_LT(1, min_napi_id) TH_LOG("CONFIG_NR_CPUS not found (RSMC_KDIR unset?)");
	EXPECT_LE(min_napi_id, a);
	EXPECT_LE(min_napi_id, b);
	EXPECT_NE(a, b);
}

TEST(devices_know_their_netdev)
{
	char netdev[16] = "";

	ASSERT_LE(0, rsmc_device_lookup("rxe_a", netdev));
	EXPECT_STREQ("veth_a", netdev);
	ASSERT_LE(0, rsmc_device_lookup("rxe_b", netdev));
	EXPECT_STREQ("veth_b", netdev);
}

TEST(unknown_device_absent)
{
	EXPECT_EQ(-1, rsmc_device_napi_id("rxe_nonexistent"));
}

/*
 * A device added at run time gets a NAPI; removing it drops the device and its NAPI.
 * Adding and removing an rxe device takes long on the debug kernel, hence the timeout.
 */
FIXTURE(hotplug) {};

FIXTURE_SETUP(hotplug) {}

FIXTURE_TEARDOWN(hotplug)
{
	/* Leave nothing behind if the test stopped half-way. */
	if (!access("/sys/class/infiniband/rxe_t", F_OK) && system("rdma link del rxe_t"))
		TH_LOG("cleanup: rdma link del rxe_t failed");
	if (!access("/sys/class/net/rsmc_t0", F_OK) && system("ip link del rsmc_t0"))
		TH_LOG("cleanup: ip link del rsmc_t0 failed");
}

TEST_F_TIMEOUT(hotplug, device_add_and_remove_tracked, 180)
{
	long before_a = rsmc_device_napi_id("rxe_a");
	long napi_id;

	ASSERT_EQ(0, system("ip link add rsmc_t0 type veth peer name rsmc_t1 && "
			    "ip link set rsmc_t0 up && "
			    "rdma link add rxe_t type rxe netdev rsmc_t0"));
	napi_id = rsmc_device_napi_id("rxe_t");
	EXPECT_LE(rsmc_kernel_nr_cpus() + 1, napi_id);
	EXPECT_NE(before_a, napi_id);

	ASSERT_EQ(0, system("rdma link del rxe_t && ip link del rsmc_t0"));
	EXPECT_EQ(-1, rsmc_device_napi_id("rxe_t"));
	/* The others are untouched. */
	EXPECT_EQ(before_a, rsmc_device_napi_id("rxe_a"));
	EXPECT_LE(0, rsmc_device_napi_id("rxe_b"));
}

TEST_HARNESS_MAIN
