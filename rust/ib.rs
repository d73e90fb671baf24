// SPDX-License-Identifier: GPL-2.0

//! RDMA devices rsmc sees, each with the NAPI instance that will reap its completions.

use crate::{
    ffi::{
        ib::{
            ClientRegistration, ClientTable, IbClient, IbDevice, DEVICE_NAME_MAX, NETDEV_NAME_MAX,
        },
        napi::Napi,
    },
    poller::Poller,
};
use core::fmt;
use kernel::{prelude::*, sync::Arc};

/// One RDMA device and its poller.
pub(crate) struct Device {
    name: [u8; DEVICE_NAME_MAX],
    name_len: usize,
    /// The netdev of port 1 when the device appeared (rxe binds it at creation).
    netdev: [u8; NETDEV_NAME_MAX],
    netdev_len: usize,
    napi: Napi<Poller>,
}

impl Device {
    fn new(ibdev: &IbDevice) -> Result<Arc<Self>> {
        let mut name = [0; DEVICE_NAME_MAX];
        let name_len = ibdev.name(&mut name);
        let mut netdev = [0; NETDEV_NAME_MAX];
        let netdev_len = ibdev.netdev_name(1, &mut netdev).unwrap_or(0);
        let napi = Napi::new(Arc::new(Poller::new(), GFP_KERNEL)?)?;
        Ok(Arc::new(
            Self {
                name,
                name_len,
                netdev,
                netdev_len,
                napi,
            },
            GFP_KERNEL,
        )?)
    }

    fn name(&self) -> &str {
        ascii_name(&self.name[..self.name_len])
    }

    fn netdev(&self) -> &str {
        match self.netdev_len {
            0 => "-",
            len => ascii_name(&self.netdev[..len]),
        }
    }
}

/// Device and netdev names are printable ASCII (the kernel enforces it); anything else
/// shows as "?".
fn ascii_name(name: &[u8]) -> &str {
    core::str::from_utf8(name).unwrap_or("?")
}

kernel::sync::global_lock! {
    // SAFETY: Initialised in `register` before the RDMA client that uses it is registered.
    unsafe(uninit) static DEVICES: Mutex<KVec<Arc<Device>>> = KVec::new();
}

struct RsmcClient;

static CLIENT: ClientTable = ClientTable::new::<RsmcClient>(c"rsmc");

impl IbClient for RsmcClient {
    type Context = Arc<Device>;
    const TABLE: &'static ClientTable = &CLIENT;

    fn add(ibdev: &IbDevice) -> Result<Arc<Device>> {
        let device = Device::new(ibdev)?;
        DEVICES.lock().push(device.clone(), GFP_KERNEL)?;
        pr_info!(
            "device {} added, napi_id {}\n",
            device.name(),
            device.napi.id()
        );
        Ok(device)
    }

    fn remove(_ibdev: &IbDevice, device: Arc<Device>) {
        DEVICES
            .lock()
            .retain(|listed| !Arc::ptr_eq(listed, &device));
        pr_info!("device {} removed\n", device.name());
    }
}

/// Starts tracking RDMA devices: every present and future device gets a [`Device`].
pub(crate) fn register() -> Result<ClientRegistration> {
    // SAFETY: Called once, from module init, before the client below can use the lock.
    unsafe { DEVICES.init() };
    ClientRegistration::new::<RsmcClient>()
}

/// Writes one line per device: `<name> napi_id <id> polls <n> netdev <netdev>`.
pub(crate) fn show_devices(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for device in DEVICES.lock().iter() {
        writeln!(
            f,
            "{} napi_id {} polls {} netdev {}",
            device.name(),
            device.napi.id(),
            device.napi.poller().polls(),
            device.netdev()
        )?;
    }
    Ok(())
}
