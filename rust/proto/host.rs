// SPDX-License-Identifier: GPL-2.0

//! Host build of the rsmc protocol core.
//!
//! The kernel module compiles `mod.rs` as its `proto` module; this wrapper compiles the very same
//! sources as an ordinary `no_std` library, under the same module path, so that `cargo test` can
//! exercise them in user space.

#![no_std]
#![forbid(unsafe_code)]

// A `#[path]` module rather than `include!`: `mod.rs` starts with an inner doc comment, which
// `include!` does not accept.
#[path = "mod.rs"]
mod proto;

pub use proto::{cdc, clc, conn, llc, ring, zc};
