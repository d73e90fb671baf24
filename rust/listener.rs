// SPDX-License-Identifier: GPL-2.0

//! The accept side of a listening `AF_SMC` socket (net/smc's smc_tcp_listen_work).
//!
//! TCP connections are taken from the internal listening TCP socket by a work item the
//! listening socket's data-ready callback queues, and each is handshaken by a work item of its
//! own (stock SMC's smc_listen_work), so that a slow peer holds up no other; finished sockets
//! (over RDMA or fallen back to TCP) wait in `ready` for `accept`. So a client's `connect`
//! completes whether or not the server application has called `accept` yet, as with TCP.

use crate::{
    af_smc::SmcSock,
    clc,
    connection::epoll,
    ffi::{
        kernel_socket::{HookedEvent, KernelSocket, SockEvents, SockHook},
        sock::Sock,
        workqueue,
    },
};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        new_spinlock, Arc, ArcBorrow, Mutex, SetOnce, SpinLock,
    },
    workqueue::{impl_has_work, new_work, Work, WorkItem},
};

/// `O_NONBLOCK`.
const O_NONBLOCK: i32 = 0o4000;

/// Handshaken connections of one listening socket, waiting for `accept`.
#[pin_data]
pub(crate) struct Listener {
    clc: Arc<KernelSocket>,
    /// The listening `AF_SMC` socket, woken when a connection is ready.
    sk: ARef<Sock>,
    /// Gives accepted TCP connections their callbacks back; set right after creation.
    hook: SetOnce<SockHook<Listener>>,
    #[pin]
    ready: Mutex<KVec<SmcSock>>,
    closed: Atomic<bool>,
    #[pin]
    work: Work<Listener>,
}

impl_has_work! {
    impl HasWork<Self> for Listener { self.work }
}

impl Listener {
    /// Starts handshaking the connections `clc` (about to listen) accepts, for the listening
    /// socket `sk`. The returned value must be [`Listener::close`]d.
    pub(crate) fn new(clc: Arc<KernelSocket>, sk: ARef<Sock>) -> Result<Arc<Self>> {
        let hooked = clc.clone();
        let listener = Arc::pin_init(
            try_pin_init!(Self {
                clc,
                sk,
                hook: SetOnce::new(),
                ready <- new_mutex!(KVec::new()),
                closed: Atomic::new(false),
                work <- new_work!("Listener::work"),
            }? Error),
            GFP_KERNEL,
        )?;
        listener.hook.populate(SockHook::new(
            hooked,
            HookedEvent::ListenerDataReady,
            listener.clone(),
        )?);
        Ok(listener)
    }

    /// Stops handshaking; connections not yet accepted are closed when the last reference
    /// goes.
    pub(crate) fn close(&self) {
        self.closed.store(true, Relaxed);
        // Unhooking drops the callback's reference and waits for a callback that runs now.
        if let Some(hook) = self.hook.as_ref() {
            hook.unhook();
        }
        self.sk.state_change();
    }

    /// `accept(2)`: the oldest handshaken connection, waiting for one unless `nonblock`.
    pub(crate) fn accept(&self, nonblock: bool) -> Result<SmcSock> {
        let mut timeo = self.sk.rcvtimeo(nonblock);
        loop {
            {
                let mut ready = self.ready.lock();
                if !ready.is_empty() {
                    return ready.remove(0).map_err(|_| EINVAL);
                }
            }
            if self.closed.load(Relaxed) {
                return Err(EINVAL);
            }
            self.sk.wait_until(&mut timeo, || {
                !self.ready.lock().is_empty() || self.closed.load(Relaxed)
            })?;
        }
    }

    /// Readiness for `poll`: readable while a connection waits for `accept`.
    pub(crate) fn poll_mask(&self) -> u32 {
        if self.ready.lock().is_empty() {
            0
        } else {
            epoll::IN | epoll::RDNORM
        }
    }

    /// Takes every pending TCP connection and starts its handshake. Without memory for it
    /// a connection is closed, as TCP drops a connection it cannot queue.
    fn accept_pending(self: &Arc<Self>) {
        while !self.closed.load(Relaxed) {
            let Ok(child) = self.clc.accept(O_NONBLOCK) else {
                break;
            };
            if let Some(hook) = self.hook.as_ref() {
                hook.restore_accepted(&child);
            }
            let Ok(child) = Arc::new(child, GFP_KERNEL) else {
                continue;
            };
            let Ok(state) = SmcSock::new(child) else {
                continue;
            };
            if let Ok(handshake) = Handshake::new(self.clone(), state) {
                // Handshakes wait for the network: the unbound queue runs them side by side.
                let _ = workqueue::queue().enqueue(handshake);
            }
        }
    }

    /// Queues a handshaken connection for `accept`; after `close`, drops it (which aborts it).
    fn handshaken(&self, state: SmcSock) {
        if self.closed.load(Relaxed) {
            return;
        }
        if self.ready.lock().push(state, GFP_KERNEL).is_ok() {
            self.sk.data_ready();
        }
    }
}

/// The server side of one connection's handshake, run as a work item.
#[pin_data]
struct Handshake {
    listener: Arc<Listener>,
    /// Taken by the work item.
    #[pin]
    state: SpinLock<Option<SmcSock>>,
    #[pin]
    work: Work<Handshake>,
}

impl_has_work! {
    impl HasWork<Self> for Handshake { self.work }
}

impl Handshake {
    fn new(listener: Arc<Listener>, state: SmcSock) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                listener,
                state <- new_spinlock!(Some(state)),
                work <- new_work!("Handshake::work"),
            }? Error),
            GFP_KERNEL,
        )
    }
}

impl WorkItem for Handshake {
    type Pointer = Arc<Handshake>;

    fn run(this: Arc<Handshake>) {
        let state = this.state.lock().take();
        let Some(state) = state else {
            return;
        };
        // A connection reset during its handshake is dropped, as TCP drops one reset before
        // `accept`.
        if let Some(outcome) = clc::server(state.clc()) {
            state.settle(outcome);
            this.listener.handshaken(state);
        }
    }
}

impl SockEvents for Listener {
    fn data_ready(this: ArcBorrow<'_, Self>) {
        // Already queued is fine: the queued run takes every pending connection.
        let _ = workqueue::queue().enqueue(Arc::<Self>::from(this));
    }
}

impl WorkItem for Listener {
    type Pointer = Arc<Listener>;

    fn run(this: Arc<Listener>) {
        this.accept_pending();
    }
}
