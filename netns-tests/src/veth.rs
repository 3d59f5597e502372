//! veth pairs: what a rig creates between two namespaces, and how.
use crate::{Mac, Netns};

/// What a namespace stands for; decides the default offloads of its veths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostKind {
    /// A machine on a wire (client, backend, router, LB box): TX checksum
    /// offload off, because a real NIC delivers full checksums and XDP may
    /// only rewrite packets that carry them (DESIGN.md, "Which hook where").
    Wire,
    /// A pod behind a veth: kernel defaults, partial checksums included, as a
    /// pod's network stack really sends them.
    Pod,
}

impl HostKind {
    /// The offloads a veth end in a host of this kind gets.
    pub const fn default_offloads(self) -> Offloads {
        match self {
            Self::Wire => Offloads::WIRE,
            Self::Pod => Offloads::KEEP,
        }
    }
}

/// Offload settings for one interface (`ethtool -K`); `None` leaves a feature
/// as the kernel set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// TX checksum offload (`tx`): off makes the stack fill in full checksums.
    pub tx_checksum: Option<bool>,
    /// RX checksum offload (`rx`).
    pub rx_checksum: Option<bool>,
    /// TCP segmentation offload (`tso`).
    pub tso: Option<bool>,
    /// Generic segmentation offload (`gso`).
    pub gso: Option<bool>,
    /// Generic receive offload (`gro`).
    pub gro: Option<bool>,
}

impl Offloads {
    /// Changes nothing.
    pub const KEEP: Self = Self {
        tx_checksum: None,
        rx_checksum: None,
        tso: None,
        gso: None,
        gro: None,
    };

    /// A wire-like host: TX checksum offload off.
    pub const WIRE: Self = Self {
        tx_checksum: Some(false),
        ..Self::KEEP
    };

    /// The `ethtool -K <dev>` feature arguments, empty when nothing changes.
    pub(crate) fn ethtool_args(&self) -> Vec<&'static str> {
        let features = [
            ("tx", self.tx_checksum),
            ("rx", self.rx_checksum),
            ("tso", self.tso),
            ("gso", self.gso),
            ("gro", self.gro),
        ];
        features
            .into_iter()
            .filter_map(|(name, on)| on.map(|on| [name, if on { "on" } else { "off" }]))
            .flatten()
            .collect()
    }
}

/// How to create a veth pair; the defaults suit most tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VethOptions {
    /// MTU of both ends (kernel default 1500).
    pub mtu: Option<u32>,
    /// Offloads of end A; `None` uses A's host kind.
    pub offloads_a: Option<Offloads>,
    /// Offloads of end B; `None` uses B's host kind.
    pub offloads_b: Option<Offloads>,
    /// MAC address of end A (random otherwise).
    pub mac_a: Option<Mac>,
    /// MAC address of end B (random otherwise).
    pub mac_b: Option<Mac>,
}

/// One end of a veth pair: an interface in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VethEnd {
    /// The namespace holding this end.
    pub netns: Netns,
    /// The interface name inside that namespace.
    pub dev: String,
}

/// A veth pair the rig created; it lives until its namespaces are deleted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Veth {
    /// The first end given at creation.
    pub a: VethEnd,
    /// The second end given at creation.
    pub b: VethEnd,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethtool_arguments() {
        assert!(Offloads::KEEP.ethtool_args().is_empty());
        assert_eq!(Offloads::WIRE.ethtool_args(), ["tx", "off"]);
        let all = Offloads {
            tx_checksum: Some(true),
            gro: Some(false),
            ..Offloads::KEEP
        };
        assert_eq!(all.ethtool_args(), ["tx", "on", "gro", "off"]);
    }
}
