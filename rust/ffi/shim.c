// SPDX-License-Identifier: GPL-2.0
/* C wrappers for static inlines and macros; see shim.h. */
#include <net/busy_poll.h>
#include "shim.h"

unsigned int rsmc_min_napi_id(void)
{
	return MIN_NAPI_ID;
}

void rsmc_netif_napi_add(struct net_device *dev, struct napi_struct *napi,
			 int (*poll)(struct napi_struct *, int))
{
	netif_napi_add(dev, napi, poll);
}

void *rsmc_ib_get_client_data(struct ib_device *device, struct ib_client *client)
{
	return ib_get_client_data(device, client);
}

void rsmc_sock_orphan(struct sock *sk)
{
	sock_orphan(sk);
}

void rsmc_sock_put(struct sock *sk)
{
	sock_put(sk);
}

void *rsmc_netdev_priv(struct net_device *dev)
{
	return netdev_priv(dev);
}

void rsmc_napi_schedule(struct napi_struct *napi)
{
	napi_schedule(napi);
}

void rsmc_netif_napi_del(struct napi_struct *napi)
{
	netif_napi_del(napi);
}

void rsmc_sock_set_custom_sockopt(struct socket *sock)
{
	set_bit(SOCK_CUSTOM_SOCKOPT, &sock->flags);
}

sockptr_t rsmc_user_sockptr(void __user *ptr)
{
	return USER_SOCKPTR(ptr);
}

void rsmc_dev_put(struct net_device *dev)
{
	dev_put(dev);
}
