// SPDX-License-Identifier: GPL-2.0

//! Runs arbitrary sequences of zerocopy cookie operations against a plain FIFO model: every
//! completed cookie is read exactly once, in completion order, and no slot is overcommitted.

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rsmc_proto::zc::CookieQueue;
use std::collections::VecDeque;

fuzz_target!(|data: &[u8]| {
    // Running out of input just ends the sequence.
    let _ = run(&mut Unstructured::new(data));
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let capacity = u.int_in_range(0..=64)?;
    let mut queue = CookieQueue::new(capacity);
    let mut storage = vec![0; capacity as usize];
    let mut completed = VecDeque::new();
    let mut in_flight = 0;
    let mut next_cookie = 0u32;
    while !u.is_empty() {
        match u.int_in_range(0..=3)? {
            0 => {
                let room = in_flight + completed.len() < capacity as usize;
                assert_eq!(queue.reserve(), room);
                in_flight += usize::from(room);
            }
            1 => {
                assert_eq!(queue.unreserve().is_ok(), in_flight > 0);
                in_flight = in_flight.saturating_sub(1);
            }
            2 => {
                let result = queue.complete(&mut storage, next_cookie);
                assert_eq!(result.is_ok(), in_flight > 0);
                if result.is_ok() {
                    in_flight -= 1;
                    completed.push_back(next_cookie);
                    next_cookie += 1;
                }
            }
            _ => {
                let room = u.int_in_range(0..=capacity + 1)?;
                let peek = u.arbitrary()?;
                let batch = queue.read(room, peek);
                assert_eq!(batch.pending as usize, completed.len());
                let want = completed.len().min(room as usize);
                assert_eq!(batch.len() as usize, want);
                let got = batch.first.clone().chain(batch.second.clone());
                for (slot, expected) in got.zip(completed.iter()) {
                    assert_eq!(storage[slot], *expected);
                }
                if !peek {
                    completed.drain(..want);
                }
            }
        }
        assert_eq!(queue.pending() as usize, completed.len());
        assert_eq!(queue.in_flight() as usize, in_flight);
    }
    Ok(())
}
