// SPDX-License-Identifier: GPL-2.0

//! RDMA verbs: protection domains, completion queues, RC queue pairs, DMA-mapped buffers and
//! fast-registered memory regions, used as `net/smc/smc_ib.c` and `smc_wr.c` use them.
//!
//! Ownership follows the verbs rules, so values may be dropped in any order: a [`Qp`] holds
//! its [`Pd`] and [`Cq`]s, and every [`DmaBuffer`] and [`Mr`] its work requests may touch, until
//! it is destroyed (after which the device no longer touches them); an [`Mr`] holds its buffer
//! and [`Pd`]; a [`Cq`] holds its handler; each holds its device registered.
//!
//! DMA ownership of a [`DmaBuffer`] is a protocol rule, not a type rule: the CPU writes bytes
//! only while no posted work request reads them and no peer may write them, and reads bytes only
//! after the completion (or the peer's message) that says the device finished writing them was
//! reaped. Breaking the rule yields stale or torn bytes, never memory unsafety: the CPU only
//! copies in and out with volatile accesses, as `kernel::dma` does for memory shared with a
//! device.

use super::{ib::RegisteredDevice, kernel_socket::MsgHdr, sys};
use crate::proto::clc::PathMtu;
use core::{
    alloc::Layout,
    ops::BitOr,
    pin::Pin,
    ptr::{self, NonNull},
};
use kernel::{
    alloc::{allocator::Kmalloc, flags::__GFP_ZERO, Allocator, NumaNode},
    error::{from_err_ptr, to_result},
    ffi::{c_int, c_uint, c_void},
    fmt,
    page::PAGE_SIZE,
    prelude::*,
    sync::{aref::ARef, new_spinlock_irq, Arc, SpinLockIrq},
};

/// The name the RDMA core records as the owner of our objects (`KBUILD_MODNAME`).
const CALLER: &CStr = c"rsmc";

/// Hop limit of the GRH: peers are on the same subnet, as for SMC-R v1.
const HOP_LIMIT: u8 = 1;
/// Receiver-not-ready NAK timer code (0.06 ms), as `SMC_QP_MIN_RNR_TIMER`.
const MIN_RNR_TIMER: u8 = 5;
/// Local ACK timeout code (about 134 ms), as `SMC_QP_TIMEOUT`.
#[cfg(not(CONFIG_KASAN))]
const ACK_TIMEOUT: u8 = 15;
/// On debug kernels (KASAN) under emulation rxe may not acknowledge for over a second when
/// dozens of connections start at once, which would exhaust the retries: about 1.07 s.
#[cfg(CONFIG_KASAN)]
const ACK_TIMEOUT: u8 = 18;
/// Transport retries, as `SMC_QP_RETRY_CNT`.
const RETRY_COUNT: u8 = 7;
/// Receiver-not-ready retries: 7 means forever, as `SMC_QP_RNR_RETRY`.
const RNR_RETRY: u8 = 7;

/// Memory access rights of a queue pair or memory region (`enum ib_access_flags`).
#[derive(Clone, Copy)]
pub(crate) struct Access(u32);

impl Access {
    /// The device may write local memory (receives, RDMA READ responses).
    pub(crate) const LOCAL_WRITE: Self = Self(sys::ib_access_flags_IB_ACCESS_LOCAL_WRITE);
    /// Peers may RDMA WRITE.
    pub(crate) const REMOTE_WRITE: Self = Self(sys::ib_access_flags_IB_ACCESS_REMOTE_WRITE);

    fn raw(self) -> c_int {
        // The flags are small bit values; the C fields are `int`.
        self.0 as c_int
    }
}

impl BitOr for Access {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// A protection domain (`ib_alloc_pd`).
///
/// # Invariants
///
/// `pd` is a PD allocated on `dev`, deallocated only on drop.
pub(crate) struct Pd {
    pd: NonNull<sys::ib_pd>,
    dev: ARef<RegisteredDevice>,
}

// SAFETY: The PD is only used through the RDMA core's thread-safe API.
unsafe impl Send for Pd {}
// SAFETY: As above; `&Pd` only reads the fixed `local_dma_lkey`.
unsafe impl Sync for Pd {}

impl Pd {
    /// Allocates a protection domain on `dev`.
    pub(crate) fn new(dev: &ARef<RegisteredDevice>) -> Result<Arc<Self>> {
        // SAFETY: The device is registered while we hold `dev`; `CALLER` is a static string.
        let pd =
            from_err_ptr(unsafe { sys::__ib_alloc_pd(dev.as_raw(), 0, CALLER.as_char_ptr()) })?;
        // INVARIANT: `pd` was just allocated on `dev`.
        let pd = Self {
            pd: NonNull::new(pd).ok_or(ENOMEM)?,
            dev: dev.clone(),
        };
        Ok(Arc::new(pd, GFP_KERNEL)?)
    }

    /// The key that lets work requests of this PD's queue pairs access any DMA-mapped memory
    /// of the device; see [`DmaBuffer::sge`].
    pub(crate) fn local_dma_lkey(&self) -> u32 {
        // SAFETY: The PD is valid by the type invariant; the key is fixed at allocation.
        unsafe { (*self.pd.as_ptr()).local_dma_lkey }
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: The PD is valid by the type invariant. Queue pairs and memory regions hold
        // an `Arc<Pd>`, so none is left on it.
        unsafe { sys::rsmc_ib_dealloc_pd(self.pd.as_ptr()) };
    }
}

/// What a completion queue calls.
///
/// Both run in the context the driver reports completions in (a tasklet or workqueue for rxe,
/// an interrupt for hardware), so they must not sleep.
pub(crate) trait CqHandler: Send + Sync + 'static {
    /// A completion arrived after [`Cq::request_notify`] armed the queue.
    fn completion(&self);
    /// The queue failed (`IB_EVENT_CQ_ERR`, e.g. it overflowed); it delivers nothing more.
    fn error(&self);
}

/// A completion queue (`ib_create_cq`) whose events go to a [`CqHandler`].
///
/// # Invariants
///
/// `cq` is a CQ created on `dev` whose callbacks get a pointer to the handler in `handler`'s
/// allocation; it is destroyed only on drop.
pub(crate) struct Cq {
    cq: NonNull<sys::ib_cq>,
    _handler: Arc<dyn CqHandler>,
    dev: ARef<RegisteredDevice>,
}

// SAFETY: The CQ is only used through the RDMA core's thread-safe API, and the handler is
// `Send + Sync`.
unsafe impl Send for Cq {}
// SAFETY: As above; drivers lock around polling and arming.
unsafe impl Sync for Cq {}

impl Cq {
    /// Creates a completion queue with room for `entries` completions on `dev`; `handler`
    /// stays alive until the queue is destroyed.
    pub(crate) fn new<H: CqHandler>(
        dev: &ARef<RegisteredDevice>,
        entries: u32,
        handler: Arc<H>,
    ) -> Result<Arc<Self>> {
        let attr = sys::ib_cq_init_attr {
            cqe: entries,
            comp_vector: 0,
            flags: 0,
        };
        let context = Arc::as_ptr(&handler).cast_mut().cast::<c_void>();
        // SAFETY: The device is registered while we hold `dev`; `attr` and `CALLER` are valid
        // for the call. `context` points to the `H` in `handler`'s allocation, which the `Cq`
        // keeps until after the CQ is destroyed, as the callbacks require.
        let cq = from_err_ptr(unsafe {
            sys::__ib_create_cq(
                dev.as_raw(),
                Some(comp_callback::<H>),
                Some(event_callback::<H>),
                context,
                &attr,
                CALLER.as_char_ptr(),
            )
        })?;
        // INVARIANT: `cq` was just created on `dev` with `handler` as its context.
        let cq = Self {
            cq: NonNull::new(cq).ok_or(ENOMEM)?,
            _handler: handler,
            dev: dev.clone(),
        };
        Ok(Arc::new(cq, GFP_KERNEL)?)
    }

    /// Reaps up to `wcs.len()` completions into `wcs`; returns how many.
    ///
    /// Fewer than `wcs.len()` means the queue is empty. A driver fails polling only after a
    /// fatal device error, which this reports as an empty queue.
    pub(crate) fn poll(&self, wcs: &mut [WorkCompletion]) -> usize {
        let max = c_int::try_from(wcs.len()).unwrap_or(c_int::MAX);
        // SAFETY: The CQ is valid by the type invariant; `wcs` has room for `max` `ib_wc`s,
        // the layout of `WorkCompletion`.
        let polled =
            unsafe { sys::rsmc_ib_poll_cq(self.cq.as_ptr(), max, wcs.as_mut_ptr().cast()) };
        usize::try_from(polled).unwrap_or(0)
    }

    /// Arms the queue: the handler's [`CqHandler::completion`] runs once for the next
    /// completion (only for solicited ones if `solicited_only`).
    ///
    /// With `report_missed`, returns whether completions may have arrived since the last poll
    /// without an event, in which case the caller must poll again before waiting.
    pub(crate) fn request_notify(&self, solicited_only: bool, report_missed: bool) -> Result<bool> {
        let mut flags = if solicited_only {
            sys::ib_cq_notify_flags_IB_CQ_SOLICITED
        } else {
            sys::ib_cq_notify_flags_IB_CQ_NEXT_COMP
        };
        if report_missed {
            flags |= sys::ib_cq_notify_flags_IB_CQ_REPORT_MISSED_EVENTS;
        }
        // SAFETY: The CQ is valid by the type invariant.
        let ret = unsafe { sys::rsmc_ib_req_notify_cq(self.cq.as_ptr(), flags) };
        to_result(ret)?;
        Ok(ret > 0)
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: The CQ is valid by the type invariant. Queue pairs hold an `Arc<Cq>`, so none
        // uses it any more; once `ib_destroy_cq` returns no callback runs, so the handler may
        // be dropped after this.
        unsafe { sys::rsmc_ib_destroy_cq(self.cq.as_ptr()) };
    }
}

/// # Safety
///
/// Called by the RDMA core for a CQ created by [`Cq::new`] for the same `H`, with its context.
unsafe extern "C" fn comp_callback<H: CqHandler>(_cq: *mut sys::ib_cq, context: *mut c_void) {
    // SAFETY: `context` points to the `H` the `Cq` keeps alive until the CQ is destroyed.
    let handler = unsafe { &*context.cast::<H>() };
    handler.completion();
}

/// # Safety
///
/// As for [`comp_callback`], with a valid event.
unsafe extern "C" fn event_callback<H: CqHandler>(event: *mut sys::ib_event, context: *mut c_void) {
    // SAFETY: As in `comp_callback`; the event is valid for the call.
    let (handler, kind) = unsafe { (&*context.cast::<H>(), (*event).event) };
    if kind == sys::ib_event_type_IB_EVENT_CQ_ERR {
        handler.error();
    }
}

/// A work completion reaped by [`Cq::poll`].
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(crate) struct WorkCompletion(sys::ib_wc);

impl WorkCompletion {
    /// A blank completion, to fill a polling array with.
    pub(crate) const EMPTY: Self = Self(pin_init::zeroed());

    /// The id of the work request, as it was posted.
    pub(crate) fn wr_id(&self) -> u64 {
        // SAFETY: rsmc posts every work request with a `wr_id` (never a `wr_cqe`), which the
        // driver copies here; any value is a valid `u64`.
        unsafe { self.0.__bindgen_anon_1.wr_id }
    }

    /// Whether the work request succeeded, and if not why.
    pub(crate) fn status(&self) -> WcStatus {
        WcStatus(self.0.status)
    }

    /// What the work request did; meaningful only if it succeeded.
    pub(crate) fn opcode(&self) -> WcOpcode {
        match self.0.opcode {
            sys::ib_wc_opcode_IB_WC_SEND => WcOpcode::Send,
            sys::ib_wc_opcode_IB_WC_RDMA_WRITE => WcOpcode::RdmaWrite,
            sys::ib_wc_opcode_IB_WC_REG_MR => WcOpcode::RegMr,
            sys::ib_wc_opcode_IB_WC_RECV => WcOpcode::Recv,
            other => WcOpcode::Other(other),
        }
    }

    /// For a receive, the number of bytes received.
    pub(crate) fn byte_len(&self) -> u32 {
        self.0.byte_len
    }
}

/// The status of a work completion (`enum ib_wc_status`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct WcStatus(sys::ib_wc_status);

impl WcStatus {
    /// The work request succeeded.
    pub(crate) const SUCCESS: Self = Self(sys::ib_wc_status_IB_WC_SUCCESS);
}

impl fmt::Display for WcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: `ib_wc_status_msg` accepts any value and returns a static string.
        let msg = unsafe { CStr::from_char_ptr(sys::ib_wc_status_msg(self.0)) };
        write!(f, "{} ({})", msg.to_str().unwrap_or("?"), self.0)
    }
}

/// What a completed work request did (`enum ib_wc_opcode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WcOpcode {
    /// A SEND.
    Send,
    /// An RDMA WRITE.
    RdmaWrite,
    /// A fast registration of a memory region.
    RegMr,
    /// A receive (of a SEND).
    Recv,
    /// Anything else, with its C code.
    Other(u32),
}

/// Which way data moves between a [`DmaBuffer`] and the device.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum DmaDirection {
    /// The device reads the buffer (the source of SENDs and RDMA WRITEs).
    ToDevice,
    /// The device writes the buffer (receives, and RDMA WRITEs of peers).
    FromDevice,
}

impl DmaDirection {
    fn raw(self) -> sys::dma_data_direction {
        match self {
            Self::ToDevice => sys::dma_data_direction::DMA_TO_DEVICE,
            Self::FromDevice => sys::dma_data_direction::DMA_FROM_DEVICE,
        }
    }
}

/// A physically contiguous kernel buffer mapped for DMA by one RDMA device, zero-initialised
/// when allocated (a buffer used again keeps what its last user left in it).
///
/// The CPU accesses it only by copying (see the module documentation for who may touch which
/// bytes when). Buffers of a page or more are page aligned; smaller ones never cross a page.
///
/// # Invariants
///
/// `ptr` is a `Kmalloc` allocation of `layout` (`len` bytes or more), mapped for DMA at `dma`
/// for `len` bytes in direction `dir` on `dev`; it is unmapped and freed only on drop.
pub(crate) struct DmaBuffer {
    ptr: NonNull<u8>,
    layout: Layout,
    len: usize,
    dma: u64,
    dir: DmaDirection,
    dev: ARef<RegisteredDevice>,
}

// SAFETY: The memory is owned by the buffer and only accessed through volatile copies and the
// DMA API, both fine from any thread.
unsafe impl Send for DmaBuffer {}
// SAFETY: As above: `&DmaBuffer` only allows copies that tolerate concurrent ones.
unsafe impl Sync for DmaBuffer {}

impl DmaBuffer {
    /// Allocates a buffer of `len` bytes and maps it on `dev` for `dir`.
    pub(crate) fn new(
        dev: &ARef<RegisteredDevice>,
        len: usize,
        dir: DmaDirection,
    ) -> Result<Arc<Self>> {
        if len == 0 {
            return Err(EINVAL);
        }
        // kmalloc memory is physically contiguous, and power-of-two sizes are naturally
        // aligned; asking for page alignment (or the size's) keeps a memory region's page list
        // to the pages the buffer covers.
        let align = if len >= PAGE_SIZE {
            PAGE_SIZE
        } else {
            len.next_power_of_two()
        };
        let layout = Layout::from_size_align(len, align).map_err(|_| EINVAL)?;
        let ptr = Kmalloc::alloc(layout, GFP_KERNEL | __GFP_ZERO, NumaNode::NO_NODE)?.cast::<u8>();
        // SAFETY: The device is registered while we hold `dev`; `ptr` is a live allocation of
        // at least `len` bytes in the kernel's linear map.
        let dma = unsafe {
            sys::rsmc_ib_dma_map_single(dev.as_raw(), ptr.as_ptr().cast(), len, dir.raw())
        };
        // SAFETY: `dma` came from mapping on this device.
        if unsafe { sys::rsmc_ib_dma_mapping_error(dev.as_raw(), dma) } != 0 {
            // SAFETY: `ptr` was allocated above with `layout` and was never shared.
            unsafe { Kmalloc::free(ptr, layout) };
            return Err(ENOMEM);
        }
        // INVARIANT: `ptr` was allocated with `layout` and mapped at `dma` above.
        let buf = Self {
            ptr,
            layout,
            len,
            dma,
            dir,
            dev: dev.clone(),
        };
        Ok(Arc::new(buf, GFP_KERNEL)?)
    }

    /// Whether the buffer is `len` bytes long and mapped for `dir`.
    pub(crate) fn fits(&self, len: usize, dir: DmaDirection) -> bool {
        self.len == len && self.dir == dir
    }

    /// The buffer's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Checks that `offset..offset + len` lies in the buffer; returns its end.
    fn check_range(&self, offset: usize, len: usize) -> Result<usize> {
        offset
            .checked_add(len)
            .filter(|&end| end <= self.len)
            .ok_or(EINVAL)
    }

    /// Copies `data` into the buffer at `offset` and hands it to the device.
    pub(crate) fn write(&self, offset: usize, data: &[u8]) -> Result {
        self.check_range(offset, data.len())?;
        for (i, &byte) in data.iter().enumerate() {
            // SAFETY: `offset + i < len`, inside the allocation (type invariant). A volatile
            // write races at worst with the device's access to the same byte.
            unsafe { self.ptr.as_ptr().add(offset + i).write_volatile(byte) };
        }
        // SAFETY: The range is mapped (type invariant, checked above).
        unsafe {
            sys::rsmc_ib_dma_sync_single_for_device(
                self.dev.as_raw(),
                self.dma + offset as u64,
                data.len(),
                self.dir.raw(),
            )
        };
        Ok(())
    }

    /// Takes the bytes at `offset` back from the device and copies them into `out`.
    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) -> Result {
        self.check_range(offset, out.len())?;
        // SAFETY: The range is mapped (type invariant, checked above).
        unsafe {
            sys::rsmc_ib_dma_sync_single_for_cpu(
                self.dev.as_raw(),
                self.dma + offset as u64,
                out.len(),
                self.dir.raw(),
            )
        };
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: `offset + i < len`, inside the allocation (type invariant). A volatile
            // read races at worst with the device's write of the same byte.
            *byte = unsafe { self.ptr.as_ptr().add(offset + i).read_volatile() };
        }
        Ok(())
    }

    /// Copies `len` bytes from the data of `msg` into the buffer at `offset` and hands them to
    /// the device; returns how many were copied (fewer only if user memory faulted).
    pub(crate) fn copy_from_msg(
        &self,
        offset: usize,
        msg: &mut MsgHdr,
        len: usize,
    ) -> Result<usize> {
        self.check_range(offset, len)?;
        // SAFETY: `offset + len` lies inside the allocation (type invariant, checked above);
        // the copy races at worst with the device reading the same bytes, which the
        // connection's cursors rule out.
        let copied = unsafe {
            sys::rsmc_copy_from_iter(self.ptr.as_ptr().add(offset).cast(), len, msg.iter())
        };
        // SAFETY: The range is mapped (type invariant, checked above).
        unsafe {
            sys::rsmc_ib_dma_sync_single_for_device(
                self.dev.as_raw(),
                self.dma + offset as u64,
                copied,
                self.dir.raw(),
            )
        };
        Ok(copied)
    }

    /// Takes `len` bytes at `offset` back from the device and copies them into the data of
    /// `msg`; returns how many were copied (fewer only if user memory faulted).
    pub(crate) fn copy_to_msg(&self, offset: usize, msg: &mut MsgHdr, len: usize) -> Result<usize> {
        self.check_range(offset, len)?;
        // SAFETY: The range is mapped (type invariant, checked above).
        unsafe {
            sys::rsmc_ib_dma_sync_single_for_cpu(
                self.dev.as_raw(),
                self.dma + offset as u64,
                len,
                self.dir.raw(),
            )
        };
        // SAFETY: `offset + len` lies inside the allocation; the device no longer writes these
        // bytes (the peer's producer cursor moved past them).
        Ok(
            unsafe {
                sys::rsmc_copy_to_iter(self.ptr.as_ptr().add(offset).cast(), len, msg.iter())
            },
        )
    }

    /// Describes `offset..offset + len` of the buffer for a work request, with the key that
    /// grants access to it (e.g. [`Pd::local_dma_lkey`]).
    pub(crate) fn sge(&self, offset: usize, len: usize, lkey: u32) -> Result<Sge<'_>> {
        self.check_range(offset, len)?;
        Ok(Sge {
            buf: self,
            offset: offset as u64,
            len: u32::try_from(len).map_err(|_| EINVAL)?,
            lkey,
        })
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the buffer is mapped at `dma` on `dev`, and allocated
        // with `layout`. Whoever let the device use it (a queue pair, a memory region) held an
        // `Arc` until the device could no longer touch it, so nothing does now.
        unsafe {
            sys::rsmc_ib_dma_unmap_single(self.dev.as_raw(), self.dma, self.len, self.dir.raw());
            Kmalloc::free(self.ptr, self.layout);
        }
    }
}

/// The most pages one [`PinnedPages`] holds, and so the scatter/gather entries of one of its
/// RDMA WRITEs: a 64 KiB buffer that does not start on a page boundary spans 17 pages, and
/// takes one WRITE, not two.
pub(crate) const MAX_PINNED_PAGES: usize = 17;

/// User pages a zerocopy send pinned (`iov_iter_extract_pages`, `FOLL_PIN`), mapped for the
/// device to read: `len` bytes starting `offset` bytes into the first page.
///
/// # Invariants
///
/// The first `count` entries of `pages` are pinned user pages, each mapped for
/// `DMA_TO_DEVICE` on `dev` at the same entry of `dma` for the bytes of it the range covers;
/// they are unmapped and unpinned only on drop.
pub(crate) struct PinnedPages {
    pages: [*mut sys::page; MAX_PINNED_PAGES],
    dma: [u64; MAX_PINNED_PAGES],
    count: usize,
    offset: usize,
    len: usize,
    dev: ARef<RegisteredDevice>,
}

// SAFETY: Pinned pages stay put whichever thread holds them; unpinning works from any context.
unsafe impl Send for PinnedPages {}
// SAFETY: `&PinnedPages` only reads the fixed page and DMA lists.
unsafe impl Sync for PinnedPages {}

impl PinnedPages {
    /// Pins up to `max_len` bytes of `msg`'s data (at most [`MAX_PINNED_PAGES`] pages) and maps
    /// them on `dev`, advancing the message past them. `None` if the data is not user memory
    /// that can be pinned (the caller copies it instead).
    pub(crate) fn pin(
        dev: &ARef<RegisteredDevice>,
        msg: &mut MsgHdr,
        max_len: usize,
    ) -> Result<Option<Self>> {
        let iter = msg.iter();
        // SAFETY: The message's iterator is valid for the borrow.
        if max_len == 0 || !unsafe { sys::rsmc_iov_iter_extract_will_pin(iter) } {
            return Ok(None);
        }
        let mut pinned = Self {
            pages: [ptr::null_mut(); MAX_PINNED_PAGES],
            dma: [0; MAX_PINNED_PAGES],
            count: 0,
            offset: 0,
            len: 0,
            dev: dev.clone(),
        };
        // SAFETY: `pages` has room for `MAX_PINNED_PAGES` entries; the iterator is user memory
        // (checked above), so the pages come back pinned.
        let got = unsafe {
            sys::rsmc_iov_iter_extract_pages(
                iter,
                pinned.pages.as_mut_ptr(),
                max_len,
                MAX_PINNED_PAGES as u32,
                &mut pinned.offset,
            )
        };
        // CAST: A negative return is an errno.
        let len = usize::try_from(got).map_err(|_| Error::from_errno(got as i32))?;
        if len == 0 {
            return Ok(None);
        }
        pinned.len = len;
        let count = (pinned.offset + len).div_ceil(PAGE_SIZE);
        // Mapped one by one; on failure, drop unpins all and unmaps those mapped.
        for i in 0..count {
            let (start, bytes) = pinned.page_span(i);
            // SAFETY: The device is registered while we hold `dev`; the page is pinned.
            let dma = unsafe {
                sys::rsmc_ib_dma_map_page(
                    dev.as_raw(),
                    pinned.pages[i],
                    // CAST: Within a page.
                    start as kernel::ffi::c_ulong,
                    bytes,
                    DmaDirection::ToDevice.raw(),
                )
            };
            // SAFETY: `dma` came from mapping on this device.
            if unsafe { sys::rsmc_ib_dma_mapping_error(dev.as_raw(), dma) } != 0 {
                pinned.unpin_unmapped(i, count);
                return Err(ENOMEM);
            }
            pinned.dma[i] = dma;
            pinned.count = i + 1;
        }
        // INVARIANT: `count` pages are pinned and mapped.
        Ok(Some(pinned))
    }

    /// Bytes pinned.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The offset in page `i` and the bytes of it the range covers.
    fn page_span(&self, i: usize) -> (usize, usize) {
        let start = if i == 0 { self.offset } else { 0 };
        let end = (self.offset + self.len - i * PAGE_SIZE).min(PAGE_SIZE);
        (start, end - start)
    }

    /// Unpins pages `from..to`, which were pinned but are not mapped.
    fn unpin_unmapped(&mut self, from: usize, to: usize) {
        for page in &self.pages[from..to] {
            // SAFETY: The page was pinned by `pin` and is not mapped; it is unpinned once.
            unsafe { sys::unpin_user_page(*page) };
        }
    }

    /// Fills `out` with the scatter/gather entries of bytes `offset..offset + len` of the
    /// pinned range; returns how many.
    fn sges(&self, offset: usize, len: usize, lkey: u32, out: &mut [sys::ib_sge]) -> Result<usize> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) || len == 0 {
            return Err(EINVAL);
        }
        let mut n = 0;
        // Offsets within the first page's frame.
        let (mut at, end) = (self.offset + offset, self.offset + offset + len);
        while at < end {
            let i = at / PAGE_SIZE;
            let in_page = at % PAGE_SIZE;
            let bytes = (PAGE_SIZE - in_page).min(end - at);
            let (start, _) = self.page_span(i);
            let entry = out.get_mut(n).ok_or(EINVAL)?;
            *entry = sys::ib_sge {
                addr: self.dma[i] + (in_page - start) as u64,
                // CAST: At most a page.
                length: bytes as u32,
                lkey,
            };
            n += 1;
            at += bytes;
        }
        Ok(n)
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        for i in 0..self.count {
            let (_, bytes) = self.page_span(i);
            // SAFETY: By the type invariant page `i` is mapped at `dma[i]` for `bytes` on
            // `dev`; whoever let the device read it held this value until it could not.
            unsafe {
                sys::rsmc_ib_dma_unmap_page(
                    self.dev.as_raw(),
                    self.dma[i],
                    bytes,
                    DmaDirection::ToDevice.raw(),
                )
            };
        }
        let count = self.count;
        self.unpin_unmapped(0, count);
    }
}

/// Memory a queue pair's RDMA WRITEs may read besides its buffers: the pinned pages of a
/// zerocopy send, with whatever must live exactly as long (the send's notification).
pub(crate) trait PinnedMemory: Send + Sync {
    /// The pinned pages.
    fn pages(&self) -> &PinnedPages;
}

/// A piece of a [`DmaBuffer`] for a work request (a scatter/gather entry).
pub(crate) struct Sge<'a> {
    buf: &'a DmaBuffer,
    offset: u64,
    len: u32,
    lkey: u32,
}

/// A fast-registration memory region (`IB_MR_TYPE_MEM_REG`) covering one [`DmaBuffer`]: what
/// lets a peer RDMA WRITE into the buffer.
///
/// Created unregistered; [`Qp::post_reg_mr`] makes [`Mr::rkey`] valid once its completion
/// arrives.
///
/// # Invariants
///
/// `mr` is a memory region of `pd` whose page list maps all of `buf`; it is deregistered only
/// on drop.
pub(crate) struct Mr {
    mr: NonNull<sys::ib_mr>,
    buf: Arc<DmaBuffer>,
    pd: Arc<Pd>,
}

// SAFETY: The MR is only used through the RDMA core's thread-safe API.
unsafe impl Send for Mr {}
// SAFETY: As above; `&Mr` only reads fields fixed since the mapping.
unsafe impl Sync for Mr {}

impl Mr {
    /// Allocates a memory region on `pd` and maps `buf` into it (`ib_map_mr_sg`).
    pub(crate) fn new(pd: &Arc<Pd>, buf: Arc<DmaBuffer>) -> Result<Arc<Self>> {
        if !ptr::eq(&*buf.dev, &*pd.dev) {
            return Err(EINVAL);
        }
        let pages = u32::try_from(buf.len.div_ceil(PAGE_SIZE)).map_err(|_| EINVAL)?;
        // SAFETY: The PD is valid by its type invariant.
        let mr = from_err_ptr(unsafe {
            sys::ib_alloc_mr(pd.pd.as_ptr(), sys::ib_mr_type_IB_MR_TYPE_MEM_REG, pages)
        })?;
        let len = c_uint::try_from(buf.len).map_err(|_| EINVAL)?;
        let dma = buf.dma;
        // From here on dropping `mr` deregisters it.
        let mr = Self {
            mr: NonNull::new(mr).ok_or(ENOMEM)?,
            buf,
            pd: pd.clone(),
        };
        // A one-entry scatterlist of the buffer's DMA range: `ib_map_mr_sg` reads only its DMA
        // address and length, and keeps nothing pointing to it.
        let mut sg = sys::scatterlist::default();
        // SAFETY: `sg` is one writable entry; the shims return pointers into it.
        unsafe {
            sys::sg_init_table(&mut sg, 1);
            *sys::rsmc_sg_dma_address(&mut sg) = dma;
            *sys::rsmc_sg_dma_len(&mut sg) = len;
        }
        // SAFETY: The MR is valid and was allocated for `pages` pages, as many as `sg` covers
        // (the buffer starts on a page boundary or does not cross one).
        let mapped = unsafe {
            sys::ib_map_mr_sg(
                mr.mr.as_ptr(),
                &mut sg,
                1,
                ptr::null_mut(),
                PAGE_SIZE as c_uint,
            )
        };
        to_result(mapped)?;
        if mapped != 1 {
            return Err(EINVAL);
        }
        // INVARIANT: The page list now maps all of `buf`.
        Ok(Arc::new(mr, GFP_KERNEL)?)
    }

    /// The key peers use to RDMA WRITE into the region, valid once registered.
    pub(crate) fn rkey(&self) -> u32 {
        // SAFETY: The MR is valid by the type invariant; the key changes only when a
        // registration with another key is posted, which rsmc never does.
        unsafe { (*self.mr.as_ptr()).rkey }
    }

    /// The address peers RDMA WRITE to for the first byte of the buffer.
    pub(crate) fn addr(&self) -> u64 {
        // SAFETY: The MR is valid by the type invariant; `iova` was set by the mapping.
        unsafe { (*self.mr.as_ptr()).iova }
    }

    /// The buffer the region covers, for the CPU to read what peers wrote.
    pub(crate) fn buffer(&self) -> &DmaBuffer {
        &self.buf
    }

    /// The buffer the region covers, to keep once the region is gone.
    pub(crate) fn shared_buffer(&self) -> Arc<DmaBuffer> {
        self.buf.clone()
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: The MR is valid by the type invariant. After deregistration its keys are
        // invalid, so no device touches the buffer through it any more; the buffer is dropped
        // only after this.
        let ret = unsafe { sys::rsmc_ib_dereg_mr(self.mr.as_ptr()) };
        kernel::warn_on!(ret != 0);
    }
}

/// What a queue pair needs to know about its peer (it learns it in the CLC handshake).
pub(crate) struct RemoteQp {
    /// The peer's GID.
    pub(crate) gid: [u8; 16],
    /// The MAC address of the peer's netdev (or of the next hop).
    pub(crate) mac: [u8; 6],
    /// The peer's queue pair number.
    pub(crate) qpn: u32,
    /// The first packet sequence number the peer sends.
    pub(crate) psn: u32,
}

/// A reliable-connected queue pair (`IB_QPT_RC`): one scatter/gather entry per work request,
/// or one per page for RDMA WRITEs from pinned user pages.
///
/// # Invariants
///
/// `qp` is a QP created on `pd` with `_send_cq` and `_recv_cq`, destroyed only on drop. Every
/// buffer and memory region a posted work request may touch is in `memory`.
pub(crate) struct Qp {
    qp: NonNull<sys::ib_qp>,
    // Dropped in this order, after the QP is destroyed: what its work requests touched, the
    // CQs, then the PD (which the MRs need until they are deregistered).
    memory: Pin<KBox<SpinLockIrq<QpMemory>>>,
    _send_cq: Arc<Cq>,
    _recv_cq: Arc<Cq>,
    pd: Arc<Pd>,
}

/// The buffers and memory regions a queue pair's work requests may touch. Locked with IRQs off:
/// work requests are posted from process context and from NAPI polls.
struct QpMemory {
    buffers: KVec<Arc<DmaBuffer>>,
    mrs: KVec<Arc<Mr>>,
    pinned: KVec<Arc<dyn PinnedMemory>>,
}

// SAFETY: The QP is only used through the RDMA core's thread-safe API (drivers lock around
// posting); the lists are behind a lock.
unsafe impl Send for Qp {}
// SAFETY: As above.
unsafe impl Sync for Qp {}

impl Qp {
    /// Creates an RC queue pair on `pd` whose send and receive completions go to `send_cq` and
    /// `recv_cq` (which may be the same), with room for the given numbers of work requests.
    pub(crate) fn new(
        pd: &Arc<Pd>,
        send_cq: &Arc<Cq>,
        recv_cq: &Arc<Cq>,
        max_send_wr: u32,
        max_recv_wr: u32,
    ) -> Result<Self> {
        if !ptr::eq(&*send_cq.dev, &*pd.dev) || !ptr::eq(&*recv_cq.dev, &*pd.dev) {
            return Err(EINVAL);
        }
        let mut attr = sys::ib_qp_init_attr {
            send_cq: send_cq.cq.as_ptr(),
            recv_cq: recv_cq.cq.as_ptr(),
            sq_sig_type: sys::ib_sig_type_IB_SIGNAL_REQ_WR,
            qp_type: sys::ib_qp_type_IB_QPT_RC,
            ..Default::default()
        };
        attr.cap.max_send_wr = max_send_wr;
        attr.cap.max_recv_wr = max_recv_wr;
        // RDMA WRITEs from pinned user pages take one entry per page.
        attr.cap.max_send_sge = MAX_PINNED_PAGES as u32;
        attr.cap.max_recv_sge = 1;
        // SAFETY: The PD and CQs are valid and on the same device; `attr` is valid for the
        // call (no event handler: asynchronous QP errors also fail the work requests).
        let qp = from_err_ptr(unsafe {
            sys::ib_create_qp_kernel(pd.pd.as_ptr(), &mut attr, CALLER.as_char_ptr())
        })?;
        // INVARIANT: `qp` was just created; nothing is posted yet.
        Ok(Self {
            qp: NonNull::new(qp).ok_or(ENOMEM)?,
            memory: KBox::pin_init(
                new_spinlock_irq!(QpMemory {
                    buffers: KVec::new(),
                    mrs: KVec::new(),
                    pinned: KVec::new(),
                }),
                GFP_KERNEL,
            )?,
            _send_cq: send_cq.clone(),
            _recv_cq: recv_cq.clone(),
            pd: pd.clone(),
        })
    }

    /// The queue pair number the peer addresses.
    pub(crate) fn qp_num(&self) -> u32 {
        // SAFETY: The QP is valid by the type invariant; the number is fixed at creation.
        unsafe { (*self.qp.as_ptr()).qp_num }
    }

    fn modify(&self, attr: &mut sys::ib_qp_attr, mask: sys::ib_qp_attr_mask) -> Result {
        // SAFETY: The QP is valid by the type invariant; `attr` is valid for the call. The
        // attribute mask bits all fit in an `int`.
        to_result(unsafe { sys::ib_modify_qp(self.qp.as_ptr(), attr, mask as c_int) })
    }

    /// RESET → INIT on `port`, granting peers `access`.
    pub(crate) fn modify_to_init(&self, port: u32, access: Access) -> Result {
        let mut attr = sys::ib_qp_attr {
            qp_state: sys::ib_qp_state_IB_QPS_INIT,
            pkey_index: 0,
            port_num: port,
            qp_access_flags: access.raw(),
            ..Default::default()
        };
        self.modify(
            &mut attr,
            sys::ib_qp_attr_mask_IB_QP_STATE
                | sys::ib_qp_attr_mask_IB_QP_PKEY_INDEX
                | sys::ib_qp_attr_mask_IB_QP_ACCESS_FLAGS
                | sys::ib_qp_attr_mask_IB_QP_PORT,
        )
    }

    /// INIT → RTR: connects to `remote` from the GID at `sgid_index` of `port`, with `mtu`.
    ///
    /// Kernel callers must resolve the destination MAC themselves (the RDMA core only does it
    /// for user space), so `remote` carries it.
    pub(crate) fn modify_to_rtr(
        &self,
        port: u32,
        sgid_index: u32,
        remote: &RemoteQp,
        mtu: PathMtu,
    ) -> Result {
        let sgid_index = u8::try_from(sgid_index).map_err(|_| EINVAL)?;
        let mut attr = sys::ib_qp_attr {
            qp_state: sys::ib_qp_state_IB_QPS_RTR,
            path_mtu: mtu.code().into(),
            dest_qp_num: remote.qpn,
            rq_psn: remote.psn,
            max_dest_rd_atomic: 1,
            min_rnr_timer: MIN_RNR_TIMER,
            ..Default::default()
        };
        attr.ah_attr.type_ = sys::rdma_ah_attr_type_RDMA_AH_ATTR_TYPE_ROCE;
        attr.ah_attr.__bindgen_anon_1.roce.dmac = remote.mac;
        let mut dgid = remote.gid;
        // SAFETY: `attr.ah_attr` is valid and writable; `dgid` is 16 readable bytes.
        unsafe {
            sys::rsmc_rdma_ah_set_port_num(&mut attr.ah_attr, port);
            sys::rsmc_rdma_ah_set_grh(
                &mut attr.ah_attr,
                ptr::null_mut(),
                0,
                sgid_index,
                HOP_LIMIT,
                0,
            );
            sys::rsmc_rdma_ah_set_dgid_raw(&mut attr.ah_attr, dgid.as_mut_ptr().cast());
        }
        self.modify(
            &mut attr,
            sys::ib_qp_attr_mask_IB_QP_STATE
                | sys::ib_qp_attr_mask_IB_QP_AV
                | sys::ib_qp_attr_mask_IB_QP_PATH_MTU
                | sys::ib_qp_attr_mask_IB_QP_DEST_QPN
                | sys::ib_qp_attr_mask_IB_QP_RQ_PSN
                | sys::ib_qp_attr_mask_IB_QP_MAX_DEST_RD_ATOMIC
                | sys::ib_qp_attr_mask_IB_QP_MIN_RNR_TIMER,
        )
    }

    /// RTR → RTS, sending from packet sequence number `sq_psn`.
    pub(crate) fn modify_to_rts(&self, sq_psn: u32) -> Result {
        let mut attr = sys::ib_qp_attr {
            qp_state: sys::ib_qp_state_IB_QPS_RTS,
            timeout: ACK_TIMEOUT,
            retry_cnt: RETRY_COUNT,
            rnr_retry: RNR_RETRY,
            sq_psn,
            max_rd_atomic: 1,
            ..Default::default()
        };
        self.modify(
            &mut attr,
            sys::ib_qp_attr_mask_IB_QP_STATE
                | sys::ib_qp_attr_mask_IB_QP_TIMEOUT
                | sys::ib_qp_attr_mask_IB_QP_RETRY_CNT
                | sys::ib_qp_attr_mask_IB_QP_SQ_PSN
                | sys::ib_qp_attr_mask_IB_QP_RNR_RETRY
                | sys::ib_qp_attr_mask_IB_QP_MAX_QP_RD_ATOMIC,
        )
    }

    /// Moves to ERROR: outstanding work requests complete as flushed.
    pub(crate) fn modify_to_error(&self) -> Result {
        let mut attr = sys::ib_qp_attr {
            qp_state: sys::ib_qp_state_IB_QPS_ERR,
            ..Default::default()
        };
        self.modify(&mut attr, sys::ib_qp_attr_mask_IB_QP_STATE)
    }

    /// Lets this queue pair's work requests use `buf` (of the same device): the `post_*`
    /// methods refuse other buffers, and `buf` stays mapped until the queue pair is destroyed,
    /// so the device never touches freed memory.
    pub(crate) fn attach(&self, buf: Arc<DmaBuffer>) -> Result {
        if !ptr::eq(&*buf.dev, &*self.pd.dev) {
            return Err(EINVAL);
        }
        self.memory.lock().buffers.push(buf, GFP_ATOMIC)?;
        Ok(())
    }

    /// Takes back from this queue pair a buffer [`Qp::attach`] gave it.
    ///
    /// # Safety
    ///
    /// No work request posted on this queue pair that names `buf` may be outstanding.
    pub(crate) unsafe fn detach_buffer(&self, buf: &Arc<DmaBuffer>) {
        let mut memory = self.memory.lock();
        if let Some(i) = memory.buffers.iter().position(|b| Arc::ptr_eq(b, buf)) {
            // The reference is dropped unlocked below: a buffer's destructor unmaps it.
            let taken = memory.buffers.remove(i);
            drop(memory);
            drop(taken);
        }
    }

    /// Lets this queue pair's RDMA WRITEs read `memory` until [`Qp::detach_pinned`] (or until
    /// it is destroyed).
    pub(crate) fn attach_pinned(&self, memory: Arc<dyn PinnedMemory>) -> Result {
        if !ptr::eq(&*memory.pages().dev, &*self.pd.dev) {
            return Err(EINVAL);
        }
        self.memory.lock().pinned.push(memory, GFP_ATOMIC)?;
        Ok(())
    }

    /// Takes back from this queue pair the memory [`Qp::attach_pinned`] gave it for `pages`.
    ///
    /// # Safety
    ///
    /// No work request posted on this queue pair that names `pages` may be outstanding.
    pub(crate) unsafe fn detach_pinned(&self, pages: &PinnedPages) {
        let mut memory = self.memory.lock();
        if let Some(i) = memory.pinned.iter().position(|m| ptr::eq(m.pages(), pages)) {
            // Dropped unlocked: the last reference unmaps and unpins the pages.
            let taken = memory.pinned.remove(i);
            drop(memory);
            drop(taken);
        }
    }

    /// Takes back from this queue pair a memory region [`Qp::post_reg_mr`] registered.
    ///
    /// # Safety
    ///
    /// No work request posted on this queue pair that names `mr` may be outstanding.
    pub(crate) unsafe fn detach_mr(&self, mr: &Arc<Mr>) {
        let mut memory = self.memory.lock();
        if let Some(i) = memory.mrs.iter().position(|m| Arc::ptr_eq(m, mr)) {
            let taken = memory.mrs.remove(i);
            drop(memory);
            drop(taken);
        }
    }

    /// The `ib_sge` for `local` if the device may move data `dir` through it.
    fn ib_sge(&self, local: &Sge<'_>, dir: DmaDirection) -> Result<sys::ib_sge> {
        let attached = || {
            self.memory
                .lock()
                .buffers
                .iter()
                .any(|b| ptr::eq(&**b, local.buf))
        };
        if local.buf.dir != dir || !attached() {
            return Err(EINVAL);
        }
        Ok(sys::ib_sge {
            addr: local.buf.dma + local.offset,
            length: local.len,
            lkey: local.lkey,
        })
    }

    /// Posts a send work request whose first field is `wr`.
    ///
    /// # Safety
    ///
    /// `wr` must point to a valid work request (an `ib_send_wr` or a structure starting with
    /// one, as its opcode requires), and the memory it names must stay alive until the queue
    /// pair is destroyed.
    unsafe fn post_send_wr(&self, wr: *const sys::ib_send_wr) -> Result {
        // SAFETY: The QP is valid by the type invariant; the caller vouches for `wr`. Drivers
        // copy the request before returning.
        to_result(unsafe { sys::rsmc_ib_post_send(self.qp.as_ptr(), wr, ptr::null_mut()) })
    }

    /// Posts an RDMA WRITE of `local` (an attached `ToDevice` buffer) to `remote_addr` of the
    /// peer's memory region `rkey`; a completion is reported only if `signaled`.
    pub(crate) fn post_rdma_write(
        &self,
        wr_id: u64,
        local: &Sge<'_>,
        remote_addr: u64,
        rkey: u32,
        signaled: bool,
    ) -> Result {
        let mut sge = self.ib_sge(local, DmaDirection::ToDevice)?;
        let mut wr = sys::ib_rdma_wr {
            remote_addr,
            rkey,
            ..Default::default()
        };
        wr.wr.__bindgen_anon_1.wr_id = wr_id;
        wr.wr.sg_list = &mut sge;
        wr.wr.num_sge = 1;
        wr.wr.opcode = sys::ib_wr_opcode_IB_WR_RDMA_WRITE;
        wr.wr.send_flags = send_flags(signaled);
        // SAFETY: `wr` is a valid RDMA work request starting with its `ib_send_wr`; its one
        // entry names an attached buffer (checked by `self.ib_sge`), alive until the QP is gone.
        unsafe { self.post_send_wr((&raw const wr).cast()) }
    }

    /// Posts an RDMA WRITE of bytes `offset..offset + len` of `pages` (attached with
    /// [`Qp::attach_pinned`]) to `remote_addr` of the peer's memory region `rkey`; a completion
    /// is reported only if `signaled`.
    #[expect(clippy::too_many_arguments)]
    pub(crate) fn post_rdma_write_pinned(
        &self,
        wr_id: u64,
        pages: &PinnedPages,
        offset: usize,
        len: usize,
        lkey: u32,
        remote_addr: u64,
        rkey: u32,
        signaled: bool,
    ) -> Result {
        let attached = self
            .memory
            .lock()
            .pinned
            .iter()
            .any(|m| ptr::eq(m.pages(), pages));
        if !attached {
            return Err(EINVAL);
        }
        let mut sges = [sys::ib_sge::default(); MAX_PINNED_PAGES];
        let n = pages.sges(offset, len, lkey, &mut sges)?;
        let mut wr = sys::ib_rdma_wr {
            remote_addr,
            rkey,
            ..Default::default()
        };
        wr.wr.__bindgen_anon_1.wr_id = wr_id;
        wr.wr.sg_list = sges.as_mut_ptr();
        // CAST: At most `MAX_PINNED_PAGES`.
        wr.wr.num_sge = n as i32;
        wr.wr.opcode = sys::ib_wr_opcode_IB_WR_RDMA_WRITE;
        wr.wr.send_flags = send_flags(signaled);
        // SAFETY: `wr` is a valid RDMA work request starting with its `ib_send_wr`; its entries
        // name pages in `self.memory` (checked above), mapped until the QP lets them go.
        unsafe { self.post_send_wr((&raw const wr).cast()) }
    }

    /// Posts a SEND of `local` (an attached `ToDevice` buffer); a completion is reported only
    /// if `signaled`.
    pub(crate) fn post_send(&self, wr_id: u64, local: &Sge<'_>, signaled: bool) -> Result {
        let mut sge = self.ib_sge(local, DmaDirection::ToDevice)?;
        let mut wr = sys::ib_send_wr {
            sg_list: &mut sge,
            num_sge: 1,
            opcode: sys::ib_wr_opcode_IB_WR_SEND,
            send_flags: send_flags(signaled),
            ..Default::default()
        };
        wr.__bindgen_anon_1.wr_id = wr_id;
        // SAFETY: `wr` is a valid SEND whose one entry names an attached buffer (checked by
        // `self.ib_sge`), alive until the QP is gone.
        unsafe { self.post_send_wr(&wr) }
    }

    /// Posts a receive into `local` (an attached `FromDevice` buffer) for the peer's next SEND.
    pub(crate) fn post_recv(&self, wr_id: u64, local: &Sge<'_>) -> Result {
        let mut sge = self.ib_sge(local, DmaDirection::FromDevice)?;
        let mut wr = sys::ib_recv_wr {
            sg_list: &mut sge,
            num_sge: 1,
            ..Default::default()
        };
        wr.__bindgen_anon_1.wr_id = wr_id;
        // SAFETY: The QP is valid by the type invariant; `wr` is a valid receive whose one
        // entry names an attached buffer (checked by `self.ib_sge`), alive until the QP is gone.
        // Drivers copy the request before returning.
        to_result(unsafe { sys::rsmc_ib_post_recv(self.qp.as_ptr(), &wr, ptr::null_mut()) })
    }

    /// Posts the fast registration of `mr` (of this queue pair's PD) with `access` for peers;
    /// its completion (always reported, opcode [`WcOpcode::RegMr`]) makes [`Mr::rkey`] valid.
    /// The queue pair keeps `mr` until it is destroyed.
    pub(crate) fn post_reg_mr(&self, wr_id: u64, mr: &Arc<Mr>, access: Access) -> Result {
        if !Arc::ptr_eq(&mr.pd, &self.pd) {
            return Err(EINVAL);
        }
        {
            let mut memory = self.memory.lock();
            if !memory.mrs.iter().any(|m| Arc::ptr_eq(m, mr)) {
                memory.mrs.push(mr.clone(), GFP_ATOMIC)?;
            }
        }
        let mut wr = sys::ib_reg_wr {
            mr: mr.mr.as_ptr(),
            key: mr.rkey(),
            access: access.raw(),
            ..Default::default()
        };
        wr.wr.__bindgen_anon_1.wr_id = wr_id;
        wr.wr.opcode = sys::ib_wr_opcode_IB_WR_REG_MR;
        wr.wr.send_flags = send_flags(true);
        // SAFETY: `wr` is a valid registration request starting with its `ib_send_wr`; the MR
        // is in `self.memory`, alive until the QP is gone.
        unsafe { self.post_send_wr((&raw const wr).cast()) }
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // Flush what is outstanding, as SMC does before destroying a link's QP. A failure
        // leaves nothing to flush: destroying stops the QP either way.
        let _ = self.modify_to_error();
        // SAFETY: The QP is valid by the type invariant. Once destroyed the device no longer
        // processes its work requests, so the buffers, MRs and CQs may go after this.
        let ret = unsafe { sys::rsmc_ib_destroy_qp(self.qp.as_ptr()) };
        kernel::warn_on!(ret != 0);
    }
}

/// `send_flags` of a work request.
fn send_flags(signaled: bool) -> c_int {
    if signaled {
        sys::ib_send_flags_IB_SEND_SIGNALED
    } else {
        0
    }
}
