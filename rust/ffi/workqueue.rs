// SPDX-License-Identifier: GPL-2.0

//! rsmc's own workqueue, for handshakes and connection releases.
//!
//! Destroying it at module unload waits for every work item queued on it, so that none runs
//! once the module's code is gone; the system workqueues give no such guarantee.

use super::sys;
use core::ptr;
use kernel::{
    prelude::*,
    sync::atomic::{Acquire, Atomic, Release},
    workqueue::Queue,
};

/// The queue while the module is loaded, null otherwise.
static QUEUE: Atomic<*mut sys::workqueue_struct> = Atomic::new(ptr::null_mut());

/// Owns the workqueue; dropping it drains and destroys the queue.
///
/// # Invariants
///
/// `QUEUE` holds a workqueue from `alloc_workqueue` while the `Registration` exists; module
/// init creates the only one.
pub(crate) struct Registration(());

impl Registration {
    /// Allocates the queue: unbound, as a handshake may sleep for seconds. Called once, by
    /// module init.
    pub(crate) fn new() -> Result<Self> {
        let name = c"rsmc".as_char_ptr();
        // SAFETY: `name` is a NUL-terminated string; the queue copies it.
        let wq = unsafe { sys::rsmc_alloc_workqueue(name, sys::wq_flags_WQ_UNBOUND) };
        if wq.is_null() {
            return Err(ENOMEM);
        }
        QUEUE.store(wq, Release);
        Ok(Self(()))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let wq = QUEUE.xchg(ptr::null_mut(), Acquire);
        // SAFETY: By the type invariant `wq` is the queue this registration allocated; it is
        // no longer published. Destroying drains it first.
        unsafe { sys::destroy_workqueue(wq) };
    }
}

/// rsmc's workqueue.
///
/// Only sockets and RDMA devices queue work, and the module drops its [`Registration`] after
/// both are gone (see the field order of `Rsmc`), so the queue outlives every caller.
pub(crate) fn queue() -> &'static Queue {
    let wq = QUEUE.load(Acquire);
    // SAFETY: As said above, a caller runs while the registration holds a valid queue, which
    // stays valid until every caller is gone. `workqueue_struct` is the same C type under
    // both bindings.
    unsafe { Queue::from_raw(wq.cast()) }
}
