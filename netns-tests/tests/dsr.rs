//! Direct server return through real sockets: the LB wraps each request for
//! its backend (IPIP, IP6IP6), the backend's `xdp_decap` strips the outer
//! header for the VIP it holds on `lo`, and the backend answers the client
//! from the VIP itself — the reply is never translated by the LB (here it is
//! only routed through the LB's namespace, the rig's one way back). On both
//! families, every request is answered by the backend `simulate` names.
//!
//! ```text
//! client ─── [xdp_lb] lb [xdp_lb] ─── switch ─┬─ [xdp_decap] b0 (VIP on lo)
//!                                             ├─ [xdp_decap] b1
//!                                             └─ [xdp_decap] b2
//! ```
use std::net::{IpAddr, SocketAddr};

use netns_tests::{
    Cidr, EchoClient, Proto, attach_lb,
    topology::{ClientLbBackends, Family, Options, plan},
};
use xdp_lb::{
    AddressKind, AttachMode, Attachment, Config, Datapath, DecapVerdict, Flow, Frontend,
    ProgramName, Protocol, ServiceOptions, Simulation, Verdict,
};

const BACKENDS: usize = 3;
/// DSR does not translate ports: the backends serve the VIP's own port.
const PORT: u16 = 80;
const REQUESTS: usize = 30;
const TABLE_SIZE: usize = 509;

fn vip(family: Family) -> IpAddr {
    let (v4, v6) = plan::vip(1);
    match family {
        Family::V4 => v4.into(),
        Family::V6 => v6.into(),
    }
}

/// Backend IDs 1..=3 (IPv4) and 11..=13 (IPv6).
fn backend_id(family: Family, i: usize) -> u32 {
    let base = match family {
        Family::V4 => 1,
        Family::V6 => 11,
    };
    base + i as u32
}

struct DsrRig {
    // Declared first so the programs detach before the rig goes.
    _attachments: Vec<Attachment>,
    datapath: Datapath,
    topo: ClientLbBackends,
}

impl DsrRig {
    fn build() -> Self {
        let options = Options {
            static_neighbours: true,
            ..Options::default()
        };
        let mut topo = ClientLbBackends::build(BACKENDS, &options).expect("topology");
        let mut datapath = Datapath::load().expect("datapath");
        datapath
            .set_config(&Config {
                hash_seed: 11,
                encap_source_v4: topo.lb_back.v4.octets(),
                encap_source_v6: topo.lb_back.v6.octets(),
                ..Config::default()
            })
            .expect("config");
        for (service, family) in [(1, Family::V4), (2, Family::V6)] {
            datapath
                .set_address(vip(family), AddressKind::Vip)
                .expect("VIP");
            let ids: Vec<u32> = (0..BACKENDS).map(|i| backend_id(family, i)).collect();
            for (i, &id) in ids.iter().enumerate() {
                let at = SocketAddr::new(topo.backends[i].ip(family), PORT);
                datapath.put_backend(id, at, 1).expect("backend");
            }
            let table: Vec<u32> = (0..TABLE_SIZE).map(|slot| ids[slot % BACKENDS]).collect();
            datapath.swap_table(service, &table).expect("table");
            let dsr = ServiceOptions {
                dsr: true,
                ..ServiceOptions::default()
            };
            datapath
                .upsert_service(
                    &Frontend::new(SocketAddr::new(vip(family), PORT), Protocol::Tcp),
                    service,
                    &dsr,
                )
                .expect("service");
            datapath.add_decap_vip(vip(family)).expect("decap VIP");
        }
        let backends = topo.backends.clone();
        for (i, backend) in backends.iter().enumerate() {
            for family in Family::ALL {
                let prefix = if family == Family::V4 { 32 } else { 128 };
                let host = Cidr::new(vip(family), prefix).expect("a host prefix");
                topo.rig
                    .add_address(&backend.netns, "lo", host)
                    .expect("VIP on lo");
                topo.rig
                    .serve_echo(
                        &backend.netns,
                        Proto::Tcp,
                        SocketAddr::new(vip(family), PORT),
                        &format!("b{i}"),
                    )
                    .expect("echo server");
            }
        }
        let mut attachments =
            attach_lb(&mut datapath, &[&topo.lb_front, &topo.lb_back]).expect("xdp_lb");
        for backend in &backends {
            attachments.push(
                backend
                    .netns
                    .attach_xdp(
                        &backend.dev,
                        &mut datapath,
                        ProgramName::XdpDecap,
                        AttachMode::Native,
                    )
                    .expect("xdp_decap"),
            );
        }
        Self {
            _attachments: attachments,
            datapath,
            topo,
        }
    }
}

#[test]
fn requests_through_a_dsr_vip_are_answered_by_the_backend_simulate_names() {
    let rig = DsrRig::build();
    for family in Family::ALL {
        let target = SocketAddr::new(vip(family), PORT);
        let echoes = EchoClient::new(&rig.topo.client.netns)
            .tcp(target, REQUESTS)
            .unwrap_or_else(|e| panic!("{family:?}: requests through the DSR VIP: {e}"));
        assert_eq!(echoes.len(), REQUESTS);
        for echo in &echoes {
            let flow = Flow::new(echo.local, target, Protocol::Tcp);
            let Ok(Simulation::Backend { backend_id: id, .. }) = rig.datapath.simulate(&flow)
            else {
                panic!("{family:?}: {flow:?} has no backend");
            };
            let predicted = (0..BACKENDS)
                .find(|&i| backend_id(family, i) == id)
                .expect("one of ours");
            assert_eq!(echo.server, format!("b{predicted}"), "{family:?}: {flow:?}");
        }
    }
    let verdicts = rig.datapath.verdict_stats().expect("verdicts");
    assert!(verdicts.get(Verdict::ForwardEncapsulated).packets >= 2 * REQUESTS as u64);
    // The replies went back to the clients untranslated.
    assert_eq!(verdicts.get(Verdict::ForwardReply).packets, 0);
    assert_eq!(verdicts.get(Verdict::PassReplyViaStack).packets, 0);
    let decap = rig.datapath.decap_stats().expect("decap stats");
    assert!(decap.get(DecapVerdict::Decapsulated).packets >= 2 * REQUESTS as u64);
}
