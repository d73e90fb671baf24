// SPDX-License-Identifier: GPL-2.0

//! CDC messages: cursor updates sent with RDMA SEND after data was written with RDMA WRITE.
//!
//! A CDC message tells the peer how far this side has produced into the peer's receive ring, how
//! far this side has consumed from its own receive ring, and how the connection is shutting down.
//! The layout mirrors stock SMC's `struct smc_cdc_msg` (44 bytes, integers big-endian, each cursor
//! 8 bytes with 2 leading reserved bytes):
//!
//! | offset | size | field                                                          |
//! |--------|------|----------------------------------------------------------------|
//! | 0      | 1    | type, `0xFE`                                                   |
//! | 1      | 1    | length, 44                                                     |
//! | 2      | 2    | sequence number                                                |
//! | 4      | 4    | connection token                                               |
//! | 8      | 2    | reserved                                                       |
//! | 10     | 2    | producer cursor wrap                                           |
//! | 12     | 4    | producer cursor count                                          |
//! | 16     | 2    | reserved                                                       |
//! | 18     | 2    | consumer cursor wrap                                           |
//! | 20     | 4    | consumer cursor count                                          |
//! | 24     | 1    | producer flags: `0x80` write blocked, `0x10` update requested  |
//! | 25     | 1    | connection state flags: `0x80` done writing, `0x40` closed,   |
//! |        |      | `0x20` aborted                                                 |
//! | 26     | 18   | reserved                                                       |
//!
//! Reserved bytes and undefined flag bits are sent as zero and ignored on receipt.
//!
//! rsmc extends the message with inline data: up to [`MAX_INLINE`] bytes of the stream may follow
//! the 44 bytes, and the length byte then counts them too. They are the last bytes before the
//! message's producer cursor; the receiver copies them into its ring itself. A small send so
//! takes one RDMA SEND instead of a WRITE and a SEND, half the packets and acknowledgements.
//!
//! Decoding checks the framing only: whether the cursors fit the ring is checked with
//! [`RingSize::check_peer_producer`] and [`RingSize::check_peer_consumer`].
//!
//! [`RingSize::check_peer_producer`]: super::ring::RingSize::check_peer_producer
//! [`RingSize::check_peer_consumer`]: super::ring::RingSize::check_peer_consumer

use super::ring::Cursor;

/// Type byte of a CDC message.
pub const MSG_TYPE: u8 = 0xFE;

/// Length of a CDC message without inline data.
pub const MSG_LEN: usize = 44;

/// Length of the longest message, the most the length byte can count.
pub const MAX_FRAME_LEN: usize = u8::MAX as usize;

/// Most bytes of inline data a message carries.
pub const MAX_INLINE: usize = MAX_FRAME_LEN - MSG_LEN;

/// Producer flag: the sender has data to write but no room in the receiver's ring.
const PROD_WRITE_BLOCKED: u8 = 0x80;
/// Producer flag: the sender asks the receiver for a consumer cursor update.
const PROD_CONS_UPDATE_REQUESTED: u8 = 0x10;
/// Connection state flag: the sender shut down writing; no more data follows.
const CONN_PEER_DONE_WRITING: u8 = 0x80;
/// Connection state flag: the sender closed the connection.
const CONN_PEER_CONN_CLOSED: u8 = 0x40;
/// Connection state flag: the sender aborted the connection.
const CONN_PEER_CONN_ABORT: u8 = 0x20;

/// Flags of a CDC message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// The sender has data to write but found the receiver's ring full.
    pub write_blocked: bool,
    /// The sender asks the receiver to report its consumer cursor.
    pub cons_update_requested: bool,
    /// The sender shut down writing: once the data up to the producer cursor is read, the
    /// receiver sees end of file.
    pub peer_done_writing: bool,
    /// The sender closed the connection.
    pub peer_conn_closed: bool,
    /// The sender aborted the connection.
    pub peer_conn_abort: bool,
}

/// A CDC message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Sequence number, incremented (modulo 2^16) for every message on a link; see
    /// [`seq_newer`].
    pub seq: u16,
    /// Connection token assigned in the CLC handshake; never zero.
    pub token: u32,
    /// How far the sender has written into the receiver's ring.
    pub prod: Cursor,
    /// How far the sender has read from its own ring.
    pub cons: Cursor,
    /// Flow control and shutdown flags.
    pub flags: Flags,
}

/// Why a CDC message could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The input is shorter than its length byte says, or than a message without data.
    Truncated,
    /// The input is longer than its length byte says.
    TrailingBytes,
    /// The output buffer is shorter than the message.
    BufferTooSmall,
    /// More inline data than [`MAX_INLINE`] bytes.
    DataTooLong,
    /// The type byte is not [`MSG_TYPE`]; carries the byte.
    BadType(u8),
    /// The length byte is less than [`MSG_LEN`]; carries the byte.
    BadLength(u8),
    /// The connection token is zero.
    ZeroToken,
}

/// Returns whether sequence number `a` is newer than `b`, allowing for wrap-around.
///
/// `a` is newer if it is 1 to 2^15 - 1 steps ahead of `b`. Numbers exactly 2^15 apart are
/// ambiguous; neither is newer than the other.
pub const fn seq_newer(a: u16, b: u16) -> bool {
    let ahead = a.wrapping_sub(b);
    ahead != 0 && ahead < 0x8000
}

/// Decodes the CDC message that fills `buf` exactly; returns it with its inline data.
pub fn decode(buf: &[u8]) -> Result<(Message, &[u8]), Error> {
    let msg = decode_header(buf)?;
    let len = usize::from(buf[1]);
    match buf.len() {
        n if n < len => Err(Error::Truncated),
        n if n > len => Err(Error::TrailingBytes),
        _ => Ok((msg, &buf[MSG_LEN..])),
    }
}

/// Decodes the message at the start of `buf`, without its inline data: how the sender reads
/// back a message it sent.
pub fn decode_header(buf: &[u8]) -> Result<Message, Error> {
    let b: &[u8; MSG_LEN] = buf
        .get(..MSG_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(Error::Truncated)?;
    if b[0] != MSG_TYPE {
        return Err(Error::BadType(b[0]));
    }
    if usize::from(b[1]) < MSG_LEN {
        return Err(Error::BadLength(b[1]));
    }
    let token = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    if token == 0 {
        return Err(Error::ZeroToken);
    }
    Ok(Message {
        seq: u16::from_be_bytes([b[2], b[3]]),
        token,
        prod: Cursor {
            wrap: u16::from_be_bytes([b[10], b[11]]),
            count: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        },
        cons: Cursor {
            wrap: u16::from_be_bytes([b[18], b[19]]),
            count: u32::from_be_bytes([b[20], b[21], b[22], b[23]]),
        },
        flags: Flags {
            write_blocked: b[24] & PROD_WRITE_BLOCKED != 0,
            cons_update_requested: b[24] & PROD_CONS_UPDATE_REQUESTED != 0,
            peer_done_writing: b[25] & CONN_PEER_DONE_WRITING != 0,
            peer_conn_closed: b[25] & CONN_PEER_CONN_CLOSED != 0,
            peer_conn_abort: b[25] & CONN_PEER_CONN_ABORT != 0,
        },
    })
}

/// Encodes `msg` followed by the inline `data` at the start of `buf`; returns the number of bytes
/// written, [`MSG_LEN`] plus those of `data`.
///
/// Fails without writing anything if the token is zero, `data` is longer than [`MAX_INLINE`] or
/// `buf` is too short.
pub fn encode(msg: &Message, data: &[u8], buf: &mut [u8]) -> Result<usize, Error> {
    if msg.token == 0 {
        return Err(Error::ZeroToken);
    }
    if data.len() > MAX_INLINE {
        return Err(Error::DataTooLong);
    }
    let len = MSG_LEN + data.len();
    let out = buf.get_mut(..len).ok_or(Error::BufferTooSmall)?;
    let mut b = [0u8; MSG_LEN];
    b[0] = MSG_TYPE;
    // Cannot truncate: at most `MAX_FRAME_LEN`.
    b[1] = len as u8;
    [b[2], b[3]] = msg.seq.to_be_bytes();
    [b[4], b[5], b[6], b[7]] = msg.token.to_be_bytes();
    [b[10], b[11]] = msg.prod.wrap.to_be_bytes();
    [b[12], b[13], b[14], b[15]] = msg.prod.count.to_be_bytes();
    [b[18], b[19]] = msg.cons.wrap.to_be_bytes();
    [b[20], b[21], b[22], b[23]] = msg.cons.count.to_be_bytes();
    b[24] = flag(msg.flags.write_blocked, PROD_WRITE_BLOCKED)
        | flag(msg.flags.cons_update_requested, PROD_CONS_UPDATE_REQUESTED);
    b[25] = flag(msg.flags.peer_done_writing, CONN_PEER_DONE_WRITING)
        | flag(msg.flags.peer_conn_closed, CONN_PEER_CONN_CLOSED)
        | flag(msg.flags.peer_conn_abort, CONN_PEER_CONN_ABORT);
    out[..MSG_LEN].copy_from_slice(&b);
    out[MSG_LEN..].copy_from_slice(data);
    Ok(len)
}

/// Returns `bit` if `set`, else 0.
const fn flag(set: bool, bit: u8) -> u8 {
    if set {
        bit
    } else {
        0
    }
}

#[cfg(any(test, CONFIG_KUNIT))]
#[cfg_attr(CONFIG_KUNIT, kernel::prelude::kunit_tests(rsmc_proto_cdc))]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            seq: 0xBEEF,
            token: 0x0102_0304,
            prod: Cursor {
                wrap: 0x0A0B,
                count: 0x000C_0D0E,
            },
            cons: Cursor {
                wrap: 0x1A1B,
                count: 0x001C_1D1E,
            },
            flags: Flags::default(),
        }
    }

    /// Decodes a message that must carry no inline data.
    fn decode_plain(buf: &[u8]) -> Result<Message, Error> {
        decode(buf).map(|(msg, data)| {
            assert!(data.is_empty());
            msg
        })
    }

    fn encoded(msg: &Message) -> [u8; MSG_LEN] {
        let mut buf = [0u8; MSG_LEN];
        if encode(msg, &[], &mut buf).is_err() {
            buf = [0; MSG_LEN];
        }
        buf
    }

    #[test]
    fn wire_layout() {
        let msg = Message {
            flags: Flags {
                write_blocked: true,
                peer_done_writing: true,
                ..Flags::default()
            },
            ..sample()
        };
        let mut expected = [0u8; MSG_LEN];
        let head: [u8; 26] = [
            0xFE, 44, 0xBE, 0xEF, 1, 2, 3, 4, // type, length, sequence, token
            0, 0, 0x0A, 0x0B, 0x00, 0x0C, 0x0D, 0x0E, // producer cursor
            0, 0, 0x1A, 0x1B, 0x00, 0x1C, 0x1D, 0x1E, // consumer cursor
            0x80, 0x80, // flags
        ];
        for (dst, src) in expected.iter_mut().zip(head) {
            *dst = src;
        }
        assert_eq!(encoded(&msg), expected);
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; MSG_LEN + 8];
        let msg = sample();
        assert_eq!(encode(&msg, &[], &mut buf), Ok(MSG_LEN));
        assert_eq!(decode_plain(&buf[..MSG_LEN]), Ok(msg));
        let extremes = Message {
            seq: u16::MAX,
            token: u32::MAX,
            prod: Cursor {
                wrap: u16::MAX,
                count: u32::MAX,
            },
            cons: Cursor::ZERO,
            flags: Flags::default(),
        };
        assert_eq!(decode_plain(&encoded(&extremes)), Ok(extremes));
    }

    #[test]
    fn every_flag_round_trips_alone() {
        let all: [(Flags, usize, u8); 5] = [
            (
                Flags {
                    write_blocked: true,
                    ..Flags::default()
                },
                24,
                0x80,
            ),
            (
                Flags {
                    cons_update_requested: true,
                    ..Flags::default()
                },
                24,
                0x10,
            ),
            (
                Flags {
                    peer_done_writing: true,
                    ..Flags::default()
                },
                25,
                0x80,
            ),
            (
                Flags {
                    peer_conn_closed: true,
                    ..Flags::default()
                },
                25,
                0x40,
            ),
            (
                Flags {
                    peer_conn_abort: true,
                    ..Flags::default()
                },
                25,
                0x20,
            ),
        ];
        let mut combined = [0u8; 2];
        for (flags, at, bit) in all {
            let msg = Message { flags, ..sample() };
            let bytes = encoded(&msg);
            assert_eq!(bytes[at], bit);
            assert_eq!(bytes[49 - at], 0);
            assert_eq!(decode_plain(&bytes), Ok(msg));
            combined[at - 24] |= bit;
        }
        let every = Message {
            flags: Flags {
                write_blocked: true,
                cons_update_requested: true,
                peer_done_writing: true,
                peer_conn_closed: true,
                peer_conn_abort: true,
            },
            ..sample()
        };
        let bytes = encoded(&every);
        assert_eq!([bytes[24], bytes[25]], combined);
        assert_eq!(decode_plain(&bytes), Ok(every));
    }

    #[test]
    fn reserved_bits_ignored() {
        let mut bytes = encoded(&sample());
        for at in [8, 9, 16, 17, 26, 30, 43] {
            bytes[at] = 0xFF;
        }
        bytes[24] = 0x6F;
        bytes[25] = 0x1F;
        assert_eq!(decode_plain(&bytes), Ok(sample()));
    }

    #[test]
    fn rejects_malformed() {
        let good = encoded(&sample());
        for len in 0..MSG_LEN {
            assert_eq!(decode_plain(&good[..len]), Err(Error::Truncated));
        }
        let mut long = [0u8; MSG_LEN + 1];
        for (dst, src) in long.iter_mut().zip(good) {
            *dst = src;
        }
        assert_eq!(decode_plain(&long), Err(Error::TrailingBytes));

        let mut bad = good;
        bad[0] = 0xFD;
        assert_eq!(decode_plain(&bad), Err(Error::BadType(0xFD)));
        // A CLC eyecatcher is not a CDC message.
        bad[0] = 0xE2;
        assert_eq!(decode_plain(&bad), Err(Error::BadType(0xE2)));

        let mut bad = good;
        bad[1] = 43;
        assert_eq!(decode_plain(&bad), Err(Error::BadLength(43)));
        bad[1] = 0;
        assert_eq!(decode_plain(&bad), Err(Error::BadLength(0)));

        let mut bad = good;
        [bad[4], bad[5], bad[6], bad[7]] = [0; 4];
        assert_eq!(decode_plain(&bad), Err(Error::ZeroToken));
    }

    #[test]
    fn encode_checks() {
        let mut buf = [0xAAu8; MSG_LEN];
        let no_token = Message {
            token: 0,
            ..sample()
        };
        assert_eq!(encode(&no_token, &[], &mut buf), Err(Error::ZeroToken));
        assert_eq!(
            encode(&sample(), &[], &mut buf[..MSG_LEN - 1]),
            Err(Error::BufferTooSmall)
        );
        assert!(buf.iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn sequence_numbers_wrap() {
        assert!(seq_newer(1, 0));
        assert!(!seq_newer(0, 1));
        assert!(!seq_newer(5, 5));
        assert!(seq_newer(0, u16::MAX));
        assert!(!seq_newer(u16::MAX, 0));
        assert!(seq_newer(10, 0xFFF0));
        assert!(seq_newer(0x7FFF, 0));
        assert!(!seq_newer(0x8000, 0));
        assert!(!seq_newer(0, 0x8000));
        assert!(seq_newer(0x8001, 2));
        let mut seq = 0xFF00u16;
        for _ in 0..0x200 {
            let next = seq.wrapping_add(1);
            assert!(seq_newer(next, seq));
            assert!(!seq_newer(seq, next));
            seq = next;
        }
    }

    /// The header decodes alone, whatever inline data follows it, or none of it.
    #[test]
    fn header_decodes_without_its_data() {
        let msg = sample();
        let mut buf = [0u8; MSG_LEN + 16];
        assert_eq!(encode(&msg, &[7; 16], &mut buf), Ok(MSG_LEN + 16));
        assert_eq!(decode_header(&buf), Ok(msg));
        assert_eq!(decode_header(&buf[..MSG_LEN]), Ok(msg));
        assert_eq!(decode_header(&buf[..MSG_LEN - 1]), Err(Error::Truncated));
        buf[0] = 0x04;
        assert_eq!(decode_header(&buf), Err(Error::BadType(0x04)));
    }

    #[test]
    fn inline_data_round_trips() {
        let mut data = [0u8; MAX_INLINE];
        for (i, byte) in data.iter_mut().enumerate() {
            // CAST: Wraps on purpose, any pattern will do.
            *byte = i as u8 ^ 0x5A;
        }
        let mut buf = [0u8; MAX_FRAME_LEN + 1];
        for len in [0, 1, 7, MAX_INLINE - 1, MAX_INLINE] {
            let frame = MSG_LEN + len;
            assert_eq!(encode(&sample(), &data[..len], &mut buf), Ok(frame));
            // CAST: At most `MAX_FRAME_LEN`.
            assert_eq!(buf[1], frame as u8);
            assert_eq!(decode(&buf[..frame]), Ok((sample(), &data[..len])));
            assert_eq!(decode(&buf[..frame - 1]), Err(Error::Truncated));
            assert_eq!(decode(&buf[..frame + 1]), Err(Error::TrailingBytes));
        }
    }

    #[test]
    fn inline_data_checked_before_writing() {
        let data = [1u8; MAX_INLINE + 1];
        let mut buf = [0xAAu8; MAX_FRAME_LEN + 1];
        assert_eq!(encode(&sample(), &data, &mut buf), Err(Error::DataTooLong));
        assert_eq!(
            encode(&sample(), &data[..9], &mut buf[..MSG_LEN + 8]),
            Err(Error::BufferTooSmall)
        );
        assert!(buf.iter().all(|&b| b == 0xAA));
    }
}
