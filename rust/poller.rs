// SPDX-License-Identifier: GPL-2.0

//! The per-device NAPI poller that reaps RDMA completions.
//!
//! Each RDMA device has one completion queue for the send and receive queues of all its
//! links, drained by the device's NAPI instance (as `net/smc/smc_wr.c` drains its CQs from
//! tasklets):
//!
//! - A completion event ([`CqEvents`], called by the driver with IRQs off) schedules the NAPI.
//! - The NAPI poll reaps up to its budget of completions in batches and hands each to the
//!   [`CompletionSink`] registered under the top bits of its `wr_id`. If the queue ran empty
//!   it completes the NAPI and, only if the NAPI is then idle, re-arms the queue, polling
//!   again if completions slipped in meanwhile. While a busy poller owns the NAPI the queue
//!   stays unarmed: the spinning thread reaps completions without events.

use crate::ffi::{
    ib::RegisteredDevice,
    napi::{NapiContext, NapiHandle, NapiPoll},
    verbs::{Cq, CqHandler, WorkCompletion},
};
use kernel::{
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        new_spinlock_irq, Arc, ArcBorrow, SpinLockIrq,
    },
};

/// Completion queue entries per device, shared by the send and receive queues of its links.
pub(crate) const CQ_ENTRIES: u32 = 8192;
/// Completions reaped per `ib_poll_cq` call.
const POLL_BATCH: usize = 16;
/// A `wr_id`'s top bits name the [`CompletionSink`] its completion goes to.
const SINK_SHIFT: u32 = 48;
/// The bits of a `wr_id` that are the sink's own.
const SINK_LOCAL_MASK: u64 = (1 << SINK_SHIFT) - 1;

/// Where completions of one user of a device's completion queue (a link) go.
///
/// Runs in the NAPI poll (softirq, or a busy-polling thread with bottom halves off): must not
/// sleep. Nor may its destructor: if the registration is dropped while a poll hands the sink a
/// completion, the poll drops the last reference.
pub(crate) trait CompletionSink: Send + Sync {
    /// A work request posted with a `wr_id` from this sink's [`SinkRegistration::wr_id`]
    /// completed.
    fn complete(self: ArcBorrow<'_, Self>, wc: &WorkCompletion);
}

/// The completion queue's event handler: counts events and schedules the NAPI.
///
/// Owned by the completion queue, which calls it until it is destroyed; it keeps the NAPI's
/// memory alive through its [`NapiHandle`], and scheduling a NAPI that has been disabled does
/// nothing.
pub(crate) struct CqEvents {
    events: Atomic<u64>,
    napi: NapiHandle,
}

impl CqHandler for CqEvents {
    fn completion(&self) {
        self.events.add(1, Relaxed);
        self.napi.schedule();
    }

    fn error(&self) {
        // The queue delivers nothing more; what it holds is reaped by the next poll.
        pr_err!("completion queue error\n");
        self.napi.schedule();
    }
}

/// Completion-reaping state of one RDMA device, run from its NAPI instance.
///
/// # Invariants
///
/// Every entry of `sinks.registered` has a distinct, nonzero id.
#[pin_data]
pub(crate) struct Poller {
    cq: Arc<Cq>,
    events: Arc<CqEvents>,
    /// Polls, and the completions they reaped, by softirq and by busy pollers.
    softirq: PollCounts,
    busy: PollCounts,
    /// Busy polls that made their spinner yield the CPU to waiting tasks.
    busy_yields: Atomic<u64>,
    /// Taken in the NAPI poll and in process context, hence with IRQs (and so bottom halves)
    /// off.
    #[pin]
    sinks: SpinLockIrq<Sinks>,
}

/// The registered sinks of a poller.
struct Sinks {
    /// By id (the top bits of their `wr_id`s).
    registered: KVec<(u16, Arc<dyn CompletionSink>)>,
    /// The id handed out last. The next one is the first free id after it, so an id comes
    /// back only after all others did: the flushed work requests of a torn-down link's queue
    /// pair, which complete after its registration went, are dropped rather than handed to
    /// the next link.
    last_id: u16,
}

impl Poller {
    /// Creates the completion queue of `dev`, whose events schedule `napi`, and its poller.
    ///
    /// The queue is not armed: see [`Poller::arm`].
    pub(crate) fn new(dev: &ARef<RegisteredDevice>, napi: NapiHandle) -> Result<Arc<Self>> {
        let events = Arc::new(
            CqEvents {
                events: Atomic::new(0),
                napi,
            },
            GFP_KERNEL,
        )?;
        let cq = Cq::new(dev, CQ_ENTRIES, events.clone())?;
        // INVARIANT: `sinks` starts empty.
        Arc::pin_init(
            try_pin_init!(Self {
                cq,
                events,
                softirq: PollCounts::new(),
                busy: PollCounts::new(),
                busy_yields: Atomic::new(0),
                sinks <- new_spinlock_irq!(Sinks {
                    registered: KVec::new(),
                    last_id: 0,
                }),
            }? Error),
            GFP_KERNEL,
        )
    }

    /// Waits until a poll running now (softirq or busy poller) has finished. Sleeps.
    pub(crate) fn synchronize(&self) {
        self.events.napi.synchronize();
    }

    /// The device's completion queue, for the queue pairs of its links.
    pub(crate) fn cq(&self) -> &Arc<Cq> {
        &self.cq
    }

    /// Arms the completion queue for its next completion; returns whether completions may
    /// have arrived unannounced, in which case the caller must schedule the NAPI.
    pub(crate) fn arm(&self) -> Result<bool> {
        self.cq.request_notify(false, true)
    }

    /// How many times the NAPI instance has polled (softirq and busy poll).
    pub(crate) fn polls(&self) -> u64 {
        self.softirq.polls() + self.busy.polls()
    }

    /// Polls and completions by softirq.
    pub(crate) fn softirq_counts(&self) -> &PollCounts {
        &self.softirq
    }

    /// Polls and completions by busy pollers.
    pub(crate) fn busy_counts(&self) -> &PollCounts {
        &self.busy
    }

    /// How many busy polls made their spinner yield the CPU to tasks waiting for it.
    pub(crate) fn busy_yields(&self) -> u64 {
        self.busy_yields.load(Relaxed)
    }

    /// How many completion events the queue has signalled.
    pub(crate) fn cq_events(&self) -> u64 {
        self.events.events.load(Relaxed)
    }

    /// How many completions the polls have reaped.
    pub(crate) fn completions(&self) -> u64 {
        self.softirq.completions() + self.busy.completions()
    }

    /// Registers `sink` for the completions of work requests posted with
    /// [`SinkRegistration::wr_id`]s, until the registration is dropped.
    ///
    /// The registration keeps the poller alive, so `sink` must not own it (that would be a
    /// reference cycle).
    pub(crate) fn register_sink(
        self: &Arc<Self>,
        sink: Arc<dyn CompletionSink>,
    ) -> Result<SinkRegistration> {
        let mut sinks = self.sinks.lock();
        let ids = u32::from(u16::MAX);
        let id = (1..=ids)
            // CAST: In 1..=u16::MAX.
            .map(|step| ((u32::from(sinks.last_id) + step - 1) % ids + 1) as u16)
            .find(|id| !sinks.registered.iter().any(|(taken, _)| taken == id))
            .ok_or(EBUSY)?;
        // INVARIANT: `id` is nonzero and not yet taken.
        sinks.registered.push((id, sink), GFP_ATOMIC)?;
        sinks.last_id = id;
        Ok(SinkRegistration {
            poller: self.clone(),
            id,
        })
    }

    /// Hands `wc` to the sink its `wr_id` names; without one (it was unregistered while its
    /// work request was outstanding) the completion is dropped.
    fn dispatch(&self, wc: &WorkCompletion) {
        let id = wc.wr_id() >> SINK_SHIFT;
        let sink = self
            .sinks
            .lock()
            .registered
            .iter()
            .find(|(sink_id, _)| u64::from(*sink_id) == id)
            .map(|(_, sink)| sink.clone());
        // Called unlocked: a sink may take its own locks.
        if let Some(sink) = sink {
            sink.as_arc_borrow().complete(wc);
        }
    }
}

impl NapiPoll for Poller {
    fn poll(&self, napi: &mut NapiContext, budget: i32) -> i32 {
        let counts = if napi.in_busy_poll() {
            if napi.yield_to_waiting_tasks() {
                self.busy_yields.add(1, Relaxed);
            }
            &self.busy
        } else {
            &self.softirq
        };
        counts.polls.add(1, Relaxed);
        let budget_wcs = usize::try_from(budget).unwrap_or(0);
        let mut wcs = [WorkCompletion::EMPTY; POLL_BATCH];
        let mut done = 0;
        while done < budget_wcs {
            let want = POLL_BATCH.min(budget_wcs - done);
            let reaped = self.cq.poll(&mut wcs[..want]);
            for wc in &wcs[..reaped] {
                self.dispatch(wc);
            }
            done += reaped;
            if reaped < want {
                break;
            }
        }
        // CAST: `done <= budget`, a `usize` from an `i32`.
        counts.completions.add(done as u64, Relaxed);
        // CAST: As above.
        let done = done as i32;
        // With budget left the queue is empty. Re-arm it only if the NAPI is idle now: while
        // a busy poller owns it, it polls again without events.
        if done < budget && napi.complete_done(done) {
            // Completions that arrived between the last poll and arming raise no event: poll
            // again for them. Arming fails only on a dead device, which completes nothing more.
            if let Ok(true) = self.arm() {
                napi.schedule();
            }
        }
        done
    }
}

/// How often one kind of caller (softirq or busy poller) polled, and what it reaped.
pub(crate) struct PollCounts {
    polls: Atomic<u64>,
    completions: Atomic<u64>,
}

impl PollCounts {
    const fn new() -> Self {
        Self {
            polls: Atomic::new(0),
            completions: Atomic::new(0),
        }
    }

    pub(crate) fn polls(&self) -> u64 {
        self.polls.load(Relaxed)
    }

    pub(crate) fn completions(&self) -> u64 {
        self.completions.load(Relaxed)
    }
}

/// A [`CompletionSink`] registered with a [`Poller`]; unregistered on drop.
///
/// Dropping it waits for a poll that is running to finish, so afterwards the sink gets no
/// more completions and the poller holds no reference to it. It must be dropped in process
/// context (it sleeps), never from the sink itself, and while the device's NAPI is enabled
/// (hold the device's `Arc`).
pub(crate) struct SinkRegistration {
    poller: Arc<Poller>,
    id: u16,
}

impl SinkRegistration {
    /// The `wr_id` to post a work request with so that its completion reaches this sink;
    /// `local` (the sink's own id of the request) keeps its low 48 bits.
    pub(crate) fn wr_id(&self, local: u64) -> u64 {
        (u64::from(self.id) << SINK_SHIFT) | (local & SINK_LOCAL_MASK)
    }
}

impl Drop for SinkRegistration {
    fn drop(&mut self) {
        let mut sinks = self.poller.sinks.lock();
        let removed = sinks
            .registered
            .iter()
            .position(|(id, _)| *id == self.id)
            .and_then(|i| sinks.registered.remove(i).ok());
        drop(sinks);
        // A poll that found the sink before it was removed may still be calling it.
        self.poller.events.napi.synchronize();
        // The sink is dropped unlocked, with IRQs on: its destructor may sleep.
        drop(removed);
    }
}

#[kernel::prelude::kunit_tests(rsmc_napi)]
mod tests {
    use crate::ffi::napi::{min_napi_id, Napi, NapiContext, NapiPoll};
    use kernel::{
        prelude::*,
        sync::{
            atomic::{Atomic, Relaxed},
            Arc,
        },
    };

    /// A poller with nothing to reap: it counts its polls and completes each.
    struct IdlePoller {
        polls: Atomic<u64>,
    }

    impl NapiPoll for IdlePoller {
        fn poll(&self, napi: &mut NapiContext, _budget: i32) -> i32 {
            self.polls.add(1, Relaxed);
            napi.complete_done(0);
            0
        }
    }

    fn idle_napi() -> Result<Napi<IdlePoller>> {
        Napi::new(|_| {
            Ok(Arc::new(
                IdlePoller {
                    polls: Atomic::new(0),
                },
                GFP_KERNEL,
            )?)
        })
    }

    #[test]
    fn enabled_napi_has_valid_id() -> Result {
        let napi = idle_napi()?;
        assert!(napi.id() >= min_napi_id());
        Ok(())
    }

    #[test]
    fn napi_ids_are_distinct() -> Result {
        let a = idle_napi()?;
        let b = idle_napi()?;
        assert!(a.id() != b.id());
        Ok(())
    }

    #[test]
    fn schedule_runs_the_poller() -> Result {
        let napi = idle_napi()?;
        napi.schedule();
        // The softirq runs on this CPU's next bottom-half exit; give it up to a second.
        let mut waited_ms = 0;
        while napi.poller().polls.load(Relaxed) == 0 && waited_ms < 1000 {
            kernel::time::delay::fsleep(kernel::time::Delta::from_millis(1));
            waited_ms += 1;
        }
        assert!(napi.poller().polls.load(Relaxed) >= 1);
        Ok(())
    }
}
