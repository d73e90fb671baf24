// SPDX-License-Identifier: GPL-2.0

//! RDMA device client (`struct ib_client`): per-device add/remove callbacks.

use super::{copy_c_name, sys, StaticCell};
use kernel::{ffi::c_int, ffi::c_void, prelude::*, types::ForeignOwnable, types::Opaque};

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
