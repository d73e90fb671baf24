/* SPDX-License-Identifier: GPL-2.0 */
/* Everything rsmc's Rust code binds to; bindgen runs over this on every build. */
#include <linux/debugfs.h>
#include <linux/sched/stat.h>
#include <linux/netdevice.h>
#include <linux/net.h>
#include <linux/socket.h>
#include <asm/ioctls.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <net/busy_poll.h>
#include <net/sock.h>
#include <net/tcp.h>
#include <rdma/ib_cache.h>
#include <rdma/ib_verbs.h>
#include "shim.h"
