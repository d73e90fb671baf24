// SPDX-License-Identifier: GPL-2.0

//! CLC handshake messages, exchanged over the TCP connection before switching to RDMA.
//!
//! The framing follows RFC 7609: every message starts with an 8-byte header and ends with a
//! 4-byte trailer, both carrying the EBCDIC eyecatcher "SMCR". All integers are big-endian.
//!
//! Header (8 bytes):
//!
//! | offset | size | field                                                      |
//! |--------|------|------------------------------------------------------------|
//! | 0      | 4    | eyecatcher `E2 D4 C3 D9` ("SMCR" in EBCDIC)                 |
//! | 4      | 1    | type: 1 proposal, 2 accept, 3 confirm, 4 decline           |
//! | 5      | 2    | length of the whole message, header and trailer included  |
//! | 7      | 1    | version in the high nibble (3), flags in the low nibble    |
//!
//! The version nibble is 3 so that stock SMC (versions 1 and 2) never takes an rsmc message for
//! its own and rsmc never takes a stock SMC message for its own. No flags are defined: they are
//! sent as zero and ignored on receipt.
//!
//! Proposal, accept and confirm (70 bytes) describe the sender's RDMA endpoint and receive ring:
//!
//! | offset | size | field                                                      |
//! |--------|------|------------------------------------------------------------|
//! | 8      | 8    | peer id (random, identifies the sending host)              |
//! | 16     | 16   | GID                                                        |
//! | 32     | 6    | MAC address                                                |
//! | 38     | 1    | link id: nonzero if the QP is an existing link's (reused)  |
//! | 39     | 1    | path MTU code, 1..=5 for 256..=4096 bytes                  |
//! | 40     | 3    | QP number                                                  |
//! | 43     | 3    | initial packet sequence number                             |
//! | 46     | 4    | rkey of the receive ring                                   |
//! | 50     | 8    | DMA address of the receive ring                            |
//! | 58     | 4    | receive ring size in bytes                                 |
//! | 62     | 4    | connection token: 0 in a proposal, nonzero otherwise       |
//! | 66     | 4    | trailer eyecatcher                                         |
//!
//! Decline (24 bytes):
//!
//! | offset | size | field                                                      |
//! |--------|------|------------------------------------------------------------|
//! | 8      | 8    | peer id                                                    |
//! | 16     | 4    | reason code, see [`DeclineCode`]                           |
//! | 20     | 4    | trailer eyecatcher                                         |
//!
//! [`encode`] and [`decode`] apply the same checks, so a message that encodes also decodes.

use super::ring::RingSize;

/// "SMCR" in EBCDIC, at the start and at the end of every message.
pub const EYECATCHER: [u8; 4] = [0xE2, 0xD4, 0xC3, 0xD9];

/// Protocol version carried in the high nibble of the header's version byte.
pub const VERSION: u8 = 3;

/// Length of the message header, enough for [`peek_header`].
pub const HEADER_LEN: usize = 8;

/// Length of a proposal, accept or confirm message.
pub const ENDPOINT_MSG_LEN: usize = 70;

/// Length of a decline message.
pub const DECLINE_MSG_LEN: usize = 24;

/// Length of the longest message, for sizing receive buffers.
pub const MAX_MSG_LEN: usize = ENDPOINT_MSG_LEN;

// The header's length field must be able to hold every message length.
const _: () = assert!(MAX_MSG_LEN <= u16::MAX as usize);

/// Largest value of a 24-bit field (QP number, packet sequence number).
const U24_MAX: u32 = 0xFF_FFFF;

/// CLC message type, the header's type byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// Client to server: offers rsmc and describes the client's endpoint.
    Proposal = 1,
    /// Server to client: accepts and describes the server's endpoint.
    Accept = 2,
    /// Client to server: confirms the connection, echoing the server's token.
    Confirm = 3,
    /// Either direction: refuses rsmc; both sides fall back to TCP.
    Decline = 4,
}

impl MessageType {
    /// Returns the message type for a header type byte, or `None` if it is not one.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Proposal),
            2 => Some(Self::Accept),
            3 => Some(Self::Confirm),
            4 => Some(Self::Decline),
            _ => None,
        }
    }

    /// Returns the exact length of a message of this type.
    pub const fn wire_len(self) -> usize {
        match self {
            Self::Proposal | Self::Accept | Self::Confirm => ENDPOINT_MSG_LEN,
            Self::Decline => DECLINE_MSG_LEN,
        }
    }
}

/// Path MTU, coded like the InfiniBand `enum ib_mtu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PathMtu {
    /// 256 bytes.
    Mtu256 = 1,
    /// 512 bytes.
    Mtu512 = 2,
    /// 1024 bytes.
    Mtu1024 = 3,
    /// 2048 bytes.
    Mtu2048 = 4,
    /// 4096 bytes.
    Mtu4096 = 5,
}

impl PathMtu {
    /// Returns the MTU for a wire code, or `None` if the code is out of range.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Mtu256),
            2 => Some(Self::Mtu512),
            3 => Some(Self::Mtu1024),
            4 => Some(Self::Mtu2048),
            5 => Some(Self::Mtu4096),
            _ => None,
        }
    }

    /// Returns the wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Returns the MTU in bytes.
    pub const fn bytes(self) -> u32 {
        128 << self.code()
    }

    /// Returns the smaller of `self` and `other`: the MTU of a path between the two.
    pub const fn path_with(self, other: Self) -> Self {
        if self.code() <= other.code() {
            self
        } else {
            other
        }
    }
}

/// Reason code of a decline message.
///
/// The named codes are those of stock SMC (`SMC_CLC_DECL_*` in `net/smc/smc_clc.h`), so that
/// diagnostics read the same. Any other value is carried through unchanged, which lets a peer
/// report codes this side does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeclineCode(pub u32);

impl DeclineCode {
    /// Insufficient memory resources.
    pub const MEM: Self = Self(0x0101_0000);
    /// Timeout waiting for the confirm-link message.
    pub const TIMEOUT_CL: Self = Self(0x0201_0000);
    /// Timeout waiting for the add-link message.
    pub const TIMEOUT_AL: Self = Self(0x0202_0000);
    /// Configuration error.
    pub const CNFERR: Self = Self(0x0300_0000);
    /// The peer did not indicate SMC.
    pub const PEERNOSMC: Self = Self(0x0301_0000);
    /// IPsec is in use on the connection.
    pub const IPSEC: Self = Self(0x0302_0000);
    /// No SMC device found.
    pub const NOSMCDEV: Self = Self(0x0303_0000);
    /// No SMC-D device found.
    pub const NOSMCDDEV: Self = Self(0x0303_0001);
    /// No SMC-R device found.
    pub const NOSMCRDEV: Self = Self(0x0303_0002);
    /// The hardware has no ISMv2 support.
    pub const NOISM2SUPP: Self = Self(0x0303_0003);
    /// The peer sent no CLC v2 extension.
    pub const NOV2EXT: Self = Self(0x0303_0004);
    /// The peer sent no SMC-Dv2 extension.
    pub const NOV2DEXT: Self = Self(0x0303_0005);
    /// The peer sent no SEID.
    pub const NOSEID: Self = Self(0x0303_0006);
    /// No SMC-Dv2 device found.
    pub const NOSMCD2DEV: Self = Self(0x0303_0007);
    /// The peer sent no UEID.
    pub const NOUEID: Self = Self(0x0303_0008);
    /// Release version negotiation failed.
    pub const RELEASEERR: Self = Self(0x0303_0009);
    /// Maximum connections negotiation failed.
    pub const MAXCONNERR: Self = Self(0x0303_000A);
    /// Maximum links negotiation failed.
    pub const MAXLINKERR: Self = Self(0x0303_000B);
    /// The SMC modes (R or D) do not match.
    pub const MODEUNSUPP: Self = Self(0x0304_0000);
    /// The peer has an eyecatcher in its ring element.
    pub const RMBE_EC: Self = Self(0x0305_0000);
    /// A socket option (such as TCP fastopen) is not supported.
    pub const OPTUNSUPP: Self = Self(0x0306_0000);
    /// IP prefix or subnet mismatch.
    pub const DIFFPREFIX: Self = Self(0x0307_0000);
    /// Getting the VLAN id of the IP device failed.
    pub const GETVLANERR: Self = Self(0x0308_0000);
    /// Registering the VLAN id on the ISM device failed.
    pub const ISMVLANERR: Self = Self(0x0309_0000);
    /// No active SMC-R link in the link group.
    pub const NOACTLINK: Self = Self(0x030A_0000);
    /// The SMC-R link from the server was not found.
    pub const NOSRVLINK: Self = Self(0x030B_0000);
    /// SMC version mismatch.
    pub const VERSMISMAT: Self = Self(0x030C_0000);
    /// SMC-D DMB limit exceeded.
    pub const MAX_DMB: Self = Self(0x030D_0000);
    /// SMC-Rv2 connection has no route to the peer.
    pub const NOROUTE: Self = Self(0x030E_0000);
    /// SMC-Rv2 connection indirect mismatch.
    pub const NOINDIRECT: Self = Self(0x030F_0000);
    /// Synchronization error.
    pub const SYNCERR: Self = Self(0x0400_0000);
    /// The peer declined during the handshake.
    pub const PEERDECL: Self = Self(0x0500_0000);
    /// rsmc: the link the client offered to reuse is gone on the server's side; the client
    /// proposes again with a new link on the same TCP connection.
    pub const NOCLNTLINK: Self = Self(0x030B_0100);
    /// Internal error.
    pub const INTERR: Self = Self(0x0999_0000);
    /// Internal error: rtoken handling failed.
    pub const ERR_RTOK: Self = Self(0x0999_0001);
    /// Internal error: readying the link failed.
    pub const ERR_RDYLNK: Self = Self(0x0999_0002);
    /// Internal error: registering the RDMA buffers failed.
    pub const ERR_REGBUF: Self = Self(0x0999_0003);

    /// Returns the stock SMC name of this code, or `None` if it has none.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0101_0000 => "SMC_CLC_DECL_MEM",
            0x0201_0000 => "SMC_CLC_DECL_TIMEOUT_CL",
            0x0202_0000 => "SMC_CLC_DECL_TIMEOUT_AL",
            0x0300_0000 => "SMC_CLC_DECL_CNFERR",
            0x0301_0000 => "SMC_CLC_DECL_PEERNOSMC",
            0x0302_0000 => "SMC_CLC_DECL_IPSEC",
            0x0303_0000 => "SMC_CLC_DECL_NOSMCDEV",
            0x0303_0001 => "SMC_CLC_DECL_NOSMCDDEV",
            0x0303_0002 => "SMC_CLC_DECL_NOSMCRDEV",
            0x0303_0003 => "SMC_CLC_DECL_NOISM2SUPP",
            0x0303_0004 => "SMC_CLC_DECL_NOV2EXT",
            0x0303_0005 => "SMC_CLC_DECL_NOV2DEXT",
            0x0303_0006 => "SMC_CLC_DECL_NOSEID",
            0x0303_0007 => "SMC_CLC_DECL_NOSMCD2DEV",
            0x0303_0008 => "SMC_CLC_DECL_NOUEID",
            0x0303_0009 => "SMC_CLC_DECL_RELEASEERR",
            0x0303_000A => "SMC_CLC_DECL_MAXCONNERR",
            0x0303_000B => "SMC_CLC_DECL_MAXLINKERR",
            0x0304_0000 => "SMC_CLC_DECL_MODEUNSUPP",
            0x0305_0000 => "SMC_CLC_DECL_RMBE_EC",
            0x0306_0000 => "SMC_CLC_DECL_OPTUNSUPP",
            0x0307_0000 => "SMC_CLC_DECL_DIFFPREFIX",
            0x0308_0000 => "SMC_CLC_DECL_GETVLANERR",
            0x0309_0000 => "SMC_CLC_DECL_ISMVLANERR",
            0x030A_0000 => "SMC_CLC_DECL_NOACTLINK",
            0x030B_0000 => "SMC_CLC_DECL_NOSRVLINK",
            0x030C_0000 => "SMC_CLC_DECL_VERSMISMAT",
            0x030D_0000 => "SMC_CLC_DECL_MAX_DMB",
            0x030E_0000 => "SMC_CLC_DECL_NOROUTE",
            0x030F_0000 => "SMC_CLC_DECL_NOINDIRECT",
            0x0400_0000 => "SMC_CLC_DECL_SYNCERR",
            0x0500_0000 => "SMC_CLC_DECL_PEERDECL",
            0x0999_0000 => "SMC_CLC_DECL_INTERR",
            0x0999_0001 => "SMC_CLC_DECL_ERR_RTOK",
            0x0999_0002 => "SMC_CLC_DECL_ERR_RDYLNK",
            0x0999_0003 => "SMC_CLC_DECL_ERR_REGBUF",
            _ => return None,
        })
    }
}

/// The sender's RDMA endpoint and receive ring, carried by proposal, accept and confirm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Random identifier of the sending host.
    pub peer_id: [u8; 8],
    /// GID of the sender's RDMA port.
    pub gid: [u8; 16],
    /// MAC address of the sender's RDMA port.
    pub mac: [u8; 6],
    /// Nonzero if the queue pair is that of an existing link between the two devices, which
    /// the connection reuses; 0 for a new queue pair.
    pub link_id: u8,
    /// Path MTU.
    pub mtu: PathMtu,
    /// Number of the sender's queue pair; 24 bits, and never 0 or 1 (the special QPs).
    pub qpn: u32,
    /// Initial packet sequence number of the sender's queue pair; 24 bits.
    pub psn: u32,
    /// Remote key of the sender's receive ring; nonzero.
    pub rkey: u32,
    /// DMA address of the sender's receive ring; adding the ring size must not overflow.
    pub ring_addr: u64,
    /// Size of the sender's receive ring; negotiable (see [`RingSize::negotiable`]).
    pub ring_size: RingSize,
    /// Connection token: 0 in a proposal, assigned by the server in the accept and echoed in the
    /// confirm.
    pub token: u32,
}

/// Body of a decline message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decline {
    /// Random identifier of the sending host.
    pub peer_id: [u8; 8],
    /// Why the sender declined.
    pub code: DeclineCode,
}

/// A CLC message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// Client offers rsmc.
    Proposal(Endpoint),
    /// Server accepts.
    Accept(Endpoint),
    /// Client confirms.
    Confirm(Endpoint),
    /// Either side refuses rsmc.
    Decline(Decline),
}

impl Message {
    /// Returns the type of this message.
    pub const fn message_type(&self) -> MessageType {
        match self {
            Self::Proposal(_) => MessageType::Proposal,
            Self::Accept(_) => MessageType::Accept,
            Self::Confirm(_) => MessageType::Confirm,
            Self::Decline(_) => MessageType::Decline,
        }
    }
}

/// What the fixed header of a message announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub message_type: MessageType,
    /// Length of the whole message in bytes, header and trailer included.
    pub len: usize,
}

/// Why a CLC message could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The input is shorter than the header or than the length the header announces.
    Truncated,
    /// The input is longer than the length the header announces.
    TrailingBytes,
    /// The output buffer is too small for the message.
    BufferTooSmall,
    /// The header does not start with the eyecatcher.
    BadEyecatcher,
    /// The message does not end with the eyecatcher.
    BadTrailer,
    /// The header's version nibble is not [`VERSION`]; carries the nibble.
    UnsupportedVersion(u8),
    /// The header's type byte is not a known message type; carries the byte.
    UnknownType(u8),
    /// The header's length field is not the exact length of the message type; carries the field.
    BadLength(u16),
    /// The path MTU code is out of range; carries the code.
    BadMtu(u8),
    /// The QP number exceeds 24 bits or names a special QP (0 or 1); carries the number.
    BadQpn(u32),
    /// The packet sequence number exceeds 24 bits; carries the number.
    BadPsn(u32),
    /// The ring's remote key is zero.
    ZeroRkey,
    /// The ring size is not negotiable; carries the size.
    BadRingSize(u32),
    /// The ring's end address, DMA address plus size, does not fit in 64 bits.
    BadRingAddr,
    /// The token is nonzero in a proposal or zero in an accept or confirm; carries the token.
    BadToken(u32),
}

/// Reads the header at the start of `buf` and returns what it announces.
///
/// Only the first [`HEADER_LEN`] bytes are examined, so a stream reader can learn how many bytes
/// to wait for before calling [`decode`]. The announced length is checked to be the exact length
/// of the announced type, so it is always at most [`MAX_MSG_LEN`].
pub fn peek_header(buf: &[u8]) -> Result<Header, Error> {
    let mut r = Reader(buf);
    let eyecatcher: [u8; 4] = r.bytes()?;
    let type_byte = r.u8()?;
    let len = r.be_u16()?;
    let version = r.u8()? >> 4;
    if eyecatcher != EYECATCHER {
        return Err(Error::BadEyecatcher);
    }
    // The version decides how the rest is read, so it is checked before the type.
    if version != VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    let message_type = MessageType::from_u8(type_byte).ok_or(Error::UnknownType(type_byte))?;
    if usize::from(len) != message_type.wire_len() {
        return Err(Error::BadLength(len));
    }
    Ok(Header {
        message_type,
        len: message_type.wire_len(),
    })
}

/// Decodes the message that fills `buf` exactly.
pub fn decode(buf: &[u8]) -> Result<Message, Error> {
    let header = peek_header(buf)?;
    if buf.len() < header.len {
        return Err(Error::Truncated);
    }
    if buf.len() > header.len {
        return Err(Error::TrailingBytes);
    }
    if buf.last_chunk::<4>() != Some(&EYECATCHER) {
        return Err(Error::BadTrailer);
    }
    let mut r = Reader(buf.get(HEADER_LEN..).ok_or(Error::Truncated)?);
    Ok(match header.message_type {
        MessageType::Proposal => Message::Proposal(read_endpoint(&mut r, MessageType::Proposal)?),
        MessageType::Accept => Message::Accept(read_endpoint(&mut r, MessageType::Accept)?),
        MessageType::Confirm => Message::Confirm(read_endpoint(&mut r, MessageType::Confirm)?),
        MessageType::Decline => Message::Decline(Decline {
            peer_id: r.bytes()?,
            code: DeclineCode(r.be_u32()?),
        }),
    })
}

/// Reads and checks the body of a proposal, accept or confirm.
fn read_endpoint(r: &mut Reader<'_>, message_type: MessageType) -> Result<Endpoint, Error> {
    let peer_id = r.bytes()?;
    let gid = r.bytes()?;
    let mac = r.bytes()?;
    let link_id = r.u8()?;
    let mtu_code = r.u8()?;
    let qpn = r.be_u24()?;
    let psn = r.be_u24()?;
    let rkey = r.be_u32()?;
    let ring_addr = r.be_u64()?;
    let ring_bytes = r.be_u32()?;
    let token = r.be_u32()?;
    let endpoint = Endpoint {
        peer_id,
        gid,
        mac,
        link_id,
        mtu: PathMtu::from_code(mtu_code).ok_or(Error::BadMtu(mtu_code))?,
        qpn,
        psn,
        rkey,
        ring_addr,
        ring_size: RingSize::negotiable(ring_bytes).ok_or(Error::BadRingSize(ring_bytes))?,
        token,
    };
    check_endpoint(message_type, &endpoint)?;
    Ok(endpoint)
}

/// Encodes `msg` at the start of `buf` and returns the number of bytes written.
///
/// Fails without writing anything if `msg` holds a value [`decode`] would reject or if `buf` is
/// too short.
pub fn encode(msg: &Message, buf: &mut [u8]) -> Result<usize, Error> {
    let message_type = msg.message_type();
    let len = message_type.wire_len();
    if let Message::Proposal(ep) | Message::Accept(ep) | Message::Confirm(ep) = msg {
        check_endpoint(message_type, ep)?;
    }
    let out = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
    let mut w = Writer(out);
    w.bytes(EYECATCHER)?;
    w.bytes([message_type as u8])?;
    // Cannot truncate: message lengths are small constants (see the assertion below).
    w.bytes((len as u16).to_be_bytes())?;
    w.bytes([VERSION << 4])?;
    match msg {
        Message::Proposal(ep) | Message::Accept(ep) | Message::Confirm(ep) => {
            w.bytes(ep.peer_id)?;
            w.bytes(ep.gid)?;
            w.bytes(ep.mac)?;
            w.bytes([ep.link_id, ep.mtu.code()])?;
            w.be_u24(ep.qpn)?;
            w.be_u24(ep.psn)?;
            w.bytes(ep.rkey.to_be_bytes())?;
            w.bytes(ep.ring_addr.to_be_bytes())?;
            w.bytes(ep.ring_size.get().to_be_bytes())?;
            w.bytes(ep.token.to_be_bytes())?;
        }
        Message::Decline(decline) => {
            w.bytes(decline.peer_id)?;
            w.bytes(decline.code.0.to_be_bytes())?;
        }
    }
    w.bytes(EYECATCHER)?;
    Ok(len)
}

/// Checks the values of an endpoint that its field types do not already constrain.
fn check_endpoint(message_type: MessageType, ep: &Endpoint) -> Result<(), Error> {
    // QPs 0 and 1 are the subnet management and general services QPs, never a connected QP.
    if ep.qpn > U24_MAX || ep.qpn < 2 {
        return Err(Error::BadQpn(ep.qpn));
    }
    if ep.psn > U24_MAX {
        return Err(Error::BadPsn(ep.psn));
    }
    if ep.rkey == 0 {
        return Err(Error::ZeroRkey);
    }
    if !ep.ring_size.is_negotiable() {
        return Err(Error::BadRingSize(ep.ring_size.get()));
    }
    // The writer computes remote addresses as `ring_addr + offset` for offsets up to the size.
    if ep
        .ring_addr
        .checked_add(u64::from(ep.ring_size.get()))
        .is_none()
    {
        return Err(Error::BadRingAddr);
    }
    // Only the server assigns tokens, in its accept.
    if (ep.token == 0) != (message_type == MessageType::Proposal) {
        return Err(Error::BadToken(ep.token));
    }
    Ok(())
}

/// Consumes big-endian fields from the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(Error::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        let [value] = self.bytes()?;
        Ok(value)
    }

    fn be_u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.bytes()?))
    }

    fn be_u24(&mut self) -> Result<u32, Error> {
        let [a, b, c] = self.bytes()?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    fn be_u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.bytes()?))
    }

    fn be_u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.bytes()?))
    }
}

/// Fills a byte slice from the front with big-endian fields.
struct Writer<'a>(&'a mut [u8]);

impl Writer<'_> {
    fn bytes<const N: usize>(&mut self, value: [u8; N]) -> Result<(), Error> {
        let (head, rest) = core::mem::take(&mut self.0)
            .split_first_chunk_mut::<N>()
            .ok_or(Error::BufferTooSmall)?;
        *head = value;
        self.0 = rest;
        Ok(())
    }

    /// Writes the low 24 bits of `value`; callers have checked that the rest is zero.
    fn be_u24(&mut self, value: u32) -> Result<(), Error> {
        let [_, a, b, c] = value.to_be_bytes();
        self.bytes([a, b, c])
    }
}

#[cfg(any(test, CONFIG_KUNIT))]
#[cfg_attr(CONFIG_KUNIT, kernel::prelude::kunit_tests(rsmc_proto_clc))]
mod tests {
    use super::*;

    /// A ring usable for arithmetic but too small to negotiate; checked at compile time.
    const PAGE_RING: RingSize = match RingSize::new(4096) {
        Some(size) => size,
        None => panic!(),
    };

    fn endpoint(token: u32) -> Endpoint {
        Endpoint {
            peer_id: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
            gid: [
                0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x16, 0x3E, 0xFF, 0xFE, 0x12, 0x34, 0x56,
            ],
            mac: [0x02, 0x16, 0x3E, 0x12, 0x34, 0x56],
            link_id: 7,
            mtu: PathMtu::Mtu1024,
            qpn: 0x00AB_CDEF,
            psn: 0x0012_3456,
            rkey: 0xDEAD_BEEF,
            ring_addr: 0xFFFF_8880_1234_5000,
            ring_size: RingSize::from_sock_buf(64 * 1024),
            token,
        }
    }

    fn decline(code: u32) -> Message {
        Message::Decline(Decline {
            peer_id: [1, 2, 3, 4, 5, 6, 7, 8],
            code: DeclineCode(code),
        })
    }

    /// One valid message of every type.
    fn samples() -> [Message; 4] {
        [
            Message::Proposal(endpoint(0)),
            Message::Accept(endpoint(0x0102_0304)),
            Message::Confirm(endpoint(0x0102_0304)),
            decline(DeclineCode::PEERDECL.0),
        ]
    }

    /// Encodes a proposal and applies `edit` to the bytes.
    fn edited_proposal(edit: fn(&mut [u8; ENDPOINT_MSG_LEN])) -> [u8; ENDPOINT_MSG_LEN] {
        let mut buf = [0u8; ENDPOINT_MSG_LEN];
        let encoded = encode(&Message::Proposal(endpoint(0)), &mut buf);
        if encoded == Ok(ENDPOINT_MSG_LEN) {
            edit(&mut buf);
        }
        buf
    }

    #[test]
    fn round_trip_every_type() {
        for msg in samples() {
            let mut buf = [0u8; MAX_MSG_LEN];
            let len = msg.message_type().wire_len();
            assert_eq!(encode(&msg, &mut buf), Ok(len));
            assert_eq!(decode(&buf[..len]), Ok(msg));
            let header = Header {
                message_type: msg.message_type(),
                len,
            };
            assert_eq!(peek_header(&buf[..HEADER_LEN]), Ok(header));
        }
    }

    #[test]
    fn proposal_wire_layout() {
        let mut buf = [0u8; MAX_MSG_LEN];
        assert_eq!(
            encode(&Message::Accept(endpoint(0x0102_0304)), &mut buf),
            Ok(70)
        );
        let expected: [u8; 70] = [
            0xE2, 0xD4, 0xC3, 0xD9, 2, 0, 70, 0x30, // header
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // peer id
            0xFE, 0x80, 0, 0, 0, 0, 0, 0, // GID, first half
            0x02, 0x16, 0x3E, 0xFF, 0xFE, 0x12, 0x34, 0x56, // GID, second half
            0x02, 0x16, 0x3E, 0x12, 0x34, 0x56, // MAC
            7, 3, // link id, MTU
            0xAB, 0xCD, 0xEF, 0x12, 0x34, 0x56, // QPN, PSN
            0xDE, 0xAD, 0xBE, 0xEF, // rkey
            0xFF, 0xFF, 0x88, 0x80, 0x12, 0x34, 0x50, 0x00, // ring address
            0, 1, 0, 0, // ring size
            1, 2, 3, 4, // token
            0xE2, 0xD4, 0xC3, 0xD9, // trailer
        ];
        assert_eq!(buf, expected);
    }

    #[test]
    fn decline_wire_layout() {
        let mut buf = [0u8; DECLINE_MSG_LEN];
        assert_eq!(encode(&decline(0x0303_0002), &mut buf), Ok(24));
        let expected: [u8; 24] = [
            0xE2, 0xD4, 0xC3, 0xD9, 4, 0, 24, 0x30, // header
            1, 2, 3, 4, 5, 6, 7, 8, // peer id
            0x03, 0x03, 0x00, 0x02, // reason code
            0xE2, 0xD4, 0xC3, 0xD9, // trailer
        ];
        assert_eq!(buf, expected);
    }

    #[test]
    fn decline_codes_round_trip() {
        for code in [0, 1, 0x0101_0000, 0x0303_0002, 0x1234_5678, u32::MAX] {
            let mut buf = [0u8; DECLINE_MSG_LEN];
            assert_eq!(encode(&decline(code), &mut buf), Ok(DECLINE_MSG_LEN));
            assert_eq!(decode(&buf), Ok(decline(code)));
        }
        assert_eq!(DeclineCode::MEM.name(), Some("SMC_CLC_DECL_MEM"));
        assert_eq!(
            DeclineCode::NOSMCRDEV.name(),
            Some("SMC_CLC_DECL_NOSMCRDEV")
        );
        assert_eq!(DeclineCode::VERSMISMAT.0, 0x030C_0000);
        assert_eq!(
            DeclineCode::ERR_REGBUF.name(),
            Some("SMC_CLC_DECL_ERR_REGBUF")
        );
        assert_eq!(DeclineCode(0x1234_5678).name(), None);
    }

    #[test]
    fn path_mtu_codes() {
        assert_eq!(PathMtu::from_code(0), None);
        assert_eq!(PathMtu::from_code(6), None);
        assert_eq!(PathMtu::from_code(1).map(PathMtu::bytes), Some(256));
        assert_eq!(PathMtu::from_code(5).map(PathMtu::bytes), Some(4096));
        for code in 1..=5 {
            assert_eq!(PathMtu::from_code(code).map(PathMtu::code), Some(code));
        }
        assert_eq!(
            PathMtu::Mtu4096.path_with(PathMtu::Mtu1024),
            PathMtu::Mtu1024
        );
        assert_eq!(PathMtu::Mtu512.path_with(PathMtu::Mtu2048), PathMtu::Mtu512);
        assert_eq!(PathMtu::Mtu256.path_with(PathMtu::Mtu256), PathMtu::Mtu256);
    }

    #[test]
    fn rejects_bad_framing() {
        let short = edited_proposal(|_| {});
        assert_eq!(decode(&short[..HEADER_LEN - 1]), Err(Error::Truncated));
        assert_eq!(peek_header(&short[..HEADER_LEN - 1]), Err(Error::Truncated));
        assert_eq!(decode(&short[..HEADER_LEN]), Err(Error::Truncated));
        assert_eq!(decode(&[]), Err(Error::Truncated));

        let bad_eye = edited_proposal(|b| b[3] = 0xC4);
        assert_eq!(decode(&bad_eye), Err(Error::BadEyecatcher));
        let bad_trailer = edited_proposal(|b| b[69] = 0);
        assert_eq!(decode(&bad_trailer), Err(Error::BadTrailer));

        let unknown_type = edited_proposal(|b| b[4] = 5);
        assert_eq!(decode(&unknown_type), Err(Error::UnknownType(5)));
        let zero_type = edited_proposal(|b| b[4] = 0);
        assert_eq!(decode(&zero_type), Err(Error::UnknownType(0)));

        // Stock SMC-R v1 and v2 headers.
        let smc_v1 = edited_proposal(|b| b[7] = 0x10);
        assert_eq!(decode(&smc_v1), Err(Error::UnsupportedVersion(1)));
        let smc_v2 = edited_proposal(|b| b[7] = 0x20);
        assert_eq!(decode(&smc_v2), Err(Error::UnsupportedVersion(2)));
        // Undefined flags are ignored.
        let flags = edited_proposal(|b| b[7] = 0x3F);
        assert_eq!(decode(&flags), Ok(Message::Proposal(endpoint(0))));

        let long_field = edited_proposal(|b| b[6] = 71);
        assert_eq!(decode(&long_field), Err(Error::BadLength(71)));
        let huge_field = edited_proposal(|b| b[5] = 1);
        assert_eq!(decode(&huge_field), Err(Error::BadLength(326)));
        // A decline header on a proposal-sized message.
        let as_decline = edited_proposal(|b| b[4] = 4);
        assert_eq!(decode(&as_decline), Err(Error::BadLength(70)));
        assert_eq!(peek_header(&as_decline), Err(Error::BadLength(70)));
    }

    #[test]
    fn rejects_absurd_values() {
        let mtu0 = edited_proposal(|b| b[39] = 0);
        assert_eq!(decode(&mtu0), Err(Error::BadMtu(0)));
        let mtu6 = edited_proposal(|b| b[39] = 6);
        assert_eq!(decode(&mtu6), Err(Error::BadMtu(6)));

        let qpn0 = edited_proposal(|b| [b[40], b[41], b[42]] = [0, 0, 0]);
        assert_eq!(decode(&qpn0), Err(Error::BadQpn(0)));
        let qpn1 = edited_proposal(|b| [b[40], b[41], b[42]] = [0, 0, 1]);
        assert_eq!(decode(&qpn1), Err(Error::BadQpn(1)));
        let qpn_max = edited_proposal(|b| [b[40], b[41], b[42]] = [0xFF, 0xFF, 0xFF]);
        assert!(decode(&qpn_max).is_ok());

        let rkey0 = edited_proposal(|b| [b[46], b[47], b[48], b[49]] = [0; 4]);
        assert_eq!(decode(&rkey0), Err(Error::ZeroRkey));

        let size0 = edited_proposal(|b| [b[58], b[59], b[60], b[61]] = [0; 4]);
        assert_eq!(decode(&size0), Err(Error::BadRingSize(0)));
        let too_small = edited_proposal(|b| [b[58], b[59], b[60], b[61]] = [0, 0, 0x30, 0]);
        assert_eq!(decode(&too_small), Err(Error::BadRingSize(0x3000)));
        let too_big = edited_proposal(|b| [b[58], b[59], b[60], b[61]] = [0, 0x10, 0x10, 0]);
        assert_eq!(decode(&too_big), Err(Error::BadRingSize(0x0010_1000)));
        let unaligned = edited_proposal(|b| [b[58], b[59], b[60], b[61]] = [0, 1, 0, 1]);
        assert_eq!(decode(&unaligned), Err(Error::BadRingSize(0x0001_0001)));

        // 64 KiB ring starting less than 64 KiB below the top of the address space.
        let wraps = edited_proposal(|b| [b[50], b[51], b[52], b[53]] = [0xFF; 4]);
        let wraps = {
            let mut b = wraps;
            [b[54], b[55], b[56], b[57]] = [0xFF, 0xFF, 0x00, 0x01];
            b
        };
        assert_eq!(decode(&wraps), Err(Error::BadRingAddr));

        let proposal_token = edited_proposal(|b| b[65] = 1);
        assert_eq!(decode(&proposal_token), Err(Error::BadToken(1)));
        let accept_no_token = edited_proposal(|b| b[4] = 2);
        assert_eq!(decode(&accept_no_token), Err(Error::BadToken(0)));
        let confirm_no_token = edited_proposal(|b| b[4] = 3);
        assert_eq!(decode(&confirm_no_token), Err(Error::BadToken(0)));
    }

    #[test]
    fn encode_rejects_what_decode_would() {
        let mut buf = [0xAAu8; MAX_MSG_LEN];
        let cases: [(Endpoint, Error); 7] = [
            (
                Endpoint {
                    qpn: 0x0100_0000,
                    ..endpoint(0)
                },
                Error::BadQpn(0x0100_0000),
            ),
            (
                Endpoint {
                    qpn: 1,
                    ..endpoint(0)
                },
                Error::BadQpn(1),
            ),
            (
                Endpoint {
                    psn: 0x0100_0000,
                    ..endpoint(0)
                },
                Error::BadPsn(0x0100_0000),
            ),
            (
                Endpoint {
                    rkey: 0,
                    ..endpoint(0)
                },
                Error::ZeroRkey,
            ),
            (
                Endpoint {
                    ring_size: PAGE_RING,
                    ..endpoint(0)
                },
                Error::BadRingSize(4096),
            ),
            (
                Endpoint {
                    ring_addr: u64::MAX - 4096,
                    ..endpoint(0)
                },
                Error::BadRingAddr,
            ),
            (endpoint(9), Error::BadToken(9)),
        ];
        for (ep, err) in cases {
            assert_eq!(encode(&Message::Proposal(ep), &mut buf), Err(err));
        }
        assert_eq!(
            encode(&Message::Confirm(endpoint(0)), &mut buf),
            Err(Error::BadToken(0))
        );
        // Nothing was written by the failed calls.
        assert!(buf.iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn encode_needs_room() {
        for msg in samples() {
            let len = msg.message_type().wire_len();
            let mut buf = [0xAAu8; MAX_MSG_LEN];
            assert_eq!(
                encode(&msg, &mut buf[..len - 1]),
                Err(Error::BufferTooSmall)
            );
            assert!(buf.iter().all(|&b| b == 0xAA));
            assert_eq!(encode(&msg, &mut buf), Ok(len));
        }
    }

    /// Every prefix and every extension of a valid message is rejected without panicking.
    #[test]
    fn wrong_lengths_never_decode() {
        for msg in samples() {
            let mut buf = [0u8; 2 * MAX_MSG_LEN];
            let len = msg.message_type().wire_len();
            assert_eq!(encode(&msg, &mut buf), Ok(len));
            for cut in 0..len {
                assert!(decode(&buf[..cut]).is_err());
            }
            for filler in [0x00, 0xE2, 0xFF] {
                for byte in &mut buf[len..] {
                    *byte = filler;
                }
                for end in len + 1..=buf.len() {
                    assert!(decode(&buf[..end]).is_err());
                }
            }
            // Even a second trailer after the message does not make it decode.
            [buf[len], buf[len + 1], buf[len + 2], buf[len + 3]] = EYECATCHER;
            assert_eq!(decode(&buf[..len + 4]), Err(Error::TrailingBytes));
            assert_eq!(decode(&buf[..len + 1]), Err(Error::TrailingBytes));
            // The header alone announces the full length, whatever follows it.
            for end in HEADER_LEN..=buf.len() {
                assert_eq!(peek_header(&buf[..end]).map(|h| h.len), Ok(len));
            }
        }
    }

    /// Any single corrupted byte either is rejected or decodes to a message that encodes back to
    /// the same bytes (apart from the ignored flag bits).
    #[test]
    fn corrupted_bytes_decode_canonically_or_not_at_all() {
        for msg in samples() {
            let mut good = [0u8; MAX_MSG_LEN];
            let len = msg.message_type().wire_len();
            assert_eq!(encode(&msg, &mut good), Ok(len));
            for at in 0..len {
                for mask in [0x01, 0x10, 0x80, 0xFF] {
                    let mut bad = good;
                    bad[at] ^= mask;
                    if let Ok(decoded) = decode(&bad[..len]) {
                        let mut again = [0u8; MAX_MSG_LEN];
                        assert_eq!(encode(&decoded, &mut again), Ok(len));
                        bad[7] &= 0xF0;
                        assert_eq!(again, bad);
                    }
                }
            }
        }
    }
}
