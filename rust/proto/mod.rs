// SPDX-License-Identifier: GPL-2.0

//! Protocol core of rsmc: ring-cursor arithmetic, the CLC, CDC and LLC (DELETE LINK) wire
//! formats, the connection data-path state machine, and the completion cookies of zerocopy
//! sends.
//!
//! Everything here is plain `core` Rust with no kernel dependencies, so the same code runs in the
//! module and in host unit tests. Decoders accept arbitrary bytes from the network and never
//! panic; every malformed input maps to an error variant.

pub mod cdc;
pub mod clc;
pub mod conn;
pub mod llc;
pub mod ring;
#[cfg(any(test, CONFIG_KUNIT))]
mod test_rng;
pub mod zc;
