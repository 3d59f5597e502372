//! The addresses of this host's interfaces, for the warnings the agent
//! gives when a file makes one of them a VIP (`xdp_lb` then takes every
//! packet to that address on the interfaces it is attached to and drops
//! those to ports no service has, the host's own SSH and monitoring among
//! them), or when `--hairpin-source` is one of them (the node's answer to
//! itself through a service would then never come back translated).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::model::{FrontendKind, Model};

/// The addresses of this network namespace's interfaces, each with the
/// names of the interfaces that hold it. Empty when they cannot be listed
/// (the warnings are a help, not a check).
pub(crate) fn of_this_host() -> BTreeMap<IpAddr, BTreeSet<String>> {
    let mut addresses: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return addresses;
    };
    for interface in interfaces {
        let Some(address) = interface.address else {
            continue;
        };
        let ip = match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => continue,
        };
        addresses
            .entry(ip)
            .or_default()
            .insert(interface.interface_name);
    }
    addresses
}

/// One warning per address of `host` that `model` has as a VIP, naming its
/// interfaces and services.
pub(crate) fn vips_among(model: &Model, host: &BTreeMap<IpAddr, BTreeSet<String>>) -> Vec<String> {
    let mut vips: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
    for (name, service) in &model.services {
        for frontend in &service.frontends {
            if frontend.kind == FrontendKind::Vip && host.contains_key(&frontend.addr) {
                vips.entry(frontend.addr).or_default().insert(&name.0);
            }
        }
    }
    vips.into_iter()
        .map(|(addr, services)| {
            let interfaces: Vec<&str> = host[&addr].iter().map(String::as_str).collect();
            let services: Vec<&str> = services.into_iter().collect();
            format!(
                "{addr} is an address of this host ({}) and a VIP of {}: xdp_lb takes every \
                 packet to it on the interfaces it is attached to and drops those to ports no \
                 service has (this host's SSH, its monitoring); give the services an address of \
                 their own, or make it a node address (`kind: node`: ports 30000-32767 only)",
                interfaces.join(", "),
                services.join(", ")
            )
        })
        .collect()
}

/// One warning per address of `hairpin_sources` (`--hairpin-source`) that
/// `host` holds, naming its interfaces.
///
/// A flow whose client and backend are both this node is given the hairpin
/// source so that the backend's answer leaves by a route, through the hook
/// that translates it back; an answer to one of the host's own addresses
/// goes through the loopback instead, past every hook, and the client never
/// sees it. A pod reaching itself still works (its answer to the node leaves
/// by its veth), hence a warning rather than a refusal, but the pod then sees
/// its own requests come from its node, which network policies commonly let
/// through as the kubelet's.
pub(crate) fn hairpin_sources_among(
    hairpin_sources: &[IpAddr],
    host: &BTreeMap<IpAddr, BTreeSet<String>>,
) -> Vec<String> {
    hairpin_sources
        .iter()
        .filter_map(|addr| {
            let interfaces: Vec<&str> = host.get(addr)?.iter().map(String::as_str).collect();
            Some(format!(
                "--hairpin-source {addr} is an address of this host ({}): the node reaching \
                 itself through a service (a hostNetwork client whose backend is this node) \
                 gets no answer, as its backend's answer to {addr} goes through the loopback, \
                 past the hook that translates it; give an address no host holds, which the \
                 node and its pods route by their default route (the default, 169.254.42.1 \
                 and fd00::a9fe:2a01)",
                interfaces.join(", ")
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Frontend, Mode, Protocol, Service, ServiceName};

    fn service(addr: &str, kind: FrontendKind) -> Service {
        Service {
            protocol: Protocol::Tcp,
            frontends: vec![Frontend {
                addr: addr.parse().unwrap(),
                port: 8443,
                protocol: Protocol::Tcp,
                kind,
                snat_remote: false,
                source_ranges_only: false,
            }],
            backends: Vec::new(),
            mode: Mode::Nat,
            affinity: None,
            health_check: None,
            drop_without_backends: false,
            source_ranges: Vec::new(),
        }
    }

    #[test]
    fn a_vip_on_an_address_of_this_host_is_named_with_its_interfaces() {
        let model = Model {
            services: [
                ("web", service("198.18.0.1", FrontendKind::Vip)),
                ("api", service("198.18.0.1", FrontendKind::Vip)),
                ("nodeport", service("198.18.0.2", FrontendKind::Node)),
                ("elsewhere", service("198.18.100.1", FrontendKind::Vip)),
            ]
            .into_iter()
            .map(|(n, s)| (ServiceName(n.into()), s))
            .collect(),
        };
        let host = [
            ("198.18.0.1", ["eth-c", "eth-d"]),
            ("198.18.0.2", ["eth-c", "eth-c"]),
        ]
        .into_iter()
        .map(|(a, i)| {
            (
                a.parse().unwrap(),
                i.iter().map(|&i| i.to_owned()).collect(),
            )
        })
        .collect();
        let warnings = vips_among(&model, &host);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "198.18.0.1 is an address of this host (eth-c, eth-d) and a VIP of api, web: "
            ),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn a_hairpin_source_the_host_holds_is_named_with_its_interfaces() {
        let host = BTreeMap::from([(
            "198.18.0.1".parse().unwrap(),
            BTreeSet::from(["eth-c".to_owned(), "eth-d".to_owned()]),
        )]);
        let sources: Vec<IpAddr> = ["198.18.0.1", "169.254.42.1", "fd00::a9fe:2a01"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let warnings = hairpin_sources_among(&sources, &host);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "--hairpin-source 198.18.0.1 is an address of this host (eth-c, eth-d): "
            ),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn this_host_s_addresses_include_its_loopback() {
        let host = of_this_host();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(
            host.get(&loopback).is_some_and(|i| i.contains("lo")),
            "{host:?}"
        );
    }
}
