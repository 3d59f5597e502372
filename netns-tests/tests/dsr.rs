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
    EchoClient, attach_lb,
    dsr_lb::{self, DsrSettings},
    topology::{ClientLbBackends, Family, plan},
};
use xdp_lb::{
    AttachMode, Attachment, Datapath, DecapVerdict, Flow, ProgramName, Protocol, Simulation,
    Verdict,
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
        let (topo, mut datapath) = dsr_lb::build(&DsrSettings {
            backends: BACKENDS,
            hash_seed: 11,
            table_size: TABLE_SIZE,
            port: PORT,
            vip,
            backend_id,
        })
        .expect("DSR LB");
        let backends = topo.backends.clone();
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
