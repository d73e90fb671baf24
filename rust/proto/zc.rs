// SPDX-License-Identifier: GPL-2.0

//! Completion cookies of `MSG_ZEROCOPY` sends: the per-socket FIFO of the cookies whose sends
//! completed, read from the error queue in batches.
//!
//! The queue keeps only indices; the cookies live in storage the caller owns (a slice of
//! `capacity` slots), so the same code runs in the module and on the host. A send that carries
//! a cookie reserves a slot before it is posted, so its completion always finds room: no cookie
//! is ever dropped, and a socket with `capacity` cookies outstanding (in flight or unread)
//! refuses further cookie sends instead.

use core::ops::Range;

/// The FIFO's indices into caller storage of `capacity` slots.
///
/// # Invariants
///
/// `queued + reserved <= capacity`, and `head < capacity` unless `capacity` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieQueue {
    capacity: u32,
    /// Slot of the oldest completed cookie.
    head: u32,
    /// Completed cookies not yet read.
    queued: u32,
    /// Sends with a cookie in flight.
    reserved: u32,
}

/// A completion came for a send that had not reserved a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReserved;

/// What one error-queue read takes from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The storage slots of the first cookies returned, in completion order.
    pub first: Range<usize>,
    /// The slots of the rest, after `first`: non-empty only when the batch wraps around the
    /// end of the storage.
    pub second: Range<usize>,
    /// How many cookies were completed and unread before this read: more than the batch holds
    /// when the caller's buffer was too small (the rest stay queued).
    pub pending: u32,
}

impl Batch {
    /// The number of cookies in the batch.
    pub fn len(&self) -> u32 {
        // CAST: Both ranges lie within storage of at most `u32::MAX` slots.
        (self.first.len() + self.second.len()) as u32
    }

    /// Whether the batch holds no cookie.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty() && self.second.is_empty()
    }

    /// Whether the caller's buffer could not take every pending cookie.
    pub fn truncated(&self) -> bool {
        self.len() < self.pending
    }
}

impl CookieQueue {
    /// An empty queue over storage of `capacity` slots.
    pub const fn new(capacity: u32) -> Self {
        Self {
            capacity,
            head: 0,
            queued: 0,
            reserved: 0,
        }
    }

    /// The number of storage slots.
    pub const fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Completed cookies not read yet.
    pub const fn pending(&self) -> u32 {
        self.queued
    }

    /// Sends with a cookie that have not completed yet.
    pub const fn in_flight(&self) -> u32 {
        self.reserved
    }

    /// Reserves the slot of a send about to carry a cookie; false if every slot is taken by a
    /// cookie in flight or unread.
    pub fn reserve(&mut self) -> bool {
        if self.queued + self.reserved >= self.capacity {
            return false;
        }
        self.reserved += 1;
        true
    }

    /// Gives back the reservation of a send that was never posted.
    pub fn unreserve(&mut self) -> Result<(), NotReserved> {
        self.reserved = self.reserved.checked_sub(1).ok_or(NotReserved)?;
        Ok(())
    }

    /// Queues the cookie of a completed send, in the slot its reservation kept; `storage` is
    /// the caller's `capacity` slots.
    pub fn complete(&mut self, storage: &mut [u32], cookie: u32) -> Result<(), NotReserved> {
        if self.reserved == 0 {
            return Err(NotReserved);
        }
        let slot = self.slot(self.queued);
        *storage.get_mut(slot).ok_or(NotReserved)? = cookie;
        self.reserved -= 1;
        self.queued += 1;
        Ok(())
    }

    /// Takes up to `room` cookies, oldest first; with `peek` they stay queued. The caller copies
    /// the batch's slots out of its storage before the next [`CookieQueue::complete`].
    pub fn read(&mut self, room: u32, peek: bool) -> Batch {
        let count = self.queued.min(room);
        let head = self.head as usize;
        let end = (self.head as usize + count as usize).min(self.capacity as usize);
        let first = head..end;
        let second = 0..(count as usize - first.len());
        let batch = Batch {
            first,
            second,
            pending: self.queued,
        };
        if !peek && count > 0 {
            self.head = self.slot(count) as u32;
            self.queued -= count;
        }
        batch
    }

    /// Storage slot of the `n`-th cookie from the head.
    fn slot(&self, n: u32) -> usize {
        // Both below `capacity`, so the sum does not overflow a `u64`.
        ((u64::from(self.head) + u64::from(n)) % u64::from(self.capacity.max(1))) as usize
    }
}

#[cfg(any(test, CONFIG_KUNIT))]
#[cfg_attr(CONFIG_KUNIT, kernel::prelude::kunit_tests(rsmc_proto_zc))]
mod tests {
    use super::super::test_rng::XorShift;
    use super::*;

    const CAPACITY: usize = 8;

    /// The cookies of `batch`, copied out of `storage` into `out`; returns how many.
    fn copy_out(batch: &Batch, storage: &[u32], out: &mut [u32]) -> usize {
        let mut n = 0;
        for slot in Iterator::chain(batch.first.clone(), batch.second.clone()) {
            out[n] = storage[slot];
            n += 1;
        }
        n
    }

    #[test]
    fn reservations_bound_the_queue() {
        let mut q = CookieQueue::new(2);
        let mut storage = [0u32; 2];
        assert!(q.reserve());
        assert!(q.reserve());
        assert!(!q.reserve());
        q.complete(&mut storage, 7).unwrap();
        // A completed but unread cookie still holds its slot.
        assert!(!q.reserve());
        assert_eq!(q.read(1, false).len(), 1);
        assert!(q.reserve());
        assert_eq!(q.unreserve(), Ok(()));
        q.complete(&mut storage, 8).unwrap();
        assert_eq!(q.complete(&mut storage, 9), Err(NotReserved));
        assert_eq!(q.unreserve(), Err(NotReserved));
        assert_eq!((q.pending(), q.in_flight()), (1, 0));
    }

    #[test]
    fn zero_capacity_takes_no_cookie() {
        let mut q = CookieQueue::new(0);
        assert!(!q.reserve());
        assert_eq!(q.complete(&mut [], 1), Err(NotReserved));
        assert!(q.read(4, false).is_empty());
    }

    #[test]
    fn small_buffer_truncates_and_keeps_the_rest() {
        let mut q = CookieQueue::new(CAPACITY as u32);
        let mut storage = [0u32; CAPACITY];
        let mut out = [0u32; CAPACITY];
        for cookie in 10..15 {
            assert!(q.reserve());
            q.complete(&mut storage, cookie).unwrap();
        }
        let batch = q.read(2, false);
        assert!(batch.truncated());
        assert_eq!((batch.len(), batch.pending), (2, 5));
        assert_eq!(copy_out(&batch, &storage, &mut out), 2);
        assert_eq!(&out[..2], &[10, 11]);
        // No room at all: nothing taken, and the caller learns how many are pending.
        let batch = q.read(0, false);
        assert!(batch.is_empty() && batch.truncated());
        assert_eq!(batch.pending, 3);
        let batch = q.read(8, false);
        assert!(!batch.truncated());
        assert_eq!(copy_out(&batch, &storage, &mut out), 3);
        assert_eq!(&out[..3], &[12, 13, 14]);
        assert!(q.read(8, false).is_empty());
    }

    #[test]
    fn peek_leaves_the_batch_queued() {
        let mut q = CookieQueue::new(CAPACITY as u32);
        let mut storage = [0u32; CAPACITY];
        let mut out = [0u32; CAPACITY];
        for cookie in [5, 6, 7] {
            assert!(q.reserve());
            q.complete(&mut storage, cookie).unwrap();
        }
        let peeked = q.read(2, true);
        assert!(peeked.truncated());
        assert_eq!(q.pending(), 3);
        // The retry with room for all of them gets the same first cookies, then the rest.
        let batch = q.read(peeked.pending, false);
        assert_eq!(batch.first.start, peeked.first.start);
        assert_eq!(copy_out(&batch, &storage, &mut out), 3);
        assert_eq!(&out[..3], &[5, 6, 7]);
    }

    #[test]
    fn batch_wraps_around_the_storage() {
        let mut q = CookieQueue::new(4);
        let mut storage = [0u32; 4];
        let mut out = [0u32; 4];
        for cookie in 0..3 {
            assert!(q.reserve());
            q.complete(&mut storage, cookie).unwrap();
        }
        assert_eq!(q.read(3, false).len(), 3);
        for cookie in 3..7 {
            assert!(q.reserve());
            q.complete(&mut storage, cookie).unwrap();
        }
        let batch = q.read(4, false);
        assert_eq!((batch.first.clone(), batch.second.clone()), (3..4, 0..3));
        assert_eq!(copy_out(&batch, &storage, &mut out), 4);
        assert_eq!(out, [3, 4, 5, 6]);
    }

    /// Random reserves, unreserves, completions and reads (peeking or not) against a model:
    /// every completed cookie is read exactly once, in completion order, and nothing else is.
    #[test]
    fn random_ops_return_each_cookie_once_in_order() {
        let mut rng = XorShift(0x5eed_c00c);
        for capacity in [1u32, 2, 3, 8] {
            let mut q = CookieQueue::new(capacity);
            let mut storage = [0u32; CAPACITY];
            let storage = &mut storage[..capacity as usize];
            let mut out = [0u32; CAPACITY];
            let (mut next_cookie, mut next_expected) = (0u32, 0u32);
            let mut in_flight = 0u32;
            for _ in 0..20_000 {
                match rng.up_to(4) {
                    0 | 1 => {
                        if q.reserve() {
                            in_flight += 1;
                        } else {
                            assert_eq!(q.pending() + q.in_flight(), capacity);
                        }
                    }
                    2 if in_flight > 0 => {
                        q.complete(storage, next_cookie).unwrap();
                        next_cookie += 1;
                        in_flight -= 1;
                    }
                    3 if in_flight > 0 && rng.up_to(3) == 0 => {
                        q.unreserve().unwrap();
                        in_flight -= 1;
                    }
                    _ => {
                        let room = rng.up_to(capacity + 1);
                        let peek = rng.up_to(1) == 0;
                        let pending = next_cookie - next_expected;
                        let batch = q.read(room, peek);
                        assert_eq!(batch.pending, pending);
                        assert_eq!(batch.len(), pending.min(room));
                        let n = copy_out(&batch, storage, &mut out);
                        for (i, cookie) in out[..n].iter().enumerate() {
                            assert_eq!(*cookie, next_expected + i as u32);
                        }
                        if !peek {
                            next_expected += n as u32;
                        }
                    }
                }
                assert_eq!(q.in_flight(), in_flight);
                assert_eq!(q.pending(), next_cookie - next_expected);
            }
        }
    }
}
