//! The conntrack tables the datapath manages itself (`xdp_lb_common::
//! flow_table`), seen through packets and the loader API: a new flow whose
//! bucket is full takes its second bucket; when there is none, the bucket
//! gives up its least recently used slot and the flows it keeps go on; a slot
//! the agent frees is taken by the next new flow before anything is evicted.
mod support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use aya::{
    Pod,
    maps::{Array, Map, MapData},
};

use support::{
    frame::{Packet, TcpFlags},
    in_private_netns,
    lb::{
        BACKEND4_IDS, CLIENT4, DOWN_MAC, VIP4, XDP_REDIRECT, backend4, cycling, lb_interfaces,
        mac_of, syn_to_vip4,
    },
    with_private_bpffs,
};
use xdp_lb::{
    AddressKind, CtEvent, Datapath, Frontend, LoadOptions, MapSizes, ProgramName, Protocol,
    ServiceOptions, TestRunOutput,
};
use xdp_lb_common::{
    conntrack::{CtEntry, FlowTuple},
    flow_table::{Bucket, FlowTables, ReplyEntry, alt_bucket, bucket_of, place, tag_of},
};

/// One flow asked for: the smallest tables, one bucket of eight slots each.
const SIZES: MapSizes = MapSizes {
    services: 16,
    backends: 32,
    conntrack: 1,
    addresses: 4,
    fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
};
const SERVICE: u32 = 7;

/// The client ports of the tracked flows, sorted.
fn tracked_ports(dp: &Datapath) -> Vec<u16> {
    let mut ports: Vec<u16> = dp
        .conntrack()
        .unwrap()
        .iter()
        .map(|f| f.flow.src.port())
        .collect();
    ports.sort_unstable();
    ports
}

/// (entries, capacity) of `CONNTRACK` and `CONNTRACK_REPLY`.
fn usage(dp: &Datapath) -> Vec<(&'static str, u64, u64)> {
    dp.map_usage()
        .unwrap()
        .into_iter()
        .filter(|u| u.name.starts_with("CONNTRACK"))
        .map(|u| (u.name, u.entries, u.capacity))
        .collect()
}

/// A datapath whose one service, `VIP4:80`, has one backend, `backend4(0)`.
fn one_backend_service(sizes: MapSizes, pin_dir: Option<PathBuf>) -> Datapath {
    let mut dp = Datapath::load_with(&LoadOptions { sizes, pin_dir }).expect("load");
    dp.set_address(IpAddr::from(VIP4), AddressKind::Vip)
        .unwrap();
    dp.put_backend(BACKEND4_IDS[0], backend4(0), 1).unwrap();
    dp.swap_table(SERVICE, &cycling(&BACKEND4_IDS[..1], 251))
        .unwrap();
    dp.upsert_service(
        &Frontend::new(SocketAddr::from((VIP4, 80)), Protocol::Tcp),
        SERVICE,
        &ServiceOptions::default(),
    )
    .unwrap();
    dp
}

fn send(dp: &Datapath, packet: &Packet, ifindex: u32) -> TestRunOutput {
    dp.test_run_on(ProgramName::XdpLb, &packet.bytes(), ifindex)
        .unwrap()
}

/// `backend4(0)`'s SYN-ACK to `CLIENT4:client_port`, as `dn0` receives it.
fn syn_ack_from_backend(client_port: u16) -> Packet {
    let backend = backend4(0);
    Packet::tcp(
        (mac_of(backend.ip()), DOWN_MAC),
        backend,
        SocketAddr::from((CLIENT4, client_port)),
        TcpFlags::SYN_ACK,
    )
}

/// Makes every entry of both pinned tables `ns` older, as if that much time
/// had passed since they were last used.
fn age_entries(pin_dir: &Path, ns: u64) {
    age_table::<CtEntry>(pin_dir, "CONNTRACK", |e| {
        e.last_seen_ns = e.last_seen_ns.saturating_sub(ns);
    });
    age_table::<ReplyEntry>(pin_dir, "CONNTRACK_REPLY", |e| {
        e.used_ns = e.used_ns.saturating_sub(ns);
    });
}

/// Rewrites every slot's value of the pinned table `name` through `age`, a
/// bucket at a time (the datapath is idle meanwhile).
fn age_table<V: Copy>(pin_dir: &Path, name: &str, age: impl Fn(&mut V))
where
    Bucket<V>: Pod,
{
    let data = MapData::from_pin(pin_dir.join(name)).expect("pinned table");
    let map = Map::from_map_data(data).expect("a map");
    let mut table = Array::<_, Bucket<V>>::try_from(map).expect("an array");
    for index in 0..table.len() {
        let mut bucket = table.get(&index, 0).expect("a bucket");
        for slot in &mut bucket.slots {
            age(&mut slot.value);
        }
        table.set(index, bucket, 0).expect("written back");
    }
}

/// `packet` as it leaves for `backend4(0)`.
fn to_backend(packet: &Packet) -> Packet {
    let backend = backend4(0);
    packet
        .with_dst(backend)
        .routed(DOWN_MAC, mac_of(backend.ip()))
}

#[test]
fn a_full_bucket_gives_up_its_least_recently_used_flow_and_a_freed_slot_goes_first() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            let (up0, dn0) = lb_interfaces();
            let pin_dir = bpffs.join("xlb");
            let mut dp = one_backend_service(SIZES, Some(pin_dir.clone()));

            // Eight flows fill both buckets.
            for port in 40001..=40008 {
                let out = send(&dp, &syn_to_vip4(port, 80), up0);
                assert_eq!(
                    (out.action, out.packet),
                    (XDP_REDIRECT, to_backend(&syn_to_vip4(port, 80)).bytes())
                );
            }
            let mut kept: Vec<u16> = (40001..=40008).collect();
            assert_eq!(tracked_ports(&dp), kept);
            assert_eq!(usage(&dp), [("CONNTRACK", 8, 8), ("CONNTRACK_REPLY", 8, 8)]);

            // Every entry made two seconds older, so that the first flow's next
            // packet is due the once-a-second refresh, which marks its reply
            // entry used too.
            age_entries(&pin_dir, 2_000_000_000);
            let ack = syn_to_vip4(40001, 80).with_flags(TcpFlags::ACK);
            assert_eq!(send(&dp, &ack, up0).packet, to_backend(&ack).bytes());

            // A ninth flow takes the least recently used slot of each table: the
            // second flow's, not the first's.
            assert_eq!(send(&dp, &syn_to_vip4(40009, 80), up0).action, XDP_REDIRECT);
            kept.retain(|&p| p != 40002);
            kept.push(40009);
            assert_eq!(tracked_ports(&dp), kept);
            // The first flow's replies are still translated back to the VIP.
            assert_eq!(
                send(&dp, &syn_ack_from_backend(40001), dn0).action,
                XDP_REDIRECT
            );
            // The second flow's reply entry went with its flow entry: its
            // backend's answer is no flow's (passed to the stack).
            assert_ne!(
                send(&dp, &syn_ack_from_backend(40002), dn0).action,
                XDP_REDIRECT
            );

            // A flow the agent deletes frees its slots; the next new flow takes
            // them and evicts nothing.
            assert!(dp.delete_flow(&syn_to_vip4(40003, 80).flow()).unwrap());
            assert!(!dp.delete_flow(&syn_to_vip4(40003, 80).flow()).unwrap());
            kept.retain(|&p| p != 40003);
            assert_eq!(tracked_ports(&dp), kept);
            assert_eq!(usage(&dp), [("CONNTRACK", 7, 8), ("CONNTRACK_REPLY", 7, 8)]);
            assert_eq!(send(&dp, &syn_to_vip4(40010, 80), up0).action, XDP_REDIRECT);
            kept.push(40010);
            assert_eq!(tracked_ports(&dp), kept);

            let ct = dp.ct_stats().unwrap();
            assert_eq!(
                (
                    ct.get(CtEvent::Created).packets,
                    ct.get(CtEvent::Hit).packets,
                    ct.get(CtEvent::ReplyHit).packets,
                ),
                (10, 1, 1)
            );
        })
    });
}

/// The tables' shape (seed, sizes) the loader recorded under `pin_dir`.
fn pinned_flow_tables(pin_dir: &Path) -> FlowTables {
    let data = MapData::from_pin(pin_dir.join("FLOW_TABLES")).expect("pinned FLOW_TABLES");
    let map = Map::from_map_data(data).expect("a map");
    Array::<_, FlowTables>::try_from(map)
        .expect("an array")
        .get(&0, 0)
        .expect("its slot")
}

/// Where a TCP key from `CLIENT4:port` to `VIP4:80` lies in `CONNTRACK`
/// (first bucket, second bucket), and the first bucket of its reply key in
/// `CONNTRACK_REPLY`, as the datapath hashes them.
fn buckets_of(shape: &FlowTables, port: u16) -> ((u32, u32), u32) {
    let v4 = |ip: Ipv4Addr| ip.to_ipv6_mapped().octets();
    let backend = backend4(0);
    let IpAddr::V4(backend_ip) = backend.ip() else {
        unreachable!("backend4 is IPv4")
    };
    let key = FlowTuple::new(v4(CLIENT4), v4(VIP4), port.to_be(), 80u16.to_be(), 6);
    let reply = FlowTuple::new(
        v4(backend_ip),
        v4(CLIENT4),
        backend.port().to_be(),
        port.to_be(),
        6,
    );
    let at = place(&key, shape.seed, shape.flow_mask);
    let first = bucket_of(at);
    let second = alt_bucket(first, tag_of(at), shape.flow_mask);
    let reply_first = bucket_of(place(&reply, shape.seed, shape.reply_mask));
    ((first, second), reply_first)
}

/// `one_backend_service` with eight flows asked for, two buckets of eight
/// slots per table, pinned under `bpffs`: the datapath, its pin directory
/// and its tables' shape.
fn two_buckets_per_table(bpffs: &Path) -> (Datapath, PathBuf, FlowTables) {
    let pin_dir = bpffs.join("xlb");
    let sizes = MapSizes {
        conntrack: 8,
        ..SIZES
    };
    let dp = one_backend_service(sizes, Some(pin_dir.clone()));
    let shape = pinned_flow_tables(&pin_dir);
    assert_eq!((shape.flow_mask, shape.reply_mask), (1, 1));
    (dp, pin_dir, shape)
}

/// `count` client ports whose flows have bucket 0 for first bucket and
/// bucket 1 for second, in tables of two buckets, chosen so that their reply
/// keys fit in their first buckets (the reply table is not what the tests
/// that take them are about).
fn ports_spilling_from_bucket_0(shape: &FlowTables, count: usize) -> Vec<u16> {
    let mut reply_load = [0; 2];
    (40_001..)
        .filter(|&port| {
            let ((first, second), reply) = buckets_of(shape, port);
            let fits = first == 0 && second == 1 && reply_load[reply as usize] < 8;
            if fits {
                reply_load[reply as usize] += 1;
            }
            fits
        })
        .take(count)
        .collect()
}

/// The `overflow` hint of bucket `index` of the pinned `CONNTRACK`.
fn flow_overflow_hint(pin_dir: &Path, index: u32) -> u32 {
    let data = MapData::from_pin(pin_dir.join("CONNTRACK")).expect("pinned CONNTRACK");
    let map = Map::from_map_data(data).expect("a map");
    let table = Array::<_, Bucket<CtEntry>>::try_from(map).expect("an array");
    table.get(&index, 0).expect("a bucket").overflow
}

#[test]
fn a_new_flow_whose_bucket_is_full_takes_its_second_bucket_and_evicts_nothing() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            let (up0, _) = lb_interfaces();
            let (mut dp, _, shape) = two_buckets_per_table(bpffs);
            let ports = ports_spilling_from_bucket_0(&shape, 9);

            for &port in &ports {
                let syn = syn_to_vip4(port, 80);
                let out = send(&dp, &syn, up0);
                assert_eq!(
                    (out.action, out.packet),
                    (XDP_REDIRECT, to_backend(&syn).bytes())
                );
            }
            // The ninth went to bucket 1: every flow is tracked, none evicted,
            // and each is hit.
            assert_eq!(tracked_ports(&dp), ports);
            assert_eq!(
                usage(&dp),
                [("CONNTRACK", 9, 16), ("CONNTRACK_REPLY", 9, 16)]
            );
            for &port in &ports {
                let ack = syn_to_vip4(port, 80).with_flags(TcpFlags::ACK);
                assert_eq!(send(&dp, &ack, up0).packet, to_backend(&ack).bytes());
            }
            let ct = dp.ct_stats().unwrap();
            assert_eq!(
                (
                    ct.get(CtEvent::Created).packets,
                    ct.get(CtEvent::Hit).packets
                ),
                (9, 9)
            );
            // The agent finds the flow in its second bucket too.
            let ninth = syn_to_vip4(ports[8], 80).flow();
            assert!(dp.delete_flow(&ninth).unwrap());
            assert_eq!(tracked_ports(&dp), ports[..8]);
        })
    });
}

#[test]
fn an_overflow_hint_is_cleared_once_no_flow_in_its_second_bucket_needs_it() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            let (up0, _) = lb_interfaces();
            let (mut dp, pin_dir, shape) = two_buckets_per_table(bpffs);
            let ports = ports_spilling_from_bucket_0(&shape, 10);
            let ack = |port| syn_to_vip4(port, 80).with_flags(TcpFlags::ACK);
            let hit = |dp: &Datapath, port| {
                assert_eq!(
                    send(dp, &ack(port), up0).packet,
                    to_backend(&ack(port)).bytes(),
                    "the ACK of client port {port}"
                );
            };

            // Nine flows: the ninth lies in bucket 1, and bucket 0's hint
            // counts it.
            for &port in &ports[..9] {
                assert_eq!(send(&dp, &syn_to_vip4(port, 80), up0).action, XDP_REDIRECT);
            }
            assert_eq!(flow_overflow_hint(&pin_dir, 0), 1);

            // While that flow lives, its hint stays, and the flow is found.
            assert_eq!(dp.clear_overflow_hints().unwrap(), 0);
            assert_eq!(flow_overflow_hint(&pin_dir, 0), 1);
            hit(&dp, ports[8]);

            // Once it is gone, so is the hint: a lookup that misses in bucket
            // 0 no longer reads bucket 1. The flows of bucket 0 go on.
            assert!(dp.delete_flow(&syn_to_vip4(ports[8], 80).flow()).unwrap());
            assert_eq!(dp.clear_overflow_hints().unwrap(), 1);
            assert_eq!(flow_overflow_hint(&pin_dir, 0), 0);
            for &port in &ports[..8] {
                hit(&dp, port);
            }

            // The next flow that overflows counts it again, and is found.
            assert_eq!(
                send(&dp, &syn_to_vip4(ports[9], 80), up0).action,
                XDP_REDIRECT
            );
            assert_eq!(flow_overflow_hint(&pin_dir, 0), 1);
            hit(&dp, ports[9]);
            let ct = dp.ct_stats().unwrap();
            assert_eq!(
                (
                    ct.get(CtEvent::Created).packets,
                    ct.get(CtEvent::Hit).packets
                ),
                (10, 10)
            );
        })
    });
}
