/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the rsmc kselftests (run inside the VM set up by qemu/run). */
#ifndef RSMC_SELFTEST_H
#define RSMC_SELFTEST_H

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/rsmc.h>
#include "rsmc_devices.h"

/* Moves the calling thread into network namespace @name (rsmc_a or rsmc_b). */
static inline int rsmc_enter_netns(const char *name)
{
	char path[64];
	int fd, ret;

	snprintf(path, sizeof(path), "/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ret = setns(fd, CLONE_NEWNET);
	close(fd);
	return ret;
}

/* Whether this is the debug kernel (KASAN, lockdep, kmemleak): recognised by kmemleak. */
static inline bool rsmc_debug_kernel(void)
{
	return !access("/sys/kernel/debug/kmemleak", F_OK);
}

/* CONFIG_NR_CPUS of the running test kernel: MIN_NAPI_ID is NR_CPUS + 1. */
static inline long rsmc_kernel_nr_cpus(void)
{
	const char *kdir = getenv("RSMC_KDIR");
	char path[512], line[256];
	long nr = -1;
	FILE *f;

	if (!kdir)
		return -1;
	snprintf(path, sizeof(path), "%s/.config", kdir);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CONFIG_NR_CPUS=%ld", &nr) == 1)
			break;
	fclose(f);
	return nr;
}

/*
 * @device's NAPI id, or -1 if rsmc does not list it; copies its netdev name to @netdev
 * (IFNAMSIZ bytes) if @netdev is not NULL.
 */
static inline long rsmc_device_lookup(const char *device, char *netdev)
{
	struct rsmc_device_stats s;

	if (rsmc_device_stats(device, &s))
		return -1;
	if (netdev)
		strcpy(netdev, s.netdev);
	return s.napi_id;
}

static inline long rsmc_device_napi_id(const char *device)
{
	return rsmc_device_lookup(device, NULL);
}

/* The links @device has and the connections on them; 0, or -1 if it is not listed. */
static inline int rsmc_device_links(const char *device, long *links, long *conns)
{
	struct rsmc_device_stats s;

	if (rsmc_device_stats(device, &s))
		return -1;
	*links = s.links;
	*conns = s.connections;
	return 0;
}

#define RSMC_CONNECTIONS_FILE "/sys/kernel/debug/rsmc/connections"

/*
 * How many connections on @device's links debugfs lists with @fields in their line ("closing 1
 * peer_closed 0", say; "" for all); -1 if the file cannot be read.
 */
static inline long rsmc_count_connections(const char *device, const char *fields)
{
	FILE *f = fopen(RSMC_CONNECTIONS_FILE, "r");
	size_t len = strlen(device);
	char line[256];
	long n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += !strncmp(line, device, len) && line[len] == ' ' && strstr(line, fields);
	fclose(f);
	return n;
}

/* Reads one number from the file at @path (a sysctl, say) to *@val; returns 0 or -1. */
static inline int rsmc_read_long(const char *path, long *val)
{
	FILE *f = fopen(path, "r");
	int ok;

	if (!f)
		return -1;
	ok = fscanf(f, "%ld", val) == 1;
	fclose(f);
	return ok ? 0 : -1;
}

/*
 * Appends to @buf (@len bytes, holding a string) rxe's counters of @device that tell of lost,
 * repeated or refused packets, those not zero, in one line.
 */
static inline void rsmc_rxe_loss_text(const char *device, char *buf, size_t len)
{
	static const char *const counters[] = {
		"duplicate_request", "out_of_seq_request", "rcvd_rnr_err", "send_rnr_err",
		"rcvd_seq_err", "retry_exceeded_err", "retry_rnr_exceeded_err",
		"completer_retry_err", "send_err",
	};
	size_t n = strlen(buf);

	n += snprintf(buf + n, len - n, "%s counters of lost packets, those not zero:", device);
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]) && n < len; i++) {
		char path[128];
		long val;

		snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/1/hw_counters/%s",
			 device, counters[i]);
		if (!rsmc_read_long(path, &val) && val)
			n += snprintf(buf + n, len - n, " %s %ld", counters[i], val);
	}
	if (n < len)
		snprintf(buf + n, len - n, "\n");
}

/*
 * What rsmc and rxe say of their state, for a failure's message, in @buf (@len bytes,
 * NUL-terminated): each device's counters from debugfs (links, connections, dropped cursor
 * messages, sends in flight, polls), each connection's state, one per line, and rxe's counters
 * of lost packets on rxe_a and rxe_b.
 */
static inline const char *rsmc_state_text(char *buf, size_t len)
{
	const char *files[] = { RSMC_DEVICES_FILE, RSMC_CONNECTIONS_FILE };
	size_t n = 0;

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		FILE *f = fopen(files[i], "r");

		if (f) {
			n += fread(buf + n, 1, len - 1 - n, f);
			fclose(f);
		}
	}
	buf[n] = 0;
	rsmc_rxe_loss_text("rxe_a", buf, len);
	rsmc_rxe_loss_text("rxe_b", buf, len);
	return buf;
}

/* Writes @text to the file at @path in one write; returns 0 or -1 with errno. */
static inline int rsmc_write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t len = strlen(text), n;

	if (fd < 0)
		return -1;
	n = write(fd, text, len);
	close(fd);
	if (n >= 0 && n != len)
		errno = EIO;
	return n == len ? 0 : -1;
}

/* Writes the number @val to the file at @path (a sysctl, say); returns 0 or -1 with errno. */
static inline int rsmc_write_long(const char *path, long val)
{
	char text[32];

	snprintf(text, sizeof(text), "%ld\n", val);
	return rsmc_write_file(path, text);
}

/* How long an idle link stays once its last connection left, in ms (written: applies at once). */
#define RSMC_LINK_LINGER_FILE "/sys/kernel/debug/rsmc/link_linger_ms"

#define RSMC_NAPI_DEFER_FILE "/sys/kernel/debug/rsmc/napi_defer"

/*
 * Sets the interrupt deferral of @device's NAPI (napi_defer_hard_irqs and gro_flush_timeout,
 * as the netdev sysfs files of those names); "0 0", off, is the default. Returns 0 or -1 with
 * errno.
 */
static inline int rsmc_set_napi_defer(const char *device, unsigned int defer_hard_irqs,
				      unsigned long long gro_flush_timeout_ns)
{
	char text[96];

	snprintf(text, sizeof(text), "%s %u %llu\n", device, defer_hard_irqs,
		 gro_flush_timeout_ns);
	return rsmc_write_file(RSMC_NAPI_DEFER_FILE, text);
}

/* Reads @device's deferral back (a "<name> <defer> <timeout>" line); returns 0 or -1. */
static inline int rsmc_get_napi_defer(const char *device, unsigned int *defer_hard_irqs,
				      unsigned long long *gro_flush_timeout_ns)
{
	FILE *f = fopen(RSMC_NAPI_DEFER_FILE, "r");
	char line[1024], name[64];
	unsigned long long timeout;
	unsigned int defer;
	int ret = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%63s %u %llu", name, &defer, &timeout) == 3 &&
		    !strcmp(name, device)) {
			*defer_hard_irqs = defer;
			*gro_flush_timeout_ns = timeout;
			ret = 0;
		}
	fclose(f);
	return ret;
}

/*
 * Adds rxe_<side> (side 'a' or 'b') again if it is gone, as qemu/guest-setup creates it (in
 * rsmc_<side> on veth_<side>), then waits (up to 10 s each) for its IPv4 and IPv6 GIDs
 * (192.0.2.<n>, 2001:db8::<n>, n = 1 for a, 2 for b) and for rsmc to list it. Returns NULL
 * once all is back, else what failed.
 */
static inline const char *rsmc_restore_rxe(char side)
{
	struct rsmc_device_stats s;
	char cmd[512], dev[16];
	int n = side - 'a' + 1, i;

	snprintf(dev, sizeof(dev), "rxe_%c", side);
	snprintf(cmd, sizeof(cmd), "/sys/class/infiniband/%s", dev);
	if (access(cmd, F_OK)) {
		snprintf(cmd, sizeof(cmd),
			 "ip netns exec rsmc_%c rdma link add %s type rxe netdev veth_%c", side, dev,
			 side);
		if (system(cmd))
			return "rdma link add";
	}
	snprintf(cmd, sizeof(cmd),
		 "g=/sys/class/infiniband/%s/ports/1/gids; for _ in $(seq 200); do "
		 "grep -qx 0000:0000:0000:0000:0000:ffff:c000:020%d $g/* 2>/dev/null && "
		 "grep -qx 2001:0db8:0000:0000:0000:0000:0000:000%d $g/* 2>/dev/null && exit 0; "
		 "sleep 0.05; done; exit 1", dev, n, n);
	if (system(cmd))
		return "waiting for the GIDs";
	for (i = 0; i < 200 && rsmc_device_stats(dev, &s); i++)
		usleep(50000);
	return i < 200 ? NULL : "waiting for rsmc to list the device";
}

static inline int rsmc_delete_module(const char *name)
{
	return syscall(__NR_delete_module, name, O_NONBLOCK);
}

/* Loads the module file at @path (as insmod does); returns 0 or -1 with errno. */
static inline int rsmc_load_module(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int ret;

	if (fd < 0)
		return -1;
	ret = syscall(__NR_finit_module, fd, "", 0);
	close(fd);
	return ret;
}

/* Socket I/O and timing; the assertions come from kselftest_harness.h, included first. */

/* How long a test waits for an event that should come at once (the guest is slow). */
#define EVENT_WAIT_MS 10000

static inline double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline void msleep(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/*
 * Waits up to 20 s for the connections on rxe_a and rxe_b to go; @conns gets how many are left
 * on each. Returns whether none is (false too if the counters cannot be read).
 */
static inline bool rsmc_connections_gone(long conns[2])
{
	long links;

	for (int tries = 0; tries < 200; tries++, msleep(100)) {
		if (rsmc_device_links("rxe_a", &links, &conns[0]) ||
		    rsmc_device_links("rxe_b", &links, &conns[1]))
			return false;
		if (!conns[0] && !conns[1])
			return true;
	}
	return false;
}

/*
 * Fails the test unless every connection on rxe_a and rxe_b goes within rsmc_connections_gone()'s
 * 20 s, and shows what is left; @whose names the connections, for the log.
 */
static inline void assert_connections_gone(struct __test_metadata *_metadata, const char *whose)
{
	long conns[2] = { -1, -1 };
	char left[4096];

	ASSERT_TRUE(rsmc_connections_gone(conns))
		TH_LOG("%s remain after 20 s: %ld on rxe_a, %ld on rxe_b:\n%s", whose, conns[0], conns[1],
		       rsmc_state_text(left, sizeof(left)));
}

static inline uint32_t xorshift32(uint32_t *state)
{
	uint32_t x = *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *state = x;
}

/* A chunk size in [1, max], log-uniform so that small and large sizes both occur often. */
static inline size_t random_chunk(uint32_t *state, size_t max)
{
	uint32_t bits = 1 + xorshift32(state) % 18;
	size_t n = 1 + xorshift32(state) % (1u << bits);

	return n < max ? n : max;
}

/* Returns the revents of @fd for @events within @ms (0 on timeout). */
static inline int wait_events(struct __test_metadata *_metadata, int fd, int events, int ms)
{
	struct epoll_event ev = { .events = events }, out = {};
	int ep = epoll_create1(EPOLL_CLOEXEC), n;

	ASSERT_LE(0, ep) TH_LOG("epoll_create1: %s", strerror(errno));
	ASSERT_EQ(0, epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) TH_LOG("epoll_ctl: %s", strerror(errno));
	do
		n = epoll_wait(ep, &out, 1, ms);
	while (n < 0 && errno == EINTR);
	ASSERT_LE(0, n) TH_LOG("epoll_wait: %s", strerror(errno));
	close(ep);
	return n ? (int)out.events : 0;
}

static inline int accept_within(struct __test_metadata *_metadata, int lfd, int flags)
{
	int fd;

	ASSERT_NE(0, wait_events(_metadata, lfd, EPOLLIN, EVENT_WAIT_MS))
		TH_LOG("no connection to accept");
	fd = accept4(lfd, NULL, NULL, flags);
	ASSERT_LE(0, fd) TH_LOG("accept4: %s", strerror(errno));
	return fd;
}

static inline uint16_t sockaddr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static inline ssize_t write_all(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		done += n;
	}
	return done;
}

/* Reads exactly @len bytes, unless EOF (short count) or an error (-1) comes first. */
static inline ssize_t read_all(int fd, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = recv(fd, (char *)buf + done, len - done, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += n;
	}
	return done;
}

/* ECONNABORTED where the device went (as stock SMC), ECONNRESET at the peer it aborted. */
static inline bool is_abort_errno(int err)
{
	return err == ECONNABORTED || err == ECONNRESET || err == EPIPE;
}

static inline int set_int(int fd, int level, int opt, int val)
{
	return setsockopt(fd, level, opt, &val, sizeof(val));
}

static inline int get_int(int fd, int level, int opt, int *val)
{
	socklen_t len = sizeof(*val);
	int ret = getsockopt(fd, level, opt, val, &len);

	if (!ret && len != sizeof(*val))
		errno = EMSGSIZE, ret = -1;
	return ret;
}

#endif /* RSMC_SELFTEST_H */
