// SPDX-License-Identifier: GPL-2.0

//! `/sys/kernel/debug/rsmc/`: what the module sees, read by the tests.

use kernel::{debugfs, prelude::*};

/// The debugfs directory and its files; removed on drop.
#[pin_data]
pub(crate) struct Debugfs {
    #[pin]
    devices: debugfs::File<()>,
    dir: debugfs::Dir,
}

impl Debugfs {
    /// Creates `rsmc/devices` (one line per RDMA device: name, NAPI id, counters, netdev).
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        let dir = debugfs::Dir::new(c"rsmc");
        try_pin_init!(Self {
            devices <- dir.read_callback_file(c"devices", (), &|(): &(), f| {
                crate::ib::show_devices(f)
            }),
            dir,
        }? Error)
    }
}
