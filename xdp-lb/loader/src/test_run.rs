//! `BPF_PROG_TEST_RUN`: running a program on a packet without a NIC.
use std::time::Duration;

use aya::programs::{TestRun as _, TestRunOptions};

use crate::{Datapath, Error, ProgramName};

/// `sizeof(struct __sk_buff)`, and the offsets of its `mark` and `ifindex`.
const SKB_CTX_LEN: usize = 192;
const SKB_MARK: usize = 8;
const SKB_IFINDEX: usize = 40;

/// Room for the output packet: the input plus headroom for encapsulation.
const OUTPUT_SLACK: usize = 256;

/// The result of one test run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The program's return value (an `xdp_action`, or a TC action for the
    /// TC programs).
    pub action: u32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
    /// The kernel-measured duration (per run, averaged by the kernel over `repeat`).
    pub duration: Duration,
}

impl Datapath {
    /// Runs `program` on `packet` once (`repeat` = 1) and returns the verdict and
    /// the output packet.
    pub fn test_run(&self, program: ProgramName, packet: &[u8]) -> Result<TestRunOutput, Error> {
        self.test_run_repeat(program, packet, 1)
    }

    /// Runs `program` on `packet` `repeat` times in the kernel. With `repeat` > 1
    /// the kernel does not restore the packet between runs: only use it for
    /// programs that do not rewrite (DESIGN.md, "Measuring ns/packet").
    pub fn test_run_repeat(
        &self,
        program: ProgramName,
        packet: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutput, Error> {
        self.run(program, packet, repeat, None, 0)
    }

    /// Runs `program` once on `packet` as if it arrived on interface
    /// `ingress_ifindex` of the calling thread's network namespace: the FIB
    /// lookup then routes from there, and (for XDP) a next hop out of the
    /// same interface is XDP_TX. Nothing is transmitted: a redirect is only a
    /// verdict.
    pub fn test_run_on(
        &self,
        program: ProgramName,
        packet: &[u8],
        ingress_ifindex: u32,
    ) -> Result<TestRunOutput, Error> {
        self.run(program, packet, 1, Some(ingress_ifindex), 0)
    }

    /// As [`Datapath::test_run_on`], for a TC program, the socket buffer
    /// carrying `mark` (`SO_MARK` of the socket that sent it): what
    /// `tc_probe_encap` looks at.
    pub fn test_run_marked(
        &self,
        program: ProgramName,
        packet: &[u8],
        ifindex: u32,
        mark: u32,
    ) -> Result<TestRunOutput, Error> {
        self.run(program, packet, 1, Some(ifindex), mark)
    }

    fn run(
        &self,
        program: ProgramName,
        packet: &[u8],
        repeat: u32,
        ingress_ifindex: Option<u32>,
        mark: u32,
    ) -> Result<TestRunOutput, Error> {
        let mut out = vec![0u8; packet.len() + OUTPUT_SLACK];
        // `struct xdp_md`: data (metadata length) 0, data_end = the packet's
        // length, as BPF_PROG_TEST_RUN requires; then the ingress interface.
        let ctx = ingress_ifindex.map(|ifindex| {
            let len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
            let fields = [0, len, 0, ifindex, 0, 0];
            fields
                .iter()
                .flat_map(|f: &u32| f.to_ne_bytes())
                .collect::<Vec<u8>>()
        });
        let options = TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            ctx_in: ctx.as_deref(),
            repeat,
            ..TestRunOptions::default()
        };
        let result = if program.is_tc() {
            // An `__sk_buff` context: the kernel takes only a few of its
            // fields, `ifindex` (the device the packet is on) among them.
            let skb = ingress_ifindex.map(|ifindex| {
                let mut skb = [0u8; SKB_CTX_LEN];
                skb[SKB_MARK..SKB_MARK + 4].copy_from_slice(&mark.to_ne_bytes());
                skb[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
                skb
            });
            crate::pods::classifier(&self.ebpf, program)?.test_run(TestRunOptions {
                ctx_in: skb.as_ref().map(|s| &s[..]),
                ..options
            })
        } else {
            self.program(program)?.test_run(options)
        }
        .map_err(|source| Error::TestRun {
            program: program.as_str(),
            source,
        })?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRunOutput {
            action: result.return_value,
            packet: out,
            duration: result.duration,
        })
    }
}
