// SPDX-License-Identifier: GPL-2.0

//! In-kernel sockets (`sock_create_kern`), and the C arguments socket calls pass through.

use super::{
    sock::{SOL_SOCKET, SO_RCVLOWAT},
    sys,
};
use core::{marker::PhantomData, mem::size_of};
use kernel::sync::{
    atomic::{Atomic, Relaxed},
    Arc, ArcBorrow,
};
use kernel::{
    error::{to_result, Error},
    ffi::{c_int, c_long, c_uint, c_ulong},
    prelude::*,
    time::Delta,
    types::Opaque,
    uaccess::UserSlice,
};

/// A [`KernelSocket`]'s `SO_RCVLOWAT` lifted to 1 (see [`KernelSocket::wake_on_every_byte`]).
pub(crate) struct RcvlowatLifted<'a> {
    sock: &'a KernelSocket,
    saved: usize,
}

impl Drop for RcvlowatLifted<'_> {
    fn drop(&mut self) {
        // CAST: Read from the `int` field.
        let saved = self.saved as c_int;
        // SAFETY: `sk` is valid.
        unsafe { sys::rsmc_sk_set_rcvlowat(self.sock.sk(), saved) };
    }
}

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

            pub(super) fn as_raw(&mut self) -> *mut $raw {
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

impl MsgHdr {
    /// The `MSG_*` flags of a `sendmsg` call (`msg_flags`; `MSG_DONTWAIT` included for
    /// non-blocking files).
    pub(crate) fn flags(&mut self) -> i32 {
        // SAFETY: The header is valid for the borrow.
        unsafe { sys::rsmc_msg_flags(self.as_raw()) }
    }

    /// Copies the message's next bytes into `buf`; returns how many (fewer than its length only
    /// if the message has no more or user memory faulted).
    pub(crate) fn copy_data(&mut self, buf: &mut [u8]) -> usize {
        // SAFETY: `buf` is valid for writes of its length, and the iterator is the message's.
        unsafe { sys::rsmc_copy_from_iter(buf.as_mut_ptr().cast(), buf.len(), self.iter()) }
    }

    /// The message's data iterator, for copies to and from it.
    pub(super) fn iter(&mut self) -> *mut sys::iov_iter {
        // SAFETY: The header is valid for the borrow; no reference is created.
        unsafe { &raw mut (*self.as_raw()).msg_iter }
    }
}

impl SockPtr {
    pub(super) fn from_raw(ptr: sys::sockptr_t) -> Self {
        Self(ptr)
    }

    pub(super) fn as_raw(self) -> sys::sockptr_t {
        self.0
    }

    /// Reads an `int` option value of `len` bytes (`copy_safe_from_sockptr`): `EINVAL` if
    /// shorter, `EFAULT` if it cannot be read.
    pub(crate) fn read_i32(self, len: u32) -> Result<i32> {
        let mut value = 0i32;
        // SAFETY: `value` is valid for writes of its size; the pointer is the caller's option
        // value of `len` bytes.
        to_result(unsafe {
            sys::rsmc_copy_safe_from_sockptr(
                (&raw mut value).cast(),
                size_of::<i32>(),
                self.0,
                len as usize,
            )
        })?;
        Ok(value)
    }
}

impl UserPtr {
    pub(super) fn from_raw(ptr: *mut kernel::ffi::c_void) -> Self {
        Self(ptr)
    }

    /// The user address `addr` (e.g. an `ioctl` argument).
    pub(crate) fn from_addr(addr: usize) -> Self {
        // CAST: A user address, only handed to the user-copy functions.
        Self(addr as *mut kernel::ffi::c_void)
    }

    fn slice(self, len: usize) -> UserSlice {
        UserSlice::new(kernel::uaccess::UserPtr::from_ptr(self.0), len)
    }

    /// Reads an `int` (e.g. a `getsockopt` option length).
    pub(crate) fn read_i32(self) -> Result<i32> {
        self.slice(size_of::<i32>()).reader().read()
    }

    /// Writes an `int`.
    pub(crate) fn write_i32(self, value: i32) -> Result {
        self.slice(size_of::<i32>()).writer().write(&value)
    }

    /// Writes `data`.
    pub(crate) fn write_bytes(self, data: &[u8]) -> Result {
        self.slice(data.len()).writer().write_slice(data)
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
/// `MSG_WAITALL`.
const MSG_WAITALL: c_int = 0x100;
/// `MSG_NOSIGNAL`.
const MSG_NOSIGNAL: c_uint = 0x4000;

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

    fn sk(&self) -> *mut sys::sock {
        // SAFETY: The socket is valid by the type invariant and has an `sk` until released.
        unsafe { (*self.0).sk }
    }

    /// Sends all of `data`, blocking as long as it takes (`SO_SNDTIMEO` of this socket).
    pub(crate) fn send_all(&self, data: &[u8]) -> Result {
        let mut sent = 0;
        while let Some(rest) = data.get(sent..).filter(|rest| !rest.is_empty()) {
            let mut vec = sys::kvec {
                iov_base: rest.as_ptr().cast_mut().cast(),
                iov_len: rest.len(),
            };
            let mut msg = sys::msghdr {
                msg_flags: MSG_NOSIGNAL,
                ..Default::default()
            };
            // SAFETY: The socket is valid; `vec` describes `rest`, which the kernel only
            // reads, and outlives the call.
            let ret = unsafe { sys::kernel_sendmsg(self.0, &mut msg, &mut vec, 1, rest.len()) };
            to_result(ret)?;
            if ret == 0 {
                return Err(EPIPE);
            }
            // CAST: Positive after the checks.
            sent += ret as usize;
        }
        Ok(())
    }

    /// Fills `buf` from the stream, waiting at most `timeout` jiffies per wait.
    ///
    /// Fails with `EAGAIN` if the time runs out first and `ECONNRESET` if the peer closed.
    pub(crate) fn recv_exact(&self, buf: &mut [u8], timeout: c_long) -> Result {
        let sk = self.sk();
        // SAFETY: `sk` is valid. The timeout of the socket's own `SO_RCVTIMEO` is restored
        // below; no other caller receives on the socket while this one does.
        let saved = unsafe { sys::rsmc_sock_rcvtimeo(sk, false) };
        // SAFETY: As above.
        unsafe { sys::rsmc_sk_set_rcvtimeo(sk, timeout) };
        let mut received = 0;
        let result = loop {
            let Some(rest) = buf.get_mut(received..).filter(|rest| !rest.is_empty()) else {
                break Ok(());
            };
            let mut vec = sys::kvec {
                iov_base: rest.as_mut_ptr().cast(),
                iov_len: rest.len(),
            };
            let mut msg = sys::msghdr::default();
            // SAFETY: The socket is valid; `vec` describes `rest`, writable for the call.
            let ret = unsafe {
                sys::kernel_recvmsg(self.0, &mut msg, &mut vec, 1, rest.len(), MSG_WAITALL)
            };
            match ret {
                0 => break Err(ECONNRESET),
                // CAST: Positive.
                n if n > 0 => received += n as usize,
                err => break to_result(err),
            }
        };
        // SAFETY: As above.
        unsafe { sys::rsmc_sk_set_rcvtimeo(sk, saved) };
        result
    }

    /// How long this TCP socket would wait in FIN_WAIT2 for its peer to close: its
    /// `TCP_LINGER2`, else `net.ipv4.tcp_fin_timeout`, and at least 3.5 retransmission
    /// timeouts.
    pub(crate) fn fin_timeout(&self) -> Delta {
        // SAFETY: `sk` is valid, and a TCP socket.
        let ms = unsafe { sys::rsmc_tcp_fin_time_ms(self.sk()) };
        Delta::from_millis(i64::from(ms))
    }

    /// The socket's receive buffer size (`SO_RCVBUF` as stored, i.e. doubled).
    pub(crate) fn rcvbuf(&self) -> u32 {
        // SAFETY: `sk` is valid.
        let rcvbuf = unsafe { sys::rsmc_sk_rcvbuf(self.sk()) };
        u32::try_from(rcvbuf).unwrap_or(0)
    }

    /// The socket's `SO_RCVLOWAT`: how many bytes a read waits for, and wakeups wait for.
    pub(crate) fn rcvlowat(&self) -> usize {
        // SAFETY: `sk` is valid.
        let lowat = unsafe { sys::rsmc_sk_rcvlowat(self.sk()) };
        usize::try_from(lowat).unwrap_or(1).max(1)
    }

    /// Sets `SO_RCVLOWAT` as `setsockopt(2)` would (TCP caps it and may grow the receive
    /// buffer to fit).
    pub(crate) fn set_rcvlowat(&self, lowat: i32) -> Result {
        // CAST: 4.
        let len = size_of::<i32>() as u32;
        // SAFETY: The socket is valid; the option value is a kernel `int` that outlives the
        // call and is only read.
        to_result(unsafe {
            sys::sock_setsockopt(
                self.0,
                SOL_SOCKET,
                SO_RCVLOWAT,
                sys::rsmc_kernel_sockptr((&raw const lowat).cast_mut().cast()),
                len,
            )
        })
    }

    /// Sets `SO_RCVLOWAT` to 1 until the guard drops, which restores it. The application
    /// cannot set it meanwhile: see `Transport::set_rcvlowat`.
    ///
    /// TCP wakes a reader only once `SO_RCVLOWAT` bytes are in: a handshake message shorter
    /// than what the application asked for would wait out its timeout.
    pub(crate) fn wake_on_every_byte(&self) -> RcvlowatLifted<'_> {
        let saved = self.rcvlowat();
        // SAFETY: `sk` is valid.
        unsafe { sys::rsmc_sk_set_rcvlowat(self.sk(), 1) };
        RcvlowatLifted { sock: self, saved }
    }

    /// Asks TCP to offer the SMC option in this socket's SYN (client) or to accept it in
    /// SYNs (listener); takes effect while an [`super::sock::SmcSynOption`] lives.
    pub(crate) fn set_syn_smc(&self, on: bool) {
        // SAFETY: `sk` is a valid TCP socket (all kernel sockets rsmc makes are).
        unsafe { sys::rsmc_tcp_set_syn_smc(self.sk(), on) };
    }

    /// Whether the connection negotiated the SMC option: both SYNs carried it.
    pub(crate) fn syn_smc(&self) -> bool {
        // SAFETY: As for `set_syn_smc`.
        unsafe { sys::rsmc_tcp_syn_smc(self.sk()) }
    }

    /// The local (or the `peer`'s) IP address of the connection as an IPv6 address (IPv4 as
    /// `::ffff:a.b.c.d`).
    pub(crate) fn ip(&self, peer: bool) -> Result<[u8; 16]> {
        /// Room for any socket address (`struct sockaddr_storage`).
        #[repr(C, align(8))]
        struct Storage([u8; 128]);
        let mut storage = Storage([0; 128]);
        let addr = storage.0.as_mut_ptr().cast();
        // SAFETY: The socket is valid; `storage` has room for any address.
        let len = unsafe {
            if peer {
                sys::kernel_getpeername(self.0, addr)
            } else {
                sys::kernel_getsockname(self.0, addr)
            }
        };
        to_result(len)?;
        let bytes = &storage.0;
        let family = c_int::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
        let mut ip = [0u8; 16];
        match family {
            // `struct sockaddr_in`: the address at offset 4.
            AF_INET => {
                ip[10] = 0xff;
                ip[11] = 0xff;
                ip[12..].copy_from_slice(&bytes[4..8]);
            }
            // `struct sockaddr_in6`: the address at offset 8.
            AF_INET6 => ip.copy_from_slice(&bytes[8..24]),
            _ => return Err(EAFNOSUPPORT),
        }
        Ok(ip)
    }

    /// The pending error of the underlying `struct sock` (`sk_err`), without clearing it.
    pub(crate) fn pending_error(&self) -> Option<Error> {
        // SAFETY: The socket and its `sk` are valid by the type invariant.
        let err = unsafe { sys::rsmc_sk_err((*self.0).sk) };
        (err != 0).then(|| Error::from_errno(-err))
    }

    /// Waits up to `*timeo` jiffies for a connect in progress (a non-blocking `connect`) to
    /// finish (`sk_stream_wait_connect`); `Ok` once the connection is established.
    ///
    /// Fails with the connection's error (taken, as `SO_ERROR` would), `EPIPE` if it closed
    /// without one, `EAGAIN` when the time ran out.
    pub(crate) fn wait_connected(&self, timeo: &mut c_long) -> Result {
        // `TCPF_*` bits of the TCP states (`include/net/tcp_states.h`).
        const TCPF_ESTABLISHED: u32 = 1 << 1;
        const TCPF_SYN_SENT: u32 = 1 << 2;
        const TCPF_SYN_RECV: u32 = 1 << 3;
        const TCPF_CLOSE_WAIT: u32 = 1 << 8;
        let sk = self.sk();
        let tcpf = |state: c_int| 1u32.checked_shl(state.unsigned_abs()).unwrap_or(0);
        // SAFETY: `sk` is valid; `sk_stream_wait_connect` runs with the socket lock held, as
        // it requires, and releases it only while sleeping.
        let (err, state) = unsafe {
            sys::rsmc_lock_sock(sk);
            let connecting = tcpf(sys::rsmc_sk_state(sk)) & (TCPF_SYN_SENT | TCPF_SYN_RECV) != 0;
            let err = if connecting {
                sys::sk_stream_wait_connect(sk, timeo)
            } else {
                0
            };
            let state = sys::rsmc_sk_state(sk);
            sys::release_sock(sk);
            (err, state)
        };
        if tcpf(state) & (TCPF_ESTABLISHED | TCPF_CLOSE_WAIT) != 0 {
            return Ok(());
        }
        // `EPIPE` means "not connecting any more": the pending error, if any, says why.
        if err != 0 && err != EPIPE.to_errno() {
            return Err(Error::from_errno(err));
        }
        // SAFETY: `sk` is valid; `sock_error` exchanges `sk_err` atomically.
        let pending = unsafe { sys::rsmc_sock_error(sk) };
        Err(if pending != 0 {
            Error::from_errno(pending)
        } else {
            EPIPE
        })
    }

    /// Resets the connection at once (`tcp_abort`), waking anyone waiting on it with `err`.
    pub(crate) fn abort(&self, err: Error) {
        // SAFETY: `sk` is a valid TCP socket; `tcp_abort` takes the socket lock itself. Its
        // only failure is for sockets that are already closed, which is the goal anyway.
        unsafe { sys::tcp_abort(self.sk(), -err.to_errno()) };
    }
}

/// Socket events a [`SockHook`] passes on. Both run in softirq context with the socket locked
/// (or from its owner's process context): they must not sleep.
pub(crate) trait SockEvents: Send + Sync + 'static {
    /// The hooked listening socket has a connection to accept.
    fn data_ready(_this: ArcBorrow<'_, Self>) {}

    /// The hooked connection failed with `err` (reset, keepalive or retransmission timeout).
    fn error_report(_this: ArcBorrow<'_, Self>, _err: Error) {}
}

/// The socket callback a [`SockHook`] takes over.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookedEvent {
    /// `sk_data_ready` of a listening socket: its own waiters are no longer woken (rsmc never
    /// waits on such a socket).
    ListenerDataReady,
    /// `sk_error_report`: the socket's own waiters are no longer woken of errors.
    ErrorReport,
}

impl HookedEvent {
    /// Swaps in `callback` and `user` as one step; returns the old callback and user data.
    ///
    /// # Safety
    ///
    /// `sk` must be valid, and `callback` must expect `user` as the socket's user data.
    unsafe fn swap(
        self,
        sk: *mut sys::sock,
        callback: sys::rsmc_sk_callback,
        user: *mut kernel::ffi::c_void,
    ) -> (sys::rsmc_sk_callback, *mut kernel::ffi::c_void) {
        let mut old_user = core::ptr::null_mut();
        // SAFETY: The caller's promise; both shims swap under `sk_callback_lock`.
        let old = unsafe {
            match self {
                Self::ListenerDataReady => {
                    sys::rsmc_sk_swap_data_ready(sk, callback, user, &mut old_user)
                }
                Self::ErrorReport => {
                    sys::rsmc_sk_swap_error_report(sk, callback, user, &mut old_user)
                }
            }
        };
        (old, old_user)
    }

    fn callback<T: SockEvents>(self) -> sys::rsmc_sk_callback {
        match self {
            Self::ListenerDataReady => Some(data_ready_callback::<T>),
            Self::ErrorReport => Some(error_report_callback::<T>),
        }
    }
}

/// Diverts one callback of a kernel socket to a [`SockEvents`] target until dropped.
///
/// # Invariants
///
/// While `hooked` is set the socket's callback for `event` is `event.callback::<T>()` and its
/// `sk_user_data` an `Arc<T>` from `Arc::into_raw`; `old` is the callback it replaced.
pub(crate) struct SockHook<T: SockEvents> {
    sock: Arc<KernelSocket>,
    event: HookedEvent,
    old: sys::rsmc_sk_callback,
    /// Cleared by the first [`SockHook::unhook`].
    hooked: Atomic<bool>,
    // `fn() -> T`: the hook only refers to a `T` (in the socket), so it moves freely.
    _target: PhantomData<fn() -> T>,
}

impl<T: SockEvents> SockHook<T> {
    /// Makes `sock` call `target` on `event`; fails with `EBUSY` if something else already
    /// owns the socket's user data.
    pub(crate) fn new(sock: Arc<KernelSocket>, event: HookedEvent, target: Arc<T>) -> Result<Self> {
        let user = Arc::into_raw(target).cast_mut().cast();
        // SAFETY: `sk` is valid; the callback matches the user data stored with it.
        let (old, old_user) = unsafe { event.swap(sock.sk(), event.callback::<T>(), user) };
        if !old_user.is_null() {
            // SAFETY: Puts back what was there; `ours` is the pointer stored above.
            let (_, ours) = unsafe { event.swap(sock.sk(), old, old_user) };
            // SAFETY: `ours` is the `Arc::into_raw` pointer stored above, taken back once.
            drop(unsafe { Arc::from_raw(ours.cast::<T>()) });
            return Err(EBUSY);
        }
        // INVARIANT: The callback and user data were stored above.
        Ok(Self {
            sock,
            event,
            old,
            hooked: Atomic::new(true),
            _target: PhantomData,
        })
    }

    /// The hooked socket.
    pub(crate) fn socket(&self) -> &KernelSocket {
        &self.sock
    }

    /// Gives a connection accepted from the hooked listener its own data-ready callback back
    /// (TCP copies the listener's callback and user data into each new connection).
    pub(crate) fn restore_accepted(&self, child: &KernelSocket) {
        // SAFETY: `child` is valid; its user data is a copy of the listener's, not a
        // reference of its own, so dropping it is right.
        unsafe { self.event.swap(child.sk(), self.old, core::ptr::null_mut()) };
    }

    /// Puts the socket's own callback back and drops the target's reference; later calls do
    /// nothing.
    pub(crate) fn unhook(&self) {
        if !self.hooked.xchg(false, Relaxed) {
            return;
        }
        // SAFETY: `sk` is valid (we hold the socket). After the swap, which takes the callback
        // lock that the callbacks hold while they use the target, no call uses it.
        let (_, user) = unsafe {
            self.event
                .swap(self.sock.sk(), self.old, core::ptr::null_mut())
        };
        // SAFETY: `hooked` was set, so by the type invariant `user` is the `Arc<T>` stored in
        // `new`; `hooked` is now clear, so it is taken back only once.
        drop(unsafe { Arc::from_raw(user.cast::<T>()) });
    }
}

impl<T: SockEvents> Drop for SockHook<T> {
    fn drop(&mut self) {
        self.unhook();
    }
}

/// Calls `f` with the target of a hooked socket, if it still has one.
///
/// # Safety
///
/// `sk` must be valid, and a non-null user data must be the `Arc<T>` of a [`SockHook<T>`].
unsafe fn with_target<T: SockEvents>(sk: *mut sys::sock, f: impl FnOnce(ArcBorrow<'_, T>)) {
    // SAFETY: `sk` is valid; the lock keeps the user data from being swapped out meanwhile.
    let user = unsafe { sys::rsmc_sk_user_data_lock(sk) };
    if !user.is_null() {
        // SAFETY: The caller's promise; the `Arc` cannot be dropped while we hold the
        // callback lock.
        f(unsafe { ArcBorrow::from_raw(user.cast::<T>()) });
    }
    // SAFETY: Locked above.
    unsafe { sys::rsmc_sk_user_data_unlock(sk) };
}

/// The `sk_data_ready` of a listening socket with a [`SockHook<T>`].
///
/// # Safety
///
/// Called by the network stack with a valid socket.
unsafe extern "C" fn data_ready_callback<T: SockEvents>(sk: *mut sys::sock) {
    // Connections made by the hooked listener inherit this callback and a copy of its user
    // data until `restore_accepted`; nobody waits on them before that, and their copy of the
    // pointer is not theirs to use.
    // SAFETY: `sk` is valid.
    if !unsafe { sys::rsmc_sk_is_listening(sk) } {
        return;
    }
    // SAFETY: `sk` is valid; a listener's user data is its hook's (type invariant of
    // `SockHook`).
    unsafe { with_target::<T>(sk, T::data_ready) };
}

/// The `sk_error_report` of a socket with a [`SockHook<T>`].
///
/// # Safety
///
/// Called by the network stack with a valid socket.
unsafe extern "C" fn error_report_callback<T: SockEvents>(sk: *mut sys::sock) {
    // SAFETY: `sk` is valid; `sk_err` is read racily by design.
    let err = unsafe { sys::rsmc_sk_err(sk) };
    if err == 0 {
        return;
    }
    // SAFETY: `sk` is valid; its user data is its hook's (type invariant of `SockHook`).
    unsafe {
        with_target::<T>(sk, |target| {
            T::error_report(target, Error::from_errno(-err))
        })
    };
}

impl Drop for KernelSocket {
    fn drop(&mut self) {
        // SAFETY: We own the socket by the type invariant; nothing uses it after this.
        unsafe { sys::sock_release(self.0) };
    }
}
