//! Golden packets, ClientIP session affinity with a timeout: a client's new
//! flows (any source port) go to the backend of its last one — even after
//! the table changed under it — until the timeout passes without a new flow,
//! or that backend is retired; then Maglev picks again. `simulate` answers the
//! same.
mod support;

use std::{net::SocketAddr, thread::sleep, time::Duration};

use support::{
    frame::{Packet, TcpFlags},
    in_private_netns,
    lb::{BACKEND4_IDS, CLIENT4, DOWN_MAC, FROM_CLIENT, Lb, VIP4, XDP_REDIRECT, backend4, mac_of},
};
use xdp_lb::{Error, Frontend, Protocol, ServiceOptions};

const SERVICE: u32 = 4;
const TABLE_SIZE: usize = 251;
const TIMEOUT: Duration = Duration::from_secs(1);

fn affinity(timeout: Duration) -> ServiceOptions {
    ServiceOptions {
        client_ip_affinity: Some(timeout),
        ..ServiceOptions::default()
    }
}

fn vip() -> SocketAddr {
    SocketAddr::from((VIP4, 80))
}

/// A table whose every slot names backend `i` of the fixture.
fn all_to(i: usize) -> Vec<u32> {
    vec![BACKEND4_IDS[i]; TABLE_SIZE]
}

/// Sends a SYN from `port`; returns the backend it went to, after checking
/// that `simulate` had named it.
fn new_flow(lb: &Lb, port: u16) -> SocketAddr {
    let syn = Packet::tcp(
        FROM_CLIENT,
        SocketAddr::from((CLIENT4, port)),
        vip(),
        TcpFlags::SYN,
    );
    let (_, predicted, _) = lb.simulated(&syn.flow());
    let out = lb.send(&syn.bytes(), lb.up0);
    assert_eq!(out.action, XDP_REDIRECT);
    let expected = syn
        .with_dst(predicted)
        .routed(DOWN_MAC, mac_of(predicted.ip()))
        .bytes();
    assert_eq!(
        out.packet, expected,
        "port {port}: simulate and the datapath disagree"
    );
    predicted
}

#[test]
fn a_client_stays_with_its_backend_until_the_timeout() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        lb.service(SERVICE, vip(), Protocol::Tcp, &all_to(0));
        lb.dp
            .upsert_service(
                &Frontend::new(vip(), Protocol::Tcp),
                SERVICE,
                &affinity(TIMEOUT),
            )
            .expect("service");
        assert_eq!(new_flow(&lb, 40_000), backend4(0));
        // The table now names another backend for everyone, but the client's
        // new flows keep going to its backend...
        lb.dp.swap_table(SERVICE, &all_to(1)).expect("table");
        for port in 40_001..40_005 {
            assert_eq!(new_flow(&lb, port), backend4(0), "port {port}");
        }
        // ...until the timeout passes without a new flow.
        sleep(TIMEOUT + Duration::from_millis(200));
        assert_eq!(new_flow(&lb, 40_010), backend4(1));
        // Its backend retired, the client moves at once.
        lb.dp.swap_table(SERVICE, &all_to(2)).expect("table");
        lb.dp.retire_backend(BACKEND4_IDS[1]).expect("retire");
        assert_eq!(new_flow(&lb, 40_011), backend4(2));
        assert_eq!(new_flow(&lb, 40_012), backend4(2));
    });
}

#[test]
fn an_affinity_timeout_outside_kubernetes_range_is_refused() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        let frontend = Frontend::new(vip(), Protocol::Tcp);
        for timeout in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(86_401),
        ] {
            let err = lb
                .dp
                .upsert_service(&frontend, SERVICE, &affinity(timeout))
                .expect_err("out of range");
            assert!(
                matches!(err, Error::InvalidOption { .. }),
                "{timeout:?}: {err}"
            );
        }
    });
}
