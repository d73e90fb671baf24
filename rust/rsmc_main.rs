// SPDX-License-Identifier: GPL-2.0

//! rsmc: an SMC-R-like socket family whose RDMA completions are reaped by NAPI.
//!
//! `AF_SMC` stream sockets handshake over TCP and move data with RDMA WRITEs; the
//! completion queues of each RDMA device are drained by a NAPI instance, so the kernel's
//! stock busy-poll paths (recvmsg, epoll, poll/select, io_uring) spin on RDMA completions.
//!
//! Layout (mirrors net/smc): `af_smc` the socket family, `clc` the handshake, `connection`
//! an RDMA connection and its data path, `ib` the RDMA device client,
//! `poller` the per-device NAPI poller, `debugfs` the state tests read, `proto` the pure
//! protocol core (also built and tested on the host), `ffi` every call into C (`ffi::verbs`
//! the RDMA verbs objects), `verbs_test` the KUnit suite that runs them over two rxe devices,
//! `cq_napi_test` the one that checks the devices' NAPI instances reap their completions.

use kernel::prelude::*;

mod af_smc;
mod clc;
mod connection;
mod connector;
mod cq_napi_test;
mod debugfs;
mod ffi;
mod ib;
mod link;
mod listener;
mod poller;
pub mod proto;
mod verbs_test;
mod zerocopy;

module! {
    type: Rsmc,
    name: "rsmc",
    authors: ["rsmc developers"],
    description: "SMC-R-like sockets over RDMA with NAPI busy polling",
    license: "GPL",
}

#[pin_data]
struct Rsmc {
    // Dropped in declaration order: no new sockets, then devices, then the work they queued,
    // then debugfs.
    family: ffi::sock::FamilyRegistration,
    smc_option: ffi::sock::SmcSynOption,
    client: ib::DeviceTracking,
    workqueue: ffi::workqueue::Registration,
    #[pin]
    debugfs: debugfs::Debugfs,
}

impl kernel::InPlaceModule for Rsmc {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            debugfs <- {
                // Before anything touches a C struct through bindgen's layout.
                ffi::check_layouts()?;
                debugfs::Debugfs::new()
            },
            workqueue: ffi::workqueue::Registration::new()?,
            client: ib::register()?,
            smc_option: ffi::sock::SmcSynOption::enable(),
            family: af_smc::register()?,
        })
    }
}
