//! Several `xlb agent` instances behind an ECMP router that learns the VIP
//! from them over BGP: the edge deployment of Katran and Maglev, in
//! namespaces.
//!
//! ```text
//!                     (BIRD, AS 65000)       (agent + BIRD, AS 65001 + i)
//! client eth0 ─── eth0 router lb0 ─── eth0 [xdp_lb] lb0 eth1 ─┐
//! (several          │   lb1 ─── eth0 [xdp_lb] lb1 eth1 ─┤
//!  sources)         │   lb2 ─── eth0 [xdp_lb] lb2 eth1 ─┼─ [switch] ─ b0..b3
//!                   └── net ────────────────────────────┘   [xdp_decap]
//! ```
//! The topology is [`EcmpLbs`] without its static route to the VIPs: each
//! LB's agent writes the VIPs it can serve for its BIRD, which announces
//! them to the router's BIRD, which installs one multipath route hashed on
//! the 5-tuple. Services are direct server return: the backends hold the
//! VIP on `lo`, strip the LBs' outer header with `xlb decap` and answer the
//! clients through the router.
//!
//! Every backend serves a TCP echo on [`PORT`] (any address: the health
//! checks reach it on the backend's own), a UDP echo on the VIP at [`PORT`]
//! (a UDP answer must leave from the address it was sent to) and a
//! long-lived TCP echo on [`STREAM_PORT`].
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use xdp_lb::{AttachMode, Attachment, Datapath, ProgramName};

use crate::{
    Cidr, Error, Proto, Spawned,
    agent_rig::{XlbClient, print_logs, wait_agent_ready},
    bird::{self, Bird, Peer},
    stream::StreamEchoServer,
    topology::{EcmpLbs, Options, plan},
    wait::wait_for,
};

/// Load balancers behind the router.
pub const LBS: usize = 3;
/// Backends behind the load balancers.
pub const BACKENDS: usize = 4;
/// The echo services' port, on the VIP and on the backends.
pub const PORT: u16 = 80;
/// The long-lived stream service's port.
pub const STREAM_PORT: u16 = 9000;
/// Source addresses of the client (its LAN's hosts 2 ..).
pub const CLIENT_SOURCES: u8 = 8;
/// The interface each agent attaches `xdp_lb` to: the router's side.
pub const LB_INTERFACE: &str = "eth0";
/// How long a starting agent may take to attach and program its first sync.
const AGENT_READY: Duration = Duration::from_secs(30);
const ROUTER_AS: u32 = 65_000;

/// The VIP (plan VIP 1, IPv4).
pub fn vip() -> IpAddr {
    plan::vip(1).0.into()
}

/// The name backend `i`'s servers answer with.
pub fn backend_name(i: usize) -> String {
    format!("b{i}")
}

/// One load balancer: its BIRD and its agent, each running or not.
#[derive(Debug)]
pub struct LbInstance {
    pub client: XlbClient,
    pin_dir: PathBuf,
    bird_include: PathBuf,
    bird: Option<Bird>,
    agent: Option<Spawned>,
    logs: Vec<PathBuf>,
}

/// The rig; see the module docs.
#[derive(Debug)]
pub struct EcmpAgentRig {
    // Dropped after `Drop::drop` has stopped the agents and daemons: the
    // servers, the xdp_pass programs, then the rig.
    streams: Vec<StreamEchoServer>,
    _peer_programs: Vec<Attachment>,
    _peer_datapath: Datapath,
    pub topo: EcmpLbs,
    lbs: Vec<LbInstance>,
    router_bird: Option<Bird>,
    xlb: PathBuf,
    config: PathBuf,
}

impl EcmpAgentRig {
    /// Builds the topology, starts the backends' servers and `xlb decap`,
    /// and the router's BIRD. No LB runs yet: write a configuration and
    /// start them ([`Self::start_lb`]).
    pub fn build(xlb: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let xlb = xlb.into();
        if !xlb.is_file() {
            bail!("the xlb binary {} does not exist", xlb.display());
        }
        let options = Options {
            static_neighbours: true,
            ..Options::default()
        };
        let mut topo = EcmpLbs::build_unrouted(LBS, BACKENDS, &options).context("the topology")?;
        let client_lan = plan::Subnet::lan(plan::CLIENT_LAN);
        let client = topo.client.netns.clone();
        for host in 3..2 + CLIENT_SOURCES {
            topo.rig
                .add_address(&client, "eth0", client_lan.host(host).0)?;
        }

        // A redirect into a veth delivers only when its far end runs XDP.
        let mut datapath = Datapath::load()
            .map_err(|e| Error::Datapath(Box::new(e)))
            .context("loading the datapath for xdp_pass")?;
        let mut programs = Vec::new();
        for lb in &topo.lbs {
            for peer in [&lb.front.peer, &lb.back.peer] {
                programs.push(
                    peer.attach_xdp(&mut datapath, ProgramName::XdpPass, AttachMode::Native)
                        .with_context(|| format!("xdp_pass on {} in {}", peer.dev, peer.netns))?,
                );
            }
        }

        let workdir = topo.rig.workdir()?;
        let bpffs = topo.rig.bpffs()?;
        let mut streams = Vec::new();
        let vip = vip();
        for (i, backend) in topo.backends.clone().iter().enumerate() {
            let ns = &backend.netns;
            topo.rig.add_address(ns, "lo", Cidr::new(vip, 32)?)?;
            let name = backend_name(i);
            topo.rig.serve_echo(
                ns,
                Proto::Tcp,
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), PORT),
                &name,
            )?;
            topo.rig
                .serve_echo(ns, Proto::Udp, SocketAddr::new(vip, PORT), &name)?;
            streams.push(StreamEchoServer::start(
                ns,
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), STREAM_PORT),
                &name,
            )?);
            topo.rig.spawn(
                ns,
                &xlb.to_string_lossy(),
                &["decap", "--interface", "eth0", "--vip", &vip.to_string()],
            )?;
        }

        let peers: Vec<Peer> = topo
            .lbs
            .iter()
            .enumerate()
            .map(|(i, lb)| Peer {
                addr: lb.front.v4,
                asn: lb_as(i),
            })
            .collect();
        let router = topo.router.clone();
        let router_id = topo.router_front.v4;
        let router_bird = Bird::start(
            &mut topo.rig,
            &router,
            "bird-router",
            &bird::router_config(router_id, ROUTER_AS, &peers),
        )?;

        let lbs = (0..LBS)
            .map(|i| {
                let dir = workdir.join(format!("lb{i}"));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                Ok(LbInstance {
                    client: XlbClient::new(xlb.clone(), dir.join("admin.sock")),
                    pin_dir: bpffs.join(format!("lb{i}")),
                    bird_include: dir.join("bird-vips.conf"),
                    bird: None,
                    agent: None,
                    logs: Vec::new(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            streams,
            _peer_programs: programs,
            _peer_datapath: datapath,
            topo,
            lbs,
            router_bird: Some(router_bird),
            xlb,
            config: workdir.join("xlb.yaml"),
        })
    }

    /// The configuration file every agent reads.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Writes the agents' configuration file (a new file renamed over the
    /// old: an agent never reads half of it).
    pub fn write_config(&self, yaml: &str) -> anyhow::Result<()> {
        let partial = self.config.with_extension("yaml.new");
        std::fs::write(&partial, yaml).with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &self.config)
            .with_context(|| format!("renaming {}", partial.display()))
    }

    /// LB `i`.
    pub fn lb(&self, i: usize) -> &LbInstance {
        &self.lbs[i]
    }

    /// The address LB `i` is the router's next hop at.
    pub fn lb_gateway(&self, i: usize) -> IpAddr {
        self.topo.lbs[i].front.v4.into()
    }

    /// Backend `i`'s own address with `port`.
    pub fn backend_addr(&self, i: usize, port: u16) -> SocketAddr {
        SocketAddr::new(self.topo.backends[i].v4.into(), port)
    }

    /// The client's source addresses.
    pub fn client_sources(&self) -> Vec<IpAddr> {
        let lan = plan::Subnet::lan(plan::CLIENT_LAN);
        (2..2 + CLIENT_SOURCES)
            .map(|host| lan.host(host).0.addr())
            .collect()
    }

    /// Starts LB `i`: its agent (DSR, its backend-side address as the outer
    /// source, announcing through its BIRD), waits until it is attached and
    /// synced, then starts its BIRD unless it runs. An agent that finds no
    /// BIRD yet keeps trying; this order makes every test go through that.
    pub fn start_lb(&mut self, i: usize) -> anyhow::Result<()> {
        let front = self.topo.lbs[i].front.clone();
        let back = self.topo.lbs[i].back.clone();
        let netns = self.topo.lbs[i].netns.clone();
        let lb = &self.lbs[i];
        let bird_name = format!("bird-lb{i}");
        let bird_socket = Bird::control_socket(&self.topo.rig.workdir()?, &bird_name);
        let args: Vec<String> = [
            "agent",
            "--config",
            &self.config.to_string_lossy(),
            "--interface",
            LB_INTERFACE,
            "--pin-dir",
            &lb.pin_dir.to_string_lossy(),
            "--admin-socket",
            &lb.client.socket().to_string_lossy(),
            "--encap-source",
            &back.v4.to_string(),
            "--bird-socket",
            &bird_socket.to_string_lossy(),
            "--bird-include",
            &lb.bird_include.to_string_lossy(),
        ]
        .map(str::to_owned)
        .to_vec();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let spawned = self
            .topo
            .rig
            .spawn(&netns, &self.xlb.to_string_lossy(), &args)?;
        let pid = spawned.pid;
        self.lbs[i].logs.push(spawned.log.clone());
        self.lbs[i].agent = Some(spawned);
        let client = self.lbs[i].client.clone();
        wait_agent_ready(
            &mut self.topo.rig,
            pid,
            &client,
            &[LB_INTERFACE],
            AGENT_READY,
        )
        .with_context(|| format!("lb{i}"))?;

        if self.lbs[i].bird.is_none() {
            let router = Peer {
                addr: self.topo.lbs[i].router_side.v4,
                asn: ROUTER_AS,
            };
            // A pattern, so BIRD would start before the agent has written it.
            let pattern = self.lbs[i].bird_include.with_extension("conf*");
            let config = bird::lb_config(front.v4, lb_as(i), router, &pattern);
            let daemon = Bird::start(&mut self.topo.rig, &netns, &bird_name, &config)?;
            self.lbs[i].bird = Some(daemon);
        }
        Ok(())
    }

    /// Takes LB `i` out as a failed box would go: its BIRD dies (the
    /// router's session closes and its routes go at once), its agent dies,
    /// and its program is detached (the pinned links are removed; the maps
    /// stay for the next agent).
    pub fn fail_lb(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(daemon) = self.lbs[i].bird.take() {
            daemon.kill(&mut self.topo.rig)?;
        }
        if let Some(agent) = self.lbs[i].agent.take() {
            self.topo.rig.stop_process(agent.pid)?;
        }
        let links = self.lbs[i].pin_dir.join("links");
        if links.exists() {
            std::fs::remove_dir_all(&links)
                .with_context(|| format!("removing {}", links.display()))?;
        }
        Ok(())
    }

    /// Waits until the router's next hops for the VIP are exactly the LBs
    /// `lbs`.
    pub fn wait_gateways(&self, lbs: &[usize], timeout: Duration) -> anyhow::Result<()> {
        let mut want: Vec<IpAddr> = lbs.iter().map(|&i| self.lb_gateway(i)).collect();
        want.sort_unstable();
        let mut seen = Vec::new();
        wait_for(timeout, "the router's routes to the VIP", || {
            seen = bird::gateways(&self.topo.router, vip())?;
            Ok((seen == want).then_some(()))
        })
        .with_context(|| format!("want next hops {want:?}, the router has {seen:?}"))
    }

    /// Packets LB `i`'s datapath encapsulated so far (its `xlb stats`).
    pub fn encapsulated(&self, i: usize) -> anyhow::Result<u64> {
        let stats = self.lbs[i].client.json(&["stats"])?;
        Ok(stats["verdicts"]["forward_encapsulated"]
            .as_u64()
            .unwrap_or_default())
    }

    /// Every agent's and daemon's log, for a failing test.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, lb) in self.lbs.iter().enumerate() {
            for log in &lb.logs {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                out.push_str(&format!("--- agent lb{i}: {}\n{text}\n", log.display()));
            }
            if let Some(daemon) = &lb.bird {
                out.push_str(&format!("--- bird lb{i}\n{}\n", daemon.log()));
            }
        }
        if let Some(daemon) = &self.router_bird {
            out.push_str(&format!("--- bird router\n{}\n", daemon.log()));
        }
        out
    }
}

impl Drop for EcmpAgentRig {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs(&self.logs());
        }
        let mut pids: Vec<u32> = self
            .lbs
            .iter_mut()
            .flat_map(|lb| {
                let agent = lb.agent.take().map(|a| a.pid);
                let daemon = lb.bird.take().map(|b| b.pid());
                agent.into_iter().chain(daemon)
            })
            .collect();
        pids.extend(self.router_bird.take().map(|b| b.pid()));
        for pid in pids {
            if let Err(e) = self.topo.rig.stop_process(pid) {
                tracing::warn!(pid, error = %e, "could not stop a process of the rig");
            }
        }
        self.streams.clear();
    }
}

/// LB `i`'s AS.
fn lb_as(i: usize) -> u32 {
    65_001 + u32::try_from(i).unwrap_or(0)
}
