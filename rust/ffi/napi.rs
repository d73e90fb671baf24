// SPDX-License-Identifier: GPL-2.0

//! A NAPI instance on a dummy netdev, polled by the kernel (softirq or busy-poll callers).

use super::sys;
use kernel::{ffi::c_int, prelude::*, sync::Arc};

/// What a NAPI instance calls when it is polled.
pub(crate) trait NapiPoll: Send + Sync + 'static {
    /// Does up to `budget` units of work; returns how many were done.
    fn poll(&self, budget: i32) -> i32;
}

/// The dummy netdev's private area: where the C poll callback finds its Rust poller.
#[repr(C)]
struct NapiPriv<T> {
    napi: sys::napi_struct,
    poller: *const T,
}

/// An enabled NAPI instance with its own dummy netdev.
///
/// # Invariants
///
/// `dev` is a netdev from `alloc_netdev_dummy` whose private area is an initialised
/// `NapiPriv<T>` with an added and enabled NAPI; its `poller` points into `poller`'s
/// allocation, which this value keeps alive.
pub(crate) struct Napi<T: NapiPoll> {
    dev: *mut sys::net_device,
    poller: Arc<T>,
}

// SAFETY: The netdev and NAPI are only used through thread-safe kernel APIs, and `T` is
// `Send + Sync`.
unsafe impl<T: NapiPoll> Send for Napi<T> {}
// SAFETY: As above: `&Napi` only allows reading the id and scheduling, both thread-safe.
unsafe impl<T: NapiPoll> Sync for Napi<T> {}

impl<T: NapiPoll> Napi<T> {
    /// Creates and enables a NAPI instance that calls `poller`.
    pub(crate) fn new(poller: Arc<T>) -> Result<Self> {
        // SAFETY: No preconditions; a null return is handled.
        let dev = unsafe { sys::alloc_netdev_dummy(core::mem::size_of::<NapiPriv<T>>() as c_int) };
        if dev.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `dev` was allocated with room for a `NapiPriv<T>` as its private area,
        // which `alloc_netdev_dummy` zeroed (a valid, unused `napi_struct`). The NAPI is
        // added and enabled once, before anything can schedule it.
        unsafe {
            let priv_ = sys::rsmc_netdev_priv(dev).cast::<NapiPriv<T>>();
            (*priv_).poller = &*poller;
            sys::rsmc_netif_napi_add(dev, &raw mut (*priv_).napi, Some(poll_callback::<T>));
            sys::napi_enable(&raw mut (*priv_).napi);
        }
        // INVARIANT: The private area is initialised and the NAPI enabled above.
        Ok(Self { dev, poller })
    }

    fn napi(&self) -> *mut sys::napi_struct {
        // SAFETY: By the type invariant `dev`'s private area is a `NapiPriv<T>`.
        unsafe { &raw mut (*sys::rsmc_netdev_priv(self.dev).cast::<NapiPriv<T>>()).napi }
    }

    /// The NAPI id busy-polling sockets carry (assigned when the NAPI was enabled).
    pub(crate) fn id(&self) -> u32 {
        // SAFETY: The NAPI is valid by the type invariant; the id is fixed while enabled.
        unsafe { (*self.napi()).napi_id }
    }

    /// Asks the kernel to run the poll callback (softirq context) unless it already runs.
    pub(crate) fn schedule(&self) {
        // SAFETY: The NAPI is added and enabled by the type invariant.
        unsafe { sys::rsmc_napi_schedule(self.napi()) };
    }

    /// The poller this NAPI calls.
    pub(crate) fn poller(&self) -> &Arc<T> {
        &self.poller
    }
}

impl<T: NapiPoll> Drop for Napi<T> {
    fn drop(&mut self) {
        let napi = self.napi();
        // `napi_disable` waits for a running poll (softirq or busy poller) to finish and
        // unhashes the id, so no poll starts afterwards and the netdev can be freed; `poller`
        // is dropped only after this, so the callback never sees a freed poller.
        // SAFETY: By the type invariant the NAPI was added and enabled on `dev`.
        unsafe {
            sys::napi_disable(napi);
            sys::rsmc_netif_napi_del(napi);
            sys::free_netdev(self.dev);
        }
    }
}

/// The smallest valid NAPI id (`MIN_NAPI_ID`); smaller values are sender-CPU hints.
pub(crate) fn min_napi_id() -> u32 {
    // SAFETY: Returns a constant.
    unsafe { sys::rsmc_min_napi_id() }
}

/// # Safety
///
/// Called by the NAPI core with a NAPI added by [`Napi::new`] for the same `T`.
unsafe extern "C" fn poll_callback<T: NapiPoll>(
    napi: *mut sys::napi_struct,
    budget: c_int,
) -> c_int {
    // SAFETY: `napi` is the first field of the `NapiPriv<T>` in its netdev's private area,
    // and the poller outlives the NAPI (see `Drop for Napi`).
    let poller = unsafe { &*(*napi.cast::<NapiPriv<T>>()).poller };
    let done = poller.poll(budget);
    if done < budget {
        // SAFETY: `napi` is being polled by us, the precondition of `napi_complete_done`.
        unsafe { sys::napi_complete_done(napi, done) };
    }
    done
}
