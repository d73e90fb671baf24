// SPDX-License-Identifier: GPL-2.0

//! RDMA devices: the client interface (`struct ib_client`, per-device add/remove callbacks),
//! counted device references, and the device queries a connection needs (GIDs, port MTU).

use super::{copy_c_name, sys, StaticCell};
use crate::proto::clc::PathMtu;
use core::{
    ops::Deref,
    ptr::{self, NonNull},
};
use kernel::{
    error::{from_err_ptr, to_result},
    ffi::{c_char, c_int, c_void},
    prelude::*,
    sync::{
        aref::{ARef, AlwaysRefCounted},
        atomic::{Acquire, Atomic, Full, Relaxed, Release},
    },
    time::{delay::fsleep, Delta},
    types::{ForeignOwnable, Opaque},
};

/// The RoCE v2 GID of an IPv4 address: the IPv4-mapped IPv6 address `::ffff:a.b.c.d`.
pub(crate) fn v4_mapped(addr: [u8; 4]) -> [u8; 16] {
    let mut gid = [0u8; 16];
    gid[10] = 0xff;
    gid[11] = 0xff;
    gid[12..].copy_from_slice(&addr);
    gid
}

/// Longest RDMA device name (`IB_DEVICE_NAME_MAX`).
pub(crate) const DEVICE_NAME_MAX: usize = 64;

/// An RDMA device, borrowed for the duration of a client callback.
///
/// # Invariants
///
/// The wrapped `ib_device` is valid and registered for the lifetime of the reference.
#[repr(transparent)]
pub(crate) struct IbDevice(Opaque<sys::ib_device>);

impl IbDevice {
    /// # Safety
    ///
    /// `ptr` must point to a registered `ib_device` that stays valid for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut sys::ib_device) -> &'a Self {
        // SAFETY: `IbDevice` is a transparent wrapper of `ib_device`; validity is guaranteed
        // by the caller.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// The C device, for the FFI layer's calls.
    pub(super) fn as_raw(&self) -> *mut sys::ib_device {
        self.0.get()
    }

    /// Takes a registration reference on the device, which keeps it registered until the
    /// reference is dropped; `None` once its unregistration has begun.
    pub(crate) fn try_get(&self) -> Option<ARef<RegisteredDevice>> {
        // SAFETY: The device is valid by the type invariant.
        if !unsafe { sys::rsmc_ib_device_try_get(self.as_raw()) } {
            return None;
        }
        // INVARIANT: The reference just taken is handed to the `ARef`.
        // SAFETY: `RegisteredDevice` is a transparent wrapper of `IbDevice`, and the `ARef`
        // takes over the reference taken above.
        Some(unsafe { ARef::from_raw(NonNull::from(self).cast()) })
    }

    /// Finds the RoCE v2 GID `raw` (an IPv6 address, or `::ffff:a.b.c.d` for IPv4, see
    /// [`v4_mapped`]) on any port, with the MAC address of the netdev it belongs to.
    pub(crate) fn find_roce_v2_gid(&self, raw: [u8; 16]) -> Result<RoceGid> {
        let gid = sys::ib_gid { raw };
        // SAFETY: The device is valid by the type invariant and `gid` outlives the call; a null
        // netdev matches any. A returned attribute holds a reference, dropped below.
        let attr = from_err_ptr(
            unsafe {
                sys::rdma_find_gid(
                    self.as_raw(),
                    &gid,
                    sys::ib_gid_type_IB_GID_TYPE_ROCE_UDP_ENCAP,
                    ptr::null_mut(),
                )
            }
            .cast_mut(),
        )?;
        let mut mac = [0u8; 6];
        let mut vlan = 0u16;
        // SAFETY: `attr` is valid while we hold its reference; `vlan` and `mac` (`ETH_ALEN`
        // bytes) are writable.
        let l2 = unsafe { sys::rdma_read_gid_l2_fields(attr, &mut vlan, mac.as_mut_ptr()) };
        // SAFETY: As above; the port and index of an attribute never change.
        let (port, index) = unsafe { ((*attr).port_num, (*attr).index) };
        // SAFETY: Drops the reference `rdma_find_gid` took; `attr` is not used afterwards.
        unsafe { sys::rdma_put_gid_attr(attr) };
        to_result(l2)?;
        Ok(RoceGid {
            port,
            index: index.into(),
            gid: raw,
            mac,
        })
    }

    /// The active MTU of `port` (which follows the netdev's MTU on RoCE).
    pub(crate) fn active_mtu(&self, port: u32) -> Result<PathMtu> {
        let mut attr = sys::ib_port_attr::default();
        // SAFETY: The device is valid by the type invariant; `attr` is writable.
        to_result(unsafe { sys::ib_query_port(self.as_raw(), port, &mut attr) })?;
        u8::try_from(attr.active_mtu)
            .ok()
            .and_then(PathMtu::from_code)
            .ok_or(EINVAL)
    }

    /// Copies the device name (e.g. `rxe_a`) into `out`; returns its length.
    pub(crate) fn name(&self, out: &mut [u8; DEVICE_NAME_MAX]) -> usize {
        // SAFETY: By the type invariant the device is valid; its name is only changed under
        // the device's rename lock, and a torn read only yields a stale name.
        let name = unsafe { &(*self.0.get()).name };
        copy_c_name(name, out)
    }
}

impl IbDevice {
    /// Copies the name of the netdev behind `port` (e.g. `veth_a` under `rxe_a`) into `out`;
    /// returns its length, or `None` if the port has no netdev.
    pub(crate) fn netdev_name(&self, port: u32, out: &mut [u8; NETDEV_NAME_MAX]) -> Option<usize> {
        // SAFETY: The device is valid by the type invariant; a non-null result holds a
        // reference that is dropped below.
        let netdev = unsafe { sys::ib_device_get_netdev(self.0.get(), port) };
        if netdev.is_null() {
            return None;
        }
        // SAFETY: `netdev` is valid while we hold its reference; the name is read as
        // `dev_get_by_name` readers do (a rename in between yields either name).
        let len = copy_c_name(unsafe { &(*netdev).name }, out);
        // SAFETY: Drops the reference taken by `ib_device_get_netdev`.
        unsafe { sys::rsmc_dev_put(netdev) };
        Some(len)
    }
}

/// Longest netdev name (`IFNAMSIZ`).
pub(crate) const NETDEV_NAME_MAX: usize = 16;

/// A RoCE v2 GID of a device port and the MAC address of the netdev behind it: what a peer
/// needs to address this port.
#[derive(Clone, Copy)]
pub(crate) struct RoceGid {
    /// The port the GID is on.
    pub(crate) port: u32,
    /// The GID's index in the port's GID table (the source GID index of a queue pair).
    pub(crate) index: u32,
    /// The GID (for IPv4, `::ffff:a.b.c.d`).
    pub(crate) gid: [u8; 16],
    /// The netdev's MAC address.
    pub(crate) mac: [u8; 6],
}

/// An RDMA device kept registered by a counted reference (`ib_device_try_get`).
///
/// Verbs objects (PDs, CQs, ...) hold one, so their device cannot be unregistered under them:
/// unregistration first removes the clients (whose remove callbacks drop their objects), then
/// waits for the count to drop to zero.
///
/// # Invariants
///
/// Every `RegisteredDevice` is reached through an [`ARef`], which owns a registration
/// reference on the device.
#[repr(transparent)]
pub(crate) struct RegisteredDevice(IbDevice);

// SAFETY: The device is only used through the RDMA core's thread-safe API.
unsafe impl Send for RegisteredDevice {}
// SAFETY: As above.
unsafe impl Sync for RegisteredDevice {}

// SAFETY: A registration reference keeps the device registered, hence allocated:
// unregistration waits for the count to drop to zero before the driver may free the device.
// Every instance is reference-counted by the type invariant.
unsafe impl AlwaysRefCounted for RegisteredDevice {
    fn inc_ref(&self) {
        // SAFETY: The device is valid by the type invariant. The caller's `ARef` holds a
        // reference, so the count is not zero and `ib_device_try_get` cannot fail.
        let taken = unsafe { sys::rsmc_ib_device_try_get(self.0.as_raw()) };
        kernel::warn_on!(!taken);
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns a registration reference on the device and gives it up.
        unsafe { sys::ib_device_put(obj.as_ptr().cast()) };
    }
}

impl Deref for RegisteredDevice {
    type Target = IbDevice;

    fn deref(&self) -> &IbDevice {
        &self.0
    }
}

impl RegisteredDevice {
    /// Finds the registered RDMA device named `name` and takes a reference on it.
    ///
    /// The RDMA core exports no lookup by name, so this registers a client for the duration of
    /// the call: its `add` callback sees every registered device. May sleep; must not be called
    /// from an RDMA client callback (registering a client takes the locks those run under).
    pub(crate) fn get_by_name(name: &CStr) -> Result<ARef<Self>> {
        // One lookup at a time: the client table and `LOOKUP` are shared. A lookup is short,
        // so waiting is cheaper than anything smarter.
        while LOOKUP.busy.cmpxchg(false, true, Acquire).is_err() {
            fsleep(Delta::from_millis(1));
        }
        LOOKUP.name.store(name.as_char_ptr(), Release);
        // Registering runs `add` for every registered device before it returns; dropping the
        // registration waits for any `add` still running for a device that appeared since.
        let registered = ClientRegistration::new::<NameLookup>().map(drop);
        LOOKUP.name.store(ptr::null(), Relaxed);
        let found = NonNull::new(LOOKUP.found.xchg(ptr::null_mut(), Full));
        LOOKUP.busy.store(false, Release);
        // SAFETY: A found device came from `ARef::into_raw` in `NameLookup::add` and was taken
        // out of `LOOKUP` exactly once, above.
        let found = found.map(|found| unsafe { ARef::from_raw(found) });
        registered?;
        found.ok_or(ENODEV)
    }
}

/// The state of the one [`RegisteredDevice::get_by_name`] call that runs at a time.
struct Lookup {
    /// Set while a lookup owns `name` and `found`.
    busy: Atomic<bool>,
    /// The name looked for; valid (or null) while the lookup client is registered.
    name: Atomic<*const c_char>,
    /// The device found, as `ARef::into_raw` gave it, or null.
    found: Atomic<*mut RegisteredDevice>,
}

static LOOKUP: Lookup = Lookup {
    busy: Atomic::new(false),
    name: Atomic::new(ptr::null()),
    found: Atomic::new(ptr::null_mut()),
};

/// The client behind [`RegisteredDevice::get_by_name`]; it never keeps a device.
struct NameLookup;

static NAME_LOOKUP: ClientTable = ClientTable::new::<NameLookup>(c"rsmc_lookup");

impl IbClient for NameLookup {
    type Context = ();
    const TABLE: &'static ClientTable = &NAME_LOOKUP;

    fn add(device: &IbDevice) -> Result<()> {
        let wanted = LOOKUP.name.load(Acquire);
        if !wanted.is_null() {
            // SAFETY: `get_by_name` sets `name` from a `&CStr` that outlives the registration
            // of this client, and `add` only runs while it is registered.
            let wanted = unsafe { CStr::from_char_ptr(wanted) }.to_bytes();
            let mut name = [0; DEVICE_NAME_MAX];
            let len = device.name(&mut name);
            if name[..len] == *wanted {
                if let Some(found) = device.try_get() {
                    let found = ARef::into_raw(found).as_ptr();
                    if LOOKUP.found.cmpxchg(ptr::null_mut(), found, Full).is_err() {
                        // SAFETY: `found` came from `ARef::into_raw` above and was not
                        // published; this gives its reference back.
                        drop(unsafe { ARef::from_raw(NonNull::new_unchecked(found)) });
                    }
                }
            }
        }
        // Failing `add` keeps the client off the device: no client data, no `remove`.
        Err(ENODEV)
    }

    fn remove(_device: &IbDevice, _context: ()) {}
}

/// What an RDMA client implements: a context per device, created on add, dropped on remove.
pub(crate) trait IbClient: 'static {
    /// The per-device context stored as the device's client data.
    type Context: ForeignOwnable;
    /// The C client table for this client.
    const TABLE: &'static ClientTable;

    /// A device appeared (or existed when the client registered).
    fn add(device: &IbDevice) -> Result<Self::Context>;
    /// The device is going away; `context` is what `add` returned for it.
    fn remove(device: &IbDevice, context: Self::Context);
}

/// The C `ib_client` of one client type.
pub(crate) struct ClientTable(StaticCell<sys::ib_client>);

impl ClientTable {
    /// Builds the table for `T`, named `name` (a `'static` C string).
    pub(crate) const fn new<T: IbClient>(name: &'static CStr) -> Self {
        // SAFETY: All-zero is a valid `ib_client` (null callbacks, empty list heads that
        // `ib_register_client` initialises).
        let mut client: sys::ib_client = unsafe { core::mem::zeroed() };
        // `as_char_ptr` is not `const`; `as_ptr` gives the same pointer, and the cast takes
        // care of the kernel's unsigned `char`.
        #[allow(clippy::disallowed_methods)]
        let name_ptr = name.as_ptr().cast();
        client.name = name_ptr;
        client.add = Some(add_callback::<T>);
        client.remove = Some(remove_callback::<T>);
        Self(StaticCell::new(client))
    }
}

/// # Safety
///
/// Called by the RDMA core with a valid, registered device.
unsafe extern "C" fn add_callback<T: IbClient>(device: *mut sys::ib_device) -> c_int {
    // SAFETY: The RDMA core passes a registered device, valid during the callback.
    let dev = unsafe { IbDevice::from_raw(device) };
    match T::add(dev) {
        Ok(context) => {
            // SAFETY: `device` is valid and the client is registered (this is its callback).
            // The pointer is turned back into `T::Context` exactly once, in `remove_callback`.
            unsafe { sys::ib_set_client_data(device, T::TABLE.0.get(), context.into_foreign()) };
            0
        }
        Err(err) => err.to_errno(),
    }
}

/// # Safety
///
/// Called by the RDMA core with a device whose `add_callback` succeeded, and the client data
/// that callback stored.
unsafe extern "C" fn remove_callback<T: IbClient>(
    device: *mut sys::ib_device,
    client_data: *mut c_void,
) {
    // SAFETY: The device is still registered during `remove`.
    let dev = unsafe { IbDevice::from_raw(device) };
    // SAFETY: `client_data` came from `into_foreign` in `add_callback` and the RDMA core
    // calls `remove` once per successful `add`.
    let context = unsafe { T::Context::from_foreign(client_data) };
    T::remove(dev, context);
}

/// A registered RDMA client; unregistering (on drop) removes every device from it.
pub(crate) struct ClientRegistration {
    table: &'static ClientTable,
}

impl ClientRegistration {
    /// Registers `T`; its `add` runs for every present device before this returns.
    pub(crate) fn new<T: IbClient>() -> Result<Self> {
        // SAFETY: The table is `'static` and only registered here, unregistered in `drop`.
        kernel::error::to_result(unsafe { sys::ib_register_client(T::TABLE.0.get()) })?;
        Ok(Self { table: T::TABLE })
    }
}

impl Drop for ClientRegistration {
    fn drop(&mut self) {
        // SAFETY: Registered in `new`; this calls `remove` for every device and waits for
        // callbacks to finish.
        unsafe { sys::ib_unregister_client(self.table.0.get()) };
    }
}
