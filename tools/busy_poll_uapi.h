/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The busy-polling UAPI that Debian bookworm's headers lack, for the tools and the kselftests:
 * epoll's EPIOCSPARAMS (include/uapi/linux/eventpoll.h, Linux 6.9) and io_uring's
 * IORING_REGISTER_NAPI (include/uapi/linux/io_uring.h, Linux 6.9; opcode and op_param 6.13).
 * liburing 2.3 has no io_uring_register_napi(): rsmc_io_uring_register_napi() makes the
 * raw system call.
 */
#ifndef RSMC_BUSY_POLL_UAPI_H
#define RSMC_BUSY_POLL_UAPI_H

#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef EPIOCSPARAMS
struct epoll_params {
	uint32_t busy_poll_usecs;
	uint16_t busy_poll_budget;
	uint8_t prefer_busy_poll;
	uint8_t __pad;	/* must be zero */
};
#define EPOLL_IOC_TYPE 0x8A
#define EPIOCSPARAMS _IOW(EPOLL_IOC_TYPE, 0x01, struct epoll_params)
#define EPIOCGPARAMS _IOR(EPOLL_IOC_TYPE, 0x02, struct epoll_params)
#endif
_Static_assert(sizeof(struct epoll_params) == 8, "struct epoll_params");

#define RSMC_IORING_REGISTER_NAPI 27

/* struct io_uring_napi's opcode */
enum {
	RSMC_IO_URING_NAPI_REGISTER_OP = 0,
	RSMC_IO_URING_NAPI_STATIC_ADD_ID = 1,
	RSMC_IO_URING_NAPI_STATIC_DEL_ID = 2,
};

/* struct io_uring_napi's op_param with RSMC_IO_URING_NAPI_REGISTER_OP */
enum {
	/* The ring polls the NAPIs of the sockets its requests use. */
	RSMC_IO_URING_NAPI_TRACKING_DYNAMIC = 0,
	/* The ring polls the NAPI ids added with RSMC_IO_URING_NAPI_STATIC_ADD_ID. */
	RSMC_IO_URING_NAPI_TRACKING_STATIC = 1,
};

struct rsmc_io_uring_napi {
	uint32_t busy_poll_to;
	uint8_t prefer_busy_poll;
	uint8_t opcode;
	uint8_t pad[2];
	uint32_t op_param;
	uint32_t resv;
};
_Static_assert(sizeof(struct rsmc_io_uring_napi) == 16, "struct io_uring_napi");

/* io_uring_register(IORING_REGISTER_NAPI): 0, or -1 with errno set. */
static inline int rsmc_io_uring_register_napi(int ring_fd, struct rsmc_io_uring_napi *napi)
{
	return syscall(__NR_io_uring_register, ring_fd, RSMC_IORING_REGISTER_NAPI, napi, 1);
}

#endif
