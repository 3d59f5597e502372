//! The loader around the golden packets: refused operations leave the maps as
//! they were, and pinned state survives a reload (or is refused when its
//! layout version differs).
mod support;

use std::net::{IpAddr, SocketAddr};

use support::{
    frame::{Packet, TcpFlags},
    in_private_netns,
    lb::{
        BACKEND4_IDS, CLIENT4, DOWN_MAC, FROM_CLIENT, VIP4, XDP_PASS, XDP_REDIRECT, backend4,
        cycling, lb_interfaces, mac_of,
    },
    with_private_bpffs,
};
use xdp_lb::{
    AddressKind, Config, CtEvent, Datapath, Error, FlowState, Frontend, LAYOUT_VERSION,
    LoadOptions, MAX_TABLE_SIZE, MapSizes, ProgramName, Protocol, ServiceOptions, Simulation,
};

const SIZES: MapSizes = MapSizes {
    services: 16,
    backends: 32,
    conntrack: 64,
    addresses: 4,
    fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
};

fn load_small() -> Datapath {
    Datapath::load_with(&LoadOptions {
        sizes: SIZES,
        pin_dir: None,
    })
    .expect("load")
}

#[test]
fn simulate_refuses_a_flow_of_two_families() {
    let dp = load_small();
    let client: SocketAddr = "[2001:2::7]:40000".parse().unwrap();
    let frontend: SocketAddr = "198.18.100.1:80".parse().unwrap();
    let error = dp
        .simulate(&xdp_lb::Flow::new(client, frontend, Protocol::Tcp))
        .expect_err("no packet has ends of two families");
    assert!(matches!(error, Error::MixedFamilies { .. }), "{error}");
}

#[test]
fn invalid_tables_are_refused_and_leave_the_old_table() {
    let mut dp = load_small();
    dp.put_backend(1, backend4(0), 1).unwrap();
    dp.swap_table(7, &[1, 1, 1]).unwrap();
    let refused: [(&str, Vec<u32>); 4] = [
        ("empty", Vec::new()),
        ("too large", vec![1; MAX_TABLE_SIZE as usize + 1]),
        ("backend 0", vec![1, 0, 1]),
        ("backend beyond the map", vec![1, SIZES.backends, 1]),
    ];
    for (what, table) in refused {
        let err = dp.swap_table(7, &table).expect_err(what);
        assert!(
            matches!(err, Error::InvalidTable { service: 7, .. }),
            "{what}: {err:?}"
        );
        assert_eq!(
            dp.table(7).unwrap().as_deref(),
            Some(&[1, 1, 1][..]),
            "{what}"
        );
    }
    // The limits themselves are accepted.
    dp.swap_table(7, &[SIZES.backends - 1]).unwrap();
    let largest = vec![1; MAX_TABLE_SIZE as usize];
    dp.swap_table(7, &largest).unwrap();
    assert_eq!(dp.table(7).unwrap().map(|t| t.len()), Some(largest.len()));
}

#[test]
fn ids_beyond_the_map_sizes_are_refused() {
    let mut dp = load_small();
    let out_of_range = |result: Result<(), Error>, kind: &str, id: u32| match result {
        Err(Error::IdOutOfRange {
            kind: k,
            id: i,
            limit,
        }) => {
            assert_eq!((k, i), (kind, id));
            assert_eq!(
                limit,
                if kind == "service" {
                    SIZES.services
                } else {
                    SIZES.backends
                }
            );
        }
        other => panic!("{kind} {id}: {other:?}"),
    };
    let frontend = Frontend::new(SocketAddr::from((VIP4, 80)), Protocol::Tcp);
    out_of_range(
        dp.swap_table(SIZES.services, &[1]),
        "service",
        SIZES.services,
    );
    out_of_range(
        dp.upsert_service(&frontend, SIZES.services, &ServiceOptions::default()),
        "service",
        SIZES.services,
    );
    out_of_range(dp.put_backend(0, backend4(0), 1), "backend", 0);
    out_of_range(
        dp.put_backend(SIZES.backends, backend4(0), 1),
        "backend",
        SIZES.backends,
    );
    out_of_range(dp.retire_backend(0), "backend", 0);
    out_of_range(
        dp.backend(SIZES.backends).map(|_| ()),
        "backend",
        SIZES.backends,
    );
    // A batch with one bad ID writes nothing.
    out_of_range(
        dp.put_backends(&[(2, backend4(0), 1), (SIZES.backends, backend4(1), 1)]),
        "backend",
        SIZES.backends,
    );
    assert_eq!(dp.backend(2).unwrap(), None, "nothing of the batch written");
    // The last IDs are fine, once the frontend's address is declared.
    dp.put_backend(SIZES.backends - 1, backend4(0), 1).unwrap();
    dp.swap_table(SIZES.services - 1, &[SIZES.backends - 1])
        .unwrap();
    let undeclared = dp.upsert_service(&frontend, SIZES.services - 1, &ServiceOptions::default());
    assert!(
        matches!(undeclared, Err(Error::UndeclaredAddress { frontend: f }) if f == frontend.addr),
        "{undeclared:?}"
    );
    dp.set_address(IpAddr::from(VIP4), AddressKind::Vip)
        .unwrap();
    dp.upsert_service(&frontend, SIZES.services - 1, &ServiceOptions::default())
        .unwrap();
    assert_eq!(dp.backend(1).unwrap(), None, "never written");
}

#[test]
fn invalid_load_options_and_config_are_refused() {
    let zero = |f: fn(&mut MapSizes)| {
        let mut sizes = SIZES;
        f(&mut sizes);
        Datapath::load_with(&LoadOptions {
            sizes,
            pin_dir: None,
        })
        .expect_err("invalid sizes")
    };
    let cases: [(&str, Error); 5] = [
        ("services", zero(|s| s.services = 0)),
        ("backends", zero(|s| s.backends = 0)),
        ("conntrack", zero(|s| s.conntrack = 0)),
        ("addresses", zero(|s| s.addresses = 0)),
        ("backends", zero(|s| s.backends = 1)),
    ];
    for (name, err) in cases {
        assert!(
            matches!(err, Error::InvalidOption { option, .. } if option == name),
            "{name}: {err:?}"
        );
    }
    let mut dp = load_small();
    let err = dp
        .set_config(&Config {
            nodeport_min: 40000,
            nodeport_max: 30000,
            ..Config::default()
        })
        .expect_err("inverted range");
    assert!(matches!(err, Error::InvalidOption { .. }), "{err:?}");
    assert_eq!(dp.config().unwrap(), Config::default());
}

/// What a restarted agent must find: configuration, addresses, services,
/// backends, tables, flows and counters.
#[derive(Debug, PartialEq, Eq)]
struct State {
    config: Config,
    simulation: Simulation,
    backends: Vec<Option<xdp_lb::BackendRecord>>,
    table: Option<Vec<u32>>,
    flows: Vec<xdp_lb::TrackedFlow>,
    created: u64,
}

fn state(dp: &Datapath, syn: &Packet) -> State {
    State {
        config: dp.config().unwrap(),
        simulation: dp.simulate(&syn.flow()).unwrap(),
        backends: (1..4).map(|id| dp.backend(id).unwrap()).collect(),
        table: dp.table(7).unwrap(),
        flows: dp.conntrack().unwrap(),
        created: dp.ct_stats().unwrap().get(CtEvent::Created).packets,
    }
}

#[test]
fn pinned_state_is_reopened_and_a_foreign_layout_refused() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            let (up0, _) = lb_interfaces();
            let dir = bpffs.join("xlb");
            let options = LoadOptions {
                sizes: SIZES,
                pin_dir: Some(dir.clone()),
            };
            let config = Config {
                hash_seed: 0x5eed,
                udp_timeout_s: 33,
                ..Config::default()
            };
            let vip = SocketAddr::from((VIP4, 80));
            let syn = Packet::tcp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT4, 40000)),
                vip,
                TcpFlags::SYN,
            );
            let to_backend =
                |p: &Packet, b: SocketAddr| p.with_dst(b).routed(DOWN_MAC, mac_of(b.ip())).bytes();

            let mut first = Datapath::load_with(&options).expect("first load");
            first.set_config(&config).unwrap();
            first
                .set_address(IpAddr::from(VIP4), AddressKind::Vip)
                .unwrap();
            for (i, id) in BACKEND4_IDS[..3].iter().enumerate() {
                first.put_backend(*id, backend4(i), 1).unwrap();
            }
            first.retire_backend(3).unwrap();
            first.swap_table(7, &cycling(&[1, 2], 251)).unwrap();
            first
                .upsert_service(
                    &Frontend::new(vip, Protocol::Tcp),
                    7,
                    &ServiceOptions::default(),
                )
                .unwrap();
            let Simulation::Backend { addr, .. } = first.simulate(&syn.flow()).unwrap() else {
                panic!("no backend");
            };
            let out = first
                .test_run_on(ProgramName::XdpLb, &syn.bytes(), up0)
                .unwrap();
            assert_eq!(out.packet, to_backend(&syn, addr));
            let before = state(&first, &syn);
            assert_eq!(before.flows.len(), 1);
            assert_eq!(before.created, 1);

            // Reopened while the first instance still holds the maps, and
            // after it is gone.
            let second = Datapath::load_with(&options).expect("reopen");
            assert_eq!(state(&second, &syn), before);
            drop(first);
            drop(second);
            let third = Datapath::load_with(&options).expect("reopen");
            assert_eq!(state(&third, &syn), before);
            // The reopened datapath carries the flow on: an ACK hits its entry.
            let ack = syn.with_flags(TcpFlags::ACK);
            let out = third
                .test_run_on(ProgramName::XdpLb, &ack.bytes(), up0)
                .unwrap();
            assert_eq!(
                (out.action, out.packet),
                (XDP_REDIRECT, to_backend(&ack, addr))
            );
            let ct = third.ct_stats().unwrap();
            assert_eq!(
                (
                    ct.get(CtEvent::Created).packets,
                    ct.get(CtEvent::Hit).packets
                ),
                (1, 1)
            );
            assert_eq!(
                third.tracked_flow(&syn.flow()).unwrap().unwrap().state,
                FlowState::SynSent
            );
            drop(third);

            // The benchmark wrapper's maps are not pinned: a map of another
            // shape left under one of their names (as an older build's
            // `BENCH_INPUT` is) changes nothing.
            assert!(!dir.join("BENCH_INPUT").exists(), "not pinned");
            let stale = aya::maps::Array::<aya::maps::MapData, u64>::create(1, 0).unwrap();
            stale.pin(dir.join("BENCH_INPUT")).unwrap();
            let mut fourth = Datapath::load_with(&options).expect("reload past a stale bench map");
            let floor = syn.bytes();
            fourth.bench_target(ProgramName::XdpFloor, &floor).unwrap();
            assert_eq!(
                fourth
                    .test_run_repeat(ProgramName::XdpBench, &floor, 4)
                    .unwrap()
                    .action,
                XDP_PASS
            );
            drop(fourth);

            // The pinned layout version is this build's; another one is refused.
            let layout_path = dir.join("LAYOUT");
            let map = aya::maps::MapData::from_pin(&layout_path).expect("pinned LAYOUT");
            let mut layout =
                aya::maps::Array::<_, u32>::try_from(aya::maps::Map::from_map_data(map).unwrap())
                    .unwrap();
            assert_eq!(layout.get(&0, 0).unwrap(), LAYOUT_VERSION);
            layout.set(0, LAYOUT_VERSION + 8, 0).unwrap();
            let err = Datapath::load_with(&options).expect_err("foreign layout");
            assert!(
                matches!(err, Error::Layout { found, expected }
                    if found == LAYOUT_VERSION + 8 && expected == LAYOUT_VERSION),
                "{err:?}"
            );
            // Refusing changed nothing: the version is still the foreign one.
            assert_eq!(layout.get(&0, 0).unwrap(), LAYOUT_VERSION + 8);
            // Refused before the programs are loaded: a pinned map whose
            // shape changed with the layout gives the layout error, not the
            // verifier's.
            std::fs::remove_file(dir.join("CONNTRACK")).unwrap();
            let other = aya::maps::Array::<aya::maps::MapData, u64>::create(4, 0).unwrap();
            other.pin(dir.join("CONNTRACK")).unwrap();
            let err = Datapath::load_with(&options).expect_err("foreign layout and shape");
            assert!(matches!(err, Error::Layout { .. }), "{err:?}");

            // A fresh directory on the same bpffs starts from defaults.
            let fresh = Datapath::load_with(&LoadOptions {
                sizes: SIZES,
                pin_dir: Some(bpffs.join("other")),
            })
            .expect("fresh pins");
            assert_eq!(fresh.config().unwrap(), Config::default());
            assert!(fresh.conntrack().unwrap().is_empty());
            assert_eq!(fresh.table(7).unwrap(), None);
        });
    });
}
