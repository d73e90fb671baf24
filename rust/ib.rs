// SPDX-License-Identifier: GPL-2.0

//! RDMA devices rsmc sees, each with a protection domain, one completion queue and the NAPI
//! instance that reaps it.

use crate::{
    connection::Connection,
    ffi::{
        ib::{
            ClientRegistration, ClientTable, IbClient, IbDevice, RegisteredDevice, RoceGid,
            DEVICE_NAME_MAX, NETDEV_NAME_MAX,
        },
        napi::Napi,
        verbs::Pd,
    },
    poller::Poller,
};
use core::fmt;
use kernel::{
    new_mutex,
    prelude::*,
    sync::{aref::ARef, Arc, Mutex},
};

/// One RDMA device: its protection domain, and its completion queue drained by its NAPI.
///
/// # Invariants
///
/// Teardown runs in field order, which is what makes it safe:
///
/// 1. `napi`: disabling the NAPI waits for a running poll (softirq or busy poller), then its
///    poller drops the completion queue (unless a queue pair still holds it), which the
///    driver destroys; from then on no event handler runs. Until then the handler may still
///    schedule the disabled NAPI, a no-op: the handler's `NapiHandle` keeps the NAPI's memory
///    until the queue is gone.
/// 2. `pd`, once no queue pair or memory region holds it.
/// 3. `dev`: the registration reference that device unregistration waits for.
///
/// Connections refer to their device, which lists them until they end (see
/// [`Device::attach`]), so the last `Arc` goes once the device is removed and its
/// connections are gone; dropping it frees everything.
#[pin_data]
pub(crate) struct Device {
    name: [u8; DEVICE_NAME_MAX],
    name_len: usize,
    /// The netdev of port 1 when the device appeared (rxe binds it at creation).
    netdev: [u8; NETDEV_NAME_MAX],
    netdev_len: usize,
    #[pin]
    connections: Mutex<Connections>,
    napi: Napi<Poller>,
    pd: Arc<Pd>,
    dev: ARef<RegisteredDevice>,
}

impl Device {
    fn new(ibdev: &IbDevice) -> Result<Arc<Self>> {
        let mut name = [0; DEVICE_NAME_MAX];
        let name_len = ibdev.name(&mut name);
        let mut netdev = [0; NETDEV_NAME_MAX];
        let netdev_len = ibdev.netdev_name(1, &mut netdev).unwrap_or(0);
        let dev = ibdev.try_get().ok_or(ENODEV)?;
        let pd = Pd::new(&dev)?;
        let napi = Napi::new(|handle| Poller::new(&dev, handle))?;
        // Armed once here; from then on each poll that leaves the NAPI idle re-arms it.
        if napi.poller().arm()? {
            napi.schedule();
        }
        // INVARIANT: Fields are declared in teardown order.
        Arc::pin_init(
            try_pin_init!(Self {
                name,
                name_len,
                netdev,
                netdev_len,
                connections <- new_mutex!(Connections {
                    removed: false,
                    list: KVec::new(),
                }),
                napi,
                pd,
                dev,
            }? Error),
            GFP_KERNEL,
        )
    }

    /// Lists `conn` as using this device, so that removing the device ends it; fails with
    /// `ENODEV` once the device is being removed. Every listed connection must
    /// [`Device::detach`] itself when it releases the device.
    pub(crate) fn attach(&self, conn: Arc<Connection>) -> Result {
        let mut connections = self.connections.lock();
        if connections.removed {
            return Err(ENODEV);
        }
        connections.list.push(conn, GFP_KERNEL)?;
        Ok(())
    }

    /// Takes `conn` off the list of connections using this device.
    pub(crate) fn detach(&self, conn: &Connection) {
        self.connections
            .lock()
            .list
            .retain(|listed| !core::ptr::eq(&**listed, conn));
    }

    /// Ends every connection on the device and refuses new ones: it is going away.
    fn remove_connections(&self) {
        let doomed = {
            let mut connections = self.connections.lock();
            connections.removed = true;
            core::mem::take(&mut connections.list)
        };
        // Unlocked: each connection detaches itself as it releases the device.
        for conn in doomed.iter() {
            conn.device_removed();
        }
    }

    /// The device, for the verbs objects of its links (buffers, GID lookups).
    pub(crate) fn registered(&self) -> &ARef<RegisteredDevice> {
        &self.dev
    }

    /// The protection domain of the device's links.
    pub(crate) fn pd(&self) -> &Arc<Pd> {
        &self.pd
    }

    /// The poller: the device's completion queue, its counters and completion sinks.
    pub(crate) fn poller(&self) -> &Arc<Poller> {
        self.napi.poller()
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

/// The connections using a device.
struct Connections {
    /// Set when the device is being removed: no connection may start using it.
    removed: bool,
    list: KVec<Arc<Connection>>,
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
        // First unlisted, so that no new connection picks it; then its connections end, and
        // with them their references: unregistration waits for those.
        DEVICES
            .lock()
            .retain(|listed| !Arc::ptr_eq(listed, &device));
        device.remove_connections();
        pr_info!("device {} removed\n", device.name());
    }
}

/// rsmc's RDMA client; dropping it removes every device and frees the device list.
pub(crate) struct DeviceTracking {
    // `Some` until dropped: the client must be unregistered before the list is freed.
    client: Option<ClientRegistration>,
}

impl Drop for DeviceTracking {
    fn drop(&mut self) {
        // Unregistering calls `remove` for every device, which empties the list.
        drop(self.client.take());
        // The list's buffer lives in a static that outlives the module's data: free it.
        *DEVICES.lock() = KVec::new();
    }
}

/// Starts tracking RDMA devices: every present and future device gets a [`Device`].
pub(crate) fn register() -> Result<DeviceTracking> {
    // SAFETY: Called once, from module init, before the client below can use the lock.
    unsafe { DEVICES.init() };
    Ok(DeviceTracking {
        client: Some(ClientRegistration::new::<RsmcClient>()?),
    })
}

/// The device named `name`, if rsmc tracks it.
pub(crate) fn device_by_name(name: &str) -> Option<Arc<Device>> {
    DEVICES
        .lock()
        .iter()
        .find(|device| device.name() == name)
        .cloned()
}

/// The device with a RoCE v2 GID for the IP address `ip` (IPv4 as `::ffff:a.b.c.d`), i.e.
/// the device of the netdev that has the address: routing picked that netdev for the
/// connection that has `ip` as its local address.
pub(crate) fn device_for_ip(ip: [u8; 16]) -> Option<(Arc<Device>, RoceGid)> {
    DEVICES.lock().iter().find_map(|device| {
        let gid = device.registered().find_roce_v2_gid(ip).ok()?;
        Some((device.clone(), gid))
    })
}

/// Writes one line per device:
/// `<name> napi_id <id> polls <n> netdev <netdev> cq_events <n> completions <n>`.
pub(crate) fn show_devices(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for device in DEVICES.lock().iter() {
        let poller = device.poller();
        writeln!(
            f,
            "{} napi_id {} polls {} netdev {} cq_events {} completions {}",
            device.name(),
            device.napi.id(),
            poller.polls(),
            device.netdev(),
            poller.cq_events(),
            poller.completions()
        )?;
    }
    Ok(())
}
