//! Health probes of direct-server-return backends through the tunnel, with
//! the pieces the agent uses: a socket in the LB's namespace marked with a
//! probe mark connects to the VIP; `tc_probe_encap`, at the egress of the
//! LB's interfaces (before `tc_lb_uplink`, as the agent attaches them), wraps
//! its packets for the backend the mark names; the backend's `xdp_decap`
//! strips them and its stack answers from the VIP straight to the LB.
//!
//! ```text
//! client ─── [xdp_lb] lb [xdp_lb] ─── switch ─┬─ [xdp_decap] b0 (VIP on lo)
//!            (probes, tc_probe_encap)          └─ [xdp_decap] b1
//! ```
//!
//! IPv4 in IPv4, IPv6 in IPv6, and the IPv4 VIP's probe in IPv6 to a
//! backend's IPv6 address. The probe passes only while the path the
//! traffic takes works: with
//! `xdp_decap` gone from a backend, its probe fails while a connection to
//! the backend's own address (what a probe did before) still succeeds, and
//! the probe of the other backend of the same VIP is not disturbed.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr},
    time::Duration,
};

use netns_tests::{
    Cidr, Netns, Proto, Route, attach_lb,
    dsr_lb::{self, DsrSettings},
    topology::{ClientLbBackends, Family, plan},
};
use socket2::{Domain, SockAddr, Socket, Type};
use xdp_lb::{
    AttachMode, Attachment, DEFAULT_PROBE_MARK_BASE, Datapath, ProbeMarkBase, ProbeVerdict,
    ProgramName,
};

const BACKENDS: usize = 2;
/// DSR does not translate ports: the backends serve the VIP's own port.
const PORT: u16 = 80;
const TABLE_SIZE: usize = 251;
/// How long one probe may take: a lost SYN is retransmitted after a second,
/// so a working path answers well within it.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

fn vip(family: Family) -> IpAddr {
    let (v4, v6) = plan::vip(1);
    match family {
        Family::V4 => v4.into(),
        Family::V6 => v6.into(),
    }
}

/// The probe slot of backend 0 reached over IPv6 for the IPv4 VIP
/// (IPv4-in-IPv6).
const FOUR_IN_SIX: u32 = 21;

/// The probe slot of backend `i` of `family`: 1, 2 (IPv4), 11, 12 (IPv6).
fn slot(family: Family, i: usize) -> u32 {
    let base = match family {
        Family::V4 => 1,
        Family::V6 => 11,
    };
    base + i as u32
}

fn mark(slot: u32) -> u32 {
    DEFAULT_PROBE_MARK_BASE | slot
}

struct ProbeRig {
    /// `xdp_decap` of backend 0, apart so that a test can take it away.
    decap_b0: Option<Attachment>,
    // Declared before the datapath so the programs detach before it goes.
    _attachments: Vec<Attachment>,
    datapath: Datapath,
    topo: ClientLbBackends,
}

impl ProbeRig {
    fn build() -> Self {
        let (mut topo, mut datapath) = dsr_lb::build(&DsrSettings {
            backends: BACKENDS,
            hash_seed: 5,
            table_size: TABLE_SIZE,
            port: PORT,
            vip,
            backend_id: slot,
        })
        .expect("DSR LB");
        // Each backend answers on its own address too: what a probe of it
        // reached before probes went through the tunnel.
        let backends = topo.backends.clone();
        for (i, backend) in backends.iter().enumerate() {
            for family in Family::ALL {
                topo.rig
                    .serve_echo(
                        &backend.netns,
                        Proto::Tcp,
                        SocketAddr::new(backend.ip(family), PORT),
                        &format!("b{i}"),
                    )
                    .expect("echo server");
            }
        }
        // The LB routes the VIPs toward the client, as an LB routes them
        // toward its upstream router: the probes leave by `eth0`, and are
        // wrapped there for the backends behind `eth1`.
        let lb = topo.lb.clone();
        for family in Family::ALL {
            let prefix = if family == Family::V4 { 32 } else { 128 };
            let host = Cidr::new(vip(family), prefix).expect("a host prefix");
            let route = Route::to(host).via(topo.client.ip(family));
            topo.rig.add_route(&lb, &route).expect("VIP route");
        }
        let mut attachments =
            attach_lb(&mut datapath, &[&topo.lb_front, &topo.lb_back]).expect("xdp_lb");
        let mut decap_b0 = None;
        for (i, backend) in backends.iter().enumerate() {
            let decap = backend
                .netns
                .attach_xdp(
                    &backend.dev,
                    &mut datapath,
                    ProgramName::XdpDecap,
                    AttachMode::Native,
                )
                .expect("xdp_decap");
            if i == 0 {
                decap_b0 = Some(decap);
            } else {
                attachments.push(decap);
            }
        }
        // As the agent does: `tc_lb_uplink` on each interface, and the
        // probes' program before it.
        for end in [&topo.lb_front, &topo.lb_back] {
            lb.run(|| {
                datapath
                    .attach_uplink_egress(&end.dev)
                    .expect("tc_lb_uplink");
                datapath
                    .attach_probe_encap(&end.dev)
                    .expect("tc_probe_encap");
            })
            .expect("in the LB namespace");
        }
        datapath
            .set_probe_mark_base(ProbeMarkBase::DEFAULT)
            .expect("mark base");
        for family in Family::ALL {
            for (i, backend) in backends.iter().enumerate() {
                datapath
                    .set_probe_backend(slot(family, i), backend.ip(family))
                    .expect("probe slot");
            }
        }
        datapath
            .set_probe_backend(FOUR_IN_SIX, backends[0].ip(Family::V6))
            .expect("probe slot");
        Self {
            decap_b0,
            _attachments: attachments,
            datapath,
            topo,
        }
    }
}

/// One TCP exchange from `netns` to `to`, from a socket with `mark` (none
/// when 0): the name of the server that answered, or why there was none.
fn exchange(netns: &Netns, to: SocketAddr, mark: u32) -> Result<String, String> {
    netns
        .run(move || {
            let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)
                .map_err(|e| format!("socket: {e}"))?;
            if mark != 0 {
                socket.set_mark(mark).map_err(|e| format!("SO_MARK: {e}"))?;
            }
            socket
                .connect_timeout(&SockAddr::from(to), PROBE_TIMEOUT)
                .map_err(|e| format!("connecting to {to}: {e}"))?;
            let mut stream = std::net::TcpStream::from(socket);
            stream
                .set_read_timeout(Some(PROBE_TIMEOUT))
                .map_err(|e| e.to_string())?;
            stream
                .write_all(b"probe")
                .and_then(|()| stream.shutdown(Shutdown::Write))
                .map_err(|e| format!("sending to {to}: {e}"))?;
            let mut answer = String::new();
            stream
                .read_to_string(&mut answer)
                .map_err(|e| format!("reading from {to}: {e}"))?;
            answer
                .strip_suffix(" probe")
                .map(str::to_owned)
                .ok_or_else(|| format!("{to} answered {answer:?}"))
        })
        .map_err(|e| e.to_string())?
}

fn probe(rig: &ProbeRig, family: Family, slot: u32) -> Result<String, String> {
    exchange(&rig.topo.lb, SocketAddr::new(vip(family), PORT), mark(slot))
}

#[test]
fn a_probe_through_the_tunnel_fails_when_its_backend_stops_decapsulating() {
    let mut rig = ProbeRig::build();
    for family in Family::ALL {
        for i in 0..BACKENDS {
            assert_eq!(
                probe(&rig, family, slot(family, i)),
                Ok(format!("b{i}")),
                "{family:?}: the probe of backend {i} is answered by it, from the VIP"
            );
        }
    }
    assert_eq!(
        probe(&rig, Family::V4, FOUR_IN_SIX),
        Ok("b0".to_owned()),
        "the IPv4 VIP's probe wrapped in IPv6 for b0"
    );
    let wrapped = rig.datapath.probe_stats().expect("probe stats");
    assert!(
        wrapped.get(ProbeVerdict::Wrapped).packets >= 5 * 3,
        "{wrapped:?}"
    );

    // Backend 0 stops decapsulating: what is wrapped for it is lost.
    let decap = rig.decap_b0.take().expect("b0's xdp_decap");
    rig.datapath.detach(decap).expect("detach b0's xdp_decap");
    for family in Family::ALL {
        let direct = SocketAddr::new(rig.topo.backends[0].ip(family), PORT);
        assert_eq!(
            exchange(&rig.topo.lb, direct, 0),
            Ok("b0".to_owned()),
            "{family:?}: b0's own address still answers, as a direct probe would see"
        );
        let failed = probe(&rig, family, slot(family, 0));
        assert!(
            failed.is_err(),
            "{family:?}: b0's probe must fail without its decap, got {failed:?}"
        );
        assert_eq!(
            probe(&rig, family, slot(family, 1)),
            Ok("b1".to_owned()),
            "{family:?}: b1's probe of the same VIP is not disturbed"
        );
    }

    // And it comes back.
    let backend = rig.topo.backends[0].clone();
    rig.decap_b0 = Some(
        backend
            .netns
            .attach_xdp(
                &backend.dev,
                &mut rig.datapath,
                ProgramName::XdpDecap,
                AttachMode::Native,
            )
            .expect("xdp_decap again"),
    );
    for family in Family::ALL {
        assert_eq!(probe(&rig, family, slot(family, 0)), Ok("b0".to_owned()));
    }
}

#[test]
fn a_probe_mark_without_a_backend_is_dropped_and_counted() {
    let rig = ProbeRig::build();
    let unknown = 40;
    let result = probe(&rig, Family::V4, unknown);
    assert!(
        result.is_err(),
        "an unknown slot must not reach anything: {result:?}"
    );
    let stats = rig.datapath.probe_stats().expect("probe stats");
    assert!(
        stats.get(ProbeVerdict::DropUnknownMark).packets >= 1,
        "{stats:?}"
    );
    assert_eq!(stats.get(ProbeVerdict::Wrapped).packets, 0, "{stats:?}");
}
