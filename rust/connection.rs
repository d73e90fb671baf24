// SPDX-License-Identifier: GPL-2.0

//! One `AF_SMC` connection over RDMA: its receive ring and send buffer on a [`Link`], and the
//! data path (net/smc's smc_core buffers, smc_cdc, smc_tx, smc_rx and smc_close in one place).
//!
//! The sender copies user data into its send buffer at the offsets the bytes get in the peer's
//! receive ring, RDMA-WRITEs them there, then SENDs a CDC message with its new producer cursor.
//! An RC queue pair places an RDMA WRITE before a SEND posted after it, so when the message
//! arrives the bytes it announces are in the ring. SEND rather than WRITE_WITH_IMM: a cursor
//! message carries a token, two cursors and flags (44 bytes, stock SMC's CDC format), more than
//! the 32 bits of immediate data. A send of up to [`cdc::MAX_INLINE`] bytes skips the WRITE:
//! its bytes ride in the cursor message, and the receiver copies them into its ring before it
//! applies the cursor, halving the packets of a small message. Cursor messages are posted under
//! the state lock, in sequence order, since the receiver drops one overtaken by a newer one. The
//! receiver reports its consumer cursor the same way when [`Conn::cons_update_due`] says so.
//!
//! Flow control, cursors and shutdown flags are [`Conn`]'s (the pure core); this file moves
//! bytes and turns its answers into work requests and wakeups.
//!
//! The receive ring stays registered until the peer can no longer write to it: a connection
//! closed before its peer stays on the link until the peer's close (or abort) arrives, or the
//! link ends; a write into a deregistered ring would fail the peer's whole link.
//!
//! Completions arrive through the device's NAPI poll, via the link; everything they touch is
//! behind IRQ-safe spinlocks, and copies to and from user memory happen unlocked, serialised
//! per direction by `tx_lock` and `rx_lock` (the socket lock's role). Lock order: `tx_lock`,
//! then `send_step_lock`, then a connection's `state`, then its `link` slot, then the link's
//! own lock.

use crate::{
    ffi::{
        ib::RoceGid,
        kernel_socket::{HookedEvent, KernelSocket, MsgHdr, SockEvents, SockHook},
        sock::Sock,
        verbs::{DmaBuffer, DmaDirection, Mr, PinnedMemory, PinnedPages},
        workqueue,
    },
    ib::Device,
    link::{Finished, Link},
    proto::{
        cdc,
        conn::{Changes, Conn},
        ring::{RingSize, Segments},
    },
};
use core::fmt;
use kernel::{
    ffi::c_long,
    new_mutex,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        new_condvar, new_spinlock, new_spinlock_irq, Arc, ArcBorrow, CondVar, CondVarTimeoutResult,
        Mutex, SetOnce, SpinLock, SpinLockIrq, SpinLockIrqGuard,
    },
    time::{
        delay::fsleep,
        hrtimer::{
            ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer,
            HrTimerRestart, RelativeMode,
        },
        msecs_to_jiffies, Delta, Instant, Monotonic,
    },
    workqueue::{impl_has_work, new_work, Work, WorkItem},
};

/// Send credits one send step needs: two RDMA WRITEs (the bytes may wrap around the end of
/// the ring) and the SEND of the cursor message.
pub(crate) const WRS_PER_SEND: u32 = 3;
/// The smallest zerocopy send written from its pinned pages; smaller ones are copied, which
/// costs less than pinning and mapping.
pub(crate) const ZC_MIN_BYTES: usize = 8192;
/// How long the registration of the receive ring may take, in milliseconds.
const REGISTER_TIMEOUT_MS: u32 = 5000;
/// How long closing waits for the last cursor message to leave, in milliseconds.
const CLOSE_TIMEOUT_MS: u32 = 3000;

/// How a socket's close ends its connection, from the socket's options.
#[derive(Clone, Copy)]
pub(crate) struct Closing {
    /// Abort (as TCP sends a reset), as with `SO_LINGER` {1, 0}.
    pub(crate) abort: bool,
    /// `SO_LINGER` {1, t}: wait up to t milliseconds for the writes to reach the peer.
    pub(crate) linger_ms: Option<u32>,
    /// How long to wait for the peer to close too (the internal TCP socket's FIN_WAIT2 time,
    /// which `TCP_LINGER2` sets); `None`: `net.ipv4.tcp_fin_timeout`.
    pub(crate) fin_timeout: Option<Delta>,
}

impl Closing {
    /// An abort, for a connection whose socket is gone or whose handshake failed.
    pub(crate) const ABORT: Self = Self {
        abort: true,
        linger_ms: None,
        fin_timeout: None,
    };
}

/// `MSG_DONTWAIT`.
const MSG_DONTWAIT: i32 = 0x40;
/// `MSG_PEEK`.
const MSG_PEEK: i32 = 0x2;
/// `MSG_WAITALL`.
const MSG_WAITALL: i32 = 0x100;
/// `MSG_OOB`.
const MSG_OOB: i32 = 0x1;
/// `MSG_TRUNC`.
const MSG_TRUNC: i32 = 0x20;

/// `EPOLL*` bits `poll` reports.
pub(crate) mod epoll {
    pub(crate) const IN: u32 = 0x001;
    pub(crate) const OUT: u32 = 0x004;
    pub(crate) const ERR: u32 = 0x008;
    pub(crate) const HUP: u32 = 0x010;
    pub(crate) const RDNORM: u32 = 0x040;
    pub(crate) const WRNORM: u32 = 0x100;
    pub(crate) const RDHUP: u32 = 0x2000;
}

/// A connection's receive ring, as the handshake describes it to the peer.
pub(crate) struct RingEndpoint {
    pub(crate) rkey: u32,
    pub(crate) addr: u64,
    pub(crate) size: RingSize,
}

/// The bytes a connection has queued.
pub(crate) struct Queued {
    /// In our ring, to read (`SIOCINQ`).
    pub(crate) unread: u32,
    /// Written to the peer and not yet acknowledged (`SIOCOUTQ`): the message announcing them
    /// has not completed.
    pub(crate) unacked: u32,
    /// Written to the peer's ring but not yet announced to it (`SIOCOUTQNSD`): the message
    /// waits for a send credit.
    pub(crate) unsent: u32,
}

/// The peer's receive ring and the connection's token, from the handshake.
pub(crate) struct PeerRing {
    pub(crate) rkey: u32,
    pub(crate) addr: u64,
    pub(crate) size: RingSize,
    pub(crate) token: u32,
}

/// The connection's state shared with its completion handlers.
struct State {
    conn: Conn,
    /// Where the peer's receive ring is.
    peer_ring_addr: u64,
    peer_rkey: u32,
    /// This connection's work requests in flight on the link.
    inflight: u32,
    /// This connection's work requests posted, and completed, since it began.
    posted: u64,
    finished: u64,
    /// Pinned pages of zerocopy sends, each with the number `finished` reaches once the last
    /// work request that reads them completed, oldest first.
    zc_chunks: KVec<(u64, Arc<dyn PinnedMemory>)>,
    /// A cursor message is owed but the link had no send credit: sent when it has.
    cdc_owed: bool,
    /// The receive ring's registration completed.
    registered: bool,
    /// The connection failed: every further call reports this.
    error: Option<Error>,
    /// The link failed: the peer cannot write any more.
    link_dead: bool,
    /// `shutdown(SHUT_RD)`.
    rd_shut: bool,
    /// Closing: errors of outstanding work requests are expected.
    closing: bool,
    /// Off the link, buffers released (once).
    released: bool,
    /// Cursor messages sent and received, for debugfs.
    cdcs: CdcCounts,
}

/// How many cursor messages a connection posted, and how many of the peer's it took, found
/// stale (overtaken by a newer one) or refused (breaking the protocol): a connection that
/// waits for its peer's close shows whether a message came.
#[derive(Clone, Copy, Default)]
struct CdcCounts {
    posted: u64,
    taken: u64,
    stale: u64,
    refused: u64,
}

impl fmt::Display for CdcCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cdcs_posted {} cdcs_taken {} cdcs_stale {} cdcs_refused {}",
            self.posted, self.taken, self.stale, self.refused
        )
    }
}

/// What a debugfs `connections` line shows of a connection's [`State`]: `closing <0|1>
/// peer_closed <0|1> peer_aborted <0|1> link_dead <0|1> inflight <n> owed <0|1> error <errno, 0
/// if none>` and the [`CdcCounts`].
struct StateShown {
    closing: bool,
    peer_closed: bool,
    peer_aborted: bool,
    link_dead: bool,
    inflight: u32,
    owed: bool,
    error: i32,
    cdcs: CdcCounts,
}

impl fmt::Display for StateShown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "closing {} peer_closed {} peer_aborted {} link_dead {} inflight {} owed {} error {} {}",
            u8::from(self.closing),
            u8::from(self.peer_closed),
            u8::from(self.peer_aborted),
            u8::from(self.link_dead),
            self.inflight,
            u8::from(self.owed),
            self.error,
            self.cdcs,
        )
    }
}

impl State {
    /// A copy of what debugfs shows.
    fn shown(&self) -> StateShown {
        StateShown {
            closing: self.closing,
            peer_closed: self.conn.peer_closed(),
            peer_aborted: self.conn.peer_aborted(),
            link_dead: self.link_dead,
            inflight: self.inflight,
            owed: self.cdc_owed,
            error: self.error.map_or(0, |err| err.to_errno()),
            cdcs: self.cdcs,
        }
    }

    /// One of the connection's work requests is being posted.
    fn post_begin(&mut self) {
        self.inflight += 1;
        self.posted += 1;
    }

    /// Posting it failed: it is not on the queue.
    fn post_failed(&mut self) {
        self.inflight -= 1;
        self.posted -= 1;
    }
}

/// What a zerocopy send gives the data path (see `crate::zerocopy`).
pub(crate) trait ZcSend {
    /// Wraps a chunk of the send's pinned pages with the send's notification; the queue pair
    /// holds the result until the device is done with the pages.
    fn chunk(&self, pages: PinnedPages) -> Result<Arc<dyn PinnedMemory>>;
    /// Some of the send's data was copied instead.
    fn copied(&self);
}

/// A connection's buffers, and the device they are on.
struct Resources {
    /// Our receive ring, which the peer RDMA-writes.
    rx_ring: Arc<Mr>,
    /// The bytes we RDMA-write to the peer, at the offsets they get in its ring; allocated
    /// once the peer's ring size is known.
    tx_buf: Option<Arc<DmaBuffer>>,
    device: Arc<Device>,
    /// The device's port the connection is on.
    gid: RoceGid,
}

impl Resources {
    /// Gives the device back the ring and the send buffer for later connections, if nothing
    /// else holds them. The ring's memory region goes first: deregistered, it lets no peer
    /// write to the ring any more.
    fn recycle(self) {
        let Self {
            rx_ring,
            tx_buf,
            device,
            ..
        } = self;
        let ring = rx_ring.shared_buffer();
        drop(rx_ring);
        device.recycle(ring);
        if let Some(tx_buf) = tx_buf {
            device.recycle(tx_buf);
        }
    }
}

/// An RDMA connection.
#[pin_data]
pub(crate) struct Connection {
    #[pin]
    state: SpinLockIrq<State>,
    /// Notified when work requests finish or the connection fails, for the handshake and
    /// close paths that wait for that.
    #[pin]
    state_changed: CondVar,
    /// The link, once joined; taken on release.
    #[pin]
    link: SpinLockIrq<Option<Arc<Link>>>,
    /// The token cursor messages carry, nonzero once the handshake assigned it; read by the
    /// link under its own lock, hence not in `state`.
    token: Atomic<u32>,
    /// What the connection holds on its device; taken on release, so that a removed device
    /// is not kept waiting for the socket to close.
    #[pin]
    resources: SpinLockIrq<Option<Resources>>,
    /// The socket to wake; set once the connection belongs to one.
    sk: SetOnce<ARef<Sock>>,
    /// Watches the handshake's TCP connection while the socket is open: its reset (the
    /// peer's device went, or its keepalive failed) ends this connection too. Dropped when the
    /// socket closes, so that the TCP connection closes with it (and the side that closes
    /// first keeps the port in TIME_WAIT, as with TCP).
    #[pin]
    tcp_watch: SpinLock<Option<SockHook<Connection>>>,
    /// One sender and one receiver at a time, as the socket lock gives TCP.
    #[pin]
    tx_lock: Mutex<()>,
    #[pin]
    rx_lock: Mutex<()>,
    /// Held by a send from taking room to announcing the bytes, and by a shutdown of the
    /// write side, so that the end of the stream comes after every byte a send took room
    /// for, as a TCP send holds the socket lock. Never held across a wait for room.
    #[pin]
    send_step_lock: Mutex<()>,
    rdma_tx_bytes: Atomic<u64>,
    rdma_rx_bytes: Atomic<u64>,
    /// Releases a closed connection once its peer closed too (from the completion handler).
    #[pin]
    release_work: Work<Connection, RELEASE_WORK>,
    /// Bounds how long a closed connection waits for its peer to close too, as
    /// `TCP_LINGER2` or `net.ipv4.tcp_fin_timeout` bound TCP's FIN_WAIT2.
    #[pin]
    fin_timer: HrTimer<Connection>,
    /// Ends the wait for the peer once `fin_timer` fired (see [`Self::fin_timeout`]).
    #[pin]
    fin_timeout_work: Work<Connection, FIN_TIMEOUT_WORK>,
    /// The running `fin_timer`, cancelled on release. It holds a reference to the connection,
    /// which the release drops.
    #[pin]
    fin_wait: SpinLock<Option<ArcHrTimerHandle<Connection>>>,
}

/// Work item ids of `release_work` and `fin_timeout_work`.
const RELEASE_WORK: u64 = 0;
const FIN_TIMEOUT_WORK: u64 = 1;

impl_has_work! {
    impl HasWork<Self, RELEASE_WORK> for Connection { self.release_work }
    impl HasWork<Self, FIN_TIMEOUT_WORK> for Connection { self.fin_timeout_work }
}

kernel::impl_has_hr_timer! {
    impl HasHrTimer<Self> for Connection {
        mode: RelativeMode<Monotonic>, field: self.fin_timer
    }
}

impl Connection {
    /// A connection on `device` (whose port has `gid`) with a receive ring of `ring_size`
    /// bytes, on no link yet.
    pub(crate) fn new(device: Arc<Device>, gid: RoceGid, ring_size: RingSize) -> Result<Arc<Self>> {
        let ring = device.dma_buffer(ring_size.get() as usize, DmaDirection::FromDevice)?;
        let rx_ring = Mr::new(device.pd(), ring)?;
        // Placeholders until the handshake tells the peer's ring and the token.
        let conn = Conn::new(ring_size, ring_size, 1);
        Arc::pin_init(
            try_pin_init!(Self {
                state <- new_spinlock_irq!(State {
                    conn,
                    peer_ring_addr: 0,
                    peer_rkey: 0,
                    inflight: 0,
                    posted: 0,
                    finished: 0,
                    zc_chunks: KVec::new(),
                    cdc_owed: false,
                    registered: false,
                    error: None,
                    link_dead: false,
                    rd_shut: false,
                    closing: false,
                    released: false,
                    cdcs: CdcCounts::default(),
                }),
                state_changed <- new_condvar!("Connection::state_changed"),
                link <- new_spinlock_irq!(None),
                token: Atomic::new(0),
                resources <- new_spinlock_irq!(Some(Resources {
                    rx_ring,
                    tx_buf: None,
                    device,
                    gid,
                })),
                sk: SetOnce::new(),
                tcp_watch <- new_spinlock!(None),
                tx_lock <- new_mutex!(()),
                rx_lock <- new_mutex!(()),
                send_step_lock <- new_mutex!(()),
                rdma_tx_bytes: Atomic::new(0),
                rdma_rx_bytes: Atomic::new(0),
                release_work <- new_work!("Connection::release_work"),
                fin_timer <- HrTimer::new(),
                fin_timeout_work <- new_work!("Connection::fin_timeout_work"),
                fin_wait <- new_spinlock!(None),
            }? Error),
            GFP_KERNEL,
        )
    }

    /// The device the connection is on, and its port's GID.
    pub(crate) fn device(&self) -> Result<(Arc<Device>, RoceGid)> {
        let resources = self.resources.lock();
        let resources = resources.as_ref().ok_or(ECONNRESET)?;
        Ok((resources.device.clone(), resources.gid))
    }

    fn rx_ring(&self) -> Result<Arc<Mr>> {
        let resources = self.resources.lock();
        Ok(resources.as_ref().ok_or(ECONNRESET)?.rx_ring.clone())
    }

    fn tx_buf(&self) -> Result<Arc<DmaBuffer>> {
        let resources = self.resources.lock();
        let resources = resources.as_ref().ok_or(ECONNRESET)?;
        resources.tx_buf.clone().ok_or(ENOTCONN)
    }

    /// Puts the connection on `link` (of the same device).
    pub(crate) fn join(self: &Arc<Self>, link: Arc<Link>) -> Result {
        let (device, _) = self.device()?;
        if !Arc::ptr_eq(link.device(), &device) {
            return Err(EINVAL);
        }
        link.join(self.clone())?;
        *self.link.lock() = Some(link);
        Ok(())
    }

    /// Takes the connection off its link (a handshake that will try another).
    pub(crate) fn leave_link(&self) {
        // Taken out first: the guard of an `if let` scrutinee lives through its block.
        let link = self.link.lock().take();
        if let Some(link) = link {
            self.detach_from(&link);
            link.leave(self);
        }
    }

    /// The token cursor messages of this connection carry (0: not assigned yet).
    pub(crate) fn token(&self) -> u32 {
        self.token.load(Relaxed)
    }

    /// Our receive ring, for the peer.
    pub(crate) fn ring(&self) -> Result<RingEndpoint> {
        let rx_ring = self.rx_ring()?;
        Ok(RingEndpoint {
            rkey: rx_ring.rkey(),
            addr: rx_ring.addr(),
            size: self.state.lock().conn.own_ring(),
        })
    }

    /// Learns the peer's ring and the token: allocates the send buffer mirroring the ring.
    pub(crate) fn set_peer(&self, peer: &PeerRing) -> Result {
        let link = self.link()?;
        if peer.token == 0 || link.token_taken(peer.token, self) {
            return Err(EEXIST);
        }
        let (device, _) = self.device()?;
        let tx_buf = device.dma_buffer(peer.size.get() as usize, DmaDirection::ToDevice)?;
        link.attach(tx_buf.clone())?;
        {
            let mut guard = self.resources.lock();
            let Some(resources) = &mut *guard else {
                return Err(ECONNRESET);
            };
            if resources.tx_buf.is_some() {
                return Err(EINVAL);
            }
            resources.tx_buf = Some(tx_buf);
        }
        let mut state = self.state.lock();
        let own_ring = state.conn.own_ring();
        state.conn = Conn::new(own_ring, peer.size, peer.token);
        state.peer_ring_addr = peer.addr;
        state.peer_rkey = peer.rkey;
        self.token.store(peer.token, Relaxed);
        Ok(())
    }

    /// Registers the receive ring on the link (which must be connected), so that the peer
    /// may write to it; needs the token.
    pub(crate) fn register_ring(&self) -> Result {
        let link = self.link()?;
        let rx_ring = self.rx_ring()?;
        let start = Instant::<Monotonic>::now();
        // A fresh link has all its credits: this waits only behind a busy one.
        while !link.take_credits(1) {
            if start.elapsed() > Delta::from_millis(REGISTER_TIMEOUT_MS.into()) {
                return Err(ETIMEDOUT);
            }
            fsleep(Delta::from_millis(1));
        }
        self.state.lock().post_begin();
        if let Err(err) = link.post_registration(self.token(), &rx_ring) {
            self.state.lock().post_failed();
            link.return_credits(1);
            return Err(err);
        }
        self.wait_for_state(REGISTER_TIMEOUT_MS, |state| {
            state.registered || state.error.is_some()
        });
        let state = self.state.lock();
        match state.error {
            Some(err) => Err(err),
            None if state.registered => Ok(()),
            None => Err(ETIMEDOUT),
        }
    }

    /// Waits up to `wait_ms` milliseconds until `done` holds for the state; false if it does
    /// not: the time ran out, or a signal is pending (a dying task's close must not wait).
    fn wait_for_state(&self, wait_ms: u32, done: impl Fn(&State) -> bool) -> bool {
        let mut state = self.state.lock();
        let mut left = msecs_to_jiffies(wait_ms);
        while !done(&state) {
            match self
                .state_changed
                .wait_interruptible_timeout(&mut state, left)
            {
                CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                CondVarTimeoutResult::Timeout | CondVarTimeoutResult::Signal { .. } => {
                    return done(&state)
                }
            }
        }
        true
    }

    /// Makes `sk` the socket this connection wakes.
    ///
    /// The socket gets the id of the NAPI that reaps the connection's completions before the
    /// application can see the connection, so that its busy polling (recvmsg, epoll, poll,
    /// io_uring) spins on that NAPI.
    pub(crate) fn set_socket(&self, sk: ARef<Sock>) {
        if let Ok((device, _)) = self.device() {
            sk.set_napi_id(device.napi_id());
        }
        // Under the state lock, so that a failure is either seen here or reported by `fail`.
        let state = self.state.lock();
        if let Some(err) = state.error {
            sk.set_error(err);
        }
        self.sk.populate(sk);
        drop(state);
    }

    /// Ties the connection to its handshake's TCP connection `clc` (see `tcp_watch`).
    pub(crate) fn watch_tcp(self: &Arc<Self>, clc: Arc<KernelSocket>) -> Result {
        let hook = SockHook::new(clc, HookedEvent::ErrorReport, self.clone())?;
        let taken = self.tcp_watch.lock().replace(hook);
        drop(taken);
        // A connection closed meanwhile did not see the hook to drop it.
        if self.state.lock().closing {
            self.unwatch_tcp();
        }
        Ok(())
    }

    /// Stops watching the TCP connection and lets it go; returns the hook if there was one.
    fn take_tcp_watch(&self) -> Option<SockHook<Connection>> {
        let hook = self.tcp_watch.lock().take();
        if let Some(hook) = &hook {
            hook.unhook();
        }
        hook
    }

    fn unwatch_tcp(&self) {
        // Dropped unlocked: dropping the hook may release the TCP socket.
        drop(self.take_tcp_watch());
    }

    /// The bytes queued, as TCP's `ioctl`s count them: see [`Queued`].
    pub(crate) fn queued(&self) -> Queued {
        let state = self.state.lock();
        Queued {
            unread: state.conn.readable(),
            unacked: state.conn.unacked(),
            unsent: state.conn.unannounced(),
        }
    }

    /// Payload bytes written to the peer and read from our ring.
    pub(crate) fn rdma_bytes(&self) -> (u64, u64) {
        (
            self.rdma_tx_bytes.load(Relaxed),
            self.rdma_rx_bytes.load(Relaxed),
        )
    }

    fn link(&self) -> Result<Arc<Link>> {
        self.link.lock().clone().ok_or(ECONNRESET)
    }

    /// Sends the next cursor message; `reserved` if the caller already took its send credit.
    fn send_cdc(&self, link: &Link, reserved: bool) -> Result {
        self.send_cdc_locked(self.state.lock(), link, reserved)
    }

    /// As [`Self::send_cdc`], under the caller's lock of the state that the message announces.
    fn send_cdc_locked(
        &self,
        mut state: SpinLockIrqGuard<'_, State>,
        link: &Link,
        reserved: bool,
    ) -> Result {
        if !reserved && !link.take_credits(1) {
            state.cdc_owed = true;
            return Ok(());
        }
        // Cleared with the post under one lock: a waiter for the connection's last message
        // (see [`Self::wait_sent`]) sees it owed or in flight, never neither.
        state.cdc_owed = false;
        let msg = state.conn.next_cdc();
        let posted = self.post_cdc(&mut state, link, &msg, &[]);
        drop(state);
        if posted.is_err() && !reserved {
            link.return_credits(1);
        }
        posted
    }

    /// Posts the cursor message `msg` with the inline `data`, with a credit the caller took.
    ///
    /// Under the state lock, so that messages go on the send queue in the order of their
    /// sequence numbers: the peer drops a message overtaken by a newer one, and with it any
    /// inline data.
    fn post_cdc(&self, state: &mut State, link: &Link, msg: &cdc::Message, data: &[u8]) -> Result {
        state.post_begin();
        let posted = link.post_cdc(self.token(), msg, data);
        match posted {
            Ok(()) => state.cdcs.posted += 1,
            Err(_) => state.post_failed(),
        }
        posted
    }

    /// Sends a cursor message now if the connection still has a link; a failure fails the
    /// connection.
    fn notify_peer(&self) {
        if let Ok(link) = self.link() {
            if let Err(err) = self.send_cdc(&link, false) {
                self.fail(err);
            }
        }
    }

    /// Fails the connection with `err` (the first error sticks) and wakes everyone.
    fn fail(&self, err: Error) {
        {
            let mut state = self.state.lock();
            // Once either side closed, errors of work requests still in flight are expected.
            if state.closing || state.error.is_some() || state.conn.peer_closed() {
                return;
            }
            // The socket's error first: a reader that sees the connection failed (a busy
            // poller sees it at once) must find the error to report.
            if let Some(sk) = self.sk.as_ref() {
                sk.set_error(err);
            }
            state.error = Some(err);
        }
        self.state_changed.notify_all();
        if let Some(sk) = self.sk.as_ref() {
            sk.state_change();
        }
    }

    fn wake(&self, wake: impl FnOnce(&Sock)) {
        if let Some(sk) = self.sk.as_ref() {
            wake(sk);
        }
    }

    /// The link has send credits again: sends an owed cursor message, wakes senders.
    pub(crate) fn credits_available(&self) {
        let owed = self.state.lock().cdc_owed;
        if owed {
            self.notify_peer();
            self.state_changed.notify_all();
        }
        self.wake(Sock::write_space);
    }

    /// One of this connection's work requests on `link` finished.
    pub(crate) fn work_finished(&self, link: &Link, what: Finished, ok: bool) {
        {
            let mut state = self.state.lock();
            state.inflight = state.inflight.saturating_sub(1);
            state.finished += 1;
            match what {
                Finished::Registration => state.registered = ok,
                Finished::Cdc { prod } if ok => state.conn.on_acked(prod),
                Finished::Cdc { .. } | Finished::Send => (),
            }
        }
        self.release_zc_chunks(link);
        self.state_changed.notify_all();
        if !ok {
            self.fail(ECONNRESET);
        }
    }

    /// Gives back the pinned pages whose work requests all completed: the last reference
    /// unpins them, and the last chunk of a send notifies it.
    fn release_zc_chunks(&self, link: &Link) {
        loop {
            let chunk = {
                let mut state = self.state.lock();
                match state.zc_chunks.first() {
                    Some((done_at, _)) if *done_at <= state.finished => {
                        state.zc_chunks.remove(0).ok().map(|(_, chunk)| chunk)
                    }
                    _ => None,
                }
            };
            let Some(chunk) = chunk else {
                return;
            };
            // SAFETY: Completions come in send-queue order, and the chunk's last write was our
            // work request number `done_at` (posted under the state lock): with `finished >=
            // done_at`, no write that reads the pages is outstanding.
            unsafe { link.detach_pinned(chunk.pages()) };
        }
    }

    /// The link failed (`err`): the connection fails, and a closed one can go now.
    pub(crate) fn link_failed(self: &Arc<Self>, err: Error) {
        self.fail(err);
        let release = {
            let mut state = self.state.lock();
            state.link_dead = true;
            state.closing && !state.released
        };
        self.state_changed.notify_all();
        if release {
            self.schedule_release();
        }
    }

    /// A cursor message from the peer arrived, with `data` inline.
    pub(crate) fn cdc_received(self: &Arc<Self>, msg: &cdc::Message, data: &[u8]) {
        let rx_ring = if data.is_empty() {
            None
        } else {
            self.rx_ring().ok()
        };
        let changes = {
            let mut state = self.state.lock();
            // CAST: At most `cdc::MAX_INLINE`.
            let changes = state.conn.on_cdc(msg, data.len() as u32);
            // Placed before the lock drops: readers see the new producer cursor only with
            // the bytes before it.
            let changes = changes.map(|changes| match changes.inline_at {
                Some(at) => place_inline(rx_ring.as_deref(), at, data).map(|()| changes),
                None => Ok(changes),
            });
            match &changes {
                Ok(Ok(changes)) if changes.stale => state.cdcs.stale += 1,
                Ok(Ok(_)) => state.cdcs.taken += 1,
                Ok(Err(_)) | Err(_) => state.cdcs.refused += 1,
            }
            changes
        };
        match changes {
            Ok(Ok(changes)) => self.apply(changes),
            Ok(Err(_)) | Err(_) => {
                // A peer that breaks the protocol gets an abort; the link goes on.
                self.state.lock().conn.abort();
                self.notify_peer();
                self.fail(ECONNABORTED);
            }
        }
        let release = {
            let state = self.state.lock();
            state.closing
                && !state.released
                && (state.conn.peer_closed() || state.conn.peer_aborted())
        };
        if release {
            self.schedule_release();
        }
    }

    fn schedule_release(self: &Arc<Self>) {
        // Already queued is fine: one release is all it takes.
        let _ = workqueue::queue().enqueue::<_, RELEASE_WORK>(self.clone());
    }

    fn apply(&self, changes: Changes) {
        if changes.stale {
            return;
        }
        if changes.peer_aborted {
            self.fail(ECONNRESET);
            return;
        }
        if changes.cons_update_due {
            self.notify_peer();
        }
        if changes.peer_done_writing || changes.peer_closed {
            self.wake(Sock::state_change);
        }
        if changes.readable {
            self.wake(Sock::data_ready);
        }
        if changes.writable {
            self.wake(Sock::write_space);
        }
    }

    /// `sendmsg`: copies into the send buffer and writes to the peer as its window allows; a
    /// zerocopy send (`zc`) of [`ZC_MIN_BYTES`] or more writes straight from its pinned pages.
    pub(crate) fn sendmsg(
        &self,
        sk: &Sock,
        msg: &mut MsgHdr,
        len: usize,
        zc: Option<&dyn ZcSend>,
    ) -> Result<usize> {
        let _tx = self.tx_lock.lock();
        let zc = match zc {
            Some(zc) if len < ZC_MIN_BYTES => {
                zc.copied();
                None
            }
            zc => zc,
        };
        let flags = msg.flags();
        let mut timeo = sk.sndtimeo(flags & MSG_DONTWAIT != 0);
        let mut busy_polled = false;
        let mut sent = 0usize;
        while sent < len {
            let want = u32::try_from(len - sent).unwrap_or(u32::MAX);
            let step = self.send_step_lock.lock();
            let room = match self.send_room(want) {
                Ok(Some(room)) => room,
                Ok(None) => {
                    drop(step);
                    // As TCP's sk_stream_wait_memory: spin for the peer's consumer update
                    // first, once per call, if busy polling is on.
                    if !busy_polled {
                        busy_polled = true;
                        sk.busy_loop(timeo == 0, &|| self.send_ready());
                        continue;
                    }
                    let waited = sk.wait_until(&mut timeo, || self.send_ready());
                    match waited {
                        Ok(()) => continue,
                        Err(err) if sent == 0 => return Err(err),
                        Err(_) => break,
                    }
                }
                // As TCP: a reset is reported once (the pending socket error), then EPIPE.
                Err(_) if sent == 0 => return Err(sk.stream_error(flags, EPIPE)),
                Err(_) => break,
            };
            let stepped = self.send_step(msg, room, zc);
            drop(step);
            match stepped {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(err) if sent == 0 => return Err(err),
                Err(_) => break,
            }
        }
        if sent == 0 && len > 0 {
            return Err(EFAULT);
        }
        Ok(sent)
    }

    /// Whether a sender waiting for room may go on: room and credits, or an end to sending.
    fn send_ready(&self) -> bool {
        let state = self.state.lock();
        let conn = &state.conn;
        state.error.is_some()
            || conn.write_shut()
            || conn.peer_closed()
            || conn.peer_aborted()
            || (conn.writable() > 0 && self.link_has_credits())
    }

    /// How many of `want` bytes may be sent now, with the link's send credits for them taken;
    /// `None` if none (the caller waits), an error if the connection cannot send any more.
    fn send_room(&self, want: u32) -> Result<Option<u32>> {
        let link = self.link()?;
        let mut state = self.state.lock();
        if let Some(err) = state.error {
            return Err(err);
        }
        if state.conn.write_shut() || state.conn.peer_closed() || state.conn.peer_aborted() {
            return Err(EPIPE);
        }
        let room = state.conn.writable().min(want);
        state.conn.set_write_blocked(room < want);
        if room == 0 || !link.take_credits(WRS_PER_SEND) {
            return Ok(None);
        }
        Ok(Some(room))
    }

    /// Copies up to `room` bytes of `msg` into the send buffer, writes them to the peer and
    /// announces them, with the credits [`Connection::send_room`] took; returns how many
    /// bytes were sent.
    fn send_step(&self, msg: &mut MsgHdr, room: u32, zc: Option<&dyn ZcSend>) -> Result<usize> {
        let link = self.link()?;
        let mut credits = WRS_PER_SEND;
        let sent = match zc.map(|zc| self.send_pinned(&link, msg, room, zc, &mut credits)) {
            Some(Ok(Some(sent))) => Ok(sent),
            Some(Err(err)) => Err(err),
            None | Some(Ok(None)) if room as usize <= cdc::MAX_INLINE => {
                self.send_inline(&link, msg, room, &mut credits)
            }
            None | Some(Ok(None)) => self.send_with_credits(&link, msg, room, &mut credits),
        };
        if credits > 0 {
            link.return_credits(credits);
        }
        if let Err(err) = sent {
            self.fail(err);
        }
        sent
    }

    /// Writes up to `room` bytes of a zerocopy send straight from its pinned pages, with the
    /// credits [`Connection::send_room`] took; `None` if they are copied instead (memory that
    /// cannot be pinned).
    fn send_pinned(
        &self,
        link: &Link,
        msg: &mut MsgHdr,
        room: u32,
        zc: &dyn ZcSend,
        credits: &mut u32,
    ) -> Result<Option<usize>> {
        let room = room as usize;
        let reserved = self.state.lock().zc_chunks.reserve(1, GFP_ATOMIC).is_ok();
        let pinned = if reserved {
            PinnedPages::pin(link.device().registered(), msg, room)?
        } else {
            None
        };
        let Some(pages) = pinned else {
            zc.copied();
            return Ok(None);
        };
        let chunk = zc.chunk(pages)?;
        let pages = chunk.pages();
        // CAST: At most `room`, a `u32`.
        let len = pages.len() as u32;
        let (segments, remote_base, rkey) = {
            let state = self.state.lock();
            let segments = state.conn.write_segments(len).ok_or(EPIPE)?;
            (segments, state.peer_ring_addr, state.peer_rkey)
        };
        link.attach_pinned(chunk.clone())?;
        let token = self.token();
        let mut offset = 0usize;
        for (i, segment) in segments.iter().enumerate() {
            let span = (offset, segment.len as usize);
            let remote = remote_base + u64::from(segment.offset);
            // Posted under the state lock, so that its number orders it on the send queue
            // (see `release_zc_chunks`).
            let mut state = self.state.lock();
            state.post_begin();
            if let Err(err) = link.post_write_pinned(token, pages, span, remote, rkey) {
                state.post_failed();
                drop(state);
                // A later write's earlier ones are posted: then the queue pair keeps the pages
                // until it is destroyed.
                if i == 0 {
                    // SAFETY: Nothing that reads the pages was posted.
                    unsafe { link.detach_pinned(pages) };
                }
                return Err(err);
            }
            if i + 1 == 1 + usize::from(segments.second.is_some()) {
                let done_at = state.posted;
                // Room was reserved above.
                let _ = state.zc_chunks.push((done_at, chunk.clone()), GFP_ATOMIC);
            }
            drop(state);
            *credits -= 1;
            offset += segment.len as usize;
        }
        self.produce(len)?;
        *credits -= 1;
        self.send_cdc(link, true)?;
        self.rdma_tx_bytes.add(u64::from(len), Relaxed);
        Ok(Some(len as usize))
    }

    /// Sends up to `room` bytes of `msg` (at most [`cdc::MAX_INLINE`]) inline in a cursor
    /// message, with the credits [`Connection::send_room`] took: one SEND instead of a WRITE
    /// and a SEND.
    fn send_inline(
        &self,
        link: &Link,
        msg: &mut MsgHdr,
        room: u32,
        credits: &mut u32,
    ) -> Result<usize> {
        let mut data = [0u8; cdc::MAX_INLINE];
        let data = data.get_mut(..room as usize).ok_or(EINVAL)?;
        let copied = msg.copy_data(data);
        if copied == 0 {
            return Ok(0);
        }
        {
            let mut state = self.state.lock();
            // CAST: At most `room`, a `u32`.
            // As in `produce`: only an abort takes the room away.
            let cdc = state.conn.next_cdc_inline(copied as u32).ok_or(EPIPE)?;
            self.post_cdc(&mut state, link, &cdc, &data[..copied])?;
        }
        *credits -= 1;
        self.rdma_tx_bytes.add(copied as u64, Relaxed);
        Ok(copied)
    }

    fn send_with_credits(
        &self,
        link: &Link,
        msg: &mut MsgHdr,
        room: u32,
        credits: &mut u32,
    ) -> Result<usize> {
        let tx_buf = self.tx_buf()?;
        let segments = self.state.lock().conn.write_segments(room).ok_or(EPIPE)?;
        let mut copied = 0u32;
        for segment in segments.iter() {
            let n = tx_buf.copy_from_msg(segment.offset as usize, msg, segment.len as usize)?;
            // CAST: At most `segment.len`, a `u32`.
            copied += n as u32;
            if n < segment.len as usize {
                break;
            }
        }
        if copied == 0 {
            return Ok(0);
        }
        let (segments, remote_base, rkey) = {
            let state = self.state.lock();
            let segments = state.conn.write_segments(copied).ok_or(EPIPE)?;
            (segments, state.peer_ring_addr, state.peer_rkey)
        };
        let lkey = link.device().pd().local_dma_lkey();
        let token = self.token();
        for segment in segments.iter() {
            let sge = tx_buf.sge(segment.offset as usize, segment.len as usize, lkey)?;
            self.state.lock().post_begin();
            let posted =
                link.post_write(token, &sge, remote_base + u64::from(segment.offset), rkey);
            if let Err(err) = posted {
                self.state.lock().post_failed();
                return Err(err);
            }
            *credits -= 1;
        }
        // The bytes are announced only now that their WRITEs are posted: a cursor message
        // sent meanwhile (e.g. a consumer update from the NAPI poll) goes after them.
        self.produce(copied)?;
        *credits -= 1;
        self.send_cdc(link, true)?;
        self.rdma_tx_bytes.add(u64::from(copied), Relaxed);
        Ok(copied as usize)
    }

    /// Announces `len` bytes whose WRITEs are posted. The room they took is theirs (a
    /// shutdown waits for the send step), so only an abort since then refuses them, with
    /// `EPIPE` as every place of a send step that finds its room gone.
    fn produce(&self, len: u32) -> Result {
        self.state.lock().conn.produce(len).map(|_| ()).ok_or(EPIPE)
    }

    /// `recvmsg`: copies from the receive ring, waiting as TCP does for `lowat` bytes
    /// (`SO_RCVLOWAT`) or all of `len` with `MSG_WAITALL`.
    pub(crate) fn recvmsg(
        &self,
        sk: &Sock,
        msg: &mut MsgHdr,
        len: usize,
        flags: i32,
        lowat: usize,
    ) -> Result<usize> {
        if flags & MSG_OOB != 0 {
            return Err(EINVAL);
        }
        let _rx = self.rx_lock.lock();
        let peek = flags & MSG_PEEK != 0;
        let target = if peek {
            len.min(1)
        } else if flags & MSG_WAITALL != 0 {
            len
        } else {
            len.min(lowat)
        };
        let mut timeo: c_long = sk.rcvtimeo(flags & MSG_DONTWAIT != 0);
        let mut busy_polled = false;
        let mut copied = 0usize;
        while copied < len {
            let want = u32::try_from(len - copied).unwrap_or(u32::MAX);
            let ready = {
                let state = self.state.lock();
                let readable = state.conn.readable();
                if readable > 0 {
                    Some(state.conn.read_segments(0, readable.min(want)))
                } else if state.error.is_some() {
                    drop(state);
                    // As TCP: a reset is reported once (the pending socket error), then end
                    // of file; bytes already copied go first, the error with the next call.
                    if copied > 0 {
                        return Ok(copied);
                    }
                    return sk.take_error().map_or(Ok(0), Err);
                } else if state.conn.at_eof() || state.rd_shut {
                    return Ok(copied);
                } else {
                    None
                }
            };
            let Some(segments) = ready else {
                if copied >= target {
                    break;
                }
                // As tcp_recvmsg: with busy polling on, spin on the NAPI first, once per
                // call (one pass if nonblocking); the stock end check looks at
                // `sk_receive_queue`, which rsmc does not use, hence our own.
                if !busy_polled {
                    busy_polled = true;
                    sk.busy_loop(timeo == 0, &|| self.recv_ready());
                    continue;
                }
                let waited = sk.wait_until(&mut timeo, || self.recv_ready());
                match waited {
                    Ok(()) => continue,
                    Err(err) if copied == 0 => return Err(err),
                    Err(_) => break,
                }
            };
            let segments = segments.ok_or(EINVAL)?;
            // As TCP: with `MSG_TRUNC` the bytes are taken (or peeked at) but not copied.
            let n = if flags & MSG_TRUNC != 0 {
                segments.iter().map(|segment| segment.len).sum()
            } else {
                self.copy_out(msg, segments)?
            };
            if n == 0 {
                return if copied > 0 { Ok(copied) } else { Err(EFAULT) };
            }
            copied += n as usize;
            if peek {
                break;
            }
            let due = {
                let mut state = self.state.lock();
                state.conn.consume(n);
                state.conn.cons_update_due() && !state.conn.peer_closed()
            };
            self.rdma_rx_bytes.add(u64::from(n), Relaxed);
            if due {
                self.notify_peer();
            }
            if copied >= target {
                break;
            }
        }
        Ok(copied)
    }

    /// Whether a reader waiting for data may go on: data, an error, or an end to reading.
    fn recv_ready(&self) -> bool {
        let state = self.state.lock();
        state.conn.readable() > 0 || state.error.is_some() || state.conn.at_eof() || state.rd_shut
    }

    fn copy_out(&self, msg: &mut MsgHdr, segments: Segments) -> Result<u32> {
        let rx_ring = self.rx_ring()?;
        let ring = rx_ring.buffer();
        let mut copied = 0u32;
        for segment in segments.iter() {
            let n = ring.copy_to_msg(segment.offset as usize, msg, segment.len as usize)?;
            // CAST: At most `segment.len`, a `u32`.
            copied += n as u32;
            if n < segment.len as usize {
                break;
            }
        }
        Ok(copied)
    }

    /// Readiness for `poll` (`EPOLL*` bits), as TCP reports it: readable from `lowat` bytes
    /// (`SO_RCVLOWAT`), or a full ring.
    pub(crate) fn poll_mask(&self, lowat: usize) -> u32 {
        let state = self.state.lock();
        if state.error.is_some() {
            return epoll::ERR
                | epoll::HUP
                | epoll::IN
                | epoll::RDNORM
                | epoll::RDHUP
                | epoll::OUT
                | epoll::WRNORM;
        }
        let conn = &state.conn;
        let rd_done = state.rd_shut || conn.peer_done_writing() || conn.peer_closed();
        let mut mask = 0;
        if rd_done && conn.write_shut() {
            mask |= epoll::HUP;
        }
        if rd_done {
            mask |= epoll::IN | epoll::RDNORM | epoll::RDHUP;
        }
        let lowat = u32::try_from(lowat).unwrap_or(u32::MAX);
        if conn.readable() > 0 && conn.readable() >= lowat.min(conn.own_ring().get()) {
            mask |= epoll::IN | epoll::RDNORM;
        }
        if conn.write_shut() || (conn.writable() > 0 && self.link_has_credits()) {
            mask |= epoll::OUT | epoll::WRNORM;
        }
        mask
    }

    fn link_has_credits(&self) -> bool {
        self.link
            .lock()
            .as_ref()
            .is_some_and(|link| link.has_credits(WRS_PER_SEND))
    }

    /// `shutdown(2)`: `read` and/or `write` side. On a failed connection, as on a TCP socket
    /// after a reset, the shutdown applies but `ENOTCONN` reports that nothing could be sent;
    /// the socket's pending error stays for the next call that reports it.
    pub(crate) fn shutdown(&self, read: bool, write: bool) -> Result {
        let _step = write.then(|| self.send_step_lock.lock());
        let failed = {
            let mut state = self.state.lock();
            state.rd_shut |= read;
            if write {
                state.conn.shutdown_write();
            }
            state.error.is_some()
        };
        if failed {
            self.wake(Sock::state_change);
            return Err(ENOTCONN);
        }
        if write {
            let link = self.link()?;
            self.send_cdc(&link, false)?;
        }
        self.wake(Sock::state_change);
        Ok(())
    }

    /// Closes the connection: tells the peer (an abort if asked or unread data is left, as
    /// TCP sends a reset then) and returns, as TCP's close does, unless `SO_LINGER` asks to
    /// wait for the connection's writes to reach the peer. The connection is released in the
    /// background once its last message left and the peer closed too, or the fin timeout
    /// ended the wait for the peer.
    pub(crate) fn close(self: &Arc<Self>, how: Closing) {
        let link = self.link().ok();
        let mut state = self.state.lock();
        // Closed already (the socket's release, then its state's drop, both close).
        if state.closing {
            return;
        }
        if how.abort || state.conn.readable() > 0 {
            state.conn.abort();
        } else {
            state.conn.close();
        }
        state.closing = true;
        let failed = state.error.is_some() || state.conn.peer_aborted();
        // Even a failed connection says it closed: the peer keeps its ring until it hears.
        let link = link.filter(|_| !state.link_dead);
        let posted = self.post_last_cdc(state, link.as_deref());
        // Waiting for the message would keep the application for the transport's retries
        // (seconds) if the peer is gone; the release waits for it instead.
        if posted && !failed {
            if let Some(linger_ms) = how.linger_ms {
                self.wait_sent(linger_ms);
            }
        }
        self.unwatch_tcp();
        let peer_done = {
            let state = self.state.lock();
            state.link_dead || state.conn.peer_closed() || state.conn.peer_aborted()
        };
        if peer_done {
            self.schedule_release();
        } else {
            self.start_fin_wait(how.fin_timeout);
        }
    }

    /// Releases the connection after `timeout` (`None`: `net.ipv4.tcp_fin_timeout`) if the
    /// peer has not closed by then (see [`Self::fin_timeout`]).
    fn start_fin_wait(self: &Arc<Self>, timeout: Option<Delta>) {
        let Some(sk) = self.sk.as_ref() else {
            return;
        };
        let timer = self
            .clone()
            .start(timeout.unwrap_or_else(|| sk.fin_timeout()));
        let mut fin_wait = self.fin_wait.lock();
        if self.state.lock().released {
            // Released meanwhile: nothing would cancel the timer.
            drop(fin_wait);
            drop(timer);
        } else {
            *fin_wait = Some(timer);
        }
    }

    /// The peer did not close within the fin timeout. It heard of the close long before and
    /// writes no more; an abort tells it that this end is gone, as a TCP reset would, so that
    /// its close does not wait for a message to a queue pair that may be gone with the link.
    fn fin_timeout(&self) {
        let link = self.link().ok();
        let mut state = self.state.lock();
        let waiting = !state.released
            && !state.link_dead
            && !state.conn.peer_closed()
            && !state.conn.peer_aborted();
        if waiting {
            state.conn.abort();
        }
        // The release waits for the abort to leave.
        self.post_last_cdc(state, link.as_deref().filter(|_| waiting));
        self.release();
    }

    /// Posts the cursor message that announces the close or abort the caller just made under
    /// `state`, or owes it for want of a send credit, before that lock drops; `link` was taken
    /// before the lock. From the moment the change shows, the message is in flight or owed, so
    /// a release that the change lets run (the peer's close arriving meanwhile) waits for it
    /// ([`Self::wait_sent`]) before leaving the link, which may take the queue pair with it.
    /// Whether it was posted or owed; without a link, nothing is sent.
    fn post_last_cdc(&self, state: SpinLockIrqGuard<'_, State>, link: Option<&Link>) -> bool {
        link.is_some_and(|link| self.send_cdc_locked(state, link, false).is_ok())
    }

    /// Releases a connection whose handshake failed, in the background: the socket falls
    /// back to TCP now. If it got as far as a token, the peer may hold its end: an abort
    /// tells it to let go.
    pub(crate) fn abandon(self: &Arc<Self>) {
        let link = self.link().ok();
        let mut state = self.state.lock();
        let tell_peer = self.token() != 0 && !state.link_dead && !state.closing;
        state.conn.abort();
        state.closing = true;
        // The release waits for the abort: the peer may be gone, and the transport's retries
        // take seconds.
        self.post_last_cdc(state, link.as_deref().filter(|_| tell_peer));
        self.schedule_release();
    }

    /// Takes the connection off its link and releases its buffers. Process context.
    pub(crate) fn release(&self) {
        {
            let mut state = self.state.lock();
            if state.released {
                return;
            }
            state.released = true;
            state.closing = true;
        }
        // Dropped unlocked: the cancel waits for a running callback.
        let fin_wait = self.fin_wait.lock().take();
        drop(fin_wait);
        self.unwatch_tcp();
        // The last message may still wait for a send credit: it goes before the connection
        // leaves its link, as the peer's end waits for it.
        self.wait_sent(CLOSE_TIMEOUT_MS);
        self.leave_link();
        // Taken unlocked: the last references deregister the ring and free DMA memory.
        let resources = self.resources.lock().take();
        if let Some(resources) = resources {
            resources.recycle();
        }
    }

    /// Gives the link back this connection's buffers, if no work request of it is in flight
    /// (else the queue pair keeps them until it goes).
    fn detach_from(&self, link: &Link) {
        if !self.wait_idle(CLOSE_TIMEOUT_MS) {
            return;
        }
        let resources = self.resources.lock();
        if let Some(resources) = resources.as_ref() {
            // SAFETY: Nothing of this connection is in flight, and it posts nothing more:
            // it is off the link (or leaving it) and closing.
            unsafe { link.detach(resources.tx_buf.as_ref(), &resources.rx_ring) };
        }
    }

    /// The device is going away: the connection fails (`ECONNABORTED`, as stock SMC's
    /// smc_conn_kill), aborts towards the peer and resets the handshake's TCP connection. The
    /// link then waits for the abort ([`Self::wait_idle`]) and releases the connection.
    pub(crate) fn device_removed(&self) {
        self.fail(ECONNABORTED);
        let link = self.link().ok();
        let mut state = self.state.lock();
        let open = !state.closing;
        state.conn.abort();
        state.closing = true;
        // The link goes with the device: a message owed for want of a credit never will.
        state.link_dead = true;
        // Best effort: the TCP reset below tells the peer for sure.
        self.post_last_cdc(state, link.as_deref().filter(|_| open));
        if let Some(hook) = self.take_tcp_watch() {
            hook.socket().abort(ECONNABORTED);
        }
    }

    /// Writes the connection's part of a debugfs `connections` line: `token <token>` and its
    /// [`StateShown`].
    pub(crate) fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Copied out: the lock is not held while formatting.
        let shown = self.state.lock().shown();
        write!(f, "token {:#x} {shown}", self.token())
    }

    /// Waits up to `wait_ms` milliseconds until none of the connection's work requests is in
    /// flight; false if some still are.
    pub(crate) fn wait_idle(&self, wait_ms: u32) -> bool {
        self.wait_for_state(wait_ms, |state| state.inflight == 0)
    }

    /// Waits up to `wait_ms` milliseconds until every message of the connection left: none
    /// in flight and none owed for want of a send credit (unless the link is dead, as then
    /// none will go); false if one has not.
    fn wait_sent(&self, wait_ms: u32) -> bool {
        self.wait_for_state(wait_ms, |state| {
            state.inflight == 0 && (!state.cdc_owed || state.link_dead)
        })
    }
}

impl SockEvents for Connection {
    fn error_report(this: ArcBorrow<'_, Self>, err: Error) {
        this.fail(err);
    }
}

impl WorkItem<RELEASE_WORK> for Connection {
    type Pointer = Arc<Connection>;

    fn run(this: Arc<Connection>) {
        this.release();
    }
}

impl WorkItem<FIN_TIMEOUT_WORK> for Connection {
    type Pointer = Arc<Connection>;

    fn run(this: Arc<Connection>) {
        this.fin_timeout();
    }
}

impl HrTimerCallback for Connection {
    type Pointer<'a> = Arc<Connection>;

    /// `fin_timer` fired: what follows may sleep, so it runs in a work item.
    fn run(this: ArcBorrow<'_, Self>, _ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        let _ = workqueue::queue().enqueue::<_, FIN_TIMEOUT_WORK>(Arc::from(this));
        HrTimerRestart::NoRestart
    }
}

/// Copies a cursor message's inline `data` into the receive ring `rx_ring` at `at`.
fn place_inline(rx_ring: Option<&Mr>, at: Segments, data: &[u8]) -> Result {
    let ring = rx_ring.ok_or(ECONNRESET)?.buffer();
    let mut placed = 0usize;
    for segment in at.iter() {
        let len = segment.len as usize;
        let bytes = data.get(placed..placed + len).ok_or(EINVAL)?;
        ring.write(segment.offset as usize, bytes)?;
        placed += len;
    }
    Ok(())
}
