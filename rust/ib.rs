// SPDX-License-Identifier: GPL-2.0

//! RDMA devices rsmc sees, each with a protection domain, one completion queue and the NAPI
//! instance that reaps it.

use crate::{
    ffi::{
        ib::{
            ClientRegistration, ClientTable, IbClient, IbDevice, RegisteredDevice, RoceGid,
            DEVICE_NAME_MAX, NETDEV_NAME_MAX,
        },
        napi::Napi,
        verbs::{DmaBuffer, DmaDirection, Pd},
    },
    link::{Link, PeerEnd, MAX_LINKS},
    poller::Poller,
};
use core::fmt;
use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, CondVar, CondVarTimeoutResult, Mutex,
    },
    time::{msecs_to_jiffies, Instant},
};

/// A client's turn to set up a new link on a device; the next waiter's when dropped.
pub(crate) struct FirstContact<'a> {
    device: &'a Device,
}

impl Drop for FirstContact<'_> {
    fn drop(&mut self) {
        *self.device.first_contact.lock() = false;
        self.device.first_contact_done.notify_all();
    }
}

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
/// Links refer to their device, which lists them until they are torn down (see
/// [`Device::list_link`]), so the last `Arc` goes once the device is removed and its links
/// are gone; dropping it frees everything.
#[pin_data]
pub(crate) struct Device {
    name: [u8; DEVICE_NAME_MAX],
    name_len: usize,
    /// The netdev of port 1 when the device appeared (rxe binds it at creation).
    netdev: [u8; NETDEV_NAME_MAX],
    netdev_len: usize,
    #[pin]
    links: Mutex<Links>,
    /// Set while a client sets up a new link, so that concurrent connections to the same
    /// peer wait and share it (stock SMC's smc_client_lgr_pending).
    #[pin]
    first_contact: Mutex<bool>,
    #[pin]
    first_contact_done: CondVar,
    napi: Napi<Poller>,
    /// The NAPI's interrupt deferral, as last set (off until then).
    napi_defer_hard_irqs: Atomic<u32>,
    napi_gro_flush_timeout_ns: Atomic<u64>,
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
                links <- new_mutex!(Links {
                    removed: false,
                    list: KVec::new(),
                    spares: KVec::new(),
                    spare_bytes: 0,
                }),
                first_contact <- new_mutex!(false),
                first_contact_done <- new_condvar!("Device::first_contact_done"),
                napi,
                napi_defer_hard_irqs: Atomic::new(0),
                napi_gro_flush_timeout_ns: Atomic::new(0),
                pd,
                dev,
            }? Error),
            GFP_KERNEL,
        )
    }

    /// Lists `link` as on this device, so that removing the device ends it and handshakes
    /// find it; fails with `ENODEV` once the device is being removed. A listed link must
    /// [`Device::unlist_link`] itself when it is torn down.
    pub(crate) fn list_link(&self, link: Arc<Link>) -> Result {
        let mut links = self.links.lock();
        if links.removed {
            return Err(ENODEV);
        }
        if links.list.len() >= MAX_LINKS {
            return Err(EBUSY);
        }
        links.list.push(link, GFP_KERNEL)?;
        Ok(())
    }

    /// A buffer of `len` bytes mapped for `dir`: a spare one that fits, else a new one.
    pub(crate) fn dma_buffer(&self, len: usize, dir: DmaDirection) -> Result<Arc<DmaBuffer>> {
        {
            let mut links = self.links.lock();
            let spare = links.spares.iter().position(|buf| buf.fits(len, dir));
            if let Some(buf) = spare.and_then(|i| links.spares.remove(i).ok()) {
                links.spare_bytes -= buf.len();
                return Ok(buf);
            }
        }
        DmaBuffer::new(&self.dev, len, dir)
    }

    /// Keeps `buf` for [`Device::dma_buffer`] if nothing else holds it (so the device cannot
    /// reach it any more: whatever lets the device at a buffer holds a reference) and there
    /// is room; else lets it go.
    pub(crate) fn recycle(&self, buf: Arc<DmaBuffer>) {
        let Some(buf) = Arc::into_unique_or_drop(buf) else {
            return;
        };
        let buf: Arc<DmaBuffer> = buf.into();
        let len = buf.len();
        let mut links = self.links.lock();
        if links.removed || links.spare_bytes + len > SPARE_BYTES_MAX {
            return;
        }
        if links.spares.push(buf, GFP_KERNEL).is_ok() {
            links.spare_bytes += len;
        }
    }

    /// How many links the device has.
    pub(crate) fn links(&self) -> usize {
        self.links.lock().list.len()
    }

    /// The id of the NAPI instance that reaps this device's completions: sockets with
    /// connections on the device carry it, so that busy polling spins on this NAPI.
    pub(crate) fn napi_id(&self) -> u32 {
        self.napi.id()
    }

    /// Takes the turn to set up a new link (see `first_contact`), waiting up to `wait_ms`
    /// milliseconds for the client that has it. `None` if the wait ran out or a signal came:
    /// the caller goes on without the turn, as one stuck handshake must not hold up every
    /// connect behind it.
    pub(crate) fn first_contact(&self, wait_ms: u32) -> Option<FirstContact<'_>> {
        let mut busy = self.first_contact.lock();
        let mut left = msecs_to_jiffies(wait_ms);
        while *busy {
            match self
                .first_contact_done
                .wait_interruptible_timeout(&mut busy, left)
            {
                CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                CondVarTimeoutResult::Timeout | CondVarTimeoutResult::Signal { .. } => return None,
            }
        }
        *busy = true;
        Some(FirstContact { device: self })
    }

    /// Takes `link` off the device's list.
    pub(crate) fn unlist_link(&self, link: &Link) {
        let taken = {
            let mut links = self.links.lock();
            let i = links
                .list
                .iter()
                .position(|listed| core::ptr::eq(&**listed, link));
            i.and_then(|i| links.list.remove(i).ok())
        };
        // Dropped unlocked: it may be the last reference, whose destructor takes this lock.
        drop(taken);
    }

    /// A usable link whose peer's end satisfies `wanted`.
    pub(crate) fn find_link(&self, wanted: impl Fn(&PeerEnd) -> bool) -> Option<Arc<Link>> {
        self.links
            .lock()
            .list
            .iter()
            .find(|link| link.live_peer().is_some_and(|peer| wanted(&peer)))
            .cloned()
    }

    /// Tears down one idle link (see [`crate::link::linger`]), if the device has one; whether
    /// it had.
    pub(crate) fn end_an_idle_link(&self) -> bool {
        self.listed_links()
            .is_ok_and(|links| links.iter().any(|link| link.end_if_idle()))
    }

    /// The device's links now, to call into unlocked (a link's teardown unlists it).
    fn listed_links(&self) -> Result<KVec<Arc<Link>>> {
        let links = self.links.lock();
        let mut listed = KVec::with_capacity(links.list.len(), GFP_KERNEL)?;
        for link in links.list.iter() {
            listed.push(link.clone(), GFP_KERNEL)?;
        }
        Ok(listed)
    }

    /// What the device's links add up to, and the bytes of spare buffers it keeps.
    fn link_stats(&self) -> LinkStats {
        let links = self.links.lock();
        let list = links.list.iter();
        LinkStats {
            links: links.list.len(),
            conns: list.clone().map(|link| link.connections()).sum(),
            dropped_cdcs: list.clone().map(|link| link.dropped()).sum(),
            sends_in_flight: list.map(|link| link.sends_in_flight()).sum(),
            spare_bytes: links.spare_bytes,
        }
    }

    /// Ends every link on the device and refuses new ones: it is going away.
    fn remove_links(&self) {
        // Spares go too: each holds the device's registration, which its removal waits for.
        let (doomed, spares) = {
            let mut links = self.links.lock();
            links.removed = true;
            links.spare_bytes = 0;
            (
                core::mem::take(&mut links.list),
                core::mem::take(&mut links.spares),
            )
        };
        drop(spares);
        // Unlocked: each link unlists itself (a no-op now) as it is torn down. All links tell
        // their peers first, then share one wait for those messages.
        for link in doomed.iter() {
            link.device_removing();
        }
        let start = Instant::now();
        for link in doomed.iter() {
            link.device_removed(start);
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

/// The links on a device, and the buffers of connections that ended.
struct Links {
    /// Set when the device is being removed: no link may start on it, and no buffer is kept.
    removed: bool,
    list: KVec<Arc<Link>>,
    /// Receive rings and send buffers that nothing else holds (no memory region, no queue
    /// pair), for the next connections: allocating and zeroing them is most of what setting
    /// up a connection costs. At most [`SPARE_BYTES_MAX`] bytes.
    spares: KVec<Arc<DmaBuffer>>,
    spare_bytes: usize,
}

/// How many bytes of spare buffers a device keeps: 16 rings of the default size.
const SPARE_BYTES_MAX: usize = 16 * 128 * 1024;

/// Device and netdev names are printable ASCII (the kernel enforces it); anything else
/// shows as "?".
fn ascii_name(name: &[u8]) -> &str {
    core::str::from_utf8(name).unwrap_or("?")
}

/// Sets the interrupt deferral of the NAPI of the device named `name` (see
/// [`Napi::set_defer`]); `ENODEV` if there is no such device.
pub(crate) fn set_napi_defer(
    name: &str,
    defer_hard_irqs: u32,
    gro_flush_timeout_ns: u64,
) -> Result {
    let device = DEVICES
        .lock()
        .iter()
        .find(|device| device.name() == name)
        .cloned()
        .ok_or(ENODEV)?;
    device.napi_defer_hard_irqs.store(defer_hard_irqs, Relaxed);
    device
        .napi_gro_flush_timeout_ns
        .store(gro_flush_timeout_ns, Relaxed);
    device.napi.set_defer(defer_hard_irqs, gro_flush_timeout_ns);
    Ok(())
}

/// Writes one line per device: `<name> <defer_hard_irqs> <gro_flush_timeout in ns>`.
pub(crate) fn show_napi_defer(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for device in DEVICES.lock().iter() {
        writeln!(
            f,
            "{} {} {}",
            device.name(),
            device.napi_defer_hard_irqs.load(Relaxed),
            device.napi_gro_flush_timeout_ns.load(Relaxed)
        )?;
    }
    Ok(())
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
        device.remove_links();
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

/// Calls `f` on every link of every device rsmc tracks, with its device. Process context.
pub(crate) fn for_each_link(mut f: impl FnMut(&Device, &Arc<Link>)) {
    let devices = DEVICES.lock();
    for device in devices.iter() {
        if let Ok(links) = device.listed_links() {
            links.iter().for_each(|link| f(device, link));
        }
    }
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

/// Writes one line per connection on a link, device by device (see
/// [`Link::show_connections`]). Process context.
pub(crate) fn show_connections(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut shown = Ok(());
    for_each_link(|device, link| {
        shown = shown.and_then(|()| link.show_connections(f, device.name()));
    });
    shown
}

/// A device's links, for debugfs.
struct LinkStats {
    links: usize,
    /// Connections on them.
    conns: usize,
    /// Cursor messages they dropped for want of a connection.
    dropped_cdcs: u64,
    /// Send work requests they have outstanding.
    sends_in_flight: u32,
    /// Bytes of the buffers of ended connections the device keeps for new ones.
    spare_bytes: usize,
}

/// Writes one line per device: `<name> napi_id <id> polls <n> netdev <netdev> cq_events <n>
/// completions <n> links <n> connections <n> dropped_cdc <n> softirq_polls <n>
/// softirq_completions <n> busy_polls <n> busy_completions <n> busy_yields <n> spare_bytes
/// <n> sends_in_flight <n>`.
pub(crate) fn show_devices(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for device in DEVICES.lock().iter() {
        let poller = device.poller();
        let stats = device.link_stats();
        let (softirq, busy) = (poller.softirq_counts(), poller.busy_counts());
        writeln!(
            f,
            "{} napi_id {} polls {} netdev {} cq_events {} completions {} links {} \
             connections {} dropped_cdc {} softirq_polls {} softirq_completions {} \
             busy_polls {} busy_completions {} busy_yields {} spare_bytes {} sends_in_flight {}",
            device.name(),
            device.napi.id(),
            poller.polls(),
            device.netdev(),
            poller.cq_events(),
            poller.completions(),
            stats.links,
            stats.conns,
            stats.dropped_cdcs,
            softirq.polls(),
            softirq.completions(),
            busy.polls(),
            busy.completions(),
            poller.busy_yields(),
            stats.spare_bytes,
            stats.sends_in_flight,
        )?;
    }
    Ok(())
}
