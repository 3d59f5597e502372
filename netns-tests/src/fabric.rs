//! The ClusterIP fabric's netns scenario (issue 7), as the `fabric` tests
//! use it: nodes with pods, the TC program on every pod veth, `xdp_lb` on
//! every node uplink and fabric link, and services programmed into each
//! node's datapath as the agent of that node would program them.
//!
//! ```text
//! client eth0 ── uplink0 [xdp_lb] node0 [xdp_lb] fab0 ── fab0 [xdp_lb] node1
//! [xdp_pass]                   │                              │
//!                    pod<i> [tc_lb] ── eth0 n0-pod<i>   pod<i> [tc_lb] ── eth0 n1-pod<i>
//! ```
//! Pods keep the kernel's offloads (their packets carry partial checksums:
//! hence TC, not XDP, on their veths); the uplink and the fabric link are
//! wire-like (TX checksum offload off on both ends), so `xdp_lb` handles
//! what crosses them (DESIGN.md, "Which hook where"). Every XDP program that
//! another one may redirect into has an XDP program on the far end of its
//! veth (the client's `xdp_pass`, the other node's `xdp_lb`), which this
//! kernel needs to deliver (DESIGN.md, "Known pitfalls").
//!
//! Each node loads its own [`Datapath`] (its own maps, as one agent per node
//! has). A service is programmed into every node: its backends with `local`
//! set on the node that runs them, its ClusterIP as a VIP, its NodePort on
//! the node's addresses. A node's addresses are its uplink's (node 0, when
//! there is a client) and its fabric end's (two nodes); its source-NAT
//! address is its fabric address, or its uplink's on a node without a
//! fabric, which the backends reach directly.
//!
//! [`PeerEchoServer`] greets every connection with its name and the peer
//! address it sees (so a test can tell whether the source was translated),
//! then echoes every byte; [`PeerSession`] is its client.

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream},
    str::FromStr as _,
    time::{Duration, Instant},
};

use tracing::warn;
use xdp_lb::{
    AddressKind, AttachMode, Attachment, Config, CtEvent, CtStats, Datapath, Frontend, LoadOptions,
    MapSizes, PodAttachment, ProgramName, Protocol, ServiceOptions, UplinkAttachment, Verdict,
    VerdictStats,
};

use crate::{
    Error, Netns, Proto, Result, Rig,
    http::HttpServer,
    lb_scenario,
    server::{self, Kind, ServerThread, Shared},
    stream::open_greeted,
    topology::{Endpoint, Family, Node, NodeWithPods, Options, OutsideClient, Pod, TwoNodes, plan},
};

/// The Maglev hash seed of every node (equal everywhere, as the agents share it).
pub const HASH_SEED: u64 = 0x786c_6200_0000_0007;
/// The source a pod sees when it reaches itself through a service: inside
/// the VIP range, which pods route via their node like the rest of the rig.
pub const HAIRPIN_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
/// The IPv6 hairpin source (2001:2::/48 ends at 2001:2:0:ffff::, so the
/// third group stays 0).
pub const HAIRPIN_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0xffff, 0, 0, 0, 1);
/// The maps of each node: far more than any scenario uses, far less memory
/// than the defaults.
pub const SIZES: MapSizes = MapSizes {
    services: 64,
    backends: 64,
    conntrack: 16_384,
    addresses: 64,
    fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
};
/// How long a [`PeerEchoServer`] connection may stay idle before the server
/// closes it.
const PEER_MAX_IDLE: Duration = Duration::from_secs(60);
/// How often a [`PeerEchoServer`] connection looks at the stop flag.
const PEER_POLL: Duration = Duration::from_millis(100);
/// How long a [`PeerEchoServer`] waits for one write to go out.
const PEER_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How errors and logs name the server.
const PEER_KIND: Kind = Kind::new("a", "peer echo");

/// The hairpin source of `family`.
pub fn hairpin_source(family: Family) -> IpAddr {
    match family {
        Family::V4 => HAIRPIN_SOURCE_V4.into(),
        Family::V6 => HAIRPIN_SOURCE_V6.into(),
    }
}

/// ClusterIP number `n` (from 1) of `family`: plan VIP `n`.
pub fn cluster_ip(n: u16, family: Family) -> IpAddr {
    let (v4, v6) = plan::vip(n);
    match family {
        Family::V4 => v4.into(),
        Family::V6 => v6.into(),
    }
}

fn datapath_error(source: xdp_lb::Error) -> Error {
    Error::Datapath(Box::new(source))
}

/// The rig shape a [`Fabric`] is built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// 1 ([`NodeWithPods`]) or 2 ([`TwoNodes`]).
    pub nodes: usize,
    /// Pods on each node.
    pub pods_per_node: usize,
    /// An [`OutsideClient`] on node 0's uplink.
    pub outside_client: bool,
}

/// A pod, by node and index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    pub node: usize,
    pub pod: usize,
}

impl PodRef {
    /// Pod `pod` of node `node`.
    pub const fn new(node: usize, pod: usize) -> Self {
        Self { node, pod }
    }
}

/// A service as the agent sees it: its frontends and its backends (pods).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Its ClusterIP (plan VIP number) and port, if it has one.
    pub cluster_ip: Option<(u16, u16)>,
    /// Its NodePort, served on every node address.
    pub node_port: Option<u16>,
    /// The pods behind it.
    pub backends: Vec<PodRef>,
    /// The port the pods serve it on.
    pub target_port: u16,
    /// `externalTrafficPolicy: Cluster`: source NAT on the NodePort frontend
    /// when the chosen backend is on another node (never on the ClusterIP:
    /// a pod's source is routable).
    pub snat_remote: bool,
}

/// What [`Fabric::add_service`] programmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programmed {
    /// The service ID (the same on every node).
    pub id: u32,
    /// `ClusterIP:port`, if any.
    pub cluster_ip: Option<SocketAddr>,
    /// The NodePort on each node address, per node.
    pub node_ports: Vec<Vec<SocketAddr>>,
    /// The backends: ID and address.
    pub backends: Vec<(u32, SocketAddr)>,
}

/// One node's datapath and what it has attached.
#[derive(Debug)]
pub struct NodeDatapath {
    /// The node's maps and programs.
    pub datapath: Datapath,
    /// Its XDP programs (its own and the `xdp_pass` across its uplink).
    attachments: Vec<Attachment>,
    /// The TC programs on its pods' veths.
    pods: Vec<PodAttachment>,
    /// `tc_lb_uplink` at the egress of its uplinks, as the agent attaches
    /// it: what the node itself sends.
    uplinks: Vec<UplinkAttachment>,
}

/// Nodes with pods, their datapaths, the services programmed into them and
/// the servers the tests run; everything is removed when it is dropped.
#[derive(Debug)]
pub struct Fabric {
    // Declared first so the programs detach before the rig goes.
    /// Node `i`'s datapath.
    pub datapaths: Vec<NodeDatapath>,
    /// Servers, stopped before the rig goes.
    servers: Vec<Server>,
    /// The nodes and their pods.
    pub nodes: Vec<Node>,
    /// Node `i`'s end of the fabric link (two nodes only).
    pub fabric: Vec<Endpoint>,
    /// The client outside the nodes, if the shape has one.
    pub client: Option<OutsideClient>,
    /// The rig.
    pub rig: Rig,
    next_service: u32,
    backend_ids: BTreeMap<(SocketAddr, Protocol), u32>,
}

#[derive(Debug)]
enum Server {
    Http(HttpServer),
    Peer(PeerEchoServer),
}

impl Fabric {
    /// Builds the rig of `shape` without any datapath: what the programs are
    /// tested on, reachable as plain routing makes it.
    pub fn build_plain(shape: Shape, options: &Options) -> Result<Self> {
        let (rig, nodes, fabric, client) = match shape.nodes {
            1 => {
                let mut topo = NodeWithPods::build(shape.pods_per_node, options)?;
                let client = shape
                    .outside_client
                    .then(|| topo.add_outside_client(options))
                    .transpose()?;
                (topo.rig, vec![topo.node], Vec::new(), client)
            }
            2 => {
                let mut topo = TwoNodes::build(shape.pods_per_node, options)?;
                let client = shape
                    .outside_client
                    .then(|| topo.add_outside_client(options))
                    .transpose()?;
                (topo.rig, topo.nodes.into(), topo.fabric.into(), client)
            }
            n => {
                return Err(Error::Invalid {
                    what: "fabric nodes",
                    input: n.to_string(),
                    expected: "1 or 2",
                });
            }
        };
        Ok(Self {
            datapaths: Vec::new(),
            servers: Vec::new(),
            nodes,
            fabric,
            client,
            rig,
            next_service: 1,
            backend_ids: BTreeMap::new(),
        })
    }

    /// Builds the rig of `shape` and gives every node its datapath: loaded,
    /// configured (the scenario's hash seed, source-NAT and hairpin
    /// addresses, then `tune`), its node addresses set, `tc_lb` on every
    /// pod veth and `xdp_lb` on its uplink and fabric end.
    pub fn build(shape: Shape, options: &Options, tune: impl Fn(&mut Config)) -> Result<Self> {
        let mut fabric = Self::build_plain(shape, options)?;
        for node in 0..fabric.nodes.len() {
            let datapath = fabric.load_node(node, &tune)?;
            fabric.datapaths.push(datapath);
        }
        // The far ends first, so no redirect ever meets a veth without its
        // receiver: the client's xdp_pass, then each node's xdp_lb.
        if let Some(client) = &fabric.client {
            let pass = client.client.netns.attach_xdp(
                &client.client.dev,
                &mut fabric.datapaths[0].datapath,
                ProgramName::XdpPass,
                AttachMode::Native,
            )?;
            fabric.datapaths[0].attachments.push(pass);
        }
        for node in 0..fabric.nodes.len() {
            let sides: Vec<Endpoint> = fabric.node_interfaces(node).into_iter().cloned().collect();
            for side in &sides {
                // As the agent sets it where it attaches xdp_lb: a source-NAT
                // packet that xdp_lb hands to the kernel (its next hop's MAC
                // not known yet) has one of the node's own addresses as its
                // source, which IPv4 otherwise drops as a martian.
                let key = format!("net.ipv4.conf.{}.accept_local", side.dev);
                fabric.rig.set_sysctl(&side.netns, &key, "1")?;
            }
            let datapath = &mut fabric.datapaths[node];
            for side in sides {
                let lb = side.netns.attach_xdp(
                    &side.dev,
                    &mut datapath.datapath,
                    ProgramName::XdpLb,
                    AttachMode::Native,
                )?;
                datapath.attachments.push(lb);
                let egress = side
                    .netns
                    .run(|| datapath.datapath.attach_uplink_egress(&side.dev))?
                    .map_err(datapath_error)?;
                datapath.uplinks.push(egress);
            }
        }
        Ok(fabric)
    }

    fn load_node(&self, node: usize, tune: &impl Fn(&mut Config)) -> Result<NodeDatapath> {
        let mut datapath = Datapath::load_with(&LoadOptions {
            sizes: SIZES,
            pin_dir: None,
        })
        .map_err(datapath_error)?;
        let mut config = Config {
            hash_seed: HASH_SEED,
            hairpin_source_v4: HAIRPIN_SOURCE_V4.octets(),
            hairpin_source_v6: HAIRPIN_SOURCE_V6.octets(),
            ..Config::default()
        };
        if let Some(source) = self.snat_endpoint(node) {
            config.snat_source_v4 = source.v4.octets();
            config.snat_source_v6 = source.v6.octets();
        }
        tune(&mut config);
        datapath.set_config(&config).map_err(datapath_error)?;
        for side in self.node_interfaces(node) {
            for family in Family::ALL {
                datapath
                    .set_address(side.ip(family), AddressKind::Node)
                    .map_err(datapath_error)?;
            }
        }
        let mut pods = Vec::with_capacity(self.nodes[node].pods.len());
        for pod in &self.nodes[node].pods {
            let side = &pod.host_side;
            let attached = side
                .netns
                .run(|| datapath.attach_pod_interface(&side.dev))?
                // The loader's error names the program and the interface.
                .map_err(datapath_error)?;
            pods.push(attached);
        }
        Ok(NodeDatapath {
            datapath,
            attachments: Vec::new(),
            pods,
            uplinks: Vec::new(),
        })
    }

    /// Node `node`'s interfaces toward other machines: its uplink (node 0,
    /// with a client) and its fabric end (two nodes). Their addresses are the
    /// node's addresses, where NodePorts are served.
    pub fn node_interfaces(&self, node: usize) -> Vec<&Endpoint> {
        let uplink = self
            .client
            .as_ref()
            .filter(|_| node == 0)
            .map(|c| &c.uplink);
        uplink.into_iter().chain(self.fabric.get(node)).collect()
    }

    fn snat_endpoint(&self, node: usize) -> Option<&Endpoint> {
        self.fabric.get(node).or_else(|| {
            self.client
                .as_ref()
                .filter(|_| node == 0)
                .map(|c| &c.uplink)
        })
    }

    /// The source-NAT address of node `node` (its fabric address, or its
    /// uplink's on a single node).
    pub fn snat_source(&self, node: usize, family: Family) -> Option<IpAddr> {
        self.snat_endpoint(node).map(|e| e.ip(family))
    }

    /// Pod `at`.
    pub fn pod(&self, at: PodRef) -> &Pod {
        &self.nodes[at.node].pods[at.pod]
    }

    /// Pod `at`'s namespace.
    pub fn pod_netns(&self, at: PodRef) -> &Netns {
        &self.pod(at).eth0.netns
    }

    /// Pod `at`'s `ip(family):port`.
    pub fn pod_socket(&self, at: PodRef, family: Family, port: u16) -> SocketAddr {
        self.pod(at).eth0.socket(family, port)
    }

    /// The outside client (panics on a shape without one: a test bug).
    pub fn outside(&self) -> &OutsideClient {
        self.client
            .as_ref()
            .expect("the fabric's shape has an outside client")
    }

    /// Programs `service` (of `family`) into every node's datapath, as each
    /// node's agent would: backends (with `local` on their own node), the
    /// Maglev table, the ClusterIP as a VIP, the NodePort on every node
    /// address of the node.
    pub fn add_service(&mut self, family: Family, service: &Service) -> Result<Programmed> {
        let id = self.next_service;
        self.next_service += 1;
        let mut backends = Vec::with_capacity(service.backends.len());
        for &at in &service.backends {
            let addr = self.pod_socket(at, family, service.target_port);
            let next = u32::try_from(self.backend_ids.len() + 1).unwrap_or(u32::MAX);
            let backend = *self
                .backend_ids
                .entry((addr, service.protocol))
                .or_insert(next);
            backends.push((backend, addr, at.node));
        }
        let keyed: Vec<(u32, SocketAddr)> = backends.iter().map(|&(b, a, _)| (b, a)).collect();
        let table = table(&keyed, service.protocol)?;
        let cluster_ip = service
            .cluster_ip
            .map(|(n, port)| SocketAddr::new(cluster_ip(n, family), port));
        let mut node_ports = Vec::with_capacity(self.nodes.len());
        for node in 0..self.nodes.len() {
            let addresses: Vec<IpAddr> = self
                .node_interfaces(node)
                .iter()
                .map(|e| e.ip(family))
                .collect();
            let datapath = &mut self.datapaths[node].datapath;
            for &(backend, addr, on) in &backends {
                datapath
                    .put_backend_on_node(backend, addr, 1, on == node)
                    .map_err(datapath_error)?;
            }
            datapath.swap_table(id, &table).map_err(datapath_error)?;
            if let Some(frontend) = cluster_ip {
                datapath
                    .set_address(frontend.ip(), AddressKind::Vip)
                    .map_err(datapath_error)?;
                datapath
                    .upsert_service(
                        &Frontend::new(frontend, service.protocol),
                        id,
                        &ServiceOptions::default(),
                    )
                    .map_err(datapath_error)?;
            }
            let mut here = Vec::new();
            if let Some(port) = service.node_port {
                let options = ServiceOptions {
                    snat_remote: service.snat_remote,
                    ..ServiceOptions::default()
                };
                for &ip in &addresses {
                    let frontend = SocketAddr::new(ip, port);
                    datapath
                        .upsert_service(&Frontend::new(frontend, service.protocol), id, &options)
                        .map_err(datapath_error)?;
                    here.push(frontend);
                }
            }
            node_ports.push(here);
        }
        Ok(Programmed {
            id,
            cluster_ip,
            node_ports,
            backends: keyed,
        })
    }

    /// Starts an HTTP server on pod `at` (`ip(family):port`), answering
    /// with `name`; stopped when the fabric drops.
    pub fn serve_http(&mut self, at: PodRef, family: Family, port: u16, name: &str) -> Result<()> {
        let bind = self.pod_socket(at, family, port);
        let server = HttpServer::start(self.pod_netns(at), bind, name)?;
        self.servers.push(Server::Http(server));
        Ok(())
    }

    /// Starts an HTTP server on node `node` itself, on its first node
    /// address (`ip(family):port`), as a hostNetwork pod serves; stopped
    /// when the fabric drops. Returns where it listens.
    pub fn serve_http_on_node(
        &mut self,
        node: usize,
        family: Family,
        port: u16,
        name: &str,
    ) -> Result<SocketAddr> {
        let bind = self.node_interfaces(node)[0].socket(family, port);
        let server = HttpServer::start(&self.nodes[node].netns, bind, name)?;
        self.servers.push(Server::Http(server));
        Ok(bind)
    }

    /// Makes `addr`, an address of node `node` itself (a hostNetwork pod's
    /// endpoint), the only backend of `programmed` on every node: its
    /// record (local on `node`), then a table of it alone. Returns its ID.
    pub fn use_node_backend(
        &mut self,
        programmed: &Programmed,
        protocol: Protocol,
        node: usize,
        addr: SocketAddr,
    ) -> Result<u32> {
        let next = u32::try_from(self.backend_ids.len() + 1).unwrap_or(u32::MAX);
        let backend = *self.backend_ids.entry((addr, protocol)).or_insert(next);
        let table = table(&[(backend, addr)], protocol)?;
        for (on, datapath) in self.datapaths.iter_mut().enumerate() {
            let datapath = &mut datapath.datapath;
            datapath
                .put_backend_on_node(backend, addr, 1, on == node)
                .map_err(datapath_error)?;
            datapath
                .swap_table(programmed.id, &table)
                .map_err(datapath_error)?;
        }
        Ok(backend)
    }

    /// Starts a [`PeerEchoServer`] on pod `at`; stopped when the fabric drops.
    pub fn serve_peer_echo(
        &mut self,
        at: PodRef,
        family: Family,
        port: u16,
        name: &str,
    ) -> Result<()> {
        let bind = self.pod_socket(at, family, port);
        let server = PeerEchoServer::start(self.pod_netns(at), bind, name)?;
        self.servers.push(Server::Peer(server));
        Ok(())
    }

    /// Starts a UDP echo server ([`crate::EchoServer`]) on pod `at`.
    pub fn serve_udp_echo(
        &mut self,
        at: PodRef,
        family: Family,
        port: u16,
        name: &str,
    ) -> Result<()> {
        let bind = self.pod_socket(at, family, port);
        let netns = self.pod_netns(at).clone();
        self.rig
            .serve_echo(&netns, Proto::Udp, bind, name)
            .map(drop)
    }

    /// Node `node`'s counters now.
    pub fn counters(&self, node: usize) -> Result<Counters> {
        let datapath = &self.datapaths[node].datapath;
        Ok(Counters::read(
            &datapath.verdict_stats().map_err(datapath_error)?,
            &datapath.ct_stats().map_err(datapath_error)?,
        ))
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for server in self.servers.drain(..) {
            let stopped = match server {
                Server::Http(s) => s.stop(),
                Server::Peer(s) => s.stop(),
            };
            if let Err(err) = stopped {
                warn!(error = %err, "a fabric server ended with an error");
            }
        }
        for node in &mut self.datapaths {
            for pod in node.pods.drain(..) {
                if let Err(err) = node.datapath.detach_pod_interface(pod) {
                    warn!(error = %err, "could not detach a pod's TC programs");
                }
            }
            for attachment in node.attachments.drain(..) {
                if let Err(err) = node.datapath.detach(attachment) {
                    warn!(error = %err, "could not detach an XDP program");
                }
            }
        }
    }
}

/// The Maglev table of `backends` (ID and address), with the nodes' seed.
fn table(backends: &[(u32, SocketAddr)], protocol: Protocol) -> Result<Vec<u32>> {
    let proto = match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    };
    lb_scenario::maglev_table(HASH_SEED, backends, proto)
}

/// A node's verdict and conntrack counters (packets, nonzero ones only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets per verdict.
    pub verdicts: BTreeMap<Verdict, u64>,
    /// Packets per conntrack event.
    pub ct: BTreeMap<CtEvent, u64>,
}

impl Counters {
    fn read(verdicts: &VerdictStats, ct: &CtStats) -> Self {
        Self {
            verdicts: Verdict::ALL
                .iter()
                .map(|&v| (v, verdicts.get(v).packets))
                .filter(|&(_, n)| n > 0)
                .collect(),
            ct: CtEvent::ALL
                .iter()
                .map(|&e| (e, ct.get(e).packets))
                .filter(|&(_, n)| n > 0)
                .collect(),
        }
    }

    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        fn delta<K: Ord + Copy>(
            now: &BTreeMap<K, u64>,
            then: &BTreeMap<K, u64>,
        ) -> BTreeMap<K, u64> {
            now.iter()
                .map(|(&k, &n)| (k, n - then.get(&k).copied().unwrap_or(0)))
                .filter(|&(_, n)| n > 0)
                .collect()
        }
        Self {
            verdicts: delta(&self.verdicts, &earlier.verdicts),
            ct: delta(&self.ct, &earlier.ct),
        }
    }

    /// Packets given `verdict`.
    pub fn verdict(&self, verdict: Verdict) -> u64 {
        self.verdicts.get(&verdict).copied().unwrap_or(0)
    }

    /// Packets counting `event`.
    pub fn ct_event(&self, event: CtEvent) -> u64 {
        self.ct.get(&event).copied().unwrap_or(0)
    }
}

/// A TCP server on its own thread inside a namespace that greets every
/// connection with `<name> <peer address>` and a newline (the source it
/// sees, translated or not), then echoes every byte until the client
/// closes. Stopped (its connections closed, its threads joined) on drop.
#[derive(Debug)]
pub struct PeerEchoServer {
    server: ServerThread,
}

impl PeerEchoServer {
    /// Binds `bind` (TCP) inside `netns` and starts serving as `name`.
    pub fn start(netns: &Netns, bind: SocketAddr, name: &str) -> Result<Self> {
        server::check_name("peer echo server name", name)?;
        server::check_bind(bind.ip())?;
        let server =
            ServerThread::tcp(netns, PEER_KIND, name, bind, PEER_POLL, |stream, shared| {
                echo_with_peer(&stream, shared)
            })?;
        Ok(Self { server })
    }

    /// The address the server listens on.
    pub const fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops the server and waits for its connections to end.
    pub fn stop(self) -> Result<()> {
        self.server.stop()
    }
}

fn echo_with_peer(mut stream: &TcpStream, shared: &Shared) -> io::Result<()> {
    let peer = stream.peer_addr()?;
    stream.set_write_timeout(Some(PEER_WRITE_TIMEOUT))?;
    stream.set_read_timeout(Some(PEER_POLL))?;
    stream.write_all(format!("{} {peer}\n", shared.name()).as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = Instant::now();
    while !shared.stopping() {
        match stream.read(&mut buf) {
            Ok(0) => return stream.shutdown(Shutdown::Write),
            Ok(n) => {
                stream.write_all(&buf[..n])?;
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if last.elapsed() > PEER_MAX_IDLE {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A client connection to a [`PeerEchoServer`], opened from a namespace;
/// usable from any thread afterwards (a socket stays in the namespace it
/// was opened in).
#[derive(Debug)]
pub struct PeerSession {
    stream: TcpStream,
    server: String,
    seen_as: SocketAddr,
    local: SocketAddr,
    /// Bytes echoed back and checked so far.
    echoed: u64,
}

impl PeerSession {
    /// Connects from `netns` to `addr` and reads the greeting; every later
    /// read or write may take at most `timeout`. A refused or timed-out
    /// connect is an [`Error::Io`] with the socket's own error as source.
    pub fn open(netns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<Self> {
        Self::open_from(netns, None, addr, timeout)
    }

    /// [`Self::open`] from `local` when given, bound with `SO_REUSEADDR`, so
    /// that two sessions to different addresses can share one source port.
    pub fn open_from(
        netns: &Netns,
        local: Option<SocketAddr>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Self> {
        let what = move |step: &str| format!("peer session to {addr}: {step}");
        let (stream, local, greeting) = open_greeted(netns, local, addr, timeout, &what)?;
        let parsed = greeting
            .strip_suffix('\n')
            .and_then(|line| line.split_once(' '))
            .and_then(|(name, peer)| Some((name, SocketAddr::from_str(peer).ok()?)))
            .filter(|(name, _)| !name.is_empty());
        let Some((server, seen_as)) = parsed else {
            return Err(Error::Io {
                what: what("greeting"),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("greeted with {greeting:?}"),
                ),
            });
        };
        Ok(Self {
            server: server.to_owned(),
            seen_as,
            stream,
            local,
            echoed: 0,
        })
    }

    /// The name of the server holding the connection.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The client address the server sees.
    pub const fn seen_as(&self) -> SocketAddr {
        self.seen_as
    }

    /// The client's own address of the connection.
    pub const fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Bytes echoed back and checked so far.
    pub const fn echoed(&self) -> u64 {
        self.echoed
    }

    /// Sends `data` and reads it back; an error unless every byte comes back
    /// as sent, in time. `data` must fit the socket buffers (64 KiB does).
    pub fn exchange(&mut self, data: &[u8]) -> io::Result<()> {
        (&self.stream).write_all(data)?;
        self.read_back(data)
    }

    /// Sends `data` from a second thread while reading the echo here, so any
    /// size flows both ways at once; an error unless every byte comes back
    /// as sent, each read and write in time.
    pub fn transfer(&mut self, data: &[u8]) -> io::Result<()> {
        let writer = self.stream.try_clone()?;
        std::thread::scope(|scope| {
            let sent = scope.spawn(|| (&writer).write_all(data));
            let back = self.read_back(data);
            let sent = sent
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the writer panicked")));
            back.and(sent)
        })
    }

    fn read_back(&mut self, data: &[u8]) -> io::Result<()> {
        let mut back = vec![0u8; 64 * 1024];
        for chunk in data.chunks(back.len()) {
            let back = &mut back[..chunk.len()];
            (&self.stream).read_exact(back)?;
            if let Some(at) = chunk.iter().zip(back.iter()).position(|(a, b)| a != b) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "byte {} of the stream came back as {:#04x}, sent {:#04x}",
                        self.echoed + at as u64,
                        back[at],
                        chunk[at]
                    ),
                ));
            }
            self.echoed += chunk.len() as u64;
        }
        Ok(())
    }

    /// Closes our side and waits for the server's orderly close; an error if
    /// anything but the end of the stream (a reset, stray bytes) comes first.
    pub fn close(self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)?;
        let mut rest = Vec::new();
        (&self.stream).take(1024).read_to_end(&mut rest)?;
        if rest.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} stray bytes before the end of the stream", rest.len()),
            ))
        }
    }
}

/// A deterministic, incompressible-looking payload of `len` bytes.
pub fn payload(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
