// SPDX-License-Identifier: GPL-2.0
/*
 * zcstream: a one-way stream over AF_SMC, copied or with MSG_ZEROCOPY, for `make bench`.
 *
 *   zcstream server -p PORT [-6]
 *   zcstream client -a ADDR -p PORT [-6] [-n MIB] [-s BYTES] [-z]
 *
 * The server reads until EOF. The client sends MIB mebibytes in sends of BYTES (64 KiB) and
 * prints one line: throughput, and its own CPU time (user + system) per GiB. With -z it sets
 * SO_ZEROCOPY and sends with MSG_ZEROCOPY from a pool of buffers, reusing a buffer only once
 * its send was notified, and counts the notifications that say the data was copied.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef AF_SMC
#define AF_SMC 43
#endif
#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif

#define POOL 16

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static socklen_t make_addr(bool v6, const char *ip, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		if (ip && inet_pton(AF_INET6, ip, &a->sin6_addr) != 1)
			die("address");
		return sizeof(*a);
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;

	a->sin_family = AF_INET;
	a->sin_port = htons(port);
	if (ip && inet_pton(AF_INET, ip, &a->sin_addr) != 1)
		die("address");
	return sizeof(*a);
}

static int serve(bool v6, int port)
{
	static char buf[1 << 20];
	struct sockaddr_storage ss;
	socklen_t len = make_addr(v6, NULL, port, &ss);
	int lfd = socket(AF_SMC, SOCK_STREAM, v6), fd, one = 1;
	unsigned long long total = 0;
	ssize_t n;

	if (lfd < 0)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&ss, len) || listen(lfd, 1))
		die("bind/listen");
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		die("accept");
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		total += n;
	if (n < 0)
		die("read");
	printf("received %llu bytes\n", total);
	return 0;
}

/* Reads every waiting notification: marks the ids done, counts the copied ones. */
static void reap(int fd, bool *done, unsigned long *copied, bool wait)
{
	char control[128];

	for (;;) {
		struct msghdr msg = { .msg_control = control, .msg_controllen = sizeof(control) };
		struct sock_extended_err *ee;
		struct cmsghdr *cm;

		if (wait) {
			struct pollfd p = { .fd = fd };

			if (poll(&p, 1, 10000) != 1)
				die("no notification for 10 s");
			wait = false;
		}
		if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
			if (errno == EAGAIN)
				return;
			die("recvmsg(MSG_ERRQUEUE)");
		}
		cm = CMSG_FIRSTHDR(&msg);
		if (!cm)
			die("notification without cmsg");
		ee = (struct sock_extended_err *)CMSG_DATA(cm);
		for (uint32_t id = ee->ee_info; id <= ee->ee_data; id++)
			done[id] = true;
		if (ee->ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
			*copied += ee->ee_data - ee->ee_info + 1;
	}
}

static int client(bool v6, const char *ip, int port, unsigned long mib, size_t size, bool zc)
{
	unsigned long sends = (mib << 20) / size, copied = 0;
	uint8_t *pool = mmap(NULL, POOL * size, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	bool *done = calloc(sends, sizeof(*done));
	struct sockaddr_storage ss;
	socklen_t len = make_addr(v6, ip, port, &ss);
	int fd = socket(AF_SMC, SOCK_STREAM, v6), one = 1;
	double t0, c0, secs, cpu;

	if (fd < 0 || pool == MAP_FAILED || !done)
		die("setup");
	memset(pool, 'z', POOL * size);
	if (connect(fd, (struct sockaddr *)&ss, len))
		die("connect");
	if (zc && setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)))
		die("SO_ZEROCOPY");
	t0 = now_s();
	c0 = cpu_s();
	for (unsigned long i = 0; i < sends; i++) {
		uint8_t *buf = pool + (i % POOL) * size;
		size_t off = 0;

		/* A buffer is reused only once the send that last used it was notified. */
		while (zc && i >= POOL && !done[i - POOL])
			reap(fd, done, &copied, true);
		if (zc) {
			if (send(fd, buf, size, MSG_ZEROCOPY) != (ssize_t)size)
				die("send");
			continue;
		}
		while (off < size) {
			ssize_t n = send(fd, buf + off, size - off, 0);

			if (n <= 0)
				die("send");
			off += n;
		}
	}
	while (zc && !done[sends - 1])
		reap(fd, done, &copied, true);
	shutdown(fd, SHUT_WR);
	/* The peer has read everything once it closes. */
	while (read(fd, pool, size) > 0)
		;
	secs = now_s() - t0;
	cpu = cpu_s() - c0;
	printf("mode=%s bytes=%lu mib_s=%.1f cpu_s_per_gib=%.2f copied=%lu\n",
	       zc ? "zerocopy" : "copy", sends * size, sends * size / secs / (1 << 20),
	       cpu / (sends * size / (double)(1 << 30)), copied);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	const char *ip = NULL;
	unsigned long mib = 256;
	size_t size = 64 << 10;
	bool v6 = false, zc = false;
	int port = 0, c;

	if (argc < 2)
		goto usage;
	optind = 2;
	while ((c = getopt(argc, argv, "a:p:n:s:6z")) != -1) {
		switch (c) {
		case 'a': ip = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'n': mib = strtoul(optarg, NULL, 0); break;
		case 's': size = strtoul(optarg, NULL, 0); break;
		case '6': v6 = true; break;
		case 'z': zc = true; break;
		default: goto usage;
		}
	}
	if (!port || !size)
		goto usage;
	if (!strcmp(argv[1], "server"))
		return serve(v6, port);
	if (!strcmp(argv[1], "client") && ip)
		return client(v6, ip, port, mib, size, zc);
usage:
	fprintf(stderr, "usage: zcstream server -p PORT [-6] | client -a ADDR -p PORT [-6] [-n MIB] "
			"[-s BYTES] [-z]\n");
	return 2;
}
