// SPDX-License-Identifier: GPL-2.0
/* C wrappers for static inlines and macros; see shim.h. */
#include <net/busy_poll.h>
#include <net/tcp.h>
#include "shim.h"

const size_t rsmc_c_struct_sizes[] = {
	sizeof(struct proto_accept_arg), sizeof(struct napi_struct), sizeof(struct socket), sizeof(struct proto), sizeof(struct proto_ops),
	sizeof(struct net_proto_family), sizeof(struct ib_client), sizeof(struct ib_device),
	sizeof(struct net_device), sizeof(struct ib_pd), sizeof(struct ib_cq), sizeof(struct ib_qp),
	sizeof(struct ib_mr), sizeof(struct ib_qp_init_attr), sizeof(struct ib_qp_attr),
	sizeof(struct ib_send_wr), sizeof(struct ib_rdma_wr), sizeof(struct ib_reg_wr),
	sizeof(struct ib_recv_wr), sizeof(struct ib_sge), sizeof(struct ib_wc),
	sizeof(struct ib_cq_init_attr), sizeof(struct ib_port_attr), sizeof(struct scatterlist),
	sizeof(struct msghdr), sizeof(struct kvec), sizeof(struct wait_queue_entry),
	sizeof(struct cmsghdr), sizeof(struct mmpin),
};

size_t rsmc_sizeof_sock(void)
{
	return sizeof(struct sock);
}

struct net *rsmc_sock_net(const struct sock *sk)
{
	return sock_net(sk);
}

int rsmc_sk_err(const struct sock *sk)
{
	return READ_ONCE(sk->sk_err);
}

void rsmc_sk_set_err(struct sock *sk, int err)
{
	WRITE_ONCE(sk->sk_err, err);
}

u16 rsmc_sk_protocol(const struct sock *sk)
{
	return sk->sk_protocol;
}

void rsmc_sk_set_protocol(struct sock *sk, u16 protocol)
{
	sk->sk_protocol = protocol;
}

unsigned int rsmc_napi_id(const struct napi_struct *napi)
{
	return READ_ONCE(napi->napi_id);
}

unsigned int rsmc_min_napi_id(void)
{
	return MIN_NAPI_ID;
}

struct workqueue_struct *rsmc_alloc_workqueue(const char *name, unsigned int flags)
{
	return alloc_workqueue("%s", flags, 0, name);
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

sockptr_t rsmc_kernel_sockptr(void *ptr)
{
	return KERNEL_SOCKPTR(ptr);
}

void rsmc_dev_put(struct net_device *dev)
{
	dev_put(dev);
}

bool rsmc_ib_device_try_get(struct ib_device *device)
{
	return ib_device_try_get(device);
}

void rsmc_ib_dealloc_pd(struct ib_pd *pd)
{
	ib_dealloc_pd(pd);
}

void rsmc_ib_destroy_cq(struct ib_cq *cq)
{
	ib_destroy_cq(cq);
}

int rsmc_ib_poll_cq(struct ib_cq *cq, int num_entries, struct ib_wc *wc)
{
	return ib_poll_cq(cq, num_entries, wc);
}

int rsmc_ib_req_notify_cq(struct ib_cq *cq, enum ib_cq_notify_flags flags)
{
	return ib_req_notify_cq(cq, flags);
}

int rsmc_ib_destroy_qp(struct ib_qp *qp)
{
	return ib_destroy_qp(qp);
}

int rsmc_ib_post_send(struct ib_qp *qp, const struct ib_send_wr *send_wr,
		      const struct ib_send_wr **bad_send_wr)
{
	return ib_post_send(qp, send_wr, bad_send_wr);
}

int rsmc_ib_post_recv(struct ib_qp *qp, const struct ib_recv_wr *recv_wr,
		      const struct ib_recv_wr **bad_recv_wr)
{
	return ib_post_recv(qp, recv_wr, bad_recv_wr);
}

int rsmc_ib_dereg_mr(struct ib_mr *mr)
{
	return ib_dereg_mr(mr);
}

void rsmc_rdma_ah_set_port_num(struct rdma_ah_attr *attr, u32 port_num)
{
	rdma_ah_set_port_num(attr, port_num);
}

void rsmc_rdma_ah_set_grh(struct rdma_ah_attr *attr, union ib_gid *dgid, u32 flow_label,
			  u8 sgid_index, u8 hop_limit, u8 traffic_class)
{
	rdma_ah_set_grh(attr, dgid, flow_label, sgid_index, hop_limit, traffic_class);
}

void rsmc_rdma_ah_set_dgid_raw(struct rdma_ah_attr *attr, void *dgid)
{
	rdma_ah_set_dgid_raw(attr, dgid);
}

u64 rsmc_ib_dma_map_single(struct ib_device *dev, void *cpu_addr, size_t size,
			   enum dma_data_direction direction)
{
	return ib_dma_map_single(dev, cpu_addr, size, direction);
}

void rsmc_ib_dma_unmap_single(struct ib_device *dev, u64 addr, size_t size,
			      enum dma_data_direction direction)
{
	ib_dma_unmap_single(dev, addr, size, direction);
}

int rsmc_ib_dma_mapping_error(struct ib_device *dev, u64 dma_addr)
{
	return ib_dma_mapping_error(dev, dma_addr);
}

void rsmc_ib_dma_sync_single_for_cpu(struct ib_device *dev, u64 addr, size_t size,
				     enum dma_data_direction dir)
{
	ib_dma_sync_single_for_cpu(dev, addr, size, dir);
}

void rsmc_ib_dma_sync_single_for_device(struct ib_device *dev, u64 addr, size_t size,
					enum dma_data_direction dir)
{
	ib_dma_sync_single_for_device(dev, addr, size, dir);
}

dma_addr_t *rsmc_sg_dma_address(struct scatterlist *sg)
{
	return &sg_dma_address(sg);
}

unsigned int *rsmc_sg_dma_len(struct scatterlist *sg)
{
	return &sg_dma_len(sg);
}

void rsmc_sock_hold(struct sock *sk)
{
	sock_hold(sk);
}

void rsmc_sk_data_ready(struct sock *sk)
{
	sk->sk_data_ready(sk);
}

void rsmc_sk_write_space(struct sock *sk)
{
	sk->sk_write_space(sk);
}

void rsmc_sk_state_change(struct sock *sk)
{
	sk->sk_state_change(sk);
}

wait_queue_head_t *rsmc_sk_sleep(struct sock *sk)
{
	return sk_sleep(sk);
}

void rsmc_init_wait_woken(struct wait_queue_entry *wait)
{
	init_wait_func(wait, woken_wake_function);
}

long rsmc_sock_rcvtimeo(const struct sock *sk, bool noblock)
{
	return sock_rcvtimeo(sk, noblock);
}

long rsmc_sock_sndtimeo(const struct sock *sk, bool noblock)
{
	return sock_sndtimeo(sk, noblock);
}

int rsmc_sock_intr_errno(long timeo)
{
	return sock_intr_errno(timeo);
}

void rsmc_sk_set_rcvtimeo(struct sock *sk, long timeo)
{
	WRITE_ONCE(sk->sk_rcvtimeo, timeo);
}

void rsmc_sk_set_sndtimeo(struct sock *sk, long timeo)
{
	WRITE_ONCE(sk->sk_sndtimeo, timeo);
}

void rsmc_sock_poll_wait(struct file *filp, struct socket *sock, poll_table *p)
{
	sock_poll_wait(filp, sock, p);
}

bool rsmc_tcp_syn_smc(const struct sock *sk)
{
	return tcp_sk(sk)->syn_smc;
}

void rsmc_tcp_set_syn_smc(struct sock *sk, bool syn_smc)
{
	tcp_sk(sk)->syn_smc = syn_smc;
}

void rsmc_tcp_have_smc_inc(void)
{
	static_branch_inc(&tcp_have_smc);
}

void rsmc_tcp_have_smc_dec(void)
{
	static_branch_dec(&tcp_have_smc);
}

int rsmc_msg_flags(const struct msghdr *msg)
{
	return msg->msg_flags;
}

size_t rsmc_copy_from_iter(void *addr, size_t bytes, struct iov_iter *i)
{
	return copy_from_iter(addr, bytes, i);
}

size_t rsmc_copy_to_iter(const void *addr, size_t bytes, struct iov_iter *i)
{
	return copy_to_iter(addr, bytes, i);
}

void rsmc_napi_synchronize(const struct napi_struct *napi)
{
	napi_synchronize(napi);
}

int rsmc_sk_rcvbuf(const struct sock *sk)
{
	return READ_ONCE(sk->sk_rcvbuf);
}

int rsmc_sk_rcvlowat(const struct sock *sk)
{
	return READ_ONCE(sk->sk_rcvlowat);
}

void rsmc_sk_set_rcvlowat(struct sock *sk, int val)
{
	WRITE_ONCE(sk->sk_rcvlowat, val);
}

bool rsmc_sk_linger_ms(const struct sock *sk, unsigned int *ms)
{
	/* Capped so that the milliseconds fit. */
	*ms = jiffies_to_msecs(min_t(unsigned long, READ_ONCE(sk->sk_lingertime),
				     UINT_MAX / MSEC_PER_SEC * HZ));
	return sock_flag(sk, SOCK_LINGER);
}

unsigned int rsmc_tcp_fin_time_ms(const struct sock *sk)
{
	return jiffies_to_msecs(tcp_fin_time(sk));
}

unsigned int rsmc_sk_fin_timeout_ms(const struct sock *sk)
{
	return jiffies_to_msecs(READ_ONCE(sock_net(sk)->ipv4.sysctl_tcp_fin_timeout));
}

/* Swaps the data-ready callback and its user data as one step under sk_callback_lock. */
rsmc_sk_callback rsmc_sk_swap_data_ready(struct sock *sk, rsmc_sk_callback ready, void *user,
					 void **old_user)
{
	rsmc_sk_callback old;

	write_lock_bh(&sk->sk_callback_lock);
	old = sk->sk_data_ready;
	*old_user = sk->sk_user_data;
	sk->sk_data_ready = ready;
	sk->sk_user_data = user;
	write_unlock_bh(&sk->sk_callback_lock);
	return old;
}

/* Swaps the error-report callback and its user data as one step under sk_callback_lock. */
rsmc_sk_callback rsmc_sk_swap_error_report(struct sock *sk, rsmc_sk_callback report, void *user,
					   void **old_user)
{
	rsmc_sk_callback old;

	write_lock_bh(&sk->sk_callback_lock);
	old = sk->sk_error_report;
	*old_user = sk->sk_user_data;
	sk->sk_error_report = report;
	sk->sk_user_data = user;
	write_unlock_bh(&sk->sk_callback_lock);
	return old;
}

void *rsmc_sk_user_data_lock(struct sock *sk)
{
	read_lock_bh(&sk->sk_callback_lock);
	return sk->sk_user_data;
}

void rsmc_sk_user_data_unlock(struct sock *sk)
{
	read_unlock_bh(&sk->sk_callback_lock);
}

bool rsmc_sk_is_listening(const struct sock *sk)
{
	return READ_ONCE(sk->sk_state) == TCP_LISTEN;
}

int rsmc_sock_error(struct sock *sk)
{
	return sock_error(sk);
}

void rsmc_lock_sock(struct sock *sk)
{
	lock_sock(sk);
}

int rsmc_sk_state(const struct sock *sk)
{
	return READ_ONCE(sk->sk_state);
}

void rsmc_sk_set_napi_id(struct sock *sk, unsigned int napi_id)
{
	WRITE_ONCE(sk->sk_napi_id, napi_id);
}

bool rsmc_sk_can_busy_loop(const struct sock *sk)
{
	return sk_can_busy_loop(sk);
}

bool rsmc_sk_busy_loop_timeout(struct sock *sk, unsigned long start_time)
{
	return sk_busy_loop_timeout(sk, start_time);
}

void rsmc_sk_busy_loop(struct sock *sk, bool (*loop_end)(void *, unsigned long), void *arg)
{
	unsigned int napi_id = READ_ONCE(sk->sk_napi_id);

	if (napi_id_valid(napi_id))
		napi_busy_loop(napi_id, loop_end, arg, READ_ONCE(sk->sk_prefer_busy_poll),
			       READ_ONCE(sk->sk_busy_poll_budget) ?: BUSY_POLL_BUDGET);
}

bool rsmc_napi_in_busy_poll(const struct napi_struct *napi)
{
	return test_bit(NAPI_STATE_IN_BUSY_POLL, &napi->state);
}

void rsmc_set_need_resched_current(void)
{
	unsigned long flags;

	local_irq_save(flags);
	set_need_resched_current();
	local_irq_restore(flags);
}

void rsmc_napi_set_defer(struct napi_struct *napi, u32 defer_hard_irqs,
			 unsigned long gro_flush_timeout)
{
	WRITE_ONCE(napi->defer_hard_irqs, defer_hard_irqs);
	WRITE_ONCE(napi->gro_flush_timeout, gro_flush_timeout);
}

bool rsmc_sock_zerocopy(const struct sock *sk)
{
	return sock_flag(sk, SOCK_ZEROCOPY);
}

void rsmc_sock_set_zerocopy(struct sock *sk, bool on)
{
	sock_valbool_flag(sk, SOCK_ZEROCOPY, on);
}

bool rsmc_sk_errqueue_empty(const struct sock *sk)
{
	return skb_queue_empty_lockless(&sk->sk_error_queue);
}

void rsmc_sk_purge_error_queue(struct sock *sk)
{
	skb_queue_purge(&sk->sk_error_queue);
}

void rsmc_sk_set_destruct(struct sock *sk, void (*destruct)(struct sock *sk))
{
	sk->sk_destruct = destruct;
}

int rsmc_sk_optmem_max(const struct sock *sk)
{
	return READ_ONCE(sock_net(sk)->core.sysctl_optmem_max);
}

void rsmc_zerocopy_complete(struct ubuf_info *uarg, bool zerocopied)
{
	uarg->ops->complete(NULL, uarg, zerocopied);
}

struct cmsghdr *rsmc_cmsg_first(struct msghdr *msg)
{
	return CMSG_FIRSTHDR(msg);
}

struct cmsghdr *rsmc_cmsg_next(struct msghdr *msg, struct cmsghdr *cmsg)
{
	return CMSG_NXTHDR(msg, cmsg);
}

bool rsmc_cmsg_ok(struct msghdr *msg, struct cmsghdr *cmsg)
{
	return CMSG_OK(msg, cmsg);
}

void *rsmc_cmsg_data(struct cmsghdr *cmsg)
{
	return CMSG_DATA(cmsg);
}

size_t rsmc_cmsg_len(size_t data_len)
{
	return CMSG_LEN(data_len);
}

int rsmc_copy_safe_from_sockptr(void *dst, size_t ksize, sockptr_t optval, size_t optlen)
{
	return copy_safe_from_sockptr(dst, ksize, optval, optlen);
}

bool rsmc_iov_iter_extract_will_pin(const struct iov_iter *iter)
{
	return iov_iter_extract_will_pin(iter);
}

ssize_t rsmc_iov_iter_extract_pages(struct iov_iter *iter, struct page **pages, size_t maxsize,
				    unsigned int maxpages, size_t *offset0)
{
	return iov_iter_extract_pages(iter, &pages, maxsize, maxpages, 0, offset0);
}

u64 rsmc_ib_dma_map_page(struct ib_device *dev, struct page *page, unsigned long offset,
			 size_t size, enum dma_data_direction direction)
{
	return ib_dma_map_page(dev, page, offset, size, direction);
}

void rsmc_ib_dma_unmap_page(struct ib_device *dev, u64 addr, size_t size,
			    enum dma_data_direction direction)
{
	ib_dma_unmap_page(dev, addr, size, direction);
}

/* Under the socket lock, as sk_setsockopt writes the bitfields sk_reuseport shares a byte with. */
void rsmc_sk_set_reuseport(struct sock *sk, bool on)
{
	lock_sock(sk);
	sk->sk_reuseport = on;
	release_sock(sk);
}

/*
 * The socket options a TCP child takes over from its listener (sk_clone_lock copies the whole
 * sock), for an accepted socket before anyone else sees it; the flags are net/smc's
 * SK_FLAGS_CLC_TO_SMC and SOCK_ZEROCOPY.
 */
void rsmc_sk_inherit_options(struct sock *nsk, struct sock *osk)
{
	const unsigned long flags = BIT(SOCK_URGINLINE) | BIT(SOCK_KEEPOPEN) | BIT(SOCK_LINGER) |
		BIT(SOCK_BROADCAST) | BIT(SOCK_TIMESTAMP) | BIT(SOCK_DBG) | BIT(SOCK_RCVTSTAMP) |
		BIT(SOCK_RCVTSTAMPNS) | BIT(SOCK_LOCALROUTE) |
		BIT(SOCK_TIMESTAMPING_RX_SOFTWARE) | BIT(SOCK_RXQ_OVFL) | BIT(SOCK_WIFI_STATUS) |
		BIT(SOCK_NOFCS) | BIT(SOCK_FILTER_LOCKED) | BIT(SOCK_TSTAMP_NEW) |
		BIT(SOCK_ZEROCOPY);

	nsk->sk_flags = (nsk->sk_flags & ~flags) | (READ_ONCE(osk->sk_flags) & flags);
	nsk->sk_userlocks = READ_ONCE(osk->sk_userlocks);
	if (nsk->sk_userlocks & SOCK_SNDBUF_LOCK)
		nsk->sk_sndbuf = READ_ONCE(osk->sk_sndbuf);
	if (nsk->sk_userlocks & SOCK_RCVBUF_LOCK)
		nsk->sk_rcvbuf = READ_ONCE(osk->sk_rcvbuf);
	nsk->sk_rcvtimeo = READ_ONCE(osk->sk_rcvtimeo);
	nsk->sk_sndtimeo = READ_ONCE(osk->sk_sndtimeo);
	nsk->sk_rcvlowat = READ_ONCE(osk->sk_rcvlowat);
	nsk->sk_lingertime = READ_ONCE(osk->sk_lingertime);
	nsk->sk_priority = READ_ONCE(osk->sk_priority);
	nsk->sk_mark = READ_ONCE(osk->sk_mark);
	nsk->sk_bound_dev_if = READ_ONCE(osk->sk_bound_dev_if);
#ifdef CONFIG_NET_RX_BUSY_POLL
	nsk->sk_ll_usec = READ_ONCE(osk->sk_ll_usec);
	nsk->sk_prefer_busy_poll = READ_ONCE(osk->sk_prefer_busy_poll);
	nsk->sk_busy_poll_budget = READ_ONCE(osk->sk_busy_poll_budget);
#endif
	/* Bitfields, which sk_setsockopt writes under the socket lock. */
	lock_sock(osk);
	nsk->sk_reuse = osk->sk_reuse;
	nsk->sk_reuseport = osk->sk_reuseport;
	release_sock(osk);
}
