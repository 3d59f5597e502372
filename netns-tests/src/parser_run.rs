//! Frames of every class through the parser on a real veth: the check behind
//! the parser's netns test.
//!
//! A two-host rig (quiet: no kernel chatter on the link) gets `xdp_lb` on host
//! `b`'s interface; host `a` sends a known mix of frames — every packet class
//! and every malformed reason, built by [`crate::packets`] — with an `AF_PACKET`
//! socket, so VLAN tags and truncations travel byte for byte. The program's
//! counters must then equal the mix exactly. No service is configured, so the
//! load balancer passes every frame after counting it.

use std::{collections::BTreeMap, time::Duration};

use xdp_lb::{AttachMode, Counter, Datapath, ParseCounter, ProgramName};

use crate::{
    Error, HostKind, Result,
    packets::{self, Sample},
    raw_socket::RawSocket,
    topology::{Options, TwoHosts},
    wait::wait_for,
};

/// How long the counters may take to show every frame.
const SETTLE: Duration = Duration::from_secs(5);

/// Packets and bytes per parser slot.
pub type SlotCounts = BTreeMap<ParseCounter, Counter>;

/// What one run sent and what the program counted.
#[derive(Debug)]
pub struct ParserRun {
    /// The frames sent, in order.
    pub sent: Vec<Sample>,
    /// What the counters must read: the mix, summed per slot.
    pub expected: SlotCounts,
    /// What they read (slots with a nonzero count only).
    pub counted: SlotCounts,
    /// The program ran in native (driver) mode on the veth.
    pub native: bool,
}

impl ParserRun {
    /// True when every slot matches exactly.
    pub fn matches(&self) -> bool {
        self.expected == self.counted
    }
}

/// Sums `samples` per expected slot.
pub fn expected_counts(samples: &[Sample]) -> SlotCounts {
    let mut expected = SlotCounts::new();
    for sample in samples {
        let slot = expected.entry(sample.expect).or_default();
        slot.packets += 1;
        slot.bytes += sample.frame.len() as u64;
    }
    expected
}

/// The program's nonzero parser counters.
pub fn counted(datapath: &Datapath) -> Result<SlotCounts> {
    let stats = datapath.parse_stats().map_err(datapath_error)?;
    Ok(stats
        .iter()
        .filter(|(_, c)| c.packets != 0 || c.bytes != 0)
        .collect())
}

fn datapath_error(source: xdp_lb::Error) -> Error {
    Error::Datapath(Box::new(source))
}

/// Builds the rig, sends `copies` of every sample, and waits (bounded) until
/// the counters reach the mix's totals. Returns what was counted either way:
/// the caller decides whether a mismatch fails.
pub fn run(copies: usize) -> Result<ParserRun> {
    let hosts = TwoHosts::build(HostKind::Wire, &Options::default())?;
    let mut datapath = Datapath::load().map_err(datapath_error)?;
    let attachment = hosts.b.netns.attach_xdp(
        &hosts.b.dev,
        &mut datapath,
        ProgramName::XdpLb,
        AttachMode::Native,
    )?;
    let sent = packets::mix(copies);
    let sender = &hosts.a;
    sender
        .netns
        .run(|| -> std::io::Result<()> {
            let socket = RawSocket::open(&sender.dev)?;
            sent.iter()
                .try_for_each(|sample| socket.send(&sample.frame))
        })?
        .map_err(Error::io(format!(
            "sending the mix from {}",
            sender.netns.name()
        )))?;
    let expected = expected_counts(&sent);
    let total: u64 = expected.values().map(|c| c.packets).sum();
    // Wait until every frame has been counted (or the deadline passes), then
    // read once more: a frame counted twice or in a wrong slot shows up then.
    let _ = wait_for(SETTLE, "every sent frame counted", || {
        let stats = datapath.parse_stats().map_err(datapath_error)?;
        Ok((stats.total_packets() >= total).then_some(()))
    });
    let counted = counted(&datapath)?;
    Ok(ParserRun {
        sent,
        expected,
        counted,
        native: attachment.is_native(),
    })
}
