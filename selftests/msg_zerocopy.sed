# An rsmc mode for the kernel tree's tools/testing/selftests/net/msg_zerocopy.c: test "rsmc"
# runs its TCP test over AF_SMC sockets (protocol 1 for IPv6), with the same addresses.
/^static int  cfg_family/a static bool cfg_rsmc;
s/fd = socket(domain, type, protocol);/fd = cfg_rsmc ? socket(AF_SMC, type, domain == PF_INET6) : socket(domain, type, protocol);/
s/else if (!strcmp(cfg_test, "rds"))/else if (!strcmp(cfg_test, "rsmc")) {\n\t\tcfg_rsmc = true;\n\t\tdo_test(cfg_family, SOCK_STREAM, 0);\n\t} else if (!strcmp(cfg_test, "rds"))/
# A notification follows its RDMA write's completion, i.e. the peer's acknowledgement over
# soft-RoCE: on a debug kernel under TCG the last ones can take longer than TCP's 500 ms.
s/int64_t tstop = gettimeofday_ms() + cfg_waittime_ms;/int64_t tstop = gettimeofday_ms() + 10 * cfg_waittime_ms;/
