//! Fragmented UDP through the VIP, on IPv4 and IPv6: a request larger than
//! the client's MTU (1500), which the client's stack sends in fragments,
//! reaches the backend `simulate` names whole, and its echo, as large, comes
//! back to the client in fragments, whole, from VIP:80 (the client's socket
//! is connected to it). `xdp_lb` translated every fragment, both ways: the
//! first as a packet of its flow, the later ones by the ports the first left
//! in the fragment map; none was dropped, none went by unbalanced.
//!
//! The rig is the `lb_nat` scenario (`netns_tests::lb_scenario`): wire-like
//! hosts (TX checksum offload off), pinned neighbours, so nothing but the
//! requests and echoes crosses the links.
use std::net::SocketAddr;

use netns_tests::{
    EchoClient,
    lb_scenario::{DROPS, Kind, SETTLE, Scenario, VIP_PORT, backend_named, vip},
    topology::{Family, Options},
};
use xdp_lb::{CtEvent, Verdict};

/// Bytes of each request (and a few more in its echo, which the backend
/// prefixes with its name): three fragments at an MTU of 1500.
const REQUEST_BYTES: usize = 4000;
/// Requests per family, each from a fresh socket: a flow each.
const REQUESTS: usize = 4;
/// The client's ephemeral ports (the scenario's range).
const CLIENT_PORTS: u16 = 64;

/// Prints one of the scenario's figures (shown with `--nocapture`).
macro_rules! report {
    ($($arg:tt)*) => {{
        #[allow(clippy::print_stderr, reason = "the scenario's figures, for --nocapture")]
        {
            eprintln!($($arg)*);
        }
    }};
}

#[test]
fn large_udp_datagrams_cross_the_vip_in_fragments_both_ways() {
    let options = Options {
        static_neighbours: true,
        mtu: Some(1500),
        ..Options::default()
    };
    let s = Scenario::build(&options, CLIENT_PORTS).expect("scenario builds");
    assert!(s.native(), "veths take native XDP");
    let base = s.baseline().expect("counters");
    let client = EchoClient::new(&s.client().netns);
    for family in Family::ALL {
        let vip = SocketAddr::new(vip(family), VIP_PORT);
        for _ in 0..REQUESTS {
            let echo = client
                .udp_sized(vip, REQUEST_BYTES)
                .unwrap_or_else(|e| panic!("{family:?}: a {REQUEST_BYTES}-byte request: {e}"));
            assert_eq!(echo.request.len(), REQUEST_BYTES);
            let predicted = s
                .predict(family, Kind::EchoUdp, echo.local.port())
                .expect("simulate");
            assert_eq!(
                backend_named(&echo.server),
                Some(predicted),
                "{family:?}: {echo:?} answered by another backend than simulate names"
            );
        }
    }

    let traffic = s.settle(&base, SETTLE).expect("counters");
    let (links, verdicts, ct) = (&traffic.links, &traffic.verdicts, &traffic.ct);
    report!(
        "client sent {} frames, backends sent {}; verdicts {verdicts:?}; conntrack {ct:?}",
        links.client.tx_packets,
        links.backends_tx()
    );
    // Each request and each echo crossed in three fragments at least.
    let datagrams = (REQUESTS * Family::ALL.len()) as u64;
    assert!(
        links.client.tx_packets >= 3 * datagrams,
        "the requests left the client in fragments: {} frames",
        links.client.tx_packets
    );
    assert!(
        links.backends_delivered() >= 3 * datagrams,
        "the echoes left the backends in fragments: {} frames",
        links.backends_delivered()
    );
    assert_eq!(
        traffic.to_backend(),
        links.client.tx_packets,
        "every fragment from the client is translated to a backend: {verdicts:?}"
    );
    assert_eq!(
        traffic.replies(),
        links.backends_delivered(),
        "every fragment from a backend is translated back: {verdicts:?}"
    );
    assert!(traffic.accounted(), "nothing else counted: {verdicts:?}");
    for verdict in DROPS {
        assert_eq!(verdicts.get(&verdict), None, "{verdicts:?}");
    }
    assert_eq!(
        verdicts.get(&Verdict::PassNotFrontend),
        None,
        "{verdicts:?}"
    );
    // One flow per request: its first fragment created the entry.
    assert_eq!(traffic.ct_event(CtEvent::Created), datagrams, "{ct:?}");
}
