// SPDX-License-Identifier: GPL-2.0

//! The CLC handshake over a connection's internal TCP socket (net/smc's smc_clc, and the
//! handshake halves of its connect and listen paths).
//!
//! Both TCP SYNs must carry the SMC option (the client's `syn_smc` survives only if the
//! server's SYN-ACK answered it); otherwise the peer is plain TCP and nothing is sent. Then:
//!
//! ```text
//!   client                                server
//!   proposal (QP, ring, GID, MAC)  ───▶
//!                                  ◀───   accept (QP, ring, token), server ring registered
//!   ring registered, confirm       ───▶
//! ```
//!
//! Connections between the same two devices share a link ([`crate::link`]): a client that has
//! a link to the server's address offers its queue pair with a nonzero link id; the server
//! takes it if it has the other end (and accepts with its own end of it), or declines with
//! `NOCLNTLINK`, and the client proposes again with a new queue pair. Otherwise the server
//! connects a new queue pair of its own to the client's before it accepts, and the client
//! connects to it when the accept arrives.
//!
//! Either side may answer with a decline instead, and both then use the TCP connection as it
//! is: every byte of the handshake was consumed, so the application's stream starts clean.

use crate::{
    connection::{Closing, Connection, PeerRing},
    ffi::{kernel_socket::KernelSocket, random_u32, verbs::RemoteQp},
    ib,
    link::{Link, PeerEnd},
    proto::{
        clc::{self, Decline, DeclineCode, Endpoint, Message, HEADER_LEN, MAX_MSG_LEN},
        ring::RingSize,
    },
};
use kernel::{
    ffi::c_long,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
    time::msecs_to_jiffies,
};

/// How long to wait for each handshake message: stock SMC's 2 s, stretched for emulated
/// test machines, and more on debug kernels (KASAN), which run an order of magnitude slower
/// there: dozens of concurrent handshakes must not time out one after another.
#[cfg(not(CONFIG_KASAN))]
const CLC_WAIT_MS: u32 = 5000;
#[cfg(CONFIG_KASAN)]
const CLC_WAIT_MS: u32 = 30_000;
/// How long a client waits for another to set up a link it could share: about one
/// handshake.
const FIRST_CONTACT_WAIT_MS: u32 = 2 * CLC_WAIT_MS;
/// How long to wait for the peer's answer to a message whose answer timed out: it does come
/// (each side answers every handshake message before it reads the next), and must be taken
/// off the stream before the application reads the stream as its data.
const LATE_ANSWER_WAIT_MS: u32 = 30_000;
/// The longest foreign CLC message skipped whole (stock SMC's proposals are below 1 KiB).
const FOREIGN_MSG_MAX: usize = 4096;

/// How a handshake ended.
pub(crate) enum Outcome {
    /// Data moves over RDMA on this connection.
    Rdma(Arc<Connection>),
    /// The socket stays on TCP: `reason` why, and the peer's own code if it declined.
    Fallback {
        reason: DeclineCode,
        peer_code: DeclineCode,
    },
}

fn fallback(reason: DeclineCode) -> Outcome {
    Outcome::Fallback {
        reason,
        peer_code: DeclineCode(0),
    }
}

/// This host's id in handshake messages, drawn once.
fn peer_id() -> [u8; 8] {
    static PEER_ID: Atomic<u64> = Atomic::new(0);
    let mut id = PEER_ID.load(Relaxed);
    if id == 0 {
        let fresh = (u64::from(random_u32()) << 32) | u64::from(random_u32()) | 1;
        id = match PEER_ID.cmpxchg(0, fresh, Relaxed) {
            Ok(_) => fresh,
            Err(current) => current,
        };
    }
    id.to_be_bytes()
}

fn jiffies(ms: u32) -> c_long {
    c_long::try_from(msecs_to_jiffies(ms)).unwrap_or(c_long::MAX)
}

fn send(clc: &KernelSocket, msg: &Message) -> Result {
    let mut buf = [0u8; MAX_MSG_LEN];
    let len = clc::encode(msg, &mut buf).map_err(|_| EINVAL)?;
    clc.send_all(buf.get(..len).ok_or(EINVAL)?)
}

/// Declines with `code` and stays on TCP.
fn decline(clc: &KernelSocket, code: DeclineCode) -> Outcome {
    // If even the decline cannot be sent the TCP connection is broken, which the application
    // learns from its next call.
    let _ = send(
        clc,
        &Message::Decline(Decline {
            peer_id: peer_id(),
            code,
        }),
    );
    if code == DeclineCode::TIMEOUT_CL {
        take_late_answer(clc);
    }
    fallback(code)
}

/// After a timeout the peer's answer is still on its way: takes it off the stream. If it does
/// not come either, the TCP connection is reset rather than handed over in an unknown state.
fn take_late_answer(clc: &KernelSocket) {
    if recv_within(clc, LATE_ANSWER_WAIT_MS).is_err() {
        clc.abort(ETIMEDOUT);
    }
}

/// How the handshake ends on `got` when another message was expected: the peer's decline,
/// or ours.
fn unexpected(clc: &KernelSocket, got: core::result::Result<Message, DeclineCode>) -> Outcome {
    match got {
        Ok(Message::Decline(peer)) => Outcome::Fallback {
            reason: DeclineCode::PEERDECL,
            peer_code: peer.code,
        },
        Ok(_) => decline(clc, DeclineCode::SYNCERR),
        Err(code) => decline(clc, code),
    }
}

/// Receives one handshake message; on failure, the decline code to answer with.
fn recv(clc: &KernelSocket) -> core::result::Result<Message, DeclineCode> {
    recv_within(clc, CLC_WAIT_MS)
}

/// [`recv`], waiting up to `wait_ms` for each part of the message.
fn recv_within(clc: &KernelSocket, wait_ms: u32) -> core::result::Result<Message, DeclineCode> {
    let mut buf = [0u8; MAX_MSG_LEN];
    let (head, rest) = buf.split_at_mut(HEADER_LEN);
    clc.recv_exact(head, jiffies(wait_ms)).map_err(|err| {
        if err == EAGAIN {
            DeclineCode::TIMEOUT_CL
        } else {
            DeclineCode::SYNCERR
        }
    })?;
    match clc::peek_header(head) {
        Ok(header) => {
            let body = rest
                .get_mut(..header.len - HEADER_LEN)
                .ok_or(DeclineCode::SYNCERR)?;
            if clc.recv_exact(body, jiffies(wait_ms)).is_err() {
                // Stuck in the middle of a message: the stream cannot be handed over.
                clc.abort(ETIMEDOUT);
                return Err(DeclineCode::SYNCERR);
            }
            clc::decode(&buf[..header.len]).map_err(|_| DeclineCode::SYNCERR)
        }
        Err(err) => {
            skip_foreign(clc, head);
            Err(match err {
                clc::Error::UnsupportedVersion(_) => DeclineCode::VERSMISMAT,
                _ => DeclineCode::SYNCERR,
            })
        }
    }
}

/// Skips the rest of a message rsmc does not speak (stock SMC's, of another version) if its
/// header is a CLC header at all, so that the stream is in step when both sides fall back.
fn skip_foreign(clc: &KernelSocket, head: &[u8]) {
    if head.get(..4) != Some(&clc::EYECATCHER[..]) {
        return;
    }
    let len = match head.get(5..7) {
        Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
        _ => return,
    };
    let mut left = len.saturating_sub(HEADER_LEN).min(FOREIGN_MSG_MAX);
    let mut scratch = [0u8; 256];
    while left > 0 {
        let chunk = left.min(scratch.len());
        if clc
            .recv_exact(&mut scratch[..chunk], jiffies(CLC_WAIT_MS))
            .is_err()
        {
            return;
        }
        left -= chunk;
    }
}

/// How this side's link is offered: an existing one (reused) or a new one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Offer {
    Reused,
    New,
}

/// The `link_id` of a handshake message: nonzero for a reused link.
fn link_id(offer: Offer) -> u8 {
    match offer {
        Offer::Reused => 1,
        Offer::New => 0,
    }
}

fn endpoint(conn: &Connection, link: &Link, offer: Offer, token: u32) -> Result<Endpoint> {
    let local = link.endpoint()?;
    let ring = conn.ring()?;
    Ok(Endpoint {
        peer_id: peer_id(),
        gid: local.gid,
        mac: local.mac,
        link_id: link_id(offer),
        mtu: local.mtu,
        qpn: local.qpn,
        psn: local.psn,
        rkey: ring.rkey,
        ring_addr: ring.addr,
        ring_size: ring.size,
        token,
    })
}

fn remote_qp(peer: &Endpoint) -> RemoteQp {
    RemoteQp {
        gid: peer.gid,
        mac: peer.mac,
        qpn: peer.qpn,
        psn: peer.psn,
    }
}

fn peer_ring(peer: &Endpoint, token: u32) -> PeerRing {
    PeerRing {
        rkey: peer.rkey,
        addr: peer.ring_addr,
        size: peer.ring_size,
        token,
    }
}

/// The receive ring size for a TCP socket's receive buffer.
fn ring_size(clc: &KernelSocket) -> RingSize {
    RingSize::from_sock_buf(clc.rcvbuf())
}

fn setup_code(err: Error) -> DeclineCode {
    if err == ENOMEM {
        DeclineCode::MEM
    } else {
        DeclineCode::CNFERR
    }
}

/// A connection on the device the connection's route uses, on no link yet.
fn set_up(clc: &KernelSocket) -> core::result::Result<Arc<Connection>, DeclineCode> {
    let ip = clc.ip(false).map_err(|_| DeclineCode::NOSMCRDEV)?;
    let (device, gid) = ib::device_for_ip(ip).ok_or(DeclineCode::NOSMCRDEV)?;
    Connection::new(device, gid, ring_size(clc)).map_err(setup_code)
}

/// Puts `conn` on a new link of its device.
fn join_new_link(conn: &Arc<Connection>) -> Result<Arc<Link>> {
    let (device, gid) = conn.device()?;
    let link = Link::new(device, gid)?;
    if let Err(err) = conn.join(link.clone()) {
        link.discard();
        return Err(err);
    }
    Ok(link)
}

/// Puts `conn` on the link its device has to the peer at `peer_gid`, if any.
fn join_link_to(conn: &Arc<Connection>, peer_gid: [u8; 16]) -> Option<Arc<Link>> {
    let (device, _) = conn.device().ok()?;
    let link = device.find_link(|peer| peer.gid == peer_gid)?;
    conn.join(link.clone()).ok()?;
    Some(link)
}

/// Runs the client side on a connected TCP socket.
pub(crate) fn client(clc: &KernelSocket) -> Outcome {
    let _lowat = clc.wake_on_every_byte();
    if !clc.syn_smc() {
        return fallback(DeclineCode::PEERNOSMC);
    }
    let conn = match set_up(clc) {
        Ok(conn) => conn,
        Err(code) => return decline(clc, code),
    };
    let outcome = client_exchange(clc, &conn);
    if !matches!(outcome, Outcome::Rdma(_)) {
        conn.abandon();
    }
    outcome
}

fn client_exchange(clc: &KernelSocket, conn: &Arc<Connection>) -> Outcome {
    let Ok((device, _)) = conn.device() else {
        return decline(clc, DeclineCode::CNFERR);
    };
    // RoCE v2 GIDs are IP addresses: the server's port has the one we are connected to.
    let server_gid = clc.ip(true).ok();
    let reuse = || server_gid.and_then(|gid| join_link_to(conn, gid));
    let mut reused = reuse();
    // Without a link to reuse, set one up, one connection at a time: the others wait here
    // and then share it. Held until the new link is connected (or given up).
    let _first_contact = match reused {
        Some(_) => None,
        None => {
            let turn = device.first_contact(FIRST_CONTACT_WAIT_MS);
            reused = reuse();
            turn.filter(|_| reused.is_none())
        }
    };
    let (mut link, mut offer) = match reused {
        Some(link) => (link, Offer::Reused),
        None => match join_new_link(conn) {
            Ok(link) => (link, Offer::New),
            Err(err) => return decline(clc, setup_code(err)),
        },
    };
    loop {
        let Ok(proposal) = endpoint(conn, &link, offer, 0) else {
            return decline(clc, DeclineCode::CNFERR);
        };
        if send(clc, &Message::Proposal(proposal)).is_err() {
            return fallback(DeclineCode::SYNCERR);
        }
        match recv(clc) {
            Ok(Message::Accept(accept)) => return client_confirm(clc, conn, &link, offer, &accept),
            // The server no longer has its end of the link we offered: once more, on a new
            // link.
            Ok(Message::Decline(peer))
                if peer.code == DeclineCode::NOCLNTLINK && offer == Offer::Reused =>
            {
                link.retire();
                conn.leave_link();
                link = match join_new_link(conn) {
                    Ok(link) => link,
                    Err(err) => return decline(clc, setup_code(err)),
                };
                offer = Offer::New;
            }
            got => return unexpected(clc, got),
        }
    }
}

fn client_confirm(
    clc: &KernelSocket,
    conn: &Arc<Connection>,
    link: &Link,
    offer: Offer,
    accept: &Endpoint,
) -> Outcome {
    let ready = match offer {
        // The server took the link we offered: it must name its end of it.
        Offer::Reused => link
            .live_peer()
            .filter(|peer| accept.link_id != 0 && peer.qpn == accept.qpn && peer.gid == accept.gid)
            .map(|_| ())
            .ok_or(EPROTO),
        Offer::New if accept.link_id == 0 => link.connect(&remote_qp(accept), accept.mtu),
        Offer::New => Err(EPROTO),
    };
    let ready = ready
        .and_then(|()| conn.set_peer(&peer_ring(accept, accept.token)))
        .and_then(|()| conn.register_ring());
    if ready.is_err() {
        return decline(clc, DeclineCode::CNFERR);
    }
    let Ok(confirm) = endpoint(conn, link, offer, accept.token) else {
        return decline(clc, DeclineCode::CNFERR);
    };
    if send(clc, &Message::Confirm(confirm)).is_err() {
        return fallback(DeclineCode::SYNCERR);
    }
    Outcome::Rdma(conn.clone())
}

/// Runs the server side on a freshly accepted TCP socket; `None` if the connection was reset
/// (there is nothing to accept).
pub(crate) fn server(clc: &KernelSocket) -> Option<Outcome> {
    let _lowat = clc.wake_on_every_byte();
    if !clc.syn_smc() {
        return Some(fallback(DeclineCode::PEERNOSMC));
    }
    let conn = match set_up(clc) {
        Ok(conn) => conn,
        Err(code) => {
            // Read the proposal first, so that the decline answers it.
            return Some(match recv(clc) {
                Ok(Message::Proposal(_)) => decline(clc, code),
                got => unexpected(clc, got),
            });
        }
    };
    let outcome = server_exchange(clc, &conn);
    if matches!(outcome, Some(Outcome::Fallback { .. })) {
        conn.abandon();
    }
    outcome
}

fn server_exchange(clc: &KernelSocket, conn: &Arc<Connection>) -> Option<Outcome> {
    let (proposal, link, offer) = match take_proposal(clc, conn) {
        Ok(taken) => taken,
        Err(outcome) => return Some(outcome),
    };
    let token = link.new_token();
    let ready = conn
        .set_peer(&peer_ring(&proposal, token))
        .and_then(|()| conn.register_ring());
    if ready.is_err() {
        return Some(decline(clc, DeclineCode::CNFERR));
    }
    let Ok(accept) = endpoint(conn, &link, offer, token) else {
        return Some(decline(clc, DeclineCode::CNFERR));
    };
    if send(clc, &Message::Accept(accept)).is_err() {
        return Some(fallback(DeclineCode::SYNCERR));
    }
    match recv(clc) {
        Ok(Message::Confirm(confirm))
            if confirm.token == token
                && confirm.qpn == proposal.qpn
                && confirm.rkey == proposal.rkey =>
        {
            Some(Outcome::Rdma(conn.clone()))
        }
        // The client did not take the accept: both stay on TCP.
        got @ Ok(Message::Decline(_)) => Some(unexpected(clc, got)),
        // The client may have taken the accept and be writing to our ring already: neither
        // side can stay on TCP. The connection aborts (its ring stays until the client lets
        // go), and the reset fails the client's connection if it did take it.
        _ => {
            conn.close(Closing::ABORT);
            clc.abort(ECONNRESET);
            None
        }
    }
}

/// Takes the client's proposal and puts `conn` on the link it asks for; on failure, how the
/// handshake ends.
fn take_proposal(
    clc: &KernelSocket,
    conn: &Arc<Connection>,
) -> core::result::Result<(Endpoint, Arc<Link>, Offer), Outcome> {
    // A client whose link offer we cannot take proposes once more, with a new link.
    let mut offers_left = 2;
    loop {
        let proposal = match recv(clc) {
            Ok(Message::Proposal(proposal)) => proposal,
            got => return Err(unexpected(clc, got)),
        };
        offers_left -= 1;
        if proposal.link_id == 0 {
            let link = match join_new_link(conn) {
                Ok(link) => link,
                Err(err) => return Err(decline(clc, setup_code(err))),
            };
            if link.connect(&remote_qp(&proposal), proposal.mtu).is_err() {
                return Err(decline(clc, DeclineCode::CNFERR));
            }
            return Ok((proposal, link, Offer::New));
        }
        let Ok((device, _)) = conn.device() else {
            return Err(decline(clc, DeclineCode::CNFERR));
        };
        let wanted = |peer: &PeerEnd| {
            peer.gid == proposal.gid && peer.qpn == proposal.qpn && peer.psn == proposal.psn
        };
        let found = device
            .find_link(wanted)
            .and_then(|link| conn.join(link.clone()).ok().map(|()| link));
        match found {
            Some(link) => return Ok((proposal, link, Offer::Reused)),
            None if offers_left > 0 => {
                if send(
                    clc,
                    &Message::Decline(Decline {
                        peer_id: peer_id(),
                        code: DeclineCode::NOCLNTLINK,
                    }),
                )
                .is_err()
                {
                    return Err(fallback(DeclineCode::SYNCERR));
                }
            }
            None => return Err(decline(clc, DeclineCode::SYNCERR)),
        }
    }
}
