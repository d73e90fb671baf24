// SPDX-License-Identifier: GPL-2.0

//! The rest of a non-blocking `connect` (net/smc's smc_connect_work).
//!
//! `connect(O_NONBLOCK)` starts the TCP connection and returns `EINPROGRESS`; a work item
//! waits for the TCP handshake, runs the CLC handshake, settles the socket's transport and
//! wakes it. Until then the socket polls as a TCP socket still connecting (not writable), so
//! an application that waits for `EPOLLOUT` and asks `SO_ERROR`, as it would with TCP, finds
//! the socket on RDMA or fallen back when it wakes.

use crate::{
    af_smc::{RcvlowatHold, Transport},
    clc::{self, Outcome},
    ffi::{kernel_socket::KernelSocket, sock::Sock, workqueue},
};
use kernel::{
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Acquire, Atomic, Relaxed, Release},
        new_mutex, Arc, Mutex,
    },
    workqueue::{impl_has_work, new_work, Work, WorkItem},
};

/// A non-blocking connect in progress.
#[pin_data]
pub(crate) struct Connector {
    clc: Arc<KernelSocket>,
    /// The connecting `AF_SMC` socket, woken when the connect finished.
    sk: ARef<Sock>,
    transport: Arc<Transport>,
    done: Atomic<bool>,
    /// The socket was closed: a handshake not started yet is not worth starting.
    cancelled: Atomic<bool>,
    /// Released when the handshake ended.
    #[pin]
    rcvlowat_hold: Mutex<Option<RcvlowatHold>>,
    #[pin]
    work: Work<Connector>,
}

impl_has_work! {
    impl HasWork<Self> for Connector { self.work }
}

impl Connector {
    /// Finishes in the background the connect `clc` has started for `sk`, settling
    /// `transport`, and then lets `rcvlowat_hold` go.
    pub(crate) fn start(
        clc: Arc<KernelSocket>,
        sk: ARef<Sock>,
        transport: Arc<Transport>,
        rcvlowat_hold: Option<RcvlowatHold>,
    ) -> Result<Arc<Self>> {
        let connector = Arc::pin_init(
            try_pin_init!(Self {
                clc,
                sk,
                transport,
                done: Atomic::new(false),
                cancelled: Atomic::new(false),
                rcvlowat_hold <- new_mutex!(rcvlowat_hold),
                work <- new_work!("Connector::work"),
            }? Error),
            GFP_KERNEL,
        )?;
        // Handshakes wait for the network for seconds: rsmc's queue is unbound.
        workqueue::queue()
            .enqueue(connector.clone())
            .map_err(|_| EBUSY)?;
        Ok(connector)
    }

    /// Whether the connect is still going on.
    pub(crate) fn in_progress(&self) -> bool {
        !self.done.load(Acquire)
    }

    /// The socket is closing: cuts a connect still in progress short (as stock SMC, by
    /// resetting the TCP connection); the work item then ends on its own.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Relaxed);
        if self.in_progress() {
            self.clc.abort(ECONNABORTED);
        }
    }

    fn finish(&self) {
        let mut timeo = self.sk.sndtimeo(false);
        match self.clc.wait_connected(&mut timeo) {
            Ok(()) if !self.cancelled.load(Relaxed) => {
                let outcome = clc::client(&self.clc);
                if let Outcome::Rdma(conn) = &outcome {
                    conn.set_socket(self.sk.clone());
                }
                self.transport.settle(outcome, &self.clc);
            }
            Ok(()) => {}
            // As stock SMC: a connect that timed out reports a broken pipe.
            Err(err) if err == EAGAIN => self.sk.set_error(EPIPE),
            Err(err) => self.sk.set_error(err),
        }
        drop(self.rcvlowat_hold.lock().take());
        self.done.store(true, Release);
        // Pollers waiting for EPOLLOUT, and `connect` callers waiting for the result.
        self.sk.state_change();
    }
}

impl WorkItem for Connector {
    type Pointer = Arc<Connector>;

    fn run(this: Arc<Connector>) {
        this.finish();
    }
}
