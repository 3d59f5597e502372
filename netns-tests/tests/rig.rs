//! The rig library, end to end (as root): every topology carries TCP and UDP
//! over IPv4 and IPv6, the safety refusals hold, a rig sends nothing on its
//! own, and nothing is left behind — not after a panic, not in the root
//! namespace.
//!
//! The tests run in parallel threads of one process; each builds its own rig,
//! and the sweeps only ever use a rig's own prefix.
use std::{
    collections::BTreeSet, net::SocketAddr, path::Path, process::Command, sync::Mutex,
    time::Duration,
};

use netns_tests::{
    Cidr, EchoClient, Error, HostKind, Netns, Proto, Rig, Route, ensure_not_root_thread, leftovers,
    sweep, sweep_orphans,
    topology::{
        ClientLbBackends, EcmpLbs, Endpoint, Family, NodeWithPods, Options, TwoHosts, TwoNodes,
        plan,
    },
};

const PORT: u16 = 7000;

/// Starts TCP and UDP echo servers named `name` on `host`'s address of
/// `family`, port [`PORT`].
fn serve(rig: &mut Rig, host: &Endpoint, family: Family, name: &str) -> SocketAddr {
    let addr = host.socket(family, PORT);
    for proto in [Proto::Tcp, Proto::Udp] {
        rig.serve_echo(&host.netns, proto, addr, name)
            .unwrap_or_else(|e| panic!("{proto:?} echo server on {addr}: {e}"));
    }
    addr
}

/// Sends `count` TCP and `count` UDP requests from `client` to `server` and
/// returns who answered.
fn answers(client: &Netns, server: SocketAddr, count: usize) -> Vec<String> {
    let client = EchoClient::new(client);
    let mut names = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        let echoes = client
            .each(proto, server, count)
            .expect("client runs in its namespace");
        for echo in echoes {
            let echo = echo.unwrap_or_else(|e| panic!("{proto:?} request to {server}: {e}"));
            names.push(echo.server);
        }
    }
    names
}

#[test]
fn two_hosts_echo_over_tcp_and_udp_on_both_families() {
    for kind in [HostKind::Wire, HostKind::Pod] {
        let mut hosts = TwoHosts::build(kind, &Options::default()).expect("rig builds");
        for family in Family::ALL {
            let server = serve(&mut hosts.rig, &hosts.b, family, "b");
            assert_eq!(
                answers(&hosts.a.netns, server, 3),
                ["b"; 6],
                "{kind:?} {family:?}"
            );
            // And the client really spoke from its own address.
            let echo = EchoClient::new(&hosts.a.netns).tcp(server, 1).unwrap();
            assert_eq!(echo[0].local.ip(), hosts.a.ip(family));
        }
    }
}

#[test]
fn wire_hosts_send_full_checksums_and_pods_keep_offloads() {
    let hosts = TwoHosts::build(HostKind::Wire, &Options::default()).unwrap();
    let wire = hosts.a.netns.exec("ethtool", &["-k", "eth0"]).unwrap();
    assert!(wire.contains("tx-checksumming: off"), "{wire}");
    let pods = TwoHosts::build(HostKind::Pod, &Options::default()).unwrap();
    let pod = pods.a.netns.exec("ethtool", &["-k", "eth0"]).unwrap();
    assert!(pod.contains("tx-checksumming: on"), "{pod}");
}

#[test]
fn client_reaches_every_backend_through_the_lb() {
    let mut topo = ClientLbBackends::build(3, &Options::default()).expect("rig builds");
    let before = topo.lb_back.netns.link_stats(&topo.lb_back.dev).unwrap();
    let backends = topo.backends.clone();
    for (i, backend) in backends.iter().enumerate() {
        let name = format!("b{i}");
        for family in Family::ALL {
            let server = serve(&mut topo.rig, backend, family, &name);
            assert_eq!(answers(&topo.client.netns, server, 2), [name.as_str(); 4]);
        }
    }
    // The LB forwarded it all: 3 backends x 2 families x (2 TCP flows of
    // several segments + 2 UDP requests) left through its backend side.
    let after = topo.lb_back.netns.link_stats(&topo.lb_back.dev).unwrap();
    assert!(
        after.since(&before).tx_packets >= 3 * 2 * (2 * 3 + 2),
        "{after:?}"
    );
    assert_eq!(topo.lb.sysctl("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(topo.lb.sysctl("net.ipv6.conf.all.forwarding").unwrap(), "1");
}

#[test]
fn static_neighbours_are_permanent_and_carry_traffic() {
    let options = Options {
        static_neighbours: true,
        mtu: Some(9000),
        ..Options::default()
    };
    let mut topo = ClientLbBackends::build(2, &options).expect("rig builds");
    let neigh = topo
        .client
        .netns
        .exec("ip", &["neigh", "show", "dev", "eth0"])
        .unwrap();
    for ip in [topo.lb_front.v4.to_string(), topo.lb_front.v6.to_string()] {
        let line = neigh
            .lines()
            .find(|l| l.starts_with(&format!("{ip} ")))
            .unwrap_or_default();
        assert!(
            line.contains("PERMANENT"),
            "no static entry for {ip}: {neigh}"
        );
    }
    let link = topo
        .client
        .netns
        .exec("ip", &["link", "show", "dev", "eth0"])
        .unwrap();
    assert!(link.contains("mtu 9000"), "{link}");
    let backend = topo.backends[1].clone();
    for family in Family::ALL {
        let server = serve(&mut topo.rig, &backend, family, "b1");
        assert_eq!(answers(&topo.client.netns, server, 1), ["b1"; 2]);
    }
}

#[test]
fn pods_reach_each_other_through_their_node() {
    let mut topo = NodeWithPods::build(3, &Options::default()).expect("rig builds");
    let pods = topo.node.pods.clone();
    for family in Family::ALL {
        let server = serve(&mut topo.rig, &pods[1].eth0, family, "pod1");
        for client in [&pods[0], &pods[2]] {
            assert_eq!(answers(&client.eth0.netns, server, 2), ["pod1"; 4]);
        }
        // The node itself reaches its pods too.
        assert_eq!(answers(&topo.node.netns, server, 1), ["pod1"; 2]);
    }
    for pod in &pods {
        assert!(topo.node.pod_range.v4.contains(pod.eth0.v4.into()));
        assert!(topo.node.pod_range.v6.contains(pod.eth0.v6.into()));
    }
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_the_fabric() {
    let mut topo = TwoNodes::build(2, &Options::default()).expect("rig builds");
    let here = topo.nodes[0].pods[0].clone();
    let there = topo.nodes[1].pods[1].clone();
    let before = topo.fabric[0].netns.link_stats("fab0").unwrap();
    for family in Family::ALL {
        let server = serve(&mut topo.rig, &there.eth0, family, "n1-pod1");
        assert_eq!(answers(&here.eth0.netns, server, 2), ["n1-pod1"; 4]);
        let back = serve(&mut topo.rig, &here.eth0, family, "n0-pod0");
        assert_eq!(answers(&there.eth0.netns, back, 1), ["n0-pod0"; 2]);
    }
    let after = topo.fabric[0].netns.link_stats("fab0").unwrap();
    assert!(after.since(&before).tx_packets > 0 && after.since(&before).rx_packets > 0);
}

#[test]
fn ecmp_router_spreads_vip_flows_over_every_lb() {
    let mut topo = EcmpLbs::build(2, 2, &Options::default()).expect("rig builds");
    for range in [topo.vip_range_v4, topo.vip_range_v6] {
        let family = if range.is_ipv6() { "-6" } else { "-4" };
        let routes = topo
            .router
            .exec(
                "ip",
                &[family, "route", "show", &range.network().to_string()],
            )
            .unwrap();
        assert_eq!(routes.matches("nexthop via").count(), 2, "{routes}");
    }
    // Every LB answers for VIP 1 itself, so the client sees which LB the
    // router picked for each flow.
    let (vip4, vip6) = plan::vip(1);
    let lbs = topo.lbs.clone();
    for (i, lb) in lbs.iter().enumerate() {
        topo.rig
            .add_address(&lb.netns, "lo", Cidr::host(vip4))
            .unwrap();
        topo.rig
            .add_address(&lb.netns, "lo", Cidr::host(vip6))
            .unwrap();
        for vip in [
            SocketAddr::new(vip4.into(), 80),
            SocketAddr::new(vip6.into(), 80),
        ] {
            topo.rig
                .serve_echo(&lb.netns, Proto::Tcp, vip, &format!("lb{i}"))
                .unwrap();
        }
    }
    for vip in [
        SocketAddr::new(vip4.into(), 80),
        SocketAddr::new(vip6.into(), 80),
    ] {
        // 32 flows over 2 paths all hashing to one: probability 2^-31.
        let echoes = EchoClient::new(&topo.client.netns).tcp(vip, 32).unwrap();
        let seen: BTreeSet<String> = echoes.into_iter().map(|e| e.server).collect();
        assert_eq!(
            seen,
            BTreeSet::from(["lb0".to_owned(), "lb1".to_owned()]),
            "{vip}"
        );
    }
    // Backends sit on the LAN behind; the router reaches them directly.
    let backends = topo.backends.clone();
    for (i, backend) in backends.iter().enumerate() {
        let name = format!("b{i}");
        for family in Family::ALL {
            let server = serve(&mut topo.rig, backend, family, &name);
            assert_eq!(answers(&topo.client.netns, server, 1), [name.as_str(); 2]);
        }
    }
}

#[test]
fn refuses_what_the_network_rules_forbid() {
    let mut hosts = TwoHosts::build(HostKind::Wire, &Options::default()).unwrap();
    let (a, b) = (hosts.a.clone(), hosts.b.clone());
    let rig = &mut hosts.rig;
    let addr_before = a
        .netns
        .exec("ip", &["-br", "addr", "show", "dev", "eth0"])
        .unwrap();
    let routes_before = a.netns.exec("ip", &["route", "show"]).unwrap();

    for bad in [
        "10.1.2.3/24",
        "198.18.0.9/8",
        "2001:db8::1/64",
        "2001:2::9/32",
    ] {
        let result = rig.add_address(&a.netns, "eth0", bad.parse().unwrap());
        assert!(
            matches!(result, Err(Error::AddressOutOfRange { .. })),
            "{bad}: {result:?}"
        );
    }
    let out = Route::to("10.0.0.0/8".parse().unwrap()).via(b.v4.into());
    assert!(matches!(
        rig.add_route(&a.netns, &out),
        Err(Error::AddressOutOfRange { .. })
    ));

    let defaults = [
        Route::default_v4().via("198.18.0.99".parse().unwrap()),
        Route::default_v4().via("192.0.2.1".parse().unwrap()),
        Route::default_v4().dev("eth0"),
        Route::default_v6().via("2001:db8::1".parse().unwrap()),
        Route::default_v6()
            .via(b.v6.into())
            .via("2001:2::99".parse().unwrap()),
    ];
    for route in &defaults {
        let result = rig.add_route(&a.netns, route);
        assert!(
            matches!(result, Err(Error::DefaultRouteOut { .. })),
            "{route}: {result:?}"
        );
    }
    let unknown = Route::to("198.19.0.0/16".parse().unwrap()).via("198.18.0.99".parse().unwrap());
    assert!(matches!(
        rig.add_route(&a.netns, &unknown),
        Err(Error::UnknownGateway { .. })
    ));
    let global = rig.set_sysctl(&a.netns, "kernel.hostname", "x");
    assert!(matches!(global, Err(Error::GlobalSysctl { .. })));
    let far = EchoClient::new(&a.netns).tcp("192.0.2.1:80".parse().unwrap(), 1);
    assert!(matches!(far, Err(Error::AddressOutOfRange { .. })));
    assert!(matches!(
        Netns::existing("default"),
        Err(Error::NotRigName { .. })
    ));
    let mut other = Rig::new().unwrap();
    let stranger = other.add_host("stranger", HostKind::Pod).unwrap();
    let foreign = rig.add_address(&stranger, "lo", "198.18.200.1/32".parse().unwrap());
    assert!(matches!(foreign, Err(Error::ForeignNamespace { .. })));

    // Nothing of the refused changes was applied.
    let addr_after = a
        .netns
        .exec("ip", &["-br", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert_eq!(addr_before, addr_after);
    assert_eq!(
        routes_before,
        a.netns.exec("ip", &["route", "show"]).unwrap()
    );

    // A default route via the rig's own address is fine.
    rig.add_route(&a.netns, &Route::default_v4().via(b.v4.into()))
        .unwrap();
    rig.add_route(&a.netns, &Route::default_v6().via(b.v6.into()))
        .unwrap();
    let default = a.netns.exec("ip", &["route", "show", "default"]).unwrap();
    assert!(default.contains(&format!("via {}", b.v4)), "{default}");
}

/// A rig-prefixed name bound to the root network namespace, removed on drop
/// (only the name: `ip netns del` unmounts and unlinks it).
struct RootAlias(String);

impl RootAlias {
    fn attach(name: &str) -> Self {
        let status = Command::new("ip")
            .args(["netns", "attach", name, &std::process::id().to_string()])
            .status()
            .expect("ip runs");
        assert!(status.success(), "ip netns attach {name}");
        Self(name.to_owned())
    }
}

impl Drop for RootAlias {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn refuses_to_enter_or_change_the_root_namespace() {
    // The test thread is in the root namespace; a rig namespace is not.
    assert!(matches!(ensure_not_root_thread(), Err(Error::RootThread)));
    let mut rig = Rig::new().unwrap();
    let ns = rig.add_host("h", HostKind::Pod).unwrap();
    ns.run(ensure_not_root_thread).unwrap().unwrap();

    // Whatever its name says, the root namespace is refused by every entry
    // point — before anything runs in it. (Every call here would be harmless
    // even if it got through.)
    let alias = RootAlias::attach(&format!("{}alias", rig.prefix()));
    let root = Netns::existing(&alias.0).unwrap();
    let mut ran = false;
    assert!(matches!(root.check(), Err(Error::RootNamespace { .. })));
    assert!(matches!(
        root.run(|| ran = true),
        Err(Error::RootNamespace { .. })
    ));
    assert!(!ran);
    assert!(matches!(
        root.link_stats("lo"),
        Err(Error::RootNamespace { .. })
    ));
    assert!(matches!(
        root.exec("true", &[]),
        Err(Error::RootNamespace { .. })
    ));
    assert!(matches!(
        root.command("true"),
        Err(Error::RootNamespace { .. })
    ));
    let server =
        netns_tests::EchoServer::start(&root, Proto::Udp, "127.0.0.1:0".parse().unwrap(), "x");
    assert!(matches!(server, Err(Error::RootNamespace { .. })));
    let client = EchoClient::new(&root).udp("127.0.0.1:9".parse().unwrap(), 1);
    assert!(matches!(client, Err(Error::RootNamespace { .. })));
    // And the rig does not take it for one of its own.
    let foreign = rig.add_address(&root, "lo", "198.18.200.1/32".parse().unwrap());
    assert!(matches!(foreign, Err(Error::ForeignNamespace { .. })));
}

/// The root namespace's links, addresses and routes, as `ip` prints them.
fn root_snapshot() -> String {
    let mut out = String::new();
    for args in [
        &["-br", "link", "show"][..],
        &["-br", "addr", "show"],
        &["-4", "route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
    ] {
        let output = Command::new("ip").args(args).output().expect("ip runs");
        assert!(output.status.success());
        out.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    out
}

#[test]
fn the_root_namespace_is_unchanged_by_a_rigs_lifetime() {
    let before = root_snapshot();
    {
        let mut two = TwoHosts::build(HostKind::Wire, &Options::default()).unwrap();
        let server = serve(&mut two.rig, &two.b, Family::V4, "b");
        answers(&two.a.netns, server, 1);
        two.rig.bpffs().unwrap();
        two.rig.spawn(&two.a.netns, "sleep", &["30"]).unwrap();
        let _lb = ClientLbBackends::build(2, &Options::default()).unwrap();
        let _node = NodeWithPods::build(2, &Options::default()).unwrap();
        let _nodes = TwoNodes::build(1, &Options::default()).unwrap();
        let _ecmp = EcmpLbs::build(2, 1, &Options::default()).unwrap();
        assert_eq!(before, root_snapshot(), "changed while the rigs were up");
    }
    assert_eq!(
        before,
        root_snapshot(),
        "changed after the rigs were dropped"
    );
}

#[test]
fn a_quiet_rig_sends_nothing_on_its_own() {
    let options = Options {
        static_neighbours: true,
        ..Options::default()
    };
    let topo = ClientLbBackends::build(2, &options).expect("rig builds");
    let links: Vec<(&Netns, &str)> = [&topo.client, &topo.lb_front, &topo.lb_back]
        .into_iter()
        .chain(&topo.backends)
        .flat_map(|e| {
            [
                (&e.netns, e.dev.as_str()),
                (&e.peer.netns, e.peer.dev.as_str()),
            ]
        })
        .collect();
    let read = || {
        links
            .iter()
            .map(|(ns, dev)| (format!("{ns}/{dev}"), ns.link_stats(dev).unwrap()))
            .collect::<Vec<_>>()
    };
    let silent = |stats: &[(String, netns_tests::LinkStats)]| {
        stats
            .iter()
            .filter(|(_, s)| s.rx_packets != 0 || s.tx_packets != 0)
            .map(|(link, s)| format!("{link}: {s:?}"))
            .collect::<Vec<_>>()
    };
    // Nothing since the links came up (DAD, router solicitations, MLD
    // reports of the hosts and of the forwarding LB's all-routers group)...
    assert_eq!(silent(&read()), Vec::<String>::new());
    // ...and nothing during a second of idling. This is an observation
    // window, not a synchronisation.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(silent(&read()), Vec::<String>::new());
}

#[test]
fn a_noisy_rig_is_heard_so_the_quiet_test_can_fail() {
    let options = Options {
        quiet: false,
        ..Options::default()
    };
    let hosts = TwoHosts::build(HostKind::Wire, &options).unwrap();
    netns_tests::wait_until(Duration::from_secs(5), "an MLD report on eth0", || {
        hosts.b.netns.link_stats("eth0").unwrap().rx_packets > 0
    })
    .unwrap();
}

/// The file system type mounted at `path`, from `/proc/self/mountinfo`.
fn fs_type(path: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo.lines().find_map(|line| {
        let mount_point = line.split(' ').nth(4)?;
        let (_, after) = line.split_once(" - ")?;
        (Path::new(mount_point) == path).then(|| after.split(' ').next().unwrap_or("").to_owned())
    })
}

#[test]
fn a_panic_mid_test_leaves_nothing_behind() {
    let seen: Mutex<Option<(String, u32)>> = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let mut topo = ClientLbBackends::build(2, &Options::default()).unwrap();
        let bpffs = topo.rig.bpffs().unwrap();
        assert_eq!(fs_type(&bpffs).as_deref(), Some("bpf"));
        let process = topo.rig.spawn(&topo.lb, "sleep", &["30"]).unwrap();
        let backend = topo.backends[0].clone();
        serve(&mut topo.rig, &backend, Family::V6, "b0");
        let prefix = topo.rig.prefix();
        let found = leftovers(&prefix).unwrap();
        assert_eq!(found.namespaces.len(), 5, "{found:?}");
        assert!(found.mounts.iter().any(|m| m == &bpffs), "{found:?}");
        *seen.lock().unwrap() = Some((prefix, process.pid));
        panic!("a deliberate panic in the middle of a test");
    });
    assert!(result.is_err());
    let (prefix, pid) = seen.lock().unwrap().clone().expect("the rig was built");
    let left = leftovers(&prefix).unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived"
    );
}

#[test]
fn sweep_removes_a_forgotten_rig() {
    let mut hosts = TwoHosts::build(HostKind::Wire, &Options::default()).unwrap();
    let prefix = hosts.rig.prefix();
    let bpffs = hosts.rig.bpffs().unwrap();
    let process = hosts.rig.spawn(&hosts.a.netns, "sleep", &["30"]).unwrap();
    std::mem::forget(hosts);

    let found = leftovers(&prefix).unwrap();
    assert_eq!(found.namespaces.len(), 2, "{found:?}");
    assert!(found.mounts.contains(&bpffs), "{found:?}");
    assert_eq!(found.dirs.len(), 1, "{found:?}");

    let report = sweep(&prefix).unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(report.removed.namespaces, found.namespaces);
    assert!(report.killed.contains(&process.pid), "{report:?}");
    assert!(leftovers(&prefix).unwrap().is_empty());
    // The forgotten child is ours to reap.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(process.pid).unwrap());
    nix::sys::wait::waitpid(pid, None).unwrap();
}

#[test]
fn sweep_orphans_spares_live_rigs() {
    // A pid that surely is not running any more.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let orphan = format!("{}{dead}-0-orphan", netns_tests::PREFIX);
    let status = Command::new("ip")
        .args(["netns", "add", &orphan])
        .status()
        .unwrap();
    assert!(status.success());
    let mut live = Rig::new().unwrap();
    live.add_host("live", HostKind::Pod).unwrap();

    let report = sweep_orphans().unwrap();
    // Another test process sweeping orphans at the same time may have been
    // the one to remove it; either way it is gone.
    let left = leftovers(&orphan).unwrap();
    assert!(left.is_empty(), "{left:?} after {report:?}");
    assert_eq!(leftovers(&live.prefix()).unwrap().namespaces.len(), 1);
}

#[test]
fn an_xdp_program_attaches_inside_a_rig_namespace() {
    use xdp_lb::{AttachMode, Datapath, ProgramName};

    let mut hosts = TwoHosts::build(HostKind::Wire, &Options::default()).unwrap();
    let mut datapath = Datapath::load().expect("programs load");
    let attachment = hosts
        .b
        .end()
        .attach_xdp(&mut datapath, ProgramName::XdpPass, AttachMode::Native)
        .expect("attaches to the veth in b");
    assert_eq!(attachment.iface(), "eth0");
    let link = hosts
        .b
        .netns
        .exec("ip", &["link", "show", "dev", "eth0"])
        .unwrap();
    assert!(link.contains("xdp"), "{link}");
    // A pass program changes nothing for the traffic.
    for family in Family::ALL {
        let server = serve(&mut hosts.rig, &hosts.b, family, "b");
        assert_eq!(answers(&hosts.a.netns, server, 2), ["b"; 4]);
    }
    datapath.detach(attachment).unwrap();
}

#[test]
fn spawned_processes_run_inside_the_namespace_and_die_with_the_rig() {
    let mut hosts = TwoHosts::build(HostKind::Pod, &Options::default()).unwrap();
    let a = hosts.a.netns.clone();
    let sleeper = hosts.rig.spawn(&a, "sleep", &["30"]).unwrap();
    let identify = Command::new("ip")
        .args(["netns", "identify", &sleeper.pid.to_string()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&identify.stdout).trim(), a.name());

    // Output lands in the log; a process that ends is seen to end.
    let lister = hosts
        .rig
        .spawn(&a, "ip", &["-br", "addr", "show", "dev", "eth0"])
        .unwrap();
    netns_tests::wait_until(Duration::from_secs(5), "ip to exit", || {
        hosts.rig.process_status(lister.pid).unwrap().is_some()
    })
    .unwrap();
    let log = std::fs::read_to_string(&lister.log).unwrap();
    assert!(log.contains(&hosts.a.v4.to_string()), "{log}");

    let status = hosts.rig.stop_process(sleeper.pid).unwrap();
    assert!(!status.success());
    assert!(
        hosts.rig.stop_process(sleeper.pid).is_err(),
        "already stopped"
    );

    let survivor = hosts.rig.spawn(&a, "sleep", &["30"]).unwrap();
    drop(hosts);
    assert!(!Path::new(&format!("/proc/{}", survivor.pid)).exists());
}
