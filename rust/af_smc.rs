// SPDX-License-Identifier: GPL-2.0

//! The `AF_SMC` socket family (`socket(AF_SMC, SOCK_STREAM, 0 | 1)`).

use crate::ffi::sock::{FamilyRegistration, FamilyTables, SocketFamily};
use kernel::{prelude::*, ModuleMetadata};

/// `AF_SMC` from `include/linux/socket.h`.
const AF_SMC: i32 = 43;
/// `SMCPROTO_SMC`: the socket's internal TCP connection is IPv4.
const SMCPROTO_SMC: i32 = 0;
/// `SMCPROTO_SMC6`: the socket's internal TCP connection is IPv6.
const SMCPROTO_SMC6: i32 = 1;
/// `SOCK_STREAM` from `include/linux/net.h`.
const SOCK_STREAM: i32 = 1;

struct AfSmc;

static TABLES: FamilyTables =
    FamilyTables::new::<AfSmc>(&<crate::Rsmc as ModuleMetadata>::THIS_MODULE, "RSMC");

impl SocketFamily for AfSmc {
    const FAMILY: i32 = AF_SMC;
    const TABLES: &'static FamilyTables = &TABLES;

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
}

/// Registers `AF_SMC`; fails with a clear message if another module (stock `smc.ko`) has it.
pub(crate) fn register() -> Result<FamilyRegistration> {
    FamilyRegistration::new::<AfSmc>().inspect_err(|err| {
        if *err == EEXIST {
            pr_err!("AF_SMC is already registered (is smc.ko loaded?): unload it first\n");
        }
    })
}
