// SPDX-License-Identifier: GPL-2.0

//! The FFI layer: the only part of rsmc that calls C or contains `unsafe`.
//!
//! Each C interface rsmc uses is wrapped here in a safe Rust shape: a C ops table becomes a
//! trait implemented by the rest of the module (as `kernel::net::phy` does for PHY drivers),
//! a C object becomes an owning type that releases it on drop. The rest of rsmc is safe code.

mod sys;

pub(crate) mod ib;
pub(crate) mod kernel_socket;
pub(crate) mod napi;
pub(crate) mod sock;
pub(crate) mod verbs;
pub(crate) mod workqueue;
pub(crate) mod zerocopy;

use core::{cell::UnsafeCell, mem::size_of};
use kernel::prelude::*;

/// The C structs whose fields Rust reads or writes through bindgen's layout, with bindgen's
/// size of each, in the order of `rsmc_c_struct_sizes` in shim.c.
const LAYOUT_CHECKED: [(&str, usize); 29] = [
    ("proto_accept_arg", size_of::<sys::proto_accept_arg>()),
    ("napi_struct", size_of::<sys::napi_struct>()),
    ("socket", size_of::<sys::socket>()),
    ("proto", size_of::<sys::proto>()),
    ("proto_ops", size_of::<sys::proto_ops>()),
    ("net_proto_family", size_of::<sys::net_proto_family>()),
    ("ib_client", size_of::<sys::ib_client>()),
    ("ib_device", size_of::<sys::ib_device>()),
    ("net_device", size_of::<sys::net_device>()),
    ("ib_pd", size_of::<sys::ib_pd>()),
    ("ib_cq", size_of::<sys::ib_cq>()),
    ("ib_qp", size_of::<sys::ib_qp>()),
    ("ib_mr", size_of::<sys::ib_mr>()),
    ("ib_qp_init_attr", size_of::<sys::ib_qp_init_attr>()),
    ("ib_qp_attr", size_of::<sys::ib_qp_attr>()),
    ("ib_send_wr", size_of::<sys::ib_send_wr>()),
    ("ib_rdma_wr", size_of::<sys::ib_rdma_wr>()),
    ("ib_reg_wr", size_of::<sys::ib_reg_wr>()),
    ("ib_recv_wr", size_of::<sys::ib_recv_wr>()),
    ("ib_sge", size_of::<sys::ib_sge>()),
    ("ib_wc", size_of::<sys::ib_wc>()),
    ("ib_cq_init_attr", size_of::<sys::ib_cq_init_attr>()),
    ("ib_port_attr", size_of::<sys::ib_port_attr>()),
    ("scatterlist", size_of::<sys::scatterlist>()),
    ("msghdr", size_of::<sys::msghdr>()),
    ("kvec", size_of::<sys::kvec>()),
    ("wait_queue_entry", size_of::<sys::wait_queue_entry>()),
    ("cmsghdr", size_of::<sys::cmsghdr>()),
    ("mmpin", size_of::<sys::ubuf_info_msgzc_mmpin>()),
];

/// Refuses to run if bindgen laid out any struct Rust touches differently from the compiler.
///
/// bindgen mis-sizes some config-dependent kernel structs (`struct sock` on the debug kernel
/// is 64 bytes short), and a wrong layout means Rust writes the wrong fields. The sizes are
/// compared at load time, against the C compiler's, for every struct whose fields Rust uses.
pub(crate) fn check_layouts() -> Result {
    let c_sizes = (&raw const sys::rsmc_c_struct_sizes).cast::<usize>();
    let mut result = Ok(());
    for (i, (name, rust_size)) in LAYOUT_CHECKED.iter().enumerate() {
        // SAFETY: `rsmc_c_struct_sizes` has one entry per element of `LAYOUT_CHECKED` (the
        // comment in shim.h keeps the two in step) and is constant.
        let c_size = unsafe { c_sizes.add(i).read() };
        if c_size != *rust_size {
            pr_err!("struct {name}: C size {c_size}, bindgen size {rust_size}\n");
            result = Err(ENOEXEC);
        }
    }
    result
}

/// A C structure that lives in a `static` and is handed to C by pointer.
///
/// C may write to it (e.g. `proto_register` fills in list heads), so Rust only ever reads it
/// through the raw pointer from [`StaticCell::get`].
#[repr(transparent)]
pub(crate) struct StaticCell<T>(UnsafeCell<T>);

// SAFETY: Rust never creates references to the contents; all access goes through the raw
// pointer, and the C code that receives it does its own locking.
unsafe impl<T> Sync for StaticCell<T> {}

impl<T> StaticCell<T> {
    /// Wraps `value`.
    pub(crate) const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// Returns the pointer to hand to C.
    pub(crate) const fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// A random 32-bit number (`get_random_u32`), e.g. for packet sequence numbers and host ids.
pub(crate) fn random_u32() -> u32 {
    // SAFETY: No preconditions.
    unsafe { sys::get_random_u32() }
}

/// Copies a C `char` array (a NUL-terminated name in a fixed buffer) into `out`.
///
/// Returns the number of bytes copied, which stops at the first NUL or at the end of either
/// buffer.
fn copy_c_name(name: &[kernel::ffi::c_char], out: &mut [u8]) -> usize {
    // The kernel's `c_char` is `u8` on every architecture, so bytes copy as they are.
    let mut len = 0;
    for (dst, &src) in out.iter_mut().zip(name.iter()) {
        if src == 0 {
            break;
        }
        *dst = src;
        len += 1;
    }
    len
}
