// SPDX-License-Identifier: GPL-2.0

//! The per-device NAPI poller that reaps RDMA completions.

use crate::ffi::napi::NapiPoll;
use kernel::sync::atomic::{Atomic, Relaxed};

/// Completion-reaping state of one RDMA device, run from its NAPI instance.
pub(crate) struct Poller {
    polls: Atomic<u64>,
}

impl Poller {
    /// A poller with no completion queues attached yet.
    pub(crate) fn new() -> Self {
        Self {
            polls: Atomic::new(0),
        }
    }

    /// How many times the NAPI instance has polled (softirq and busy poll).
    pub(crate) fn polls(&self) -> u64 {
        self.polls.load(Relaxed)
    }
}

impl NapiPoll for Poller {
    fn poll(&self, _budget: i32) -> i32 {
        self.polls.add(1, Relaxed);
        // No completion queue feeds this poller until connections exist, so there is never
        // work to report.
        0
    }
}

#[kernel::prelude::kunit_tests(rsmc_napi)]
mod tests {
    use super::*;
    use crate::ffi::napi::{min_napi_id, Napi};
    use kernel::{prelude::*, sync::Arc};

    #[test]
    fn enabled_napi_has_valid_id() -> Result {
        let napi = Napi::new(Arc::new(Poller::new(), GFP_KERNEL)?)?;
        assert!(napi.id() >= min_napi_id());
        Ok(())
    }

    #[test]
    fn napi_ids_are_distinct() -> Result {
        let a = Napi::new(Arc::new(Poller::new(), GFP_KERNEL)?)?;
        let b = Napi::new(Arc::new(Poller::new(), GFP_KERNEL)?)?;
        assert!(a.id() != b.id());
        Ok(())
    }

    #[test]
    fn schedule_runs_the_poller() -> Result {
        let napi = Napi::new(Arc::new(Poller::new(), GFP_KERNEL)?)?;
        napi.schedule();
        // The softirq runs on this CPU's next bottom-half exit; give it up to a second.
        let mut waited_ms = 0;
        while napi.poller().polls() == 0 && waited_ms < 1000 {
            kernel::time::delay::fsleep(kernel::time::Delta::from_millis(1));
            waited_ms += 1;
        }
        assert!(napi.poller().polls() >= 1);
        Ok(())
    }
}
