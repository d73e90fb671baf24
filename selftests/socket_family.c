// SPDX-License-Identifier: GPL-2.0
/* AF_SMC socket creation and its errno cases, in both VM namespaces. */
#include <errno.h>
#include <sys/socket.h>

#include "kselftest_harness.h"
#include "rsmc_selftest.h"

FIXTURE(family) {};

FIXTURE_VARIANT(family) {
	const char *netns;
};

FIXTURE_VARIANT_ADD(family, ns_a) { .netns = "rsmc_a" };
FIXTURE_VARIANT_ADD(family, ns_b) { .netns = "rsmc_b" };

FIXTURE_SETUP(family)
{
	ASSERT_EQ(0, rsmc_enter_netns(variant->netns));
}

FIXTURE_TEARDOWN(family) {}

TEST_F(family, ipv4_socket_opens_and_closes)
{
	int fd = socket(AF_SMC, SOCK_STREAM, SMCPROTO_SMC);

	ASSERT_LE(0, fd) TH_LOG("socket: %s", strerror(errno));
	EXPECT_EQ(0, close(fd));
}

TEST_F(family, ipv6_socket_opens_and_closes)
{
	int fd = socket(AF_SMC, SOCK_STREAM, SMCPROTO_SMC6);

	ASSERT_LE(0, fd) TH_LOG("socket: %s", strerror(errno));
	EXPECT_EQ(0, close(fd));
}

TEST_F(family, cloexec_nonblock_flags_accepted)
{
	int fd = socket(AF_SMC, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	ASSERT_LE(0, fd);
	EXPECT_EQ(O_NONBLOCK, fcntl(fd, F_GETFL) & O_NONBLOCK);
	EXPECT_EQ(FD_CLOEXEC, fcntl(fd, F_GETFD) & FD_CLOEXEC);
	EXPECT_EQ(0, close(fd));
}

TEST_F(family, wrong_type_is_esocktnosupport)
{
	static const int types[] = { SOCK_DGRAM, SOCK_SEQPACKET, SOCK_RAW, SOCK_RDM };

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		errno = 0;
		EXPECT_EQ(-1, socket(AF_SMC, types[i], 0)) TH_LOG("type %d", types[i]);
		EXPECT_EQ(ESOCKTNOSUPPORT, errno) TH_LOG("type %d", types[i]);
	}
}

TEST_F(family, wrong_protocol_is_eprotonosupport)
{
	static const int protocols[] = { 2, 6, 17, -1 };

	for (size_t i = 0; i < sizeof(protocols) / sizeof(protocols[0]); i++) {
		errno = 0;
		EXPECT_EQ(-1, socket(AF_SMC, SOCK_STREAM, protocols[i]))
			TH_LOG("protocol %d", protocols[i]);
		EXPECT_EQ(EPROTONOSUPPORT, errno) TH_LOG("protocol %d", protocols[i]);
	}
}

TEST_F(family, many_sockets_open_and_close)
{
	int fds[256];

	for (size_t i = 0; i < 256; i++) {
		fds[i] = socket(AF_SMC, SOCK_STREAM, i % 2);
		ASSERT_LE(0, fds[i]);
	}
	for (size_t i = 0; i < 256; i++)
		EXPECT_EQ(0, close(fds[i]));
}

TEST_HARNESS_MAIN
