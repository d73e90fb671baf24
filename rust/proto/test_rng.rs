// SPDX-License-Identifier: GPL-2.0

//! The random number generator of the property tests: deterministic, so a failure reproduces.

use core::num::NonZeroU64;

/// Deterministic xorshift64 generator for reproducible random operation sequences.
pub(super) struct XorShift(pub(super) u64);

impl XorShift {
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish value in `0..=max`.
    pub(super) fn up_to(&mut self, max: u32) -> u32 {
        // `max + 1` cannot saturate, being at most 2^32. CAST: the remainder is at most `max`.
        (self.next() % NonZeroU64::MIN.saturating_add(u64::from(max))) as u32
    }
}
