// SPDX-License-Identifier: GPL-2.0

//! LLC messages: link-level control, sent with RDMA SEND on a link's queue pair like CDC
//! messages and told apart from them by the first byte.
//!
//! rsmc uses one, DELETE LINK: the side whose device goes tells the peer that its end of the
//! link is gone, so that the peer's end goes at once. Without it, the peer's work requests in
//! flight would complete only after the transport's retries, and an idle link would wait out
//! its linger. The layout mirrors stock SMC's `struct smc_llc_msg_del_link` (RFC 7609; 44
//! bytes, integers big-endian):
//!
//! | offset | size | field                                          |
//! |--------|------|------------------------------------------------|
//! | 0      | 1    | type, `0x04`                                   |
//! | 1      | 1    | length, 44                                     |
//! | 2      | 1    | reserved                                       |
//! | 3      | 1    | flags: `0x40` all links, `0x20` orderly         |
//! | 4      | 1    | link number                                    |
//! | 5      | 4    | reason code                                    |
//! | 9      | 35   | reserved                                       |
//!
//! Reserved bytes and undefined flag bits are sent as zero and ignored on receipt.

/// Type byte of a DELETE LINK message.
pub const DELETE_LINK: u8 = 0x04;

/// Length of a DELETE LINK message.
pub const MSG_LEN: usize = 44;

/// Flag: every link of the link group goes (rsmc's link groups have one link).
const FLAG_ALL: u8 = 0x40;
/// Flag: the link goes in order, its connections closed; else they were aborted.
const FLAG_ORDERLY: u8 = 0x20;

/// Why a link is deleted, as stock SMC's `SMC_LLC_DEL_*` request codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    /// The path to the peer is lost.
    pub const LOST_PATH: Self = Self(0x0001_0000);
    /// An operator ended the link: its device was removed, or rsmc unloaded.
    pub const OP_INIT_TERM: Self = Self(0x0002_0000);
    /// The program ended the link.
    pub const PROG_INIT_TERM: Self = Self(0x0003_0000);
    /// The peer broke the protocol.
    pub const PROT_VIOL: Self = Self(0x0004_0000);
}

/// A DELETE LINK message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteLink {
    /// Every link of the link group goes.
    pub all: bool,
    /// The link's connections were closed, not aborted.
    pub orderly: bool,
    /// The link, within its link group.
    pub link_num: u8,
    /// Why.
    pub reason: Reason,
}

/// Why an LLC message could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The input is shorter than the message.
    Truncated,
    /// The input is longer than the message.
    TrailingBytes,
    /// The output buffer is shorter than the message.
    BufferTooSmall,
    /// The type byte is not [`DELETE_LINK`]; carries the byte.
    BadType(u8),
    /// The length byte is not [`MSG_LEN`]; carries the byte.
    BadLength(u8),
}

/// Decodes the DELETE LINK message that fills `buf` exactly.
pub fn decode_delete_link(buf: &[u8]) -> Result<DeleteLink, Error> {
    let b: &[u8; MSG_LEN] = buf
        .get(..MSG_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(Error::Truncated)?;
    if b[0] != DELETE_LINK {
        return Err(Error::BadType(b[0]));
    }
    if usize::from(b[1]) != MSG_LEN {
        return Err(Error::BadLength(b[1]));
    }
    if buf.len() > MSG_LEN {
        return Err(Error::TrailingBytes);
    }
    Ok(DeleteLink {
        all: b[3] & FLAG_ALL != 0,
        orderly: b[3] & FLAG_ORDERLY != 0,
        link_num: b[4],
        reason: Reason(u32::from_be_bytes([b[5], b[6], b[7], b[8]])),
    })
}

/// Encodes `msg` at the start of `buf`; returns the number of bytes written, [`MSG_LEN`].
///
/// Fails without writing anything if `buf` is too short.
pub fn encode_delete_link(msg: &DeleteLink, buf: &mut [u8]) -> Result<usize, Error> {
    let out = buf.get_mut(..MSG_LEN).ok_or(Error::BufferTooSmall)?;
    let mut b = [0u8; MSG_LEN];
    b[0] = DELETE_LINK;
    // CAST: 44 fits.
    b[1] = MSG_LEN as u8;
    b[3] = if msg.all { FLAG_ALL } else { 0 } | if msg.orderly { FLAG_ORDERLY } else { 0 };
    b[4] = msg.link_num;
    [b[5], b[6], b[7], b[8]] = msg.reason.0.to_be_bytes();
    out.copy_from_slice(&b);
    Ok(MSG_LEN)
}

#[cfg(any(test, CONFIG_KUNIT))]
#[cfg_attr(CONFIG_KUNIT, kernel::prelude::kunit_tests(rsmc_proto_llc))]
mod tests {
    use super::*;
    use crate::proto::{cdc, test_rng::XorShift};

    const SAMPLE: DeleteLink = DeleteLink {
        all: true,
        orderly: false,
        link_num: 7,
        reason: Reason::OP_INIT_TERM,
    };

    fn encoded(msg: &DeleteLink) -> [u8; MSG_LEN] {
        let mut buf = [0u8; MSG_LEN];
        if encode_delete_link(msg, &mut buf).is_err() {
            buf = [0; MSG_LEN];
        }
        buf
    }

    #[test]
    fn wire_layout() {
        let mut expected = [0u8; MSG_LEN];
        let head: [u8; 9] = [0x04, 44, 0, 0x40, 7, 0x00, 0x02, 0x00, 0x00];
        for (dst, src) in expected.iter_mut().zip(head) {
            *dst = src;
        }
        assert_eq!(encoded(&SAMPLE), expected);
    }

    #[test]
    fn round_trip() {
        for (all, orderly) in [(false, false), (true, false), (false, true), (true, true)] {
            let msg = DeleteLink {
                all,
                orderly,
                link_num: u8::MAX,
                reason: Reason(u32::MAX),
            };
            assert_eq!(decode_delete_link(&encoded(&msg)), Ok(msg));
        }
    }

    #[test]
    fn reserved_bits_ignored() {
        let mut buf = encoded(&SAMPLE);
        buf[2] = 0xFF;
        buf[3] |= !(FLAG_ALL | FLAG_ORDERLY);
        for byte in &mut buf[9..] {
            *byte = 0xA5;
        }
        assert_eq!(decode_delete_link(&buf), Ok(SAMPLE));
    }

    #[test]
    fn rejects_malformed() {
        let buf = encoded(&SAMPLE);
        assert_eq!(
            decode_delete_link(&buf[..MSG_LEN - 1]),
            Err(Error::Truncated)
        );
        let mut long = [0u8; MSG_LEN + 1];
        long[..MSG_LEN].copy_from_slice(&buf);
        assert_eq!(decode_delete_link(&long), Err(Error::TrailingBytes));
        let mut bad = buf;
        bad[0] = cdc::MSG_TYPE;
        assert_eq!(decode_delete_link(&bad), Err(Error::BadType(cdc::MSG_TYPE)));
        bad = buf;
        bad[1] = 45;
        assert_eq!(decode_delete_link(&bad), Err(Error::BadLength(45)));
        let mut short = [0u8; MSG_LEN - 1];
        assert_eq!(
            encode_delete_link(&SAMPLE, &mut short),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(short, [0; MSG_LEN - 1]);
    }

    /// A CDC message never passes for a DELETE LINK, nor the other way round: the first byte
    /// tells them apart.
    #[test]
    fn told_apart_from_cdc() {
        let mut cdc_buf = [0u8; cdc::MSG_LEN];
        let msg = cdc::Message {
            token: 1,
            ..cdc::Message::default()
        };
        assert_eq!(cdc::encode(&msg, &[], &mut cdc_buf), Ok(cdc::MSG_LEN));
        assert!(decode_delete_link(&cdc_buf).is_err());
        assert_eq!(
            cdc::decode(&encoded(&SAMPLE)).map(|_| ()),
            Err(cdc::Error::BadType(DELETE_LINK))
        );
    }

    /// Arbitrary bytes decode or fail, never panic; what decodes encodes back to the bytes
    /// with reserved bits cleared.
    #[test]
    fn arbitrary_bytes() {
        let mut rng = XorShift(0x11C0_DE1E);
        for _ in 0..2000 {
            let mut buf = [0u8; MSG_LEN + 2];
            for byte in &mut buf {
                // CAST: At most `u8::MAX`.
                *byte = rng.up_to(u8::MAX.into()) as u8;
            }
            if rng.up_to(1) == 0 {
                buf[0] = DELETE_LINK;
                // CAST: 44 fits.
                buf[1] = MSG_LEN as u8;
            }
            let len = MSG_LEN - 2 + rng.up_to(4) as usize;
            if let Ok(msg) = decode_delete_link(&buf[..len]) {
                let again = encoded(&msg);
                assert_eq!(again[..2], buf[..2]);
                assert_eq!(again[3], buf[3] & (FLAG_ALL | FLAG_ORDERLY));
                assert_eq!(again[4..9], buf[4..9]);
            }
        }
    }
}
