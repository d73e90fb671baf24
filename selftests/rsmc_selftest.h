/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the rsmc kselftests (run inside the VM set up by qemu/run). */
#ifndef RSMC_SELFTEST_H
#define RSMC_SELFTEST_H

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
	char line[256], name[64], dev[16];
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
	char line[256], name[64];
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
