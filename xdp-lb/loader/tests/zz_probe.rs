#![allow(missing_docs, clippy::print_stderr)]
mod support;
use std::net::SocketAddr;
use support::{frame::*, in_private_netns, lb::*};
use xdp_lb::{ProgramName, Protocol, Rotation};

fn ns(dp2: &mut xdp_lb::Datapath, target: ProgramName, pkt: &[u8], rot: &[Rotation]) -> u64 {
    let mut best = u64::MAX;
    for _ in 0..25 {
        dp2.bench_target_rotating(target, pkt, rot).unwrap();
        let out = dp2
            .test_run_repeat(ProgramName::XdpBench, pkt, 20000)
            .unwrap();
        best = best.min(out.duration.as_nanos() as u64);
    }
    best
}

#[test]
fn probe() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        let vip: SocketAddr = SocketAddr::from((VIP4, 80));
        lb.service(7, vip, Protocol::Tcp, &cycling(&BACKEND4_IDS, 251));
        // service 8: only never-written backend IDs -> DropNoBackend after select
        lb.service(8, SocketAddr::from((VIP4, 81)), Protocol::Tcp, &[40; 251]);
        let client = SocketAddr::from((CLIENT4, 10000));
        let syn = Packet::tcp(FROM_CLIENT, client, vip, TcpFlags::SYN).bytes();
        let ack = Packet::tcp(FROM_CLIENT, client, vip, TcpFlags::ACK).bytes();
        let nob = Packet::tcp(
            FROM_CLIENT,
            client,
            SocketAddr::from((VIP4, 81)),
            TcpFlags::SYN,
        )
        .bytes();
        let other = Packet::tcp(
            FROM_CLIENT,
            client,
            SocketAddr::from(([198, 18, 0, 9], 80)),
            TcpFlags::ACK,
        )
        .bytes();
        lb.send(&syn, lb.up0);
        let rot = [Rotation {
            offset: 34,
            base: 10000,
            modulus: 0,
            divisor: 1,
        }];
        let dp = &mut lb.dp;
        eprintln!("floor      {}", ns(dp, ProgramName::XdpFloor, &ack, &[]));
        eprintln!("pass       {}", ns(dp, ProgramName::XdpLb, &other, &[]));
        eprintln!("hit        {}", ns(dp, ProgramName::XdpLb, &ack, &[]));
        eprintln!("nobackend  {}", ns(dp, ProgramName::XdpLb, &nob, &rot));
        eprintln!("newflow    {}", ns(dp, ProgramName::XdpLb, &syn, &rot));
        eprintln!("floor      {}", ns(dp, ProgramName::XdpFloor, &ack, &[]));
    });
}
