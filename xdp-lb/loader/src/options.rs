//! How to load the datapath: map sizes and where to pin.

use std::path::PathBuf;

use crate::Error;

/// Capacities of the maps that grow with the configuration and the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Frontends (`SERVICES`), and service IDs (tables, per-service counters).
    pub services: u32,
    /// Backend IDs (`BACKENDS`, per-backend counters).
    pub backends: u32,
    /// Tracked flows (`CONNTRACK`, and as many reply entries). Both tables get
    /// two slots per flow, in buckets of eight, rounded up to a power of two
    /// of buckets (`xdp_lb_common::flow_table::buckets_for`, which says why):
    /// 896 and 768 bytes per bucket, 416 bytes per flow at the least.
    pub conntrack: u32,
    /// Frontend addresses (`ADDRESSES`), and as many L2 announcements
    /// (`L2_ANNOUNCE`, [`crate::Datapath::announce_l2`]).
    pub addresses: u32,
    /// Fragmented datagrams in flight (`FRAGMENTS`, an LRU map of 44 bytes
    /// and its overhead per entry): the first fragment's ports, kept for the
    /// later ones; every first fragment the core sees takes one. The least
    /// recently used give way (an LRU map, possibly before it is full), and
    /// their datagrams' later fragments are dropped
    /// (`drop_fragment_untracked`).
    pub fragments: u32,
}

/// The default of [`MapSizes::fragments`].
pub const DEFAULT_FRAGMENT_ENTRIES: u32 = 8_192;

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            services: 65_536,
            backends: 65_536,
            conntrack: 131_072,
            addresses: 4_096,
            fragments: DEFAULT_FRAGMENT_ENTRIES,
        }
    }
}

impl MapSizes {
    fn validate(&self) -> Result<(), Error> {
        for (name, value) in [
            ("services", self.services),
            ("backends", self.backends),
            ("conntrack", self.conntrack),
            ("addresses", self.addresses),
            ("fragments", self.fragments),
        ] {
            if value == 0 {
                return Err(Error::InvalidOption {
                    option: name,
                    reason: "must be at least 1",
                });
            }
        }
        if self.backends < 2 {
            return Err(Error::InvalidOption {
                option: "backends",
                reason: "must be at least 2 (ID 0 is never a backend)",
            });
        }
        Ok(())
    }
}

/// The version stamp [`crate::Datapath::load_with`] gives the programs:
/// `major * 1_000_000 + minor * 1_000 + patch` of this crate's version, so a
/// newer release has a larger stamp. [`crate::Datapath::load_stamped`] sets
/// another (upgrade tests load "another build" from this one).
pub const DEFAULT_VERSION_STAMP: u32 = {
    let major = parse_decimal(env!("CARGO_PKG_VERSION_MAJOR"));
    let minor = parse_decimal(env!("CARGO_PKG_VERSION_MINOR"));
    let patch = parse_decimal(env!("CARGO_PKG_VERSION_PATCH"));
    assert!(minor < 1_000 && patch < 1_000 && major < 4_000);
    major * 1_000_000 + minor * 1_000 + patch
};

/// A decimal number, at compile time (the version parts cargo sets).
const fn parse_decimal(digits: &str) -> u32 {
    let bytes = digits.as_bytes();
    assert!(!bytes.is_empty());
    let mut value = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit());
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

/// Options for [`crate::Datapath::load_with`]. (The version stamp is an
/// argument of [`crate::Datapath::load_stamped`] rather than a field here, so
/// that struct literals of these options written before it keep compiling.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub sizes: MapSizes,
    /// Pin every map in this directory (on a bpffs), but the benchmark
    /// wrapper's, and reuse maps already pinned there: a restarted agent
    /// finds its services, tables and flows. A directory whose recorded
    /// layout version is another build's is refused before anything loads
    /// (`Error::Layout`).
    pub pin_dir: Option<PathBuf>,
}

impl LoadOptions {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        self.sizes.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_stamp_is_the_crate_version() {
        let version: Vec<u32> = env!("CARGO_PKG_VERSION")
            .split(['.', '-'])
            .take(3)
            .map(|part| part.parse().unwrap())
            .collect();
        assert_eq!(
            DEFAULT_VERSION_STAMP,
            version[0] * 1_000_000 + version[1] * 1_000 + version[2]
        );
        assert_eq!(parse_decimal("407"), 407);
    }
}
