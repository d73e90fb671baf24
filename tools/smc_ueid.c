// SPDX-License-Identifier: GPL-2.0
/*
 * smc_ueid: add a user-defined EID (UEID) to stock Linux SMC, what smc-tools' `smcr ueid add`
 * does. SMC-Rv2 (the only SMC-R version that works over rxe, which has RoCEv2 GIDs only)
 * needs a UEID on non-s390 machines. Used by the demo/benchmark to compare rsmc with stock
 * SMC-R on the same link.
 *
 *   smc_ueid EID     (up to 32 characters: A-Z 0-9 . - and blanks; padded with blanks)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>

#define SMC_GENL_FAMILY_NAME "SMC_GEN_NETLINK"
#define SMC_GENL_FAMILY_VERSION 1
#define SMC_NETLINK_ADD_UEID 10
#define SMC_NLA_EID_TABLE_ENTRY 1
#define SMC_MAX_EID_LEN 32

struct request {
	struct nlmsghdr nlh;
	struct genlmsghdr genl;
	char attrs[256];
};

static void add_attr(struct request *req, int type, const void *data, size_t len)
{
	struct nlattr *nla = (struct nlattr *)((char *)req + NLMSG_ALIGN(req->nlh.nlmsg_len));

	nla->nla_type = type;
	nla->nla_len = NLA_HDRLEN + len;
	memcpy((char *)nla + NLA_HDRLEN, data, len);
	req->nlh.nlmsg_len = NLMSG_ALIGN(req->nlh.nlmsg_len) + NLA_ALIGN(nla->nla_len);
}

/* Sends @req and returns the error code of the kernel's ack (0 on success), or -errno. */
static int transact(int fd, struct request *req, char *reply, size_t reply_len)
{
	struct nlmsghdr *nlh = (struct nlmsghdr *)reply;
	ssize_t n;

	if (send(fd, req, req->nlh.nlmsg_len, 0) < 0)
		return -errno;
	n = recv(fd, reply, reply_len, 0);
	if (n < 0)
		return -errno;
	if (!NLMSG_OK(nlh, (size_t)n))
		return -EPROTO;
	if (nlh->nlmsg_type == NLMSG_ERROR)
		return ((struct nlmsgerr *)NLMSG_DATA(nlh))->error;
	return 0;
}

static int family_id(int fd)
{
	struct request req = {
		.nlh = { .nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN), .nlmsg_type = GENL_ID_CTRL,
			 .nlmsg_flags = NLM_F_REQUEST },
		.genl = { .cmd = CTRL_CMD_GETFAMILY, .version = 1 },
	};
	char reply[4096];
	struct nlmsghdr *nlh = (struct nlmsghdr *)reply;
	struct nlattr *nla;
	int len, err;

	add_attr(&req, CTRL_ATTR_FAMILY_NAME, SMC_GENL_FAMILY_NAME, sizeof(SMC_GENL_FAMILY_NAME));
	err = transact(fd, &req, reply, sizeof(reply));
	if (err)
		return err;
	len = nlh->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);
	nla = (struct nlattr *)((char *)NLMSG_DATA(nlh) + GENL_HDRLEN);
	for (; len >= NLA_HDRLEN && nla->nla_len >= NLA_HDRLEN && nla->nla_len <= len;
	     len -= NLA_ALIGN(nla->nla_len), nla = (struct nlattr *)((char *)nla + NLA_ALIGN(nla->nla_len)))
		if (nla->nla_type == CTRL_ATTR_FAMILY_ID)
			return *(unsigned short *)((char *)nla + NLA_HDRLEN);
	return -ENOENT;
}

int main(int argc, char **argv)
{
	struct request req = {
		.nlh = { .nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN),
			 .nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK },
		.genl = { .cmd = SMC_NETLINK_ADD_UEID, .version = SMC_GENL_FAMILY_VERSION },
	};
	char eid[SMC_MAX_EID_LEN + 1], reply[4096];
	size_t len;
	int fd, id, err;

	if (argc != 2 || (len = strlen(argv[1])) == 0 || len > SMC_MAX_EID_LEN) {
		fprintf(stderr, "usage: %s EID (1..%d characters)\n", argv[0], SMC_MAX_EID_LEN);
		return 1;
	}
	memset(eid, ' ', SMC_MAX_EID_LEN);
	memcpy(eid, argv[1], len);
	eid[SMC_MAX_EID_LEN] = '\0';

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (fd < 0) {
		perror("socket(AF_NETLINK)");
		return 1;
	}
	id = family_id(fd);
	if (id < 0) {
		fprintf(stderr, "smc_ueid: no %s family (is smc.ko loaded?): %s\n",
			SMC_GENL_FAMILY_NAME, strerror(-id));
		return 1;
	}
	req.nlh.nlmsg_type = id;
	add_attr(&req, SMC_NLA_EID_TABLE_ENTRY, eid, sizeof(eid));
	err = transact(fd, &req, reply, sizeof(reply));
	close(fd);
	if (err && err != -EEXIST) {
		fprintf(stderr, "smc_ueid: adding UEID failed: %s\n", strerror(-err));
		return 1;
	}
	return 0;
}
