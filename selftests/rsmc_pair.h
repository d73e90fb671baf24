/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Connected pairs between the VM's two hosts, over IPv4 or IPv6: clients in rsmc_a, servers in
 * rsmc_b, each end AF_SMC or plain TCP. Include after kselftest_harness.h and rsmc_selftest.h.
 */
#ifndef RSMC_PAIR_H
#define RSMC_PAIR_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define NS_CLIENT "rsmc_a"
#define NS_SERVER "rsmc_b"


/* The two hosts of the VM, and the loopback of one, in one address family. */
struct topo {
	const char *name;	/* "ipv4" or "ipv6", for messages */
	int family;		/* AF_INET or AF_INET6: the addresses, and the plain TCP peer */
	int protocol;		/* SMCPROTO_SMC or SMCPROTO_SMC6 */
	const char *addr_a;	/* client side (rsmc_a, veth_a, rxe_a) */
	const char *addr_b;	/* server side (rsmc_b, veth_b, rxe_b) */
	const char *addr_lo;	/* loopback: no RDMA device serves it */
};

static const struct topo topo4 = {
	.name = "ipv4",
	.family = AF_INET,
	.protocol = SMCPROTO_SMC,
	.addr_a = "192.0.2.1",
	.addr_b = "192.0.2.2",
	.addr_lo = "127.0.0.1",
};

static const struct topo topo6 = {
	.name = "ipv6",
	.family = AF_INET6,
	.protocol = SMCPROTO_SMC6,
	.addr_a = "2001:db8::1",
	.addr_b = "2001:db8::2",
	.addr_lo = "::1",
};

static inline socklen_t make_sockaddr(const struct topo *v, const char *ip, uint16_t port,
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

/* A stream socket in the current namespace: AF_SMC, or plain TCP when !smc. */
static inline int stream_socket(const struct topo *v, bool smc, int flags)
{
	if (smc)
		return socket(AF_SMC, SOCK_STREAM | flags, v->protocol);
	return socket(v->family, SOCK_STREAM | flags, 0);
}

/* An unconnected socket in namespace @ns. Leaves the calling thread in @ns. */
static inline int socket_in(struct __test_metadata *_metadata, const struct topo *v,
			    const char *ns, bool smc, int flags)
{
	int fd;

	ASSERT_EQ(0, rsmc_enter_netns(ns)) TH_LOG("setns %s: %s", ns, strerror(errno));
	fd = stream_socket(v, smc, flags);
	ASSERT_LE(0, fd) TH_LOG("socket: %s", strerror(errno));
	return fd;
}

/* A listener in namespace @ns on @ip, on a free port written to *@port. Leaves us in @ns. */
static inline int listen_in(struct __test_metadata *_metadata, const struct topo *v,
			    const char *ns, const char *ip, bool smc, uint16_t *port)
{
	struct sockaddr_storage ss;
	socklen_t len = make_sockaddr(v, ip, 0, &ss);
	int fd = socket_in(_metadata, v, ns, smc, 0);

	ASSERT_NE(0u, len);
	ASSERT_EQ(0, bind(fd, (struct sockaddr *)&ss, len)) TH_LOG("bind: %s", strerror(errno));
	ASSERT_EQ(0, listen(fd, 128)) TH_LOG("listen: %s", strerror(errno));
	len = sizeof(ss);
	ASSERT_EQ(0, getsockname(fd, (struct sockaddr *)&ss, &len))
		TH_LOG("getsockname: %s", strerror(errno));
	*port = sockaddr_port(&ss);
	ASSERT_NE(0, *port);
	return fd;
}

static inline int connect_to(const struct topo *v, int fd, const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = make_sockaddr(v, ip, port, &ss);

	return connect(fd, (struct sockaddr *)&ss, len);
}

/*
 * A connected pair: *cfd in rsmc_a (AF_SMC if @smc_client, else plain TCP) connected to a
 * listener on addr_b in rsmc_b (AF_SMC if @smc_server), *sfd accepted from it.
 */
static inline void make_pair(struct __test_metadata *_metadata, const struct topo *v,
			     bool smc_client, bool smc_server, int *cfd, int *sfd)
{
	uint16_t port;
	int lfd = listen_in(_metadata, v, NS_SERVER, v->addr_b, smc_server, &port);

	*cfd = socket_in(_metadata, v, NS_CLIENT, smc_client, 0);
	ASSERT_EQ(0, connect_to(v, *cfd, v->addr_b, port)) TH_LOG("connect: %s", strerror(errno));
	*sfd = accept_within(_metadata, lfd, 0);
	EXPECT_EQ(0, close(lfd));
}

static inline void smc_pair(struct __test_metadata *_metadata, const struct topo *v, int *cfd,
			    int *sfd)
{
	make_pair(_metadata, v, true, true, cfd, sfd);
}

#endif /* RSMC_PAIR_H */
