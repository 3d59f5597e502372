//! What a restarted agent reads back (frontends, backends, table IDs, map
//! usage), and the conntrack garbage collector: it deletes exactly what the
//! datapath already treats as expired, and a removed backend's flows.
mod support;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use aya::maps::{LpmTrie, Map, MapData};
use support::{
    frame::{L4, Packet, TcpFlags},
    in_private_netns,
    lb::{
        BACKEND4_IDS, CLIENT4, DOWN_MAC, FIXTURE_SIZES, FROM_CLIENT, Lb, VIP4, VIP6, backend4,
        backend6, cycling, mac_of, syn_to_vip4,
    },
    with_private_bpffs,
};
use xdp_lb::{
    AddressKind, BackendRecord, Config, CtEvent, Datapath, Error, FlowState, Frontend, LoadOptions,
    MapSizes, MapUsage, ProgramName, Protocol, ServiceOptions, TrackedFlow, Verdict,
};

const SIZES: MapSizes = MapSizes {
    services: 16,
    backends: 32,
    conntrack: 64,
    addresses: 4,
    fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
};

fn usage(name: &'static str, entries: u64, capacity: u64) -> MapUsage {
    MapUsage {
        name,
        entries,
        capacity,
    }
}

#[test]
fn a_counter_array_pinned_with_other_slots_is_made_anew_and_the_state_kept() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            let dir = bpffs.join("xlb");
            let options = LoadOptions {
                sizes: SIZES,
                pin_dir: Some(dir.clone()),
            };
            let mut first = Datapath::load_with(&options).unwrap();
            first
                .set_address(IpAddr::from(VIP4), AddressKind::Vip)
                .unwrap();
            drop(first);
            // What a build with three verdicts would have pinned.
            let verdicts = dir.join("VERDICT_STATS");
            std::fs::remove_file(&verdicts).unwrap();
            let created = std::process::Command::new("bpftool")
                .args(["map", "create"])
                .arg(&verdicts)
                .args(["type", "percpu_array", "key", "4", "value", "16"])
                .args(["entries", "3", "name", "VERDICT_STATS"])
                .status()
                .expect("run bpftool");
            assert!(created.success(), "bpftool map create: {created}");

            let second = Datapath::load_with(&options).unwrap();
            let pinned = aya::maps::MapInfo::from_pin(&verdicts).unwrap();
            assert_eq!(pinned.max_entries(), Verdict::COUNT);
            // Every verdict reads back, the ones past the old end too.
            assert_eq!(second.verdict_stats().unwrap().total_packets(), 0);
            // Only the counters were made anew: the state is the first's.
            assert_eq!(
                second.addresses().unwrap(),
                [(IpAddr::from(VIP4), AddressKind::Vip)]
            );
            // The same build again keeps it, counts and all: one frame of
            // another ethertype, passed as not IP.
            let mut not_ip = [0u8; 60];
            not_ip[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
            second.test_run(ProgramName::XdpLb, &not_ip).unwrap();
            drop(second);
            let third = Datapath::load_with(&options).unwrap();
            assert_eq!(third.verdict_stats().unwrap().total_packets(), 1);
        });
    });
}

#[test]
fn a_reopened_datapath_reads_back_frontends_backends_and_tables() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            let options = LoadOptions {
                sizes: SIZES,
                pin_dir: Some(bpffs.join("xlb")),
            };
            let mut first = Datapath::load_with(&options).unwrap();
            let empty = first.map_usage().unwrap();
            assert_eq!(
                empty,
                [
                    usage("SERVICES", 0, 16),
                    usage("ADDRESSES", 0, 4),
                    usage("BACKENDS", 0, 31),
                    usage("MAGLEV_TABLES", 0, 16),
                    usage("SOURCE_RANGES", 0, 16),
                    usage("L2_ANNOUNCE", 0, 4),
                    usage("CONNTRACK", 0, 128),
                    usage("CONNTRACK_REPLY", 0, 128),
                ]
            );
            assert!(first.frontends().unwrap().is_empty());
            assert!(first.backends().unwrap().is_empty());
            assert!(first.table_ids().unwrap().is_empty());

            first
                .set_address(IpAddr::from(VIP4), AddressKind::Vip)
                .unwrap();
            first
                .set_address(IpAddr::from(VIP6), AddressKind::Vip)
                .unwrap();
            let written: BTreeMap<u32, BackendRecord> = [
                (1, backend4(0), 1),
                (2, backend6(1), 4),
                (9, backend4(2), 2),
                (31, backend6(3), 1),
            ]
            .into_iter()
            .map(|(id, addr, generation)| {
                first.put_backend(id, addr, generation).unwrap();
                let active = id != 9;
                (
                    id,
                    BackendRecord {
                        addr,
                        generation,
                        active,
                        local: false,
                    },
                )
            })
            .collect();
            first.retire_backend(9).unwrap();
            first
                .swap_tables(&[(3, &[1, 2][..]), (15, &[31][..])])
                .unwrap();
            let frontends = [
                (
                    Frontend::new(SocketAddr::from((VIP4, 80)), Protocol::Tcp),
                    3,
                    ServiceOptions::default(),
                ),
                (
                    Frontend::new(SocketAddr::from((VIP4, 53)), Protocol::Udp),
                    3,
                    ServiceOptions {
                        client_ip_affinity: Some(Duration::from_secs(600)),
                        dsr: false,
                        snat_remote: false,
                        drop_without_backends: false,
                        source_ranges_only: false,
                    },
                ),
                (
                    Frontend::new(SocketAddr::from((VIP6, 443)), Protocol::Tcp),
                    15,
                    ServiceOptions {
                        client_ip_affinity: None,
                        dsr: true,
                        snat_remote: false,
                        drop_without_backends: false,
                        source_ranges_only: false,
                    },
                ),
            ];
            for (frontend, id, options) in &frontends {
                first.upsert_service(frontend, *id, options).unwrap();
            }
            let v4: IpAddr = "198.18.0.1".parse().unwrap();
            let v6: IpAddr = "2001:2::".parse().unwrap();
            first.set_source_ranges(3, &[(v4, 32), (v6, 64)]).unwrap();
            first.set_source_ranges(15, &[(v4, 24)]).unwrap();
            assert_eq!(pinned_source_ranges(options.pin_dir.as_deref().unwrap()), 3);
            drop(first);

            let mut second = Datapath::load_with(&options).unwrap();
            // Read back by network: 198.18.0.1/24 is 198.18.0.0/24.
            let net: IpAddr = "198.18.0.0".parse().unwrap();
            assert_eq!(
                second.source_ranges().unwrap(),
                [(3, v4, 32), (3, v6, 64), (15, net, 24)]
            );
            // The networks the first one wrote are replaced, not left behind.
            second.set_source_ranges(3, &[(v4, 24)]).unwrap();
            assert_eq!(pinned_source_ranges(options.pin_dir.as_deref().unwrap()), 2);
            // The same network with other host bits is the same key: it
            // stays (it was written and then removed as "another" one).
            second.set_source_ranges(3, &[(net, 24)]).unwrap();
            assert_eq!(
                second.source_ranges().unwrap(),
                [(3, net, 24), (15, net, 24)]
            );
            second.set_source_ranges(15, &[]).unwrap();
            assert_eq!(pinned_source_ranges(options.pin_dir.as_deref().unwrap()), 1);
            let mut read = second.frontends().unwrap();
            read.sort_by_key(|(f, id, _)| (*id, f.addr, f.proto));
            let mut expected = frontends.to_vec();
            expected.sort_by_key(|(f, id, _)| (*id, f.addr, f.proto));
            assert_eq!(read, expected);
            assert_eq!(
                second.backends().unwrap(),
                written.into_iter().collect::<Vec<_>>(),
                "every record, the retired one with its generation"
            );
            assert_eq!(second.table_ids().unwrap(), [3, 15]);
            assert_eq!(
                second.map_usage().unwrap(),
                [
                    usage("SERVICES", 3, 16),
                    usage("ADDRESSES", 2, 4),
                    usage("BACKENDS", 3, 31),
                    usage("MAGLEV_TABLES", 2, 16),
                    usage("SOURCE_RANGES", 1, 16),
                    usage("L2_ANNOUNCE", 0, 4),
                    usage("CONNTRACK", 0, 128),
                    usage("CONNTRACK_REPLY", 0, 128),
                ]
            );
        });
    });
}

/// How many networks the pinned `SOURCE_RANGES` trie under `pin_dir` holds
/// (a key is the 4-byte service ID and a 16-byte address).
fn pinned_source_ranges(pin_dir: &Path) -> usize {
    let data = MapData::from_pin(pin_dir.join("SOURCE_RANGES")).expect("pinned SOURCE_RANGES");
    let map = Map::from_map_data(data).expect("a map");
    LpmTrie::<_, [u8; 20], u8>::try_from(map)
        .expect("a trie")
        .keys()
        .collect::<Result<Vec<_>, _>>()
        .expect("the keys")
        .len()
}

/// The fixture with TCP on VIP4:80 (service 7) and UDP on VIP4:53 (service 5).
fn lb() -> Lb {
    let mut lb = Lb::new();
    let table = cycling(&BACKEND4_IDS, 251);
    lb.service(7, SocketAddr::from((VIP4, 80)), Protocol::Tcp, &table);
    lb.service(5, SocketAddr::from((VIP4, 53)), Protocol::Udp, &table);
    lb
}

fn datagram(port: u16) -> Packet {
    Packet::udp(
        FROM_CLIENT,
        SocketAddr::from((CLIENT4, port)),
        SocketAddr::from((VIP4, 53)),
        b"q",
    )
}

/// Sends `packet` from the client; the flow is then tracked.
fn open(lb: &Lb, packet: &Packet) -> SocketAddr {
    let out = lb.send(&packet.bytes(), lb.up0);
    assert_eq!(out.action, support::lb::XDP_REDIRECT);
    lb.dp.tracked_flow(&packet.flow()).unwrap().unwrap().backend
}

/// The backend's answer to `request`, arriving on `dn0`.
fn answer(lb: &Lb, request: &Packet, backend: SocketAddr, l4: L4) {
    let reply = Packet {
        src_mac: mac_of(backend.ip()),
        dst_mac: DOWN_MAC,
        src: backend,
        dst: request.src,
        l4,
        ..request.clone()
    };
    let out = lb.send(&reply.bytes(), lb.dn0);
    assert_eq!(out.action, support::lb::XDP_REDIRECT, "a tracked reply");
}

fn state(lb: &Lb, packet: &Packet) -> Option<FlowState> {
    lb.dp
        .tracked_flow(&packet.flow())
        .unwrap()
        .map(|flow| flow.state)
}

fn entries(lb: &Lb, map: &str) -> u64 {
    lb.dp
        .map_usage()
        .unwrap()
        .into_iter()
        .find(|u| u.name == map)
        .unwrap()
        .entries
}

#[test]
fn reopened_maps_keep_their_sizes_whatever_is_asked() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            let pin_dir = Some(bpffs.join("xlb"));
            let first = Datapath::load_with(&LoadOptions {
                sizes: SIZES,
                pin_dir: pin_dir.clone(),
            })
            .unwrap();
            assert_eq!(first.sizes(), SIZES);
            let other = MapSizes {
                services: 2,
                backends: 1024,
                conntrack: 4096,
                addresses: 64,
                fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
            };
            let second = Datapath::load_with(&LoadOptions {
                sizes: other,
                pin_dir,
            })
            .unwrap();
            // What the pinned maps were made with, not what was asked.
            assert_eq!(second.sizes(), SIZES);
            let fresh = Datapath::load_with(&LoadOptions {
                sizes: other,
                pin_dir: None,
            })
            .unwrap();
            assert_eq!(fresh.sizes(), other);
        });
    });
}

#[test]
fn expire_flows_deletes_exactly_the_flows_the_datapath_treats_as_expired() {
    in_private_netns(|| {
        let mut lb = lb();
        let syn_sent = syn_to_vip4(40_001, 80);
        open(&lb, &syn_sent);
        let established = syn_to_vip4(40_002, 80);
        let backend = open(&lb, &established);
        answer(&lb, &established, backend, L4::Tcp(TcpFlags::SYN_ACK));
        let closing = syn_to_vip4(40_003, 80);
        open(&lb, &closing);
        open(&lb, &closing.with_flags(TcpFlags::FIN_ACK));
        let udp = datagram(5_000);
        open(&lb, &udp);
        let udp_probe = datagram(5_001);
        open(&lb, &udp_probe);
        let states = [
            (&syn_sent, FlowState::SynSent),
            (&established, FlowState::Established),
            (&closing, FlowState::Closing),
            (&udp, FlowState::Datagram),
            (&udp_probe, FlowState::Datagram),
        ];
        for (packet, expected) in states {
            assert_eq!(state(&lb, packet), Some(expected));
        }
        assert_eq!(lb.dp.expire_flows().unwrap(), 0, "nothing expired yet");
        assert_eq!(
            (entries(&lb, "CONNTRACK"), entries(&lb, "CONNTRACK_REPLY")),
            (5, 5)
        );

        // SYN-sent and UDP flows expire at once; the datapath agrees: the
        // probe's next datagram finds its entry expired.
        lb.dp
            .set_config(&Config {
                tcp_syn_timeout_s: 0,
                udp_timeout_s: 0,
                ..lb.dp.config().unwrap()
            })
            .unwrap();
        let expired_before = lb.dp.ct_stats().unwrap().get(CtEvent::Expired).packets;
        open(&lb, &udp_probe);
        assert_eq!(
            lb.dp.ct_stats().unwrap().get(CtEvent::Expired).packets,
            expired_before + 1
        );
        assert_eq!(lb.dp.expire_flows().unwrap(), 3);
        assert_eq!(state(&lb, &syn_sent), None);
        assert_eq!(state(&lb, &udp), None);
        assert_eq!(state(&lb, &udp_probe), None);
        assert_eq!(state(&lb, &established), Some(FlowState::Established));
        assert_eq!(state(&lb, &closing), Some(FlowState::Closing));
        assert_eq!(
            (entries(&lb, "CONNTRACK"), entries(&lb, "CONNTRACK_REPLY")),
            (2, 2),
            "the reply entries went with their flows"
        );
        // The live flows carry on: a hit, and the reply still translated.
        let hits = lb.dp.ct_stats().unwrap().get(CtEvent::Hit).packets;
        open(&lb, &established.with_flags(TcpFlags::ACK));
        assert_eq!(
            lb.dp.ct_stats().unwrap().get(CtEvent::Hit).packets,
            hits + 1
        );
        answer(&lb, &established, backend, L4::Tcp(TcpFlags::ACK));

        // Closing flows next.
        lb.dp
            .set_config(&Config {
                tcp_closing_timeout_s: 0,
                ..lb.dp.config().unwrap()
            })
            .unwrap();
        assert_eq!(lb.dp.expire_flows().unwrap(), 1);
        assert_eq!(state(&lb, &closing), None);
        assert_eq!(state(&lb, &established), Some(FlowState::Established));
        assert_eq!(lb.dp.expire_flows().unwrap(), 0);
        assert_eq!(
            (entries(&lb, "CONNTRACK"), entries(&lb, "CONNTRACK_REPLY")),
            (1, 1)
        );
    });
}

#[test]
fn expire_flows_uses_the_datapath_clock() {
    in_private_netns(|| {
        let mut lb = lb();
        lb.dp
            .set_config(&Config {
                udp_timeout_s: 1,
                ..lb.dp.config().unwrap()
            })
            .unwrap();
        let udp = datagram(6_000);
        let sent = Instant::now();
        open(&lb, &udp);
        // Poll until the collector takes the flow: not before its second is
        // up (the coarse clock lags the precise one by up to a tick), and not
        // long after.
        let deleted_at = loop {
            let elapsed = sent.elapsed();
            if lb.dp.expire_flows().unwrap() == 1 {
                break elapsed;
            }
            assert!(elapsed < Duration::from_secs(3), "never expired");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            deleted_at >= Duration::from_millis(980),
            "deleted after {deleted_at:?}, before its timeout"
        );
        assert_eq!(state(&lb, &udp), None);
    });
}

/// Opens a UDP flow from each client port of `ports`; returns their packets
/// and the tracked flows, which backends 2 and 3 both have some of.
fn open_datagrams(lb: &Lb, ports: std::ops::Range<u16>) -> (Vec<Packet>, Vec<TrackedFlow>) {
    let flows: Vec<Packet> = ports.map(datagram).collect();
    for flow in &flows {
        open(lb, flow);
    }
    let tracked = lb.dp.conntrack().unwrap();
    for id in [2, 3] {
        assert!(
            tracked.iter().any(|f| f.backend_id == id),
            "flows spread over the backends"
        );
    }
    (flows, tracked)
}

/// How many of `tracked` go to backend `id`.
fn flows_of(tracked: &[TrackedFlow], id: u32) -> usize {
    tracked.iter().filter(|f| f.backend_id == id).count()
}

/// The collector also takes what the datapath re-selects on sight: the
/// flows of a retired backend, and those of a backend ID given to another
/// backend since (an older generation). A sync need not walk the table.
#[test]
fn expire_flows_collects_the_flows_of_retired_and_reused_backends() {
    in_private_netns(|| {
        let mut lb = lb();
        let (flows, tracked) = open_datagrams(&lb, 7_100..7_160);
        let of = |id| flows_of(&tracked, id);
        assert_eq!(lb.dp.expire_flows().unwrap(), 0, "every backend holds");

        lb.dp.retire_backend(2).unwrap();
        assert_eq!(lb.dp.expire_flows().unwrap(), of(2));
        let left = lb.dp.conntrack().unwrap();
        assert!(left.iter().all(|f| f.backend_id != 2));
        assert_eq!(left.len(), tracked.len() - of(2));
        assert_eq!(
            entries(&lb, "CONNTRACK_REPLY"),
            left.len() as u64,
            "their reply entries too"
        );

        // ID 3 goes to a backend of the next generation.
        let old = lb.dp.backend(3).unwrap().unwrap();
        lb.dp
            .put_backend(3, backend4(3), old.generation + 1)
            .unwrap();
        assert_eq!(lb.dp.expire_flows().unwrap(), of(3));
        assert_eq!(
            lb.dp.conntrack().unwrap().len(),
            tracked.len() - of(2) - of(3)
        );
        // A flow of backend 3 comes back to it, at the new generation, and
        // holds.
        let again = flows
            .iter()
            .find(|p| {
                tracked
                    .iter()
                    .any(|f| f.flow == p.flow() && f.backend_id == 3)
            })
            .expect("a flow of backend 3");
        open(&lb, again);
        let now = lb.dp.tracked_flow(&again.flow()).unwrap().expect("tracked");
        assert_eq!((now.backend_id, now.generation), (3, old.generation + 1));
        assert_eq!(lb.dp.expire_flows().unwrap(), 0);
    });
}

/// The agent's collector walks on a handle of its own, on another thread:
/// it sees the flows the datapath tracks and the timeouts it was given
/// after the handle was taken, and its deletions are the datapath's.
#[test]
fn a_conntrack_handle_of_its_own_expires_flows_on_another_thread() {
    in_private_netns(|| {
        let mut lb = lb();
        let tables = lb.dp.conntrack_tables().unwrap();
        let udp = datagram(6_100);
        open(&lb, &udp);
        let syn_sent = syn_to_vip4(40_101, 80);
        open(&lb, &syn_sent);
        lb.dp
            .set_config(&Config {
                udp_timeout_s: 0,
                ..lb.dp.config().unwrap()
            })
            .unwrap();
        let expired = std::thread::spawn(move || tables.expire_flows().unwrap())
            .join()
            .unwrap();
        assert_eq!(expired, 1);
        assert_eq!(state(&lb, &udp), None);
        assert_eq!(state(&lb, &syn_sent), Some(FlowState::SynSent));
        assert_eq!(
            (entries(&lb, "CONNTRACK"), entries(&lb, "CONNTRACK_REPLY")),
            (1, 1),
            "the reply entry went with its flow"
        );
    });
}

#[test]
fn deleting_a_backends_flows_leaves_the_others() {
    in_private_netns(|| {
        let mut lb = lb();
        let (_, tracked) = open_datagrams(&lb, 7_000..7_040);
        let of = |id| flows_of(&tracked, id);
        let replies = entries(&lb, "CONNTRACK_REPLY");

        assert_eq!(lb.dp.delete_flows_of_backend(2).unwrap(), of(2));
        let left = lb.dp.conntrack().unwrap();
        assert!(left.iter().all(|f| f.backend_id != 2));
        assert_eq!(left.len(), tracked.len() - of(2));
        assert_eq!(
            entries(&lb, "CONNTRACK_REPLY"),
            replies - of(2) as u64,
            "their reply entries too"
        );
        assert_eq!(lb.dp.delete_flows_of_backend(2).unwrap(), 0);
        assert!(matches!(
            lb.dp.delete_flows_of_backend(0),
            Err(Error::IdOutOfRange { id: 0, .. })
        ));
        assert!(matches!(
            lb.dp.delete_flows_of_backend(FIXTURE_SIZES.backends),
            Err(Error::IdOutOfRange { .. })
        ));
        assert_eq!(lb.dp.delete_flows_of_backend(3).unwrap(), of(3));
        assert_eq!(
            lb.dp.conntrack().unwrap().len(),
            tracked.len() - of(2) - of(3)
        );
    });
}
