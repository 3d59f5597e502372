//! The agent's east-west side: the datapath's source-NAT and hairpin
//! settings (`--snat-source`, `--snat-ports`, `--hairpin-source`), the
//! sysctl the uplinks need for source NAT, and the TC programs on the pod
//! interfaces of `--pod-interfaces`, followed as pods come and go.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use netlink_packet_route::link::{AfSpecInet, AfSpecUnspec, InetDevConf, LinkAttribute};
use rtnetlink::{LinkMessageBuilder, LinkUnspec};
use xdp_lb::{Config, Datapath};

use super::{core::Core, locked};
use crate::{
    pod_interfaces::{PodInterfaceEvent, PodInterfaces},
    source::kube::validate::{Origin, check_unicast},
};

/// `--snat-source`, `--snat-ports` and `--hairpin-source` in `config`. A
/// family without a `--snat-source` takes the first address of that family
/// on `uplink` (the first `--interface`).
pub(super) fn snat_config(
    config: &mut Config,
    snat_sources: &[IpAddr],
    ports: (u16, u16),
    hairpin_sources: &[IpAddr],
    uplink: &str,
) -> anyhow::Result<()> {
    let (mut v4, mut v6) = one_per_family("--snat-source", snat_sources)?;
    if v4.is_none() || v6.is_none() {
        let (first4, first6) = first_addresses(uplink)?;
        v4 = v4.or(first4);
        v6 = v6.or(first6);
    }
    config.snat_source_v4 = v4.map_or([0; 4], |a| a.octets());
    config.snat_source_v6 = v6.map_or([0; 16], |a| a.octets());
    let (hairpin4, hairpin6) = one_per_family("--hairpin-source", hairpin_sources)?;
    config.hairpin_source_v4 = hairpin4.map_or([0; 4], |a| a.octets());
    config.hairpin_source_v6 = hairpin6.map_or([0; 16], |a| a.octets());
    (config.snat_port_min, config.snat_port_max) = ports;
    Ok(())
}

/// Every address of `flag` (`--encap-source`, `--snat-source`) one a packet
/// can come from and be answered at: no unspecified, broadcast, multicast,
/// loopback or link-local address.
pub(super) fn check_sources(flag: &str, addresses: &[IpAddr]) -> anyhow::Result<()> {
    for &address in addresses {
        check_unicast(address, Origin::Cluster).map_err(|e| anyhow::anyhow!("{flag} {e}"))?;
    }
    Ok(())
}

/// At most one address of each family among `addresses` (the datapath's
/// `Config` holds one of each).
pub(super) fn one_per_family(
    flag: &str,
    addresses: &[IpAddr],
) -> anyhow::Result<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)> {
    let (mut v4, mut v6) = (None, None);
    for &address in addresses {
        let earlier = match address {
            IpAddr::V4(a) => v4.replace(a).map(IpAddr::V4),
            IpAddr::V6(a) => v6.replace(a).map(IpAddr::V6),
        };
        if let Some(earlier) = earlier {
            anyhow::bail!("{flag} {earlier} and {address}: one address per family");
        }
    }
    Ok((v4, v6))
}

/// The first IPv4 and the first global IPv6 address of `iface`.
fn first_addresses(
    iface: &str,
) -> anyhow::Result<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)> {
    let (mut v4, mut v6) = (None, None);
    for entry in nix::ifaddrs::getifaddrs().context("listing the interfaces' addresses")? {
        if entry.interface_name != iface {
            continue;
        }
        let Some(address) = entry.address else {
            continue;
        };
        if let Some(a) = address.as_sockaddr_in() {
            v4 = v4.or(Some(a.ip()));
        } else if let Some(a) = address.as_sockaddr_in6() {
            let ip = a.ip();
            // Link-local addresses do not route to another node.
            if ip.segments()[0] & 0xffc0 != 0xfe80 {
                v6 = v6.or(Some(ip));
            }
        }
    }
    Ok((v4, v6))
}

/// Lets the kernel forward an IPv4 packet whose source is one of its own
/// addresses when it arrives on `iface`: `xdp_lb` hands a source-NAT packet
/// to the kernel while its next hop's MAC is unknown, and without this the
/// kernel drops it as a martian and never resolves the neighbour.
///
/// Set over rtnetlink (`IFLA_INET_CONF`, as `CAP_NET_ADMIN` allows), not by
/// writing `/proc/sys/net/ipv4/conf/<iface>/accept_local`: a container
/// runtime mounts `/proc/sys` read-only in an unprivileged container, as the
/// DaemonSet's agent is, and the write failed there.
pub(super) async fn accept_local(iface: &str) -> anyhow::Result<()> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("opening a netlink socket")?;
    let connection = tokio::spawn(connection);
    // A request carries only the values that are not 0: accept_local alone.
    let mut conf = InetDevConf::default();
    conf.accept_local = 1;
    let message = LinkMessageBuilder::<LinkUnspec>::new()
        .name(iface)
        .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
            AfSpecInet::DevConfRequest(conf),
        ])]))
        .build();
    let set = handle.link().set(message).execute().await;
    connection.abort();
    set.with_context(|| format!("setting net.ipv4.conf.{iface}.accept_local to 1"))
}

/// Where `xdp_lb`'s links are pinned, one per `--interface`.
pub(super) fn xdp_link_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("links")
}

/// Where the uplinks' egress links (`tc_lb_uplink`, for what the node
/// itself sends) are pinned.
pub(super) fn uplink_link_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("uplinks")
}

/// Removes the links an earlier agent pinned for interfaces no longer among
/// `interfaces`: `xdp_lb`'s (`links`) and the uplink egress ones
/// (`uplinks`). An interface dropped from `--interface` stops balancing, as
/// one dropped from a Cilium device list does.
pub(super) fn forget_dropped_interfaces(
    interfaces: &[String],
    links: &Path,
    uplinks: &Path,
) -> anyhow::Result<()> {
    let stale = |pinned: Vec<String>| pinned.into_iter().filter(|i| !interfaces.contains(i));
    for iface in stale(Datapath::pinned_links(links)) {
        Datapath::detach_pinned(links, &iface)
            .with_context(|| format!("removing the xdp_lb link of {iface}"))?;
        tracing::info!(iface, "xdp_lb link of an earlier agent removed");
    }
    for iface in stale(Datapath::pinned_uplink_egresses(uplinks)) {
        Datapath::detach_uplink_egress_pinned(&iface, uplinks)
            .with_context(|| format!("removing the uplink egress link of {iface}"))?;
        tracing::info!(iface, "uplink egress link of an earlier agent removed");
    }
    Ok(())
}

/// Where the pod interfaces' links are pinned.
pub(super) fn pod_link_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join("pods")
}

/// Removes the pod links an earlier agent pinned: without
/// `--pod-interfaces` no interface is a pod interface.
pub(super) fn forget_pod_interfaces(datapath: &mut Datapath, pin_dir: &Path) -> anyhow::Result<()> {
    let pod_links = pod_link_dir(pin_dir);
    for iface in Datapath::pinned_pod_interfaces(&pod_links) {
        datapath
            .detach_pod_interface_pinned(&iface, &pod_links)
            .with_context(|| format!("removing the pod links of {iface}"))?;
        tracing::info!(
            iface,
            "pod links of an earlier agent removed (no --pod-interfaces)"
        );
    }
    Ok(())
}

/// Follows the interfaces matching `pattern`: attaches the TC programs to
/// each one there is and each one that appears (through pinned links, taken
/// over from an earlier agent where it left them), detaches them from those
/// that go, and removes the pins of interfaces that no longer match. Runs
/// until the agent stops.
pub(super) async fn follow_pod_interfaces(
    pattern: &str,
    core: Arc<Mutex<Core>>,
    pin_dir: PathBuf,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let pod_links = pod_link_dir(&pin_dir);
    let mut events = PodInterfaces::new(pattern)?.follow().await?;
    // The listing's events are queued already: pins of interfaces outside
    // it (gone, or renamed away, while no agent ran) are stale.
    let mut listed = Vec::new();
    while let Ok(event) = events.try_recv() {
        listed.push(event);
    }
    let current: Vec<&str> = listed
        .iter()
        .filter_map(|e| match e {
            PodInterfaceEvent::Added { name, .. } => Some(name.as_str()),
            PodInterfaceEvent::Removed { .. } => None,
        })
        .collect();
    for stale in Datapath::pinned_pod_interfaces(&pod_links) {
        if !current.contains(&stale.as_str()) {
            locked(&core, |c| {
                c.datapath
                    .detach_pod_interface_pinned(&stale, &pod_links)
                    .map(drop)
                    .with_context(|| format!("removing the stale pod links of {stale}"))
            });
        }
    }
    for event in listed {
        apply(&core, &pod_links, event);
    }
    Ok(tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            apply(&core, &pod_links, event);
        }
    }))
}

fn apply(core: &Mutex<Core>, pod_links: &Path, event: PodInterfaceEvent) {
    locked(core, |c| match &event {
        PodInterfaceEvent::Added { name, .. } => {
            c.datapath
                .attach_pod_interface_pinned(name, pod_links)
                .with_context(|| format!("attaching the TC programs to {name}"))?;
            tracing::info!(iface = name, "pod interface: TC programs attached");
            Ok(())
        }
        PodInterfaceEvent::Removed { name, .. } => {
            c.datapath
                .detach_pod_interface_pinned(name, pod_links)
                .with_context(|| format!("removing the pod links of {name}"))?;
            tracing::info!(iface = name, "pod interface gone: its links removed");
            Ok(())
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_unicast_addresses() {
        let ips =
            |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|a| a.parse().unwrap()).collect() };
        assert!(check_sources("--snat-source", &ips(&["198.18.0.1", "2001:2::1"])).is_ok());
        for bad in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "127.0.0.1",
            "fe80::1",
            "::",
        ] {
            let error = check_sources("--encap-source", &ips(&[bad]))
                .expect_err(bad)
                .to_string();
            assert!(
                error.starts_with(&format!("--encap-source {bad} ")),
                "{error}"
            );
        }
    }
}
