//! Refusal through real sockets: a frontend whose service has no backend
//! answers a TCP connect with a reset and a UDP datagram with ICMP port
//! unreachable, so the client's call fails at once with "connection refused"
//! instead of waiting for a timeout — on both families.
use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use netns_tests::{
    lb_scenario::{Scenario, vip},
    topology::{Family, Options},
};
use xdp_lb::{Frontend, Protocol, ServiceOptions, Verdict};

/// A port of the VIP whose service has no table, hence no backend.
const EMPTY_PORT: u16 = 81;
/// Service IDs the scenario does not use.
const EMPTY_SERVICE: u32 = 100;
/// Far longer than an answer takes, far shorter than a connect timeout.
const PATIENCE: Duration = Duration::from_secs(2);

#[test]
fn a_service_without_backends_refuses_at_once() {
    let mut s = Scenario::build(&Options::default(), 16).expect("scenario");
    for family in Family::ALL {
        for proto in [Protocol::Tcp, Protocol::Udp] {
            let frontend = Frontend::new(SocketAddr::new(vip(family), EMPTY_PORT), proto);
            s.datapath
                .upsert_service(&frontend, EMPTY_SERVICE, &ServiceOptions::default())
                .expect("service");
        }
    }
    let before = s.datapath.verdict_stats().expect("verdicts");
    for family in Family::ALL {
        let target = SocketAddr::new(vip(family), EMPTY_PORT);
        let started = Instant::now();
        let tcp = s
            .client()
            .netns
            .run(move || TcpStream::connect_timeout(&target, PATIENCE))
            .expect("enters the client");
        let refused = tcp.expect_err("nothing accepts");
        assert_eq!(
            refused.kind(),
            ErrorKind::ConnectionRefused,
            "{family:?} TCP: {refused}"
        );
        assert!(
            started.elapsed() < PATIENCE,
            "{family:?}: the reset took too long"
        );

        let udp = s
            .client()
            .netns
            .run(move || -> std::io::Result<()> {
                let bind = SocketAddr::new(
                    match family {
                        Family::V4 => "0.0.0.0".parse().expect("an address"),
                        Family::V6 => "::".parse().expect("an address"),
                    },
                    0,
                );
                let socket = UdpSocket::bind(bind)?;
                socket.connect(target)?;
                socket.set_read_timeout(Some(PATIENCE))?;
                socket.send(b"anyone?")?;
                // A connected UDP socket reports the ICMP error on the next call.
                socket.recv(&mut [0; 64]).map(|_| ())
            })
            .expect("enters the client");
        let refused = udp.expect_err("nothing answers");
        assert_eq!(
            refused.kind(),
            ErrorKind::ConnectionRefused,
            "{family:?} UDP: {refused}"
        );
    }
    let after = s.datapath.verdict_stats().expect("verdicts");
    for verdict in [Verdict::RefuseReset, Verdict::RefuseUnreachable] {
        let answered = after.get(verdict).packets - before.get(verdict).packets;
        assert_eq!(answered, 2, "{}: one per family", verdict.name());
    }
}
