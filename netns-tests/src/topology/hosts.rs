//! Two hosts on one veth.
use super::{Endpoint, Options, endpoint, pin, plan::Subnet};
use crate::{HostKind, Result, Rig};

/// Hosts `a` (198.18.0.1, 2001:2::1) and `b` (.2, ::2), linked `eth0`–`eth0`.
#[derive(Debug)]
pub struct TwoHosts {
    pub rig: Rig,
    pub a: Endpoint,
    pub b: Endpoint,
}

impl TwoHosts {
    /// Builds the two hosts, both of `kind`.
    pub fn build(kind: HostKind, options: &Options) -> Result<Self> {
        let mut rig = options.rig()?;
        let a = rig.add_host("a", kind)?;
        let b = rig.add_host("b", kind)?;
        let veth = rig.add_veth_with(&a, "eth0", &b, "eth0", &options.veth())?;
        let lan = Subnet::lan(0);
        let a = endpoint(&mut rig, &veth.a, &veth.b, lan.host(1))?;
        let b = endpoint(&mut rig, &veth.b, &veth.a, lan.host(2))?;
        pin(&rig, options, &[&a, &b])?;
        Ok(Self { rig, a, b })
    }
}
