// SPDX-License-Identifier: GPL-2.0

//! `MSG_ZEROCOPY` in the socket layer: the `SOCK_ZEROCOPY` flag, TCP's id-range notifications
//! (`msg_zerocopy_realloc` and its `ubuf_info`), the error queue and control messages.

use super::{kernel_socket::MsgHdr, sock::Sock, sys};
use core::{mem::size_of, ptr::NonNull};
use kernel::{error::to_result, prelude::*};

/// `SOL_IP` and `IP_RECVERR`: the control message of an IPv4 TCP socket's error queue.
const SOL_IP: i32 = 0;
const IP_RECVERR: i32 = 11;
/// `SOL_IPV6` and `IPV6_RECVERR`, the same for IPv6.
const SOL_IPV6: i32 = 41;
const IPV6_RECVERR: i32 = 25;
/// `MSG_TRUNC`.
const MSG_TRUNC: u32 = 0x20;

impl Sock {
    /// Whether `SO_ZEROCOPY` is on.
    pub(crate) fn zerocopy(&self) -> bool {
        // SAFETY: `sk` is valid; socket flags are read racily by design.
        unsafe { sys::rsmc_sock_zerocopy(self.as_raw()) }
    }

    /// Sets `SO_ZEROCOPY`.
    pub(crate) fn set_zerocopy(&self, on: bool) {
        // SAFETY: `sk` is valid; the flag is set atomically.
        unsafe { sys::rsmc_sock_set_zerocopy(self.as_raw(), on) };
    }

    /// Whether notifications wait on the error queue.
    pub(crate) fn error_queue_pending(&self) -> bool {
        // SAFETY: `sk` is valid; the queue is read locklessly by design.
        !unsafe { sys::rsmc_sk_errqueue_empty(self.as_raw()) }
    }

    /// Wakes error-queue readers and pollers (`sk_error_report`: `EPOLLERR`).
    pub(crate) fn error_report(&self) {
        // SAFETY: `sk` is valid; its callbacks may run in any context.
        unsafe { sys::sk_error_report(self.as_raw()) };
    }

    /// `net.core.optmem_max` of the socket's namespace: the ancillary memory a socket may use.
    pub(crate) fn optmem_max(&self) -> u32 {
        // SAFETY: `sk` is valid.
        let max = unsafe { sys::rsmc_sk_optmem_max(self.as_raw()) };
        u32::try_from(max).unwrap_or(0)
    }

    /// Reads one notification of the error queue into `msg` (`MSG_ERRQUEUE`), under the
    /// control message an IPv4 or an IPv6 TCP socket uses; `EAGAIN` if there is none.
    pub(crate) fn recv_error_queue(
        &self,
        msg: &mut MsgHdr,
        len: usize,
        ipv6: bool,
    ) -> Result<usize> {
        let (level, kind) = if ipv6 {
            (SOL_IPV6, IPV6_RECVERR)
        } else {
            (SOL_IP, IP_RECVERR)
        };
        let len = i32::try_from(len).unwrap_or(i32::MAX);
        // SAFETY: `sk` and `msg` are valid for the call; the queue has its own lock.
        let ret = unsafe { sys::sock_recv_errqueue(self.as_raw(), msg.as_raw(), len, level, kind) };
        to_result(ret)?;
        // CAST: Non-negative after `to_result`.
        Ok(ret as usize)
    }
}

impl MsgHdr {
    /// The `u32` of the control message `level`/`kind` of a send, if it has one; `EINVAL` if
    /// the control data is malformed or that message is not exactly a `u32`.
    pub(crate) fn cmsg_u32(&mut self, level: i32, kind: i32) -> Result<Option<u32>> {
        let raw = self.as_raw();
        // SAFETY: `msg` is valid for the borrow.
        if unsafe { (*raw).msg_controllen } == 0 {
            return Ok(None);
        }
        // SAFETY: As above. A send's control data was copied into the kernel
        // (`msg_control_is_user` is false) by the socket layer before the family's `sendmsg`.
        if unsafe { (*raw).msg_control_is_user() } {
            return Err(EINVAL);
        }
        let mut found = None;
        // SAFETY: The header and its kernel control buffer are valid; the macros stay within
        // `msg_controllen`.
        let mut cmsg = unsafe { sys::rsmc_cmsg_first(raw) };
        while !cmsg.is_null() {
            // SAFETY: As above; `cmsg` came from the macros.
            if !unsafe { sys::rsmc_cmsg_ok(raw, cmsg) } {
                return Err(EINVAL);
            }
            // SAFETY: `CMSG_OK` checked that the header lies inside the buffer.
            let header = unsafe { &*cmsg };
            if header.cmsg_level == level && header.cmsg_type == kind {
                // SAFETY: No-op macro arithmetic.
                if header.cmsg_len != unsafe { sys::rsmc_cmsg_len(size_of::<u32>()) } {
                    return Err(EINVAL);
                }
                // SAFETY: `cmsg_len` says the data holds a `u32`, inside the buffer (CMSG_OK);
                // it may be unaligned.
                found = Some(unsafe { sys::rsmc_cmsg_data(cmsg).cast::<u32>().read_unaligned() });
            }
            // SAFETY: As for the first.
            cmsg = unsafe { sys::rsmc_cmsg_next(raw, cmsg) };
        }
        Ok(found)
    }

    /// Adds the control message `level`/`kind` with `data` to a receive (`put_cmsg`); a
    /// buffer too small for it sets `MSG_CTRUNC`, as for any control message.
    pub(crate) fn put_cmsg(&mut self, level: i32, kind: i32, data: &[u8]) -> Result {
        // CAST: Control messages are a few bytes.
        let len = data.len() as i32;
        // SAFETY: `msg` is valid for the receive; `data` is valid for `len` bytes, which
        // `put_cmsg` only reads.
        to_result(unsafe {
            sys::put_cmsg(
                self.as_raw(),
                level,
                kind,
                len,
                data.as_ptr().cast_mut().cast(),
            )
        })
    }

    /// Tells the receiver its buffer did not take everything (`MSG_TRUNC`).
    pub(crate) fn set_truncated(&mut self) {
        // SAFETY: `msg` is valid and ours for the receive.
        unsafe { (*self.as_raw()).msg_flags |= MSG_TRUNC };
    }

    /// Copies `data` into the receive's buffer; returns how many bytes fit.
    pub(crate) fn copy_out(&mut self, data: &[u8]) -> usize {
        // SAFETY: `data` is valid for its length; the iterator is the receive's.
        unsafe { sys::rsmc_copy_to_iter(data.as_ptr().cast(), data.len(), self.iter()) }
    }
}

/// A `MSG_ZEROCOPY` send's notification by id (TCP's `ubuf_info_msgzc`): allocated with the
/// send's pinned-page accounting (`RLIMIT_MEMLOCK`) and optmem charge, it takes the socket's
/// next id and queues `[id, id]` (merged with a preceding range) on the error queue when it
/// completes.
///
/// # Invariants
///
/// `0` is a `ubuf_info` of `msg_zerocopy_realloc` whose reference this value owns.
pub(crate) struct ZcRange(NonNull<sys::ubuf_info>);

// SAFETY: The notification may complete in any context and on any CPU.
unsafe impl Send for ZcRange {}

impl ZcRange {
    /// The notification of a send of `len` bytes on `sk`; `ENOBUFS` if the memory lock limit
    /// or the socket's optmem does not allow it.
    pub(crate) fn new(sk: &Sock, len: usize) -> Result<Self> {
        // SAFETY: `sk` is valid; process context (the sending task, whose `mm` is charged); no
        // previous notification is extended.
        let uarg =
            unsafe { sys::msg_zerocopy_realloc(sk.as_raw(), len, core::ptr::null_mut(), false) };
        NonNull::new(uarg).map(Self).ok_or(ENOBUFS)
    }

    /// The send's data went out: notifies, with `SO_EE_CODE_ZEROCOPY_COPIED` unless
    /// `zerocopied`.
    pub(crate) fn complete(self, zerocopied: bool) {
        let uarg = self.0.as_ptr();
        core::mem::forget(self);
        // SAFETY: The reference is ours (type invariant) and given up here.
        unsafe { sys::rsmc_zerocopy_complete(uarg, zerocopied) };
    }

    /// The send failed before any of its data went: takes its id back, with no notification.
    pub(crate) fn abort(self) {
        let uarg = self.0.as_ptr();
        core::mem::forget(self);
        // SAFETY: As for `complete`; the caller still holds the socket's send path, so no
        // later send took an id meanwhile.
        unsafe { sys::msg_zerocopy_put_abort(uarg, true) };
    }
}

impl Drop for ZcRange {
    fn drop(&mut self) {
        // Not consumed: the send's fate is unknown, so the data counts as copied.
        // SAFETY: The reference is ours (type invariant).
        unsafe { sys::rsmc_zerocopy_complete(self.0.as_ptr(), false) };
    }
}

/// Pinned pages charged to the sending user's `RLIMIT_MEMLOCK` (`mm_account_pinned_pages`, as
/// a [`ZcRange`] charges its send), for sends notified by cookie; uncharged on drop.
///
/// # Invariants
///
/// `0` holds a charge from `mm_account_pinned_pages`, given back only on drop.
pub(crate) struct MemlockCharge(sys::ubuf_info_msgzc_mmpin);

// SAFETY: The charge belongs to a user, not to a thread; it may be given back from any context.
unsafe impl Send for MemlockCharge {}
// SAFETY: `&MemlockCharge` gives no access to the charge.
unsafe impl Sync for MemlockCharge {}

impl MemlockCharge {
    /// Charges `len` bytes to the current user; `ENOBUFS` over its limit (without
    /// `CAP_IPC_LOCK`).
    pub(crate) fn new(len: usize) -> Result<Self> {
        let mut mmp = sys::ubuf_info_msgzc_mmpin::default();
        // SAFETY: `mmp` is a fresh, empty charge (no user yet); process context.
        to_result(unsafe { sys::mm_account_pinned_pages(&mut mmp, len) })?;
        Ok(Self(mmp))
    }
}

impl Drop for MemlockCharge {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the charge is held, and it is given back once.
        unsafe { sys::mm_unaccount_pinned_pages(&mut self.0) };
    }
}
