//! Checking what the programs did: verdicts, output frames and counters.
//!
//! A figure is only reported for a case whose every run did what the case
//! says: the right XDP action from every call, the right frame out (the whole
//! frame, checksums included, for run 0; every byte but the checksums for the
//! last rotated run), and counters that moved by exactly the number of runs.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::Context as _;
use xdp_lb::{CtEvent, CtStats, Datapath, Simulation, Verdict, VerdictStats};

use super::{
    cases::{Case, Clients, Expect, Kind},
    fixture::{backend_id, backend_mac},
    frame::{
        Headers, Rewrite, encapsulated, ensure_frame, flow_of, same_but_checksums, translated,
    },
    netns::{DOWN_MAC, GATEWAY_MAC, Interfaces, UP_MAC},
};

pub(crate) const XDP_PASS: u32 = 2;
pub(crate) const XDP_REDIRECT: u32 = 4;

/// The XDP action every frame of the case must get. Translated frames leave
/// through another interface than they came in by (test runs without a context
/// arrive on `lo`), hence a redirect.
pub(crate) fn action(case: &Case) -> u32 {
    match case.expect {
        Expect::Pass => XDP_PASS,
        Expect::Dnat | Expect::Reply { .. } | Expect::Encapsulated { .. } => XDP_REDIRECT,
    }
}

/// The counters a case moves, read before and after.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    verdicts: VerdictStats,
    ct: CtStats,
    floor: u64,
}

impl Snapshot {
    pub(crate) fn take(dp: &Datapath) -> anyhow::Result<Self> {
        Ok(Self {
            verdicts: dp.verdict_stats()?,
            ct: dp.ct_stats()?,
            floor: dp.floor_stats()?.packets,
        })
    }

    fn verdict(&self, before: &Self, v: Verdict) -> u64 {
        self.verdicts.get(v).packets - before.verdicts.get(v).packets
    }

    fn ct_event(&self, before: &Self, e: CtEvent) -> u64 {
        self.ct.get(e).packets - before.ct.get(e).packets
    }

    fn deltas(&self, before: &Self) -> String {
        let verdicts = self
            .verdicts
            .iter()
            .map(|(v, c)| (v.name(), c.packets - before.verdicts.get(v).packets))
            .filter(|(_, d)| *d > 0);
        let ct = self
            .ct
            .iter()
            .map(|(e, c)| (e.name(), c.packets - before.ct.get(e).packets))
            .filter(|(_, d)| *d > 0);
        let floor = ("floor", self.floor - before.floor);
        verdicts
            .chain(ct)
            .chain([floor])
            .map(|(name, d)| format!("{name} +{d}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks that exactly `runs` runs of a `kind` case happened since `before`:
    /// each counted once under its verdict and its conntrack event, and nothing
    /// else counted (no expiry, no insert failure, no re-selection).
    pub(crate) fn ensure_counted(
        &self,
        before: &Self,
        kind: Kind,
        runs: u64,
    ) -> anyhow::Result<()> {
        let (verdict, event) = match kind {
            Kind::Floor => (None, None),
            Kind::NonVipPass => (Some(Verdict::PassNotFrontend), None),
            Kind::NewTcpFlow | Kind::NewTcpFlowWarm => {
                (Some(Verdict::ForwardToBackend), Some(CtEvent::Created))
            }
            Kind::ConntrackHit | Kind::Udp => (Some(Verdict::ForwardToBackend), Some(CtEvent::Hit)),
            Kind::Reply => (Some(Verdict::ForwardReply), Some(CtEvent::ReplyHit)),
            Kind::DsrNewTcpFlow => (Some(Verdict::ForwardEncapsulated), Some(CtEvent::Created)),
            Kind::DsrConntrackHit => (Some(Verdict::ForwardEncapsulated), Some(CtEvent::Hit)),
        };
        let verdicts = self.verdicts.total_packets() - before.verdicts.total_packets();
        let events = self.ct.total_packets() - before.ct.total_packets();
        let floor = self.floor - before.floor;
        let ok = match verdict {
            Some(v) => self.verdict(before, v) == runs && verdicts == runs && floor == 0,
            None => verdicts == 0 && floor == runs,
        } && match event {
            Some(e) => self.ct_event(before, e) == runs && events == runs,
            None => events == 0,
        };
        anyhow::ensure!(
            ok,
            "{}: {runs} runs should count {} and {} once each; counted {}",
            kind.label(),
            verdict.map_or("floor", Verdict::name),
            event.map_or("no conntrack event", CtEvent::name),
            self.deltas(before)
        );
        Ok(())
    }

    /// Checks that `flows` flows were created since `before` as new flows of
    /// `kind` (NAT or DSR), and nothing else.
    pub(crate) fn ensure_created(
        &self,
        before: &Self,
        kind: Kind,
        flows: u64,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(kind.is_new_flow(), "{} creates no flows", kind.label());
        self.ensure_counted(before, kind, flows)
    }
}

/// Where the datapath must send `input` (a frame of `case`, rotated or not):
/// the frame it must put out, checksums left as in `input`.
pub(crate) fn expected_output(dp: &Datapath, case: &Case, input: &[u8]) -> anyhow::Result<Vec<u8>> {
    match &case.expect {
        Expect::Pass => Ok(input.to_vec()),
        Expect::Dnat => {
            let (id, addr) = backend_for(dp, input)?;
            Ok(translated(
                input,
                Rewrite::Destination,
                addr,
                DOWN_MAC,
                backend_mac(id),
            ))
        }
        Expect::Reply { frontends } => {
            let client = flow_of(input)?.dst;
            let first = case.headers.dst.ip();
            let k = client_index(client, *first)?;
            let frontend = frontends
                .get(k % frontends.len())
                .context("reply client beyond the tracked flows")?;
            Ok(translated(
                input,
                Rewrite::Source,
                *frontend,
                UP_MAC,
                GATEWAY_MAC,
            ))
        }
        Expect::Encapsulated { source } => {
            let (id, addr) = backend_for(dp, input)?;
            Ok(encapsulated(
                input,
                *source,
                *addr.ip(),
                DOWN_MAC,
                backend_mac(id),
            ))
        }
    }
}

fn client_index(client: SocketAddr, first: Ipv4Addr) -> anyhow::Result<usize> {
    let SocketAddr::V4(client) = client else {
        anyhow::bail!("an IPv6 reply client");
    };
    let k = u32::from(*client.ip())
        .checked_sub(u32::from(first))
        .context("reply client below the first")?;
    Ok(usize::try_from(k)?)
}

/// The backend `simulate` names for the flow of `input`.
fn backend_for(dp: &Datapath, input: &[u8]) -> anyhow::Result<(u32, SocketAddrV4)> {
    let flow = flow_of(input)?;
    match dp.simulate(&flow)? {
        Simulation::Backend {
            addr: SocketAddr::V4(addr),
            backend_id: id,
            ..
        } => {
            anyhow::ensure!(
                backend_id(*addr.ip()) == Some(id),
                "backend {id} is at {addr}, not in the pool"
            );
            Ok((id, addr))
        }
        other => anyhow::bail!("simulate({flow:?}) = {other:?}, not a backend"),
    }
}

/// Checks a case on its run-0 frame before it is timed: one run as if the frame
/// arrived on its real interface (`up0` for requests, `dn0` for replies); the
/// verdict, the whole output frame (against one built independently, every
/// checksum recomputed; a wrapped frame's outer header built whole) and the
/// counters. A new-flow case is checked with a
/// client of its own, so the measured flows stay new.
pub(crate) fn golden(
    dp: &Datapath,
    case: &Case,
    interfaces: Interfaces,
    clients: &mut Clients,
) -> anyhow::Result<()> {
    let client = case.is_new_flow().then(|| clients.fresh()).transpose()?;
    let headers = case.headers_for(client);
    let input = headers.build();
    // The backend `simulate` names, checked tracked exactly for a hit case.
    let backend = || -> anyhow::Result<(u32, SocketAddrV4)> {
        let flow = headers.flow();
        let Simulation::Backend {
            backend_id: id,
            addr: SocketAddr::V4(addr),
            tracked,
            ..
        } = dp.simulate(&flow)?
        else {
            anyhow::bail!(
                "{}: simulate names no backend for {flow:?}",
                case.kind.label()
            );
        };
        anyhow::ensure!(
            tracked != case.is_new_flow(),
            "{}: simulate says tracked = {tracked}",
            case.kind.label()
        );
        Ok((id, addr))
    };
    let expected = match &case.expect {
        Expect::Pass => headers.build(),
        Expect::Dnat => {
            let (id, addr) = backend()?;
            Headers {
                src_mac: DOWN_MAC,
                dst_mac: backend_mac(id),
                dst: addr,
                ttl: headers.ttl - 1,
                ..headers
            }
            .build()
        }
        Expect::Reply { frontends } => Headers {
            src_mac: UP_MAC,
            dst_mac: GATEWAY_MAC,
            src: frontends[0],
            ttl: headers.ttl - 1,
            ..headers
        }
        .build(),
        Expect::Encapsulated { source } => {
            let (id, addr) = backend()?;
            encapsulated(&input, *source, *addr.ip(), DOWN_MAC, backend_mac(id))
        }
    };
    let ingress = match case.expect {
        Expect::Reply { .. } => interfaces.dn0,
        Expect::Pass | Expect::Dnat | Expect::Encapsulated { .. } => interfaces.up0,
    };
    let before = Snapshot::take(dp)?;
    let out = dp.test_run_on(case.program, &input, ingress)?;
    let label = case.kind.label();
    anyhow::ensure!(
        out.action == action(case),
        "{label}: verdict {} instead of {}",
        out.action,
        action(case)
    );
    ensure_frame(out.packet == expected, label, &out.packet, &expected)?;
    Snapshot::take(dp)?.ensure_counted(&before, case.kind, 1)?;
    // The byte-level model the timed runs are checked with agrees too.
    let modelled = expected_output(dp, case, &input)?;
    ensure_frame(
        same_but_checksums(&out.packet, &modelled),
        label,
        &out.packet,
        &modelled,
    )
}
