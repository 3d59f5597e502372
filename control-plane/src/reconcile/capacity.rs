//! Whether a sync fits the datapath's maps, decided before anything is
//! written: a configuration too big for the maps the agent's `--max-*`
//! flags sized is refused whole, rather than programmed until a map is full
//! (which left the new configuration half-applied: some of a new service's
//! frontends written, others not, and nothing of the old one removed).
//!
//! Counted at the sync's peak. Make-before-break puts it just before the
//! break half: what the sync adds is written while everything programmed is
//! still there, and what it drops goes only after. So each map must hold
//! what is programmed plus what is new (the client networks peak earlier):
//! - **frontends** (`SERVICES`, `--max-services` entries): the programmed
//!   ones, and the wanted ones not programmed yet;
//! - **service IDs** (`--max-services` less one: ID 0 is never given out):
//!   the IDs in use — services of the last sync, and services recovered from
//!   pinned maps, claimed or not — and one per wanted service without an ID
//!   (a wanted service takes over a recovered one's ID through a frontend
//!   they share, as the sync does);
//! - **backend IDs** (`--max-backends` less one): the IDs in use — every live
//!   record: the members, draining and terminating backends of the last
//!   sync, records recovered from pinned maps, recovered duplicates still to
//!   retire — and one per wanted live backend without a record. An ID is
//!   held until its backend is retired, at the end of the sync that drops
//!   it, and is free for the next sync: there is no grace period, a reused
//!   ID comes with a higher generation, so flows tracked under its old
//!   owner find a stale generation and are re-selected (see [`super::ids`]);
//! - **frontend addresses** (`ADDRESSES`, `--max-addresses` entries): the
//!   programmed ones, and the wanted ones not programmed yet. The L2
//!   announcements (`L2_ANNOUNCE`, as big) are the wanted VIPs that have a
//!   backend, and the L2 speaker withdraws before it announces
//!   ([`crate::announce::l2`]), so they fit whenever the addresses do;
//! - **client networks** (`SOURCE_RANGES`, `--max-services` entries: one per
//!   network of a service's `loadBalancerSourceRanges`, so a Kubernetes
//!   Service's once per port). They are written service by service, and
//!   within a service its networks not programmed yet go in before its old
//!   ones leave ([`xdp_lb::Datapath::set_source_ranges`]). So the peak is the
//!   largest, over the services written in turn, of what the trie holds at
//!   that point (everything programmed, as the services before it left it)
//!   plus that service's new networks — not every service's old and new
//!   ones at once. A service gone, or left without networks, keeps its
//!   networks until the break half (a frontend reading none drops every
//!   client). After a failed write, a service counts every network it may
//!   hold, and all it wants as new.
//!
//! A fresh datapath holds nothing: its counts are the configuration's own,
//! which is what `xlb check-config` checks. The counts start from the
//! services that changed since the last sync, as the sync does, so that a
//! single change costs the same whatever the number of services; the whole
//! configuration is counted only for the message, when a map overflows.

use std::{collections::BTreeSet, fmt, net::SocketAddr};

use consistent_hash::SizingPolicy;
use xdp_lb::MapSizes;

use super::{Change, Desired, FrontendKey, Reconciler};
use crate::model::Model;

/// A map the configuration can overflow, with the flag that sizes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Quantity {
    /// Frontends in `SERVICES`.
    Frontends,
    /// Service IDs: one per service, which its table and counters are under.
    Services,
    /// Backend IDs: backend records and their counters.
    Backends,
    /// Frontend addresses in `ADDRESSES`, and as many L2 announcements.
    Addresses,
    /// Client networks in `SOURCE_RANGES`: each service's
    /// `loadBalancerSourceRanges`, so a Kubernetes Service's once per port.
    SourceRanges,
}

impl Quantity {
    /// What `count` map entries are, in the configuration's words.
    pub const fn what(self, count: usize) -> &'static str {
        let one = count == 1;
        match self {
            Self::Frontends if one => "frontend",
            Self::Frontends => "frontends",
            Self::Services if one => "service",
            Self::Services => "services",
            Self::Backends if one => "backend",
            Self::Backends => "backends",
            Self::Addresses if one => "frontend address",
            Self::Addresses => "frontend addresses",
            Self::SourceRanges if one => {
                "client network of loadBalancerSourceRanges (one entry per network and Service \
                 port)"
            }
            Self::SourceRanges => {
                "client networks of loadBalancerSourceRanges (one entry per network and \
                 Service port)"
            }
        }
    }

    /// The `xlb agent` flag (and `xlb check-config` flag) that sizes the map.
    pub const fn flag(self) -> &'static str {
        match self {
            Self::Frontends | Self::Services | Self::SourceRanges => "--max-services",
            Self::Backends => "--max-backends",
            Self::Addresses => "--max-addresses",
        }
    }
}

/// One map a sync needs more entries of than it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow {
    pub quantity: Quantity,
    /// How many the configuration has (a backend shared by several
    /// services once: it has one ID).
    pub wanted: usize,
    /// How many more the sync holds until its break half: programmed
    /// entries the configuration dropped (and recovered duplicate backend
    /// records).
    pub leaving: usize,
    /// How many the map holds: the flag's value, less one for IDs.
    pub capacity: usize,
    /// The flag's value (the map's size as the datapath was loaded).
    pub size: u32,
}

impl Overflow {
    /// Everything the sync holds at its peak.
    pub const fn needed(&self) -> usize {
        self.wanted + self.leaving
    }
}

impl fmt::Display for Overflow {
    /// `the configuration needs 70000 frontends but --max-services is 65536:
    /// raise --max-services`, with what is still programmed where it counts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, flag) = (self.quantity.what(self.wanted), self.quantity.flag());
        write!(f, "the configuration needs {} {what}", self.wanted)?;
        if self.leaving > 0 {
            write!(
                f,
                ", plus {} of those it drops, which stay programmed until the new ones are \
                 written: {} at once,",
                self.leaving,
                self.needed()
            )?;
        }
        if usize::try_from(self.size) == Ok(self.capacity) {
            write!(f, " but {flag} is {}", self.size)?;
        } else {
            write!(
                f,
                " but {flag} {} holds {} (ID 0 is never given out)",
                self.size, self.capacity
            )?;
        }
        write!(f, ": raise {flag}")?;
        if self.leaving > 0 && self.wanted <= self.capacity {
            write!(f, ", or make the removals a change of their own first")?;
        }
        Ok(())
    }
}

/// The maps a sync does not fit, each with its counts, in the order of
/// [`Quantity`]. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct DoesNotFit {
    pub overflows: Vec<Overflow>,
}

impl fmt::Display for DoesNotFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, overflow) in self.overflows.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{overflow}")?;
        }
        f.write_str(" (nothing was written)")
    }
}

impl Reconciler {
    /// Whether a sync of `desired` would fit the maps, counted as
    /// [`Reconciler::sync`] counts before it writes anything (see the
    /// module docs for what is counted). On a fresh reconciler
    /// ([`Reconciler::new`]) the counts are `desired`'s own.
    pub fn fits(&self, desired: &Desired) -> Result<(), DoesNotFit> {
        self.check_fits(&self.changes(desired, self.full_pass), desired)
    }

    /// Whether `model`, every backend healthy (health only takes backends
    /// out), fits maps of `sizes` on a fresh datapath: what `xlb
    /// check-config` checks, and what an agent starting with nothing pinned
    /// refuses before it makes a map.
    pub fn fits_fresh(model: &Model, sizes: MapSizes) -> Result<(), DoesNotFit> {
        // The seed places backends in tables; it changes no count.
        Self::new(0, SizingPolicy::default(), sizes).fits(&Desired::new(model, |_, _| true))
    }

    /// [`Reconciler::fits`] for the `changes` a sync computed.
    pub(super) fn check_fits(
        &self,
        changes: &[Change],
        desired: &Desired,
    ) -> Result<(), DoesNotFit> {
        let new = || changes.iter().filter_map(|c| c.new.as_ref());
        let mut overflows = Vec::new();
        let mut check =
            |quantity, peak: usize, size: u32, reserved: u32, wanted: &dyn Fn() -> usize| {
                let capacity = usize::try_from(size.saturating_sub(reserved)).unwrap_or(usize::MAX);
                if peak > capacity {
                    let wanted = wanted();
                    overflows.push(Overflow {
                        quantity,
                        wanted,
                        leaving: peak.saturating_sub(wanted),
                        capacity,
                        size,
                    });
                }
            };

        // The frontends of services that did not change are programmed.
        let added: BTreeSet<FrontendKey> = new()
            .flat_map(|s| s.frontends.iter().copied())
            .filter(|key| !self.frontends.contains_key(key))
            .collect();
        check(
            Quantity::Frontends,
            self.frontends.len() + added.len(),
            self.sizes.services,
            0,
            &|| {
                let all: BTreeSet<&FrontendKey> = desired
                    .services
                    .iter()
                    .flat_map(|(_, s)| s.frontends.iter())
                    .collect();
                all.len()
            },
        );

        // Service IDs as `claim_service_ids` will take them; client
        // networks as `write_frontends` will write them, service by
        // service: the new ones of a service while all programmed ones are
        // still there (the datapath writes only those not there yet), then
        // its old ones go. A service left without networks, and a service
        // gone, have theirs removed only in the break half.
        let mut claimed = BTreeSet::new();
        let mut new_services = 0;
        let mut ranges = self.source_ranges;
        let mut ranges_peak = ranges;
        for change in changes {
            let Some(service) = &change.new else { continue };
            let id = match self.names.get(&change.name) {
                Some(&id) => Some(id),
                None => {
                    let id = self.recovered_id(service, &claimed);
                    match id {
                        Some(id) => {
                            claimed.insert(id);
                        }
                        None => new_services += 1,
                    }
                    id
                }
            };
            let wanted = &service.source_ranges;
            if wanted.is_empty() {
                continue;
            }
            // A service without an ID yet gets one nothing else holds.
            match id.and_then(|id| self.services.get(&id)) {
                Some(programmed) => {
                    let programmed = &programmed.source_ranges;
                    if programmed.differ(wanted) {
                        ranges_peak = ranges_peak.max(ranges + programmed.added_by(wanted));
                        ranges = (ranges + wanted.len()).saturating_sub(programmed.networks.len());
                    }
                }
                None => {
                    ranges += wanted.len();
                    ranges_peak = ranges_peak.max(ranges);
                }
            }
        }
        check(
            Quantity::Services,
            self.service_ids.in_use() + new_services,
            self.sizes.services,
            1,
            &|| desired.services.len(),
        );

        // As `write_backends` will allocate them: a live backend of a
        // service that did not change has its record.
        let added: BTreeSet<SocketAddr> = new()
            .flat_map(|s| s.live.iter().copied())
            .filter(|addr| !self.backends.contains_key(addr))
            .collect();
        check(
            Quantity::Backends,
            self.backend_ids.in_use() + added.len(),
            self.sizes.backends,
            1,
            &|| {
                let all: BTreeSet<&SocketAddr> = desired
                    .services
                    .iter()
                    .flat_map(|(_, s)| s.live.iter())
                    .collect();
                all.len()
            },
        );

        // Both sorted by address: unchanged (the usual case) is one walk.
        let same = self
            .addresses
            .keys()
            .eq(desired.addresses.iter().map(|(addr, _)| addr));
        let added = if same {
            0
        } else {
            desired
                .addresses
                .iter()
                .filter(|(addr, _)| !self.addresses.contains_key(addr))
                .count()
        };
        check(
            Quantity::Addresses,
            self.addresses.len() + added,
            self.sizes.addresses,
            0,
            &|| desired.addresses.len(),
        );

        check(
            Quantity::SourceRanges,
            ranges_peak,
            self.sizes.services,
            0,
            &|| {
                desired
                    .services
                    .iter()
                    .map(|(_, s)| s.source_ranges.len())
                    .sum()
            },
        );

        if overflows.is_empty() {
            Ok(())
        } else {
            Err(DoesNotFit { overflows })
        }
    }
}
