//! Golden frames, `xdp_decap` on a direct-server-return backend: an IPIP,
//! IPv4-in-IPv6 or IP6IP6 packet for a configured VIP leaves as its inner
//! packet (the same link header, the inner family's EtherType) for the
//! stack; anything else — another VIP, a plain packet, a cut inner header —
//! passes untouched, each counted.
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use support::{
    frame::{Packet, TcpFlags, encapsulated},
    in_private_netns,
    lb::{CLIENT4, CLIENT6, VIP4, VIP6, XDP_PASS},
};
use xdp_lb::{Datapath, DecapVerdict, ProgramName};

const LB4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);
const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 0xfe);
const HERE4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 5);
const HERE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 5);
const MACS: ([u8; 6], [u8; 6]) = ([2, 0, 0, 0, 0xfe, 2], [2, 0, 0, 0, 2, 5]);

fn request(v6: bool) -> Packet {
    let (client, vip): (IpAddr, IpAddr) = if v6 {
        (CLIENT6.into(), VIP6.into())
    } else {
        (CLIENT4.into(), VIP4.into())
    };
    Packet::tcp(
        MACS,
        SocketAddr::new(client, 40_000),
        SocketAddr::new(vip, 80),
        TcpFlags::SYN,
    )
}

fn decap() -> Datapath {
    let mut dp = Datapath::load().expect("load");
    dp.add_decap_vip(VIP4.into()).expect("VIP");
    dp.add_decap_vip(VIP6.into()).expect("VIP");
    dp
}

fn run(dp: &Datapath, frame: &[u8]) -> Vec<u8> {
    let out = dp.test_run(ProgramName::XdpDecap, frame).expect("test run");
    assert_eq!(out.action, XDP_PASS);
    out.packet
}

#[test]
fn each_encapsulation_for_a_vip_here_leaves_as_its_inner_packet() {
    in_private_netns(|| {
        let dp = decap();
        for (inner_v6, outer) in [
            (false, (IpAddr::from(LB4), IpAddr::from(HERE4))),
            (false, (LB6.into(), HERE6.into())),
            (true, (LB6.into(), HERE6.into())),
        ] {
            let inner = request(inner_v6).bytes();
            let wrapped = encapsulated(MACS, outer.0, outer.1, 63, &inner[14..]);
            assert_eq!(run(&dp, &wrapped), inner, "{outer:?}");
        }
        let stats = dp.decap_stats().expect("stats");
        assert_eq!(stats.get(DecapVerdict::Decapsulated).packets, 3);
    });
}

#[test]
fn anything_else_passes_untouched_and_counted() {
    in_private_netns(|| {
        let mut dp = decap();
        dp.remove_decap_vip(VIP6.into()).expect("remove");
        let plain = request(false).bytes();
        let elsewhere = encapsulated(
            MACS,
            LB6.into(),
            HERE6.into(),
            63,
            &request(true).bytes()[14..],
        );
        let mut cut = encapsulated(MACS, LB4.into(), HERE4.into(), 63, &plain[14..30]);
        // The outer header is whole; the inner one is 16 bytes of 20.
        cut.truncate(14 + 20 + 16);
        for (frame, verdict) in [
            (&plain, DecapVerdict::PassNotEncapsulated),
            (&elsewhere, DecapVerdict::PassNotOurVip),
            (&cut, DecapVerdict::PassMalformed),
        ] {
            let before = dp.decap_stats().expect("stats").get(verdict).packets;
            assert_eq!(&run(&dp, frame), frame, "{}", verdict.name());
            let after = dp.decap_stats().expect("stats").get(verdict).packets;
            assert_eq!(after - before, 1, "{}", verdict.name());
        }
    });
}
