//! `xlb agent`'s flags, each also an `XLB_*` environment variable.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{
    Args,
    builder::BoolishValueParser,
    error::{Error as ClapError, ErrorKind},
};
use xdp_lb::MapSizes;

use crate::source::kube::node::AddressRange;

/// `--bird-include`'s default, in the agent's runtime directory (which it
/// creates); any other file's directory must exist.
pub(crate) const DEFAULT_BIRD_INCLUDE: &str = "/run/xlb/bird-vips.conf";

/// How to run the agent.
///
/// Exactly one source of services, `--config` or `--kubernetes`: checked by
/// [`AgentOptions::check_source`] after parsing, not by a clap group, for
/// which a value from the environment counts as given, `false` too
/// (`XLB_KUBERNETES=false` clashed with `--config`, and without it left an
/// agent with no source at all).
#[derive(Clone, Debug, Args)]
pub struct AgentOptions {
    /// The configuration file: native xlb services and/or Kubernetes
    /// Service + EndpointSlice documents. Reloaded when it changes and on SIGHUP.
    /// Either this or --kubernetes.
    #[arg(long, short = 'c', env = "XLB_CONFIG")]
    pub config: Option<PathBuf>,

    /// Take the services from the Kubernetes API (Services and
    /// EndpointSlices, as kube-proxy does) instead of a file. The
    /// connection is the in-cluster one or a kubeconfig (--kubeconfig, else
    /// KUBECONFIG or ~/.kube/config). docs/kubernetes.md has the details.
    #[arg(long, env = "XLB_KUBERNETES", value_parser = BoolishValueParser::new())]
    pub kubernetes: bool,

    // The Kubernetes-only flags conflict with --config rather than require
    // --kubernetes: clap counts a bool flag as always present (its default
    // is false), and the source group already demands one of the two. A
    // value from the environment counts as given (a default does not), so
    // `NODE_NAME` set for a file-mode agent is refused too: the file's own
    // `node:` section names its node.
    /// The kubeconfig to reach the API server with (Kubernetes mode).
    #[arg(
        long,
        env = "XLB_KUBECONFIG",
        value_name = "PATH",
        conflicts_with = "config"
    )]
    pub kubeconfig: Option<PathBuf>,

    /// This node's name, for the `Local` traffic policies and the Node's
    /// addresses (Kubernetes mode; a DaemonSet sets it from
    /// `spec.nodeName`).
    #[arg(long, env = "NODE_NAME", conflicts_with = "config")]
    pub node_name: Option<String>,

    /// Serve only the Services labelled
    /// `service.kubernetes.io/service-proxy-name=<NAME>`, to run beside
    /// kube-proxy. Unset: every Service without that label, replacing
    /// kube-proxy.
    #[arg(
        long,
        env = "XLB_SERVICE_PROXY_NAME",
        value_name = "NAME",
        conflicts_with = "config"
    )]
    pub service_proxy_name: Option<String>,

    /// The addresses that serve NodePorts and healthCheckNodePorts
    /// (comma-separated or repeated): addresses, or CIDRs that select this
    /// node's addresses (interfaces and Node object) within them, like
    /// kube-proxy's flag. Unset: the Node's InternalIP and ExternalIP
    /// addresses.
    #[arg(
        long,
        env = "XLB_NODEPORT_ADDRESSES",
        value_delimiter = ',',
        value_name = "ADDRESS|CIDR",
        conflicts_with = "config"
    )]
    pub nodeport_addresses: Vec<AddressRange>,

    /// The least time between two syncs from the Kubernetes caches (like
    /// kube-proxy's `--min-sync-period`): the changes of a burst are
    /// programmed together (Kubernetes mode).
    #[arg(
        long,
        env = "XLB_MIN_SYNC_PERIOD",
        value_parser = humantime::parse_duration,
        default_value = "1s",
        conflicts_with = "config"
    )]
    pub min_sync_period: Duration,

    /// Interfaces to attach `xdp_lb` to (comma-separated or repeated).
    #[arg(
        long = "interface",
        short = 'i',
        env = "XLB_INTERFACES",
        value_delimiter = ',',
        value_parser = parse_interface_name,
        required = true
    )]
    pub interfaces: Vec<String>,

    /// Attach in generic (skb) mode instead of native XDP.
    #[arg(long, env = "XLB_GENERIC_XDP", value_parser = BoolishValueParser::new())]
    pub generic_xdp: bool,

    /// Where maps and links are pinned; bpffs is mounted there if it is not.
    #[arg(long, env = "XLB_PIN_DIR", default_value = "/sys/fs/bpf/xlb")]
    pub pin_dir: PathBuf,

    #[command(flatten)]
    pub sizes: MapSizeOptions,

    /// Capacity of the conntrack maps (flows, summed over CPUs).
    #[arg(
        long,
        env = "XLB_CONNTRACK_SIZE",
        default_value_t = 131_072,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub conntrack_size: u32,

    /// The Maglev hash seed. Every LB instance serving the same services must
    /// use the same seed, or a flow lands on different backends.
    #[arg(long, env = "XLB_HASH_SEED", default_value_t = 0)]
    pub hash_seed: u64,

    /// The smallest Maglev table a service gets, in slots: one of 251, 509,
    /// 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071. A service's
    /// table is the smallest of these with more than 100 slots per backend
    /// it lists, and keeps its size while that count moves by less than
    /// about a factor of two, so two instances that saw different counts
    /// can hold different sizes (and pick different backends). Behind ECMP,
    /// give every instance a minimum above 100 times the most backends any
    /// service lists: all then hold that size. 4 bytes a slot, per service.
    #[arg(
        long,
        env = "XLB_MAGLEV_MIN_SIZE",
        value_name = "SLOTS",
        default_value_t = consistent_hash::primes::TABLE_SIZES[0],
        value_parser = parse_table_size
    )]
    pub maglev_min_size: u32,

    /// The new-flow flood guard: conntrack entries each CPU may create per
    /// second (Katran's default). Past it, new flows still reach their Maglev
    /// backend but are not tracked, so a flood cannot push established flows
    /// out of conntrack. 0 turns the guard off.
    #[arg(
        long,
        env = "XLB_NEW_FLOWS_PER_CPU",
        default_value_t = xdp_lb::DEFAULT_NEW_FLOWS_PER_CPU_PER_SEC
    )]
    pub new_flows_per_cpu: u32,

    /// This LB's own address(es) toward the backends, the outer source of
    /// direct-server-return encapsulation: one per family (`--encap-source
    /// 198.18.1.1 --encap-source 2001:2:0:1::1`). Needed by `mode: dsr`
    /// services; without one for a backend's family their packets are
    /// dropped (`drop_encap_unsupported`).
    #[arg(
        long = "encap-source",
        env = "XLB_ENCAP_SOURCES",
        value_delimiter = ','
    )]
    pub encap_sources: Vec<IpAddr>,

    /// How the health checks of `mode: dsr` services probe their backends.
    /// `tunnel`: at a VIP of the service, the probe's packets wrapped for
    /// the backend as its traffic is (`tc_probe_encap` at the egress of every
    /// --interface), so a backend whose `xlb decap` stopped, or without the
    /// VIP on `lo`, fails them. `direct`: at the backend's own address, which
    /// tests neither. (Only the configuration file's native services can be
    /// `dsr`: with --kubernetes nothing is attached.)
    #[arg(
        long,
        env = "XLB_DSR_HEALTH_PROBES",
        value_enum,
        default_value_t = DsrHealthProbes::Tunnel
    )]
    pub dsr_health_probes: DsrHealthProbes,

    /// The socket marks (SO_MARK) of health probes through the DSR tunnel:
    /// this base in the high 16 bits, a backend's slot in the low 16.
    /// Packets whose mark has these high bits are the probes' (a slot that
    /// names no backend is dropped): choose a base no other mark of this
    /// host uses.
    #[arg(
        long,
        env = "XLB_HEALTH_PROBE_MARK",
        value_name = "BASE",
        default_value = "0x584c0000",
        value_parser = parse_probe_mark
    )]
    pub health_probe_mark: xdp_lb::ProbeMarkBase,

    /// The TC programs on the host side of pod veths: every interface whose
    /// name matches this glob (`veth*`, `lxc*`, `cali*`), followed as pods
    /// come and go. Unset: no pod interface (and the pod links an earlier
    /// agent pinned are removed).
    #[arg(long, env = "XLB_POD_INTERFACES", value_name = "GLOB")]
    pub pod_interfaces: Option<String>,

    /// The source this node gives flows it source-NATs toward a backend on
    /// another node (NodePort and LoadBalancer traffic with
    /// `externalTrafficPolicy: Cluster`, native `source_nat: true`
    /// services): one address per family. Unset: the first address of each
    /// family on the first --interface.
    #[arg(long = "snat-source", env = "XLB_SNAT_SOURCES", value_delimiter = ',')]
    pub snat_sources: Vec<IpAddr>,

    /// The source-NAT ports, `MIN-MAX` (per protocol, source address and
    /// backend). Keep it clear of the node's ephemeral ports
    /// (`net.ipv4.ip_local_port_range`).
    #[arg(
        long,
        env = "XLB_SNAT_PORTS",
        value_name = "MIN-MAX",
        value_parser = parse_port_range,
        default_value = "61000-65535"
    )]
    pub snat_ports: (u16, u16),

    /// The source a pod sees when it reaches itself through a service
    /// (hairpin), one per family: an address no host holds, which the pods
    /// route through their node (the agent warns at start of one this host
    /// holds: the node's answer to itself would not come back translated).
    #[arg(
        long = "hairpin-source",
        env = "XLB_HAIRPIN_SOURCES",
        value_delimiter = ',',
        default_value = "169.254.42.1,fd00::a9fe:2a01"
    )]
    pub hairpin_sources: Vec<IpAddr>,

    /// Announce the VIPs over BGP through this BIRD 2 daemon's control
    /// socket: the agent writes `--bird-include` (static protocols
    /// `xlb_vips_v4` and `xlb_vips_v6`, a route per VIP it can serve) and
    /// asks BIRD to reconfigure. docs/announce.md has the bird.conf side.
    #[arg(long, env = "XLB_BIRD_SOCKET", value_name = "PATH")]
    pub bird_socket: Option<PathBuf>,

    /// The file of VIP routes the agent writes for BIRD to include.
    #[arg(
        long,
        env = "XLB_BIRD_INCLUDE",
        value_name = "PATH",
        default_value = DEFAULT_BIRD_INCLUDE
    )]
    pub bird_include: PathBuf,

    /// L2 mode: answer ARP requests and IPv6 neighbour solicitations for the
    /// VIPs this instance can serve, on this interface (one of
    /// `--interface`). One instance per segment: several would answer for the
    /// same VIP.
    #[arg(long, env = "XLB_L2_INTERFACE", value_name = "IF")]
    pub l2_interface: Option<String>,

    /// Flow events for `xlb observe`: one in this many new flows, drops and
    /// refusals, chosen at random, is reported. 0 reports none.
    #[arg(long, env = "XLB_FLOW_EVENT_SAMPLING", default_value_t = 0)]
    pub flow_event_sampling: u32,

    /// Address of the `/metrics` and `/healthz` HTTP endpoint.
    #[arg(long, env = "XLB_METRICS_ADDRESS", default_value = "127.0.0.1:10256")]
    pub metrics_address: SocketAddr,

    /// The admin API's Unix socket (mode 0660).
    #[arg(long, env = "XLB_ADMIN_SOCKET", default_value = "/run/xlb/admin.sock")]
    pub admin_socket: PathBuf,

    /// Group owning the admin socket (name or numeric ID); root's group when unset.
    #[arg(long, env = "XLB_ADMIN_GROUP")]
    pub admin_group: Option<String>,

    /// Where the agent keeps what outlives its restarts but, like the
    /// pinned maps, not a reboot: the drains made with `xlb drain`
    /// (`drains.json`). One agent per directory. Unset: the directory of
    /// --admin-socket (/run/xlb by default, a tmpfs).
    #[arg(long, env = "XLB_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Overrides the datapath build's version stamp (tests use it to stand
    /// in for an upgrade to another program build).
    #[arg(long, env = "XLB_VERSION_STAMP", hide = true)]
    pub version_stamp: Option<u32>,

    /// Log level or `tracing` directives (e.g. `info`,
    /// `control_plane=debug,xdp_lb=debug`); `RUST_LOG` wins when set.
    #[arg(long, env = "XLB_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// The capacities of the maps that grow with the configuration: `xlb agent`
/// makes its maps this big (pinned maps keep the size they were made with),
/// and `xlb check-config` checks a file against them. A configuration that
/// needs more is refused before anything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Args)]
pub struct MapSizeOptions {
    /// Capacity of the frontend map (one entry per frontend: address, port
    /// and protocol), and of the service-ID maps, which hold one less
    /// service (ID 0 is never given out).
    #[arg(
        long,
        env = "XLB_MAX_SERVICES",
        default_value_t = 65_536,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_services: u32,

    /// Capacity of the backend-ID maps: one less backend (ID 0 is never
    /// given out). A backend is an address and port, however many services
    /// share it.
    #[arg(
        long,
        env = "XLB_MAX_BACKENDS",
        default_value_t = 65_536,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_backends: u32,

    /// Capacity of the frontend-address map (and of the L2 announcements).
    #[arg(
        long,
        env = "XLB_MAX_ADDRESSES",
        default_value_t = 4_096,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_addresses: u32,

    /// Capacity of the fragment map: fragmented TCP and UDP datagrams in
    /// flight through the datapath at once (the first fragment's ports, kept
    /// for the later fragments; the least recently used give way). A later
    /// fragment whose entry was evicted is dropped (`drop_fragment_untracked`).
    #[arg(
        long,
        env = "XLB_FRAGMENT_ENTRIES",
        default_value_t = xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub fragment_entries: u32,
}

impl AgentOptions {
    /// Exactly one source of services; the error is `agent`'s usage error
    /// (`command` is the agent's clap command, for its usage line).
    pub fn check_source(&self, command: &mut clap::Command) -> Result<(), ClapError> {
        match (&self.config, self.kubernetes) {
            (Some(_), true) => Err(command.error(
                ErrorKind::ArgumentConflict,
                "the argument '--config <CONFIG>' cannot be used with '--kubernetes': one \
                 source of services",
            )),
            (None, false) => Err(command.error(
                ErrorKind::MissingRequiredArgument,
                "a source of services is required: --config <CONFIG> (XLB_CONFIG) or \
                 --kubernetes (XLB_KUBERNETES=true)",
            )),
            _ => Ok(()),
        }
    }
}

impl MapSizeOptions {
    /// The datapath's map sizes, with `conntrack` flows.
    pub const fn map_sizes(self, conntrack: u32) -> MapSizes {
        MapSizes {
            services: self.max_services,
            backends: self.max_backends,
            conntrack,
            addresses: self.max_addresses,
            fragments: self.fragment_entries,
        }
    }
}

/// An interface name as the kernel takes one ([`xdp_lb::is_interface_name`]).
/// Whether it exists is checked when the agent starts, before it changes
/// anything.
pub(crate) fn parse_interface_name(name: &str) -> Result<String, String> {
    if xdp_lb::is_interface_name(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not an interface name (1 to 15 bytes, no `/`, `:` or spaces)"
        ))
    }
}

/// Each of `items`, given as `flag`, once.
pub(crate) fn each_once<T: PartialEq + std::fmt::Display>(
    flag: &str,
    items: &[T],
) -> anyhow::Result<()> {
    for (i, item) in items.iter().enumerate() {
        anyhow::ensure!(!items[..i].contains(item), "{flag} {item} is named twice");
    }
    Ok(())
}

/// One of the table sizes the sizing policy picks from.
fn parse_table_size(text: &str) -> Result<u32, String> {
    let sizes = consistent_hash::primes::TABLE_SIZES;
    text.parse()
        .ok()
        .filter(|size| sizes.contains(size))
        .ok_or_else(|| {
            let list: Vec<String> = sizes.iter().map(u32::to_string).collect();
            format!(
                "`{text}` is not a table size: give one of {}",
                list.join(", ")
            )
        })
}

/// How the backends of `mode: dsr` services are probed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DsrHealthProbes {
    /// Through the tunnel, to a VIP of the service.
    #[default]
    Tunnel,
    /// At the backend's own address.
    Direct,
}

/// A probe mark base: decimal or `0x` hexadecimal, with its low 16 bits
/// clear and not 0 ([`xdp_lb::ProbeMarkBase::new`], the one check of it).
fn parse_probe_mark(text: &str) -> Result<xdp_lb::ProbeMarkBase, String> {
    let base = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|_| format!("`{text}` is not a 32-bit mark (decimal, or hexadecimal after 0x)"))?;
    xdp_lb::ProbeMarkBase::new(base).map_err(|invalid| invalid.to_string())
}

/// `MIN-MAX`: a non-empty range of nonzero ports.
fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (min, max) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not MIN-MAX"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("`{p}` is not a port (1-65535)"))
    };
    let (min, max) = (port(min)?, port(max)?);
    if min > max {
        return Err(format!("{min}-{max} is empty"));
    }
    Ok((min, max))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser};

    use super::*;
    use crate::source::kube::node::AddressRange;

    #[derive(Debug, Parser)]
    struct Agent {
        #[command(flatten)]
        options: AgentOptions,
    }

    fn parse(args: &[&str]) -> Result<AgentOptions, clap::Error> {
        let options =
            Agent::try_parse_from(["xlb-agent", "--interface", "eth0"].iter().chain(args))
                .map(|a| a.options)?;
        options.check_source(&mut Agent::command())?;
        Ok(options)
    }

    #[test]
    fn the_flags_are_consistent() {
        Agent::command().debug_assert();
    }

    #[test]
    fn the_map_sizes_default_to_the_loader_s() {
        let defaults = parse(&["--config", "x.yaml"]).expect("parses");
        assert_eq!(
            defaults.sizes.map_sizes(defaults.conntrack_size),
            MapSizes::default()
        );
        let set = parse(&[
            "--config",
            "x.yaml",
            "--max-services",
            "8",
            "--max-addresses",
            "2",
        ])
        .expect("parses");
        assert_eq!((set.sizes.max_services, set.sizes.max_addresses), (8, 2));
    }

    #[test]
    fn dsr_backends_are_probed_through_the_tunnel_with_a_mark_base_unless_told_otherwise() {
        let defaults = parse(&["--config", "x.yaml"]).expect("parses");
        assert_eq!(defaults.dsr_health_probes, DsrHealthProbes::Tunnel);
        assert_eq!(defaults.health_probe_mark, xdp_lb::ProbeMarkBase::DEFAULT);
        let set = parse(&[
            "--config",
            "x.yaml",
            "--dsr-health-probes",
            "direct",
            "--health-probe-mark",
            "0x10000",
        ])
        .expect("parses");
        assert_eq!(set.dsr_health_probes, DsrHealthProbes::Direct);
        assert_eq!(set.health_probe_mark.get(), 0x1_0000);
        assert_eq!(
            parse(&["--config", "x.yaml", "--health-probe-mark", "131072"])
                .expect("decimal")
                .health_probe_mark
                .get(),
            0x2_0000
        );
        for (wrong, says) in [
            (
                "0x584c0001",
                "0x584c0001 is not a probe mark base: its low 16 bits",
            ),
            ("0", "(e.g. 0x584c0000)"),
            ("0x1ffff", "(e.g. 0x00010000)"),
            ("mark", "`mark` is not a 32-bit mark"),
        ] {
            let error = parse(&["--config", "x.yaml", "--health-probe-mark", wrong])
                .expect_err(wrong)
                .to_string();
            assert!(error.contains(says), "{wrong}: {error}");
        }
    }

    #[test]
    fn the_maglev_minimum_is_a_listed_table_size() {
        let defaults = parse(&["--config", "x.yaml"]).expect("parses");
        assert_eq!(defaults.maglev_min_size, 251);
        let set = parse(&["--config", "x.yaml", "--maglev-min-size", "16381"]).expect("parses");
        assert_eq!(set.maglev_min_size, 16381);
        let wrong = parse(&["--config", "x.yaml", "--maglev-min-size", "16384"])
            .expect_err("not a listed size")
            .to_string();
        assert!(
            wrong.contains("`16384` is not a table size: give one of 251, 509, 1021"),
            "{wrong}"
        );
    }

    #[test]
    fn one_source_exactly() {
        let neither = parse(&[]).expect_err("a source is required").to_string();
        assert!(
            neither.contains("required: --config <CONFIG> (XLB_CONFIG) or --kubernetes"),
            "{neither}"
        );
        let both = parse(&["--config", "x.yaml", "--kubernetes"])
            .expect_err("one source")
            .to_string();
        assert!(both.contains("cannot be used with"), "{both}");
        assert_eq!(
            parse(&["--config", "x.yaml"]).expect("file mode").config,
            Some(PathBuf::from("x.yaml"))
        );
    }

    #[test]
    fn fabric_flags_and_their_defaults() {
        let defaults = parse(&["--config", "x.yaml"]).expect("parses");
        assert_eq!(defaults.pod_interfaces, None);
        assert_eq!(defaults.snat_ports, (61000, 65535));
        assert_eq!(
            defaults.hairpin_sources,
            [
                "169.254.42.1".parse::<IpAddr>().unwrap(),
                "fd00::a9fe:2a01".parse().unwrap()
            ]
        );
        let set = parse(&[
            "--config",
            "x.yaml",
            "--pod-interfaces",
            "veth*",
            "--snat-source",
            "198.18.0.1,2001:2::1",
            "--snat-ports",
            "40000-40010",
        ])
        .expect("parses");
        assert_eq!(set.pod_interfaces.as_deref(), Some("veth*"));
        assert_eq!(set.snat_sources.len(), 2);
        assert_eq!(set.snat_ports, (40000, 40010));
        for bad in ["40010-40000", "0-10", "4000", "a-b"] {
            let error = parse(&["--config", "x.yaml", "--snat-ports", bad])
                .expect_err(bad)
                .to_string();
            assert!(error.contains("--snat-ports"), "{error}");
        }
    }

    #[test]
    fn kubernetes_flags() {
        let options = parse(&[
            "--kubernetes",
            "--kubeconfig",
            "/etc/xlb/kubeconfig",
            "--node-name",
            "node-a",
            "--service-proxy-name",
            "xlb",
            "--nodeport-addresses",
            "198.18.0.0/24,2001:2::10",
            "--min-sync-period",
            "250ms",
        ])
        .expect("parses");
        assert!(options.kubernetes);
        assert_eq!(
            options.kubeconfig,
            Some(PathBuf::from("/etc/xlb/kubeconfig"))
        );
        assert_eq!(options.node_name.as_deref(), Some("node-a"));
        assert_eq!(options.service_proxy_name.as_deref(), Some("xlb"));
        assert_eq!(
            options.nodeport_addresses,
            [
                "198.18.0.0/24".parse::<AddressRange>().unwrap(),
                AddressRange::Address("2001:2::10".parse().unwrap()),
            ]
        );
        assert_eq!(options.min_sync_period, Duration::from_millis(250));

        let defaults = parse(&["--kubernetes"]).expect("parses");
        assert_eq!(defaults.min_sync_period, Duration::from_secs(1));
        assert!(defaults.nodeport_addresses.is_empty());
    }

    #[test]
    fn kubernetes_only_flags_need_kubernetes_mode() {
        let error = parse(&["--config", "x.yaml", "--service-proxy-name", "xlb"])
            .expect_err("needs --kubernetes")
            .to_string();
        assert!(
            error.contains("'--config <CONFIG>' cannot be used with '--service-proxy-name <NAME>'"),
            "{error}"
        );
        // Only the Kubernetes source reads these two: with a file they
        // would do nothing.
        for (flag, value, shown) in [
            ("--node-name", "node-a", "'--node-name <NODE_NAME>'"),
            (
                "--min-sync-period",
                "250ms",
                "'--min-sync-period <MIN_SYNC_PERIOD>'",
            ),
        ] {
            let error = parse(&["--config", "x.yaml", flag, value])
                .expect_err(flag)
                .to_string();
            assert!(
                error.contains(&format!("'--config <CONFIG>' cannot be used with {shown}")),
                "{error}"
            );
        }
        // Its default is no conflict.
        assert_eq!(
            parse(&["--config", "x.yaml"])
                .expect("file mode")
                .min_sync_period,
            Duration::from_secs(1)
        );
        let error = parse(&["--kubernetes", "--nodeport-addresses", "198.18.0.0/33"])
            .expect_err("a bad CIDR")
            .to_string();
        assert!(error.contains("prefix length 33 exceeds 32"), "{error}");
    }
}
