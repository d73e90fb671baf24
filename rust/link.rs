// SPDX-License-Identifier: GPL-2.0

//! Links: one RC queue pair between two RDMA devices, shared by every connection between them
//! (net/smc's link group, with one link), its cursor-message buffers and its send credits.
//!
//! A connection joins a link in the handshake ([`crate::clc`]): the client offers the link it
//! has to the server's address, if any; the server takes it if it still has its end (found by
//! the client's queue pair), else declines with `NOCLNTLINK` and the client proposes again
//! with a new link. Send completions go to the connection their `wr_id` names, cursor
//! messages to the connection whose token they carry; a message for an unknown token is
//! dropped and counted (a connection that closed meanwhile).
//!
//! A link lives while connections are on it, and lingers once the last one left (idle, for
//! [`linger`], as stock SMC keeps a link group), so that the next connection to the same peer
//! finds it set up; then it is torn down. A failed work request means the peer's end is gone:
//! every connection on the link fails, and the link goes with the last of them.
//!
//! A device that goes tells the peer of each of its links with an LLC DELETE LINK
//! ([`llc`]): the peer's end then fails at once, its queue pair flushed, rather than after
//! the transport's retries (its work requests in flight) or its linger (an idle link).

use crate::{
    connection::Connection,
    ffi::{
        ib::RoceGid,
        verbs::{
            Access, DmaBuffer, DmaDirection, Mr, PinnedMemory, PinnedPages, Qp, RemoteQp, Sge,
            WcStatus, WorkCompletion,
        },
        workqueue,
    },
    ib::Device,
    poller::{CompletionSink, SinkRegistration, CQ_ENTRIES},
    proto::{cdc, clc::PathMtu, llc, ring::Cursor},
};
use core::fmt;
use kernel::{
    new_mutex,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        new_condvar, new_spinlock_irq, Arc, ArcBorrow, CondVar, CondVarTimeoutResult, Mutex,
        SpinLockIrq,
    },
    time::{
        hrtimer::{
            ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer,
            HrTimerRestart, RelativeMode,
        },
        msecs_to_jiffies, Delta, Instant, Monotonic,
    },
    workqueue::{impl_has_work, new_work, Work, WorkItem},
};

/// Send work requests in flight on a link, shared by its connections.
const SQ_DEPTH: u32 = 256;
/// Receives kept posted for the peer's cursor messages.
const RQ_DEPTH: u32 = 64;
/// Bytes per cursor-message buffer slot: a message with the most inline data fits.
const CDC_SLOT: usize = 256;
const _: () = assert!(CDC_SLOT >= cdc::MAX_FRAME_LEN);
/// Cursor-message send slots: each message holds a send credit, so no more are in flight.
const CDC_SLOTS: usize = SQ_DEPTH as usize;
/// Links a device may have: all of their work requests fit its completion queue, which must
/// never overflow.
pub(crate) const MAX_LINKS: usize = (CQ_ENTRIES / (SQ_DEPTH + RQ_DEPTH)) as usize;
/// Send credits that wake connections waiting for them.
const CREDITS_TO_WAKE: u32 = SQ_DEPTH / 8;
/// How long a removed device's connections wait, together, for their aborts to leave, in
/// milliseconds.
const ABORT_WAIT_MS: u32 = 200;

/// How long an idle link stays for the next connection, in milliseconds: see [`linger`].
static LINGER_MS: Atomic<u32> = Atomic::new(60_000);

/// How long a link stays once its last connection left (debugfs `rsmc/link_linger_ms`);
/// zero tears it down at once.
pub(crate) fn linger() -> Delta {
    Delta::from_millis(LINGER_MS.load(Relaxed).into())
}

/// Sets [`linger`], in milliseconds, for links idle now too: those idle for longer already
/// go at once.
pub(crate) fn set_linger(ms: u32) {
    LINGER_MS.store(ms, Relaxed);
    crate::ib::for_each_link(|_, link| link.restart_linger());
}

/// A `wr_id`'s kind, in bits 44..48 (the poller keeps bits 0..48 for us).
const KIND_SHIFT: u32 = 44;
const WR_RECV: u64 = 1 << KIND_SHIFT;
const WR_SEND: u64 = 2 << KIND_SHIFT;
const WR_WRITE: u64 = 3 << KIND_SHIFT;
const WR_REG: u64 = 4 << KIND_SHIFT;
/// A message of the link itself (LLC), not of a connection.
const WR_LINK_SEND: u64 = 5 << KIND_SHIFT;
const KIND_MASK: u64 = 0xf << KIND_SHIFT;
/// A cursor message's send slot, in bits 32..44.
const SLOT_SHIFT: u32 = 32;
const SLOT_MASK: u64 = 0xfff;
/// The connection's token (or a receive slot), in bits 0..32.
const LOW_MASK: u64 = 0xffff_ffff;

/// What finished, as a connection on the link sees it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// An RDMA WRITE.
    Send,
    /// A cursor message, which announced the producer cursor `prod`.
    Cdc { prod: Cursor },
    /// The registration of the connection's receive ring.
    Registration,
}

/// This side of a link, for the handshake.
pub(crate) struct LinkEndpoint {
    pub(crate) gid: [u8; 16],
    pub(crate) mac: [u8; 6],
    pub(crate) mtu: PathMtu,
    pub(crate) qpn: u32,
    pub(crate) psn: u32,
}

/// The peer's end of a connected link, by which the server finds the link a client offers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerEnd {
    pub(crate) gid: [u8; 16],
    pub(crate) qpn: u32,
    pub(crate) psn: u32,
}

struct LinkState {
    /// Send work requests that may still be posted.
    sq_free: u32,
    /// Cursor-message send slots in use, one bit each.
    cdc_slots: [u64; CDC_SLOTS / 64],
    /// The connections on the link.
    conns: KVec<Arc<Connection>>,
    /// The last token handed out (the server's side hands them out).
    last_token: u32,
    /// The peer's end, once connected.
    peer: Option<PeerEnd>,
    /// Failed, or its end is near: no connection may join.
    dead: bool,
    /// Torn down (once).
    torn_down: bool,
    /// Since when the link has had no connection, while it lingers.
    idle_since: Option<Instant<Monotonic>>,
    /// A connection waits for send credits.
    credit_waiters: bool,
    /// Our DELETE LINK is in flight.
    delete_in_flight: bool,
    /// The peer deleted its end: the queue pair is to be flushed.
    flush_due: bool,
}

/// A link. See the module documentation.
#[pin_data]
pub(crate) struct Link {
    // Dropped first: the queue pair keeps every buffer it used mapped until it is destroyed.
    qp: Qp,
    cdc_rx: Arc<DmaBuffer>,
    cdc_tx: Arc<DmaBuffer>,
    lkey: u32,
    gid: RoceGid,
    psn: u32,
    #[pin]
    state: SpinLockIrq<LinkState>,
    /// Taken on teardown; holds the sink reference to this link (a cycle until then).
    #[pin]
    registration: Mutex<Option<SinkRegistration>>,
    /// The high bits of this link's `wr_id`s.
    wr_base: Atomic<u64>,
    /// Cursor messages for no connection on the link.
    dropped: Atomic<u64>,
    /// Keeps the device registered, and its NAPI enabled, while the queue pair lives.
    device: Arc<Device>,
    /// Our DELETE LINK completed.
    #[pin]
    delete_sent: CondVar,
    /// Ends the lingering of an idle link, with `work`.
    #[pin]
    linger_timer: HrTimer<Link>,
    /// What a link does in process context: [`Link::flush_if_peer_deleted`] and
    /// [`Link::end_if_done`].
    #[pin]
    work: Work<Link>,
    /// The running `linger_timer`, if any. Its handle holds a reference to the link (a cycle
    /// until teardown, which cancels it); the mutex orders cancelling and restarting it.
    #[pin]
    linger_handle: Mutex<Option<ArcHrTimerHandle<Link>>>,
}

impl_has_work! {
    impl HasWork<Self> for Link { self.work }
}

kernel::impl_has_hr_timer! {
    impl HasHrTimer<Self> for Link {
        mode: RelativeMode<Monotonic>, field: self.linger_timer
    }
}

impl Link {
    /// A new link on `device` (whose port has `gid`), its queue pair in INIT with receives
    /// posted, listed on the device; it goes after its last connection left (see [`linger`]),
    /// or with [`Link::discard`] if none ever joined.
    pub(crate) fn new(device: Arc<Device>, gid: RoceGid) -> Result<Arc<Self>> {
        // Checked again, under the device's lock, when the link is listed. An idle link makes
        // way for a new one.
        if device.links() >= MAX_LINKS && !device.end_an_idle_link() {
            return Err(EBUSY);
        }
        let dev = device.registered();
        let cq = device.poller().cq();
        let qp = Qp::new(device.pd(), cq, cq, SQ_DEPTH, RQ_DEPTH)?;
        let cdc_rx = DmaBuffer::new(dev, RQ_DEPTH as usize * CDC_SLOT, DmaDirection::FromDevice)?;
        let cdc_tx = DmaBuffer::new(dev, CDC_SLOTS * CDC_SLOT, DmaDirection::ToDevice)?;
        qp.attach(cdc_rx.clone())?;
        qp.attach(cdc_tx.clone())?;
        qp.modify_to_init(gid.port, Access::LOCAL_WRITE | Access::REMOTE_WRITE)?;
        let lkey = device.pd().local_dma_lkey();
        let poller = device.poller().clone();
        let link = Arc::pin_init(
            try_pin_init!(Self {
                qp,
                cdc_rx,
                cdc_tx,
                lkey,
                gid,
                psn: crate::ffi::random_u32() & 0xff_ffff,
                state <- new_spinlock_irq!(LinkState {
                    sq_free: SQ_DEPTH,
                    cdc_slots: [0; CDC_SLOTS / 64],
                    conns: KVec::new(),
                    last_token: 0,
                    peer: None,
                    dead: false,
                    torn_down: false,
                    idle_since: None,
                    credit_waiters: false,
                    delete_in_flight: false,
                    flush_due: false,
                }),
                registration <- new_mutex!(None),
                wr_base: Atomic::new(0),
                dropped: Atomic::new(0),
                device,
                delete_sent <- new_condvar!("Link::delete_sent"),
                linger_timer <- HrTimer::new(),
                work <- new_work!("Link::work"),
                linger_handle <- new_mutex!(None),
            }? Error),
            GFP_KERNEL,
        )?;
        let registration = poller.register_sink(link.clone())?;
        link.wr_base.store(registration.wr_id(0), Relaxed);
        *link.registration.lock() = Some(registration);
        let started = (0..RQ_DEPTH)
            .try_for_each(|slot| link.post_recv(slot))
            .and_then(|()| link.device.list_link(link.clone()));
        if let Err(err) = started {
            link.discard();
            return Err(err);
        }
        Ok(link)
    }

    /// This side, for the handshake.
    pub(crate) fn endpoint(&self) -> Result<LinkEndpoint> {
        Ok(LinkEndpoint {
            gid: self.gid.gid,
            mac: self.gid.mac,
            mtu: self.device.registered().active_mtu(self.gid.port)?,
            qpn: self.qp.qp_num(),
            psn: self.psn,
        })
    }

    /// The device the link is on.
    pub(crate) fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The peer's end, once connected and while the link is usable.
    pub(crate) fn live_peer(&self) -> Option<PeerEnd> {
        let state = self.state.lock();
        state.peer.filter(|_| !state.dead)
    }

    /// Connects the queue pair to the peer's (`mtu`: the peer's path MTU).
    pub(crate) fn connect(&self, peer: &RemoteQp, mtu: PathMtu) -> Result {
        let mtu = mtu.path_with(self.device.registered().active_mtu(self.gid.port)?);
        self.qp
            .modify_to_rtr(self.gid.port, self.gid.index, peer, mtu)?;
        self.qp.modify_to_rts(self.psn)?;
        self.state.lock().peer = Some(PeerEnd {
            gid: peer.gid,
            qpn: peer.qpn,
            psn: peer.psn,
        });
        Ok(())
    }

    /// Puts `conn` on the link; fails with `ENOLINK` once the link is dead.
    pub(crate) fn join(&self, conn: Arc<Connection>) -> Result {
        let mut state = self.state.lock();
        if state.dead {
            return Err(ENOLINK);
        }
        state.conns.push(conn, GFP_ATOMIC)?;
        state.idle_since = None;
        Ok(())
    }

    /// No connection may join any more (the peer no longer has its end); the link goes when
    /// its last connection leaves.
    pub(crate) fn retire(&self) {
        self.state.lock().dead = true;
    }

    /// A token no connection on the link has (the server's side hands them out).
    pub(crate) fn new_token(&self) -> u32 {
        let mut state = self.state.lock();
        loop {
            state.last_token = state.last_token.wrapping_add(1);
            let token = state.last_token;
            if token != 0 && !state.conns.iter().any(|conn| conn.token() == token) {
                return token;
            }
        }
    }

    /// Whether a connection on the link other than `conn` has `token`.
    pub(crate) fn token_taken(&self, token: u32, conn: &Connection) -> bool {
        self.state
            .lock()
            .conns
            .iter()
            .any(|other| other.token() == token && !core::ptr::eq(&**other, conn))
    }

    /// Takes `conn` off the link and waits until no poll still uses it. If it was the last,
    /// the link lingers (see [`linger`]), or goes now if it is dead or lingering is off.
    /// Process context.
    pub(crate) fn leave(self: &Arc<Self>, conn: &Connection) {
        let (last, dead) = {
            let mut state = self.state.lock();
            state.conns.retain(|listed| !core::ptr::eq(&**listed, conn));
            // Decided under the lock that `join` takes: a connection joining now must not
            // land on a link about to be torn down.
            let last = state.conns.is_empty();
            if last {
                state.dead |= linger().is_zero();
                state.idle_since = Some(Instant::now());
            }
            (last, state.dead)
        };
        // A completion handler may hold its own reference to the connection: let it finish,
        // so that the last reference goes in process context.
        self.device.poller().synchronize();
        match (last, dead) {
            (true, true) => self.teardown(),
            (true, false) => self.restart_linger(),
            (false, _) => (),
        }
    }

    /// (Re)starts the linger timer of an idle link to fire once it lingered for all of
    /// [`linger`].
    ///
    /// [`linger`] is read under the timer's lock: a change of it that races with the last
    /// connection leaving is not undone by the value that `leave` saw.
    fn restart_linger(self: &Arc<Self>) {
        let mut handle = self.linger_handle.lock();
        // Cancelled before the timer is started again: a handle's drop cancels the timer.
        drop(handle.take());
        let idle_since = {
            let state = self.state.lock();
            state.idle_since.filter(|_| !state.torn_down)
        };
        if let Some(since) = idle_since {
            let left = linger().as_nanos() - since.elapsed().as_nanos();
            *handle = Some(self.clone().start(Delta::from_nanos(left.max(0))));
        }
    }

    /// An idle link goes once it lingered for all of [`linger`], or at once if it failed.
    /// Process context.
    fn end_if_done(&self) {
        let end = {
            let mut state = self.state.lock();
            let done = state.dead
                || state
                    .idle_since
                    .is_some_and(|since| since.elapsed() >= linger());
            let end = state.conns.is_empty() && state.idle_since.is_some() && done;
            state.dead |= end;
            end
        };
        if end {
            self.teardown();
        }
    }

    /// Tears the link down if it is idle; whether it was.
    pub(crate) fn end_if_idle(&self) -> bool {
        let idle = {
            let mut state = self.state.lock();
            let idle = state.conns.is_empty() && state.idle_since.is_some() && !state.dead;
            state.dead |= idle;
            idle
        };
        if idle {
            self.teardown();
        }
        idle
    }

    /// Tears down a link no connection joined (or, on error, one that lost its last).
    pub(crate) fn discard(&self) {
        self.teardown();
    }

    fn teardown(&self) {
        {
            let mut state = self.state.lock();
            state.dead = true;
            if core::mem::replace(&mut state.torn_down, true) {
                return;
            }
        }
        self.device.unlist_link(self);
        // Waits for a poll that may still be handing us a completion; drops the poller's
        // reference to the link.
        drop(self.registration.lock().take());
        // Cancels the linger timer, dropping its reference to the link.
        drop(self.linger_handle.lock().take());
    }

    /// Takes `n` send credits; without them, notes that a connection waits (it gets
    /// [`Connection::credits_available`]).
    pub(crate) fn take_credits(&self, n: u32) -> bool {
        let mut state = self.state.lock();
        if state.sq_free >= n {
            state.sq_free -= n;
            true
        } else {
            state.credit_waiters = true;
            false
        }
    }

    /// Whether `n` send credits are free now.
    pub(crate) fn has_credits(&self, n: u32) -> bool {
        self.state.lock().sq_free >= n
    }

    /// Gives back `n` credits taken and not used.
    pub(crate) fn return_credits(&self, n: u32) {
        self.credits_back(n);
    }

    /// Lets the queue pair use `buf` (a connection's send buffer).
    pub(crate) fn attach(&self, buf: Arc<DmaBuffer>) -> Result {
        self.qp.attach(buf)
    }

    /// Releases a connection's send buffer and receive ring from the queue pair.
    ///
    /// # Safety
    ///
    /// None of the connection's work requests may be outstanding.
    pub(crate) unsafe fn detach(&self, buf: Option<&Arc<DmaBuffer>>, ring: &Arc<Mr>) {
        // SAFETY: The caller's promise covers both.
        unsafe {
            if let Some(buf) = buf {
                self.qp.detach_buffer(buf);
            }
            self.qp.detach_mr(ring);
        }
    }

    fn wr_id(&self, kind: u64, slot: u64, low: u32) -> u64 {
        self.wr_base.load(Relaxed) | kind | ((slot & SLOT_MASK) << SLOT_SHIFT) | u64::from(low)
    }

    fn post_recv(&self, slot: u32) -> Result {
        let sge = self
            .cdc_rx
            .sge(slot as usize * CDC_SLOT, CDC_SLOT, self.lkey)?;
        self.qp.post_recv(self.wr_id(WR_RECV, 0, slot), &sge)
    }

    /// Registers `ring` for the peer's writes, with a credit the caller took; the connection
    /// with `token` gets [`Finished::Registration`].
    pub(crate) fn post_registration(&self, token: u32, ring: &Arc<Mr>) -> Result {
        self.qp.post_reg_mr(
            self.wr_id(WR_REG, 0, token),
            ring,
            Access::LOCAL_WRITE | Access::REMOTE_WRITE,
        )
    }

    /// RDMA-writes `local` to `remote_addr` of the peer's region `rkey`, with a credit the
    /// caller took.
    pub(crate) fn post_write(
        &self,
        token: u32,
        local: &Sge<'_>,
        remote_addr: u64,
        rkey: u32,
    ) -> Result {
        self.qp.post_rdma_write(
            self.wr_id(WR_WRITE, 0, token),
            local,
            remote_addr,
            rkey,
            true,
        )
    }

    /// Lets the queue pair read `memory` (a zerocopy send's pinned pages) until
    /// [`Link::detach_pinned`].
    pub(crate) fn attach_pinned(&self, memory: Arc<dyn PinnedMemory>) -> Result {
        self.qp.attach_pinned(memory)
    }

    /// Takes back the pinned pages `pages` from the queue pair.
    ///
    /// # Safety
    ///
    /// None of the work requests that read `pages` may be outstanding.
    pub(crate) unsafe fn detach_pinned(&self, pages: &PinnedPages) {
        // SAFETY: The caller's promise.
        unsafe { self.qp.detach_pinned(pages) };
    }

    /// RDMA-writes bytes `offset..offset + len` of `pages` (attached with
    /// [`Link::attach_pinned`]) to `remote_addr` of the peer's region `rkey`, with a credit the
    /// caller took.
    pub(crate) fn post_write_pinned(
        &self,
        token: u32,
        pages: &PinnedPages,
        (offset, len): (usize, usize),
        remote_addr: u64,
        rkey: u32,
    ) -> Result {
        self.qp.post_rdma_write_pinned(
            self.wr_id(WR_WRITE, 0, token),
            pages,
            offset,
            len,
            self.lkey,
            remote_addr,
            rkey,
            true,
        )
    }

    /// Sends the cursor message `msg` with the inline `data`, with a credit the caller took.
    pub(crate) fn post_cdc(&self, token: u32, msg: &cdc::Message, data: &[u8]) -> Result {
        let mut bytes = [0u8; cdc::MAX_FRAME_LEN];
        let len = cdc::encode(msg, data, &mut bytes).map_err(|_| EINVAL)?;
        self.post_message(WR_SEND, token, &bytes[..len])
    }

    /// Tells the peer that this end of the link goes, with a DELETE LINK: see the module
    /// documentation. Best effort: without a free send credit, or before the link connected,
    /// nothing is sent. Whether it was posted.
    fn post_delete_link(&self) -> bool {
        {
            let mut state = self.state.lock();
            if state.peer.is_none() || state.sq_free == 0 {
                return false;
            }
            state.sq_free -= 1;
            state.delete_in_flight = true;
        }
        let msg = llc::DeleteLink {
            all: true,
            orderly: false,
            link_num: 0,
            reason: llc::Reason::OP_INIT_TERM,
        };
        let mut bytes = [0u8; llc::MSG_LEN];
        let posted = llc::encode_delete_link(&msg, &mut bytes)
            .map_err(|_| EINVAL)
            .and_then(|len| self.post_message(WR_LINK_SEND, 0, &bytes[..len]));
        if posted.is_err() {
            self.state.lock().delete_in_flight = false;
            self.credits_back(1);
        }
        posted.is_ok()
    }

    /// Sends `bytes` from a free message slot, as a work request of `kind` for `token`, with a
    /// credit the caller took.
    fn post_message(&self, kind: u64, token: u32, bytes: &[u8]) -> Result {
        let len = bytes.len();
        let slot = {
            let mut state = self.state.lock();
            let (word, bit) = state
                .cdc_slots
                .iter()
                .enumerate()
                .find_map(|(i, used)| (*used != u64::MAX).then(|| (i, used.trailing_ones())))
                .ok_or(EBUSY)?;
            state.cdc_slots[word] |= 1 << bit;
            word * 64 + bit as usize
        };
        let offset = slot * CDC_SLOT;
        let posted = self.cdc_tx.write(offset, bytes).and_then(|()| {
            let sge = self.cdc_tx.sge(offset, len, self.lkey)?;
            self.qp
                .post_send(self.wr_id(kind, slot as u64, token), &sge, true)
        });
        if posted.is_err() {
            self.free_slot(slot);
        }
        posted
    }

    /// The cursor message in send slot `slot`, read back once its send completed.
    fn sent_cdc(&self, slot: usize) -> Option<cdc::Message> {
        let mut bytes = [0u8; cdc::MSG_LEN];
        self.cdc_tx.read(slot * CDC_SLOT, &mut bytes).ok()?;
        cdc::decode_header(&bytes).ok()
    }

    fn free_slot(&self, slot: usize) {
        self.state.lock().cdc_slots[slot / 64] &= !(1 << (slot % 64));
    }

    /// Waits up to `wait_ms` milliseconds for our DELETE LINK to complete.
    fn wait_delete_sent(&self, wait_ms: u32) {
        let mut state = self.state.lock();
        let mut left = msecs_to_jiffies(wait_ms);
        while state.delete_in_flight {
            match self
                .delete_sent
                .wait_interruptible_timeout(&mut state, left)
            {
                CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                CondVarTimeoutResult::Timeout | CondVarTimeoutResult::Signal { .. } => return,
            }
        }
    }

    /// The peer deleted its end of the link (its device went): the link fails, and the work
    /// item flushes the queue pair, so that what is in flight completes now rather than after
    /// the transport's retries, and ends the link once no connection is left on it.
    fn peer_deleted(this: ArcBorrow<'_, Self>) {
        this.state.lock().flush_due = true;
        this.fail(ECONNRESET);
        // Already queued is fine: it flushes once it runs.
        let _ = workqueue::queue().enqueue(Arc::from(this));
    }

    /// Flushes the queue pair if the peer deleted its end (see [`Link::peer_deleted`]).
    /// Process context.
    fn flush_if_peer_deleted(&self) {
        let flush = core::mem::take(&mut self.state.lock().flush_due);
        // A failure leaves the queue pair as it was: its work requests then complete after
        // the transport's retries.
        if flush {
            let _ = self.qp.modify_to_error();
        }
    }

    /// The connection with `token`, if it is on the link.
    fn conn(&self, token: u32) -> Option<Arc<Connection>> {
        self.state
            .lock()
            .conns
            .iter()
            .find(|conn| conn.token() == token)
            .cloned()
    }

    fn credits_back(&self, n: u32) {
        let wake = {
            let mut state = self.state.lock();
            state.sq_free += n;
            let wake = state.credit_waiters && state.sq_free >= CREDITS_TO_WAKE;
            if wake {
                state.credit_waiters = false;
            }
            wake
        };
        if wake {
            self.for_each_conn(|conn| conn.credits_available());
        }
    }

    /// Calls `f` for every connection on the link, unlocked (it may take the link's lock).
    ///
    /// Needs no memory, as it runs in completion handlers: it takes the connections one at a
    /// time, from the end of the list. One that leaves meanwhile moves those after it down, so
    /// `f` may see one of them twice (it must not mind), but it sees every one that stays. One
    /// that joins meanwhile may be missed.
    ///
    /// From a completion handler or process context only: the references taken here must not
    /// be the last ones in any other context (see [`Link::leave`]).
    fn for_each_conn(&self, mut f: impl FnMut(&Arc<Connection>)) {
        let mut next = self.state.lock().conns.len();
        while next > 0 {
            next -= 1;
            // Taken out first: the guard of an `if let` scrutinee lives through its block.
            let conn = self.state.lock().conns.get(next).cloned();
            if let Some(conn) = conn {
                f(&conn);
            }
        }
    }

    /// The connections on the link now, each once. Process context.
    fn conns(&self) -> Result<KVec<Arc<Connection>>> {
        loop {
            let len = self.state.lock().conns.len();
            let mut conns = KVec::with_capacity(len, GFP_KERNEL)?;
            let state = self.state.lock();
            // Else some joined meanwhile: the copy below must fit in what was reserved.
            if state.conns.len() <= len {
                conns.extend_from_slice(&state.conns, GFP_NOWAIT)?;
                return Ok(conns);
            }
        }
    }

    /// The peer's end is gone: every connection on the link fails. Returns whether the link
    /// was alive until now.
    fn fail(&self, err: Error) -> bool {
        let was_alive = {
            let mut state = self.state.lock();
            if state.dead && state.conns.is_empty() {
                return false;
            }
            !core::mem::replace(&mut state.dead, true)
        };
        self.for_each_conn(|conn| conn.link_failed(err));
        was_alive
    }

    /// A work request failed: the link fails; the first failure is logged (those after it
    /// are the queue pair's flush).
    fn work_failed(&self, wc: &WorkCompletion) {
        if self.fail(ECONNRESET) {
            pr_warn!(
                "link failed: work request {:#x}: {}\n",
                wc.wr_id(),
                wc.status()
            );
        }
    }

    /// The device is going away, first step: every connection on the link aborts, and the
    /// peer is told that the link goes. Then [`Link::device_removed`]. Process context.
    pub(crate) fn device_removing(&self) {
        self.state.lock().dead = true;
        self.for_each_conn(|conn| conn.device_removed());
        self.post_delete_link();
    }

    /// The device is going away, last step after [`Link::device_removing`], which the links
    /// of the device took since `start`: every connection on the link ends (each leaves, the
    /// last tears the link down). Process context.
    ///
    /// The aborts and the DELETE LINK of all links share one bounded wait: rxe closes its UDP
    /// sockets before its clients are removed, so no acknowledgement comes back and waiting
    /// out the transport retries per connection took seconds each. Moving the queue pair to
    /// the error state then flushes what is still outstanding.
    pub(crate) fn device_removed(self: &Arc<Self>, start: Instant<Monotonic>) {
        let left = || {
            let waited = u32::try_from(start.elapsed().as_millis()).unwrap_or(u32::MAX);
            ABORT_WAIT_MS.saturating_sub(waited)
        };
        self.for_each_conn(|conn| {
            conn.wait_idle(left());
        });
        self.wait_delete_sent(left());
        // A failure leaves the queue pair as it was: the releases below then wait for the
        // retries instead.
        let _ = self.qp.modify_to_error();
        while let Some(conn) = self.first_conn() {
            conn.release();
            // Whatever happened inside, the connection must be off the link now.
            self.leave(&conn);
        }
        // A link that had no connection lingered.
        self.teardown();
    }

    /// A connection on the link, if any. The lock is dropped on return, so that the caller
    /// may take it again (the guard of a `while let` scrutinee would live through the body).
    fn first_conn(&self) -> Option<Arc<Connection>> {
        self.state.lock().conns.first().cloned()
    }

    /// A message from the peer arrived in receive slot `slot`: a cursor message for one of
    /// the connections, or the peer's DELETE LINK.
    fn received(this: ArcBorrow<'_, Self>, wc: &WorkCompletion, slot: u32) {
        if wc.status() != WcStatus::SUCCESS {
            this.work_failed(wc);
            return;
        }
        let mut bytes = [0u8; cdc::MAX_FRAME_LEN];
        let offset = slot as usize * CDC_SLOT;
        let frame = match bytes.get_mut(..wc.byte_len() as usize) {
            Some(frame) => this.cdc_rx.read(offset, frame).map(|()| &*frame),
            None => Err(EMSGSIZE),
        };
        if let Err(err) = this.post_recv(slot) {
            this.fail(err);
            return;
        }
        let Ok(frame) = frame else {
            this.dropped.add(1, Relaxed);
            return;
        };
        if frame.first() == Some(&llc::DELETE_LINK) {
            match llc::decode_delete_link(frame) {
                Ok(_) => Self::peer_deleted(this),
                Err(_) => {
                    this.dropped.add(1, Relaxed);
                }
            }
            return;
        }
        let msg = cdc::decode(frame).ok();
        match msg.and_then(|(msg, data)| Some((this.conn(msg.token)?, msg, data))) {
            Some((conn, msg, data)) => conn.cdc_received(&msg, data),
            None => {
                this.dropped.add(1, Relaxed);
            }
        }
    }

    /// A send work request completed: its credit comes back; a failure fails the link.
    fn send_done(&self, wc: &WorkCompletion) {
        self.credits_back(1);
        if wc.status() != WcStatus::SUCCESS {
            self.work_failed(wc);
        }
    }

    /// Cursor messages dropped for want of a connection.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Send work requests posted and not completed yet.
    pub(crate) fn sends_in_flight(&self) -> u32 {
        SQ_DEPTH - self.state.lock().sq_free
    }

    /// How many connections are on the link.
    pub(crate) fn connections(&self) -> usize {
        self.state.lock().conns.len()
    }

    /// Writes a debugfs `connections` line for each connection on the link: `<device> qpn
    /// <our queue pair> ` and the connection's part (see [`Connection::show`]). Process context.
    pub(crate) fn show_connections(&self, f: &mut fmt::Formatter<'_>, device: &str) -> fmt::Result {
        // A snapshot, so that a connection that leaves meanwhile is not listed twice.
        let conns = self.conns().map_err(|_| fmt::Error)?;
        for conn in conns.iter() {
            write!(f, "{device} qpn {} ", self.qp.qp_num())?;
            conn.show(f)?;
            writeln!(f)?;
        }
        Ok(())
    }
}

impl CompletionSink for Link {
    fn complete(self: ArcBorrow<'_, Self>, wc: &WorkCompletion) {
        let id = wc.wr_id();
        // CAST: Masked to 32 bits.
        let low = (id & LOW_MASK) as u32;
        // CAST: Masked to 12 bits.
        let slot = ((id >> SLOT_SHIFT) & SLOT_MASK) as usize;
        let finished = match id & KIND_MASK {
            WR_RECV => return Self::received(self, wc, low),
            WR_SEND => {
                let sent = self.sent_cdc(slot);
                self.free_slot(slot);
                sent.map_or(Finished::Send, |msg| Finished::Cdc { prod: msg.prod })
            }
            WR_LINK_SEND => {
                self.free_slot(slot);
                self.state.lock().delete_in_flight = false;
                self.delete_sent.notify_all();
                return self.send_done(wc);
            }
            WR_WRITE => Finished::Send,
            WR_REG => Finished::Registration,
            _ => return,
        };
        if let Some(conn) = self.conn(low) {
            conn.work_finished(&self, finished, wc.status() == WcStatus::SUCCESS);
        }
        self.send_done(wc);
    }
}

impl WorkItem for Link {
    type Pointer = Arc<Link>;

    fn run(this: Arc<Link>) {
        this.flush_if_peer_deleted();
        this.end_if_done();
    }
}

impl HrTimerCallback for Link {
    type Pointer<'a> = Arc<Link>;

    /// `linger_timer` fired: the teardown sleeps, so it runs in a work item.
    fn run(this: ArcBorrow<'_, Self>, _ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        let _ = workqueue::queue().enqueue(Arc::from(this));
        HrTimerRestart::NoRestart
    }
}
