// SPDX-License-Identifier: GPL-2.0

//! Drives one connection's state machine with arbitrary local operations and CDC messages from
//! an arbitrary (possibly hostile) peer, and checks every step against a model that keeps the
//! four cursors as plain byte counts since the start of the stream.
//!
//! The model decides independently which messages must be accepted, stale or rejected, and what
//! every count ([`Conn::readable`], [`Conn::writable`], ...) must then be; a rejected or stale
//! message must change nothing.

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rsmc_proto::cdc::{self, Flags, Message};
use rsmc_proto::conn::{Changes, Conn};
use rsmc_proto::ring::{Cursor, RingSize, Segments};

fuzz_target!(|data: &[u8]| {
    // Running out of input just ends the sequence.
    let _ = run(&mut Unstructured::new(data));
});

const TOKEN: u32 = 0x5EED;

/// Cursor of the byte `pos` bytes into a stream over a ring of `size` bytes; a position before
/// the stream's start lies at the end of the cursor space, as modular cursors do.
fn cursor(size: u32, pos: i64) -> Cursor {
    let size = i64::from(size);
    let pos = pos.rem_euclid(size << 16);
    Cursor {
        wrap: (pos / size) as u16,
        count: (pos % size) as u32,
    }
}

/// Total length of `segments`, after checking that they start at stream position `pos`, lie in
/// a ring of `size` bytes and, when split, wrap to offset 0.
fn checked_len(segments: Segments, size: u32, pos: i64) -> u32 {
    assert_eq!(segments.first.offset, cursor(size, pos).count);
    assert!(segments.first.len > 0);
    assert!(segments.first.offset + segments.first.len <= size);
    match segments.second {
        None => segments.first.len,
        Some(second) => {
            assert_eq!(segments.first.offset + segments.first.len, size);
            assert_eq!(second.offset, 0);
            assert!(second.len > 0);
            segments.first.len + second.len
        }
    }
}

/// Whether sequence number `a` is newer than `b`: 1 to 2^15 - 1 steps ahead.
fn seq_newer(a: u16, b: u16) -> bool {
    (1..0x8000).contains(&a.wrapping_sub(b))
}

/// A peer cursor: a stream position, or a byte offset outside the ring.
#[derive(Clone, Copy)]
enum PeerCursor {
    At(i64),
    OutOfRing(Cursor),
}

/// What the model expects of a message from the peer.
enum Verdict {
    Rejected,
    Stale,
    Accepted,
}

/// The connection's cursors as stream positions, and its flags.
struct Model {
    own: u32,
    peer: u32,
    prod: i64,
    announced: i64,
    acked: i64,
    peer_cons: i64,
    cons: i64,
    reported: i64,
    peer_prod: i64,
    next_seq: u16,
    last_seq: Option<u16>,
    write_blocked: bool,
    local: Flags,
    peer_flags: Flags,
    /// Producer positions of the messages built, for acknowledgements.
    sent: Vec<i64>,
}

impl Model {
    fn write_shut(&self) -> bool {
        self.local.peer_done_writing || self.local.peer_conn_closed || self.local.peer_conn_abort
    }

    fn peer_done_writing(&self) -> bool {
        self.peer_flags.peer_done_writing || self.peer_flags.peer_conn_closed
    }

    fn readable(&self) -> u32 {
        (self.peer_prod - self.cons) as u32
    }

    fn writable(&self) -> u32 {
        if self.write_shut() || self.peer_flags.peer_conn_abort {
            0
        } else {
            self.peer - (self.prod - self.peer_cons) as u32
        }
    }

    fn unreported(&self) -> u32 {
        (self.cons - self.reported) as u32
    }

    fn cons_update_due(&self) -> bool {
        let unreported = u64::from(self.unreported());
        let ring = u64::from(self.own);
        unreported > 0
            && (unreported * 4 >= ring
                || (self.peer_flags.write_blocked && unreported * 16 >= ring)
                || self.peer_flags.cons_update_requested)
    }

    /// Bytes the peer provably has: those it acknowledged and, even if that acknowledgement is
    /// still to come, those it reported consumed.
    fn acked(&self) -> i64 {
        self.acked.max(self.peer_cons)
    }

    fn verdict(
        &self,
        token: u32,
        seq: u16,
        prod: PeerCursor,
        cons: PeerCursor,
        inline: u32,
    ) -> Verdict {
        if token != TOKEN {
            return Verdict::Rejected;
        }
        if self.last_seq.is_some_and(|last| !seq_newer(seq, last)) {
            return Verdict::Stale;
        }
        let PeerCursor::At(prod) = prod else {
            return Verdict::Rejected;
        };
        if prod < self.peer_prod || prod - self.peer_prod > i64::from(self.own) {
            return Verdict::Rejected;
        }
        // Room this side never reported.
        if prod - self.reported > i64::from(self.own) {
            return Verdict::Rejected;
        }
        if self.peer_done_writing() && prod != self.peer_prod {
            return Verdict::Rejected;
        }
        let PeerCursor::At(cons) = cons else {
            return Verdict::Rejected;
        };
        // Bytes consumed that were never announced.
        if cons < self.peer_cons || cons > self.announced {
            return Verdict::Rejected;
        }
        if i64::from(inline) > prod - self.peer_prod {
            return Verdict::Rejected;
        }
        Verdict::Accepted
    }

    fn check(&self, conn: &Conn) {
        assert_eq!(conn.readable(), self.readable());
        assert_eq!(conn.writable(), self.writable());
        assert_eq!(conn.unannounced(), (self.prod - self.announced) as u32);
        assert_eq!(conn.unreported(), self.unreported());
        assert_eq!(conn.unacked(), (self.prod - self.acked()) as u32);
        assert_eq!(conn.cons_update_due(), self.cons_update_due());
        assert_eq!(conn.peer_done_writing(), self.peer_done_writing());
        assert_eq!(conn.peer_closed(), self.peer_flags.peer_conn_closed);
        assert_eq!(conn.peer_aborted(), self.peer_flags.peer_conn_abort);
        assert_eq!(
            conn.at_eof(),
            self.peer_done_writing() && self.readable() == 0
        );
        assert_eq!(conn.write_shut(), self.write_shut());
        let readable = self.readable();
        match conn.read_segments(0, readable) {
            Some(at) => assert_eq!(checked_len(at, self.own, self.cons), readable),
            None => assert_eq!(readable, 0),
        }
        let writable = self.writable();
        match conn.write_segments(writable) {
            Some(at) => assert_eq!(checked_len(at, self.peer, self.prod), writable),
            None => assert_eq!(writable, 0),
        }
    }
}

fn peer_cursor(u: &mut Unstructured<'_>, size: u32, from: i64) -> Result<PeerCursor> {
    Ok(if u.ratio(1, 16)? {
        let count = u.int_in_range(size..=u32::MAX)?;
        PeerCursor::OutOfRing(Cursor {
            wrap: u.arbitrary()?,
            count,
        })
    } else {
        let span = 2 * i64::from(size);
        PeerCursor::At(from + u.int_in_range(-span..=span)?)
    })
}

fn to_cursor(size: u32, at: PeerCursor) -> Cursor {
    match at {
        PeerCursor::At(pos) => cursor(size, pos),
        PeerCursor::OutOfRing(cursor) => cursor,
    }
}

/// Applies a message from the peer, with the model's verdict checked.
fn receive(u: &mut Unstructured<'_>, conn: &mut Conn, m: &mut Model) -> Result<()> {
    let token = if u.ratio(1, 32)? {
        u.arbitrary()?
    } else {
        TOKEN
    };
    let seq = match m.last_seq {
        Some(last) if u.ratio(7, 8)? => last.wrapping_add(1),
        _ => u.arbitrary()?,
    };
    let prod = peer_cursor(u, m.own, m.peer_prod)?;
    let cons = peer_cursor(u, m.peer, m.peer_cons)?;
    let flags = Flags {
        write_blocked: u.arbitrary()?,
        cons_update_requested: u.arbitrary()?,
        peer_done_writing: u.ratio(1, 8)?,
        peer_conn_closed: u.ratio(1, 16)?,
        peer_conn_abort: u.ratio(1, 32)?,
    };
    let inline = match prod {
        PeerCursor::At(pos) if u.arbitrary()? => {
            let announced = pos - m.peer_prod;
            let most = announced.clamp(0, cdc::MAX_INLINE as i64) as u32;
            u.int_in_range(0..=most + 1)?
        }
        _ => 0,
    };
    let msg = Message {
        seq,
        token,
        prod: to_cursor(m.own, prod),
        cons: to_cursor(m.peer, cons),
        flags,
    };
    let verdict = m.verdict(token, seq, prod, cons, inline);
    let before = conn.clone();
    let result = conn.on_cdc(&msg, inline);
    match verdict {
        Verdict::Rejected => {
            assert!(result.is_err(), "accepted {msg:?} inline {inline}");
            assert_eq!(*conn, before);
        }
        Verdict::Stale => {
            let stale = Changes {
                stale: true,
                ..Changes::default()
            };
            assert_eq!(result, Ok(stale));
            assert_eq!(*conn, before);
        }
        Verdict::Accepted => {
            let changes =
                result.unwrap_or_else(|e| panic!("rejected {msg:?} inline {inline}: {e:?}"));
            let (PeerCursor::At(prod), PeerCursor::At(cons)) = (prod, cons) else {
                unreachable!("the model accepts stream positions only");
            };
            let (readable, writable) = (m.readable(), m.writable());
            let was_done = m.peer_done_writing();
            let was = m.peer_flags;
            m.last_seq = Some(seq);
            m.peer_prod = prod;
            m.peer_cons = cons;
            m.peer_flags = Flags {
                write_blocked: flags.write_blocked,
                cons_update_requested: flags.cons_update_requested,
                peer_done_writing: was.peer_done_writing || flags.peer_done_writing,
                peer_conn_closed: was.peer_conn_closed || flags.peer_conn_closed,
                peer_conn_abort: was.peer_conn_abort || flags.peer_conn_abort,
            };
            let newly_done = !was_done && m.peer_done_writing();
            let newly_aborted = !was.peer_conn_abort && m.peer_flags.peer_conn_abort;
            assert_eq!(
                changes.readable,
                m.readable() > readable || newly_done || newly_aborted
            );
            assert_eq!(changes.writable, m.writable() > writable);
            assert_eq!(changes.peer_done_writing, newly_done);
            assert_eq!(
                changes.peer_closed,
                !was.peer_conn_closed && m.peer_flags.peer_conn_closed
            );
            assert_eq!(changes.peer_aborted, newly_aborted);
            assert!(!changes.stale);
            assert_eq!(changes.cons_update_due, m.cons_update_due());
            match changes.inline_at {
                // The inline bytes are the last the new producer cursor announces.
                Some(at) => assert_eq!(checked_len(at, m.own, prod - i64::from(inline)), inline),
                None => assert_eq!(inline, 0),
            }
        }
    }
    Ok(())
}

/// Builds this side's next message (carrying `inline` bytes, if any) and checks it.
fn send(conn: &mut Conn, m: &mut Model, inline: Option<u32>) {
    let msg = match inline {
        None => conn.next_cdc(),
        Some(len) => {
            let fits = len > 0 && len as usize <= cdc::MAX_INLINE && len <= m.writable();
            let Some(msg) = conn.next_cdc_inline(len) else {
                assert!(!fits);
                return;
            };
            assert!(fits);
            m.prod += i64::from(len);
            msg
        }
    };
    assert_eq!(msg.seq, m.next_seq);
    assert_eq!(msg.token, TOKEN);
    assert_eq!(msg.prod, cursor(m.peer, m.prod));
    assert_eq!(msg.cons, cursor(m.own, m.cons));
    let expected = Flags {
        write_blocked: m.write_blocked && !m.write_shut(),
        ..m.local
    };
    assert_eq!(msg.flags, expected);
    m.next_seq = m.next_seq.wrapping_add(1);
    m.announced = m.prod;
    m.reported = m.cons;
    m.sent.push(m.prod);
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let own = u.int_in_range(1..=64)?;
    let peer = u.int_in_range(1..=64)?;
    let (Some(own_ring), Some(peer_ring)) = (RingSize::new(own), RingSize::new(peer)) else {
        unreachable!("sizes from 1 to 64 are valid");
    };
    let mut conn = Conn::new(own_ring, peer_ring, TOKEN);
    let mut m = Model {
        own,
        peer,
        prod: 0,
        announced: 0,
        acked: 0,
        peer_cons: 0,
        cons: 0,
        reported: 0,
        peer_prod: 0,
        next_seq: 0,
        last_seq: None,
        write_blocked: false,
        local: Flags::default(),
        peer_flags: Flags::default(),
        sent: Vec::new(),
    };
    while !u.is_empty() {
        match u.int_in_range(0..=9)? {
            0 => {
                let len = u.int_in_range(0..=2 * peer)?;
                let fits = len > 0 && len <= m.writable();
                match conn.produce(len) {
                    Some(at) => {
                        assert!(fits);
                        assert_eq!(checked_len(at, peer, m.prod), len);
                        m.prod += i64::from(len);
                    }
                    None => assert!(!fits),
                }
            }
            1 => {
                let len = u.int_in_range(0..=2 * own)?;
                let fits = len <= m.readable();
                assert_eq!(conn.consume(len), fits);
                if fits {
                    m.cons += i64::from(len);
                }
            }
            2 => send(&mut conn, &mut m, None),
            3 => {
                let len = u.int_in_range(0..=cdc::MAX_INLINE as u32 + 1)?;
                send(&mut conn, &mut m, Some(len));
            }
            4 => {
                m.write_blocked = u.arbitrary()?;
                conn.set_write_blocked(m.write_blocked);
                assert_eq!(conn.write_blocked(), m.write_blocked);
            }
            5 => match u.int_in_range(0..=2)? {
                0 => {
                    conn.shutdown_write();
                    m.local.peer_done_writing = true;
                }
                1 => {
                    conn.close();
                    m.local.peer_done_writing = true;
                    m.local.peer_conn_closed = true;
                }
                _ => {
                    conn.abort();
                    m.local.peer_conn_abort = true;
                }
            },
            6 => {
                // Send completions come in order; one may be reaped after a later one's.
                let Some(&pos) = u.choose(&m.sent).ok() else {
                    continue;
                };
                conn.on_acked(cursor(peer, pos));
                m.acked = m.acked.max(pos);
            }
            _ => receive(u, &mut conn, &mut m)?,
        }
        m.check(&conn);
    }
    Ok(())
}
