// SPDX-License-Identifier: GPL-2.0

//! The `AF_SMC` socket family (`socket(AF_SMC, SOCK_STREAM, 0 | 1)`).
//!
//! Each socket owns an internal kernel TCP socket to the same peer, as net/smc's `clcsock`.
//! `connect` and `accept` run the CLC handshake over it ([`crate::clc`]); if that sets up an
//! RDMA link, data moves over the [`Connection`], otherwise every call is served by the TCP
//! socket ("fallback"), which gives TCP semantics for free.

use crate::{
    clc::{self, Outcome},
    connection::{epoll, Closing, Connection, ZcSend},
    connector::Connector,
    ffi::{
        kernel_socket::{
            File, KernelSocket, MsgHdr, PollTable, SockAddr, SockAddrOut, SockPtr, UserPtr,
        },
        sock::{
            FamilyRegistration, FamilyTables, Sock, SockRef, Socket, SocketFamily, SIOCINQ,
            SIOCOUTQ, SIOCOUTQNSD, SOL_SOCKET, SO_RCVLOWAT,
        },
    },
    listener::Listener,
    zerocopy::Zerocopy,
};
use kernel::{
    ffi::c_long,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        new_mutex, Arc, Mutex, SetOnce,
    },
    ModuleMetadata,
};

/// `AF_SMC` from `include/linux/socket.h`.
const AF_SMC: i32 = 43;
/// `SMCPROTO_SMC`: the socket's internal TCP connection is IPv4.
const SMCPROTO_SMC: i32 = 0;
/// `SMCPROTO_SMC6`: the socket's internal TCP connection is IPv6.
const SMCPROTO_SMC6: i32 = 1;
/// `SOCK_STREAM` from `include/linux/net.h`.
const SOCK_STREAM: i32 = 1;
/// `O_NONBLOCK`.
const O_NONBLOCK: i32 = 0o4000;
/// `MSG_DONTWAIT`.
const MSG_DONTWAIT: i32 = 0x40;
/// `SOL_SMC` and its options, from `include/uapi/linux/rsmc.h`.
const SOL_SMC: i32 = 286;
const RSMC_INFO: i32 = 64;
/// `rsmc_info.mode` values.
const MODE_NONE: u32 = 0;
const MODE_RDMA: u32 = 1;
const MODE_TCP: u32 = 2;
/// `SHUT_RD`, `SHUT_WR`, `SHUT_RDWR`.
const SHUT_RD: i32 = 0;
const SHUT_WR: i32 = 1;
const SHUT_RDWR: i32 = 2;
/// `SO_ZEROCOPY`.
const SO_ZEROCOPY: i32 = 60;
/// `SO_REUSEPORT`.
const SO_REUSEPORT: i32 = 15;
/// `MSG_ERRQUEUE`.
const MSG_ERRQUEUE: i32 = 0x2000;
/// `SOL_TCP` and `TCP_ULP`.
const SOL_TCP: i32 = 6;
const TCP_ULP: i32 = 31;

/// `struct rsmc_info` (`include/uapi/linux/rsmc.h`), as bytes in its C layout.
struct Info {
    mode: u32,
    fallback_reason: u32,
    peer_decline_code: u32,
    rdma_tx_bytes: u64,
    rdma_rx_bytes: u64,
    tcp_tx_bytes: u64,
    tcp_rx_bytes: u64,
}

impl Info {
    const LEN: usize = 48;

    fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let words = [self.mode, self.fallback_reason, self.peer_decline_code, 0];
        for (chunk, word) in out[..16].chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        let counters = [
            self.rdma_tx_bytes,
            self.rdma_rx_bytes,
            self.tcp_tx_bytes,
            self.tcp_rx_bytes,
        ];
        for (chunk, counter) in out[16..].chunks_exact_mut(8).zip(counters) {
            chunk.copy_from_slice(&counter.to_ne_bytes());
        }
        out
    }
}

/// Who sets the internal TCP socket's `SO_RCVLOWAT`.
enum RcvlowatOwner {
    Application,
    /// A connect's handshake, which reads with it at 1 (see
    /// [`KernelSocket::wake_on_every_byte`]); the value the application set meanwhile, if
    /// any, waits here for the handshake to end.
    Handshake(Option<i32>),
}

/// How a socket carries its data once its handshake ended: shared with the work item that
/// finishes a non-blocking connect.
#[pin_data(PinnedDrop)]
pub(crate) struct Transport {
    /// The RDMA connection, once the handshake set one up.
    rdma: SetOnce<Arc<Connection>>,
    /// `MODE_*`: set once, when the handshake ends.
    mode: Atomic<u32>,
    fallback_reason: Atomic<u32>,
    peer_decline_code: Atomic<u32>,
    #[pin]
    rcvlowat_owner: Mutex<RcvlowatOwner>,
}

/// A connect's hold on its TCP socket's `SO_RCVLOWAT`; dropping it hands the option back to
/// the application, with the value it set meanwhile.
pub(crate) struct RcvlowatHold {
    transport: Arc<Transport>,
    clc: Arc<KernelSocket>,
}

impl Drop for RcvlowatHold {
    fn drop(&mut self) {
        let mut owner = self.transport.rcvlowat_owner.lock();
        if let RcvlowatOwner::Handshake(Some(lowat)) = *owner {
            if let Err(err) = self.clc.set_rcvlowat(lowat) {
                pr_warn!("SO_RCVLOWAT set during connect not applied: {err:?}\n");
            }
        }
        *owner = RcvlowatOwner::Application;
    }
}

impl Transport {
    fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                rdma: SetOnce::new(),
                mode: Atomic::new(MODE_NONE),
                fallback_reason: Atomic::new(0),
                peer_decline_code: Atomic::new(0),
                rcvlowat_owner <- new_mutex!(RcvlowatOwner::Application),
            }? Error),
            GFP_KERNEL,
        )
    }

    /// Holds `clc`'s `SO_RCVLOWAT` for a connect's handshake: `None` if another connect holds
    /// it already.
    fn hold_rcvlowat(self: &Arc<Self>, clc: &Arc<KernelSocket>) -> Option<RcvlowatHold> {
        let mut owner = self.rcvlowat_owner.lock();
        if let RcvlowatOwner::Handshake(_) = *owner {
            return None;
        }
        *owner = RcvlowatOwner::Handshake(None);
        Some(RcvlowatHold {
            transport: self.clone(),
            clc: clc.clone(),
        })
    }

    /// `setsockopt(SO_RCVLOWAT)` on `clc`, or, while a handshake holds it, once the handshake
    /// ended: set now, it would make the handshake's reads wait for bytes that never come.
    fn set_rcvlowat(&self, clc: &KernelSocket, val: SockPtr, len: u32) -> Result {
        let mut owner = self.rcvlowat_owner.lock();
        match &mut *owner {
            RcvlowatOwner::Handshake(pending) => {
                *pending = Some(val.read_i32(len)?);
                Ok(())
            }
            RcvlowatOwner::Application => clc.setsockopt(SOL_SOCKET, SO_RCVLOWAT, val, len),
        }
    }

    /// Records how the handshake over `clc` ended.
    pub(crate) fn settle(&self, outcome: Outcome, clc: &Arc<KernelSocket>) {
        match outcome {
            Outcome::Rdma(conn) => {
                // Without the watch the connection still works; it only misses a peer whose
                // device went away without a word.
                if conn.watch_tcp(clc.clone()).is_err() {
                    pr_warn!("connection not tied to its TCP connection\n");
                }
                self.rdma.populate(conn);
                self.mode.store(MODE_RDMA, Relaxed);
            }
            Outcome::Fallback { reason, peer_code } => {
                self.fallback_reason.store(reason.0, Relaxed);
                self.peer_decline_code.store(peer_code.0, Relaxed);
                self.mode.store(MODE_TCP, Relaxed);
            }
        }
    }

    fn mode(&self) -> u32 {
        self.mode.load(Relaxed)
    }

    fn rdma(&self) -> Option<&Arc<Connection>> {
        self.rdma.as_ref()
    }
}

#[pinned_drop]
impl PinnedDrop for Transport {
    fn drop(self: Pin<&mut Self>) {
        // A connection whose socket is gone without `release` closing it (never accepted, or
        // set up by a connect the socket's close cut short) is aborted; after `release` this
        // finds the connection closed already.
        if let Some(conn) = self.rdma.as_ref() {
            conn.close(Closing::ABORT);
        }
    }
}

/// The state of one `AF_SMC` socket.
pub(crate) struct SmcSock {
    /// The internal TCP socket: handshake channel, and the data path on fallback.
    clc: Arc<KernelSocket>,
    /// Set by `listen`: the connections handshaken for `accept`.
    listener: SetOnce<Arc<Listener>>,
    /// Set by a `connect` that returned `EINPROGRESS`: the rest of it.
    connector: SetOnce<Arc<Connector>>,
    transport: Arc<Transport>,
    /// `MSG_ZEROCOPY` notifications.
    zerocopy: Arc<Zerocopy>,
    tcp_tx_bytes: Atomic<u64>,
    tcp_rx_bytes: Atomic<u64>,
}

impl SmcSock {
    /// The state of a socket whose internal TCP socket is `clc`.
    pub(crate) fn new(clc: Arc<KernelSocket>) -> Result<Self> {
        Ok(Self {
            clc,
            listener: SetOnce::new(),
            connector: SetOnce::new(),
            transport: Transport::new()?,
            zerocopy: Zerocopy::new()?,
            tcp_tx_bytes: Atomic::new(0),
            tcp_rx_bytes: Atomic::new(0),
        })
    }

    /// The internal TCP socket.
    pub(crate) fn clc(&self) -> &KernelSocket {
        &self.clc
    }

    /// Records how the handshake ended.
    pub(crate) fn settle(&self, outcome: Outcome) {
        self.transport.settle(outcome, &self.clc);
    }

    /// A non-blocking connect still in progress.
    fn connecting(&self) -> Option<&Arc<Connector>> {
        self.connector
            .as_ref()
            .filter(|connector| connector.in_progress())
    }

    /// Waits (up to `*timeo`) for a non-blocking connect to finish, as TCP's send and receive
    /// wait for its connect: the handshake owns the TCP connection until then.
    fn wait_connected(&self, sk: &Sock, mut timeo: c_long) -> Result {
        match self.connecting() {
            Some(connector) => sk.wait_until(&mut timeo, || !connector.in_progress()),
            None => Ok(()),
        }
    }

    /// Sends over the data path the handshake chose; `zc` is a zerocopy send's notification.
    fn send(
        &self,
        sk: &Sock,
        msg: &mut MsgHdr,
        len: usize,
        zc: Option<&dyn ZcSend>,
    ) -> Result<usize> {
        if let Some(conn) = self.transport.rdma() {
            return conn.sendmsg(sk, msg, len, zc);
        }
        // The TCP socket copies.
        if let Some(zc) = zc {
            zc.copied();
        }
        let sent = self.clc.sendmsg(msg, len)?;
        if self.transport.mode() != MODE_NONE {
            self.tcp_tx_bytes.add(sent as u64, Relaxed);
        }
        Ok(sent)
    }

    fn info(&self) -> Info {
        let transport = &self.transport;
        let (rdma_tx_bytes, rdma_rx_bytes) =
            transport.rdma().map_or((0, 0), |conn| conn.rdma_bytes());
        Info {
            mode: transport.mode(),
            fallback_reason: transport.fallback_reason.load(Relaxed),
            peer_decline_code: transport.peer_decline_code.load(Relaxed),
            rdma_tx_bytes,
            rdma_rx_bytes,
            tcp_tx_bytes: self.tcp_tx_bytes.load(Relaxed),
            tcp_rx_bytes: self.tcp_rx_bytes.load(Relaxed),
        }
    }
}

struct AfSmc;

static TABLES: FamilyTables =
    FamilyTables::new::<AfSmc>(&<crate::Rsmc as ModuleMetadata>::THIS_MODULE, "RSMC");

impl AfSmc {
    /// The poll mask of the socket's data path (or its handshake, or its listener).
    fn poll_transport(
        sock: &Socket<'_, Self>,
        file: &mut File,
        wait: Option<&mut PollTable>,
    ) -> u32 {
        let state = sock.state();
        if state.connecting().is_some() {
            // Not writable until connected, as TCP; the work item wakes this socket.
            sock.poll_wait(file, wait);
            return if sock.sk().has_error() { epoll::ERR } else { 0 };
        }
        if let Some(conn) = state.transport.rdma() {
            sock.poll_wait(file, wait);
            // The TCP socket holds SO_RCVLOWAT, as set or inherited from the listener.
            return conn.poll_mask(state.clc.rcvlowat());
        }
        if let Some(listener) = state.listener.as_ref() {
            sock.poll_wait(file, wait);
            return listener.poll_mask();
        }
        let clc = &state.clc;
        let mut mask = clc.poll(file, wait);
        // SO_ERROR is answered from this socket's `sk_err`: mirror the TCP socket's error
        // (e.g. a refused connect) so pollers that then ask for it see it.
        if let Some(err) = clc.pending_error() {
            sock.sk().set_error(err);
        }
        // A failed non-blocking connect left its error here, not on the TCP socket.
        if sock.sk().has_error() {
            mask |= epoll::ERR;
        }
        mask
    }
}

impl SocketFamily for AfSmc {
    const FAMILY: i32 = AF_SMC;
    const TABLES: &'static FamilyTables = &TABLES;
    type State = SmcSock;

    fn check_create(sock_type: i32, protocol: i32) -> Result {
        // Same answers, in the same order, as net/smc's smc_create().
        if sock_type != SOCK_STREAM {
            return Err(ESOCKTNOSUPPORT);
        }
        if protocol != SMCPROTO_SMC && protocol != SMCPROTO_SMC6 {
            return Err(EPROTONOSUPPORT);
        }
        Ok(())
    }

    fn new_state(sk: &SockRef<'_>, protocol: i32) -> Result<SmcSock> {
        let clc = KernelSocket::new_tcp(sk, protocol == SMCPROTO_SMC6)?;
        SmcSock::new(Arc::new(clc, GFP_KERNEL)?)
    }

    fn bind(sock: &Socket<'_, Self>, addr: &mut SockAddr, len: i32) -> Result {
        sock.state().clc.bind(addr, len)
    }

    fn connect(sock: &Socket<'_, Self>, addr: &mut SockAddr, len: i32, flags: i32) -> Result {
        let state = sock.state();
        if let Some(connector) = state.connector.as_ref() {
            if connector.in_progress() {
                return Err(EALREADY);
            }
            if state.transport.mode() == MODE_NONE {
                // The connect failed; its error was reported through SO_ERROR or is now.
                return Err(sock.sk().take_error().unwrap_or(ECONNABORTED));
            }
        }
        if state.transport.mode() != MODE_NONE {
            return state.clc.connect(addr, len, flags);
        }
        state.clc.set_syn_smc(true);
        let rcvlowat_hold = state.transport.hold_rcvlowat(&state.clc);
        match state.clc.connect(addr, len, flags) {
            Ok(()) => {}
            // Non-blocking, or a blocking connect that ran out of SO_SNDTIMEO: the TCP
            // connect goes on, and the handshake after it, in the background.
            Err(err) if err == EINPROGRESS => {
                let sk = ARef::from(&*sock.sk());
                let connector = Connector::start(
                    state.clc.clone(),
                    sk,
                    state.transport.clone(),
                    rcvlowat_hold,
                )?;
                if !state.connector.populate(connector.clone()) {
                    connector.cancel();
                    return Err(EALREADY);
                }
                return Err(EINPROGRESS);
            }
            Err(err) => return Err(err),
        }
        let outcome = clc::client(&state.clc);
        if let Outcome::Rdma(conn) = &outcome {
            conn.set_socket(ARef::from(&*sock.sk()));
        }
        state.settle(outcome);
        drop(rcvlowat_hold);
        Ok(())
    }

    fn listen(sock: &Socket<'_, Self>, backlog: i32) -> Result {
        let state = sock.state();
        if state.transport.mode() != MODE_NONE || state.connector.as_ref().is_some() {
            return Err(EINVAL);
        }
        state.clc.set_syn_smc(true);
        if state.listener.as_ref().is_none() {
            let listener = Listener::new(state.clc.clone(), ARef::from(&*sock.sk()))?;
            if !state.listener.populate(listener.clone()) {
                listener.close();
            }
        }
        state.clc.listen(backlog)
    }

    fn accept(sock: &Socket<'_, Self>, flags: i32) -> Result<SmcSock> {
        let listener = sock.state().listener.as_ref().ok_or(EINVAL)?;
        listener.accept(flags & O_NONBLOCK != 0)
    }

    fn accepted(sock: &Socket<'_, Self>) {
        if let Some(conn) = sock.state().transport.rdma() {
            conn.set_socket(ARef::from(&*sock.sk()));
        }
    }

    fn getname(sock: &Socket<'_, Self>, addr: &mut SockAddrOut, peer: bool) -> Result<i32> {
        sock.state().clc.getname(addr, peer)
    }

    fn poll(sock: &Socket<'_, Self>, file: &mut File, wait: Option<&mut PollTable>) -> u32 {
        let mask = Self::poll_transport(sock, file, wait);
        // After the transport's poll put this socket's wait queue in the table.
        if sock.state().zerocopy.pending(&sock.sk()) {
            mask | epoll::ERR
        } else {
            mask
        }
    }

    fn shutdown(sock: &Socket<'_, Self>, how: i32) -> Result {
        let state = sock.state();
        if state.connecting().is_some() {
            return Err(ENOTCONN);
        }
        match state.transport.rdma() {
            Some(conn) => match how {
                SHUT_RD => conn.shutdown(true, false),
                SHUT_WR => conn.shutdown(false, true),
                SHUT_RDWR => conn.shutdown(true, true),
                _ => Err(EINVAL),
            },
            None => state.clc.shutdown(how),
        }
    }

    fn setsockopt(
        sock: &Socket<'_, Self>,
        level: i32,
        name: i32,
        val: SockPtr,
        len: u32,
    ) -> Result {
        if level == SOL_SMC {
            return Err(ENOPROTOOPT);
        }
        if level == SOL_TCP && name == TCP_ULP {
            // An upper-layer protocol (kTLS, say) would take over the internal TCP socket's
            // protocol and callbacks, which rsmc's handshake and connection watch rely on.
            // Stock SMC refuses it too.
            return Err(EOPNOTSUPP);
        }
        if level == SOL_SOCKET && name == SO_ZEROCOPY {
            // The generic handler allows it for TCP, UDP and RDS only; the internal TCP
            // socket does not send this socket's data zerocopy, so it is not told.
            let on = match val.read_i32(len)? {
                0 => false,
                1 => true,
                _ => return Err(EINVAL),
            };
            sock.sk().set_zerocopy(on);
            return Ok(());
        }
        if level == SOL_SOCKET && name == SO_REUSEPORT {
            // The generic handler refuses it for a socket that is not inet; the TCP socket
            // binds, and this socket reports it.
            sock.state().clc.setsockopt(level, name, val, len)?;
            sock.sk().set_reuseport(val.read_i32(len)? != 0);
            return Ok(());
        }
        if level == SOL_SOCKET {
            // Socket-level options (timeouts, buffer sizes, keepalive, linger, reuseaddr)
            // apply to this socket and to the TCP socket that carries its traffic.
            sock.set_socket_option(name, val, len)?;
        }
        let state = sock.state();
        if level == SOL_SOCKET && name == SO_RCVLOWAT {
            return state.transport.set_rcvlowat(&state.clc, val, len);
        }
        state.clc.setsockopt(level, name, val, len)
    }

    fn getsockopt(
        sock: &Socket<'_, Self>,
        level: i32,
        name: i32,
        val: UserPtr,
        len: UserPtr,
    ) -> Result {
        if level != SOL_SMC {
            return sock.state().clc.getsockopt(level, name, val, len);
        }
        if name != RSMC_INFO {
            return Err(ENOPROTOOPT);
        }
        let want = usize::try_from(len.read_i32()?).map_err(|_| EINVAL)?;
        let info = sock.state().info().to_bytes();
        let out = &info[..want.min(Info::LEN)];
        val.write_bytes(out)?;
        // CAST: At most `Info::LEN`.
        len.write_i32(out.len() as i32)
    }

    fn sendmsg(sock: &Socket<'_, Self>, msg: &mut MsgHdr, len: usize) -> Result<usize> {
        let state = sock.state();
        let sk = sock.sk();
        state.wait_connected(&sk, sk.sndtimeo(msg.flags() & MSG_DONTWAIT != 0))?;
        state
            .zerocopy
            .send(&sk, msg, len, |msg, zc| state.send(&sk, msg, len, zc))
    }

    fn recvmsg(sock: &Socket<'_, Self>, msg: &mut MsgHdr, len: usize, flags: i32) -> Result<usize> {
        let state = sock.state();
        let sk = sock.sk();
        if flags & MSG_ERRQUEUE != 0 {
            let ipv6 = sk.protocol() == SMCPROTO_SMC6;
            return state.zerocopy.recv(&sk, msg, len, flags, ipv6);
        }
        state.wait_connected(&sk, sk.rcvtimeo(flags & MSG_DONTWAIT != 0))?;
        if let Some(conn) = state.transport.rdma() {
            return conn.recvmsg(&sk, msg, len, flags, state.clc.rcvlowat());
        }
        let received = state.clc.recvmsg(msg, len, flags)?;
        if state.transport.mode() != MODE_NONE {
            state.tcp_rx_bytes.add(received as u64, Relaxed);
        }
        Ok(received)
    }

    fn ioctl(sock: &Socket<'_, Self>, cmd: u32, arg: usize) -> Result<i32> {
        let state = sock.state();
        // Over RDMA the TCP socket holds none of the stream: its queues are counted here.
        let Some(conn) = state.transport.rdma() else {
            return state.clc.ioctl(cmd, arg);
        };
        let queued = conn.queued();
        let bytes = match cmd {
            SIOCINQ => queued.unread,
            SIOCOUTQ => queued.unacked,
            SIOCOUTQNSD => queued.unsent,
            _ => return state.clc.ioctl(cmd, arg),
        };
        // A ring is at most `RING_SIZE_MAX` bytes: the count fits an `int`.
        UserPtr::from_addr(arg).write_i32(i32::try_from(bytes).map_err(|_| EOVERFLOW)?)?;
        Ok(0)
    }

    fn release(sock: &Socket<'_, Self>) {
        // Dropping the state releases the TCP socket, which closes it gracefully (unsent
        // data drains, SO_LINGER honoured) or aborts it as TCP would.
        let state = sock.state();
        if let Some(connector) = state.connector.as_ref() {
            connector.cancel();
        }
        if let Some(conn) = state.transport.rdma() {
            let linger_ms = sock.sk().linger_ms();
            conn.close(Closing {
                abort: linger_ms == Some(0),
                linger_ms,
                fin_timeout: Some(state.clc.fin_timeout()),
            });
        }
        if let Some(listener) = state.listener.as_ref() {
            listener.close();
        }
    }
}

/// Registers `AF_SMC`; fails with a clear message if another module (stock `smc.ko`) has it.
pub(crate) fn register() -> Result<FamilyRegistration> {
    FamilyRegistration::new::<AfSmc>().inspect_err(|err| {
        if *err == EEXIST {
            pr_err!("AF_SMC is already registered (is smc.ko loaded?): unload it first\n");
        }
    })
}
