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

#endif /* _UAPI_LINUX_RSMC_H */
