// SPDX-License-Identifier: GPL-2.0

//! One `AF_SMC` connection over RDMA: its queue pair (the link), receive ring and send buffer,
//! and the data path (net/smc's smc_core buffers, smc_wr, smc_cdc, smc_tx, smc_rx and
//! smc_close in one place).
//!
//! The sender copies user data into its send buffer at the offsets the bytes get in the peer's
//! receive ring, RDMA-WRITEs them there, then SENDs a CDC message with its new producer cursor.
//! An RC queue pair places an RDMA WRITE before a SEND posted after it, so when the message
//! arrives the bytes it announces are in the ring. SEND rather than WRITE_WITH_IMM: a cursor
//! message carries a token, two cursors and flags (44 bytes, stock SMC's CDC format), more than
//! the 32 bits of immediate data. The receiver reports its consumer cursor the same way when
//! [`Conn::cons_update_due`] says so.
//!
//! Flow control, cursors and shutdown flags are [`Conn`]'s (the pure core); this file moves
//! bytes and turns its answers into work requests and wakeups.
//!
//! Completions arrive through the device's NAPI poll ([`CompletionSink`]); everything they
//! touch is behind IRQ-safe spinlocks, and copies to and from user memory happen unlocked,
//! serialised per direction by `tx_lock` and `rx_lock` (the socket lock's role).

use crate::{
    ffi::{
        ib::RoceGid,
        kernel_socket::{HookedEvent, KernelSocket, MsgHdr, SockEvents, SockHook},
        sock::Sock,
        verbs::{Access, DmaBuffer, DmaDirection, Mr, Qp, RemoteQp, WcStatus, WorkCompletion},
    },
    ib::Device,
    poller::{CompletionSink, SinkRegistration},
    proto::{
        cdc,
        clc::PathMtu,
        conn::{Changes, Conn},
        ring::{RingSize, Segments},
    },
};
use kernel::{
    ffi::c_long,
    new_mutex,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        new_spinlock_irq, Arc, ArcBorrow, Mutex, SetOnce, SpinLockIrq,
    },
    time::{delay::fsleep, Delta, Instant, Monotonic},
};

/// Send work requests a connection may have in flight.
const SQ_DEPTH: u32 = 32;
/// Receives kept posted for the peer's CDC messages.
const RQ_DEPTH: u32 = 16;
/// Bytes per CDC message buffer slot.
const CDC_SLOT: usize = 64;
/// Send work requests one send step needs: two RDMA WRITEs (the bytes may wrap around the end
/// of the ring) and the SEND of the cursor message.
const WRS_PER_SEND: u32 = 3;
/// How long the registration of the receive ring may take.
const REGISTER_TIMEOUT: Delta = Delta::from_secs(5);
/// How long closing waits for the last cursor message to leave.
const CLOSE_TIMEOUT: Delta = Delta::from_secs(1);

/// The kind of a work request, in bits 40..44 of its `wr_id`; the bits below are a slot index.
const WR_KIND_SHIFT: u32 = 40;
const WR_RECV: u64 = 1 << WR_KIND_SHIFT;
const WR_SEND: u64 = 2 << WR_KIND_SHIFT;
const WR_WRITE: u64 = 3 << WR_KIND_SHIFT;
const WR_REG: u64 = 4 << WR_KIND_SHIFT;
const WR_KIND_MASK: u64 = 0xf << WR_KIND_SHIFT;
const WR_INDEX_MASK: u64 = (1 << WR_KIND_SHIFT) - 1;

/// `MSG_DONTWAIT`.
const MSG_DONTWAIT: i32 = 0x40;
/// `MSG_PEEK`.
const MSG_PEEK: i32 = 0x2;
/// `MSG_WAITALL`.
const MSG_WAITALL: i32 = 0x100;
/// `MSG_OOB`.
const MSG_OOB: i32 = 0x1;

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

/// What this side tells the peer in the handshake about its end of the link.
pub(crate) struct LocalEndpoint {
    pub(crate) gid: [u8; 16],
    pub(crate) mac: [u8; 6],
    pub(crate) mtu: PathMtu,
    pub(crate) qpn: u32,
    pub(crate) psn: u32,
    pub(crate) rkey: u32,
    pub(crate) ring_addr: u64,
    pub(crate) ring_size: RingSize,
}

/// What the peer told us about its end of the link.
pub(crate) struct PeerEndpoint {
    pub(crate) qp: RemoteQp,
    pub(crate) mtu: PathMtu,
    pub(crate) rkey: u32,
    pub(crate) ring_addr: u64,
    pub(crate) ring_size: RingSize,
    pub(crate) token: u32,
}

/// What a connection holds on its RDMA device. Dropped in process context only (destroying
/// the queue pair sleeps), after the connection's completion sink is unregistered.
struct Link {
    // Dropped first: the queue pair keeps every buffer below mapped until it is destroyed.
    qp: Qp,
    /// Our receive ring, which the peer RDMA-writes.
    rx_ring: Arc<Mr>,
    /// The bytes we RDMA-write to the peer, at the offsets they get in its ring; allocated
    /// once the peer's ring size is known.
    tx_buf: SetOnce<Arc<DmaBuffer>>,
    cdc_rx: Arc<DmaBuffer>,
    cdc_tx: Arc<DmaBuffer>,
    lkey: u32,
    gid: RoceGid,
    psn: u32,
    /// Keeps the device registered, and its NAPI enabled, while the queue pair lives.
    device: Arc<Device>,
}

impl Link {
    fn new(device: Arc<Device>, gid: RoceGid, ring_size: RingSize) -> Result<Self> {
        let dev = device.registered();
        let cq = device.poller().cq();
        let qp = Qp::new(device.pd(), cq, cq, SQ_DEPTH, RQ_DEPTH)?;
        let ring = DmaBuffer::new(dev, ring_size.get() as usize, DmaDirection::FromDevice)?;
        let rx_ring = Mr::new(device.pd(), ring)?;
        let cdc_rx = DmaBuffer::new(dev, RQ_DEPTH as usize * CDC_SLOT, DmaDirection::FromDevice)?;
        let cdc_tx = DmaBuffer::new(dev, SQ_DEPTH as usize * CDC_SLOT, DmaDirection::ToDevice)?;
        qp.attach(cdc_rx.clone())?;
        qp.attach(cdc_tx.clone())?;
        qp.modify_to_init(gid.port, Access::LOCAL_WRITE | Access::REMOTE_WRITE)?;
        Ok(Self {
            qp,
            rx_ring,
            tx_buf: SetOnce::new(),
            cdc_rx,
            cdc_tx,
            lkey: device.pd().local_dma_lkey(),
            gid,
            psn: crate::ffi::random_u32() & 0xff_ffff,
            device,
        })
    }
}

/// The connection's state shared with its completion handler.
struct State {
    conn: Conn,
    /// Where the peer's receive ring is.
    peer_ring_addr: u64,
    peer_rkey: u32,
    /// Send work requests that may still be posted.
    sq_free: u32,
    /// The CDC send slot the next message uses.
    next_slot: u32,
    /// A cursor message is owed but the send queue was full: the next send completion sends it.
    cdc_owed: bool,
    /// The receive ring's registration completed.
    registered: bool,
    /// The connection failed: every further call reports this.
    error: Option<Error>,
    /// `shutdown(SHUT_RD)`.
    rd_shut: bool,
    /// Closing: errors of outstanding work requests are expected.
    closing: bool,
}

/// An RDMA connection.
#[pin_data]
pub(crate) struct Connection {
    #[pin]
    state: SpinLockIrq<State>,
    /// The device resources; taken away on close (or device removal).
    #[pin]
    link: SpinLockIrq<Option<Arc<Link>>>,
    #[pin]
    registration: Mutex<Option<SinkRegistration>>,
    /// The high bits of this connection's `wr_id`s (its completion sink).
    wr_base: Atomic<u64>,
    /// The socket to wake; set once the connection belongs to one.
    sk: SetOnce<ARef<Sock>>,
    /// Watches the handshake's TCP connection, which lives as long as this one: its reset
    /// (the peer's device went, or its keepalive failed) ends this connection too.
    tcp_watch: SetOnce<SockHook<Connection>>,
    /// One sender and one receiver at a time, as the socket lock gives TCP.
    #[pin]
    tx_lock: Mutex<()>,
    #[pin]
    rx_lock: Mutex<()>,
    rdma_tx_bytes: Atomic<u64>,
    rdma_rx_bytes: Atomic<u64>,
}

impl Connection {
    /// Sets up this side of a link on `device` (whose port has `gid`) with a receive ring of
    /// `ring_size` bytes: queue pair in INIT, receives posted, ring ready to register.
    pub(crate) fn new(device: Arc<Device>, gid: RoceGid, ring_size: RingSize) -> Result<Arc<Self>> {
        let poller = device.poller().clone();
        let new_link = Arc::new(Link::new(device, gid, ring_size)?, GFP_KERNEL)?;
        let installed = new_link.clone();
        // Placeholders until the handshake tells the peer's ring and the token.
        let conn = Conn::new(ring_size, ring_size, 1);
        let this = Arc::pin_init(
            try_pin_init!(Self {
                state <- new_spinlock_irq!(State {
                    conn,
                    peer_ring_addr: 0,
                    peer_rkey: 0,
                    sq_free: SQ_DEPTH,
                    next_slot: 0,
                    cdc_owed: false,
                    registered: false,
                    error: None,
                    rd_shut: false,
                    closing: false,
                }),
                link <- new_spinlock_irq!(Some(installed)),
                registration <- new_mutex!(None),
                wr_base: Atomic::new(0),
                sk: SetOnce::new(),
                tcp_watch: SetOnce::new(),
                tx_lock <- new_mutex!(()),
                rx_lock <- new_mutex!(()),
                rdma_tx_bytes: Atomic::new(0),
                rdma_rx_bytes: Atomic::new(0),
            }? Error),
            GFP_KERNEL,
        )?;
        let registration = poller.register_sink(this.clone())?;
        this.wr_base.store(registration.wr_id(0), Relaxed);
        *this.registration.lock() = Some(registration);
        let started = new_link
            .device
            .attach(this.clone())
            .and_then(|()| (0..RQ_DEPTH).try_for_each(|slot| this.post_recv(&new_link, slot)));
        if let Err(err) = started {
            this.abandon();
            return Err(err);
        }
        Ok(this)
    }

    /// What the peer needs to know about this side.
    pub(crate) fn local_endpoint(&self) -> Result<LocalEndpoint> {
        let link = self.link()?;
        let mtu = link.device.registered().active_mtu(link.gid.port)?;
        Ok(LocalEndpoint {
            gid: link.gid.gid,
            mac: link.gid.mac,
            mtu,
            qpn: link.qp.qp_num(),
            psn: link.psn,
            rkey: link.rx_ring.rkey(),
            ring_addr: link.rx_ring.addr(),
            ring_size: self.state.lock().conn.own_ring(),
        })
    }

    /// Connects the queue pair to the peer's, registers the receive ring and allocates the
    /// send buffer: from now on the peer may write to us and we to it.
    pub(crate) fn connect(&self, peer: &PeerEndpoint) -> Result {
        let link = self.link()?;
        let own_mtu = link.device.registered().active_mtu(link.gid.port)?;
        let mtu = if own_mtu.code() <= peer.mtu.code() {
            own_mtu
        } else {
            peer.mtu
        };
        link.qp
            .modify_to_rtr(link.gid.port, link.gid.index, &peer.qp, mtu)?;
        link.qp.modify_to_rts(link.psn)?;
        let tx_buf = DmaBuffer::new(
            link.device.registered(),
            peer.ring_size.get() as usize,
            DmaDirection::ToDevice,
        )?;
        link.qp.attach(tx_buf.clone())?;
        if !link.tx_buf.populate(tx_buf) {
            return Err(EINVAL);
        }
        {
            let mut state = self.state.lock();
            let own_ring = state.conn.own_ring();
            state.conn = Conn::new(own_ring, peer.ring_size, peer.token);
            state.peer_ring_addr = peer.ring_addr;
            state.peer_rkey = peer.rkey;
            state.sq_free -= 1;
        }
        link.qp.post_reg_mr(
            self.wr_id(WR_REG),
            &link.rx_ring,
            Access::LOCAL_WRITE | Access::REMOTE_WRITE,
        )?;
        let start = Instant::<Monotonic>::now();
        loop {
            {
                let state = self.state.lock();
                if let Some(err) = state.error {
                    return Err(err);
                }
                if state.registered {
                    return Ok(());
                }
            }
            if start.elapsed() > REGISTER_TIMEOUT {
                return Err(ETIMEDOUT);
            }
            fsleep(Delta::from_micros(100));
        }
    }

    /// Makes `sk` the socket this connection wakes.
    pub(crate) fn set_socket(&self, sk: ARef<Sock>) {
        self.sk.populate(sk);
    }

    /// Ties the connection to its handshake's TCP connection `clc` (see `tcp_watch`).
    pub(crate) fn watch_tcp(self: &Arc<Self>, clc: Arc<KernelSocket>) -> Result {
        let hook = SockHook::new(clc, HookedEvent::ErrorReport, self.clone())?;
        if !self.tcp_watch.populate(hook) {
            return Err(EBUSY);
        }
        // A connection abandoned meanwhile did not see the hook to undo it.
        if self.state.lock().closing {
            self.unwatch_tcp();
        }
        Ok(())
    }

    fn unwatch_tcp(&self) {
        if let Some(hook) = self.tcp_watch.as_ref() {
            hook.unhook();
        }
    }

    /// Payload bytes written to the peer and read from our ring.
    pub(crate) fn rdma_bytes(&self) -> (u64, u64) {
        (
            self.rdma_tx_bytes.load(Relaxed),
            self.rdma_rx_bytes.load(Relaxed),
        )
    }

    fn wr_id(&self, local: u64) -> u64 {
        self.wr_base.load(Relaxed) | local
    }

    fn link(&self) -> Result<Arc<Link>> {
        self.link.lock().clone().ok_or(ECONNRESET)
    }

    fn post_recv(&self, link: &Link, slot: u32) -> Result {
        let sge = link
            .cdc_rx
            .sge(slot as usize * CDC_SLOT, CDC_SLOT, link.lkey)?;
        link.qp
            .post_recv(self.wr_id(WR_RECV | u64::from(slot)), &sge)
    }

    /// Sends the next cursor message; `reserved` if the caller already took its send credit.
    fn send_cdc(&self, link: &Link, reserved: bool) -> Result {
        let (msg, slot) = {
            let mut state = self.state.lock();
            if !reserved {
                if state.sq_free == 0 {
                    state.cdc_owed = true;
                    return Ok(());
                }
                state.sq_free -= 1;
            }
            let slot = state.next_slot;
            state.next_slot = (slot + 1) % SQ_DEPTH;
            (state.conn.next_cdc(), slot)
        };
        let mut bytes = [0u8; cdc::MSG_LEN];
        cdc::encode(&msg, &mut bytes).map_err(|_| EINVAL)?;
        let offset = slot as usize * CDC_SLOT;
        link.cdc_tx.write(offset, &bytes)?;
        let sge = link.cdc_tx.sge(offset, cdc::MSG_LEN, link.lkey)?;
        link.qp
            .post_send(self.wr_id(WR_SEND | u64::from(slot)), &sge, true)
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
            state.error = Some(err);
        }
        if let Some(sk) = self.sk.as_ref() {
            sk.set_error(err);
            sk.state_change();
        }
    }

    fn wake(&self, wake: impl FnOnce(&Sock)) {
        if let Some(sk) = self.sk.as_ref() {
            wake(sk);
        }
    }

    fn received(&self, wc: &WorkCompletion, slot: u32) {
        if wc.status() != WcStatus::SUCCESS {
            self.fail(ECONNRESET);
            return;
        }
        let Ok(link) = self.link() else {
            return;
        };
        let mut bytes = [0u8; cdc::MSG_LEN];
        let read = link.cdc_rx.read(slot as usize * CDC_SLOT, &mut bytes);
        if let Err(err) = self.post_recv(&link, slot) {
            self.fail(err);
            return;
        }
        let msg = match (read, wc.byte_len() as usize == cdc::MSG_LEN) {
            (Ok(()), true) => cdc::decode(&bytes).map_err(|_| EPROTO),
            _ => Err(EPROTO),
        };
        let changes = msg.and_then(|msg| {
            self.state
                .lock()
                .conn
                .on_cdc(&msg)
                .map_err(|_| ECONNABORTED)
        });
        match changes {
            Ok(changes) => self.apply(&link, changes),
            Err(err) => {
                // A peer that breaks the protocol gets an abort, and we stop using the link.
                self.state.lock().conn.abort();
                let _ = self.send_cdc(&link, false);
                self.fail(err);
            }
        }
    }

    fn apply(&self, link: &Link, changes: Changes) {
        if changes.stale {
            return;
        }
        if changes.peer_aborted {
            self.fail(ECONNRESET);
            return;
        }
        if changes.cons_update_due {
            if let Err(err) = self.send_cdc(link, false) {
                self.fail(err);
            }
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

    fn sent(&self, wc: &WorkCompletion) {
        let (owed, wake) = {
            let mut state = self.state.lock();
            state.sq_free += 1;
            (
                core::mem::take(&mut state.cdc_owed),
                state.sq_free == WRS_PER_SEND || state.sq_free == SQ_DEPTH,
            )
        };
        if wc.status() != WcStatus::SUCCESS {
            self.fail(ECONNRESET);
            return;
        }
        if owed {
            self.notify_peer();
        }
        if wake {
            self.wake(Sock::write_space);
        }
    }

    /// `sendmsg`: copies into the send buffer and writes to the peer as its window allows.
    pub(crate) fn sendmsg(&self, sk: &Sock, msg: &mut MsgHdr, len: usize) -> Result<usize> {
        let _tx = self.tx_lock.lock();
        let flags = msg.flags();
        let mut timeo = sk.sndtimeo(flags & MSG_DONTWAIT != 0);
        let mut sent = 0usize;
        while sent < len {
            let want = u32::try_from(len - sent).unwrap_or(u32::MAX);
            let room = match self.send_room(want) {
                Ok(Some(room)) => room,
                Ok(None) => {
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
            match self.send_step(msg, room) {
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
            || (conn.writable() > 0 && state.sq_free >= WRS_PER_SEND)
    }

    /// How many of `want` bytes may be sent now, with the send credits for them reserved;
    /// `None` if none (the caller waits), an error if the connection cannot send any more.
    fn send_room(&self, want: u32) -> Result<Option<u32>> {
        let mut state = self.state.lock();
        if let Some(err) = state.error {
            return Err(err);
        }
        if state.conn.write_shut() || state.conn.peer_closed() || state.conn.peer_aborted() {
            return Err(EPIPE);
        }
        let room = state.conn.writable().min(want);
        state.conn.set_write_blocked(room < want);
        if room == 0 || state.sq_free < WRS_PER_SEND {
            return Ok(None);
        }
        state.sq_free -= WRS_PER_SEND;
        Ok(Some(room))
    }

    /// Copies up to `room` bytes of `msg` into the send buffer, writes them to the peer and
    /// announces them, with the credits [`Connection::send_room`] reserved; returns how many
    /// bytes were sent.
    fn send_step(&self, msg: &mut MsgHdr, room: u32) -> Result<usize> {
        let mut credits = WRS_PER_SEND;
        let sent = self.send_with_credits(msg, room, &mut credits);
        if credits > 0 {
            self.state.lock().sq_free += credits;
        }
        if let Err(err) = sent {
            self.fail(err);
        }
        sent
    }

    fn send_with_credits(&self, msg: &mut MsgHdr, room: u32, credits: &mut u32) -> Result<usize> {
        let link = self.link()?;
        let tx_buf = link.tx_buf.as_ref().ok_or(ENOTCONN)?;
        let segments = self.state.lock().conn.write_segments(room).ok_or(EINVAL)?;
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
            let segments = state.conn.write_segments(copied).ok_or(EINVAL)?;
            (segments, state.peer_ring_addr, state.peer_rkey)
        };
        for segment in segments.iter() {
            let sge = tx_buf.sge(segment.offset as usize, segment.len as usize, link.lkey)?;
            link.qp.post_rdma_write(
                self.wr_id(WR_WRITE | u64::from(segment.offset)),
                &sge,
                remote_base + u64::from(segment.offset),
                rkey,
                true,
            )?;
            *credits -= 1;
        }
        // The bytes are announced only now that their WRITEs are posted: a cursor message
        // sent meanwhile (e.g. a consumer update from the NAPI poll) goes after them.
        self.state.lock().conn.produce(copied);
        *credits -= 1;
        self.send_cdc(&link, true)?;
        self.rdma_tx_bytes.add(u64::from(copied), Relaxed);
        Ok(copied as usize)
    }

    /// `recvmsg`: copies from the receive ring, waiting as TCP does.
    pub(crate) fn recvmsg(
        &self,
        sk: &Sock,
        msg: &mut MsgHdr,
        len: usize,
        flags: i32,
    ) -> Result<usize> {
        if flags & MSG_OOB != 0 {
            return Err(EINVAL);
        }
        let _rx = self.rx_lock.lock();
        let peek = flags & MSG_PEEK != 0;
        let target = if flags & MSG_WAITALL != 0 && !peek {
            len
        } else {
            len.min(1)
        };
        let mut timeo: c_long = sk.rcvtimeo(flags & MSG_DONTWAIT != 0);
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
                    // of file.
                    return match sk.take_error() {
                        Some(err) if copied == 0 => Err(err),
                        _ => Ok(copied),
                    };
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
                let waited = sk.wait_until(&mut timeo, || {
                    let state = self.state.lock();
                    state.conn.readable() > 0
                        || state.error.is_some()
                        || state.conn.at_eof()
                        || state.rd_shut
                });
                match waited {
                    Ok(()) => continue,
                    Err(err) if copied == 0 => return Err(err),
                    Err(_) => break,
                }
            };
            let n = self.copy_out(msg, segments.ok_or(EINVAL)?)?;
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

    fn copy_out(&self, msg: &mut MsgHdr, segments: Segments) -> Result<u32> {
        let link = self.link()?;
        let ring = link.rx_ring.buffer();
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

    /// Readiness for `poll` (`EPOLL*` bits), as TCP reports it.
    pub(crate) fn poll_mask(&self) -> u32 {
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
        if conn.readable() > 0 {
            mask |= epoll::IN | epoll::RDNORM;
        }
        if conn.write_shut() || (conn.writable() > 0 && state.sq_free >= WRS_PER_SEND) {
            mask |= epoll::OUT | epoll::WRNORM;
        }
        mask
    }

    /// `shutdown(2)`: `read` and/or `write` side.
    pub(crate) fn shutdown(&self, read: bool, write: bool) -> Result {
        {
            let mut state = self.state.lock();
            if let Some(err) = state.error {
                return Err(err);
            }
            state.rd_shut |= read;
            if write {
                state.conn.shutdown_write();
            }
        }
        if write {
            let link = self.link()?;
            self.send_cdc(&link, false)?;
        }
        self.wake(Sock::state_change);
        Ok(())
    }

    /// Closes the connection: tells the peer (an abort if `abort` or unread data is left, as
    /// TCP sends a reset then), waits briefly for that to leave, and releases the link.
    pub(crate) fn close(&self, abort: bool) {
        let healthy = {
            let mut state = self.state.lock();
            if abort || state.conn.readable() > 0 {
                state.conn.abort();
            } else {
                state.conn.close();
            }
            state.closing = true;
            state.error.is_none()
        };
        if healthy {
            self.send_last_cdc();
        }
        self.abandon();
    }

    /// Sends the cursor message with the closing flags and waits briefly for it to leave.
    fn send_last_cdc(&self) {
        let Ok(link) = self.link() else {
            return;
        };
        if self.send_cdc(&link, false).is_ok() {
            let start = Instant::<Monotonic>::now();
            while self.state.lock().sq_free < SQ_DEPTH && start.elapsed() < CLOSE_TIMEOUT {
                fsleep(Delta::from_micros(100));
            }
        }
    }

    /// Releases the device resources without telling the peer (a handshake that failed, or the
    /// end of [`Connection::close`]): no completion reaches this connection afterwards.
    pub(crate) fn abandon(&self) {
        self.state.lock().closing = true;
        self.unwatch_tcp();
        let link = self.link.lock().take();
        // Waits for a poll that may still be handing us a completion.
        drop(self.registration.lock().take());
        if let Some(link) = link {
            link.device.detach(self);
        }
    }

    /// The device is going away: the connection fails (`ECONNABORTED`, as stock SMC's
    /// smc_conn_kill), aborts towards the peer (the device still works while its clients are
    /// removed) and releases the device.
    pub(crate) fn device_removed(&self) {
        self.fail(ECONNABORTED);
        let tell_peer = {
            let mut state = self.state.lock();
            let open = !state.closing;
            state.conn.abort();
            state.closing = true;
            open
        };
        if tell_peer {
            self.send_last_cdc();
        }
        // The message may not get out (rxe stops receiving acknowledgements before its
        // clients are removed): resetting the TCP connection tells the peer for sure.
        self.unwatch_tcp();
        if let Some(hook) = self.tcp_watch.as_ref() {
            hook.socket().abort(ECONNABORTED);
        }
        self.abandon();
    }
}

impl SockEvents for Connection {
    fn error_report(this: ArcBorrow<'_, Self>, err: Error) {
        this.fail(err);
    }
}

impl CompletionSink for Connection {
    fn complete(&self, wc: &WorkCompletion) {
        // CAST: Masked to the index bits, which hold a slot below `RQ_DEPTH`.
        let slot = (wc.wr_id() & WR_INDEX_MASK) as u32;
        match wc.wr_id() & WR_KIND_MASK {
            WR_RECV => self.received(wc, slot),
            WR_REG => {
                let ok = wc.status() == WcStatus::SUCCESS;
                {
                    let mut state = self.state.lock();
                    state.sq_free += 1;
                    state.registered = ok;
                }
                if !ok {
                    self.fail(ECONNRESET);
                }
            }
            _ => self.sent(wc),
        }
    }
}
