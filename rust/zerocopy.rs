// SPDX-License-Identifier: GPL-2.0

//! `MSG_ZEROCOPY` on an `AF_SMC` socket: `SO_ZEROCOPY`, one notification per zerocopy send
//! (by TCP's id ranges, or by the cookie the application attached), and error-queue reads.
//!
//! Notification by id is the kernel's own (`msg_zerocopy_realloc`): ids, coalesced ranges and
//! the `RLIMIT_MEMLOCK` accounting are exactly TCP's. Cookies are rsmc's: they queue in a
//! [`CookieQueue`] and are read in batches (see `include/uapi/linux/rsmc.h`).
//!
//! Over RDMA a send of [`crate::connection::ZC_MIN_BYTES`] or more writes straight from the
//! application's pinned pages, in chunks as the peer's ring has room; its notification fires
//! once the device is done with the last of them (the chunks hold it, and the queue pair holds
//! the chunks until their writes completed). Data that is copied instead (smaller sends, memory
//! that cannot be pinned, the TCP fallback) makes an id range carry
//! `SO_EE_CODE_ZEROCOPY_COPIED`, as TCP reports sends it copied.

use crate::{
    connection::ZcSend,
    ffi::{
        kernel_socket::MsgHdr,
        sock::Sock,
        verbs::{PinnedMemory, PinnedPages},
        zerocopy::{MemlockCharge, ZcRange},
    },
    proto::zc::CookieQueue,
};
use kernel::{
    new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, Mutex, SpinLockIrq,
    },
};

/// `SOL_SMC`.
const SOL_SMC: i32 = 286;
/// The control message carrying a send's cookie (`RSMC_ZC_COOKIE`).
const RSMC_ZC_COOKIE: i32 = 65;
/// The control message of a cookie batch (`RSMC_ZC_COOKIES`).
const RSMC_ZC_COOKIES: i32 = 66;
/// `MSG_ZEROCOPY`.
pub(crate) const MSG_ZEROCOPY: i32 = 0x400_0000;
/// `MSG_PEEK`.
const MSG_PEEK: i32 = 2;
/// Upper bound of a socket's cookie slots, whatever `optmem_max` says.
const MAX_COOKIES: u32 = 1 << 16;

/// How a zerocopy send is notified.
enum Notice {
    /// By id range on the error queue.
    Range(ZcRange),
    /// By this cookie, whose slot is reserved in the socket's queue; the send's pinned pages
    /// are charged to its user as an id range's are.
    Cookie(u32, MemlockCharge),
}

/// A zerocopy send's notification, shared by the send and its pinned chunks: it fires when the
/// last reference goes (the send returned, and the device is done with every chunk), possibly
/// from a NAPI poll.
#[pin_data(PinnedDrop)]
pub(crate) struct ZcNotice {
    zc: Arc<Zerocopy>,
    sk: ARef<Sock>,
    /// Taken when it fires, or by a send that moved no byte.
    #[pin]
    notice: SpinLockIrq<Option<Notice>>,
    /// Some of the data was copied.
    copied: Atomic<bool>,
}

#[pinned_drop]
impl PinnedDrop for ZcNotice {
    fn drop(self: Pin<&mut Self>) {
        let notice = self.notice.lock().take();
        if let Some(notice) = notice {
            self.zc.notify(&self.sk, notice, !self.copied.load(Relaxed));
        }
    }
}

impl ZcSend for Arc<ZcNotice> {
    fn chunk(&self, pages: PinnedPages) -> Result<Arc<dyn PinnedMemory>> {
        let chunk = Arc::new(
            ZcChunk {
                pages,
                _notice: self.clone(),
            },
            GFP_KERNEL,
        )?;
        Ok(chunk)
    }

    fn copied(&self) {
        self.copied.store(true, Relaxed);
    }
}

/// Pinned pages of one chunk of a zerocopy send. Dropped in field order: the pages are unpinned
/// before the notification can fire.
struct ZcChunk {
    pages: PinnedPages,
    _notice: Arc<ZcNotice>,
}

impl PinnedMemory for ZcChunk {
    fn pages(&self) -> &PinnedPages {
        &self.pages
    }
}

/// The completed cookies and their storage.
struct Cookies {
    queue: CookieQueue,
    /// `queue.capacity()` slots; empty until the socket's first cookie send.
    storage: KVVec<u32>,
}

/// The zerocopy state of one socket.
#[pin_data]
pub(crate) struct Zerocopy {
    /// Taken in completion context: irq-safe.
    #[pin]
    cookies: SpinLockIrq<Cookies>,
    /// Serialises error-queue readers: a batch is copied out before it is taken.
    #[pin]
    reader: Mutex<()>,
    /// Serialises zerocopy sends, as the socket lock does for TCP's: a failed send gives its
    /// id back, which is only right if no other send took the next one meanwhile.
    #[pin]
    sender: Mutex<()>,
}

impl Zerocopy {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                cookies <- new_spinlock_irq!(Cookies {
                    queue: CookieQueue::new(0),
                    storage: KVVec::new(),
                }),
                reader <- new_mutex!(()),
                sender <- new_mutex!(()),
            }),
            GFP_KERNEL,
        )
    }

    /// Sends `msg` (`len` bytes) with `send`, which gets the notification of a zerocopy send
    /// (`MSG_ZEROCOPY` with `SO_ZEROCOPY` on); one that moved bytes is notified once the device
    /// is done with them. `EINVAL` for a cookie on any other send; `ENOBUFS` if the memory lock
    /// limit, the socket's optmem or its cookie slots are used up.
    pub(crate) fn send(
        self: &Arc<Self>,
        sk: &Sock,
        msg: &mut MsgHdr,
        len: usize,
        send: impl FnOnce(&mut MsgHdr, Option<&dyn ZcSend>) -> Result<usize>,
    ) -> Result<usize> {
        let cookie = msg.cmsg_u32(SOL_SMC, RSMC_ZC_COOKIE)?;
        if msg.flags() & MSG_ZEROCOPY == 0 || !sk.zerocopy() {
            if cookie.is_some() {
                return Err(EINVAL);
            }
            return send(msg, None);
        }
        let _turn = self.sender.lock();
        // Allocated before the notice is made: a notice dropped unfired would notify.
        let shared = Arc::pin_init(
            pin_init!(ZcNotice {
                zc: self.clone(),
                sk: ARef::from(sk),
                notice <- new_spinlock_irq!(None),
                copied: Atomic::new(false),
            }),
            GFP_KERNEL,
        )?;
        let notice = match cookie {
            None => Notice::Range(ZcRange::new(sk, len)?),
            Some(cookie) => {
                let charge = MemlockCharge::new(len).map_err(|_| ENOBUFS)?;
                self.reserve(sk)?;
                Notice::Cookie(cookie, charge)
            }
        };
        *shared.notice.lock() = Some(notice);
        let sent = send(msg, Some(&shared));
        if !matches!(sent, Ok(n) if n > 0) {
            // Nothing moved: no notification. A chunk still in flight no longer fires it.
            let taken = shared.notice.lock().take();
            if let Some(taken) = taken {
                self.take_back(taken);
            }
        }
        sent
    }

    /// The send of `notice` is done with the application's data: notifies (the data was copied
    /// unless `zerocopied`). Any context.
    fn notify(&self, sk: &Sock, notice: Notice, zerocopied: bool) {
        match notice {
            Notice::Range(range) => range.complete(zerocopied),
            Notice::Cookie(cookie, charge) => {
                {
                    let mut cookies = self.cookies.lock();
                    let Cookies { queue, storage } = &mut *cookies;
                    // Cannot fail: `start` reserved the slot.
                    let _ = queue.complete(storage, cookie);
                }
                drop(charge);
                sk.error_report();
            }
        }
    }

    /// A send that moved no byte takes its notice back: no notification.
    fn take_back(&self, notice: Notice) {
        match notice {
            Notice::Range(range) => range.abort(),
            Notice::Cookie(..) => {
                // Cannot fail: `start` reserved the slot.
                let _ = self.cookies.lock().queue.unreserve();
            }
        }
    }

    /// Reserves a cookie slot, allocating the socket's slots on its first cookie send.
    fn reserve(&self, sk: &Sock) -> Result {
        if self.cookies.lock().storage.is_empty() {
            let slots = (sk.optmem_max() / 4).clamp(1, MAX_COOKIES);
            // CAST: At most `MAX_COOKIES`.
            let storage = KVVec::from_elem(0u32, slots as usize, GFP_KERNEL)?;
            let mut cookies = self.cookies.lock();
            if cookies.storage.is_empty() {
                // Dropped under the lock, but empty: nothing is freed.
                let _ = core::mem::replace(&mut cookies.storage, storage);
                cookies.queue = CookieQueue::new(slots);
            }
        }
        if self.cookies.lock().queue.reserve() {
            Ok(())
        } else {
            Err(ENOBUFS)
        }
    }

    /// Whether a read of the error queue would return something (`EPOLLERR`).
    pub(crate) fn pending(&self, sk: &Sock) -> bool {
        self.cookies.lock().queue.pending() > 0 || sk.error_queue_pending()
    }

    /// `recvmsg(MSG_ERRQUEUE)`: a batch of completed cookies if any is pending, else the
    /// next id-range notification (under IPv6's control message if `ipv6`); `EAGAIN` if none.
    pub(crate) fn recv(
        &self,
        sk: &Sock,
        msg: &mut MsgHdr,
        len: usize,
        flags: i32,
        ipv6: bool,
    ) -> Result<usize> {
        let reader = self.reader.lock();
        let room = u32::try_from(len / 4).unwrap_or(u32::MAX);
        let count = {
            let mut cookies = self.cookies.lock();
            match cookies.queue.pending() {
                0 => None,
                _ => Some(cookies.queue.read(room, true).len()),
            }
        };
        let Some(count) = count else {
            drop(reader);
            return sk.recv_error_queue(msg, len, ipv6);
        };
        // Readers are serialised and completions only append: the batch is the same below.
        let mut bytes = KVVec::from_elem(0u8, count as usize * 4, GFP_KERNEL)?;
        let pending = {
            let mut cookies = self.cookies.lock();
            let Cookies { queue, storage } = &mut *cookies;
            let batch = queue.read(count, true);
            let slots = Iterator::chain(batch.first.clone(), batch.second.clone());
            for (out, slot) in bytes.chunks_exact_mut(4).zip(slots) {
                out.copy_from_slice(&storage[slot].to_ne_bytes());
            }
            batch.pending
        };
        if msg.copy_out(&bytes) < bytes.len() {
            return Err(EFAULT);
        }
        let mut info = [0u8; 8];
        info[..4].copy_from_slice(&count.to_ne_bytes());
        info[4..].copy_from_slice(&pending.to_ne_bytes());
        msg.put_cmsg(SOL_SMC, RSMC_ZC_COOKIES, &info)?;
        if count < pending {
            msg.set_truncated();
        }
        if flags & MSG_PEEK == 0 {
            self.cookies.lock().queue.read(count, false);
        }
        Ok(bytes.len())
    }
}
