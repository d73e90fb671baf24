// SPDX-License-Identifier: GPL-2.0

//! A NAPI instance on a dummy netdev, polled by the kernel (softirq or busy-poll callers).
//!
//! Teardown comes in two steps, so that whatever may still schedule the NAPI (a completion
//! queue's event handler, which runs until its queue is destroyed) can outlive the poller:
//!
//! 1. Dropping the [`Napi`] disables the NAPI (`napi_disable` waits for a running poll, by
//!    softirq or busy poller, and unhashes the id), then drops the poller.
//! 2. The dummy netdev holding the `napi_struct` is deleted and freed only when the [`Napi`]
//!    and every [`NapiHandle`] are gone.
//!
//! In between, [`NapiHandle::schedule`] is a no-op: a disabled NAPI (like one added but not
//! yet enabled) keeps `NAPI_STATE_SCHED` set, so `napi_schedule` only marks it missed.

use super::sys;
use kernel::{
    ffi::{c_int, c_ulong, c_void},
    prelude::*,
    sync::Arc,
};

/// What a NAPI instance calls when it is polled.
pub(crate) trait NapiPoll: Send + Sync + 'static {
    /// Does up to `budget` units of work; returns how many were done.
    ///
    /// A poll that does fewer than `budget` ends the NAPI's turn: the poller calls
    /// [`NapiContext::complete_done`] and re-enables its event source only if that returns
    /// true. If it returns without completing, the poll is completed for it.
    fn poll(&self, napi: &mut NapiContext, budget: i32) -> i32;
}

/// The NAPI instance being polled, handed to [`NapiPoll::poll`].
///
/// # Invariants
///
/// `napi` is the NAPI being polled by the current call of its poll callback (so this thread
/// owns its `NAPI_STATE_SCHED` until the poll completes); `completed` is the work reported to
/// `napi_complete_done`, if it was called.
pub(crate) struct NapiContext {
    napi: *mut sys::napi_struct,
    budget: c_int,
    completed: Option<c_int>,
}

impl NapiContext {
    /// Ends this poll with `done` units of work (fewer than the budget), as
    /// `napi_complete_done`.
    ///
    /// Returns whether the NAPI is now idle, so the caller must re-arm its event source. False
    /// means the NAPI will be polled again without an event: a busy poller owns it (and keeps
    /// events off while it spins), a schedule raced with this poll, or a deferral timer runs.
    /// Also false, without effect, if `done` is not below the budget or the poll was already
    /// completed.
    pub(crate) fn complete_done(&mut self, done: i32) -> bool {
        if self.completed.is_some() || done < 0 || done >= self.budget {
            return false;
        }
        self.completed = Some(done);
        // SAFETY: By the type invariant this thread is polling `napi` and has not completed it
        // yet (checked above), the precondition of `napi_complete_done`.
        unsafe { sys::napi_complete_done(self.napi, done) }
    }

    /// Whether this poll is a busy poller's (a thread spinning in `napi_busy_loop`), not the
    /// softirq's.
    pub(crate) fn in_busy_poll(&self) -> bool {
        // SAFETY: The NAPI is added and valid while it is polled (type invariant).
        unsafe { sys::rsmc_napi_in_busy_poll(self.napi) }
    }

    /// Makes the busy poller running this poll yield the CPU, if other tasks wait for it.
    ///
    /// `napi_busy_loop` spins with preemption off and yields only when the current task must
    /// reschedule now. A task woken on this CPU often sets only the lazy flag (lazy preemption,
    /// or the spinner's protected slice), so it waits for the next tick, up to 4 ms at
    /// HZ=250. That task may be the one that delivers what the spinner waits for: soft-RoCE
    /// moves every packet in a kworker. KVM's halt polling stops on `!single_task_running()`
    /// for the same reason. The busy poller reschedules, then spins on until its own end.
    ///
    /// Only for busy polls ([`NapiContext::in_busy_poll`]): the softirq does not spin.
    pub(crate) fn yield_to_waiting_tasks(&self) -> bool {
        // SAFETY: Reads this CPU's run queue length; callable in any context.
        if unsafe { sys::single_task_running() } {
            return false;
        }
        // SAFETY: Sets the current task's reschedule flags, with interrupts off; the task is
        // a busy poller, whose loop reschedules at its next check.
        unsafe { sys::rsmc_set_need_resched_current() };
        true
    }

    /// Schedules the NAPI again (e.g. for events missed while re-arming); a no-op while this
    /// poll still owns it, apart from marking it missed so that it is polled again.
    pub(crate) fn schedule(&self) {
        // SAFETY: The NAPI is added and valid while it is polled (type invariant).
        unsafe { sys::rsmc_napi_schedule(self.napi) };
    }
}

/// The dummy netdev's private area: where the C poll callback finds its Rust poller.
#[repr(C)]
struct NapiPriv {
    napi: sys::napi_struct,
    /// The `T` of the [`Napi<T>`] that enabled the NAPI; set before it is enabled.
    poller: *const c_void,
}

/// A dummy netdev with one added NAPI instance.
///
/// # Invariants
///
/// `dev` is a netdev from `alloc_netdev_dummy` whose private area is an initialised
/// [`NapiPriv`] whose NAPI was added (`netif_napi_add`). The NAPI is enabled only by
/// [`Napi::new`], which keeps a reference to this value and disables the NAPI before dropping
/// it; so the NAPI is not enabled when this value is dropped.
struct NapiDev {
    dev: *mut sys::net_device,
}

// SAFETY: The netdev and NAPI are only used through thread-safe kernel APIs.
unsafe impl Send for NapiDev {}
// SAFETY: As above: `&NapiDev` only allows scheduling and reading the id.
unsafe impl Sync for NapiDev {}

impl NapiDev {
    /// Allocates the netdev and adds a NAPI instance (not enabled) that polls with `poll`.
    fn new(poll: unsafe extern "C" fn(*mut sys::napi_struct, c_int) -> c_int) -> Result<Self> {
        // SAFETY: No preconditions; a null return is handled.
        let dev = unsafe { sys::alloc_netdev_dummy(core::mem::size_of::<NapiPriv>() as c_int) };
        if dev.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `dev` was allocated with room for a `NapiPriv` as its private area, which
        // `alloc_netdev_dummy` zeroed (an unused `napi_struct`, a null poller).
        unsafe {
            let priv_ = sys::rsmc_netdev_priv(dev).cast::<NapiPriv>();
            sys::rsmc_netif_napi_add(dev, &raw mut (*priv_).napi, Some(poll));
        }
        // INVARIANT: The private area is initialised and its NAPI added, not enabled.
        Ok(Self { dev })
    }

    fn priv_(&self) -> *mut NapiPriv {
        // SAFETY: By the type invariant `dev` is a live netdev whose private area is a
        // `NapiPriv`.
        unsafe { sys::rsmc_netdev_priv(self.dev).cast() }
    }

    fn napi(&self) -> *mut sys::napi_struct {
        // SAFETY: `priv_` points to a live `NapiPriv`; no reference is created.
        unsafe { &raw mut (*self.priv_()).napi }
    }

    fn schedule(&self) {
        // SAFETY: The NAPI is added (type invariant). Scheduling one that is not enabled only
        // marks it missed (it keeps `NAPI_STATE_SCHED` set while disabled).
        unsafe { sys::rsmc_napi_schedule(self.napi()) };
    }
}

impl Drop for NapiDev {
    fn drop(&mut self) {
        let napi = self.napi();
        // `netif_napi_del` waits (`synchronize_net`) for busy pollers that found the NAPI by
        // its id before `napi_disable` unhashed it; then nothing refers to the netdev.
        // SAFETY: By the type invariant the NAPI is added and not enabled, and this is the
        // last reference to the netdev.
        unsafe {
            sys::rsmc_netif_napi_del(napi);
            sys::free_netdev(self.dev);
        }
    }
}

/// Schedules a [`Napi`] from anywhere, e.g. a completion event handler (which must not
/// sleep); keeps the NAPI's memory alive, and is a no-op once the [`Napi`] is dropped.
///
/// Dropping the last reference to the NAPI (this or the [`Napi`]) may sleep.
pub(crate) struct NapiHandle(Arc<NapiDev>);

impl NapiHandle {
    /// Asks the kernel to run the poll callback (softirq) unless it is running already, in
    /// which case it runs once more.
    pub(crate) fn schedule(&self) {
        self.0.schedule();
    }

    /// Waits until a poll running now (softirq or busy poller) has finished. Sleeps; the NAPI
    /// must still be enabled (a disabled one stays marked scheduled).
    pub(crate) fn synchronize(&self) {
        // SAFETY: The NAPI is added (type invariant of `NapiDev`); waiting only reads its state.
        unsafe { sys::rsmc_napi_synchronize(self.0.napi()) };
    }
}

/// An enabled NAPI instance with its own dummy netdev, polled by a `T`.
///
/// # Invariants
///
/// `dev`'s NAPI is enabled and its private area's `poller` points to the `T` in `poller`'s
/// allocation, which this value keeps alive until the NAPI is disabled (on drop).
pub(crate) struct Napi<T: NapiPoll> {
    dev: Arc<NapiDev>,
    poller: Arc<T>,
}

impl<T: NapiPoll> Napi<T> {
    /// Creates a NAPI instance polled by the poller `make_poller` returns, and enables it.
    ///
    /// `make_poller` gets a [`NapiHandle`] of the new NAPI (e.g. for the event handler of the
    /// queue the poller drains); scheduling it does nothing until this returns.
    pub(crate) fn new(make_poller: impl FnOnce(NapiHandle) -> Result<Arc<T>>) -> Result<Self> {
        let dev = Arc::new(NapiDev::new(poll_callback::<T>)?, GFP_KERNEL)?;
        let poller = make_poller(NapiHandle(dev.clone()))?;
        // SAFETY: The private area is a `NapiPriv` (`NapiDev` invariant); its NAPI is added
        // and not enabled yet, so no poll reads `poller` concurrently. `poll_callback::<T>`
        // reads it as a `T`, which it is.
        unsafe {
            let priv_ = dev.priv_();
            (*priv_).poller = Arc::as_ptr(&poller).cast();
            sys::napi_enable(&raw mut (*priv_).napi);
        }
        // INVARIANT: Enabled above with the poller set; `dev` is only enabled here.
        Ok(Self { dev, poller })
    }

    /// The NAPI id busy-polling sockets carry (assigned when the NAPI was enabled).
    pub(crate) fn id(&self) -> u32 {
        // SAFETY: The NAPI is valid; the id is fixed while it is enabled (type invariant).
        unsafe { sys::rsmc_napi_id(self.dev.napi()) }
    }

    /// Asks the kernel to run the poll callback (softirq context) unless it already runs.
    pub(crate) fn schedule(&self) {
        self.dev.schedule();
    }

    /// Sets the NAPI's interrupt deferral (a netdev's `napi_defer_hard_irqs` and
    /// `gro_flush_timeout`, per NAPI): after a poll with work, or after a busy poller that
    /// prefers busy polling stops, up to `defer_hard_irqs` polls run from a timer every
    /// `gro_flush_timeout_ns` instead of re-enabling events. Zeroes turn it off (the default).
    pub(crate) fn set_defer(&self, defer_hard_irqs: u32, gro_flush_timeout_ns: u64) {
        let timeout = c_ulong::try_from(gro_flush_timeout_ns).unwrap_or(c_ulong::MAX);
        // SAFETY: The NAPI is valid (type invariant); the core reads both with READ_ONCE.
        unsafe { sys::rsmc_napi_set_defer(self.dev.napi(), defer_hard_irqs, timeout) };
    }

    /// The poller this NAPI calls.
    pub(crate) fn poller(&self) -> &Arc<T> {
        &self.poller
    }
}

impl<T: NapiPoll> Drop for Napi<T> {
    fn drop(&mut self) {
        // `napi_disable` waits for a running poll (softirq or busy poller) to finish and
        // unhashes the id, so no poll starts afterwards: `poller` may be dropped after this,
        // and `dev` freed once no `NapiHandle` is left (see the module documentation).
        // SAFETY: By the type invariant the NAPI is enabled, and only disabled here.
        unsafe { sys::napi_disable(self.dev.napi()) };
    }
}

/// The smallest valid NAPI id (`MIN_NAPI_ID`); smaller values are sender-CPU hints.
pub(crate) fn min_napi_id() -> u32 {
    // SAFETY: Returns a constant.
    unsafe { sys::rsmc_min_napi_id() }
}

/// # Safety
///
/// Called by the NAPI core with a NAPI added by [`Napi::new`] for the same `T`, which
/// enabled it.
unsafe extern "C" fn poll_callback<T: NapiPoll>(
    napi: *mut sys::napi_struct,
    budget: c_int,
) -> c_int {
    // SAFETY: `napi` is the first field of the `NapiPriv` in its netdev's private area. A
    // polled NAPI is enabled, so its `Napi<T>` set `poller` to a `T` it keeps alive until it
    // disabled the NAPI, which waits for this poll.
    let poller = unsafe { &*(*napi.cast::<NapiPriv>()).poller.cast::<T>() };
    // INVARIANT: The NAPI core calls us to poll `napi`; nothing completed it yet.
    let mut context = NapiContext {
        napi,
        budget,
        completed: None,
    };
    let done = poller.poll(&mut context, budget).clamp(0, budget.max(0));
    match context.completed {
        Some(done) => done,
        None => {
            // Less work than the budget means the poll is over; a NAPI left scheduled would
            // never run again.
            if done < budget {
                // SAFETY: We are polling `napi` and did not complete it (`completed` is None).
                unsafe { sys::napi_complete_done(napi, done) };
            }
            done
        }
    }
}
