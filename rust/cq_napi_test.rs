// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `rsmc_cq_napi`: completions on the completion queues of the devices rsmc tracks
//! (`rxe_a` and `rxe_b`, see `ib`) are reaped by the devices' NAPI instances.
//!
//! The suite runs after module init, so the module's RDMA client already has both devices;
//! the tests build queue pairs on their PDs and CQs, register a completion sink on each
//! poller, and never poll a CQ themselves.
//!
//! A queue pair's flushed work requests may complete after its sink's registration went; they
//! must not reach a sink registered meanwhile (as a link torn down and the next link set up).
//!
//! As in `rsmc_verbs`, a failed assertion ends a test without running destructors, so the RDMA
//! work happens in a helper that releases everything (queue pairs first, then the sinks'
//! registrations) before returning what it observed, and the test asserts after.

#[kernel::prelude::kunit_tests(rsmc_cq_napi)]
mod tests {
    use crate::{
        ffi::{
            ib::{v4_mapped, RoceGid},
            verbs::{
                Access, DmaBuffer, DmaDirection, Qp, RemoteQp, WcOpcode, WcStatus, WorkCompletion,
            },
        },
        ib::{self, Device},
        poller::{CompletionSink, SinkRegistration},
    };
    use kernel::{
        prelude::*,
        sync::{new_spinlock_irq, Arc, ArcBorrow, SpinLockIrq},
        time::{delay::fsleep, Delta, Instant, Monotonic},
    };

    /// What A sends to B in each round.
    const MESSAGE: &[u8] = b"rsmc: reaped by NAPI";
    /// SEND-and-receive rounds; each must be reaped before the next starts, so the second
    /// one needs the queues re-armed by the first poll.
    const ROUNDS: usize = 2;
    /// Send and receive queue size of each queue pair.
    const QUEUE_DEPTH: u32 = 4;
    /// First packet sequence numbers of A and B (24 bits).
    const PSN_A: u32 = 0x00c1c1;
    const PSN_B: u32 = 0x00d2d2;
    /// How long completions may take to be reaped.
    const WAIT_MS: i64 = 5000;

    /// The sink-local ids of the work requests of round 0; round `r` adds `r`.
    const WR_SEND: u64 = 0x5e00;
    const WR_RECV: u64 = 0x2e00;

    /// A completion as a sink saw it.
    #[derive(Clone, Copy)]
    struct Seen {
        wr_id: u64,
        opcode: WcOpcode,
        status: WcStatus,
    }

    /// Records the completions the poller hands it.
    #[pin_data]
    struct RecordingSink {
        /// Reserved for every expected completion up front, so recording never allocates.
        #[pin]
        seen: SpinLockIrq<KVec<Seen>>,
    }

    impl RecordingSink {
        fn new() -> Result<Arc<Self>> {
            let seen = KVec::with_capacity(ROUNDS, GFP_KERNEL)?;
            Arc::pin_init(
                pin_init!(Self {
                    seen <- new_spinlock_irq!(seen),
                }),
                GFP_KERNEL,
            )
        }

        fn count(&self) -> usize {
            self.seen.lock().len()
        }

        /// A copy of what was recorded.
        fn seen(&self) -> Result<KVec<Seen>> {
            let mut copy = KVec::with_capacity(ROUNDS, GFP_KERNEL)?;
            copy.extend_from_slice(&self.seen.lock(), GFP_ATOMIC)?;
            Ok(copy)
        }
    }

    impl CompletionSink for RecordingSink {
        fn complete(self: ArcBorrow<'_, Self>, wc: &WorkCompletion) {
            // Beyond the reserved capacity (unexpected completions) this may fail to allocate
            // in the poll: a completion missing from the record then fails the test.
            let _ = self.seen.lock().push(
                Seen {
                    wr_id: wc.wr_id(),
                    opcode: wc.opcode(),
                    status: wc.status(),
                },
                GFP_ATOMIC,
            );
        }
    }

    /// The counters of a device's poller.
    #[derive(Clone, Copy)]
    struct Counters {
        cq_events: u64,
        polls: u64,
        completions: u64,
    }

    impl Counters {
        fn of(device: &Device) -> Self {
            let poller = device.poller();
            Self {
                cq_events: poller.cq_events(),
                polls: poller.polls(),
                completions: poller.completions(),
            }
        }
    }

    /// One host: a queue pair on a tracked device's PD and CQ, and a sink for its completions.
    /// Dropped in field order: the queue pair (flushing what is outstanding into the sink),
    /// the registration, then the rest.
    struct Host {
        qp: Qp,
        registration: SinkRegistration,
        sink: Arc<RecordingSink>,
        gid: RoceGid,
        device: Arc<Device>,
    }

    impl Host {
        fn new(name: &str, addr: [u8; 4]) -> Result<Self> {
            let device = ib::device_by_name(name).ok_or(ENODEV)?;
            let gid = device.registered().find_roce_v2_gid(v4_mapped(addr))?;
            let sink = RecordingSink::new()?;
            let registration = device.poller().register_sink(sink.clone())?;
            let cq = device.poller().cq();
            let qp = Qp::new(device.pd(), cq, cq, QUEUE_DEPTH, QUEUE_DEPTH)?;
            Ok(Self {
                qp,
                registration,
                sink,
                gid,
                device,
            })
        }

        /// What the peer's queue pair needs to connect to this one.
        fn remote(&self, psn: u32) -> RemoteQp {
            RemoteQp {
                gid: self.gid.gid,
                mac: self.gid.mac,
                qpn: self.qp.qp_num(),
                psn,
            }
        }

        /// A buffer of `len` bytes the queue pair may use.
        fn buffer(&mut self, len: usize, dir: DmaDirection) -> Result<Arc<DmaBuffer>> {
            let buf = DmaBuffer::new(self.device.registered(), len, dir)?;
            self.qp.attach(buf.clone())?;
            Ok(buf)
        }
    }

    /// Both hosts, their queue pairs connected to each other (INIT, RTR, RTS both ways).
    fn connect() -> Result<(Host, Host)> {
        let a = Host::new("rxe_a", [192, 0, 2, 1])?;
        let b = Host::new("rxe_b", [192, 0, 2, 2])?;
        let mtu = a
            .device
            .registered()
            .active_mtu(a.gid.port)?
            .path_with(b.device.registered().active_mtu(b.gid.port)?);
        for (local, local_psn, peer, peer_psn) in [(&a, PSN_A, &b, PSN_B), (&b, PSN_B, &a, PSN_A)] {
            let port = local.gid.port;
            local.qp.modify_to_init(port, Access::LOCAL_WRITE)?;
            local
                .qp
                .modify_to_rtr(port, local.gid.index, &peer.remote(peer_psn), mtu)?;
            local.qp.modify_to_rts(local_psn)?;
        }
        Ok((a, b))
    }

    /// Waits up to `WAIT_MS` for `done` to hold; returns whether it does.
    fn wait_for(mut done: impl FnMut() -> bool) -> bool {
        let start = Instant::<Monotonic>::now();
        while !done() {
            if start.elapsed() > Delta::from_millis(WAIT_MS) {
                return done();
            }
            fsleep(Delta::from_millis(1));
        }
        true
    }

    /// What [`send_rounds`] observed.
    struct Outcome {
        /// The counters of A's and B's devices before the first work request and after the
        /// last completion was seen.
        before: (Counters, Counters),
        after: (Counters, Counters),
        /// What A's and B's sinks saw, and the `wr_id`s they should have seen.
        sent: KVec<Seen>,
        received: KVec<Seen>,
        send_wr_ids: [u64; ROUNDS],
        recv_wr_ids: [u64; ROUNDS],
        /// What B received last.
        message: [u8; MESSAGE.len()],
    }

    /// In each round B posts a receive and A a signaled SEND; both completions must reach the
    /// sinks through the NAPI pollers before the next round.
    fn send_rounds() -> Result<Outcome> {
        let (mut a, mut b) = connect()?;
        let inbox = b.buffer(MESSAGE.len(), DmaDirection::FromDevice)?;
        let outbox = a.buffer(MESSAGE.len(), DmaDirection::ToDevice)?;
        outbox.write(0, MESSAGE)?;
        let lkey_a = a.device.pd().local_dma_lkey();
        let lkey_b = b.device.pd().local_dma_lkey();
        let mut send_wr_ids = [0; ROUNDS];
        let mut recv_wr_ids = [0; ROUNDS];

        let before = (Counters::of(&a.device), Counters::of(&b.device));
        for round in 0..ROUNDS {
            recv_wr_ids[round] = b.registration.wr_id(WR_RECV + round as u64);
            send_wr_ids[round] = a.registration.wr_id(WR_SEND + round as u64);
            b.qp.post_recv(recv_wr_ids[round], &inbox.sge(0, MESSAGE.len(), lkey_b)?)?;
            a.qp.post_send(
                send_wr_ids[round],
                &outbox.sge(0, MESSAGE.len(), lkey_a)?,
                true,
            )?;
            if !wait_for(|| a.sink.count() > round && b.sink.count() > round) {
                pr_err!(
                    "rsmc_cq_napi: round {round}: A saw {}, B saw {} completions in {WAIT_MS} ms\n",
                    a.sink.count(),
                    b.sink.count()
                );
                return Err(ETIMEDOUT);
            }
        }
        let after = (Counters::of(&a.device), Counters::of(&b.device));

        let mut message = [0; MESSAGE.len()];
        inbox.read(0, &mut message)?;
        Ok(Outcome {
            before,
            after,
            sent: a.sink.seen()?,
            received: b.sink.seen()?,
            send_wr_ids,
            recv_wr_ids,
            message,
        })
    }

    /// Receives a queue pair has posted when its sink's registration goes, and a new sink is
    /// registered; then the queue pair is destroyed, flushing them. Returns how many of them
    /// the device reaped, and how many reached the new sink.
    fn flush_after_next_registration() -> Result<(u64, usize)> {
        let mut old = Host::new("rxe_a", [192, 0, 2, 1])?;
        let inbox = old.buffer(MESSAGE.len(), DmaDirection::FromDevice)?;
        let lkey = old.device.pd().local_dma_lkey();
        old.qp.modify_to_init(old.gid.port, Access::LOCAL_WRITE)?;
        for slot in 0..QUEUE_DEPTH {
            let wr_id = old.registration.wr_id(WR_RECV + u64::from(slot));
            old.qp
                .post_recv(wr_id, &inbox.sge(0, MESSAGE.len(), lkey)?)?;
        }
        let Host {
            qp,
            registration,
            device,
            ..
        } = old;
        drop(registration);
        let next = RecordingSink::new()?;
        let next_registration = device.poller().register_sink(next.clone())?;
        let before = device.poller().completions();
        drop(qp);
        let all = u64::from(QUEUE_DEPTH);
        wait_for(|| device.poller().completions() - before >= all);
        let reaped = device.poller().completions() - before;
        drop(next_registration);
        Ok((reaped, next.count()))
    }

    #[test]
    fn flushed_work_skips_the_next_sink() -> Result {
        let (reaped, misdelivered) = flush_after_next_registration()?;
        assert!(reaped >= u64::from(QUEUE_DEPTH));
        assert_eq!(misdelivered, 0);
        Ok(())
    }

    #[test]
    fn napi_reaps_device_completions() -> Result {
        let outcome = send_rounds()?;

        for (before, after) in [
            (outcome.before.0, outcome.after.0),
            (outcome.before.1, outcome.after.1),
        ] {
            assert!(after.cq_events > before.cq_events);
            assert!(after.polls > before.polls);
            assert_eq!(after.completions - before.completions, ROUNDS as u64);
        }

        assert_eq!(outcome.sent.len(), ROUNDS);
        for (seen, &wr_id) in outcome.sent.iter().zip(outcome.send_wr_ids.iter()) {
            assert_eq!(seen.wr_id, wr_id);
            assert_eq!(seen.opcode, WcOpcode::Send);
            assert!(seen.status == WcStatus::SUCCESS);
        }
        assert_eq!(outcome.received.len(), ROUNDS);
        for (seen, &wr_id) in outcome.received.iter().zip(outcome.recv_wr_ids.iter()) {
            assert_eq!(seen.wr_id, wr_id);
            assert_eq!(seen.opcode, WcOpcode::Recv);
            assert!(seen.status == WcStatus::SUCCESS);
        }
        assert!(outcome.message == *MESSAGE);
        Ok(())
    }
}
