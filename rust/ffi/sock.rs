// SPDX-License-Identifier: GPL-2.0

//! Socket family registration (`net_proto_family`, `proto`, `proto_ops`) and the socket
//! operations of a family, turned into a trait.
//!
//! The C tables live in a [`FamilyTables`] static built at compile time from a
//! [`SocketFamily`] implementation; the trampolines here turn C calls into trait calls. Each
//! socket's `struct sock` is followed by the family's per-socket [`SocketFamily::State`].

use super::{
    kernel_socket::{File, MsgHdr, PollTable, SockAddr, SockAddrOut, SockPtr, UserPtr},
    sys, StaticCell,
};
use core::{
    marker::PhantomData,
    mem::{size_of, MaybeUninit},
    ops::Deref,
    pin::pin,
    ptr::NonNull,
};
use kernel::{
    error::{from_result, to_result},
    ffi::{c_int, c_long, c_uint, c_ulong, c_void},
    prelude::*,
    sync::aref::AlwaysRefCounted,
    task::TASK_INTERRUPTIBLE,
    time::Delta,
    types::Opaque,
    ThisModule,
};

/// `SOL_SOCKET`.
pub(crate) const SOL_SOCKET: i32 = 1;
/// `SO_RCVLOWAT`.
pub(crate) const SO_RCVLOWAT: i32 = 18;
/// `ioctl`s that count a stream socket's queued bytes: to read (`SIOCINQ`, also `FIONREAD`),
/// not yet acknowledged (`SIOCOUTQ`), not yet sent (`SIOCOUTQNSD`). Their numbers depend on the
/// architecture; `include/uapi/linux/sockios.h` defines the first two as these.
pub(crate) const SIOCINQ: u32 = sys::FIONREAD;
pub(crate) const SIOCOUTQ: u32 = sys::TIOCOUTQ;
pub(crate) const SIOCOUTQNSD: u32 = sys::SIOCOUTQNSD;

/// Where a family's Rust state `S` lives in each socket's allocation: right after the
/// `struct sock`, whose size comes from C (bindgen's `struct sock` is not trusted, see
/// `check_layouts`). `proto::obj_size` covers both.
fn state_offset<S>() -> usize {
    // SAFETY: Returns a constant.
    let sock_size = unsafe { sys::rsmc_sizeof_sock() };
    sock_size.next_multiple_of(align_of::<S>())
}

/// The state of family `T` in the socket allocation of `sk`.
///
/// # Safety
///
/// `sk` must be a `struct sock` of family `T` allocated with `T::TABLES.proto`.
unsafe fn state_ptr<T: SocketFamily>(sk: *mut sys::sock) -> *mut MaybeUninit<T::State> {
    // SAFETY: The proto's `obj_size` includes the state at `state_offset` (see
    // `FamilyRegistration::new`), so the result stays inside the allocation.
    unsafe { sk.cast::<u8>().add(state_offset::<T::State>()).cast() }
}

/// A socket of family `T`, borrowed for the duration of a socket call.
///
/// # Invariants
///
/// `sock` is a valid `struct socket` whose `sk` was created by [`create_callback`] for `T`
/// (so its state is initialised) and stays valid for the borrow.
pub(crate) struct Socket<'a, T: SocketFamily> {
    sock: *mut sys::socket,
    state: &'a T::State,
}

impl<'a, T: SocketFamily> Socket<'a, T> {
    /// # Safety
    ///
    /// `sock` must satisfy the type invariant for `'a`.
    unsafe fn from_raw(sock: *mut sys::socket) -> Self {
        // SAFETY: Per the type invariant `sk` is ours, and its state was initialised at
        // creation and is dropped only in `release_callback`.
        let state = unsafe { (*state_ptr::<T>((*sock).sk)).assume_init_ref() };
        Self { sock, state }
    }

    /// The family's state of this socket.
    pub(crate) fn state(&self) -> &'a T::State {
        self.state
    }

    /// `setsockopt(SOL_SOCKET, …)` on this socket itself (`sock_setsockopt`).
    pub(crate) fn set_socket_option(&self, name: i32, val: SockPtr, len: u32) -> Result {
        // SAFETY: The socket is valid by the type invariant; `val` is the caller's pointer.
        to_result(unsafe { sys::sock_setsockopt(self.sock, SOL_SOCKET, name, val.as_raw(), len) })
    }

    /// Registers the poll call's waiter on this socket's wait queue (`sock_poll_wait`), so
    /// that the wakeups of [`Sock`] reach it.
    pub(crate) fn poll_wait(&self, file: &mut File, wait: Option<&mut PollTable>) {
        let wait = wait.map_or(core::ptr::null_mut(), |wait| wait.as_raw());
        // SAFETY: The socket is valid by the type invariant; `file` and `wait` (may be null)
        // come from the poll call being served.
        unsafe { sys::rsmc_sock_poll_wait(file.as_raw(), self.sock, wait) };
    }

    /// The socket's `struct sock`, for kernel calls made on its behalf.
    pub(crate) fn sk(&self) -> SockRef<'a> {
        // SAFETY: The socket is valid by the type invariant.
        let sk = unsafe { (*self.sock).sk };
        // INVARIANT: The socket's `sk` lives at least as long as the socket borrow `'a`.
        SockRef(sk, PhantomData)
    }
}

/// A `struct sock` borrowed for the duration of a socket call.
///
/// # Invariants
///
/// `0` is a valid `struct sock` for the lifetime `'a`.
pub(crate) struct SockRef<'a>(*mut sys::sock, PhantomData<&'a sys::sock>);

impl SockRef<'_> {
    /// The socket's network namespace.
    pub(super) fn net(&self) -> *mut sys::net {
        // SAFETY: `sk` is valid by the type invariant; its namespace is fixed at creation.
        unsafe { sys::rsmc_sock_net(self.0) }
    }
}

impl Deref for SockRef<'_> {
    type Target = Sock;

    fn deref(&self) -> &Sock {
        // SAFETY: `Sock` is a transparent wrapper of `struct sock`, valid for the borrow.
        unsafe { &*self.0.cast::<Sock>() }
    }
}

/// A `struct sock`, always behind a reference: a [`SockRef`] during a socket call, or an
/// [`ARef<Sock>`] (`sock_hold`/`sock_put`) for code that runs later, such as completion
/// handlers that wake the socket's waiters.
///
/// Only the socket's wait queue, callbacks and error are used through it, which stay valid
/// after the socket is closed (an orphaned `sk` has no waiters to wake).
#[repr(transparent)]
pub(crate) struct Sock(Opaque<sys::sock>);

// SAFETY: The socket's callbacks and wait queue may be used from any context.
unsafe impl Send for Sock {}
// SAFETY: As above; every method goes through the socket layer's own synchronisation.
unsafe impl Sync for Sock {}

// SAFETY: `sock_hold` and `sock_put` maintain the socket's reference count; the last put frees
// it.
unsafe impl AlwaysRefCounted for Sock {
    fn inc_ref(&self) {
        // SAFETY: The socket is valid: we hold a reference.
        unsafe { sys::rsmc_sock_hold(self.0.get()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up a reference it holds.
        unsafe { sys::rsmc_sock_put(obj.as_ptr().cast()) };
    }
}

impl Sock {
    pub(super) fn as_raw(&self) -> *mut sys::sock {
        self.0.get()
    }

    /// Sets the socket's pending error (`SO_ERROR`) unless one is pending already.
    pub(crate) fn set_error(&self, err: Error) {
        // SAFETY: `sk` is valid; `sk_err` is read and written racily by design in the socket
        // layer (READ_ONCE/WRITE_ONCE).
        unsafe {
            if sys::rsmc_sk_err(self.as_raw()) == 0 {
                sys::rsmc_sk_set_err(self.as_raw(), -err.to_errno());
            }
        }
    }

    /// Takes the pending error (`sock_error`): reported once, as TCP reports a reset.
    pub(crate) fn take_error(&self) -> Option<Error> {
        // SAFETY: `sk` is valid; `sock_error` exchanges `sk_err` atomically.
        let err = unsafe { sys::rsmc_sock_error(self.as_raw()) };
        (err != 0).then(|| Error::from_errno(err))
    }

    /// Whether an error is pending (`SO_ERROR` would report one).
    pub(crate) fn has_error(&self) -> bool {
        // SAFETY: `sk` is valid; `sk_err` is read racily by design.
        unsafe { sys::rsmc_sk_err(self.as_raw()) != 0 }
    }

    /// The `socket(2)` protocol (`SMCPROTO_SMC` or `SMCPROTO_SMC6` for `AF_SMC`).
    pub(crate) fn protocol(&self) -> i32 {
        // SAFETY: `sk` is valid; the protocol is set once, at creation.
        i32::from(unsafe { sys::rsmc_sk_protocol(self.as_raw()) })
    }

    /// Sets what `getsockopt(SO_REUSEPORT)` reports. Takes the socket lock, so it sleeps.
    pub(crate) fn set_reuseport(&self, on: bool) {
        // SAFETY: `sk` is valid. The shim writes the bit under the socket lock, as
        // `sk_setsockopt` writes `sk_reuse` and `sk_ipv6only`, which share its byte.
        unsafe { sys::rsmc_sk_set_reuseport(self.as_raw(), on) };
    }

    /// `SO_LINGER`'s time in milliseconds if it is on: zero makes closing abort the
    /// connection, more makes it wait up to that long for writes to reach the peer.
    pub(crate) fn linger_ms(&self) -> Option<u32> {
        let mut ms = 0;
        // SAFETY: `sk` is valid, `ms` writable; the flag and time are read racily by design.
        unsafe { sys::rsmc_sk_linger_ms(self.as_raw(), &mut ms) }.then_some(ms)
    }

    /// `net.ipv4.tcp_fin_timeout` of the socket's namespace: how long a closed TCP socket waits
    /// for its peer to close too.
    pub(crate) fn fin_timeout(&self) -> Delta {
        // SAFETY: `sk` is valid.
        let ms = unsafe { sys::rsmc_sk_fin_timeout_ms(self.as_raw()) };
        Delta::from_millis(i64::from(ms))
    }

    /// Wakes readers (`sk_data_ready`: `EPOLLIN` waiters).
    pub(crate) fn data_ready(&self) {
        // SAFETY: `sk` is valid; its callbacks may run in any context.
        unsafe { sys::rsmc_sk_data_ready(self.as_raw()) };
    }

    /// Wakes writers (`sk_write_space`: `EPOLLOUT` waiters).
    pub(crate) fn write_space(&self) {
        // SAFETY: As for `data_ready`.
        unsafe { sys::rsmc_sk_write_space(self.as_raw()) };
    }

    /// Wakes every waiter (`sk_state_change`), for state changes, errors and shutdowns.
    pub(crate) fn state_change(&self) {
        // SAFETY: As for `data_ready`.
        unsafe { sys::rsmc_sk_state_change(self.as_raw()) };
    }

    /// The receive timeout (`SO_RCVTIMEO`) in jiffies; 0 if `nonblock`.
    pub(crate) fn rcvtimeo(&self, nonblock: bool) -> c_long {
        // SAFETY: `sk` is valid.
        unsafe { sys::rsmc_sock_rcvtimeo(self.as_raw(), nonblock) }
    }

    /// The send timeout (`SO_SNDTIMEO`) in jiffies; 0 if `nonblock`.
    pub(crate) fn sndtimeo(&self, nonblock: bool) -> c_long {
        // SAFETY: `sk` is valid.
        unsafe { sys::rsmc_sock_sndtimeo(self.as_raw(), nonblock) }
    }

    /// The error a stream send fails with (`sk_stream_error`): the pending socket error if
    /// any, and `SIGPIPE` for `EPIPE` unless `msg_flags` has `MSG_NOSIGNAL`.
    pub(crate) fn stream_error(&self, msg_flags: i32, err: Error) -> Error {
        // SAFETY: `sk` is valid; called on behalf of the sending task.
        Error::from_errno(unsafe { sys::sk_stream_error(self.as_raw(), msg_flags, err.to_errno()) })
    }

    /// Makes busy polling on this socket spin on the NAPI instance `napi_id`
    /// (`SO_INCOMING_NAPI_ID` reports it, epoll records it at each wakeup).
    pub(crate) fn set_napi_id(&self, napi_id: u32) {
        // SAFETY: `sk` is valid; `sk_napi_id` is read racily by design (READ_ONCE).
        unsafe { sys::rsmc_sk_set_napi_id(self.as_raw(), napi_id) };
    }

    /// Busy-polls the socket's NAPI if busy polling is on for it (`SO_BUSY_POLL`,
    /// `net.core.busy_read`), until `done` returns true, the socket's busy-poll time runs out
    /// or a signal is pending; one poll if `nonblock`. `done` runs with preemption off: it
    /// must not sleep.
    pub(crate) fn busy_loop(&self, nonblock: bool, done: &dyn Fn() -> bool) {
        // SAFETY: `sk` is valid.
        if !unsafe { sys::rsmc_sk_can_busy_loop(self.as_raw()) } {
            return;
        }
        let end = BusyLoopEnd { sk: self, done };
        let (loop_end, arg): (BusyLoopEndFn, *mut c_void) = if nonblock {
            (None, core::ptr::null_mut())
        } else {
            (Some(busy_loop_end), (&raw const end).cast_mut().cast())
        };
        // SAFETY: `sk` is valid. `napi_busy_loop` calls `loop_end` with `arg` only during
        // this call, while `end` lives; a null `loop_end` makes it poll once.
        unsafe { sys::rsmc_sk_busy_loop(self.as_raw(), loop_end, arg) };
    }

    /// Sleeps on the socket's wait queue until `done` returns true, for at most `*timeo`
    /// jiffies (`MAX_SCHEDULE_TIMEOUT`: no limit), leaving the time left in `*timeo`.
    ///
    /// Fails with `EAGAIN` when the time runs out (at once if `*timeo` is 0) and with
    /// `EINTR`/`ERESTARTSYS` on a signal. `done` runs after the waiter is queued, so a wakeup
    /// between its check and the sleep is not lost; wakers change the state `done` reads,
    /// then call [`Sock::data_ready`], [`Sock::write_space`] or [`Sock::state_change`].
    pub(crate) fn wait_until(&self, timeo: &mut c_long, mut done: impl FnMut() -> bool) -> Result {
        let wait = pin!(Opaque::<sys::wait_queue_entry>::uninit());
        // SAFETY: `sk` is valid, and so is its wait queue (`sk_wq` is set while the socket
        // has a file, for the duration of any socket call). The entry is pinned on this stack
        // frame, initialised before it is queued and dequeued before the frame ends.
        let head = unsafe {
            sys::rsmc_init_wait_woken(wait.get());
            let head = sys::rsmc_sk_sleep(self.as_raw());
            sys::add_wait_queue(head, wait.get());
            head
        };
        let result = loop {
            if done() {
                break Ok(());
            }
            if *timeo == 0 {
                break Err(EAGAIN);
            }
            if kernel::current!().signal_pending() {
                // SAFETY: No preconditions.
                break Err(Error::from_errno(unsafe {
                    sys::rsmc_sock_intr_errno(*timeo)
                }));
            }
            // SAFETY: The entry is queued on `head` and was initialised for `wait_woken`.
            // CAST: `TASK_INTERRUPTIBLE` is a small positive state bit.
            *timeo = unsafe { sys::wait_woken(wait.get(), TASK_INTERRUPTIBLE as c_uint, *timeo) };
        };
        // SAFETY: Queued above, on the same head.
        unsafe { sys::remove_wait_queue(head, wait.get()) };
        result
    }
}

/// What ends a [`Sock::busy_loop`].
struct BusyLoopEnd<'a> {
    sk: &'a Sock,
    done: &'a dyn Fn() -> bool,
}

type BusyLoopEndFn = Option<unsafe extern "C" fn(*mut c_void, c_ulong) -> bool>;

/// `napi_busy_loop`'s end check for [`Sock::busy_loop`]: as `sk_busy_loop_end`, with the
/// caller's condition instead of a non-empty receive queue, and a pending signal.
///
/// # Safety
///
/// `arg` points to a live [`BusyLoopEnd`].
unsafe extern "C" fn busy_loop_end(arg: *mut c_void, start_time: c_ulong) -> bool {
    // SAFETY: The caller guarantees `arg` points to a live `BusyLoopEnd`.
    let end = unsafe { &*arg.cast::<BusyLoopEnd<'_>>() };
    (end.done)()
        || kernel::current!().signal_pending()
        // SAFETY: The socket is valid while it busy-polls.
        || unsafe { sys::rsmc_sk_busy_loop_timeout(end.sk.as_raw(), start_time) }
}

/// Makes TCP put the SMC experimental option into the SYNs of sockets that ask for it
/// ([`super::kernel_socket::KernelSocket::set_syn_smc`]) and answer it in SYN-ACKs, while any
/// value of this type lives (the `tcp_have_smc` static key).
pub(crate) struct SmcSynOption(());

impl SmcSynOption {
    /// Turns the option on.
    pub(crate) fn enable() -> Self {
        // SAFETY: No preconditions; balanced by `drop`.
        unsafe { sys::rsmc_tcp_have_smc_inc() };
        Self(())
    }
}

impl Drop for SmcSynOption {
    fn drop(&mut self) {
        // SAFETY: Balances the increment in `enable`.
        unsafe { sys::rsmc_tcp_have_smc_dec() };
    }
}

/// What a socket family implements; the FFI layer does the C plumbing around it.
///
/// Every operation runs in process context on behalf of a system call.
pub(crate) trait SocketFamily: Sized + 'static {
    /// The address family number (`AF_*`).
    const FAMILY: i32;
    /// The C tables registered for this family.
    const TABLES: &'static FamilyTables;
    /// Per-socket state, created with the socket and dropped when it is closed.
    type State: Send + Sync;

    /// Validates a `socket(2)` call before a socket is allocated.
    fn check_create(sock_type: i32, protocol: i32) -> Result;
    /// Creates the state of a new socket (`socket(2)`, `protocol` as checked).
    fn new_state(sk: &SockRef<'_>, protocol: i32) -> Result<Self::State>;
    /// `bind(2)`.
    fn bind(sock: &Socket<'_, Self>, addr: &mut SockAddr, len: i32) -> Result;
    /// `connect(2)`; `flags` are the file flags (`O_NONBLOCK`).
    fn connect(sock: &Socket<'_, Self>, addr: &mut SockAddr, len: i32, flags: i32) -> Result;
    /// `listen(2)`.
    fn listen(sock: &Socket<'_, Self>, backlog: i32) -> Result;
    /// `accept(2)`: returns the state of the accepted socket.
    fn accept(sock: &Socket<'_, Self>, flags: i32) -> Result<Self::State>;
    /// The socket [`SocketFamily::accept`] made state for exists now.
    fn accepted(sock: &Socket<'_, Self>);
    /// `getsockname(2)` (`peer` false) or `getpeername(2)`; returns the address length.
    fn getname(sock: &Socket<'_, Self>, addr: &mut SockAddrOut, peer: bool) -> Result<i32>;
    /// Readiness for `poll`/`select`/`epoll` (`EPOLL*` bits).
    fn poll(sock: &Socket<'_, Self>, file: &mut File, wait: Option<&mut PollTable>) -> u32;
    /// `shutdown(2)`.
    fn shutdown(sock: &Socket<'_, Self>, how: i32) -> Result;
    /// `setsockopt(2)` at any level (the family handles `SOL_SOCKET` itself).
    fn setsockopt(sock: &Socket<'_, Self>, level: i32, name: i32, val: SockPtr, len: u32)
        -> Result;
    /// `getsockopt(2)` at levels other than `SOL_SOCKET` (the socket layer answers those).
    fn getsockopt(
        sock: &Socket<'_, Self>,
        level: i32,
        name: i32,
        val: UserPtr,
        len: UserPtr,
    ) -> Result;
    /// `sendmsg(2)`; returns the bytes sent.
    fn sendmsg(sock: &Socket<'_, Self>, msg: &mut MsgHdr, len: usize) -> Result<usize>;
    /// `recvmsg(2)`; returns the bytes received.
    fn recvmsg(sock: &Socket<'_, Self>, msg: &mut MsgHdr, len: usize, flags: i32) -> Result<usize>;
    /// `ioctl(2)`.
    fn ioctl(sock: &Socket<'_, Self>, cmd: u32, arg: usize) -> Result<i32>;
    /// Last close: the state is dropped right after this returns.
    fn release(sock: &Socket<'_, Self>);
}

/// The C tables of one socket family.
pub(crate) struct FamilyTables {
    family: sys::net_proto_family,
    proto: StaticCell<sys::proto>,
    ops: sys::proto_ops,
}

// SAFETY: The tables hold function pointers and a module pointer, all immutable after
// construction; the mutable `proto` is behind `StaticCell`.
unsafe impl Sync for FamilyTables {}

/// Copies an ASCII name into a fixed C `char` array at compile time.
const fn c_name<const N: usize>(name: &str) -> [kernel::ffi::c_char; N] {
    let bytes = name.as_bytes();
    let mut out = [0; N];
    let mut i = 0;
    // Leave room for the terminating NUL.
    while i < bytes.len() && i + 1 < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

impl FamilyTables {
    /// Builds the tables for `T`, owned by `module`, with `name` for `/proc/net/protocols`.
    pub(crate) const fn new<T: SocketFamily>(module: &ThisModule, name: &str) -> Self {
        let owner = module.as_ptr().cast::<sys::module>();
        // SAFETY: All-zero is a valid value for these C structs (null pointers, zero sizes);
        // the fields that matter are set below.
        let mut family: sys::net_proto_family = unsafe { core::mem::zeroed() };
        // SAFETY: As above.
        let mut proto: sys::proto = unsafe { core::mem::zeroed() };
        // SAFETY: As above.
        let mut ops: sys::proto_ops = unsafe { core::mem::zeroed() };

        family.family = T::FAMILY;
        family.owner = owner;
        family.create = Some(create_callback::<T>);

        proto.name = c_name(name);
        proto.owner = owner;

        ops.family = T::FAMILY;
        ops.owner = owner;
        ops.release = Some(release_callback::<T>);
        ops.bind = Some(bind_callback::<T>);
        ops.connect = Some(connect_callback::<T>);
        ops.socketpair = Some(sys::sock_no_socketpair);
        ops.accept = Some(accept_callback::<T>);
        ops.getname = Some(getname_callback::<T>);
        ops.poll = Some(poll_callback::<T>);
        ops.ioctl = Some(ioctl_callback::<T>);
        ops.listen = Some(listen_callback::<T>);
        ops.shutdown = Some(shutdown_callback::<T>);
        ops.setsockopt = Some(setsockopt_callback::<T>);
        ops.getsockopt = Some(getsockopt_callback::<T>);
        ops.sendmsg = Some(sendmsg_callback::<T>);
        ops.recvmsg = Some(recvmsg_callback::<T>);
        ops.mmap = Some(sys::sock_no_mmap);

        Self {
            family,
            proto: StaticCell::new(proto),
            ops,
        }
    }
}

/// Allocates the `struct sock` with `T`'s `state` for `sock` and attaches it.
///
/// # Safety
///
/// `net` must be valid and `sock` a fresh socket of family `T` without an `sk`.
unsafe fn attach_sk<T: SocketFamily>(
    net: *mut sys::net,
    sock: *mut sys::socket,
    protocol: c_int,
    kern: c_int,
    make_state: impl FnOnce(&SockRef<'_>) -> Result<T::State>,
) -> Result {
    let tables = T::TABLES;
    // SAFETY: `net` is valid; `tables.proto` was registered by `FamilyRegistration::new`
    // (no socket of this family exists before that).
    let sk = unsafe {
        sys::sk_alloc(
            net,
            T::FAMILY,
            kernel::bindings::GFP_KERNEL,
            tables.proto.get(),
            kern,
        )
    };
    if sk.is_null() {
        return Err(ENOBUFS);
    }
    // SAFETY: `sk` is fresh (zeroed by `sk_alloc`), `sock` has no `sk` yet; the ops table
    // is `'static`. `sock_init_data` sets the socket's callbacks and links both.
    unsafe {
        (*sock).state = sys::socket_state_SS_UNCONNECTED;
        (*sock).ops = &tables.ops;
        sys::sock_init_data(sock, sk);
        // CAST: protocol was checked by `check_create` (0 or 1 for AF_SMC).
        sys::rsmc_sk_set_protocol(sk, protocol as u16);
        sys::rsmc_sock_set_custom_sockopt(sock);
        sys::rsmc_sk_set_destruct(sk, Some(destruct_callback));
    }
    // INVARIANT: `sk` stays allocated until after `make_state` returns.
    match make_state(&SockRef(sk, PhantomData)) {
        Ok(state) => {
            // SAFETY: `sk` was allocated from `T`'s proto, with room for the state.
            unsafe { (*state_ptr::<T>(sk)).write(state) };
            Ok(())
        }
        Err(err) => {
            // SAFETY: The state was never initialised, so release must not drop it: detach
            // the sk and free it here.
            unsafe {
                (*sock).sk = core::ptr::null_mut();
                sys::rsmc_sock_orphan(sk);
                sys::rsmc_sock_put(sk);
            }
            Err(err)
        }
    }
}

/// `net_proto_family::create`: a `socket(2)` call.
///
/// # Safety
///
/// Called by the socket layer with a valid `net` and a valid, fresh `sock`.
unsafe extern "C" fn create_callback<T: SocketFamily>(
    net: *mut sys::net,
    sock: *mut sys::socket,
    protocol: c_int,
    kern: c_int,
) -> c_int {
    from_result(|| {
        // SAFETY: `sock` is valid per the function's safety requirements.
        let sock_type = i32::from(unsafe { (*sock).type_ });
        T::check_create(sock_type, protocol)?;
        // SAFETY: As required by `attach_sk`, per this function's safety requirements.
        unsafe { attach_sk::<T>(net, sock, protocol, kern, |sk| T::new_state(sk, protocol))? };
        Ok(0)
    })
}

/// `proto_ops::release`: the last close of the socket.
///
/// # Safety
///
/// Called by the socket layer, once, with a socket created by [`create_callback`] or
/// [`accept_callback`] (or one whose `sk` is null).
unsafe extern "C" fn release_callback<T: SocketFamily>(sock: *mut sys::socket) -> c_int {
    // SAFETY: `sock` is valid per the function's safety requirements.
    let sk = unsafe { (*sock).sk };
    if sk.is_null() {
        return 0;
    }
    {
        // SAFETY: `sk` is ours, with initialised state.
        let socket = unsafe { Socket::<T>::from_raw(sock) };
        T::release(&socket);
    }
    // SAFETY: No other socket call runs during release (the file is gone), so nothing else
    // borrows the state; it is dropped exactly once, here. Then `sk` is detached and the
    // reference from `sk_alloc` dropped.
    unsafe {
        (*state_ptr::<T>(sk)).assume_init_drop();
        sys::rsmc_sock_orphan(sk);
        (*sock).sk = core::ptr::null_mut();
        sys::rsmc_sock_put(sk);
    }
    0
}

/// The last reference to `sk` is gone: frees what is left on its error queue (`MSG_ZEROCOPY`
/// notifications nobody read), as `inet_sock_destruct` does for TCP. Every notification holds
/// a reference, so none can be queued after this.
///
/// # Safety
///
/// Called by `__sk_destruct` with a socket of ours that nothing else references.
unsafe extern "C" fn destruct_callback(sk: *mut sys::sock) {
    // SAFETY: The socket is valid and unshared, per the function's safety requirements.
    unsafe { sys::rsmc_sk_purge_error_queue(sk) };
}

/// Generates a trampoline for a socket call that takes the socket first.
macro_rules! socket_call {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, |$sock:ident| $body:expr) => {
        /// # Safety
        ///
        /// Called by the socket layer with a live socket of family `T` and valid arguments.
        unsafe extern "C" fn $name<T: SocketFamily>(sock: *mut sys::socket, $($arg: $ty),*) -> $ret {
            // SAFETY: A live socket of this family has its state until release.
            let $sock = unsafe { Socket::<T>::from_raw(sock) };
            $body
        }
    };
}

socket_call!(bind_callback(addr: *mut sys::sockaddr_unsized, len: c_int) -> c_int, |socket| {
    // SAFETY: The socket layer passes a valid address buffer of `len` bytes.
    to_errno(T::bind(&socket, unsafe { SockAddr::from_raw(addr) }, len))
});

socket_call!(
    connect_callback(addr: *mut sys::sockaddr_unsized, len: c_int, flags: c_int) -> c_int,
    |socket| {
        // SAFETY: As for bind.
        to_errno(T::connect(&socket, unsafe { SockAddr::from_raw(addr) }, len, flags))
    }
);

socket_call!(listen_callback(backlog: c_int) -> c_int, |socket| {
    to_errno(T::listen(&socket, backlog))
});

socket_call!(shutdown_callback(how: c_int) -> c_int, |socket| {
    to_errno(T::shutdown(&socket, how))
});

socket_call!(
    accept_callback(newsock: *mut sys::socket, arg: *mut sys::proto_accept_arg) -> c_int,
    |socket| {
        from_result(|| {
            // SAFETY: The socket layer passes a valid `arg`.
            let (flags, kern) = unsafe { ((*arg).flags, (*arg).kern) };
            let state = T::accept(&socket, flags)?;
            let net = socket.sk().net();
            // SAFETY: The listening socket's sk is valid.
            let protocol = i32::from(unsafe { sys::rsmc_sk_protocol(socket.sk().0) });
            let mut state = Some(state);
            // SAFETY: `newsock` is the fresh socket the socket layer made for this accept,
            // with our ops already set; `net` is the listener's namespace. Once attached,
            // `newsock` has an `sk` that no one else sees yet; the listener's sk is valid.
            unsafe {
                attach_sk::<T>(net, newsock, protocol, c_int::from(kern), |_| {
                    state.take().ok_or(EINVAL)
                })?;
                (*newsock).state = sys::socket_state_SS_CONNECTED;
                // As a TCP child, the new socket starts with its listener's options.
                sys::rsmc_sk_inherit_options((*newsock).sk, socket.sk().0);
            }
            // SAFETY: `newsock` now has an `sk` of this family with initialised state, and
            // stays valid for this call.
            T::accepted(&unsafe { Socket::<T>::from_raw(newsock) });
            Ok(0)
        })
    }
);

socket_call!(getname_callback(addr: *mut sys::sockaddr, peer: c_int) -> c_int, |socket| {
    // SAFETY: The socket layer passes a `sockaddr_storage`-sized buffer.
    from_result(|| T::getname(&socket, unsafe { SockAddrOut::from_raw(addr) }, peer != 0))
});

/// `proto_ops::poll`.
///
/// # Safety
///
/// Called by the socket layer with a live socket of family `T`, its file and a poll table
/// (possibly null).
unsafe extern "C" fn poll_callback<T: SocketFamily>(
    file: *mut sys::file,
    sock: *mut sys::socket,
    wait: *mut sys::poll_table_struct,
) -> sys::__poll_t {
    // SAFETY: A live socket of this family has its state until release.
    let socket = unsafe { Socket::<T>::from_raw(sock) };
    // SAFETY: The poll call's file and table are valid for its duration.
    let (file, wait) = unsafe {
        (
            File::from_raw(file),
            (!wait.is_null()).then(|| PollTable::from_raw(wait)),
        )
    };
    T::poll(&socket, file, wait)
}

socket_call!(
    setsockopt_callback(level: c_int, name: c_int, val: sys::sockptr_t, len: c_uint) -> c_int,
    |socket| to_errno(T::setsockopt(&socket, level, name, SockPtr::from_raw(val), len))
);

socket_call!(
    getsockopt_callback(level: c_int, name: c_int, val: *mut kernel::ffi::c_char, len: *mut c_int)
        -> c_int,
    |socket| {
        to_errno(T::getsockopt(
            &socket,
            level,
            name,
            UserPtr::from_raw(val.cast::<c_void>()),
            UserPtr::from_raw(len.cast::<c_void>()),
        ))
    }
);

socket_call!(sendmsg_callback(msg: *mut sys::msghdr, len: usize) -> c_int, |socket| {
    from_result(|| {
        // SAFETY: The socket layer passes a valid message header.
        let msg = unsafe { MsgHdr::from_raw(msg) };
        let sent = T::sendmsg(&socket, msg, len)?;
        c_int::try_from(sent).map_err(|_| EOVERFLOW)
    })
});

socket_call!(
    recvmsg_callback(msg: *mut sys::msghdr, len: usize, flags: c_int) -> c_int,
    |socket| {
        from_result(|| {
            // SAFETY: The socket layer passes a valid message header.
            let msg = unsafe { MsgHdr::from_raw(msg) };
            let received = T::recvmsg(&socket, msg, len, flags)?;
            c_int::try_from(received).map_err(|_| EOVERFLOW)
        })
    }
);

socket_call!(ioctl_callback(cmd: c_uint, arg: c_ulong) -> c_int, |socket| {
    from_result(|| T::ioctl(&socket, cmd, arg))
});

fn to_errno(result: Result) -> c_int {
    match result {
        Ok(()) => 0,
        Err(err) => err.to_errno(),
    }
}

/// A registered socket family; unregistered on drop.
pub(crate) struct FamilyRegistration {
    tables: &'static FamilyTables,
}

impl FamilyRegistration {
    /// Registers `T`'s protocol and family, so `socket(T::FAMILY, …)` reaches it.
    ///
    /// Fails with `EEXIST` if another module owns the family.
    pub(crate) fn new<T: SocketFamily>() -> Result<Self> {
        let tables = T::TABLES;
        let obj_size = c_uint::try_from(state_offset::<T::State>() + size_of::<T::State>())
            .map_err(|_| EINVAL)?;
        // SAFETY: `tables.proto` is a `'static` proto that is not registered yet (only this
        // function registers it, and `Drop` unregisters it), so nothing else reads it.
        unsafe { (*tables.proto.get()).obj_size = obj_size };
        // SAFETY: As above; registering hands it to the socket layer until `drop`.
        to_result(unsafe { sys::proto_register(tables.proto.get(), 1) })?;
        // SAFETY: `tables.family` is `'static` and valid.
        let ret = unsafe { sys::sock_register(&tables.family) };
        if let Err(err) = to_result(ret) {
            // SAFETY: Registered just above.
            unsafe { sys::proto_unregister(tables.proto.get()) };
            return Err(err);
        }
        Ok(Self { tables })
    }
}

impl Drop for FamilyRegistration {
    fn drop(&mut self) {
        // SAFETY: Both were registered in `new`. No socket can outlive the module that owns
        // them (each socket holds a module reference), so no socket uses them after this.
        unsafe {
            sys::sock_unregister(self.tables.family.family);
            sys::proto_unregister(self.tables.proto.get());
        }
    }
}
