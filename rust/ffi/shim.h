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
#include <linux/tcp.h>
#include <linux/uio.h>
#include <linux/workqueue.h>

unsigned int rsmc_min_napi_id(void);

/*
 * sizeof() of the C structs whose fields rsmc's Rust code reads or writes, in the order of
 * `LAYOUT_CHECKED` in rust/ffi/mod.rs, so the module refuses to load if bindgen's layout of
 * any of them differs from the compiler's.
 */
extern const size_t rsmc_c_struct_sizes[];

/* struct sock is not among them: its layout depends on the config in ways bindgen gets
 * wrong (cacheline-aligned groups), so it is reached only through these accessors. */
struct net *rsmc_sock_net(const struct sock *sk);
int rsmc_sk_err(const struct sock *sk);
void rsmc_sk_set_err(struct sock *sk, int err);
u16 rsmc_sk_protocol(const struct sock *sk);
void rsmc_sk_set_protocol(struct sock *sk, u16 protocol);
void rsmc_sk_set_reuseport(struct sock *sk, bool on);
void rsmc_sk_inherit_options(struct sock *nsk, struct sock *osk);
unsigned int rsmc_napi_id(const struct napi_struct *napi);
size_t rsmc_sizeof_sock(void);
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
sockptr_t rsmc_kernel_sockptr(void *ptr);
int rsmc_copy_safe_from_sockptr(void *dst, size_t ksize, sockptr_t optval, size_t optlen);
struct workqueue_struct *rsmc_alloc_workqueue(const char *name, unsigned int flags);

bool rsmc_ib_device_try_get(struct ib_device *device);
void rsmc_ib_dealloc_pd(struct ib_pd *pd);
void rsmc_ib_destroy_cq(struct ib_cq *cq);
int rsmc_ib_poll_cq(struct ib_cq *cq, int num_entries, struct ib_wc *wc);
int rsmc_ib_req_notify_cq(struct ib_cq *cq, enum ib_cq_notify_flags flags);
int rsmc_ib_destroy_qp(struct ib_qp *qp);
int rsmc_ib_post_send(struct ib_qp *qp, const struct ib_send_wr *send_wr,
		      const struct ib_send_wr **bad_send_wr);
int rsmc_ib_post_recv(struct ib_qp *qp, const struct ib_recv_wr *recv_wr,
		      const struct ib_recv_wr **bad_recv_wr);
int rsmc_ib_dereg_mr(struct ib_mr *mr);
void rsmc_rdma_ah_set_port_num(struct rdma_ah_attr *attr, u32 port_num);
void rsmc_rdma_ah_set_grh(struct rdma_ah_attr *attr, union ib_gid *dgid, u32 flow_label,
			  u8 sgid_index, u8 hop_limit, u8 traffic_class);
void rsmc_rdma_ah_set_dgid_raw(struct rdma_ah_attr *attr, void *dgid);
u64 rsmc_ib_dma_map_single(struct ib_device *dev, void *cpu_addr, size_t size,
			   enum dma_data_direction direction);
void rsmc_ib_dma_unmap_single(struct ib_device *dev, u64 addr, size_t size,
			      enum dma_data_direction direction);
int rsmc_ib_dma_mapping_error(struct ib_device *dev, u64 dma_addr);
void rsmc_ib_dma_sync_single_for_cpu(struct ib_device *dev, u64 addr, size_t size,
				     enum dma_data_direction dir);
void rsmc_ib_dma_sync_single_for_device(struct ib_device *dev, u64 addr, size_t size,
					enum dma_data_direction dir);
dma_addr_t *rsmc_sg_dma_address(struct scatterlist *sg);
unsigned int *rsmc_sg_dma_len(struct scatterlist *sg);

/* Sockets: wakeups, waiting, timeouts, TCP's SMC option. */
void rsmc_sock_hold(struct sock *sk);
void rsmc_sk_data_ready(struct sock *sk);
void rsmc_sk_write_space(struct sock *sk);
void rsmc_sk_state_change(struct sock *sk);
wait_queue_head_t *rsmc_sk_sleep(struct sock *sk);
void rsmc_init_wait_woken(struct wait_queue_entry *wait);
long rsmc_sock_rcvtimeo(const struct sock *sk, bool noblock);
long rsmc_sock_sndtimeo(const struct sock *sk, bool noblock);
int rsmc_sock_intr_errno(long timeo);
void rsmc_sk_set_rcvtimeo(struct sock *sk, long timeo);
void rsmc_sk_set_sndtimeo(struct sock *sk, long timeo);
void rsmc_sock_poll_wait(struct file *filp, struct socket *sock, poll_table *p);
bool rsmc_tcp_syn_smc(const struct sock *sk);
void rsmc_tcp_set_syn_smc(struct sock *sk, bool syn_smc);
void rsmc_tcp_have_smc_inc(void);
void rsmc_tcp_have_smc_dec(void);
int rsmc_msg_flags(const struct msghdr *msg);
size_t rsmc_copy_from_iter(void *addr, size_t bytes, struct iov_iter *i);
size_t rsmc_copy_to_iter(const void *addr, size_t bytes, struct iov_iter *i);
void rsmc_napi_synchronize(const struct napi_struct *napi);
int rsmc_sk_rcvbuf(const struct sock *sk);
int rsmc_sk_rcvlowat(const struct sock *sk);
void rsmc_sk_set_rcvlowat(struct sock *sk, int val);
typedef void (*rsmc_sk_callback)(struct sock *sk);
rsmc_sk_callback rsmc_sk_swap_data_ready(struct sock *sk, rsmc_sk_callback ready, void *user,
					 void **old_user);
rsmc_sk_callback rsmc_sk_swap_error_report(struct sock *sk, rsmc_sk_callback report, void *user,
					   void **old_user);
void *rsmc_sk_user_data_lock(struct sock *sk);
void rsmc_sk_user_data_unlock(struct sock *sk);
bool rsmc_sk_is_listening(const struct sock *sk);
void rsmc_lock_sock(struct sock *sk);
int rsmc_sk_state(const struct sock *sk);
int rsmc_sock_error(struct sock *sk);
bool rsmc_sk_linger_ms(const struct sock *sk, unsigned int *ms);
unsigned int rsmc_sk_fin_timeout_ms(const struct sock *sk);
unsigned int rsmc_tcp_fin_time_ms(const struct sock *sk);

void rsmc_sk_set_napi_id(struct sock *sk, unsigned int napi_id);
bool rsmc_sk_can_busy_loop(const struct sock *sk);
bool rsmc_sk_busy_loop_timeout(struct sock *sk, unsigned long start_time);
void rsmc_sk_busy_loop(struct sock *sk, bool (*loop_end)(void *, unsigned long), void *arg);
bool rsmc_napi_in_busy_poll(const struct napi_struct *napi);
void rsmc_set_need_resched_current(void);
void rsmc_napi_set_defer(struct napi_struct *napi, u32 defer_hard_irqs,
			 unsigned long gro_flush_timeout);


/* MSG_ZEROCOPY: the socket flag, its notifications, the error queue and control messages. */
bool rsmc_sock_zerocopy(const struct sock *sk);
void rsmc_sock_set_zerocopy(struct sock *sk, bool on);
bool rsmc_sk_errqueue_empty(const struct sock *sk);
void rsmc_sk_purge_error_queue(struct sock *sk);
void rsmc_sk_set_destruct(struct sock *sk, void (*destruct)(struct sock *sk));
int rsmc_sk_optmem_max(const struct sock *sk);
void rsmc_zerocopy_complete(struct ubuf_info *uarg, bool zerocopied);
struct cmsghdr *rsmc_cmsg_first(struct msghdr *msg);
struct cmsghdr *rsmc_cmsg_next(struct msghdr *msg, struct cmsghdr *cmsg);
bool rsmc_cmsg_ok(struct msghdr *msg, struct cmsghdr *cmsg);
void *rsmc_cmsg_data(struct cmsghdr *cmsg);
size_t rsmc_cmsg_len(size_t data_len);

/* Pinned user pages of zerocopy sends. */
bool rsmc_iov_iter_extract_will_pin(const struct iov_iter *iter);
ssize_t rsmc_iov_iter_extract_pages(struct iov_iter *iter, struct page **pages, size_t maxsize,
				    unsigned int maxpages, size_t *offset0);
u64 rsmc_ib_dma_map_page(struct ib_device *dev, struct page *page, unsigned long offset,
			 size_t size, enum dma_data_direction direction);
void rsmc_ib_dma_unmap_page(struct ib_device *dev, u64 addr, size_t size,
			    enum dma_data_direction direction);

#endif /* RSMC_SHIM_H */
