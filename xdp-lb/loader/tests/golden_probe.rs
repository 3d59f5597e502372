//! Golden packets, `tc_probe_encap`: a health probe of a direct-server-return
//! backend, sent by this host to the VIP from a socket whose mark names the
//! backend, leaves wrapped exactly as `xdp_lb` wraps a client's packet for
//! it — IPIP, IP6IP6 or IPv4-in-IPv6 from the family's encapsulation source,
//! DF set on an outer IPv4 header, TTL 64 (the probe is this host's own: no
//! hop to count), its checksum recomputed by etherparse — and is redirected
//! toward the backend (`bpf_redirect_neigh`, which writes the MACs as it
//! sends: the frame keeps its own here). Unmarked packets, and marks outside
//! the probe range, pass untouched and uncounted; a probe that cannot be
//! wrapped is dropped with its reason, so that its probe fails.
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use support::{
    frame::{Packet, TcpFlags, encapsulated},
    in_private_netns,
    lb::{Lb, NODE4, NODE6, ROUTER_MAC, UP_MAC, VIP4, VIP6, backend4, backend6},
};
use xdp_lb::{
    Config, DEFAULT_PROBE_MARK_BASE, ProbeMarkBase, ProbeVerdict, ProgramName, TestRunOutput,
};

/// `TC_ACT_OK`: the kernel goes on with the packet.
const TC_ACT_OK: u32 = 0;
/// `TC_ACT_SHOT`: dropped.
const TC_ACT_SHOT: u32 = 2;
/// `TC_ACT_REDIRECT`: sent on by `bpf_redirect_neigh`.
const TC_ACT_REDIRECT: u32 = 7;

/// The LB's addresses toward the backends: the outer sources.
const SOURCE4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);
const SOURCE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 0xfe);

/// Probe slots: backend 0 over IPv4, over IPv6, and one named by no slot.
const SLOT4: u32 = 1;
const SLOT6: u32 = 2;
const UNKNOWN: u32 = 3;

/// The fixture with the probe mark base set, slots for backend 0 of each
/// family, and the encapsulation sources as given.
fn lb(sources: (Option<Ipv4Addr>, Option<Ipv6Addr>)) -> Lb {
    let mut lb = Lb::new();
    let config = lb.dp.config().expect("config");
    lb.dp
        .set_config(&Config {
            encap_source_v4: sources.0.map_or([0; 4], |a| a.octets()),
            encap_source_v6: sources.1.map_or([0; 16], |a| a.octets()),
            ..config
        })
        .expect("config");
    lb.dp
        .set_probe_mark_base(ProbeMarkBase::DEFAULT)
        .expect("mark base");
    lb.dp
        .set_probe_backend(SLOT4, backend4(0).ip())
        .expect("slot");
    lb.dp
        .set_probe_backend(SLOT6, backend6(0).ip())
        .expect("slot");
    lb
}

/// A probe's SYN from this host to the VIP of `v6`, as it leaves toward the
/// VIP's next hop (the router, out of `up0`).
fn probe_syn(v6: bool) -> Packet {
    let (from, vip): (IpAddr, IpAddr) = if v6 {
        (NODE6.into(), VIP6.into())
    } else {
        (NODE4.into(), VIP4.into())
    };
    Packet::tcp(
        (UP_MAC, ROUTER_MAC),
        SocketAddr::new(from, 41_000),
        SocketAddr::new(vip, 80),
        TcpFlags::SYN,
    )
}

/// Runs `tc_probe_encap` on `frame` at the egress of `up0`, from a socket
/// marked `mark`.
fn run(lb: &Lb, frame: &[u8], mark: u32) -> TestRunOutput {
    lb.dp
        .test_run_marked(ProgramName::TcProbeEncap, frame, lb.up0, mark)
        .expect("test run")
}

fn assert_counts(lb: &Lb, expected: &[(ProbeVerdict, u64)]) {
    let stats = lb.dp.probe_stats().expect("probe stats");
    for &verdict in ProbeVerdict::ALL {
        let want = expected
            .iter()
            .find(|(v, _)| *v == verdict)
            .map_or(0, |&(_, n)| n);
        assert_eq!(stats.get(verdict).packets, want, "{verdict:?}: {stats:?}");
    }
}

#[test]
fn a_marked_probe_is_wrapped_for_the_backend_its_mark_names() {
    in_private_netns(|| {
        let lb = lb((Some(SOURCE4), Some(SOURCE6)));
        for (v6, slot, backend, source) in [
            (false, SLOT4, backend4(0).ip(), IpAddr::V4(SOURCE4)),
            (true, SLOT6, backend6(0).ip(), IpAddr::V6(SOURCE6)),
            // The IPv4 VIP's probe, for the backend's IPv6 address.
            (false, SLOT6, backend6(0).ip(), IpAddr::V6(SOURCE6)),
        ] {
            let input = probe_syn(v6).bytes();
            let out = run(&lb, &input, DEFAULT_PROBE_MARK_BASE | slot);
            assert_eq!(out.action, TC_ACT_REDIRECT, "to {backend}");
            assert_eq!(
                out.packet,
                encapsulated((UP_MAC, ROUTER_MAC), source, backend, 64, &input[14..]),
                "to {backend}"
            );
        }
        assert_counts(&lb, &[(ProbeVerdict::Wrapped, 3)]);
    });
}

#[test]
fn unmarked_packets_and_other_marks_pass_untouched_and_uncounted() {
    in_private_netns(|| {
        let lb = lb((Some(SOURCE4), Some(SOURCE6)));
        let input = probe_syn(false).bytes();
        // No mark, an operator's mark, and one of our slot's low bits under
        // another base.
        for mark in [0, 0x4000, 0x1234_0000 | SLOT4] {
            let out = run(&lb, &input, mark);
            assert_eq!(out.action, TC_ACT_OK, "mark {mark:#x}");
            assert_eq!(out.packet, input, "mark {mark:#x}");
        }
        assert_counts(&lb, &[]);
    });
}

#[test]
fn a_probe_that_cannot_be_wrapped_is_dropped_with_its_reason() {
    in_private_netns(|| {
        let lb = lb((Some(SOURCE4), None));
        let cases = [
            // A slot that names no backend.
            (false, UNKNOWN, ProbeVerdict::DropUnknownMark),
            // An IPv6 backend without an IPv6 encapsulation source.
            (false, SLOT6, ProbeVerdict::DropNoEncapSource),
            // IPv6 cannot be wrapped in IPv4.
            (true, SLOT4, ProbeVerdict::DropEncapUnsupported),
        ];
        for (v6, slot, verdict) in cases {
            let input = probe_syn(v6).bytes();
            let out = run(&lb, &input, DEFAULT_PROBE_MARK_BASE | slot);
            assert_eq!(out.action, TC_ACT_SHOT, "{verdict:?}");
            assert_eq!(out.packet, input, "{verdict:?}: dropped as it came");
        }
        assert_counts(&lb, &cases.map(|(.., verdict)| (verdict, 1)));
    });
}
