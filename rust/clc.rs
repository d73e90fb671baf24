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
//!                                  ◀───   accept (QP, ring, token), server link ready
//!   link ready, confirm (token)    ───▶
//! ```
//!
//! Either side may answer with a decline instead, and both then use the TCP connection as it
//! is: every byte of the handshake was consumed, so the application's stream starts clean.

use crate::{
    connection::{Connection, LocalEndpoint, PeerEndpoint},
    ffi::{kernel_socket::KernelSocket, random_u32, verbs::RemoteQp},
    ib,
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
/// test machines.
const CLC_WAIT_MS: u32 = 5000;
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

fn wait_jiffies() -> c_long {
    c_long::try_from(msecs_to_jiffies(CLC_WAIT_MS)).unwrap_or(c_long::MAX)
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
    fallback(code)
}

/// Receives one handshake message; on failure, the decline code to answer with.
fn recv(clc: &KernelSocket) -> core::result::Result<Message, DeclineCode> {
    let mut buf = [0u8; MAX_MSG_LEN];
    let (head, rest) = buf.split_at_mut(HEADER_LEN);
    clc.recv_exact(head, wait_jiffies()).map_err(|err| {
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
            clc.recv_exact(body, wait_jiffies())
                .map_err(|_| DeclineCode::TIMEOUT_CL)?;
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
            .recv_exact(&mut scratch[..chunk], wait_jiffies())
            .is_err()
        {
            return;
        }
        left -= chunk;
    }
}

fn endpoint(local: &LocalEndpoint, token: u32) -> Endpoint {
    Endpoint {
        peer_id: peer_id(),
        gid: local.gid,
        mac: local.mac,
        link_id: 0,
        mtu: local.mtu,
        qpn: local.qpn,
        psn: local.psn,
        rkey: local.rkey,
        ring_addr: local.ring_addr,
        ring_size: local.ring_size,
        token,
    }
}

fn peer_endpoint(peer: &Endpoint, token: u32) -> PeerEndpoint {
    PeerEndpoint {
        qp: RemoteQp {
            gid: peer.gid,
            mac: peer.mac,
            qpn: peer.qpn,
            psn: peer.psn,
        },
        mtu: peer.mtu,
        rkey: peer.rkey,
        ring_addr: peer.ring_addr,
        ring_size: peer.ring_size,
        token,
    }
}

/// The receive ring size for a TCP socket's receive buffer.
fn ring_size(clc: &KernelSocket) -> RingSize {
    RingSize::from_sock_buf(clc.rcvbuf())
}

/// This side's link on the device the connection's route uses.
fn set_up(clc: &KernelSocket) -> core::result::Result<Arc<Connection>, DeclineCode> {
    let ip = clc.local_ip().map_err(|_| DeclineCode::NOSMCRDEV)?;
    let (device, gid) = ib::device_for_ip(ip).ok_or(DeclineCode::NOSMCRDEV)?;
    Connection::new(device, gid, ring_size(clc)).map_err(|err| {
        if err == ENOMEM {
            DeclineCode::MEM
        } else {
            DeclineCode::CNFERR
        }
    })
}

/// Runs the client side on a connected TCP socket.
pub(crate) fn client(clc: &KernelSocket) -> Outcome {
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
    let Ok(local) = conn.local_endpoint() else {
        return decline(clc, DeclineCode::CNFERR);
    };
    if send(clc, &Message::Proposal(endpoint(&local, 0))).is_err() {
        return fallback(DeclineCode::SYNCERR);
    }
    match recv(clc) {
        Ok(Message::Accept(accept)) => {
            if conn.connect(&peer_endpoint(&accept, accept.token)).is_err() {
                return decline(clc, DeclineCode::CNFERR);
            }
            if send(clc, &Message::Confirm(endpoint(&local, accept.token))).is_err() {
                return fallback(DeclineCode::SYNCERR);
            }
            Outcome::Rdma(conn.clone())
        }
        Ok(Message::Decline(peer)) => Outcome::Fallback {
            reason: DeclineCode::PEERDECL,
            peer_code: peer.code,
        },
        Ok(_) => decline(clc, DeclineCode::SYNCERR),
        Err(code) => decline(clc, code),
    }
}

/// Runs the server side on a freshly accepted TCP socket.
pub(crate) fn server(clc: &KernelSocket) -> Outcome {
    if !clc.syn_smc() {
        return fallback(DeclineCode::PEERNOSMC);
    }
    let proposal = match recv(clc) {
        Ok(Message::Proposal(proposal)) => proposal,
        Ok(Message::Decline(peer)) => {
            return Outcome::Fallback {
                reason: DeclineCode::PEERDECL,
                peer_code: peer.code,
            }
        }
        Ok(_) => return decline(clc, DeclineCode::SYNCERR),
        Err(code) => return decline(clc, code),
    };
    let conn = match set_up(clc) {
        Ok(conn) => conn,
        Err(code) => return decline(clc, code),
    };
    let outcome = server_exchange(clc, &conn, &proposal);
    if !matches!(outcome, Outcome::Rdma(_)) {
        conn.abandon();
    }
    outcome
}

fn server_exchange(clc: &KernelSocket, conn: &Arc<Connection>, proposal: &Endpoint) -> Outcome {
    let token = random_u32() | 1;
    if conn.connect(&peer_endpoint(proposal, token)).is_err() {
        return decline(clc, DeclineCode::CNFERR);
    }
    let Ok(local) = conn.local_endpoint() else {
        return decline(clc, DeclineCode::CNFERR);
    };
    if send(clc, &Message::Accept(endpoint(&local, token))).is_err() {
        return fallback(DeclineCode::SYNCERR);
    }
    match recv(clc) {
        Ok(Message::Confirm(confirm)) if confirm.token == token && confirm.qpn == proposal.qpn => {
            Outcome::Rdma(conn.clone())
        }
        Ok(Message::Decline(peer)) => Outcome::Fallback {
            reason: DeclineCode::PEERDECL,
            peer_code: peer.code,
        },
        Ok(_) => decline(clc, DeclineCode::SYNCERR),
        Err(code) => decline(clc, code),
    }
}
