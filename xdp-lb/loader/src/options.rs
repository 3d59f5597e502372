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
    /// Tracked flows (`CONNTRACK`, and as many reply entries). The LRU lists
    /// are per CPU, so each CPU evicts from its own share: size for the busiest
    /// CPU's flows times the CPU count.
    pub conntrack: u32,
    /// Frontend addresses (`ADDRESSES`).
    pub addresses: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            services: 65_536,
            backends: 65_536,
            conntrack: 131_072,
            addresses: 4_096,
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

/// Options for [`crate::Datapath::load_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub sizes: MapSizes,
    /// Pin every map in this directory (on a bpffs), and reuse maps already
    /// pinned there: a restarted agent finds its services, tables and flows.
    pub pin_dir: Option<PathBuf>,
}

impl LoadOptions {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        self.sizes.validate()
    }
}
