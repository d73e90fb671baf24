/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C wrappers for the static inline functions and macros rsmc calls from Rust.
 * Each wrapper is a single call: no logic lives here (see rust/ffi/).
 */
#ifndef RSMC_SHIM_H
#define RSMC_SHIM_H

#include <linux/netdevice.h>
#include <net/sock.h>
#include <linux/sockptr.h>
#include <rdma/ib_verbs.h>

unsigned int rsmc_min_napi_id(void);
void rsmc_netif_napi_add(struct net_device *dev, struct napi_struct *napi,
			 int (*poll)(struct napi_struct *, int));
void *rsmc_ib_get_client_data(struct ib_device *device, struct ib_client *client);
void rsmc_sock_orphan(struct sock *sk);
void rsmc_sock_put(struct sock *sk);
void *rsmc_netdev_priv(struct net_device *dev);
void rsmc_napi_schedule(struct napi_struct *napi);
void rsmc_netif_napi_del(struct napi_struct *napi);
void rsmc_sock_set_custom_sockopt(struct socket *sock);
void rsmc_dev_put(struct net_device *dev);
sockptr_t rsmc_user_sockptr(void __user *ptr);

#endif /* RSMC_SHIM_H */
