// SPDX-License-Identifier: GPL-2.0

//! The `AF_SMC` socket family (`socket(AF_SMC, SOCK_STREAM, 0 | 1)`).
//!
//! Each socket owns an internal kernel TCP socket to the same peer, as net/smc's `clcsock`.
//! Until a connection has an RDMA path, every call is served by that TCP socket ("fallback"),
//! which gives TCP semantics for free: blocking and non-blocking connect/accept, timeouts,
//! half-close, poll readiness, and the `IPPROTO_TCP` options.

use crate::ffi::{
    kernel_socket::{
        File, KernelSocket, MsgHdr, PollTable, SockAddr, SockAddrOut, SockPtr, UserPtr,
    },
    sock::{FamilyRegistration, FamilyTables, SockRef, Socket, SocketFamily, SOL_SOCKET},
};
use kernel::{prelude::*, ModuleMetadata};

/// `AF_SMC` from `include/linux/socket.h`.
const AF_SMC: i32 = 43;
/// `SMCPROTO_SMC`: the socket's internal TCP connection is IPv4.
const SMCPROTO_SMC: i32 = 0;
/// `SMCPROTO_SMC6`: the socket's internal TCP connection is IPv6.
const SMCPROTO_SMC6: i32 = 1;
/// `SOCK_STREAM` from `include/linux/net.h`.
const SOCK_STREAM: i32 = 1;

/// The state of one `AF_SMC` socket.
pub(crate) struct SmcSock {
    /// The internal TCP socket: handshake channel, and the data path on fallback.
    clc: KernelSocket,
}

struct AfSmc;

static TABLES: FamilyTables =
    FamilyTables::new::<AfSmc>(&<crate::Rsmc as ModuleMetadata>::THIS_MODULE, "RSMC");

impl SocketFamily for AfSmc {
    const FAMILY: i32 = AF_SMC;
    const TABLES: &'static FamilyTables = &TABLES;
    type State = SmcSock;

    fn check_create(sock_type: i32, protocol: i32) -> Result {
        // Same answers, in the same order, as net/smc's smc_create().
        if sock_type != SOCK_STREAM {
            return Err(ESOCKTNOSUPPORT);
        }
        if protocol != SMCPROTO_SMC && protocol != SMCPROTO_SMC6 {
            return Err(EPROTONOSUPPORT);
        }
        Ok(())
    }

    fn new_state(sk: &SockRef<'_>, protocol: i32) -> Result<SmcSock> {
        Ok(SmcSock {
            clc: KernelSocket::new_tcp(sk, protocol == SMCPROTO_SMC6)?,
        })
    }

    fn bind(sock: &Socket<'_, Self>, addr: &mut SockAddr, len: i32) -> Result {
        sock.state().clc.bind(addr, len)
    }

    fn connect(sock: &Socket<'_, Self>, addr: &mut SockAddr, len: i32, flags: i32) -> Result {
        sock.state().clc.connect(addr, len, flags)
    }

    fn listen(sock: &Socket<'_, Self>, backlog: i32) -> Result {
        sock.state().clc.listen(backlog)
    }

    fn accept(sock: &Socket<'_, Self>, flags: i32) -> Result<SmcSock> {
        Ok(SmcSock {
            clc: sock.state().clc.accept(flags)?,
        })
    }

    fn getname(sock: &Socket<'_, Self>, addr: &mut SockAddrOut, peer: bool) -> Result<i32> {
        sock.state().clc.getname(addr, peer)
    }

    fn poll(sock: &Socket<'_, Self>, file: &mut File, wait: Option<&mut PollTable>) -> u32 {
        let clc = &sock.state().clc;
        let mask = clc.poll(file, wait);
        // SO_ERROR is answered from this socket's `sk_err`: mirror the TCP socket's error
        // (e.g. a refused non-blocking connect) so pollers that then ask for it see it.
        if let Some(err) = clc.pending_error() {
            sock.sk().set_error(err);
        }
        mask
    }

    fn shutdown(sock: &Socket<'_, Self>, how: i32) -> Result {
        sock.state().clc.shutdown(how)
    }

    fn setsockopt(
        sock: &Socket<'_, Self>,
        level: i32,
        name: i32,
        val: SockPtr,
        len: u32,
    ) -> Result {
        if level == SOL_SOCKET {
            // Socket-level options (timeouts, buffer sizes, keepalive, linger, reuseaddr)
            // apply to this socket and to the TCP socket that carries its traffic.
            sock.set_socket_option(name, val, len)?;
        }
        sock.state().clc.setsockopt(level, name, val, len)
    }

    fn getsockopt(
        sock: &Socket<'_, Self>,
        level: i32,
        name: i32,
        val: UserPtr,
        len: UserPtr,
    ) -> Result {
        sock.state().clc.getsockopt(level, name, val, len)
    }

    fn sendmsg(sock: &Socket<'_, Self>, msg: &mut MsgHdr, len: usize) -> Result<usize> {
        sock.state().clc.sendmsg(msg, len)
    }

    fn recvmsg(sock: &Socket<'_, Self>, msg: &mut MsgHdr, len: usize, flags: i32) -> Result<usize> {
        sock.state().clc.recvmsg(msg, len, flags)
    }

    fn ioctl(sock: &Socket<'_, Self>, cmd: u32, arg: usize) -> Result<i32> {
        sock.state().clc.ioctl(cmd, arg)
    }

    fn release(_sock: &Socket<'_, Self>) {
        // Dropping the state releases the TCP socket, which closes it gracefully (unsent
        // data drains, SO_LINGER honoured) or aborts it as TCP would.
    }
}

/// Registers `AF_SMC`; fails with a clear message if another module (stock `smc.ko`) has it.
pub(crate) fn register() -> Result<FamilyRegistration> {
    FamilyRegistration::new::<AfSmc>().inspect_err(|err| {
        if *err == EEXIST {
            pr_err!("AF_SMC is already registered (is smc.ko loaded?): unload it first\n");
        }
    })
}
