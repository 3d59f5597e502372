//! The RAII rig: namespaces, veths, addresses, routes, processes, servers and
//! a bpffs, all removed when the rig is dropped.
use std::{
    collections::HashMap,
    fs::File,
    net::{IpAddr, SocketAddr},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::Mutex,
    time::Duration,
};

use tracing::{debug, warn};

use crate::{
    Cidr, EchoServer, Error, HostKind, Mac, Netns, Offloads, Proto, Result, Route, Veth, VethEnd,
    VethOptions, addr::check_rig_address, bpffs::Bpffs, cmd, names, process::Process, steering,
    sweep, wait::wait_for,
};

/// How a rig sets up its namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RigOptions {
    /// Drop the kernel's own multicast chatter (MLD reports, router
    /// solicitations) on the way out of every namespace, so that a test that
    /// counts packets on a veth sees only its own. IPv6 duplicate address
    /// detection is off in every rig regardless: it also makes fresh
    /// addresses usable at once instead of after a second of "tentative".
    pub quiet: bool,
}

impl Default for RigOptions {
    fn default() -> Self {
        Self { quiet: true }
    }
}

/// A bridge in a namespace of its own: an L2 segment that several hosts join
/// (for example the backend network behind load balancers).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Switch {
    /// The switch's namespace.
    pub netns: Netns,
    /// The bridge device in it.
    pub bridge: String,
}

/// A process started with [`Rig::spawn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spawned {
    /// The process id (the program's own: `ip netns exec` execs it).
    pub pid: u32,
    /// Where its standard output and error go.
    pub log: PathBuf,
}

/// An address the rig assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Assigned {
    netns: Netns,
    dev: String,
    cidr: Cidr,
}

/// A set of network namespaces and everything in them, torn down on drop.
///
/// Every namespace is named `<id>-<role>` with `id` = `xlb-rig-<pid>-<n>`.
/// The rig refuses to change anything outside its own namespaces, to use
/// addresses outside 198.18.0.0/15 and 2001:2::/48, and to add a default
/// route that does not go via one of its own addresses.
///
/// Drop order: processes are killed and reaped, echo servers stopped, the
/// bpffs unmounted, the namespaces deleted (which takes their veths along),
/// the work directory removed. Failures are logged, never panicked on; what
/// is left behind, [`sweep`](crate::sweep()) removes.
#[derive(Debug)]
pub struct Rig {
    id: String,
    options: RigOptions,
    namespaces: Vec<Netns>,
    kinds: HashMap<Netns, HostKind>,
    switch_ports: HashMap<Netns, u32>,
    addresses: Vec<Assigned>,
    processes: Vec<Process>,
    /// Processes spawned so far (names their log files).
    spawned: usize,
    servers: Vec<EchoServer>,
    bpffs: Option<Bpffs>,
    workdir: Option<tempfile::TempDir>,
}

/// `ip netns add` makes `/run/netns` a shared mount the first time; two of
/// them racing can stack two mounts. One at a time per process avoids it.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// How long a spawned process may take to enter its namespace.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The role of a switch namespace's bridge.
const BRIDGE: &str = "br0";

/// nftables rules for a quiet namespace: the kernel's unsolicited multicast
/// (MLD reports when groups are joined, router solicitations) never leaves.
/// Neighbour discovery and everything else pass.
const QUIET_RULES: &str = "table inet xlb_rig_quiet {
    chain output {
        type filter hook output priority 0; policy accept;
        icmpv6 type { mld-listener-report, mld2-listener-report, mld-listener-done, nd-router-solicit } drop
    }
}
";

impl Rig {
    /// An empty rig with default options (quiet).
    pub fn new() -> Result<Self> {
        Self::with_options(RigOptions::default())
    }

    /// An empty rig.
    pub fn with_options(options: RigOptions) -> Result<Self> {
        let id = names::next_rig_id();
        debug!(rig = %id, "new rig");
        Ok(Self {
            id,
            options,
            namespaces: Vec::new(),
            kinds: HashMap::new(),
            switch_ports: HashMap::new(),
            addresses: Vec::new(),
            processes: Vec::new(),
            spawned: 0,
            servers: Vec::new(),
            bpffs: None,
            workdir: None,
        })
    }

    /// The rig's id, `xlb-rig-<pid>-<n>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The prefix of every name this rig creates, `<id>-`: sweeping it
    /// removes this rig's objects and nothing else.
    pub fn prefix(&self) -> String {
        format!("{}-", self.id)
    }

    /// The rig's namespaces, in creation order.
    pub fn namespaces(&self) -> &[Netns] {
        &self.namespaces
    }

    /// The addresses assigned to `dev` in `netns`.
    pub fn addresses(&self, netns: &Netns, dev: &str) -> Vec<Cidr> {
        self.addresses
            .iter()
            .filter(|a| &a.netns == netns && a.dev == dev)
            .map(|a| a.cidr)
            .collect()
    }

    /// Creates the namespace `<id>-<role>` for a host of `kind`, with
    /// loopback up, IPv6 DAD and router solicitations off, and (when quiet)
    /// its multicast chatter dropped.
    pub fn add_host(&mut self, role: &str, kind: HostKind) -> Result<Netns> {
        let netns = self.create_namespace(role, &[])?;
        self.kinds.insert(netns.clone(), kind);
        Ok(netns)
    }

    /// Creates a namespace holding a bridge; hosts join it with
    /// [`add_switch_port`](Self::add_switch_port). The namespace has no IPv6
    /// of its own (nothing in it speaks; it only forwards frames).
    pub fn add_switch(&mut self, role: &str) -> Result<Switch> {
        let netns = self.create_namespace(
            role,
            &[
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"),
            ],
        )?;
        self.kinds.insert(netns.clone(), HostKind::Pod);
        // No snooping: with the MLD reports dropped, a snooping bridge could
        // stop flooding the neighbour solicitations the hosts depend on.
        netns.ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        netns.ip(&["link", "set", "dev", BRIDGE, "up"])?;
        // A switch only moves frames: when `br_netfilter` is loaded (by
        // anything on the machine), bridged frames would also cross the
        // switch namespace's netfilter hooks, a cost no real switch adds.
        const BRIDGE_NETFILTER: [&str; 3] = [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ];
        if netns.sysctl(BRIDGE_NETFILTER[0]).is_ok() {
            let off: Vec<(&str, &str)> = BRIDGE_NETFILTER.iter().map(|&k| (k, "0")).collect();
            netns.write_sysctls(&off)?;
        }
        Ok(Switch {
            netns,
            bridge: BRIDGE.to_owned(),
        })
    }

    /// Creates a veth pair between `(a, a_dev)` and `(b, b_dev)` with default
    /// options, both ends up.
    pub fn add_veth(&mut self, a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> Result<Veth> {
        self.add_veth_with(a, a_dev, b, b_dev, &VethOptions::default())
    }

    /// Creates a veth pair directly inside the two namespaces (it never
    /// appears in the root namespace), applies MTU and offloads, brings both
    /// ends up.
    pub fn add_veth_with(
        &mut self,
        a: &Netns,
        a_dev: &str,
        b: &Netns,
        b_dev: &str,
        options: &VethOptions,
    ) -> Result<Veth> {
        self.owned(a)?;
        self.owned(b)?;
        names::check_ifname(a_dev)?;
        names::check_ifname(b_dev)?;
        a.check()?;
        b.check()?;
        // ip link add A [address M] [mtu N] netns NS1 type veth
        //     peer name B [address M] [mtu N] netns NS2
        let mut args: Vec<String> = vec!["link".into(), "add".into()];
        push_end(&mut args, a_dev, options.mac_a, options.mtu, a);
        args.extend(["type".into(), "veth".into(), "peer".into(), "name".into()]);
        push_end(&mut args, b_dev, options.mac_b, options.mtu, b);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cmd::run("ip", &args)?;
        let veth = Veth {
            a: VethEnd {
                netns: a.clone(),
                dev: a_dev.to_owned(),
            },
            b: VethEnd {
                netns: b.clone(),
                dev: b_dev.to_owned(),
            },
        };
        let a_offloads = options
            .offloads_a
            .unwrap_or_else(|| self.kind(a).default_offloads());
        let b_offloads = options
            .offloads_b
            .unwrap_or_else(|| self.kind(b).default_offloads());
        self.set_offloads(a, a_dev, &a_offloads)?;
        self.set_offloads(b, b_dev, &b_offloads)?;
        a.ip(&["link", "set", "dev", a_dev, "up"])?;
        b.ip(&["link", "set", "dev", b_dev, "up"])?;
        debug!(rig = %self.id, a = %a, a_dev, b = %b, b_dev, "veth up");
        Ok(veth)
    }

    /// Connects `host` to a switch: a veth whose host end is `dev` and whose
    /// switch end (`p<n>`) is a port of the bridge.
    pub fn add_switch_port(
        &mut self,
        switch: &Switch,
        host: &Netns,
        dev: &str,
        options: &VethOptions,
    ) -> Result<Veth> {
        self.owned(&switch.netns)?;
        let n = self.switch_ports.entry(switch.netns.clone()).or_insert(0);
        let port = format!("p{n}");
        *n += 1;
        let veth = self.add_veth_with(host, dev, &switch.netns, &port, options)?;
        switch
            .netns
            .ip(&["link", "set", "dev", &port, "master", &switch.bridge])?;
        Ok(veth)
    }

    /// Applies offload settings to `dev` (`ethtool -K` inside the namespace).
    pub fn set_offloads(&self, netns: &Netns, dev: &str, offloads: &Offloads) -> Result<()> {
        self.owned(netns)?;
        names::check_ifname(dev)?;
        let features = offloads.ethtool_args();
        if features.is_empty() {
            return Ok(());
        }
        let mut args = vec!["-K", dev];
        args.extend(features);
        netns.exec("ethtool", &args).map(drop)
    }

    /// Sets the MTU of `dev`.
    pub fn set_mtu(&self, netns: &Netns, dev: &str, mtu: u32) -> Result<()> {
        self.owned(netns)?;
        names::check_ifname(dev)?;
        netns
            .ip(&["link", "set", "dev", dev, "mtu", &mtu.to_string()])
            .map(drop)
    }

    /// Assigns `cidr` to `dev`; the prefix must lie inside a rig range.
    pub fn add_address(&mut self, netns: &Netns, dev: &str, cidr: Cidr) -> Result<()> {
        self.owned(netns)?;
        names::check_ifname(dev)?;
        cidr.check_in_rig()?;
        let text = cidr.to_string();
        let mut args = vec!["addr", "replace", &text, "dev", dev];
        if cidr.is_ipv6() {
            // Usable at once, and nothing sent on the link (RFC 4862 DAD).
            args.push("nodad");
        }
        netns.ip(&args)?;
        let assigned = Assigned {
            netns: netns.clone(),
            dev: dev.to_owned(),
            cidr,
        };
        if !self.addresses.contains(&assigned) {
            self.addresses.push(assigned);
        }
        Ok(())
    }

    /// Adds (or replaces) a route. The destination must lie inside a rig
    /// range and every gateway must be an address this rig assigned; a
    /// default route needs such a gateway.
    pub fn add_route(&mut self, netns: &Netns, route: &Route) -> Result<()> {
        self.owned(netns)?;
        if route.is_default() && route.nexthops().is_empty() {
            return Err(Error::DefaultRouteOut {
                netns: netns.to_string(),
                gateway: "none (a device route)".to_owned(),
            });
        }
        route.check_shape()?;
        for hop in route.nexthops() {
            if !self.is_own_address(hop.via) {
                return Err(if route.is_default() {
                    Error::DefaultRouteOut {
                        netns: netns.to_string(),
                        gateway: hop.via.to_string(),
                    }
                } else {
                    Error::UnknownGateway {
                        netns: netns.to_string(),
                        route: route.to_string(),
                        gateway: hop.via,
                    }
                });
            }
        }
        let args = route.ip_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        netns.ip(&args).map(drop)
    }

    /// Adds a permanent neighbour entry (no ARP / neighbour discovery for it).
    pub fn add_neighbour(&self, netns: &Netns, dev: &str, ip: IpAddr, mac: Mac) -> Result<()> {
        self.owned(netns)?;
        names::check_ifname(dev)?;
        check_rig_address(ip)?;
        netns
            .ip(&[
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &mac.to_string(),
                "dev",
                dev,
                "nud",
                "permanent",
            ])
            .map(drop)
    }

    /// Makes the hosts of one L2 segment (a veth's two ends, or the hosts on
    /// a switch) know each other's addresses statically, so no ARP or
    /// neighbour solicitation ever crosses it.
    pub fn pin_neighbours(&self, segment: &[VethEnd]) -> Result<()> {
        for peer in segment {
            let mac = peer.netns.mac(&peer.dev)?;
            for cidr in self.addresses(&peer.netns, &peer.dev) {
                for end in segment.iter().filter(|end| *end != peer) {
                    self.add_neighbour(&end.netns, &end.dev, cidr.addr(), mac)?;
                }
            }
        }
        Ok(())
    }

    /// Writes a `net.*` sysctl of `netns` (other sysctls are machine-wide and
    /// refused).
    pub fn set_sysctl(&self, netns: &Netns, key: &str, value: &str) -> Result<()> {
        self.owned(netns)?;
        netns.write_sysctls(&[(key, value)])
    }

    /// Has `netns` take each flow that `dev` receives on one CPU, chosen by
    /// the flow's hash among all online CPUs (RPS), as a NIC's receive-side
    /// scaling would (`steering` says why an end host needs it).
    pub fn steer_flows(&self, netns: &Netns, dev: &str) -> Result<()> {
        self.owned(netns)?;
        names::check_ifname(dev)?;
        let mask = steering::online_cpu_mask()?;
        // `ip netns exec` mounts the namespace's own sysfs, where `dev` is.
        let script = format!(
            "for q in /sys/class/net/{dev}/queues/rx-*; do echo {mask} > \"$q/rps_cpus\" || exit 1; done"
        );
        netns.exec("sh", &["-c", &script]).map(drop)
    }

    /// Turns on IPv4 and IPv6 forwarding in `netns` (a router or LB box).
    pub fn enable_forwarding(&self, netns: &Netns) -> Result<()> {
        self.owned(netns)?;
        netns.write_sysctls(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ])
    }

    /// Starts `program args...` inside `netns` and returns once it runs
    /// there (or has already exited); it is killed (with its process group)
    /// and reaped when the rig drops. Output goes to a log file in the rig's
    /// work directory.
    pub fn spawn(&mut self, netns: &Netns, program: &str, args: &[&str]) -> Result<Spawned> {
        self.owned(netns)?;
        let n = self.spawned;
        self.spawned += 1;
        let base = Path::new(program)
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("process")
            .to_owned();
        let log = self.workdir()?.join(format!("proc-{n}-{base}.log"));
        let out = File::create(&log).map_err(Error::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let mut command = netns.command(program)?;
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group, so killing the group takes its children too.
            .process_group(0);
        let child = command.spawn().map_err(|source| Error::Spawn {
            command: cmd::display(program, args),
            source,
        })?;
        let mut process = Process::new(child, log.clone());
        let pid = process.pid();
        let waited = wait_for(
            SPAWN_TIMEOUT,
            &format!("process {pid} to enter {netns}"),
            || {
                // `ip netns exec` enters the namespace between fork and exec; a
                // process that has already exited is reported as it is.
                Ok(
                    (netns.holds_process(pid)? || process.try_wait().ok().flatten().is_some())
                        .then_some(()),
                )
            },
        );
        // Kept even when the wait failed, so the rig still kills it.
        self.processes.push(process);
        waited?;
        debug!(rig = %self.id, netns = %netns, pid, program, "spawned");
        Ok(Spawned { pid, log })
    }

    /// The exit status of a spawned process, if it has exited.
    pub fn process_status(&mut self, pid: u32) -> Result<Option<ExitStatus>> {
        let index = self.process_index(pid)?;
        self.processes[index]
            .try_wait()
            .map_err(Error::io(format!("checking process {pid}")))
    }

    /// Kills a spawned process now and returns how it ended.
    pub fn stop_process(&mut self, pid: u32) -> Result<ExitStatus> {
        let index = self.process_index(pid)?;
        let process = self.processes.swap_remove(index);
        let log = process.log().to_owned();
        process.kill().map_err(Error::io(format!(
            "killing process {pid} (log {})",
            log.display()
        )))
    }

    /// The rig's private bpffs (mounted on first use, unmounted on drop).
    pub fn bpffs(&mut self) -> Result<PathBuf> {
        if let Some(bpffs) = &self.bpffs {
            return Ok(bpffs.path().to_owned());
        }
        let path = self.workdir()?.join("bpffs");
        std::fs::create_dir_all(&path)
            .map_err(Error::io(format!("creating {}", path.display())))?;
        let bpffs = Bpffs::mount(&path)?;
        self.bpffs = Some(bpffs);
        Ok(path)
    }

    /// Starts an echo server owned by the rig (stopped on drop) and returns
    /// the address it listens on.
    pub fn serve_echo(
        &mut self,
        netns: &Netns,
        proto: Proto,
        bind: SocketAddr,
        name: &str,
    ) -> Result<SocketAddr> {
        self.owned(netns)?;
        let server = EchoServer::start(netns, proto, bind, name)?;
        let local = server.local_addr();
        self.servers.push(server);
        Ok(local)
    }

    /// Stops the rig's echo server on `(netns, proto, local)`; false when
    /// there is none.
    pub fn stop_echo(&mut self, netns: &Netns, proto: Proto, local: SocketAddr) -> Result<bool> {
        let Some(index) = self
            .servers
            .iter()
            .position(|s| s.netns() == netns && s.proto() == proto && s.local_addr() == local)
        else {
            return Ok(false);
        };
        self.servers.swap_remove(index).stop()?;
        Ok(true)
    }

    /// The rig's work directory (`<tmp>/<id>-work.XXXXXX`), created on first use.
    pub fn workdir(&mut self) -> Result<PathBuf> {
        if let Some(dir) = &self.workdir {
            return Ok(dir.path().to_owned());
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-work.", self.id))
            .tempdir()
            .map_err(Error::io("creating the rig's work directory"))?;
        let path = dir.path().to_owned();
        self.workdir = Some(dir);
        Ok(path)
    }

    fn create_namespace(&mut self, role: &str, extra_sysctls: &[(&str, &str)]) -> Result<Netns> {
        names::check_role(role)?;
        let name = format!("{}-{role}", self.id);
        let netns = Netns::existing(&name)?;
        {
            let _one_at_a_time = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
            cmd::run("ip", &["netns", "add", &name])?;
        }
        // Owned from here on, so a failure below still deletes it on drop.
        self.namespaces.push(netns.clone());
        netns.check()?;
        // The "default" values are copied into every interface created later,
        // so they are set before any veth exists.
        let mut keys = Vec::new();
        for scope in ["all", "default"] {
            for knob in [
                "accept_dad",
                "dad_transmits",
                "router_solicitations",
                // A router advertisement could install a default route.
                "accept_ra",
            ] {
                keys.push(format!("net.ipv6.conf.{scope}.{knob}"));
            }
        }
        let mut sysctls: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "0")).collect();
        sysctls.extend_from_slice(extra_sysctls);
        netns.write_sysctls(&sysctls)?;
        if self.options.quiet {
            let args = ["netns", "exec", &name, "nft", "-f", "-"];
            cmd::run_with_input("ip", &args, Some(QUIET_RULES))?;
        }
        netns.ip(&["link", "set", "dev", "lo", "up"])?;
        debug!(rig = %self.id, netns = %name, "namespace ready");
        Ok(netns)
    }

    fn owned(&self, netns: &Netns) -> Result<()> {
        if self.namespaces.contains(netns) {
            Ok(())
        } else {
            Err(Error::ForeignNamespace {
                netns: netns.to_string(),
                rig: self.id.clone(),
            })
        }
    }

    fn kind(&self, netns: &Netns) -> HostKind {
        self.kinds.get(netns).copied().unwrap_or(HostKind::Pod)
    }

    fn is_own_address(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|a| a.cidr.addr() == ip)
    }

    fn process_index(&self, pid: u32) -> Result<usize> {
        self.processes
            .iter()
            .position(|p| p.pid() == pid)
            .ok_or_else(|| Error::Invalid {
                what: "process id",
                input: format!("{pid} (rig {})", self.id),
                expected: "a process this rig spawned and has not stopped",
            })
    }

    /// Tears everything down in dependency order; never panics.
    fn teardown(&mut self) {
        for process in self.processes.drain(..) {
            let pid = process.pid();
            match process.kill() {
                Ok(status) => debug!(pid, %status, "rig process ended"),
                Err(err) => warn!(pid, error = %err, "could not reap a rig process"),
            }
        }
        for server in self.servers.drain(..) {
            let local = server.local_addr();
            if let Err(err) = server.stop() {
                warn!(%local, error = %err, "echo server ended with an error");
            }
        }
        if let Some(mut bpffs) = self.bpffs.take()
            && let Err(err) = bpffs.unmount()
        {
            warn!(error = %err, "could not unmount the rig's bpffs");
        }
        for netns in self.namespaces.drain(..).rev() {
            if let Err(err) = sweep::remove_namespace(netns.name()) {
                warn!(netns = %netns, error = %err, "could not delete a rig namespace");
            }
        }
        if let Some(dir) = self.workdir.take() {
            // Only remove the directory when nothing is mounted inside it:
            // recursing into a live bpffs would unpin someone's maps.
            match sweep::mounts_under(dir.path()) {
                Ok(mounts) if mounts.is_empty() => {
                    let path = dir.path().to_owned();
                    if let Err(err) = dir.close() {
                        warn!(path = %path.display(), error = %err, "could not remove the rig's work directory");
                    }
                }
                result => {
                    let path = dir.keep();
                    warn!(path = %path.display(), ?result, "leaving the rig's work directory; `xlb-bench rig sweep --orphans` removes it");
                }
            }
        }
        debug!(rig = %self.id, "rig torn down");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Appends `NAME [address MAC] [mtu N] netns NS` for one end of a veth.
fn push_end(args: &mut Vec<String>, dev: &str, mac: Option<Mac>, mtu: Option<u32>, netns: &Netns) {
    args.push(dev.to_owned());
    if let Some(mac) = mac {
        args.extend(["address".to_owned(), mac.to_string()]);
    }
    if let Some(mtu) = mtu {
        args.extend(["mtu".to_owned(), mtu.to_string()]);
    }
    args.extend(["netns".to_owned(), netns.name().to_owned()]);
}
