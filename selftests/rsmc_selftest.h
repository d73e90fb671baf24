/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the rsmc kselftests (run inside the VM set up by qemu/run). */
#ifndef RSMC_SELFTEST_H
#define RSMC_SELFTEST_H

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/rsmc.h>

#define RSMC_DEVICES_FILE "/sys/kernel/debug/rsmc/devices"

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

/*
 * Looks up @device in rsmc's debugfs device list
 * ("<name> napi_id <id> polls <n> netdev <netdev> cq_events <n> completions <n>" per line).
 * Returns its NAPI id, or -1 if absent; copies its netdev name to @netdev (IFNAMSIZ bytes) if
 * @netdev is not NULL.
 */
static inline long rsmc_device_lookup(const char *device, char *netdev)
{
	char line[1024], name[64], dev[16];
	long napi_id, found = -1;
	unsigned long long polls, cq_events, completions;
	FILE *f = fopen(RSMC_DEVICES_FILE, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s napi_id %ld polls %llu netdev %15s cq_events %llu completions %llu",
			   name, &napi_id, &polls, dev, &cq_events, &completions) != 6 ||
		    strcmp(name, device))
			continue;
		found = napi_id;
		if (netdev)
			strcpy(netdev, dev);
	}
	fclose(f);
	return found;
}

/*
 * The links @device has and the connections on them, from the end of its debugfs line
 * ("... links <n> connections <n> dropped_cdc <n>"). Returns 0, or -1 if the device or the
 * fields are missing.
 */
static inline int rsmc_device_links(const char *device, long *links, long *conns)
{
	char line[1024], name[64];
	const char *at;
	int ret = -1;
	FILE *f = fopen(RSMC_DEVICES_FILE, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s", name) != 1 || strcmp(name, device))
			continue;
		at = strstr(line, " links ");
		if (at && sscanf(at, " links %ld connections %ld", links, conns) == 2)
			ret = 0;
	}
	fclose(f);
	return ret;
}

static inline long rsmc_device_napi_id(const char *device)
{
	return rsmc_device_lookup(device, NULL);
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

/* All the fields of one device's line in RSMC_DEVICES_FILE. */
struct rsmc_device_stats {
	long napi_id;
	char netdev[16];
	unsigned long long polls;		/* NAPI polls, softirq and busy poll */
	unsigned long long cq_events;		/* completion-queue events (interrupts) */
	unsigned long long completions;		/* completions reaped, softirq and busy poll */
	unsigned long long links;
	unsigned long long connections;
	unsigned long long dropped_cdc;
	unsigned long long softirq_polls;	/* polls from softirq (events, deferral timer) */
	unsigned long long softirq_completions;
	unsigned long long busy_polls;		/* polls by threads spinning in napi_busy_loop */
	unsigned long long busy_completions;
};

/* The number after " @name " in @line, to *@val; returns whether it is there. */
static inline int rsmc_stats_field(const char *line, const char *name, unsigned long long *val)
{
	char key[64];
	const char *at;

	snprintf(key, sizeof(key), " %s ", name);
	at = strstr(line, key);
	return at && sscanf(at + strlen(key), "%llu", val) == 1;
}

/*
 * Reads every counter of @device from RSMC_DEVICES_FILE into *@s, each field found by its
 * name wherever it is on the line. Returns 0, or -1 if the device or a field is missing.
 */
static inline int rsmc_device_stats(const char *device, struct rsmc_device_stats *s)
{
	char line[1024], name[64];
	unsigned long long napi_id = 0;
	const char *at;
	int ret = -1;
	FILE *f = fopen(RSMC_DEVICES_FILE, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s", name) != 1 || strcmp(name, device))
			continue;
		memset(s, 0, sizeof(*s));
		at = strstr(line, " netdev ");
		if (rsmc_stats_field(line, "napi_id", &napi_id) &&
		    at && sscanf(at, " netdev %15s", s->netdev) == 1 &&
		    rsmc_stats_field(line, "polls", &s->polls) &&
		    rsmc_stats_field(line, "cq_events", &s->cq_events) &&
		    rsmc_stats_field(line, "completions", &s->completions) &&
		    rsmc_stats_field(line, "links", &s->links) &&
		    rsmc_stats_field(line, "connections", &s->connections) &&
		    rsmc_stats_field(line, "dropped_cdc", &s->dropped_cdc) &&
		    rsmc_stats_field(line, "softirq_polls", &s->softirq_polls) &&
		    rsmc_stats_field(line, "softirq_completions", &s->softirq_completions) &&
		    rsmc_stats_field(line, "busy_polls", &s->busy_polls) &&
		    rsmc_stats_field(line, "busy_completions", &s->busy_completions)) {
			s->napi_id = napi_id;
			ret = 0;
		}
	}
	fclose(f);
	return ret;
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
	int ret = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%63s %u %llu", name, defer_hard_irqs, gro_flush_timeout_ns) == 3 &&
		    !strcmp(name, device))
			ret = 0;
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

#endif /* RSMC_SELFTEST_H */
