//! Pinned links: an attachment outlives its `Datapath`, an upgrade swaps the
//! program inside the same link (same maps, same link ID), and detaching
//! removes the pin. Each test runs in a private network namespace with its
//! own bpffs, on veth pairs of its own.
mod support;

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, PerCpuArray};
use support::{in_private_netns, ip_batch, run, with_private_bpffs};
use xdp_lb::{
    AddressKind, AttachMode, Counter, DEFAULT_VERSION_STAMP, Datapath, Error, Frontend,
    LoadOptions, MapSizes, ParseCounter, PinnedLinkInfo, ProgramName, Protocol, ServiceOptions,
};

const SIZES: MapSizes = MapSizes {
    services: 16,
    backends: 16,
    conntrack: 64,
    addresses: 4,
    fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
};
/// The MAC of `xa0`, the end with the program.
const XA0_MAC: &str = "02:00:00:00:50:02";

/// A veth pair `xa0`–`xa1`: the program goes on `xa0`; datagrams sent from
/// 198.18.50.1 (on `xa1`) to 198.18.50.2 leave through `xa1` and arrive on
/// `xa0`. IPv6 is off so that no neighbour discovery reaches the program.
fn veth_pair(a: &str, b: &str, mac: &str) {
    ip_batch(&format!(
        "link add {a} address {mac} type veth peer name {b}\nlink set {a} up\nlink set {b} up\n"
    ));
}

fn topology() {
    run(&[
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
    ip_batch("link set lo up\n");
    veth_pair("xa0", "xa1", XA0_MAC);
    ip_batch(&format!(
        "addr add 198.18.50.1/24 dev xa1\nneigh add 198.18.50.2 lladdr {XA0_MAC} dev xa1 nud permanent\n"
    ));
}

/// Sends one UDP datagram through `xa1` to `xa0`.
fn send_through_veth() {
    let socket = UdpSocket::bind("198.18.50.1:0").expect("bind on xa1's address");
    socket
        .send_to(b"xlb", "198.18.50.2:9")
        .expect("send through xa1");
}

/// The UDPv4 count of the parser, read from the pinned map itself (works
/// with no `Datapath` alive).
fn pinned_udp4_count(maps: &Path) -> u64 {
    let data = MapData::from_pin(maps.join("PARSE_STATS")).expect("pinned PARSE_STATS");
    let stats = PerCpuArray::<_, Counter>::try_from(Map::from_map_data(data).unwrap()).unwrap();
    let slot: u32 = ParseCounter::Udp4.into();
    stats.get(&slot, 0).unwrap().iter().map(|c| c.packets).sum()
}

/// Sends datagrams until the pinned UDPv4 counter passes `before` (the
/// program on `xa0` ran), or panics after a deadline.
fn assert_program_runs(maps: &Path, before: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        send_through_veth();
        let now = pinned_udp4_count(maps);
        if now > before {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no program counted the datagrams"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The XDP program ID `ip link` reports for `iface`, if any.
fn ip_link_xdp_prog(iface: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", iface])
        .output()
        .expect("ip link");
    assert!(out.status.success(), "ip link show dev {iface}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = text.find("prog/xdp")?;
    let rest = &text[at..];
    let id = rest.split_whitespace().skip_while(|w| *w != "id").nth(1)?;
    Some(id.parse().expect("a program ID"))
}

/// Waits until `ip link` shows `expected` as `iface`'s XDP program.
fn wait_for_ip_link(iface: &str, expected: Option<u32>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ip_link_xdp_prog(iface) != expected {
        assert!(
            Instant::now() < deadline,
            "{iface}: XDP program {:?}, expected {expected:?}",
            ip_link_xdp_prog(iface)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn load(maps: &Path, stamp: u32) -> Datapath {
    Datapath::load_stamped(
        &LoadOptions {
            sizes: SIZES,
            pin_dir: Some(maps.to_owned()),
        },
        stamp,
    )
    .expect("load")
}

#[test]
fn an_upgrade_replaces_the_program_in_the_pinned_link_without_detaching() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            topology();
            let maps = bpffs.join("maps");
            let links = bpffs.join("links");
            let frontend = Frontend::new(SocketAddr::from(([198, 18, 100, 1], 80)), Protocol::Tcp);

            // Agent A: stamp 1, a service, attached through a pinned link.
            let mut a = load(&maps, 1);
            assert_eq!(a.version_stamp().unwrap(), 1);
            a.set_address(frontend.addr.ip(), AddressKind::Vip).unwrap();
            a.upsert_service(
                &frontend,
                5,
                &ServiceOptions {
                    client_ip_affinity: Some(Duration::from_secs(10_800)),
                    ..ServiceOptions::default()
                },
            )
            .unwrap();
            let prog_a = a.program_id(ProgramName::XdpLb).unwrap();
            let attached = a
                .attach_pinned(ProgramName::XdpLb, "xa0", AttachMode::Native, &links)
                .expect("attach and pin");
            assert!(!attached.replaced());
            assert_eq!(attached.native(), Some(true), "veths take native XDP");
            assert_eq!(attached.path(), links.join("xa0"));
            let link = attached.link();
            assert_eq!(link.program_id, prog_a);
            assert_eq!(link.ifindex, support::ifindex("xa0"));
            assert_eq!(Datapath::pinned_link(&links, "xa0").unwrap(), Some(link));
            wait_for_ip_link("xa0", Some(prog_a));
            let counted = assert_program_runs(&maps, pinned_udp4_count(&maps));

            // A is gone entirely: the link, its program and the maps stay.
            drop(a);
            assert_eq!(Datapath::pinned_link(&links, "xa0").unwrap(), Some(link));
            assert_eq!(ip_link_xdp_prog("xa0"), Some(prog_a));
            let counted = assert_program_runs(&maps, counted);

            // Agent B: another build (stamp 2) on the same pinned maps.
            let mut b = load(&maps, 2);
            assert_eq!(b.version_stamp().unwrap(), 2);
            assert_eq!(
                b.frontends().unwrap(),
                [(
                    frontend,
                    5,
                    ServiceOptions {
                        client_ip_affinity: Some(Duration::from_secs(10_800)),
                        dsr: false,
                        snat_remote: false,
                        drop_without_backends: false,
                        source_ranges_only: false,
                    }
                )]
            );
            let prog_b = b.program_id(ProgramName::XdpLb).unwrap();
            assert_ne!(prog_b, prog_a);
            let upgraded = b
                .attach_pinned(ProgramName::XdpLb, "xa0", AttachMode::Native, &links)
                .expect("replace the program");
            assert!(upgraded.replaced());
            assert_eq!(upgraded.native(), None, "the link keeps its mode");
            assert_eq!(
                upgraded.link(),
                PinnedLinkInfo {
                    program_id: prog_b,
                    ..link
                },
                "same link, B's program"
            );
            assert_eq!(
                Datapath::pinned_link(&links, "xa0").unwrap(),
                Some(upgraded.link())
            );
            assert_eq!(ip_link_xdp_prog("xa0"), Some(prog_b));
            // B reads the counts A's program made (a datagram may still be
            // on its way: at least), and its program counts into them.
            let udp4 = |dp: &Datapath| dp.parse_stats().unwrap().get(ParseCounter::Udp4).packets;
            assert!(udp4(&b) >= counted, "B sees A's counts");
            let counted = assert_program_runs(&maps, udp4(&b));
            assert!(udp4(&b) >= counted);
            // Taking over its own link again changes nothing.
            let again = b
                .attach_pinned(ProgramName::XdpLb, "xa0", AttachMode::Native, &links)
                .unwrap();
            assert_eq!(again.link(), upgraded.link());

            // Unpinning detaches once nothing holds the link.
            assert!(Datapath::detach_pinned(&links, "xa0").unwrap());
            assert_eq!(Datapath::pinned_link(&links, "xa0").unwrap(), None);
            wait_for_ip_link("xa0", None);
            assert!(!Datapath::detach_pinned(&links, "xa0").unwrap());
            drop(b);
        });
    });
}

#[test]
fn a_pin_left_by_a_deleted_interface_is_replaced_by_a_fresh_link() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            ip_batch("link set lo up\n");
            veth_pair("xb0", "xb1", "02:00:00:00:51:02");
            let links = bpffs.join("links");
            let mut dp = Datapath::load().expect("load");
            assert_eq!(dp.version_stamp().unwrap(), DEFAULT_VERSION_STAMP);
            let first = dp
                .attach_pinned(ProgramName::XdpPass, "xb0", AttachMode::Native, &links)
                .unwrap();
            run(&["ip", "link", "del", "xb0"]);
            // The pin keeps the link, defunct: no interface any more.
            let defunct = Datapath::pinned_link(&links, "xb0").unwrap().unwrap();
            assert_eq!(
                defunct,
                PinnedLinkInfo {
                    ifindex: 0,
                    ..first.link()
                }
            );

            veth_pair("xb0", "xb1", "02:00:00:00:51:02");
            let second = dp
                .attach_pinned(ProgramName::XdpPass, "xb0", AttachMode::Native, &links)
                .unwrap();
            assert!(!second.replaced(), "a defunct link is not taken over");
            assert_ne!(second.link().link_id, first.link().link_id);
            assert_eq!(second.link().ifindex, support::ifindex("xb0"));
            assert_eq!(
                second.link().program_id,
                dp.program_id(ProgramName::XdpPass).unwrap()
            );
            wait_for_ip_link("xb0", Some(second.link().program_id));
            assert!(Datapath::detach_pinned(&links, "xb0").unwrap());
            wait_for_ip_link("xb0", None);
        });
    });
}

#[test]
fn foreign_pins_and_unknown_interfaces_are_refused() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            ip_batch("link set lo up\n");
            veth_pair("xc0", "xc1", "02:00:00:00:52:02");
            veth_pair("xd0", "xd1", "02:00:00:00:53:02");
            let links = bpffs.join("links");
            let maps = bpffs.join("maps");
            let mut dp = load(&maps, 7);

            // xc0's link, pinned under xd0's name.
            let xc0 = dp
                .attach_pinned(ProgramName::XdpPass, "xc0", AttachMode::Native, &links)
                .unwrap();
            std::fs::rename(links.join("xc0"), links.join("xd0")).unwrap();
            let err = dp
                .attach_pinned(ProgramName::XdpLb, "xd0", AttachMode::Native, &links)
                .expect_err("a link of another interface");
            assert!(matches!(err, Error::ForeignLink { .. }), "{err:?}");
            assert_eq!(ip_link_xdp_prog("xd0"), None);
            assert_eq!(ip_link_xdp_prog("xc0"), Some(xc0.link().program_id));

            // A map pinned where a link is expected is neither taken nor removed.
            let not_links = bpffs.join("not-links");
            std::fs::create_dir(&not_links).unwrap();
            MapData::from_pin(maps.join("LAYOUT"))
                .unwrap()
                .pin(not_links.join("xc0"))
                .unwrap();
            let err = dp
                .attach_pinned(ProgramName::XdpLb, "xc0", AttachMode::Native, &not_links)
                .expect_err("a map, not a link");
            assert!(matches!(err, Error::ForeignLink { .. }), "{err:?}");
            let err = Datapath::detach_pinned(&not_links, "xc0").expect_err("not a link");
            assert!(matches!(err, Error::ForeignLink { .. }), "{err:?}");
            assert!(not_links.join("xc0").exists());
            assert!(matches!(
                Datapath::pinned_link(&not_links, "xc0"),
                Err(Error::ForeignLink { .. })
            ));

            for iface in [
                "nonexistent0",
                "../xc0",
                "",
                "a/b",
                "waytoolonginterfacename",
            ] {
                let err = dp
                    .attach_pinned(ProgramName::XdpLb, iface, AttachMode::Native, &links)
                    .expect_err(iface);
                assert!(
                    matches!(err, Error::UnknownInterface { .. }),
                    "{iface}: {err:?}"
                );
            }
            assert!(matches!(
                Datapath::detach_pinned(&links, "../maps"),
                Err(Error::UnknownInterface { .. })
            ));
            assert!(Datapath::detach_pinned(&links, "xd0").unwrap());
            wait_for_ip_link("xc0", None);
        });
    });
}

/// The link pinned for `iface` at `hook` (`ingress` or `egress`) under `pods`.
fn pod_link(pods: &Path, hook: &str, iface: &str) -> Option<PinnedLinkInfo> {
    Datapath::pinned_link(&pods.join(hook), iface).expect("read the pod link")
}

#[test]
fn pod_interface_links_outlive_the_datapath_and_an_upgrade_takes_them_over() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            topology();
            let maps = bpffs.join("maps");
            let pods = bpffs.join("pods");

            // Agent A pins both TC links of `xa0`, then exits.
            let mut a = load(&maps, 1);
            a.attach_pod_interface_pinned("xa0", &pods)
                .expect("attach A");
            let hooks = [
                ("ingress", ProgramName::TcLbIngress),
                ("egress", ProgramName::TcLbEgress),
            ];
            let first: Vec<PinnedLinkInfo> = hooks
                .iter()
                .map(|&(hook, program)| {
                    let link = pod_link(&pods, hook, "xa0").expect("pinned");
                    assert_eq!(link.program_id, a.program_id(program).unwrap());
                    link
                })
                .collect();
            drop(a);
            assert_eq!(Datapath::pinned_pod_interfaces(&pods), ["xa0"]);

            // With no agent, the ingress program still sees what arrives on
            // `xa0` (it counts in the pinned parser counters).
            let seen = assert_program_runs(&maps, pinned_udp4_count(&maps));

            // Agent B (another build) takes both links over in place.
            let mut b = load(&maps, 2);
            b.attach_pod_interface_pinned("xa0", &pods)
                .expect("attach B");
            for (&(hook, program), before) in hooks.iter().zip(&first) {
                let link = pod_link(&pods, hook, "xa0").expect("still pinned");
                assert_eq!(link.link_id, before.link_id, "{hook}: the same link");
                assert_eq!(link.program_id, b.program_id(program).unwrap());
                assert_ne!(link.program_id, before.program_id);
            }
            assert_program_runs(&maps, seen);

            // Detaching removes both pins; an unknown interface is refused.
            assert!(b.detach_pod_interface_pinned("xa0", &pods).unwrap());
            for (hook, _) in hooks {
                assert_eq!(pod_link(&pods, hook, "xa0"), None);
            }
            assert!(!b.detach_pod_interface_pinned("xa0", &pods).unwrap());
            assert!(Datapath::pinned_pod_interfaces(&pods).is_empty());
            assert!(matches!(
                b.attach_pod_interface_pinned("nosuch0", &pods),
                Err(Error::UnknownInterface { .. })
            ));
        });
    });
}

#[test]
fn an_uplink_egress_link_outlives_the_datapath_and_an_upgrade_takes_it_over() {
    in_private_netns(|| {
        with_private_bpffs(|bpffs| {
            topology();
            let maps = bpffs.join("maps");
            let uplinks = bpffs.join("uplinks");

            // Agent A pins `tc_lb_uplink` at the egress of `xa0`, then exits.
            let mut a = load(&maps, 1);
            a.attach_uplink_egress_pinned("xa0", &uplinks)
                .expect("attach A");
            let first = Datapath::pinned_link(&uplinks, "xa0")
                .unwrap()
                .expect("pinned");
            assert_eq!(
                first.program_id,
                a.program_id(ProgramName::TcLbUplink).unwrap()
            );
            drop(a);
            assert_eq!(Datapath::pinned_uplink_egresses(&uplinks), ["xa0"]);

            // Agent B (another build) takes the link over in place.
            let mut b = load(&maps, 2);
            b.attach_uplink_egress_pinned("xa0", &uplinks)
                .expect("attach B");
            let link = Datapath::pinned_link(&uplinks, "xa0")
                .unwrap()
                .expect("still pinned");
            assert_eq!(link.link_id, first.link_id, "the same link");
            assert_eq!(
                link.program_id,
                b.program_id(ProgramName::TcLbUplink).unwrap()
            );
            assert_ne!(link.program_id, first.program_id);

            // Removing the pin detaches it; an unknown interface is refused.
            assert!(Datapath::detach_uplink_egress_pinned("xa0", &uplinks).unwrap());
            assert_eq!(Datapath::pinned_link(&uplinks, "xa0").unwrap(), None);
            assert!(!Datapath::detach_uplink_egress_pinned("xa0", &uplinks).unwrap());
            assert!(Datapath::pinned_uplink_egresses(&uplinks).is_empty());
            assert!(matches!(
                b.attach_uplink_egress_pinned("nosuch0", &uplinks),
                Err(Error::UnknownInterface { .. })
            ));
        });
    });
}
