/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rsmc's per-device counters, as its debugfs file lists them: shared by the kselftests and
 * tools/pingpong. One line per RDMA device: its name, then "key value" pairs.
 */
#ifndef RSMC_DEVICES_H
#define RSMC_DEVICES_H

#include <stdio.h>
#include <string.h>

#define RSMC_DEVICES_FILE "/sys/kernel/debug/rsmc/devices"

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
	unsigned long long busy_yields;		/* busy polls that yielded the CPU to waiting tasks */
	unsigned long long spare_bytes;		/* buffers of ended connections kept for new ones */
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
 * Reads every counter of the device named @device, or if @device is NULL of the device whose
 * NAPI is @napi_id, from RSMC_DEVICES_FILE into *@s, each field found by its name wherever it
 * is on the line. Returns 0, or -1 if the device or a field is missing.
 */
static inline int rsmc_device_find(const char *device, long napi_id, struct rsmc_device_stats *s)
{
	char line[1024], name[64];
	unsigned long long id = 0;
	const char *at;
	int ret = -1;
	FILE *f = fopen(RSMC_DEVICES_FILE, "r");

	if (!f)
		return -1;
	while (ret && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s", name) != 1 || (device && strcmp(name, device)))
			continue;
		memset(s, 0, sizeof(*s));
		at = strstr(line, " netdev ");
		if (rsmc_stats_field(line, "napi_id", &id) && (device || (long)id == napi_id) &&
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
		    rsmc_stats_field(line, "busy_completions", &s->busy_completions) &&
		    rsmc_stats_field(line, "busy_yields", &s->busy_yields) &&
		    rsmc_stats_field(line, "spare_bytes", &s->spare_bytes)) {
			s->napi_id = id;
			ret = 0;
		}
	}
	fclose(f);
	return ret;
}

/* rsmc_device_find() by name. */
static inline int rsmc_device_stats(const char *device, struct rsmc_device_stats *s)
{
	return rsmc_device_find(device, 0, s);
}

#endif
