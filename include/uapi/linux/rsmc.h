/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * rsmc user ABI: SMC-R-like sockets over RDMA with NAPI busy polling.
 *
 * socket(AF_SMC, SOCK_STREAM, SMCPROTO_SMC)  - internal TCP connection over IPv4
 * socket(AF_SMC, SOCK_STREAM, SMCPROTO_SMC6) - internal TCP connection over IPv6
 */
#ifndef _UAPI_LINUX_RSMC_H
#define _UAPI_LINUX_RSMC_H

#ifndef AF_SMC
#define AF_SMC 43
#endif

/* socket(2) protocol values, as for stock SMC. */
#define SMCPROTO_SMC  0
#define SMCPROTO_SMC6 1

#include <linux/types.h>

/* Socket option level of AF_SMC sockets, as for stock SMC. */
#ifndef SOL_SMC
#define SOL_SMC 286
#endif

/*
 * getsockopt(fd, SOL_SMC, RSMC_INFO, &info, &len): how the connection moves its data.
 * Copies min(len, sizeof(struct rsmc_info)) bytes and sets len to that; read-only.
 */
#define RSMC_INFO 64

/* rsmc_info.mode */
#define RSMC_MODE_NONE	0 /* not connected yet, or the handshake has not finished */
#define RSMC_MODE_RDMA	1 /* data moves over RDMA */
#define RSMC_MODE_TCP	2 /* fell back to the internal TCP connection */

/*
 * rsmc_info.fallback_reason and peer_decline_code: the decline codes of the CLC handshake
 * (the values of stock SMC's SMC_CLC_DECL_*). The ones rsmc reports itself:
 */
#define RSMC_DECL_MEM		0x01010000 /* out of memory for the connection's buffers */
#define RSMC_DECL_TIMEOUT_CL	0x02010000 /* no answer to a handshake message in time */
#define RSMC_DECL_CNFERR	0x03000000 /* the RDMA link could not be set up */
#define RSMC_DECL_PEERNOSMC	0x03010000 /* the peer is plain TCP (no SMC option in its SYN) */
#define RSMC_DECL_NOSMCRDEV	0x03030002 /* no RDMA device for the route */
#define RSMC_DECL_VERSMISMAT	0x030C0000 /* peer speaks another handshake version */
#define RSMC_DECL_PEERDECL	0x05000000 /* the peer declined: see peer_decline_code */
#define RSMC_DECL_SYNCERR	0x04000000 /* malformed or unexpected handshake message */

struct rsmc_info {
	__u32 mode;		/* RSMC_MODE_* */
	__u32 fallback_reason;	/* RSMC_DECL_* when mode is RSMC_MODE_TCP, else 0 */
	__u32 peer_decline_code; /* the peer's code when fallback_reason is RSMC_DECL_PEERDECL */
	__u32 reserved;
	__u64 rdma_tx_bytes;	/* payload bytes this socket RDMA-wrote to the peer */
	__u64 rdma_rx_bytes;	/* payload bytes read from the ring the peer RDMA-writes */
	__u64 tcp_tx_bytes;	/* payload bytes sent over the internal TCP connection */
	__u64 tcp_rx_bytes;	/* payload bytes received over the internal TCP connection */
};

/*
 * MSG_ZEROCOPY, after setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)), as for TCP:
 * each send(..., MSG_ZEROCOPY) completes with a notification on the error queue.
 *
 * By default it is TCP's: recvmsg(fd, MSG_ERRQUEUE) returns a struct sock_extended_err with
 * ee_origin SO_EE_ORIGIN_ZEROCOPY and the range of send ids [ee_info, ee_data], under
 * SOL_IP/IP_RECVERR (SMCPROTO_SMC) or SOL_IPV6/IPV6_RECVERR (SMCPROTO_SMC6).
 *
 * A send may instead carry a cookie of the application's choosing, in a control message
 *	cmsg_level SOL_SMC, cmsg_type RSMC_ZC_COOKIE, data __u32
 * Such a send takes no id; its completion returns the cookie. While cookies are pending, a
 * recvmsg(fd, MSG_ERRQUEUE) returns as many as fit its buffer as the data (__u32 each, in
 * completion order, each exactly once) with a control message
 *	cmsg_level SOL_SMC, cmsg_type RSMC_ZC_COOKIES, data struct rsmc_zc_cookies
 * If more were pending than fit, MSG_TRUNC is set and the rest stay queued; with MSG_PEEK none
 * is taken. So a read of rsmc_zc_cookies.pending * 4 bytes after a MSG_PEEK gets them all.
 * Cookies are read before id ranges. A send finds ENOBUFS while a socket holds as many cookies
 * (in flight or unread) as net.core.optmem_max / 4.
 */
#define RSMC_ZC_COOKIE	65
#define RSMC_ZC_COOKIES	66

struct rsmc_zc_cookies {
	__u32 count;	/* cookies in this read's data */
	__u32 pending;	/* cookies pending before this read: more than count sets MSG_TRUNC */
};

#endif /* _UAPI_LINUX_RSMC_H */
