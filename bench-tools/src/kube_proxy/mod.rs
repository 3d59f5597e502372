//! Text generators for the rulesets kube-proxy would write for the same
//! services xlb is given, so `xlb-bench sync` can time loading them.
//!
//! Pure functions over plain data: the caller decides where (and whether) the
//! text is loaded. The shapes follow what kube-proxy generates for ClusterIP
//! services over TCP and UDP (`pkg/proxy/nftables` and
//! `pkg/proxy/iptables`): the NAT path that every packet to a service takes,
//! with the masquerade marking.
//! Chains kube-proxy keeps empty for plain ClusterIP services (firewall,
//! node ports, external IPs) are declared but not filled.

use std::net::{Ipv4Addr, SocketAddrV4};

pub(crate) mod iptables;
pub(crate) mod nftables;

/// A service port's transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The lower-case name kube-proxy writes in rules and hashes into chain
    /// names: `tcp` or `udp`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One ClusterIP service port, `ns/<name>:http` over TCP or UDP, with its
/// ready endpoints in the order kube-proxy would list them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Service {
    /// The Service's name (namespace [`NAMESPACE`]).
    pub(crate) name: String,
    /// The cluster IP.
    pub(crate) vip: Ipv4Addr,
    /// The service port.
    pub(crate) port: u16,
    /// The service port's protocol.
    pub(crate) protocol: Protocol,
    /// Ready endpoints.
    pub(crate) endpoints: Vec<SocketAddrV4>,
}

/// The namespace every generated service lives in.
pub(crate) const NAMESPACE: &str = "ns";
/// The port name of every generated service port.
pub(crate) const PORT_NAME: &str = "http";
/// The cluster's pod CIDR: traffic from outside it is marked for masquerade
/// (kube-proxy's `--cluster-cidr`). The benchmark's backends live here.
pub(crate) const CLUSTER_CIDR: &str = "198.18.0.0/16";
/// The mark bit kube-proxy uses for "masquerade this" (its default).
pub(crate) const MASQ_MARK: &str = "0x4000";

impl Service {
    /// kube-proxy's service port name, `ns/name:port`.
    fn port_name(&self) -> String {
        format!("{NAMESPACE}/{}:{PORT_NAME}", self.name)
    }
}

/// A short, stable, upper-case base32 digest of `input`, `len` characters
/// long (at most 25): kube-proxy names chains by a hash of the service port
/// (and endpoint) so names stay short and unique. The hash here is FNV-1a
/// (any stable hash does: only uniqueness and length matter for the cost).
fn digest(input: &str, len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |seed: u64| {
        input.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let bits =
        (u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(fnv(0x8422_2325_cbf2_9ce4));
    (0..len.min(25))
        .map(|k| char::from(ALPHABET[((bits >> (123 - 5 * k)) & 31) as usize]))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two services of two endpoints each, the shape the unit tests check.
    pub(crate) fn two_services() -> Vec<Service> {
        (0..2u8)
            .map(|i| Service {
                name: format!("svc-{i}"),
                vip: Ipv4Addr::new(198, 19, 0, i),
                port: 80,
                protocol: Protocol::Tcp,
                endpoints: (0..2u8)
                    .map(|j| SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1 + 2 * i + j), 8000))
                    .collect(),
            })
            .collect()
    }

    /// One service of two endpoints per protocol, both on the same VIP and
    /// port, named alike: only the protocol tells them apart.
    pub(crate) fn tcp_and_udp_services() -> Vec<Service> {
        [Protocol::Tcp, Protocol::Udp]
            .into_iter()
            .map(|protocol| Service {
                name: "dns".to_owned(),
                vip: Ipv4Addr::new(198, 19, 0, 10),
                port: 53,
                protocol,
                endpoints: (0..2u8)
                    .map(|j| SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1 + j), 5353))
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn protocol_names_are_lower_case() {
        assert_eq!(Protocol::Tcp.name(), "tcp");
        assert_eq!(Protocol::Udp.name(), "udp");
    }

    #[test]
    fn digests_are_stable_sized_and_distinct() {
        let a = digest("ns/svc-0:http/tcp", 16);
        assert_eq!(a.len(), 16);
        assert_eq!(a, digest("ns/svc-0:http/tcp", 16));
        assert_ne!(a, digest("ns/svc-1:http/tcp", 16));
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        let many: std::collections::BTreeSet<String> = (0..100_000)
            .map(|i| digest(&format!("ns/svc-{i}:http/tcp"), 8))
            .collect();
        assert_eq!(many.len(), 100_000);
    }
}
