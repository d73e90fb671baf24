// SPDX-License-Identifier: GPL-2.0

//! Feeds arbitrary bytes to every decoder of bytes from the network (CDC, CLC, LLC): none may
//! panic, and whatever one accepts must encode back into bytes that decode to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rsmc_proto::{cdc, clc, llc};

fuzz_target!(|data: &[u8]| {
    let header = cdc::decode_header(data);
    if let Ok((msg, inline)) = cdc::decode(data) {
        assert_eq!(header, Ok(msg));
        let mut buf = [0; cdc::MAX_FRAME_LEN];
        let len = cdc::encode(&msg, inline, &mut buf).expect("an accepted CDC message encodes");
        assert_eq!(len, data.len());
        assert_eq!(cdc::decode(&buf[..len]), Ok((msg, inline)));
    }

    match (clc::peek_header(data), clc::decode(data)) {
        (Ok(header), Ok(msg)) => {
            assert_eq!(header.message_type, msg.message_type());
            assert_eq!(header.len, data.len());
            let mut buf = [0; clc::MAX_MSG_LEN];
            let len = clc::encode(&msg, &mut buf).expect("an accepted CLC message encodes");
            assert_eq!(len, data.len());
            assert_eq!(clc::decode(&buf[..len]), Ok(msg));
        }
        (Ok(header), Err(_)) => assert!(header.len <= clc::MAX_MSG_LEN),
        (Err(_), Ok(_)) => panic!("a CLC message decoded without a valid header"),
        (Err(_), Err(_)) => {}
    }

    if let Ok(msg) = llc::decode_delete_link(data) {
        assert_eq!(data.len(), llc::MSG_LEN);
        let mut buf = [0; llc::MSG_LEN];
        let len = llc::encode_delete_link(&msg, &mut buf).expect("a DELETE LINK encodes");
        assert_eq!(llc::decode_delete_link(&buf[..len]), Ok(msg));
    }
});
