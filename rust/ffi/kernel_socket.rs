// SPDX-License-Identifier: GPL-2.0

//! In-kernel sockets (`sock_create_kern`), and the C arguments socket calls pass through.

use super::sys;
use kernel::{
    error::{to_result, Error},
    ffi::{c_int, c_uint, c_ulong},
    prelude::*,
    types::Opaque,
};

/// A socket address as passed to `bind`/`connect` (`struct sockaddr_unsized`), borrowed.
#[repr(transparent)]
pub(crate) struct SockAddr(Opaque<sys::sockaddr_unsized>);

/// A buffer for `getname` to fill (`struct sockaddr`, at least `sockaddr_storage` long).
#[repr(transparent)]
pub(crate) struct SockAddrOut(Opaque<sys::sockaddr>);

/// A message header (`struct msghdr`) with its data iterator.
#[repr(transparent)]
pub(crate) struct MsgHdr(Opaque<sys::msghdr>);

/// The file a poll is for.
#[repr(transparent)]
pub(crate) struct File(Opaque<sys::file>);

/// The poll table of a `poll`/`select`/`epoll` call.
#[repr(transparent)]
pub(crate) struct PollTable(Opaque<sys::poll_table_struct>);

/// A user or kernel pointer to a socket option value (`sockptr_t`).
#[derive(Clone, Copy)]
pub(crate) struct SockPtr(sys::sockptr_t);

/// A user-space pointer (`__user`), only ever handed back to the kernel.
#[derive(Clone, Copy)]
pub(crate) struct UserPtr(*mut kernel::ffi::c_void);

macro_rules! borrow_from_raw {
    ($($ty:ident: $raw:ty),* $(,)?) => {$(
        impl $ty {
            /// # Safety
            ///
            /// `ptr` must be valid for the lifetime `'a` and not be accessed by Rust elsewhere.
            pub(super) unsafe fn from_raw<'a>(ptr: *mut $raw) -> &'a mut Self {
                // SAFETY: The type is a transparent wrapper; validity is the caller's promise.
                unsafe { &mut *ptr.cast::<Self>() }
            }

            fn as_raw(&mut self) -> *mut $raw {
                self.0.get()
            }
        }
    )*};
}
borrow_from_raw!(
    SockAddr: sys::sockaddr_unsized,
    SockAddrOut: sys::sockaddr,
    MsgHdr: sys::msghdr,
    File: sys::file,
    PollTable: sys::poll_table_struct,
);

impl SockPtr {
    pub(super) fn from_raw(ptr: sys::sockptr_t) -> Self {
        Self(ptr)
    }

    pub(super) fn as_raw(self) -> sys::sockptr_t {
        self.0
    }
}

impl UserPtr {
    pub(super) fn from_raw(ptr: *mut kernel::ffi::c_void) -> Self {
        Self(ptr)
    }
}

/// An in-kernel socket owned by rsmc, e.g. the TCP socket behind an `AF_SMC` socket.
///
/// # Invariants
///
/// `0` is a valid socket from `sock_create_kern` or `kernel_accept`, released on drop.
pub(crate) struct KernelSocket(*mut sys::socket);

// SAFETY: Kernel sockets may be used from any thread; they do their own locking.
unsafe impl Send for KernelSocket {}
// SAFETY: As above: every method goes through the socket's own (locked) operations.
unsafe impl Sync for KernelSocket {}

/// `AF_INET`.
const AF_INET: c_int = 2;
/// `AF_INET6`.
const AF_INET6: c_int = 10;
/// `IPPROTO_TCP`.
const IPPROTO_TCP: c_int = 6;
/// `SOCK_STREAM`.
const SOCK_STREAM: c_int = 1;

impl KernelSocket {
    /// Creates a TCP socket (IPv6 if `ipv6`) in the network namespace of `owner`.
    pub(crate) fn new_tcp(owner: &super::sock::SockRef<'_>, ipv6: bool) -> Result<Self> {
        let family = if ipv6 { AF_INET6 } else { AF_INET };
        let mut sock = core::ptr::null_mut();
        // SAFETY: `owner.net()` is the live namespace of a socket being created; `sock` is a
        // valid out pointer.
        to_result(unsafe {
            sys::sock_create_kern(owner.net(), family, SOCK_STREAM, IPPROTO_TCP, &mut sock)
        })?;
        // INVARIANT: Created just above.
        Ok(Self(sock))
    }

    fn ops(&self) -> &sys::proto_ops {
        // SAFETY: A created socket has an ops table that lives as long as the socket.
        unsafe { &*(*self.0).ops }
    }

    /// `bind(2)`.
    pub(crate) fn bind(&self, addr: &mut SockAddr, len: i32) -> Result {
        let bind = self.ops().bind.ok_or(EOPNOTSUPP)?;
        // SAFETY: The socket is valid by the type invariant, `addr` is a valid address of
        // `len` bytes from the socket layer.
        to_result(unsafe { bind(self.0, addr.as_raw(), len) })
    }

    /// `connect(2)` with the file flags `flags` (`O_NONBLOCK`).
    pub(crate) fn connect(&self, addr: &mut SockAddr, len: i32, flags: i32) -> Result {
        let connect = self.ops().connect.ok_or(EOPNOTSUPP)?;
        // SAFETY: As for `bind`.
        to_result(unsafe { connect(self.0, addr.as_raw(), len, flags) })
    }

    /// `listen(2)`.
    pub(crate) fn listen(&self, backlog: i32) -> Result {
        let listen = self.ops().listen.ok_or(EOPNOTSUPP)?;
        // SAFETY: The socket is valid by the type invariant.
        to_result(unsafe { listen(self.0, backlog) })
    }

    /// `accept(2)`: waits (unless `flags` has `O_NONBLOCK`) for a connection.
    pub(crate) fn accept(&self, flags: i32) -> Result<KernelSocket> {
        let mut new = core::ptr::null_mut();
        // SAFETY: The socket is valid by the type invariant; `new` is a valid out pointer.
        to_result(unsafe { sys::kernel_accept(self.0, &mut new, flags) })?;
        // INVARIANT: `kernel_accept` succeeded, so `new` is a fresh socket we own.
        Ok(KernelSocket(new))
    }

    /// `getsockname(2)` / `getpeername(2)`; returns the address length.
    pub(crate) fn getname(&self, addr: &mut SockAddrOut, peer: bool) -> Result<i32> {
        let getname = self.ops().getname.ok_or(EOPNOTSUPP)?;
        // SAFETY: The socket is valid; `addr` has room for a `sockaddr_storage`.
        let len = unsafe { getname(self.0, addr.as_raw(), c_int::from(peer)) };
        to_result(len)?;
        Ok(len)
    }

    /// Poll readiness, registering `file`'s waiter on this socket's wait queue.
    pub(crate) fn poll(&self, file: &mut File, wait: Option<&mut PollTable>) -> u32 {
        let Some(poll) = self.ops().poll else {
            return 0;
        };
        let wait = wait.map_or(core::ptr::null_mut(), PollTable::as_raw);
        // SAFETY: The socket is valid; `file` and `wait` (may be null) come from the poll
        // call being served.
        unsafe { poll(file.as_raw(), self.0, wait) }
    }

    /// `shutdown(2)`.
    pub(crate) fn shutdown(&self, how: i32) -> Result {
        let shutdown = self.ops().shutdown.ok_or(EOPNOTSUPP)?;
        // SAFETY: The socket is valid by the type invariant.
        to_result(unsafe { shutdown(self.0, how) })
    }

    /// `sendmsg(2)`; returns the number of bytes sent.
    pub(crate) fn sendmsg(&self, msg: &mut MsgHdr, len: usize) -> Result<usize> {
        let sendmsg = self.ops().sendmsg.ok_or(EOPNOTSUPP)?;
        // SAFETY: The socket is valid; `msg` is the caller's message header.
        let sent = unsafe { sendmsg(self.0, msg.as_raw(), len) };
        to_result(sent)?;
        // CAST: Non-negative after the check.
        Ok(sent as usize)
    }

    /// `recvmsg(2)` with `MSG_*` `flags`; returns the number of bytes received.
    pub(crate) fn recvmsg(&self, msg: &mut MsgHdr, len: usize, flags: i32) -> Result<usize> {
        let recvmsg = self.ops().recvmsg.ok_or(EOPNOTSUPP)?;
        // SAFETY: As for `sendmsg`.
        let received = unsafe { recvmsg(self.0, msg.as_raw(), len, flags) };
        to_result(received)?;
        // CAST: Non-negative after the check.
        Ok(received as usize)
    }

    /// `setsockopt(2)` at any level, as if called on this socket from user space.
    pub(crate) fn setsockopt(&self, level: i32, name: i32, val: SockPtr, len: u32) -> Result {
        let len = c_int::try_from(len).map_err(|_| EINVAL)?;
        // SAFETY: The socket is valid; `val` is the caller's option pointer.
        to_result(unsafe { sys::do_sock_setsockopt(self.0, false, level, name, val.0, len) })
    }

    /// `getsockopt(2)` at a level other than `SOL_SOCKET`, with user-space buffers.
    pub(crate) fn getsockopt(&self, level: i32, name: i32, val: UserPtr, len: UserPtr) -> Result {
        // SAFETY: The socket is valid; the pointers are the caller's user-space buffers,
        // wrapped as user `sockptr_t`s as the syscall layer does.
        to_result(unsafe {
            sys::do_sock_getsockopt(
                self.0,
                false,
                level,
                name,
                sys::rsmc_user_sockptr(val.0),
                sys::rsmc_user_sockptr(len.0),
            )
        })
    }

    /// `ioctl(2)` on the socket.
    pub(crate) fn ioctl(&self, cmd: c_uint, arg: c_ulong) -> Result<i32> {
        let ioctl = self.ops().ioctl.ok_or(ENOIOCTLCMD)?;
        // SAFETY: The socket is valid; `arg` is the caller's argument.
        let ret = unsafe { ioctl(self.0, cmd, arg) };
        to_result(ret)?;
        Ok(ret)
    }

    /// The pending error of the underlying `struct sock` (`sk_err`), without clearing it.
    pub(crate) fn pending_error(&self) -> Option<Error> {
        // SAFETY: The socket and its `sk` are valid by the type invariant.
        let err = unsafe { sys::rsmc_sk_err((*self.0).sk) };
        (err != 0).then(|| Error::from_errno(-err))
    }
}

impl Drop for KernelSocket {
    fn drop(&mut self) {
        // SAFETY: We own the socket by the type invariant; nothing uses it after this.
        unsafe { sys::sock_release(self.0) };
    }
}
