// SPDX-License-Identifier: GPL-2.0

//! Data-path state machine of one connection: flow control from the ring cursors, and the
//! shutdown, close and abort flags, without any I/O.
//!
//! Each side writes the peer's receive ring with RDMA WRITEs, from a local send buffer of the
//! same size laid out at the same offsets, and then tells the peer how far it got with a CDC
//! message ([`cdc::Message`]); a small write may instead travel inside that message
//! ([`Conn::next_cdc_inline`]), and the receiver places it ([`Changes::inline_at`]). The same
//! message reports how far this side has read its own receive ring, which is what lets the peer
//! write more. [`Conn`] keeps the four cursors involved and decides:
//!
//! - how much may be written ([`Conn::writable`]) and where ([`Conn::produce`]): never over bytes
//!   the peer has not reported consumed;
//! - how much may be read ([`Conn::readable`]) and where ([`Conn::read_segments`]): only bytes
//!   the peer has announced;
//! - when the consumer cursor must be reported ([`Conn::cons_update_due`]);
//! - what the next CDC message says ([`Conn::next_cdc`]) and what a received one changes
//!   ([`Conn::on_cdc`]).
//!
//! The caller does the copying, the RDMA WRITEs, the sending and the wakeups. Every received
//! message is validated before anything is applied, so a peer that sends garbage gets a
//! [`ConnError`] (the caller aborts the connection) and never makes this side write over unread
//! data or read bytes that were not written.
//!
//! Choices the protocol leaves open:
//!
//! - Sequence numbers of built messages start at 0 and wrap. A received message whose number is
//!   not newer ([`cdc::seq_newer`]) than the last accepted one is a duplicate or was overtaken; it
//!   is ignored entirely, which loses nothing as cursors are cumulative and the shutdown flags
//!   sticky. The first message is accepted whatever its number.
//! - The cursors from the peer are checked against what this side *told* it, not merely against
//!   the local state: its consumer cursor against the producer cursor this side announced (the
//!   peer cannot have consumed bytes it was never told about), its producer cursor against the
//!   consumer cursor this side reported (the peer cannot have been given room it was never told
//!   about). The latter also bounds [`Conn::unreported`] by the ring size.
//! - Once the peer shut down writing, its producer cursor must not move any more; a message that
//!   moves it is rejected with [`CursorError::TooFarAhead`].
//! - `peer_conn_closed` implies `peer_done_writing`; this side's [`Conn::close`] sends both.
//! - After the peer aborted, [`Conn::writable`] is 0, while [`Conn::readable`] keeps counting the
//!   bytes that arrived before the abort: whether readers still get them or only the error is for
//!   the caller to decide, from [`Conn::peer_aborted`]. A peer close, unlike an abort, does not
//!   zero [`Conn::writable`]; the caller reports the broken pipe from [`Conn::peer_closed`].
//! - The write-blocked flag is level-triggered: every message built while it is set carries it,
//!   until [`Conn::set_write_blocked`] clears it. On the receiving side the peer's
//!   `write_blocked` and `cons_update_requested` flags are those of its last accepted message.

use super::cdc::{self, Flags, Message};
use super::ring::{Cursor, CursorError, RingSize, Segments};

/// Why a CDC message from the peer was rejected: the connection must abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnError {
    /// The message carries another connection's token.
    WrongToken,
    /// The producer cursor for our receive ring is invalid.
    BadProducer(CursorError),
    /// The consumer cursor for the peer's ring (which we write) is invalid.
    BadConsumer(CursorError),
    /// The message carries more inline data than its producer cursor announces.
    InlineBeyondProducer,
}

/// What an accepted CDC message changed, for the caller to turn into wakeups.
///
/// A newly seen close or abort should wake writers as well as readers: writes then fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// More bytes to read, or end of file or abort newly visible to readers.
    pub readable: bool,
    /// The peer consumed: the send window grew.
    pub writable: bool,
    /// The peer newly shut down writing (or closed).
    pub peer_done_writing: bool,
    /// The peer newly closed.
    pub peer_closed: bool,
    /// The peer newly aborted.
    pub peer_aborted: bool,
    /// The message was old or a duplicate (its sequence number is not newer than the last
    /// accepted one) and was ignored entirely; every other field is false.
    pub stale: bool,
    /// A CDC message with our consumer cursor should be sent now (see
    /// [`Conn::cons_update_due`]), typically because the peer asks for it or is blocked.
    pub cons_update_due: bool,
    /// Where the message's inline data goes in our ring: the caller copies it there before
    /// readers can see the new producer cursor. `None` without inline data.
    pub inline_at: Option<Segments>,
}

/// Flow-control and shutdown state of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    /// Our receive ring, which the peer writes.
    own_ring: RingSize,
    /// The peer's receive ring, which we write.
    peer_ring: RingSize,
    /// Token of the connection, in every CDC message both ways.
    token: u32,
    /// How far we have written into the peer's ring.
    prod: Cursor,
    /// `prod` as of the last built message.
    announced: Cursor,
    /// How far the peer provably has our bytes: `prod` of the last of our messages it
    /// acknowledged (see [`Conn::on_acked`]), or its consumer cursor if that is further. Always
    /// between `peer_cons` and `prod`, so within one ring of both.
    acked: Cursor,
    /// The peer's last reported consumer cursor for its ring.
    peer_cons: Cursor,
    /// How far we have read our ring.
    cons: Cursor,
    /// `cons` as of the last built message.
    reported: Cursor,
    /// The peer's last reported producer cursor for our ring.
    peer_prod: Cursor,
    /// Sequence number of the next built message.
    next_seq: u16,
    /// Sequence number of the last accepted message, `None` before the first.
    last_seq: Option<u16>,
    /// Our flags: `write_blocked` as set by the caller, the shutdown flags sticky;
    /// `cons_update_requested` is never set.
    local: Flags,
    /// The peer's flags: `write_blocked` and `cons_update_requested` from its last accepted
    /// message, the shutdown flags sticky.
    peer: Flags,
}

/// Flags with none set, usable in constant context.
const NO_FLAGS: Flags = Flags {
    write_blocked: false,
    cons_update_requested: false,
    peer_done_writing: false,
    peer_conn_closed: false,
    peer_conn_abort: false,
};

impl Conn {
    /// Returns the state of a fresh connection.
    ///
    /// `own_ring`: size of our receive ring (the peer writes it); `peer_ring`: size of the peer's
    /// receive ring (we write it, from a local send buffer of the same size and offsets);
    /// `token`: the connection token both sides put in CDC messages (nonzero, or the messages
    /// built here do not encode).
    pub const fn new(own_ring: RingSize, peer_ring: RingSize, token: u32) -> Self {
        Self {
            own_ring,
            peer_ring,
            token,
            prod: Cursor::ZERO,
            announced: Cursor::ZERO,
            acked: Cursor::ZERO,
            peer_cons: Cursor::ZERO,
            cons: Cursor::ZERO,
            reported: Cursor::ZERO,
            peer_prod: Cursor::ZERO,
            next_seq: 0,
            last_seq: None,
            local: NO_FLAGS,
            peer: NO_FLAGS,
        }
    }

    /// Returns the connection token.
    pub const fn token(&self) -> u32 {
        self.token
    }

    /// Returns the size of our receive ring.
    pub const fn own_ring(&self) -> RingSize {
        self.own_ring
    }

    /// Returns the size of the peer's receive ring (and of our send buffer).
    pub const fn peer_ring(&self) -> RingSize {
        self.peer_ring
    }

    /// Returns the number of bytes that may be written into the peer's ring now; 0 after
    /// [`Conn::shutdown_write`], [`Conn::close`] or [`Conn::abort`], or once the peer aborted.
    pub fn writable(&self) -> u32 {
        if self.write_shut() || self.peer.peer_conn_abort {
            0
        } else {
            self.peer_ring.writable(self.prod, self.peer_cons)
        }
    }

    /// Returns where the next `len` bytes (1..=[`Conn::writable`]) go in the peer's ring, without
    /// reserving them: the writer copies them into its send buffer there first, then calls
    /// [`Conn::produce`] with what it copied. `None` if `len` is 0 or more than [`Conn::writable`].
    pub fn write_segments(&self, len: u32) -> Option<Segments> {
        if len == 0 || len > self.writable() {
            return None;
        }
        self.peer_ring.split(self.prod.count, len)
    }

    /// Reserves `len` bytes (1..=[`Conn::writable`]) at the producer cursor and advances it.
    ///
    /// Returns where the bytes go in the peer's ring (at the same offsets in the local send
    /// buffer), or `None`, changing nothing, if `len` is 0 or more than [`Conn::writable`].
    pub fn produce(&mut self, len: u32) -> Option<Segments> {
        if len == 0 || len > self.writable() {
            return None;
        }
        let segments = self.peer_ring.split(self.prod.count, len)?;
        self.prod = self.peer_ring.advance(self.prod, len);
        Some(segments)
    }

    /// Records whether the writer wanted to write more than the window allowed.
    ///
    /// Every message built while set (and before a shutdown) carries `write_blocked`, asking the
    /// peer to report its consumer cursor as soon as it consumed anything.
    pub fn set_write_blocked(&mut self, blocked: bool) {
        self.local.write_blocked = blocked;
    }

    /// Returns whether the writer is recorded as blocked (see [`Conn::set_write_blocked`]).
    pub const fn write_blocked(&self) -> bool {
        self.local.write_blocked
    }

    /// Returns the number of bytes produced but not yet announced in a CDC message
    /// ([`Conn::next_cdc`] announces them).
    pub fn unannounced(&self) -> u32 {
        self.peer_ring.diff(self.announced, self.prod).unwrap_or(0)
    }

    /// Records that the peer acknowledged one of our messages, which announced `prod`: the
    /// bytes before it (and the RDMA writes that carried them) reached the peer. A cursor
    /// behind the last one recorded, or past everything produced, changes nothing.
    pub fn on_acked(&mut self, prod: Cursor) {
        let ahead = self.peer_ring.diff(self.acked, prod);
        if ahead.is_some_and(|ahead| Some(ahead) <= self.peer_ring.diff(self.acked, self.prod)) {
            self.acked = prod;
        }
    }

    /// Returns the number of bytes produced that the peer has not acknowledged yet (see
    /// [`Conn::on_acked`]), TCP's `SIOCOUTQ`.
    pub fn unacked(&self) -> u32 {
        self.peer_ring.diff(self.acked, self.prod).unwrap_or(0)
    }

    /// Returns the number of bytes the peer announced that we have not consumed yet.
    pub fn readable(&self) -> u32 {
        self.own_ring.readable(self.cons, self.peer_prod)
    }

    /// Returns the segments of our ring holding `len` bytes starting `skip` bytes after the
    /// consumer cursor; `None` if `len` is 0 or `skip + len` exceeds [`Conn::readable`].
    pub fn read_segments(&self, skip: u32, len: u32) -> Option<Segments> {
        if len == 0 || skip.checked_add(len)? > self.readable() {
            return None;
        }
        let start = self.own_ring.advance(self.cons, skip);
        self.own_ring.split(start.count, len)
    }

    /// Marks `len` bytes consumed; returns false, changing nothing, if `len` exceeds
    /// [`Conn::readable`].
    pub fn consume(&mut self, len: u32) -> bool {
        if len > self.readable() {
            return false;
        }
        self.cons = self.own_ring.advance(self.cons, len);
        true
    }

    /// Returns the number of bytes consumed but not yet reported in a CDC message.
    pub fn unreported(&self) -> u32 {
        self.own_ring.diff(self.reported, self.cons).unwrap_or(0)
    }

    /// Returns whether a CDC message with our consumer cursor should be sent now.
    ///
    /// It should if bytes consumed but not reported reach a quarter of our ring; if the peer
    /// flagged `write_blocked` in its last message and they reach a sixteenth; or if it flagged
    /// `cons_update_requested` and anything was consumed since our last report.
    ///
    /// The sixteenth keeps a blocked writer from being fed the window a few bytes at a time
    /// (each a round trip) while the reader takes small reads; it cannot stall the writer,
    /// which blocks only with our whole ring full.
    pub fn cons_update_due(&self) -> bool {
        let unreported = u64::from(self.unreported());
        let ring = u64::from(self.own_ring.get());
        unreported > 0
            && (unreported * 4 >= ring
                || (self.peer.write_blocked && unreported * 16 >= ring)
                || self.peer.cons_update_requested)
    }

    /// Returns whether the peer shut down writing (or closed) and every byte before was consumed.
    pub fn at_eof(&self) -> bool {
        self.peer_done_writing() && self.readable() == 0
    }

    /// Returns whether the peer shut down writing or closed.
    pub const fn peer_done_writing(&self) -> bool {
        self.peer.peer_done_writing || self.peer.peer_conn_closed
    }

    /// Returns whether the peer closed.
    pub const fn peer_closed(&self) -> bool {
        self.peer.peer_conn_closed
    }

    /// Returns whether the peer aborted.
    pub const fn peer_aborted(&self) -> bool {
        self.peer.peer_conn_abort
    }

    /// Shuts down writing (`SHUT_WR`): [`Conn::writable`] becomes 0 and every following message
    /// carries `peer_done_writing`.
    pub fn shutdown_write(&mut self) {
        self.local.peer_done_writing = true;
    }

    /// Closes: as [`Conn::shutdown_write`], and every following message also carries
    /// `peer_conn_closed`.
    pub fn close(&mut self) {
        self.local.peer_done_writing = true;
        self.local.peer_conn_closed = true;
    }

    /// Aborts: [`Conn::writable`] becomes 0 and every following message carries
    /// `peer_conn_abort`.
    pub fn abort(&mut self) {
        self.local.peer_conn_abort = true;
    }

    /// Returns whether [`Conn::shutdown_write`], [`Conn::close`] or [`Conn::abort`] happened.
    pub const fn write_shut(&self) -> bool {
        self.local.peer_done_writing || self.local.peer_conn_closed || self.local.peer_conn_abort
    }

    /// Builds the next CDC message: the current producer and consumer cursors, the flags and the
    /// next sequence number. Records the consumer cursor as reported and everything produced as
    /// announced.
    pub fn next_cdc(&mut self) -> Message {
        let msg = Message {
            seq: self.next_seq,
            token: self.token,
            prod: self.prod,
            cons: self.cons,
            flags: Flags {
                write_blocked: self.local.write_blocked && !self.write_shut(),
                ..self.local
            },
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        self.announced = self.prod;
        self.reported = self.cons;
        msg
    }

    /// Builds the next CDC message as [`Conn::next_cdc`] does, after producing `len` bytes
    /// (1..=[`Conn::writable`]) that the message carries inline. `None`, changing nothing, if
    /// `len` is 0, more than [`Conn::writable`] or more than [`cdc::MAX_INLINE`].
    pub fn next_cdc_inline(&mut self, len: u32) -> Option<Message> {
        if len as usize > cdc::MAX_INLINE {
            return None;
        }
        self.produce(len)?;
        Some(self.next_cdc())
    }

    /// Applies a CDC message from the peer that carries `inline` bytes of inline data.
    ///
    /// A message that is not newer than the last accepted one returns `stale` and changes
    /// nothing; the first message is accepted whatever its sequence number. A stale message's
    /// inline data is dropped with it, so the peer must send its messages in sequence order
    /// over a transport that keeps their order (an RC queue pair does). Otherwise the token
    /// and both cursors are checked ([`RingSize::check_peer_producer`] against the consumer
    /// cursor last reported, [`RingSize::check_peer_consumer`] against the producer cursor last
    /// announced), and the inline data must be the last bytes the producer cursor newly
    /// announces, before anything changes; on error nothing changes and the connection must
    /// abort. The token is checked first, so a foreign message is an error even when stale.
    pub fn on_cdc(&mut self, msg: &Message, inline: u32) -> Result<Changes, ConnError> {
        if msg.token != self.token {
            return Err(ConnError::WrongToken);
        }
        if let Some(last) = self.last_seq {
            if !cdc::seq_newer(msg.seq, last) {
                return Ok(Changes {
                    stale: true,
                    ..Changes::default()
                });
            }
        }
        self.own_ring
            .check_peer_producer(self.peer_prod, msg.prod, self.reported)
            .map_err(ConnError::BadProducer)?;
        if self.peer_done_writing() && msg.prod != self.peer_prod {
            // Data after the end of the stream.
            return Err(ConnError::BadProducer(CursorError::TooFarAhead));
        }
        self.peer_ring
            .check_peer_consumer(self.peer_cons, msg.cons, self.announced)
            .map_err(ConnError::BadConsumer)?;
        let inline_at = match inline {
            0 => None,
            _ => {
                // Checked above: the new producer cursor is at most a ring ahead.
                let announced = self.own_ring.diff(self.peer_prod, msg.prod).unwrap_or(0);
                let skip = announced
                    .checked_sub(inline)
                    .ok_or(ConnError::InlineBeyondProducer)?;
                let start = self.own_ring.advance(self.peer_prod, skip);
                self.own_ring.split(start.count, inline)
            }
        };

        let readable = self.readable();
        let writable = self.writable();
        let done = self.peer_done_writing();
        let closed = self.peer_closed();
        let aborted = self.peer_aborted();
        self.last_seq = Some(msg.seq);
        self.peer_prod = msg.prod;
        self.peer_cons = msg.cons;
        // Bytes the peer consumed reached it, even if the acknowledgement of the message that
        // announced them is still to be reaped.
        if self.peer_ring.diff(self.acked, msg.cons).is_some() {
            self.acked = msg.cons;
        }
        self.peer = Flags {
            write_blocked: msg.flags.write_blocked,
            cons_update_requested: msg.flags.cons_update_requested,
            peer_done_writing: self.peer.peer_done_writing || msg.flags.peer_done_writing,
            peer_conn_closed: self.peer.peer_conn_closed || msg.flags.peer_conn_closed,
            peer_conn_abort: self.peer.peer_conn_abort || msg.flags.peer_conn_abort,
        };
        let newly_done = !done && self.peer_done_writing();
        let newly_aborted = !aborted && self.peer_aborted();
        Ok(Changes {
            readable: self.readable() > readable || newly_done || newly_aborted,
            writable: self.writable() > writable,
            peer_done_writing: newly_done,
            peer_closed: !closed && self.peer_closed(),
            peer_aborted: newly_aborted,
            stale: false,
            cons_update_due: self.cons_update_due(),
            inline_at,
        })
    }
}

#[cfg(any(test, CONFIG_KUNIT))]
#[cfg_attr(CONFIG_KUNIT, kernel::prelude::kunit_tests(rsmc_proto_conn))]
mod tests {
    use super::super::{ring::Segment, test_rng::XorShift};
    use super::*;

    /// Token of the connections under test.
    const TOKEN: u32 = 0x1234_5678;

    /// Returns the ring size of `bytes` bytes; for constants only, so that an invalid size fails
    /// the build.
    const fn size(bytes: u32) -> RingSize {
        match RingSize::new(bytes) {
            Some(ring) => ring,
            None => panic!(),
        }
    }

    /// A message from the peer with the given sequence number and cursors and no flags.
    const fn msg(seq: u16, prod: Cursor, cons: Cursor) -> Message {
        Message {
            seq,
            token: TOKEN,
            prod,
            cons,
            flags: NO_FLAGS,
        }
    }

    /// Shorthand for a cursor.
    const fn at(wrap: u16, count: u32) -> Cursor {
        Cursor { wrap, count }
    }

    /// One segment, not wrapped.
    const fn one(offset: u32, len: u32) -> Option<Segments> {
        Some(Segments {
            first: Segment { offset, len },
            second: None,
        })
    }

    /// Two segments, the second at offset 0.
    const fn two(offset: u32, len: u32, wrapped: u32) -> Option<Segments> {
        Some(Segments {
            first: Segment { offset, len },
            second: Some(Segment {
                offset: 0,
                len: wrapped,
            }),
        })
    }

    #[test]
    fn fresh_conn() {
        let mut conn = Conn::new(const { size(100) }, const { size(50) }, TOKEN);
        assert_eq!(conn.token(), TOKEN);
        assert_eq!(conn.own_ring().get(), 100);
        assert_eq!(conn.peer_ring().get(), 50);
        assert_eq!(conn.writable(), 50);
        assert_eq!(conn.readable(), 0);
        assert_eq!(conn.unannounced(), 0);
        assert_eq!(conn.unreported(), 0);
        assert!(!conn.cons_update_due());
        assert!(!conn.at_eof());
        assert!(!conn.peer_done_writing());
        assert!(!conn.peer_closed());
        assert!(!conn.peer_aborted());
        assert!(!conn.write_shut());
        assert!(!conn.write_blocked());
        assert_eq!(conn.read_segments(0, 1), None);
        assert_eq!(conn.read_segments(0, 0), None);
        assert!(conn.consume(0));
        assert!(!conn.consume(1));
        let first = conn.next_cdc();
        assert_eq!(first, msg(0, Cursor::ZERO, Cursor::ZERO));
    }

    /// Bytes stay unacknowledged until a message announcing them is; an acknowledgement
    /// older than one seen already, or past what was produced, changes nothing.
    #[test]
    fn acknowledgements_drain_unacked_bytes() {
        let mut conn = Conn::new(const { size(100) }, const { size(10) }, TOKEN);
        assert_eq!(conn.unacked(), 0);
        assert!(conn.produce(4).is_some());
        let first = conn.next_cdc();
        assert!(conn.produce(6).is_some());
        let second = conn.next_cdc();
        assert_eq!(conn.unacked(), 10);
        conn.on_acked(first.prod);
        assert_eq!(conn.unacked(), 6);
        conn.on_acked(Cursor::ZERO);
        assert_eq!(conn.unacked(), 6);
        conn.on_acked(at(1, 1));
        assert_eq!(conn.unacked(), 6);
        conn.on_acked(second.prod);
        assert_eq!(conn.unacked(), 0);
        assert_eq!(conn.unannounced(), 0);
        // Around the ring: the peer consumed, and the next bytes wrap.
        assert!(conn.on_cdc(&msg(0, Cursor::ZERO, at(1, 0)), 0).is_ok());
        assert!(conn.produce(8).is_some());
        let third = conn.next_cdc();
        assert_eq!(third.prod, at(1, 8));
        assert_eq!(conn.unacked(), 8);
        conn.on_acked(third.prod);
        assert_eq!(conn.unacked(), 0);
    }

    /// The peer's consumer cursor acknowledges too: with the acknowledgement of a message
    /// reaped after the peer's report that it consumed, and a full ring written since, the
    /// count stays right and later acknowledgements still apply.
    #[test]
    fn consumed_bytes_count_as_acknowledged() {
        let mut conn = Conn::new(const { size(100) }, const { size(10) }, TOKEN);
        assert!(conn.produce(10).is_some());
        let first = conn.next_cdc();
        assert!(conn.on_cdc(&msg(0, Cursor::ZERO, at(1, 0)), 0).is_ok());
        assert_eq!(conn.unacked(), 0);
        assert!(conn.produce(10).is_some());
        let second = conn.next_cdc();
        assert_eq!(conn.unacked(), 10);
        conn.on_acked(first.prod);
        assert_eq!(conn.unacked(), 10);
        conn.on_acked(second.prod);
        assert_eq!(conn.unacked(), 0);
    }

    #[test]
    fn produce_limits_and_wrap() {
        let mut conn = Conn::new(const { size(100) }, const { size(10) }, TOKEN);
        let before = conn.clone();
        assert_eq!(conn.produce(0), None);
        assert_eq!(conn.produce(11), None);
        assert_eq!(conn.produce(u32::MAX), None);
        assert_eq!(conn, before);
        assert_eq!(conn.produce(4), one(0, 4));
        assert_eq!(conn.writable(), 6);
        assert_eq!(conn.unannounced(), 4);
        assert_eq!(conn.produce(7), None);
        assert_eq!(conn.writable(), 6);
        // The whole remaining window, up to the end of the ring.
        assert_eq!(conn.produce(6), one(4, 6));
        assert_eq!(conn.writable(), 0);
        assert_eq!(conn.produce(1), None);
        assert_eq!(conn.unannounced(), 10);
        let sent = conn.next_cdc();
        assert_eq!(sent.prod, at(1, 0));
        assert_eq!(conn.unannounced(), 0);
        // The peer consumed 8 bytes: a write of 5 wraps at the end of the ring.
        assert!(conn.on_cdc(&msg(0, Cursor::ZERO, at(0, 8)), 0).is_ok());
        assert_eq!(conn.writable(), 8);
        assert_eq!(conn.produce(2), one(0, 2));
        let _ = conn.next_cdc();
        assert!(conn.on_cdc(&msg(1, Cursor::ZERO, at(1, 0)), 0).is_ok());
        assert_eq!(conn.writable(), 8);
        assert!(conn.on_cdc(&msg(2, Cursor::ZERO, at(1, 2)), 0).is_ok());
        assert_eq!(conn.writable(), 10);
        // A full window starting mid-ring: two segments, the same whether looked up first or
        // reserved; looking up reserves nothing.
        assert_eq!(conn.write_segments(0), None);
        assert_eq!(conn.write_segments(11), None);
        assert_eq!(conn.write_segments(10), two(2, 8, 2));
        assert_eq!(conn.writable(), 10);
        assert_eq!(conn.produce(10), two(2, 8, 2));
        assert_eq!(conn.write_segments(1), None);
        assert_eq!(conn.writable(), 0);
        assert_eq!(conn.unannounced(), 10);
        assert_eq!(conn.next_cdc().prod, at(2, 2));
        assert!(conn.on_cdc(&msg(3, Cursor::ZERO, at(1, 9)), 0).is_ok());
        assert_eq!(conn.writable(), 7);
        assert_eq!(conn.produce(8), None);
        assert_eq!(conn.produce(7), one(2, 7));
        assert_eq!(conn.produce(1), None);
    }

    #[test]
    fn read_limits_and_wrap() {
        let mut conn = Conn::new(const { size(10) }, const { size(100) }, TOKEN);
        assert!(conn.on_cdc(&msg(0, at(0, 7), Cursor::ZERO), 0).is_ok());
        assert_eq!(conn.readable(), 7);
        assert_eq!(conn.read_segments(0, 0), None);
        assert_eq!(conn.read_segments(0, 8), None);
        assert_eq!(conn.read_segments(7, 1), None);
        assert_eq!(conn.read_segments(u32::MAX, 2), None);
        assert_eq!(conn.read_segments(2, u32::MAX), None);
        assert_eq!(conn.read_segments(0, 7), one(0, 7));
        assert_eq!(conn.read_segments(3, 4), one(3, 4));
        let before = conn.clone();
        assert!(!conn.consume(8));
        assert_eq!(conn, before);
        assert!(conn.consume(7));
        assert_eq!(conn.readable(), 0);
        assert!(!conn.consume(1));
        // The peer may only fill the room we reported.
        assert_eq!(
            conn.on_cdc(&msg(1, at(1, 1), Cursor::ZERO), 0),
            Err(ConnError::BadProducer(CursorError::TooFarAhead))
        );
        assert_eq!(conn.next_cdc().cons, at(0, 7));
        // Eight more bytes, wrapping at the end of the ring.
        assert!(conn.on_cdc(&msg(1, at(1, 5), Cursor::ZERO), 0).is_ok());
        assert_eq!(conn.readable(), 8);
        assert_eq!(conn.read_segments(0, 8), two(7, 3, 5));
        assert_eq!(conn.read_segments(2, 4), two(9, 1, 3));
        assert_eq!(conn.read_segments(3, 5), one(0, 5));
        assert_eq!(conn.read_segments(0, 3), one(7, 3));
        assert!(conn.consume(8));
        assert_eq!(conn.unreported(), 8);
        assert_eq!(conn.next_cdc().cons, at(1, 5));
        // A full ring.
        assert!(conn.on_cdc(&msg(2, at(2, 5), Cursor::ZERO), 0).is_ok());
        assert_eq!(conn.readable(), 10);
        assert_eq!(conn.read_segments(0, 10), two(5, 5, 5));
        assert_eq!(conn.read_segments(9, 1), one(4, 1));
        assert_eq!(conn.read_segments(10, 1), None);
        assert!(conn.consume(10));
        assert_eq!(conn.readable(), 0);
        assert_eq!(conn.unreported(), 10);
        assert_eq!(conn.next_cdc().cons, at(2, 5));
        assert_eq!(conn.unreported(), 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut a = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        let mut b = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        let mut expected = 0u16;
        for _ in 0..0x1_0010 {
            let sent = a.next_cdc();
            assert_eq!(sent.seq, expected);
            assert_eq!(b.on_cdc(&sent, 0), Ok(Changes::default()));
            expected = expected.wrapping_add(1);
        }
        assert_eq!(expected, 0x10);
    }

    #[test]
    fn first_message_accepted_whatever_its_seq() {
        let mut conn = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        let stale = Changes {
            stale: true,
            ..Changes::default()
        };
        assert_eq!(
            conn.on_cdc(&msg(0x9000, at(0, 1), Cursor::ZERO), 0)
                .map(|c| c.readable),
            Ok(true)
        );
        assert_eq!(
            conn.on_cdc(&msg(0x9000, at(0, 2), Cursor::ZERO), 0),
            Ok(stale)
        );
        assert_eq!(
            conn.on_cdc(&msg(0x8FFF, at(0, 2), Cursor::ZERO), 0),
            Ok(stale)
        );
        // Exactly half the sequence space away: neither newer nor older, so ignored.
        assert_eq!(
            conn.on_cdc(&msg(0x1000, at(0, 2), Cursor::ZERO), 0),
            Ok(stale)
        );
        assert_eq!(conn.readable(), 1);
        assert_eq!(
            conn.on_cdc(&msg(0x9001, at(0, 2), Cursor::ZERO), 0)
                .map(|c| c.stale),
            Ok(false)
        );
        assert_eq!(conn.readable(), 2);
    }

    #[test]
    fn stale_and_duplicate_ignored() {
        let mut a = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        let mut b = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        let stale = Changes {
            stale: true,
            ..Changes::default()
        };
        assert!(a.produce(3).is_some());
        let old = a.next_cdc();
        assert!(a.produce(2).is_some());
        a.set_write_blocked(true);
        let new = a.next_cdc();
        assert_eq!(b.on_cdc(&new, 0).map(|c| c.readable), Ok(true));
        assert_eq!(b.readable(), 5);
        let before = b.clone();
        // Overtaken and duplicate messages change nothing, whatever they carry.
        assert_eq!(b.on_cdc(&old, 0), Ok(stale));
        assert_eq!(b.on_cdc(&new, 0), Ok(stale));
        let mut old_abort = old;
        old_abort.flags.peer_conn_abort = true;
        old_abort.prod = at(0, 99);
        assert_eq!(b.on_cdc(&old_abort, 0), Ok(stale));
        assert_eq!(b, before);
        assert!(!b.peer_aborted());
        // The token is checked even on stale messages.
        let mut foreign = old;
        foreign.token = TOKEN + 1;
        assert_eq!(b.on_cdc(&foreign, 0), Err(ConnError::WrongToken));
        assert_eq!(b, before);
    }

    #[test]
    fn wrong_token_rejected() {
        let mut conn = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        let before = conn.clone();
        for token in [0, 1, TOKEN - 1, TOKEN + 1, u32::MAX] {
            let mut foreign = msg(0, at(0, 1), Cursor::ZERO);
            foreign.token = token;
            assert_eq!(conn.on_cdc(&foreign, 0), Err(ConnError::WrongToken));
            assert_eq!(conn, before);
        }
        // Nothing was recorded: the same sequence number is still accepted.
        assert_eq!(
            conn.on_cdc(&msg(0, at(0, 1), Cursor::ZERO), 0)
                .map(|c| c.readable),
            Ok(true)
        );
    }

    #[test]
    fn bad_producer_changes_nothing() {
        let mut conn = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        assert!(conn.on_cdc(&msg(1, at(0, 6), Cursor::ZERO), 0).is_ok());
        assert!(conn.consume(2));
        let _ = conn.next_cdc();
        let before = conn.clone();
        let cases = [
            (at(0, 10), CursorError::CountOutOfRange),
            (at(0, u32::MAX), CursorError::CountOutOfRange),
            (at(0, 5), CursorError::Regressed),
            (at(0, 1), CursorError::Regressed),
            (at(1, 3), CursorError::TooFarAhead),
            (at(0x4000, 0), CursorError::TooFarAhead),
            (at(u16::MAX, 6), CursorError::Regressed),
        ];
        for (prod, error) in cases {
            assert_eq!(
                conn.on_cdc(&msg(7, prod, Cursor::ZERO), 0),
                Err(ConnError::BadProducer(error))
            );
            assert_eq!(conn, before);
        }
        // A bad producer is reported even when the consumer is bad too.
        assert_eq!(
            conn.on_cdc(&msg(7, at(0, 5), at(0, 5)), 0),
            Err(ConnError::BadProducer(CursorError::Regressed))
        );
        assert_eq!(conn, before);
        // Exactly a full ring past the consumer is fine; the rejected sequence numbers were not
        // recorded.
        assert_eq!(
            conn.on_cdc(&msg(2, at(1, 2), Cursor::ZERO), 0)
                .map(|c| c.readable),
            Ok(true)
        );
        assert_eq!(conn.readable(), 10);
    }

    #[test]
    fn bad_consumer_changes_nothing() {
        let mut conn = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        assert!(conn.produce(6).is_some());
        let _ = conn.next_cdc();
        // Produced but not announced yet: the peer cannot have consumed these.
        assert!(conn.produce(2).is_some());
        assert!(conn.on_cdc(&msg(1, Cursor::ZERO, at(0, 4)), 0).is_ok());
        assert_eq!(conn.writable(), 6);
        let before = conn.clone();
        let cases = [
            (at(0, 10), CursorError::CountOutOfRange),
            (at(3, u32::MAX), CursorError::CountOutOfRange),
            (at(0, 3), CursorError::Regressed),
            (at(0, 7), CursorError::TooFarAhead),
            (at(0, 8), CursorError::TooFarAhead),
            (at(1, 0), CursorError::TooFarAhead),
            (at(0x4000, 4), CursorError::TooFarAhead),
        ];
        for (cons, error) in cases {
            assert_eq!(
                conn.on_cdc(&msg(5, Cursor::ZERO, cons), 0),
                Err(ConnError::BadConsumer(error))
            );
            assert_eq!(conn, before);
        }
        assert_eq!(
            conn.on_cdc(&msg(2, Cursor::ZERO, at(0, 6)), 0)
                .map(|c| c.writable),
            Ok(true)
        );
        assert_eq!(conn.writable(), 8);
    }

    #[test]
    fn inline_data_placed_after_written_bytes() {
        let mut conn = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        let changes = conn.on_cdc(&msg(0, at(0, 3), Cursor::ZERO), 3);
        assert_eq!(changes.map(|c| c.inline_at), Ok(one(0, 3)));
        // Bytes 3..6 came by RDMA WRITE, 6..8 inline.
        let changes = conn.on_cdc(&msg(1, at(0, 8), Cursor::ZERO), 2);
        assert_eq!(
            changes.map(|c| (c.readable, c.inline_at)),
            Ok((true, one(6, 2)))
        );
        assert_eq!(conn.readable(), 8);
        // A cursor-only message places nothing.
        let changes = conn.on_cdc(&msg(2, at(0, 8), Cursor::ZERO), 0);
        assert_eq!(changes.map(|c| c.inline_at), Ok(None));
    }

    #[test]
    fn inline_data_wraps() {
        let mut conn = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        assert!(conn.on_cdc(&msg(0, at(0, 8), Cursor::ZERO), 0).is_ok());
        assert!(conn.consume(8));
        conn.next_cdc();
        let changes = conn.on_cdc(&msg(1, at(1, 3), Cursor::ZERO), 5);
        assert_eq!(changes.map(|c| c.inline_at), Ok(two(8, 2, 3)));
        assert_eq!(conn.read_segments(0, 5), two(8, 2, 3));
    }

    #[test]
    fn inline_data_beyond_producer_rejected() {
        let mut conn = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        assert!(conn.on_cdc(&msg(0, at(0, 2), Cursor::ZERO), 2).is_ok());
        let before = conn.clone();
        assert_eq!(
            conn.on_cdc(&msg(1, at(0, 5), Cursor::ZERO), 4),
            Err(ConnError::InlineBeyondProducer)
        );
        assert_eq!(
            conn.on_cdc(&msg(1, at(0, 2), Cursor::ZERO), 1),
            Err(ConnError::InlineBeyondProducer)
        );
        assert_eq!(conn, before);
    }

    #[test]
    fn stale_inline_data_dropped() {
        let mut conn = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        assert!(conn.on_cdc(&msg(5, at(0, 2), Cursor::ZERO), 2).is_ok());
        let before = conn.clone();
        assert_eq!(
            conn.on_cdc(&msg(5, at(0, 4), Cursor::ZERO), 2),
            Ok(Changes {
                stale: true,
                ..Changes::default()
            })
        );
        assert_eq!(conn, before);
    }

    #[test]
    fn next_cdc_inline_limits() {
        let mut conn = Conn::new(const { size(1024) }, const { size(300) }, TOKEN);
        let before = conn.clone();
        assert_eq!(conn.next_cdc_inline(0), None);
        // CAST: `MAX_INLINE` is below the ring size.
        let too_long = cdc::MAX_INLINE as u32 + 1;
        assert_eq!(conn.next_cdc_inline(too_long), None);
        assert_eq!(conn, before);
        let first = conn.next_cdc_inline(too_long - 1);
        assert_eq!(
            first.map(|m| (m.seq, m.prod)),
            Some((0, at(0, too_long - 1)))
        );
        assert_eq!(conn.unannounced(), 0);
        // Only 300 - 211 = 89 bytes of window are left.
        assert_eq!(conn.next_cdc_inline(90), None);
        let second = conn.next_cdc_inline(89);
        assert_eq!(second.map(|m| (m.seq, m.prod)), Some((1, at(1, 0))));
        assert_eq!(conn.writable(), 0);
    }

    #[test]
    fn no_data_after_peer_done_writing() {
        let mut conn = Conn::new(const { size(10) }, const { size(10) }, TOKEN);
        let mut fin = msg(0, at(0, 3), Cursor::ZERO);
        fin.flags.peer_done_writing = true;
        assert_eq!(
            conn.on_cdc(&fin, 0),
            Ok(Changes {
                readable: true,
                peer_done_writing: true,
                ..Changes::default()
            })
        );
        let before = conn.clone();
        assert_eq!(
            conn.on_cdc(&msg(1, at(0, 4), Cursor::ZERO), 0),
            Err(ConnError::BadProducer(CursorError::TooFarAhead))
        );
        assert_eq!(conn, before);
        // The same producer cursor is fine, and the flag stays without being repeated.
        assert_eq!(
            conn.on_cdc(&msg(1, at(0, 3), Cursor::ZERO), 0),
            Ok(Changes::default())
        );
        assert!(conn.peer_done_writing());
        assert!(!conn.at_eof());
        assert!(conn.consume(3));
        assert!(conn.at_eof());
    }

    #[test]
    fn cons_update_thresholds() {
        // A quarter of the ring, rounded up: 16 -> 4, 13 -> 4, 7 -> 2, 4 -> 1, 1 -> 1.
        let cases = const {
            [
                (size(16), 4),
                (size(13), 4),
                (size(7), 2),
                (size(4), 1),
                (size(1), 1),
            ]
        };
        for (ring, threshold) in cases {
            let mut conn = Conn::new(ring, const { size(10) }, TOKEN);
            let full = ring.advance(Cursor::ZERO, ring.get());
            assert!(conn.on_cdc(&msg(0, full, Cursor::ZERO), 0).is_ok());
            assert!(!conn.cons_update_due());
            assert!(conn.consume(threshold - 1));
            assert!(!conn.cons_update_due());
            assert!(conn.consume(1));
            assert!(conn.cons_update_due());
            assert_eq!(conn.unreported(), threshold);
            let _ = conn.next_cdc();
            assert!(!conn.cons_update_due());
            assert_eq!(conn.unreported(), 0);
            // Reported bytes no longer count towards the next update.
            assert!(conn.consume(threshold - 1));
            assert!(!conn.cons_update_due());
        }
    }

    #[test]
    fn write_blocked_round_trip() {
        let mut a = Conn::new(const { size(16) }, const { size(16) }, TOKEN);
        let mut b = Conn::new(const { size(16) }, const { size(16) }, TOKEN);
        assert!(a.produce(16).is_some());
        a.set_write_blocked(true);
        assert!(a.write_blocked());
        let blocked = a.next_cdc();
        assert!(blocked.flags.write_blocked);
        // Nothing consumed yet: nothing to report.
        assert_eq!(
            b.on_cdc(&blocked, 0),
            Ok(Changes {
                readable: true,
                ..Changes::default()
            })
        );
        assert!(!b.cons_update_due());
        // A single byte is worth reporting to a blocked writer.
        assert!(b.consume(1));
        assert!(b.cons_update_due());
        let update = b.next_cdc();
        assert!(!update.flags.write_blocked);
        assert_eq!(
            a.on_cdc(&update, 0),
            Ok(Changes {
                writable: true,
                ..Changes::default()
            })
        );
        assert_eq!(a.writable(), 1);
        // The flag stays set until cleared.
        assert!(a.next_cdc().flags.write_blocked);
        a.set_write_blocked(false);
        let unblocked = a.next_cdc();
        assert!(!unblocked.flags.write_blocked);
        assert_eq!(b.on_cdc(&unblocked, 0), Ok(Changes::default()));
        assert!(b.consume(1));
        assert!(!b.cons_update_due());
        // Consumed before the flag arrives: the message itself makes the update due.
        a.set_write_blocked(true);
        assert_eq!(
            b.on_cdc(&a.next_cdc(), 0),
            Ok(Changes {
                cons_update_due: true,
                ..Changes::default()
            })
        );
        // No write_blocked once writing is shut down.
        a.shutdown_write();
        assert!(!a.next_cdc().flags.write_blocked);
    }

    #[test]
    fn blocked_writer_gets_a_sixteenth_at_least() {
        let mut a = Conn::new(const { size(1024) }, const { size(1024) }, TOKEN);
        let mut b = Conn::new(const { size(1024) }, const { size(1024) }, TOKEN);
        assert!(a.produce(1024).is_some());
        a.set_write_blocked(true);
        assert!(b.on_cdc(&a.next_cdc(), 0).is_ok());
        assert!(b.consume(63));
        assert!(!b.cons_update_due());
        assert!(b.consume(1));
        assert!(b.cons_update_due());
        // Unblocked, the writer hears at a quarter.
        let mut c = Conn::new(const { size(1024) }, const { size(1024) }, TOKEN);
        let mut d = Conn::new(const { size(1024) }, const { size(1024) }, TOKEN);
        assert!(c.produce(1024).is_some());
        assert!(d.on_cdc(&c.next_cdc(), 0).is_ok());
        assert!(d.consume(255));
        assert!(!d.cons_update_due());
        assert!(d.consume(1));
        assert!(d.cons_update_due());
    }

    #[test]
    fn cons_update_requested() {
        let mut conn = Conn::new(const { size(16) }, const { size(16) }, TOKEN);
        assert!(conn.on_cdc(&msg(0, at(0, 8), Cursor::ZERO), 0).is_ok());
        assert!(conn.consume(1));
        assert!(!conn.cons_update_due());
        let mut request = msg(1, at(0, 8), Cursor::ZERO);
        request.flags.cons_update_requested = true;
        assert_eq!(
            conn.on_cdc(&request, 0),
            Ok(Changes {
                cons_update_due: true,
                ..Changes::default()
            })
        );
        assert!(conn.cons_update_due());
        assert!(!conn.next_cdc().flags.cons_update_requested);
        assert!(!conn.cons_update_due());
        // A later message without the request ends it.
        assert!(conn.consume(1));
        assert!(conn.cons_update_due());
        assert_eq!(
            conn.on_cdc(&msg(2, at(0, 8), Cursor::ZERO), 0),
            Ok(Changes::default())
        );
        assert!(!conn.cons_update_due());
    }

    #[test]
    fn local_shutdown_flags() {
        let ring = const { size(10) };
        let mut conn = Conn::new(ring, ring, TOKEN);
        assert!(conn.produce(3).is_some());
        conn.shutdown_write();
        assert!(conn.write_shut());
        assert_eq!(conn.writable(), 0);
        assert_eq!(conn.produce(1), None);
        // Bytes produced before the shutdown are still announced.
        assert_eq!(conn.unannounced(), 3);
        let fin = conn.next_cdc();
        assert_eq!(fin.prod, at(0, 3));
        assert_eq!(
            fin.flags,
            Flags {
                peer_done_writing: true,
                ..Flags::default()
            }
        );
        // Sticky; reading goes on.
        assert!(conn.next_cdc().flags.peer_done_writing);
        assert!(conn.on_cdc(&msg(0, at(0, 2), at(0, 3)), 0).is_ok());
        assert_eq!(conn.writable(), 0);
        assert!(conn.consume(2));
        conn.close();
        let closed = conn.next_cdc();
        assert_eq!(closed.cons, at(0, 2));
        assert_eq!(
            closed.flags,
            Flags {
                peer_done_writing: true,
                peer_conn_closed: true,
                ..Flags::default()
            }
        );

        let mut conn = Conn::new(ring, ring, TOKEN);
        conn.close();
        assert!(conn.write_shut());
        assert_eq!(conn.writable(), 0);
        let closed = conn.next_cdc();
        assert!(closed.flags.peer_done_writing);
        assert!(closed.flags.peer_conn_closed);
        assert!(!closed.flags.peer_conn_abort);

        let mut conn = Conn::new(ring, ring, TOKEN);
        conn.abort();
        assert!(conn.write_shut());
        assert_eq!(conn.writable(), 0);
        assert_eq!(conn.produce(1), None);
        assert_eq!(
            conn.next_cdc().flags,
            Flags {
                peer_conn_abort: true,
                ..Flags::default()
            }
        );
        conn.close();
        assert_eq!(
            conn.next_cdc().flags,
            Flags {
                peer_done_writing: true,
                peer_conn_closed: true,
                peer_conn_abort: true,
                ..Flags::default()
            }
        );
    }

    #[test]
    fn peer_shutdown_close_and_abort() {
        let ring = const { size(10) };
        let mut conn = Conn::new(ring, ring, TOKEN);
        let mut fin = msg(0, at(0, 5), Cursor::ZERO);
        fin.flags.peer_done_writing = true;
        let changes = conn.on_cdc(&fin, 0);
        assert_eq!(
            changes.map(|c| (c.readable, c.peer_done_writing)),
            Ok((true, true))
        );
        assert!(conn.peer_done_writing());
        assert!(!conn.peer_closed());
        assert!(!conn.at_eof());
        // Our writing is unaffected.
        assert_eq!(conn.writable(), 10);
        assert!(conn.consume(5));
        assert!(conn.at_eof());
        // Closing after shutting down: only the close is new.
        let mut close = msg(1, at(0, 5), Cursor::ZERO);
        close.flags.peer_conn_closed = true;
        // The five bytes consumed are not reported yet: a quarter of the ring or more.
        assert_eq!(
            conn.on_cdc(&close, 0),
            Ok(Changes {
                peer_closed: true,
                cons_update_due: true,
                ..Changes::default()
            })
        );
        assert!(conn.peer_closed());
        assert!(conn.at_eof());

        // A close alone implies done writing, and is end of file once everything is read.
        let mut conn = Conn::new(ring, ring, TOKEN);
        assert!(conn.on_cdc(&msg(0, at(0, 2), Cursor::ZERO), 0).is_ok());
        let mut close = msg(1, at(0, 2), Cursor::ZERO);
        close.flags.peer_conn_closed = true;
        assert_eq!(
            conn.on_cdc(&close, 0),
            Ok(Changes {
                readable: true,
                peer_done_writing: true,
                peer_closed: true,
                ..Changes::default()
            })
        );
        assert!(conn.peer_done_writing());
        assert!(!conn.at_eof());
        assert!(conn.consume(2));
        assert!(conn.at_eof());

        // An abort with unread data: writing stops, the data stays readable.
        let mut conn = Conn::new(ring, ring, TOKEN);
        assert!(conn.produce(4).is_some());
        let mut abort = msg(0, at(0, 5), Cursor::ZERO);
        abort.flags.peer_conn_abort = true;
        assert_eq!(
            conn.on_cdc(&abort, 0),
            Ok(Changes {
                readable: true,
                peer_aborted: true,
                ..Changes::default()
            })
        );
        assert!(conn.peer_aborted());
        assert!(!conn.peer_done_writing());
        assert!(!conn.at_eof());
        assert_eq!(conn.writable(), 0);
        assert_eq!(conn.produce(1), None);
        assert_eq!(conn.readable(), 5);
        // Sticky, and not new any more.
        assert_eq!(
            conn.on_cdc(&msg(1, at(0, 5), Cursor::ZERO), 0),
            Ok(Changes::default())
        );
        assert!(conn.peer_aborted());
        assert_eq!(conn.writable(), 0);
    }

    #[test]
    fn changes_report_growth_only() {
        let ring = const { size(10) };
        let mut conn = Conn::new(ring, ring, TOKEN);
        assert!(conn.produce(6).is_some());
        let _ = conn.next_cdc();
        assert_eq!(
            conn.on_cdc(&msg(0, Cursor::ZERO, at(0, 2)), 0),
            Ok(Changes {
                writable: true,
                ..Changes::default()
            })
        );
        assert_eq!(
            conn.on_cdc(&msg(1, at(0, 1), at(0, 2)), 0),
            Ok(Changes {
                readable: true,
                ..Changes::default()
            })
        );
        assert_eq!(
            conn.on_cdc(&msg(2, at(0, 1), at(0, 2)), 0),
            Ok(Changes::default())
        );
        assert_eq!(
            conn.on_cdc(&msg(3, at(0, 3), at(0, 6)), 0),
            Ok(Changes {
                readable: true,
                writable: true,
                ..Changes::default()
            })
        );
        assert_eq!(conn.readable(), 3);
        assert_eq!(conn.writable(), 10);
    }

    /// More than 2^16 one-byte round trips through one-byte rings: both the wrap counters of the
    /// cursors and the sequence numbers overflow.
    #[test]
    fn counters_overflow_on_long_stream() {
        let ring = const { size(1) };
        let mut a = Conn::new(ring, ring, TOKEN);
        let mut b = Conn::new(ring, ring, TOKEN);
        let mut seq = 0u16;
        let mut wrap = 0u16;
        for _ in 0..0x1_0100 {
            assert_eq!(a.writable(), 1);
            assert_eq!(a.produce(1), one(0, 1));
            assert_eq!(a.produce(1), None);
            let data = a.next_cdc();
            wrap = wrap.wrapping_add(1);
            assert_eq!(data.seq, seq);
            assert_eq!(data.prod, at(wrap, 0));
            assert_eq!(b.on_cdc(&data, 0).map(|c| c.readable), Ok(true));
            assert_eq!(b.read_segments(0, 1), one(0, 1));
            assert!(b.consume(1));
            assert!(b.cons_update_due());
            let update = b.next_cdc();
            assert_eq!(update.seq, seq);
            assert_eq!(update.cons, at(wrap, 0));
            assert_eq!(a.on_cdc(&update, 0).map(|c| c.writable), Ok(true));
            seq = seq.wrapping_add(1);
        }
        assert_eq!(wrap, 0x100);
    }

    /// Largest ring in the random exchange.
    const MAX_RING: usize = 16;

    /// Messages in flight from each end in the random exchange.
    const IN_FLIGHT: usize = 4;

    /// One end of the random exchange.
    struct End {
        conn: Conn,
        /// Memory of our receive ring, which the peer writes.
        ring: [u8; MAX_RING],
        /// Model: the offsets of `ring` holding bytes written and not consumed yet.
        unread: [bool; MAX_RING],
        /// Bytes produced (into the peer's ring).
        sent: u32,
        /// Bytes announced in a built message.
        announced: u32,
        /// Bytes consumed (from our ring).
        received: u32,
        /// Pattern of the bytes we send.
        out_pattern: u8,
        /// Pattern of the bytes the peer sends.
        in_pattern: u8,
        /// Messages from us in flight to the peer; `None` for a free slot.
        wire: [Option<Message>; IN_FLIGHT],
    }

    /// Byte number `index` of the stream with pattern `pattern`.
    fn pattern_byte(pattern: u8, index: u32) -> u8 {
        ((index % 251) as u8) ^ pattern
    }

    impl End {
        fn new(own: RingSize, peer: RingSize, out_pattern: u8, in_pattern: u8) -> Self {
            Self {
                conn: Conn::new(own, peer, TOKEN),
                ring: [0; MAX_RING],
                unread: [false; MAX_RING],
                sent: 0,
                announced: 0,
                received: 0,
                out_pattern,
                in_pattern,
                wire: [None; IN_FLIGHT],
            }
        }

        /// Number of ring offsets holding unread bytes.
        fn unread_bytes(&self) -> u32 {
            self.unread.iter().filter(|&&unread| unread).count() as u32
        }

        /// Checks that the `segments` hold the incoming stream from byte `index` on, all of it
        /// unread; returns the number of bytes.
        fn check(&self, segments: Segments, mut index: u32) -> u32 {
            let mut len = 0;
            for segment in segments.iter() {
                for offset in segment.offset..segment.offset + segment.len {
                    let at = offset as usize;
                    assert!(at < self.conn.own_ring().get() as usize);
                    assert!(self.unread[at]);
                    assert_eq!(self.ring[at], pattern_byte(self.in_pattern, index));
                    index += 1;
                    len += 1;
                }
            }
            len
        }

        /// Looks at `len` bytes `skip` bytes into the readable data, without consuming them.
        fn peek(&self, skip: u32, len: u32) {
            let segments = self.conn.read_segments(skip, len);
            if len == 0 {
                assert_eq!(segments, None);
            }
            if let Some(segments) = segments {
                assert_eq!(self.check(segments, self.received + skip), len);
            } else {
                assert_eq!(len, 0);
            }
        }

        /// Reads and consumes `len` readable bytes.
        fn read(&mut self, len: u32) {
            let readable = self.conn.readable();
            // Every announced byte was written before.
            assert!(readable <= self.unread_bytes());
            if let Some(segments) = self.conn.read_segments(0, len) {
                assert_eq!(self.check(segments, self.received), len);
                for segment in segments.iter() {
                    for offset in segment.offset..segment.offset + segment.len {
                        self.unread[offset as usize] = false;
                    }
                }
            } else {
                assert_eq!(len, 0);
            }
            assert!(!self.conn.consume(readable + 1));
            assert!(self.conn.consume(len));
            self.received += len;
            assert_eq!(self.conn.readable(), readable - len);
        }

        /// Writes up to `want` bytes of our stream into the peer's ring.
        fn write(&mut self, peer: &mut End, want: u32) {
            let writable = self.conn.writable();
            // The window never covers bytes the peer has not consumed.
            let free = self.conn.peer_ring().get() - peer.unread_bytes();
            assert!(writable <= free);
            let len = want.min(writable);
            self.conn.set_write_blocked(len < want);
            if let Some(segments) = self.conn.produce(len) {
                for segment in segments.iter() {
                    for offset in segment.offset..segment.offset + segment.len {
                        let at = offset as usize;
                        assert!(at < self.conn.peer_ring().get() as usize);
                        // Never over unread bytes.
                        assert!(!peer.unread[at]);
                        peer.ring[at] = pattern_byte(self.out_pattern, self.sent);
                        peer.unread[at] = true;
                        self.sent += 1;
                    }
                }
            } else {
                assert_eq!(len, 0);
            }
            assert_eq!(self.conn.writable(), writable - len);
            assert_eq!(self.conn.unannounced(), self.sent - self.announced);
        }

        /// Builds a message and puts it on the wire, delivering one in flight if it is full.
        fn send(&mut self, peer: &mut End, rng: &mut XorShift) {
            if self.wire.iter().all(Option::is_some) {
                let slot = rng.up_to(IN_FLIGHT as u32 - 1) as usize;
                self.deliver(peer, slot, false);
            }
            let msg = self.conn.next_cdc();
            self.announced = self.sent;
            assert_eq!(self.conn.unannounced(), 0);
            assert_eq!(self.conn.unreported(), 0);
            assert!(!self.conn.cons_update_due());
            if let Some(free) = self.wire.iter_mut().find(|slot| slot.is_none()) {
                *free = Some(msg);
            }
        }

        /// Delivers the message in `slot`, if any, to the peer; leaves it there for a duplicate
        /// delivery later if `keep`.
        fn deliver(&mut self, peer: &mut End, slot: usize, keep: bool) {
            let Some(msg) = self.wire.get(slot).copied().flatten() else {
                return;
            };
            if !keep {
                self.wire[slot] = None;
            }
            let before = peer.conn.clone();
            let changes = peer.conn.on_cdc(&msg, 0);
            assert!(changes.is_ok());
            let changes = changes.unwrap_or_default();
            if changes.stale {
                assert_eq!(peer.conn, before);
                assert_eq!(
                    changes,
                    Changes {
                        stale: true,
                        ..Changes::default()
                    }
                );
                return;
            }
            if !changes.peer_done_writing && !changes.peer_aborted {
                assert_eq!(changes.readable, peer.conn.readable() > before.readable());
            }
            assert_eq!(changes.writable, peer.conn.writable() > before.writable());
            assert_eq!(changes.cons_update_due, peer.conn.cons_update_due());
        }

        /// Delivers every message in flight, in slot order.
        fn flush(&mut self, peer: &mut End) {
            for slot in 0..IN_FLIGHT {
                self.deliver(peer, slot, false);
            }
        }
    }

    /// Checks, once both ends read everything, that each received the other's whole stream and
    /// that each ring wrapped a hundred times or more.
    fn check_streams_whole(a: &End, b: &End) {
        assert_eq!(b.received, a.sent);
        assert_eq!(a.received, b.sent);
        assert_eq!(a.unread_bytes(), 0);
        assert_eq!(b.unread_bytes(), 0);
        assert!(a.sent > 100 * a.conn.peer_ring().get());
        assert!(b.sent > 100 * b.conn.peer_ring().get());
    }

    /// Two connections with small odd rings exchange byte streams both ways through random
    /// writes, reads and CDC messages, delayed, duplicated and reordered; checks every byte
    /// arrives once and in order and no write lands on unread bytes.
    #[test]
    fn random_exchange_keeps_streams_intact() {
        let pairs = const {
            [
                (size(7), size(13)),
                (size(13), size(7)),
                (size(1), size(2)),
                (size(16), size(3)),
            ]
        };
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for (a_ring, b_ring) in pairs {
            let mut a = End::new(a_ring, b_ring, 0x00, 0xA5);
            let mut b = End::new(b_ring, a_ring, 0xA5, 0x00);
            for _ in 0..20_000 {
                match rng.up_to(11) {
                    0..=2 => {
                        let want = rng.up_to(2 * MAX_RING as u32);
                        a.write(&mut b, want);
                    }
                    3 => {
                        let want = rng.up_to(2 * MAX_RING as u32);
                        b.write(&mut a, want);
                    }
                    4 | 5 => {
                        let len = rng.up_to(b.conn.readable());
                        b.read(len);
                    }
                    6 => {
                        let len = rng.up_to(a.conn.readable());
                        a.read(len);
                    }
                    7 => a.send(&mut b, &mut rng),
                    8 => b.send(&mut a, &mut rng),
                    9 => {
                        let slot = rng.up_to(IN_FLIGHT as u32 - 1) as usize;
                        let keep = rng.next() % 4 == 0;
                        a.deliver(&mut b, slot, keep);
                    }
                    10 => {
                        let slot = rng.up_to(IN_FLIGHT as u32 - 1) as usize;
                        let keep = rng.next() % 4 == 0;
                        b.deliver(&mut a, slot, keep);
                    }
                    _ => {
                        let readable = b.conn.readable();
                        let skip = rng.up_to(readable);
                        let len = rng.up_to(readable - skip);
                        b.peek(skip, len);
                    }
                }
                // Like the socket layer, usually answer a due consumer update at once.
                if b.conn.cons_update_due() && rng.next() % 4 != 0 {
                    b.send(&mut a, &mut rng);
                }
                if a.conn.cons_update_due() && rng.next() % 4 != 0 {
                    a.send(&mut b, &mut rng);
                }
            }
            // Drain: deliver everything in flight, announce, read everything, report.
            for _ in 0..2 {
                a.flush(&mut b);
                b.flush(&mut a);
                a.send(&mut b, &mut rng);
                b.send(&mut a, &mut rng);
                a.flush(&mut b);
                b.flush(&mut a);
                let len = a.conn.readable();
                a.read(len);
                let len = b.conn.readable();
                b.read(len);
            }
            check_streams_whole(&a, &b);
            // Both sides' consumption is reported: full windows again.
            a.send(&mut b, &mut rng);
            b.send(&mut a, &mut rng);
            a.flush(&mut b);
            b.flush(&mut a);
            assert_eq!(a.conn.writable(), b_ring.get());
            assert_eq!(b.conn.writable(), a_ring.get());
            // Close one way, shut down the other: both see end of file.
            a.conn.close();
            a.send(&mut b, &mut rng);
            a.flush(&mut b);
            assert!(b.conn.peer_closed());
            assert!(b.conn.at_eof());
            b.conn.shutdown_write();
            b.send(&mut a, &mut rng);
            b.flush(&mut a);
            assert!(a.conn.at_eof());
            assert!(!a.conn.peer_closed());
        }
    }

    /// A message in flight with its inline bytes (the first `.2` of `.1`).
    type Framed = (Message, [u8; MAX_RING], u32);

    impl End {
        /// Produces up to `want` bytes of our stream inline in a new message, instead of
        /// writing them into the peer's ring; `None` if there is no room.
        fn write_inline(&mut self, want: u32) -> Option<Framed> {
            let len = want.min(self.conn.writable());
            let msg = self.conn.next_cdc_inline(len)?;
            let mut data = [0; MAX_RING];
            for byte in &mut data[..len as usize] {
                *byte = pattern_byte(self.out_pattern, self.sent);
                self.sent += 1;
            }
            self.announced = self.sent;
            Some((msg, data, len))
        }

        /// Builds a message without inline bytes.
        fn cursor_message(&mut self) -> Framed {
            self.announced = self.sent;
            (self.conn.next_cdc(), [0; MAX_RING], 0)
        }

        /// Applies a message from the peer, delivered in order, and places its inline bytes.
        fn receive(&mut self, (msg, data, len): Framed) {
            let changes = self.conn.on_cdc(&msg, len);
            assert!(changes.is_ok());
            let changes = changes.unwrap_or_default();
            assert!(!changes.stale);
            let mut placed = 0;
            for segment in changes.inline_at.iter().flat_map(|at| at.iter()) {
                for offset in segment.offset..segment.offset + segment.len {
                    let at = offset as usize;
                    // Never over unread bytes.
                    assert!(!self.unread[at]);
                    self.ring[at] = data[placed];
                    self.unread[at] = true;
                    placed += 1;
                }
            }
            assert_eq!(placed, len as usize);
        }
    }

    /// Messages from one end, delivered in the order they were built, as on an RC queue pair.
    struct Wire([Option<Framed>; IN_FLIGHT]);

    impl Wire {
        /// Puts `msg` on the wire, first delivering the oldest to `peer` if the wire is full.
        fn push(&mut self, msg: Framed, peer: &mut End) {
            if self.0.iter().all(Option::is_some) {
                self.deliver(peer);
            }
            if let Some(free) = self.0.iter_mut().find(|slot| slot.is_none()) {
                *free = Some(msg);
            }
        }

        /// Delivers the oldest message, if any, to `peer`.
        fn deliver(&mut self, peer: &mut End) {
            if let Some(msg) = self.0[0].take() {
                peer.receive(msg);
            }
            self.0.rotate_left(1);
        }
    }

    /// One random step from `from` to `to`: a write, an inline write, a cursor message, a
    /// delivery or a read.
    fn inline_step(from: &mut End, to: &mut End, wire: &mut Wire, rng: &mut XorShift) {
        let want = rng.up_to(2 * MAX_RING as u32);
        match rng.up_to(4) {
            0 => from.write(to, want),
            1 => {
                if let Some(msg) = from.write_inline(want) {
                    wire.push(msg, to);
                }
            }
            2 => wire.push(from.cursor_message(), to),
            3 => wire.deliver(to),
            _ => {
                let len = rng.up_to(to.conn.readable());
                to.read(len);
            }
        }
    }

    /// As the random exchange, with bytes also sent inline in the messages, whose order the
    /// wire keeps; checks every byte arrives once and in order and none lands on unread bytes.
    #[test]
    fn random_inline_exchange_keeps_streams_intact() {
        let pairs = const { [(size(7), size(13)), (size(1), size(2)), (size(16), size(3))] };
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for (a_ring, b_ring) in pairs {
            let mut a = End::new(a_ring, b_ring, 0x00, 0x5A);
            let mut b = End::new(b_ring, a_ring, 0x5A, 0x00);
            let mut a_wire = Wire([None; IN_FLIGHT]);
            let mut b_wire = Wire([None; IN_FLIGHT]);
            for _ in 0..20_000 {
                if rng.next() % 2 == 0 {
                    inline_step(&mut a, &mut b, &mut a_wire, &mut rng);
                } else {
                    inline_step(&mut b, &mut a, &mut b_wire, &mut rng);
                }
                if a.conn.cons_update_due() && rng.next() % 4 != 0 {
                    a_wire.push(a.cursor_message(), &mut b);
                }
                if b.conn.cons_update_due() && rng.next() % 4 != 0 {
                    b_wire.push(b.cursor_message(), &mut a);
                }
            }
            for _ in 0..IN_FLIGHT {
                a_wire.deliver(&mut b);
                b_wire.deliver(&mut a);
            }
            let msg = a.cursor_message();
            b.receive(msg);
            let msg = b.cursor_message();
            a.receive(msg);
            let len = a.conn.readable();
            a.read(len);
            let len = b.conn.readable();
            b.read(len);
            check_streams_whole(&a, &b);
        }
    }
}
