// SPDX-License-Identifier: GPL-2.0

//! Cursor arithmetic for the RDMA receive ring.
//!
//! Each side of a connection owns a receive ring that the peer fills with RDMA WRITEs. A position
//! in a ring is a [`Cursor`]: the byte offset `count` plus a `wrap` counter bumped every time the
//! offset passes the end of the ring. The wrap counter is what tells a full ring (producer one
//! whole ring ahead of the consumer) from an empty one (both equal). Because it is only 16 bits
//! wide, cursors are compared modulo `2^16 * size`; any two cursors that matter to the protocol
//! are at most one ring apart, far below half of that space, so the comparison is unambiguous.
//!
//! All ring-size-dependent operations are methods of [`RingSize`], whose constructor guarantees
//! a size the arithmetic below cannot overflow on. The size is held as a [`NonZeroU32`] and
//! divisions by it use [`NonZeroU64`], so that none of the arithmetic has a division-by-zero
//! panic path.

use core::num::{NonZeroU32, NonZeroU64};

/// Smallest ring size the handshake negotiates, in bytes.
pub const RING_SIZE_MIN: u32 = 16 * 1024;

/// Largest ring size the handshake negotiates (and the largest [`RingSize`]), in bytes.
pub const RING_SIZE_MAX: u32 = 1024 * 1024;

/// Granule of negotiated ring sizes: rings are built from whole 4 KiB pages.
pub const RING_SIZE_ALIGN: u32 = 4096;

/// A position in a ring: byte offset plus wrap counter.
///
/// A cursor is valid for a ring of `size` bytes only if `count < size`; cursors received from the
/// peer must be checked with [`RingSize::check_peer_producer`] or
/// [`RingSize::check_peer_consumer`] before use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Number of times the cursor passed the end of the ring, modulo 2^16.
    pub wrap: u16,
    /// Byte offset in the ring.
    pub count: u32,
}

impl Cursor {
    /// The start of a fresh ring.
    pub const ZERO: Cursor = Cursor { wrap: 0, count: 0 };
}

/// A contiguous byte range of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Offset of the first byte in the ring.
    pub offset: u32,
    /// Number of bytes.
    pub len: u32,
}

/// A ring access split at the end of the ring: `first` starts at the requested offset, and
/// `second`, present only when the access wraps, continues at offset 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    /// The part from the requested offset up to at most the end of the ring.
    pub first: Segment,
    /// The part that wrapped to the start of the ring, if any; never empty when present.
    pub second: Option<Segment>,
}

impl Segments {
    /// Returns the segments in ring-access order.
    pub fn iter(self) -> impl Iterator<Item = Segment> {
        core::iter::once(self.first).chain(self.second)
    }
}

/// Why a cursor reported by the peer was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorError {
    /// The byte offset is not inside the ring.
    CountOutOfRange,
    /// The cursor moved backwards: behind the peer's previous report, or behind a position this
    /// side has already consumed or sent.
    Regressed,
    /// The cursor claims more than is possible: more than a full ring of unread data, or data
    /// consumed that was never produced.
    TooFarAhead,
}

/// Number of values of the 16-bit wrap counter, that is, of rings in the cursor space; checked at
/// compile time.
const WRAPS: NonZeroU64 = match NonZeroU64::new(1 << u16::BITS) {
    Some(wraps) => wraps,
    None => panic!(),
};

/// Where a cursor lies relative to the window `[from, from + size]`.
enum Span {
    /// Inside the window.
    Within,
    /// Before `from`.
    Behind,
    /// After `from + size`.
    Beyond,
}

/// Size of a ring in bytes, between 1 and [`RING_SIZE_MAX`].
///
/// Sizes need not be powers of two. Any size of this type is usable for the cursor arithmetic;
/// only sizes accepted by [`RingSize::negotiable`] are exchanged in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSize(NonZeroU32);

impl RingSize {
    /// The largest ring size; checked at compile time.
    const MAX: Self = match Self::new(RING_SIZE_MAX) {
        Some(size) => size,
        None => panic!(),
    };

    /// Returns the ring size of `bytes` bytes, or `None` if it is 0 or above [`RING_SIZE_MAX`].
    pub const fn new(bytes: u32) -> Option<Self> {
        match NonZeroU32::new(bytes) {
            Some(bytes) if bytes.get() <= RING_SIZE_MAX => Some(Self(bytes)),
            _ => None,
        }
    }

    /// Returns the ring size of `bytes` bytes if it may appear in a handshake: within
    /// [`RING_SIZE_MIN`]..=[`RING_SIZE_MAX`] and a multiple of [`RING_SIZE_ALIGN`].
    pub const fn negotiable(bytes: u32) -> Option<Self> {
        if bytes >= RING_SIZE_MIN && bytes % RING_SIZE_ALIGN == 0 {
            Self::new(bytes)
        } else {
            None
        }
    }

    /// Returns the negotiable ring size closest to a socket buffer size (`SO_SNDBUF` or
    /// `SO_RCVBUF` as stored in the socket): clamped to the limits, then rounded up to whole
    /// pages.
    pub const fn from_sock_buf(bytes: u32) -> Self {
        let clamped = if bytes < RING_SIZE_MIN {
            RING_SIZE_MIN
        } else if bytes > RING_SIZE_MAX {
            RING_SIZE_MAX
        } else {
            bytes
        };
        // Cannot overflow or exceed the maximum: the maximum is itself a multiple of the granule.
        // Nor can it be 0, as the minimum is not: `new` always succeeds, and the fallback only
        // spares a panic path (were it taken, the maximum would still be the clamped size).
        match Self::new(clamped.next_multiple_of(RING_SIZE_ALIGN)) {
            Some(size) => size,
            None => Self::MAX,
        }
    }

    /// Returns the size in bytes.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// Returns the size in bytes as a divisor for 64-bit cursor arithmetic.
    fn wide(self) -> NonZeroU64 {
        NonZeroU64::from(self.0)
    }

    /// Returns whether this size may appear in a handshake (see [`RingSize::negotiable`]).
    pub const fn is_negotiable(self) -> bool {
        Self::negotiable(self.get()).is_some()
    }

    /// Returns whether `cursor` points inside this ring.
    pub const fn contains(self, cursor: Cursor) -> bool {
        cursor.count < self.get()
    }

    /// Returns `cursor` moved forward by `n` bytes, bumping the wrap counter (modulo 2^16) once
    /// per pass over the end of the ring.
    pub fn advance(self, cursor: Cursor, n: u32) -> Cursor {
        let size = self.wide();
        let total = u64::from(cursor.count) + u64::from(n);
        // The remainder is below `size`, so it fits; the wrap counter is defined modulo 2^16,
        // hence the truncation of the number of passes.
        Cursor {
            wrap: cursor.wrap.wrapping_add((total / size) as u16),
            count: (total % size) as u32,
        }
    }

    /// Returns how many bytes `new` is ahead of `old`, or `None` if either cursor is outside the
    /// ring, `new` is behind `old`, or `new` is more than one ring ahead of `old`.
    pub fn diff(self, old: Cursor, new: Cursor) -> Option<u32> {
        if !self.contains(old) || !self.contains(new) {
            return None;
        }
        match self.span(old, new) {
            // `Within` means at most `self.get()` bytes, which fits.
            Span::Within => Some(self.forward(old, new) as u32),
            Span::Behind | Span::Beyond => None,
        }
    }

    /// Returns the number of bytes a reader at `cons` may consume from a ring whose writer has
    /// reached `prod`.
    ///
    /// Inconsistent cursors (see [`RingSize::diff`]) yield 0, so a bug or a bad peer can never make
    /// the reader consume bytes that were not written.
    pub fn readable(self, cons: Cursor, prod: Cursor) -> u32 {
        self.diff(cons, prod).unwrap_or(0)
    }

    /// Returns the number of bytes a writer at `prod` may write into the peer's ring without
    /// overwriting data the peer has not consumed, given the peer's last reported consumer
    /// cursor `peer_cons`.
    ///
    /// Inconsistent cursors (see [`RingSize::diff`]) yield 0, so the writer stops instead of
    /// overwriting unread data.
    pub fn writable(self, prod: Cursor, peer_cons: Cursor) -> u32 {
        self.diff(peer_cons, prod)
            .and_then(|used| self.get().checked_sub(used))
            .unwrap_or(0)
    }

    /// Splits an access of `len` bytes starting at ring offset `offset` into at most two
    /// contiguous segments, wrapping at the end of the ring.
    ///
    /// Returns `None` if `offset` is outside the ring or `len` exceeds the ring size.
    pub fn split(self, offset: u32, len: u32) -> Option<Segments> {
        if len > self.get() {
            return None;
        }
        let to_end = self.get().checked_sub(offset).filter(|&n| n > 0)?;
        Some(if len <= to_end {
            Segments {
                first: Segment { offset, len },
                second: None,
            }
        } else {
            Segments {
                first: Segment {
                    offset,
                    len: to_end,
                },
                second: Some(Segment {
                    offset: 0,
                    len: len - to_end,
                }),
            }
        })
    }

    /// Checks a producer cursor `new` that the peer reported for this side's receive ring.
    ///
    /// `prev` is the peer's previous producer cursor and `cons` this side's consumer cursor. The
    /// new cursor must not move backwards from `prev` nor leave more than a full ring of unread
    /// data ahead of `cons`.
    pub fn check_peer_producer(
        self,
        prev: Cursor,
        new: Cursor,
        cons: Cursor,
    ) -> Result<(), CursorError> {
        if !self.contains(new) {
            return Err(CursorError::CountOutOfRange);
        }
        self.check_progress(prev, new)?;
        match self.span(cons, new) {
            Span::Within => Ok(()),
            Span::Behind => Err(CursorError::Regressed),
            Span::Beyond => Err(CursorError::TooFarAhead),
        }
    }

    /// Checks a consumer cursor `new` that the peer reported for its own receive ring, which this
    /// side writes.
    ///
    /// `prev` is the peer's previous consumer cursor and `prod` this side's producer cursor. The
    /// new cursor must not move backwards from `prev` nor claim bytes beyond `prod`.
    pub fn check_peer_consumer(
        self,
        prev: Cursor,
        new: Cursor,
        prod: Cursor,
    ) -> Result<(), CursorError> {
        if !self.contains(new) {
            return Err(CursorError::CountOutOfRange);
        }
        self.check_progress(prev, new)?;
        // Seen from `new`, the producer must lie within one ring ahead.
        match self.span(new, prod) {
            Span::Within => Ok(()),
            Span::Behind => Err(CursorError::TooFarAhead),
            Span::Beyond => Err(CursorError::Regressed),
        }
    }

    /// Fails if `new` is behind `prev` or more than a ring ahead of it.
    fn check_progress(self, prev: Cursor, new: Cursor) -> Result<(), CursorError> {
        match self.span(prev, new) {
            Span::Within => Ok(()),
            Span::Behind => Err(CursorError::Regressed),
            Span::Beyond => Err(CursorError::TooFarAhead),
        }
    }

    /// Number of distinct cursor positions: `2^16 * size`, at most 2^36.
    fn space(self) -> NonZeroU64 {
        // Cannot saturate: the product is at most 2^36.
        self.wide().saturating_mul(WRAPS)
    }

    /// Linear position of `cursor` in the cursor space.
    fn position(self, cursor: Cursor) -> u64 {
        // Reduced modulo the space so that even an out-of-ring `count` cannot make `forward`
        // underflow.
        (u64::from(cursor.wrap) * u64::from(self.get()) + u64::from(cursor.count)) % self.space()
    }

    /// Distance from `from` forward to `to`, modulo the cursor space.
    fn forward(self, from: Cursor, to: Cursor) -> u64 {
        (self.position(to) + self.space().get() - self.position(from)) % self.space()
    }

    /// Classifies `to` against the window `[from, from + size]`: anything in the half of the
    /// cursor space ahead of `from` counts as ahead, the other half as behind.
    fn span(self, from: Cursor, to: Cursor) -> Span {
        let ahead = self.forward(from, to);
        if ahead <= u64::from(self.get()) {
            Span::Within
        } else if ahead < self.space().get() / 2 {
            Span::Beyond
        } else {
            Span::Behind
        }
    }
}

#[cfg(any(test, CONFIG_KUNIT))]
#[cfg_attr(CONFIG_KUNIT, kernel::prelude::kunit_tests(rsmc_proto_ring))]
mod tests {
    use super::super::test_rng::XorShift;
    use super::*;

    /// Returns the ring size of `bytes` bytes; for constants only, so that an invalid size fails
    /// the build.
    const fn size(bytes: u32) -> RingSize {
        match RingSize::new(bytes) {
            Some(ring) => ring,
            None => panic!(),
        }
    }

    /// Cursor a model ring reaches after `total` bytes from `Cursor::ZERO`.
    fn model_cursor(ring: RingSize, total: u64) -> Cursor {
        let size = ring.wide();
        Cursor {
            wrap: ((total / size) % 0x1_0000) as u16,
            count: (total % size) as u32,
        }
    }

    #[test]
    fn ring_size_limits() {
        assert_eq!(RingSize::new(0), None);
        assert_eq!(RingSize::new(1).map(RingSize::get), Some(1));
        assert_eq!(RingSize::new(RING_SIZE_MAX + 1), None);
        assert_eq!(RingSize::negotiable(RING_SIZE_MIN - RING_SIZE_ALIGN), None);
        assert_eq!(RingSize::negotiable(RING_SIZE_MIN + 1), None);
        assert_eq!(RingSize::negotiable(RING_SIZE_MAX + RING_SIZE_ALIGN), None);
        assert!(RingSize::negotiable(RING_SIZE_MIN).is_some());
        assert!(RingSize::negotiable(RING_SIZE_MAX).is_some());
        assert!(RingSize::negotiable(20 * 1024).is_some());
        assert_eq!(
            RingSize::new(1000).map(RingSize::is_negotiable),
            Some(false)
        );
    }

    #[test]
    fn sock_buf_clamped_and_page_rounded() {
        assert_eq!(RingSize::from_sock_buf(0).get(), RING_SIZE_MIN);
        assert_eq!(RingSize::from_sock_buf(RING_SIZE_MIN + 1).get(), 20 * 1024);
        assert_eq!(RingSize::from_sock_buf(65536).get(), 65536);
        assert_eq!(RingSize::from_sock_buf(212_992).get(), 212_992);
        assert_eq!(RingSize::from_sock_buf(212_993).get(), 217_088);
        assert_eq!(
            RingSize::from_sock_buf(RING_SIZE_MAX - 1).get(),
            RING_SIZE_MAX
        );
        assert_eq!(RingSize::from_sock_buf(u32::MAX).get(), RING_SIZE_MAX);
        let mut bytes = 0u32;
        while bytes < 2 * RING_SIZE_MAX {
            assert!(RingSize::from_sock_buf(bytes).is_negotiable());
            bytes += 999;
        }
    }

    #[test]
    fn wraps_at_ring_end() {
        let ring = const { size(100) };
        let c = ring.advance(Cursor { wrap: 3, count: 90 }, 10);
        assert_eq!(c, Cursor { wrap: 4, count: 0 });
        let c = ring.advance(Cursor { wrap: 3, count: 90 }, 15);
        assert_eq!(c, Cursor { wrap: 4, count: 5 });
        let c = ring.advance(Cursor { wrap: 3, count: 90 }, 9);
        assert_eq!(c, Cursor { wrap: 3, count: 99 });
        let c = ring.advance(Cursor { wrap: 3, count: 90 }, 0);
        assert_eq!(c, Cursor { wrap: 3, count: 90 });
        // Several passes in one step (only possible for callers advancing by more than a ring).
        let c = ring.advance(Cursor::ZERO, 250);
        assert_eq!(c, Cursor { wrap: 2, count: 50 });
        assert_eq!(ring.diff(Cursor { wrap: 3, count: 90 }, c), None);
        assert_eq!(
            ring.diff(Cursor { wrap: 3, count: 90 }, Cursor { wrap: 4, count: 5 }),
            Some(15)
        );
    }

    #[test]
    fn empty_and_full() {
        let ring = const { size(RING_SIZE_MIN) };
        let cons = Cursor {
            wrap: 7,
            count: 100,
        };
        // Empty: producer equals consumer.
        assert_eq!(ring.readable(cons, cons), 0);
        assert_eq!(ring.writable(cons, cons), RING_SIZE_MIN);
        // Full: producer exactly one ring ahead; only the wrap counter differs.
        let full = ring.advance(cons, RING_SIZE_MIN);
        assert_eq!(
            full,
            Cursor {
                wrap: 8,
                count: 100
            }
        );
        assert_eq!(ring.readable(cons, full), RING_SIZE_MIN);
        assert_eq!(ring.writable(full, cons), 0);
        // One byte short of full.
        let almost = ring.advance(cons, RING_SIZE_MIN - 1);
        assert_eq!(ring.readable(cons, almost), RING_SIZE_MIN - 1);
        assert_eq!(ring.writable(almost, cons), 1);
    }

    #[test]
    fn inconsistent_cursors_fail_closed() {
        let ring = const { size(100) };
        let cons = Cursor { wrap: 1, count: 50 };
        let behind = Cursor { wrap: 1, count: 49 };
        let past_full = Cursor { wrap: 2, count: 51 };
        let outside = Cursor {
            wrap: 1,
            count: 100,
        };
        assert_eq!(ring.diff(cons, behind), None);
        assert_eq!(ring.readable(cons, behind), 0);
        assert_eq!(ring.readable(cons, past_full), 0);
        assert_eq!(ring.readable(cons, outside), 0);
        assert_eq!(ring.writable(past_full, cons), 0);
        assert_eq!(ring.writable(behind, cons), 0);
        assert_eq!(ring.writable(outside, cons), 0);
        let max = Cursor {
            wrap: u16::MAX,
            count: u32::MAX,
        };
        assert_eq!(ring.readable(max, max), 0);
    }

    #[test]
    fn wrap_counter_overflow() {
        let ring = const { size(RING_SIZE_MAX) };
        let last = Cursor {
            wrap: u16::MAX,
            count: RING_SIZE_MAX - 10,
        };
        let next = ring.advance(last, 20);
        assert_eq!(next, Cursor { wrap: 0, count: 10 });
        assert_eq!(ring.diff(last, next), Some(20));
        assert_eq!(ring.diff(next, last), None);
        assert_eq!(ring.readable(last, next), 20);
        assert_eq!(ring.writable(next, last), RING_SIZE_MAX - 20);
        // Full ring straddling the wrap-counter overflow.
        let full = ring.advance(last, RING_SIZE_MAX);
        assert_eq!(full.wrap, 0);
        assert_eq!(ring.readable(last, full), RING_SIZE_MAX);
        assert_eq!(ring.writable(full, last), 0);
        assert_eq!(ring.check_peer_producer(last, full, last), Ok(()));
    }

    #[test]
    fn segment_split() {
        let ring = const { size(100) };
        let whole = ring.split(0, 100);
        assert_eq!(
            whole,
            Some(Segments {
                first: Segment {
                    offset: 0,
                    len: 100
                },
                second: None,
            })
        );
        let to_end = ring.split(60, 40);
        assert_eq!(
            to_end,
            Some(Segments {
                first: Segment {
                    offset: 60,
                    len: 40
                },
                second: None,
            })
        );
        let wrapped = ring.split(60, 41);
        assert_eq!(
            wrapped,
            Some(Segments {
                first: Segment {
                    offset: 60,
                    len: 40
                },
                second: Some(Segment { offset: 0, len: 1 }),
            })
        );
        let last_byte = ring.split(99, 100);
        assert_eq!(
            last_byte,
            Some(Segments {
                first: Segment { offset: 99, len: 1 },
                second: Some(Segment { offset: 0, len: 99 }),
            })
        );
        let empty = ring.split(42, 0);
        assert_eq!(
            empty,
            Some(Segments {
                first: Segment { offset: 42, len: 0 },
                second: None,
            })
        );
        assert_eq!(ring.split(100, 1), None);
        assert_eq!(ring.split(0, 101), None);
        assert_eq!(ring.split(u32::MAX, u32::MAX), None);
    }

    #[test]
    fn peer_producer_checks() {
        let ring = const { size(100) };
        let cons = Cursor { wrap: 5, count: 80 };
        let prev = Cursor { wrap: 5, count: 90 };
        let ok = Cursor { wrap: 6, count: 80 };
        assert_eq!(ring.check_peer_producer(prev, ok, cons), Ok(()));
        assert_eq!(ring.check_peer_producer(prev, prev, cons), Ok(()));
        let over = Cursor { wrap: 6, count: 81 };
        assert_eq!(
            ring.check_peer_producer(prev, over, cons),
            Err(CursorError::TooFarAhead)
        );
        let back = Cursor { wrap: 5, count: 89 };
        assert_eq!(
            ring.check_peer_producer(prev, back, cons),
            Err(CursorError::Regressed)
        );
        let behind_cons = Cursor { wrap: 5, count: 79 };
        assert_eq!(
            ring.check_peer_producer(behind_cons, behind_cons, cons),
            Err(CursorError::Regressed)
        );
        let outside = Cursor {
            wrap: 5,
            count: 100,
        };
        assert_eq!(
            ring.check_peer_producer(prev, outside, cons),
            Err(CursorError::CountOutOfRange)
        );
        let far = Cursor {
            wrap: 5 + 0x4000,
            count: 0,
        };
        assert_eq!(
            ring.check_peer_producer(prev, far, cons),
            Err(CursorError::TooFarAhead)
        );
    }

    #[test]
    fn peer_consumer_checks() {
        let ring = const { size(100) };
        let prod = Cursor { wrap: 9, count: 10 };
        let prev = Cursor { wrap: 8, count: 50 };
        let ok = Cursor { wrap: 8, count: 99 };
        assert_eq!(ring.check_peer_consumer(prev, ok, prod), Ok(()));
        assert_eq!(ring.check_peer_consumer(prev, prod, prod), Ok(()));
        assert_eq!(ring.check_peer_consumer(prev, prev, prod), Ok(()));
        let beyond_prod = Cursor { wrap: 9, count: 11 };
        assert_eq!(
            ring.check_peer_consumer(prev, beyond_prod, prod),
            Err(CursorError::TooFarAhead)
        );
        let back = Cursor { wrap: 8, count: 49 };
        assert_eq!(
            ring.check_peer_consumer(prev, back, prod),
            Err(CursorError::Regressed)
        );
        // Not behind the previous report, yet more than a ring behind what was produced.
        let stale = Cursor { wrap: 8, count: 9 };
        assert_eq!(
            ring.check_peer_consumer(stale, stale, prod),
            Err(CursorError::Regressed)
        );
        let outside = Cursor {
            wrap: 8,
            count: 1000,
        };
        assert_eq!(
            ring.check_peer_consumer(prev, outside, prod),
            Err(CursorError::CountOutOfRange)
        );
    }

    /// Random writes and reads against a model that only counts bytes, starting just before the
    /// wrap counter overflows, for several ring sizes.
    #[test]
    fn random_ops_match_model() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let rings = const {
            [
                size(1),
                size(7),
                size(61),
                size(4096),
                size(RING_SIZE_MIN),
                size(RING_SIZE_MAX),
            ]
        };
        for ring in rings {
            let bytes = ring.get();
            let size64 = u64::from(bytes);
            // Start a few rings before the wrap counter overflows.
            let start = size64 * 0xFFF0 + size64 / 3;
            let mut written = start;
            let mut read = start;
            let mut prod = model_cursor(ring, start);
            let mut cons = prod;
            let mut peer_prod = prod;
            let mut peer_cons = cons;
            for _ in 0..1000 {
                let used = (written - read) as u32;
                assert_eq!(ring.readable(cons, prod), used);
                assert_eq!(ring.writable(prod, cons), bytes - used);
                assert_eq!(ring.diff(cons, prod), Some(used));
                if rng.next() % 2 == 0 {
                    let n = rng.up_to(bytes - used);
                    let segs = ring.split(prod.count, n);
                    let first_len = segs.map_or(0, |s| s.first.len);
                    let second_len = segs.and_then(|s| s.second).map_or(0, |s| s.len);
                    assert!(segs.is_some());
                    assert_eq!(first_len + second_len, n);
                    assert!(u64::from(prod.count) + u64::from(first_len) <= size64);
                    written += u64::from(n);
                    prod = ring.advance(prod, n);
                    // The receiver accepts every cursor an honest writer produces.
                    assert_eq!(ring.check_peer_producer(peer_prod, prod, cons), Ok(()));
                    peer_prod = prod;
                } else {
                    let n = rng.up_to(used);
                    read += u64::from(n);
                    cons = ring.advance(cons, n);
                    // The writer accepts every cursor an honest reader reports.
                    assert_eq!(ring.check_peer_consumer(peer_cons, cons, prod), Ok(()));
                    peer_cons = cons;
                }
                assert_eq!(prod, model_cursor(ring, written));
                assert_eq!(cons, model_cursor(ring, read));
                // One byte past a full ring is always refused.
                let over = ring.advance(cons, bytes + 1);
                assert_eq!(
                    ring.check_peer_producer(peer_prod, over, cons),
                    Err(CursorError::TooFarAhead)
                );
            }
        }
    }

    /// Pushes a byte stream through a small ring in random chunks, copying with `split`, and
    /// checks that every byte comes out once and in order.
    #[test]
    fn bytes_round_trip_through_ring() {
        const SIZE: usize = 61;
        let ring = const { size(SIZE as u32) };
        let mut buf = [0u8; SIZE];
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        let mut prod = Cursor {
            wrap: u16::MAX - 2,
            count: 17,
        };
        let mut cons = prod;
        let mut next_out = 0u32;
        let mut next_in = 0u32;
        let mut staging = [0u8; SIZE];
        for _ in 0..3000 {
            if rng.next() % 2 == 0 {
                let n = rng.up_to(ring.writable(prod, cons));
                for byte in staging.iter_mut().take(n as usize) {
                    *byte = (next_out % 251) as u8;
                    next_out += 1;
                }
                let segs = ring.split(prod.count, n);
                let mut src = 0usize;
                for seg in segs.into_iter().flat_map(Segments::iter) {
                    let (at, len) = (seg.offset as usize, seg.len as usize);
                    buf[at..at + len].copy_from_slice(&staging[src..src + len]);
                    src += len;
                }
                assert_eq!(src, n as usize);
                prod = ring.advance(prod, n);
            } else {
                let n = rng.up_to(ring.readable(cons, prod));
                let segs = ring.split(cons.count, n);
                let mut got = 0u32;
                for seg in segs.into_iter().flat_map(Segments::iter) {
                    for &byte in &buf[seg.offset as usize..(seg.offset + seg.len) as usize] {
                        assert_eq!(byte, (next_in % 251) as u8);
                        next_in += 1;
                        got += 1;
                    }
                }
                assert_eq!(got, n);
                cons = ring.advance(cons, n);
            }
            assert_eq!(ring.readable(cons, prod), next_out - next_in);
        }
        // Drain what is left.
        let n = ring.readable(cons, prod);
        let segs = ring.split(cons.count, n);
        for seg in segs.into_iter().flat_map(Segments::iter) {
            for &byte in &buf[seg.offset as usize..(seg.offset + seg.len) as usize] {
                assert_eq!(byte, (next_in % 251) as u8);
                next_in += 1;
            }
        }
        assert_eq!(next_in, next_out);
        assert!(next_out > 10 * SIZE as u32);
    }
}
