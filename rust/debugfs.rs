// SPDX-License-Identifier: GPL-2.0

//! `/sys/kernel/debug/rsmc/`: what the module sees, read by the tests, and the NAPI
//! interrupt deferral and how long idle links stay, which tests and benchmarks set.

use kernel::{debugfs, prelude::*, uaccess::UserSliceReader};

/// The debugfs directory and its files; removed on drop.
#[pin_data]
pub(crate) struct Debugfs {
    #[pin]
    devices: debugfs::File<()>,
    #[pin]
    connections: debugfs::File<()>,
    #[pin]
    napi_defer: debugfs::File<()>,
    #[pin]
    link_linger_ms: debugfs::File<()>,
    dir: debugfs::Dir,
}

impl Debugfs {
    /// Creates `rsmc/devices` (one line per RDMA device: name, NAPI id, counters, netdev),
    /// `rsmc/connections` (one line per connection on a link: where, and how far it closed),
    /// `rsmc/napi_defer` (one line per device: `<name> <defer_hard_irqs> <gro_flush_timeout
    /// in ns>` of its NAPI, as a netdev's sysfs files of those names; writing such a line
    /// sets them) and `rsmc/link_linger_ms` (how long a link stays once its last connection
    /// left; writing a number sets it).
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        let dir = debugfs::Dir::new(c"rsmc");
        try_pin_init!(Self {
            devices <- dir.read_callback_file(c"devices", (), &|(): &(), f| {
                crate::ib::show_devices(f)
            }),
            connections <- dir.read_callback_file(c"connections", (), &|(): &(), f| {
                crate::ib::show_connections(f)
            }),
            napi_defer <- dir.read_write_callback_file(
                c"napi_defer",
                (),
                &|(): &(), f| crate::ib::show_napi_defer(f),
                &|(): &(), reader| write_napi_defer(reader),
            ),
            link_linger_ms <- dir.read_write_callback_file(
                c"link_linger_ms",
                (),
                &|(): &(), f| writeln!(f, "{}", crate::link::linger().as_millis()),
                &|(): &(), reader| write_link_linger(reader),
            ),
            dir,
        }? Error)
    }
}

/// Parses a number of milliseconds and makes it how long idle links stay.
fn write_link_linger(reader: &mut UserSliceReader) -> Result {
    let mut buf = [0u8; 16];
    let text = buf.get_mut(..reader.len()).ok_or(EINVAL)?;
    reader.read_slice(text)?;
    let ms = core::str::from_utf8(text)
        .map_err(|_| EINVAL)?
        .trim()
        .parse()
        .map_err(|_| EINVAL)?;
    crate::link::set_linger(ms);
    Ok(())
}

/// Parses `<device> <defer_hard_irqs> <gro_flush_timeout>` and applies it.
fn write_napi_defer(reader: &mut UserSliceReader) -> Result {
    let mut buf = [0u8; 96];
    let len = reader.len();
    let text = buf.get_mut(..len).ok_or(EINVAL)?;
    reader.read_slice(text)?;
    let text = core::str::from_utf8(text).map_err(|_| EINVAL)?;
    let mut fields = text.split_ascii_whitespace();
    let device = fields.next().ok_or(EINVAL)?;
    let defer_hard_irqs = fields.next().ok_or(EINVAL)?.parse().map_err(|_| EINVAL)?;
    let gro_flush_timeout = fields.next().ok_or(EINVAL)?.parse().map_err(|_| EINVAL)?;
    if fields.next().is_some() {
        return Err(EINVAL);
    }
    crate::ib::set_napi_defer(device, defer_hard_irqs, gro_flush_timeout)
}
