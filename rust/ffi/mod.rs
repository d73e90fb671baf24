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

use core::cell::UnsafeCell;

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
