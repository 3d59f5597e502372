//! Ready-made topologies, all dual stack, addressed by [`plan`].
//!
//! Each builder returns a struct that owns its [`Rig`] (so dropping the struct
//! tears everything down) and names every host, interface and address, so
//! tests never hard-code them. A test that needs more adds it through the
//! `rig` field.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{Cidr, Netns, Result, Rig, RigOptions, Route, VethEnd, VethOptions};

mod hosts;
mod lb;
pub mod plan;
mod pods;

pub use hosts::TwoHosts;
pub use lb::{ClientLbBackends, ClientLbRouterBackend, EcmpLb, EcmpLbs};
pub use pods::{Node, NodeWithPods, OutsideClient, Pod, TwoNodes};

/// How a topology is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// See [`RigOptions::quiet`].
    pub quiet: bool,
    /// Permanent neighbour entries on every link, so no ARP or neighbour
    /// discovery crosses it.
    pub static_neighbours: bool,
    /// MTU of every veth (kernel default when `None`).
    pub mtu: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            quiet: true,
            static_neighbours: false,
            mtu: None,
        }
    }
}

impl Options {
    pub(crate) fn rig(&self) -> Result<Rig> {
        Rig::with_options(RigOptions { quiet: self.quiet })
    }

    pub(crate) fn veth(&self) -> VethOptions {
        VethOptions {
            mtu: self.mtu,
            ..VethOptions::default()
        }
    }
}

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Both families, for tests that run once per family.
    pub const ALL: [Self; 2] = [Self::V4, Self::V6];
}

/// An interface with its two addresses, and the veth end it is linked to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The host's namespace.
    pub netns: Netns,
    /// The interface.
    pub dev: String,
    /// Its IPv4 address.
    pub v4: Ipv4Addr,
    /// Its IPv6 address.
    pub v6: Ipv6Addr,
    /// The other end of this interface's veth.
    pub peer: VethEnd,
}

impl Endpoint {
    /// The address of `family`.
    pub fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.v4.into(),
            Family::V6 => self.v6.into(),
        }
    }

    /// `ip(family):port`.
    pub fn socket(&self, family: Family, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(family), port)
    }

    /// This interface as a veth end.
    pub fn end(&self) -> VethEnd {
        VethEnd {
            netns: self.netns.clone(),
            dev: self.dev.clone(),
        }
    }
}

/// Assigns both addresses to `end` and describes it.
pub(crate) fn endpoint(
    rig: &mut Rig,
    end: &VethEnd,
    peer: &VethEnd,
    (v4, v6): (Cidr, Cidr),
) -> Result<Endpoint> {
    rig.add_address(&end.netns, &end.dev, v4)?;
    rig.add_address(&end.netns, &end.dev, v6)?;
    let (IpAddr::V4(v4), IpAddr::V6(v6)) = (v4.addr(), v6.addr()) else {
        return Err(crate::Error::Invalid {
            what: "dual-stack address pair",
            input: format!("{v4}, {v6}"),
            expected: "an IPv4 and an IPv6 address",
        });
    };
    Ok(Endpoint {
        netns: end.netns.clone(),
        dev: end.dev.clone(),
        v4,
        v6,
        peer: peer.clone(),
    })
}

/// Routes the whole rig range (both families) from `host` via `gateway`:
/// connected routes stay more specific, and nothing leads out of the rig.
pub(crate) fn route_rig_via(rig: &mut Rig, host: &Netns, gateway: &Endpoint) -> Result<()> {
    rig.add_route(host, &Route::to(crate::RIG_RANGE_V4).via(gateway.v4.into()))?;
    rig.add_route(host, &Route::to(crate::RIG_RANGE_V6).via(gateway.v6.into()))
}

/// Has each end host of `ends` take every flow it receives on one CPU
/// ([`Rig::steer_flows`]), as hosts behind a NIC do.
pub(crate) fn steer_flows(rig: &Rig, ends: &[&Endpoint]) -> Result<()> {
    ends.iter()
        .try_for_each(|end| rig.steer_flows(&end.netns, &end.dev))
}

/// Pins neighbours on a segment when the options ask for it.
pub(crate) fn pin(rig: &Rig, options: &Options, segment: &[&Endpoint]) -> Result<()> {
    if options.static_neighbours {
        let ends: Vec<VethEnd> = segment.iter().map(|e| e.end()).collect();
        rig.pin_neighbours(&ends)?;
    }
    Ok(())
}
