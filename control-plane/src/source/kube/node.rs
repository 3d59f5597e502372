//! This node as the translation sees it: its name, its zone and the
//! addresses that serve NodePorts, from the `Node` object and
//! `--nodeport-addresses`.

use std::{fmt, net::IpAddr, str::FromStr};

use k8s_openapi::api::core::v1::Node;

use super::{LABEL_TOPOLOGY_ZONE, NodeInfo, address};

/// `--nodeport-addresses`: which addresses of this node serve NodePorts (and
/// answer `healthCheckNodePort`s).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// The `InternalIP` and `ExternalIP` addresses of the `Node` object.
    #[default]
    FromNode,
    /// The addresses given, and the node's addresses within the ranges given.
    Given(Vec<AddressRange>),
}

/// One `--nodeport-addresses` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressRange {
    /// This address, whether or not the Node object lists it.
    Address(IpAddr),
    /// Every address of the node inside `network/prefix` (kube-proxy's
    /// meaning: the host's interface addresses, and here also the `Node`
    /// object's), loopback addresses left out as kube-proxy leaves them out.
    Cidr { network: IpAddr, prefix: u8 },
}

impl AddressRange {
    /// Whether `addr` is this address or inside this range.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match *self {
            Self::Address(a) => a == addr,
            Self::Cidr { network, prefix } => match (network, addr) {
                (IpAddr::V4(n), IpAddr::V4(a)) => prefixes_match(&n.octets(), &a.octets(), prefix),
                (IpAddr::V6(n), IpAddr::V6(a)) => prefixes_match(&n.octets(), &a.octets(), prefix),
                _ => false,
            },
        }
    }
}

fn prefixes_match(network: &[u8], addr: &[u8], prefix: u8) -> bool {
    let bits = usize::from(prefix);
    let (whole, rest) = (bits / 8, bits % 8);
    if network[..whole] != addr[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    network[whole] & mask == addr[whole] & mask
}

impl FromStr for AddressRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wrong = || {
            format!("`{text}` is neither an address nor a CIDR: write 198.18.0.10 or 198.18.0.0/24")
        };
        let Some((addr, prefix)) = text.split_once('/') else {
            return text.parse().map(Self::Address).map_err(|_| wrong());
        };
        let network: IpAddr = addr.parse().map_err(|_| wrong())?;
        let prefix: u8 = prefix.parse().map_err(|_| wrong())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("`{text}`: prefix length {prefix} exceeds {max}"));
        }
        Ok(Self::Cidr { network, prefix })
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(a) => write!(f, "{a}"),
            Self::Cidr { network, prefix } => write!(f, "{network}/{prefix}"),
        }
    }
}

impl NodePortAddresses {
    /// True when a range needs the host's interface addresses.
    pub fn needs_host_addresses(&self) -> bool {
        matches!(self, Self::Given(ranges) if ranges.iter().any(|r| matches!(r, AddressRange::Cidr { .. })))
    }
}

/// The `InternalIP` and `ExternalIP` addresses of `node`, sorted, each once
/// (hostnames and unparsable entries are left out).
pub fn node_object_addresses(node: &Node) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| address::parse(&a.address))
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses
}

/// This node for [`super::translate()`]: named `name`, with the NodePort
/// addresses `choice` makes of the `Node` object (None while it is not
/// known) and of the host's interface addresses `host` (sorted, each once),
/// and the zone of the Node's [`LABEL_TOPOLOGY_ZONE`] label (None when
/// missing or empty, as kube-proxy reads it).
pub fn node_info(
    name: &str,
    node: Option<&Node>,
    choice: &NodePortAddresses,
    host: &[IpAddr],
) -> NodeInfo {
    let from_node = node.map(node_object_addresses).unwrap_or_default();
    let mut addresses: Vec<IpAddr> = match choice {
        NodePortAddresses::FromNode => from_node,
        NodePortAddresses::Given(ranges) => ranges
            .iter()
            .flat_map(|range| match *range {
                AddressRange::Address(a) => vec![a],
                // Loopback addresses are left out, as kube-proxy leaves them
                // out: the node's own traffic to them meets no xlb hook.
                AddressRange::Cidr { .. } => from_node
                    .iter()
                    .chain(host)
                    .copied()
                    .filter(|a| range.contains(*a) && !a.is_loopback())
                    .collect(),
            })
            .collect(),
    };
    addresses.sort_unstable();
    addresses.dedup();
    let zone = node
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|labels| labels.get(LABEL_TOPOLOGY_ZONE))
        .filter(|zone| !zone.is_empty())
        .cloned();
    NodeInfo {
        name: name.to_owned(),
        addresses,
        zone,
    }
}

/// The addresses on this host's interfaces (in the agent's network
/// namespace), read over netlink.
pub fn host_addresses() -> std::io::Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addrs
        .filter_map(|ifa| {
            let address = ifa.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node() -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": "node-a" },
            "status": { "addresses": [
                { "type": "Hostname", "address": "node-a" },
                { "type": "InternalIP", "address": "198.18.0.10" },
                { "type": "ExternalIP", "address": "198.19.0.10" },
                { "type": "InternalIP", "address": "2001:2::10" },
                { "type": "InternalDNS", "address": "node-a.cluster" },
                { "type": "InternalIP", "address": "198.18.0.10" },
            ]},
        }))
        .unwrap()
    }

    fn addrs(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn given(list: &[&str]) -> NodePortAddresses {
        NodePortAddresses::Given(list.iter().map(|r| r.parse().unwrap()).collect())
    }

    #[test]
    fn by_default_the_node_objects_internal_and_external_ips() {
        let info = node_info("node-a", Some(&node()), &NodePortAddresses::FromNode, &[]);
        assert_eq!(info.name, "node-a");
        assert_eq!(
            info.addresses,
            addrs(&["198.18.0.10", "198.19.0.10", "2001:2::10"])
        );
        let unknown = node_info("node-a", None, &NodePortAddresses::FromNode, &[]);
        assert!(unknown.addresses.is_empty());
    }

    #[test]
    fn the_zone_is_the_nodes_topology_label_when_not_empty() {
        let zone_of = |label: Option<&str>| {
            let mut n = node();
            n.metadata.labels = label.map(|zone| {
                [(LABEL_TOPOLOGY_ZONE.to_owned(), zone.to_owned())]
                    .into_iter()
                    .collect()
            });
            node_info("node-a", Some(&n), &NodePortAddresses::FromNode, &[]).zone
        };
        assert_eq!(zone_of(Some("zone-a")), Some("zone-a".to_owned()));
        assert_eq!(zone_of(Some("")), None);
        assert_eq!(zone_of(None), None);
        let unknown = node_info("node-a", None, &NodePortAddresses::FromNode, &[]);
        assert_eq!(unknown.zone, None);
    }

    #[test]
    fn ranges_select_node_and_host_addresses_but_loopback_and_addresses_are_taken_as_given() {
        let host = addrs(&["127.0.0.1", "::1", "198.18.5.1", "198.19.7.7"]);
        let cases: [(&[&str], &[&str]); 6] = [
            (&["198.18.0.0/16"], &["198.18.0.10", "198.18.5.1"]),
            (
                &["198.19.0.0/24", "2001:2::/64"],
                &["198.19.0.10", "2001:2::10"],
            ),
            (&["198.18.0.10/32"], &["198.18.0.10"]),
            (&["198.18.99.1"], &["198.18.99.1"]),
            // Every address but loopback ones, as kube-proxy: a localhost
            // NodePort would meet no xlb hook.
            (
                &["0.0.0.0/0", "::/0"],
                &[
                    "198.18.0.10",
                    "198.18.5.1",
                    "198.19.0.10",
                    "198.19.7.7",
                    "2001:2::10",
                ],
            ),
            (&["127.0.0.0/8"], &[]),
        ];
        for (ranges, expected) in cases {
            let info = node_info("node-a", Some(&node()), &given(ranges), &host);
            assert_eq!(info.addresses, addrs(expected), "{ranges:?}");
        }
    }

    #[test]
    fn cidr_membership_honours_partial_bytes() {
        let range: AddressRange = "198.18.0.0/15".parse().unwrap();
        assert!(range.contains("198.19.255.1".parse().unwrap()));
        assert!(!range.contains("198.20.0.1".parse().unwrap()));
        assert!(!range.contains("2001:2::1".parse().unwrap()));
        let v6: AddressRange = "2001:2::/48".parse().unwrap();
        assert!(v6.contains("2001:2:0:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:2:1::1".parse().unwrap()));
    }

    #[test]
    fn bad_entries_name_the_input() {
        assert_eq!(
            "198.18.0.0/33".parse::<AddressRange>().unwrap_err(),
            "`198.18.0.0/33`: prefix length 33 exceeds 32"
        );
        assert_eq!(
            "eth0".parse::<AddressRange>().unwrap_err(),
            "`eth0` is neither an address nor a CIDR: write 198.18.0.10 or 198.18.0.0/24"
        );
        assert_eq!(
            "198.18.0.0/16".parse::<AddressRange>().unwrap().to_string(),
            "198.18.0.0/16"
        );
    }

    #[test]
    fn only_cidrs_need_the_host_addresses() {
        assert!(!NodePortAddresses::FromNode.needs_host_addresses());
        assert!(!given(&["198.18.0.10"]).needs_host_addresses());
        assert!(given(&["198.18.0.10", "198.18.0.0/24"]).needs_host_addresses());
    }
}
