//! BIRD 2 (Debian's `bird2`) as the rigs' BGP speaker: a daemon per
//! namespace, in the foreground, owned by the rig like any other process.
//!
//! Timers are short so the tests converge in seconds: keepalive 1 s, hold
//! 3 s, reconnect after 1 s. Graceful restart is off: a peer that dies must
//! lose its routes at once, not keep them as stale for two minutes.
use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Error, Netns, Result, Rig, Spawned};

/// The session timers of every BGP session in the rigs.
const TIMERS: &str = "hold time 3; keepalive time 1; connect delay time 1; \
                      connect retry time 1; error wait time 1, 2; graceful restart off;";

/// A BIRD daemon running in a rig namespace.
#[derive(Debug)]
pub struct Bird {
    /// The control socket (the agent's `--bird-socket`).
    pub socket: PathBuf,
    process: Spawned,
}

/// A BGP neighbour: its address and AS.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: Ipv4Addr,
    pub asn: u32,
}

impl Bird {
    /// Writes `config` as `<name>.conf` in the rig's work directory and
    /// starts `bird -f` on it in `netns`, its control socket beside it.
    pub fn start(rig: &mut Rig, netns: &Netns, name: &str, config: &str) -> Result<Self> {
        let dir = rig.workdir()?;
        let file = dir.join(format!("{name}.conf"));
        std::fs::write(&file, config).map_err(Error::io(format!("writing {}", file.display())))?;
        let socket = Self::control_socket(&dir, name);
        let pid_file = dir.join(format!("{name}.pid"));
        let process = rig.spawn(
            netns,
            "bird",
            &[
                "-f",
                "-c",
                &file.to_string_lossy(),
                "-s",
                &socket.to_string_lossy(),
                "-P",
                &pid_file.to_string_lossy(),
            ],
        )?;
        Ok(Self { socket, process })
    }

    /// The control socket of the daemon `name` of a rig whose work
    /// directory is `workdir` (known before the daemon starts).
    pub fn control_socket(workdir: &Path, name: &str) -> PathBuf {
        workdir.join(format!("{name}.ctl"))
    }

    /// The daemon's process ID.
    pub const fn pid(&self) -> u32 {
        self.process.pid
    }

    /// Its log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }

    /// Stops the daemon with SIGKILL, as a failing box would: its TCP
    /// sessions close, and its peers withdraw its routes at once.
    pub fn kill(self, rig: &mut Rig) -> Result<()> {
        rig.stop_process(self.process.pid).map(drop)
    }
}

/// The router's configuration: BGP sessions to `peers` from AS `asn`,
/// importing everything they announce, and equal routes installed in the
/// kernel as one multipath route (`merge paths`).
pub fn router_config(router_id: Ipv4Addr, asn: u32, peers: &[Peer]) -> String {
    let mut out = format!(
        "router id {router_id};\n\
         log stderr all;\n\
         protocol device {{ scan time 10; }}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n\
         template bgp lb {{\n    local as {asn};\n    {TIMERS}\n    \
         ipv4 {{ import all; export none; }};\n}}\n"
    );
    for (i, peer) in peers.iter().enumerate() {
        let _ = writeln!(
            out,
            "protocol bgp lb{i} from lb {{ neighbor {} as {}; }}",
            peer.addr, peer.asn
        );
    }
    out
}

/// A load balancer's configuration as an operator would write it for the
/// xlb agent: the agent's file of VIP routes (`include`) and one BGP session
/// to the router exporting them with this box as the next hop.
pub fn lb_config(router_id: Ipv4Addr, asn: u32, router: Peer, include: &Path) -> String {
    format!(
        "router id {router_id};\n\
         log stderr all;\n\
         protocol device {{ scan time 10; }}\n\
         include \"{}\";\n\
         protocol bgp uplink {{\n    local as {asn};\n    neighbor {} as {};\n    {TIMERS}\n    \
         ipv4 {{ import none; export where proto = \"xlb_vips_v4\"; next hop self; }};\n}}\n",
        include.display(),
        router.addr,
        router.asn
    )
}

/// The gateways of `dest`'s route in `netns` (one per path of a multipath
/// route), sorted; empty when there is no such route.
pub fn gateways(netns: &Netns, dest: IpAddr) -> Result<Vec<IpAddr>> {
    let what = format!("ip -n {netns} -j route show {dest}");
    let output = Command::new("ip")
        .args(["-n", netns.name(), "-j", "route", "show"])
        .arg(dest.to_string())
        .output()
        .map_err(Error::io(what.clone()))?;
    let routes: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| Error::Io {
            what,
            source: std::io::Error::other(e),
        })?;
    let mut gateways: Vec<IpAddr> = routes
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|route| match route["nexthops"].as_array() {
            Some(hops) => hops.iter().map(|h| h["gateway"].clone()).collect(),
            None => vec![route["gateway"].clone()],
        })
        .filter_map(|gateway| gateway.as_str()?.parse().ok())
        .collect();
    gateways.sort_unstable();
    Ok(gateways)
}
