// SPDX-License-Identifier: GPL-2.0

//! Socket family registration: `net_proto_family`, `proto` and `proto_ops`.
//!
//! The C tables live in a [`FamilyTables`] static built at compile time from a
//! [`SocketFamily`] implementation; the trampolines here turn C calls into trait calls.

use super::{sys, StaticCell};
use kernel::{error::from_result, ffi::c_int, prelude::*, ThisModule};

/// What a socket family implements; the FFI layer does the C plumbing around it.
pub(crate) trait SocketFamily: 'static {
    /// The address family number (`AF_*`).
    const FAMILY: i32;
    /// The C tables registered for this family.
    const TABLES: &'static FamilyTables;

    /// Validates a `socket(2)` call before a socket is allocated.
    ///
    /// `sock_type` is `SOCK_STREAM` etc., `protocol` the third argument of `socket(2)`.
    fn check_create(sock_type: i32, protocol: i32) -> Result;
}

/// The C tables of one socket family.
///
/// # Invariants
///
/// The tables are only modified by the C code they are registered with.
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
        proto.obj_size = core::mem::size_of::<sys::sock>() as u32;

        // Operations rsmc does not offer yet answer like any socket without them.
        ops.family = T::FAMILY;
        ops.owner = owner;
        ops.release = Some(release_callback);
        ops.bind = Some(sys::sock_no_bind);
        ops.connect = Some(sys::sock_no_connect);
        ops.socketpair = Some(sys::sock_no_socketpair);
        ops.accept = Some(sys::sock_no_accept);
        ops.getname = Some(sys::sock_no_getname);
        ops.ioctl = Some(sys::sock_no_ioctl);
        ops.listen = Some(sys::sock_no_listen);
        ops.shutdown = Some(sys::sock_no_shutdown);
        ops.sendmsg = Some(sys::sock_no_sendmsg);
        ops.recvmsg = Some(sys::sock_no_recvmsg);
        ops.mmap = Some(sys::sock_no_mmap);

        Self {
            family,
            proto: StaticCell::new(proto),
            ops,
        }
    }
}

/// `net_proto_family::create`: allocates the `struct sock` for a new socket.
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

        let tables = T::TABLES;
        // SAFETY: `net` is valid; `tables.proto` was registered by `FamilyRegistration::new`
        // (a socket of this family cannot be created before that).
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
        // SAFETY: `sock` is valid and `sk` is the fresh sock just allocated for it. The ops
        // table is `'static`.
        unsafe {
            (*sock).state = sys::socket_state_SS_UNCONNECTED;
            (*sock).ops = &tables.ops;
            sys::sock_init_data(sock, sk);
            // CAST: protocol was checked by `check_create` (0 or 1 for AF_SMC).
            (*sk).sk_protocol = protocol as u16;
        }
        Ok(0)
    })
}

/// `proto_ops::release`: detaches and drops the `struct sock` when the socket is closed.
///
/// # Safety
///
/// Called by the socket layer with a valid `sock` created by [`create_callback`].
unsafe extern "C" fn release_callback(sock: *mut sys::socket) -> c_int {
    // SAFETY: `sock` is valid per the function's safety requirements.
    let sk = unsafe { (*sock).sk };
    if sk.is_null() {
        return 0;
    }
    // SAFETY: `sk` is the socket's sock and holds the reference taken by `sk_alloc`, which
    // `sock_put` drops; nothing touches `sk` after that.
    unsafe {
        sys::rsmc_sock_orphan(sk);
        (*sock).sk = core::ptr::null_mut();
        sys::rsmc_sock_put(sk);
    }
    0
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
        // SAFETY: `tables.proto` is a `'static` proto that is not registered yet (only this
        // function registers it, and `Drop` unregisters it).
        kernel::error::to_result(unsafe { sys::proto_register(tables.proto.get(), 1) })?;
        // SAFETY: `tables.family` is `'static` and valid.
        let ret = unsafe { sys::sock_register(&tables.family) };
        if let Err(err) = kernel::error::to_result(ret) {
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
