//! Health probes of direct-server-return backends through the tunnel.
//!
//! A `dsr` service's traffic reaches a backend wrapped in an outer header,
//! which the backend's `xlb decap` strips before its stack, holding the VIP
//! on `lo`, answers the client from the VIP. A probe of the backend's own
//! address tests none of that. So a backend of a `dsr` service is probed at
//! a VIP of its service, on the check's port, from a socket marked with a
//! probe mark (`SO_MARK`) that names the backend: the datapath's
//! `tc_probe_encap` wraps the probe's packets for that backend as `xdp_lb`
//! wraps a client's, and the backend answers from the VIP to this host. The
//! probe passes only when the path the traffic takes works.
//!
//! [`ProbeTunnel`] decides each target's [`ProbePath`] and gives every
//! backend address probed this way a slot: its probes' mark is the base
//! with the slot in the low 16 bits ([`xdp_lb::PROBE_SLOTS`]); the agent
//! writes each slot's backend to the datapath ([`SlotChanges`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use xdp_lb::ProbeMarkBase;

use crate::model::{FrontendKind, Mode, Model, Service};

/// Probe slots: the low 16 bits of a probe mark.
const SLOTS: u32 = xdp_lb::PROBE_SLOTS;

/// How a health probe reaches its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbePath {
    /// To the backend's own address.
    Direct,
    /// Through the DSR tunnel: to `vip` (a VIP of the backend's service),
    /// from a socket with `mark`, which `tc_probe_encap` wraps for the
    /// backend.
    Tunnel { vip: IpAddr, mark: u32 },
    /// The backend is of a `dsr` service, but no probe can go through the
    /// tunnel to it (nor can traffic): its probes fail with this reason.
    Unwrappable(NoTunnel),
}

impl fmt::Display for ProbePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct => f.write_str("direct"),
            Self::Tunnel { vip, mark } => write!(f, "tunnel via {vip} (mark {mark:#010x})"),
            Self::Unwrappable(why) => write!(f, "none ({why})"),
        }
    }
}

/// Why a backend of a `dsr` service cannot be probed through the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum NoTunnel {
    #[error(
        "the agent has no --encap-source of the backend's family ({family}), so neither its \
         traffic nor a probe can be wrapped for it"
    )]
    NoEncapSource { family: Family },
    #[error(
        "the service has no VIP frontend a packet to the backend can be wrapped from (an IPv4 \
         backend needs an IPv4 VIP: IPv6 is not wrapped in IPv4)"
    )]
    NoVip,
    #[error("every one of the {SLOTS} probe marks is taken")]
    NoMarkLeft,
}

/// An IP family, as errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// The probe slots that changed in [`ProbeTunnel::assign`]: write the added
/// ones to the datapath before their probes start, remove the others once
/// their probes have stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotChanges {
    pub added: Vec<(u32, IpAddr)>,
    pub removed: Vec<u32>,
}

/// Which backends are probed through the tunnel, and the slot of each.
#[derive(Clone, Debug)]
pub struct ProbeTunnel {
    base: ProbeMarkBase,
    has_source_v4: bool,
    has_source_v6: bool,
    slots: BTreeMap<IpAddr, u32>,
    /// Where the search for a free slot starts: one past the last slot
    /// given. A freed slot is given again only after the others, so a late
    /// packet of a stopped probe is not wrapped for another backend.
    next: u32,
}

impl ProbeTunnel {
    /// A tunnel with marks `base | slot`, for an agent with an
    /// `--encap-source` of IPv4 (`has_source_v4`) and of IPv6.
    pub const fn new(base: ProbeMarkBase, has_source_v4: bool, has_source_v6: bool) -> Self {
        Self {
            base,
            has_source_v4,
            has_source_v6,
            slots: BTreeMap::new(),
            next: 0,
        }
    }

    /// The mark base.
    pub const fn base(&self) -> ProbeMarkBase {
        self.base
    }

    /// The mark of the probes of the backend at `ip`, if it has a slot.
    pub fn mark(&self, ip: IpAddr) -> Option<u32> {
        self.slots.get(&ip).map(|slot| self.base.get() | slot)
    }

    /// Gives a slot to every backend of `model` that is probed through the
    /// tunnel (a checked backend of a `dsr` service that can be wrapped
    /// for), keeps the slots of those that stay, and frees the others.
    pub fn assign(&mut self, model: &Model) -> SlotChanges {
        let wanted: BTreeSet<IpAddr> = model
            .services
            .values()
            .filter(|service| service.mode == Mode::Dsr && service.health_check.is_some())
            .flat_map(|service| {
                service
                    .backends
                    .iter()
                    .map(|backend| backend.addr.ip())
                    .filter(|&ip| self.wrappable(service, ip).is_ok())
            })
            .collect();
        let mut changes = SlotChanges::default();
        self.slots.retain(|ip, slot| {
            let stays = wanted.contains(ip);
            if !stays {
                changes.removed.push(*slot);
            }
            stays
        });
        let mut taken: BTreeSet<u32> = self.slots.values().copied().collect();
        // Freed just now: not given again in this round.
        taken.extend(&changes.removed);
        for ip in wanted {
            if self.slots.contains_key(&ip) {
                continue;
            }
            let Some(slot) = (0..SLOTS)
                .map(|i| (self.next + i) % SLOTS)
                .find(|slot| !taken.contains(slot))
            else {
                // Every slot taken: `path` says so for the rest.
                break;
            };
            taken.insert(slot);
            self.next = (slot + 1) % SLOTS;
            self.slots.insert(ip, slot);
            changes.added.push((slot, ip));
        }
        changes
    }

    /// How a probe reaches the backend at `ip` of `service`: through the
    /// tunnel for a `dsr` service (from its slot's mark, given by
    /// [`assign`](Self::assign)), directly for any other.
    pub fn path(&self, service: &Service, ip: IpAddr) -> ProbePath {
        if service.mode != Mode::Dsr {
            return ProbePath::Direct;
        }
        match self.wrappable(service, ip) {
            Err(why) => ProbePath::Unwrappable(why),
            Ok(vip) => match self.mark(ip) {
                Some(mark) => ProbePath::Tunnel { vip, mark },
                None => ProbePath::Unwrappable(NoTunnel::NoMarkLeft),
            },
        }
    }

    /// The VIP a probe of the backend at `ip` goes to, or why there is
    /// none. A VIP of the backend's family first; an IPv6 backend also takes
    /// an IPv4 VIP (IPv4-in-IPv6), as `xdp_lb` wraps traffic. Node
    /// addresses are this host's own: a probe to one would never leave it.
    fn wrappable(&self, service: &Service, ip: IpAddr) -> Result<IpAddr, NoTunnel> {
        let family = Family::of(ip);
        let has_source = match family {
            Family::V4 => self.has_source_v4,
            Family::V6 => self.has_source_v6,
        };
        if !has_source {
            return Err(NoTunnel::NoEncapSource { family });
        }
        let vips = || {
            service
                .frontends
                .iter()
                .filter(|frontend| frontend.kind == FrontendKind::Vip)
                .map(|frontend| frontend.addr)
        };
        vips()
            .find(|vip| Family::of(*vip) == family)
            .or_else(|| vips().find(|vip| family == Family::V6 && vip.is_ipv4()))
            .ok_or(NoTunnel::NoVip)
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Duration};

    use super::*;
    use crate::model::{
        Backend, BackendState, Frontend, HealthCheck, Probe, Protocol, ServiceName,
    };

    const BASE: ProbeMarkBase = ProbeMarkBase::DEFAULT;

    fn check() -> HealthCheck {
        HealthCheck {
            probe: Probe::Tcp,
            port: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }

    fn frontend(addr: &str, kind: FrontendKind) -> Frontend {
        Frontend {
            addr: addr.parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
            kind,
            snat_remote: false,
            source_ranges_only: false,
        }
    }

    fn service(mode: Mode, frontends: Vec<Frontend>, backends: &[&str]) -> Service {
        Service {
            protocol: Protocol::Tcp,
            frontends,
            backends: backends
                .iter()
                .map(|addr| Backend {
                    addr: addr.parse::<SocketAddr>().unwrap(),
                    weight: 1,
                    state: BackendState::Active,
                    local: false,
                })
                .collect(),
            mode,
            affinity: None,
            health_check: Some(check()),
            drop_without_backends: false,
            source_ranges: Vec::new(),
        }
    }

    fn model(services: Vec<(&str, Service)>) -> Model {
        let mut model = Model::default();
        for (name, service) in services {
            model.services.insert(ServiceName(name.into()), service);
        }
        model
    }

    fn ip(addr: &str) -> IpAddr {
        addr.parse().unwrap()
    }

    fn dsr_v4(backends: &[&str]) -> Service {
        service(
            Mode::Dsr,
            vec![frontend("198.19.0.1", FrontendKind::Vip)],
            backends,
        )
    }

    #[test]
    fn each_backend_of_a_dsr_service_gets_its_own_mark_and_the_mark_names_it() {
        let mut tunnel = ProbeTunnel::new(BASE, true, true);
        let model = model(vec![(
            "web",
            dsr_v4(&["198.18.2.1:80", "198.18.2.2:80", "198.18.2.3:80"]),
        )]);
        let changes = tunnel.assign(&model);
        assert_eq!(
            changes.added,
            [
                (0, ip("198.18.2.1")),
                (1, ip("198.18.2.2")),
                (2, ip("198.18.2.3"))
            ]
        );
        assert!(changes.removed.is_empty());
        let service = &model.services[&ServiceName("web".into())];
        for (i, backend) in ["198.18.2.1", "198.18.2.2", "198.18.2.3"]
            .iter()
            .enumerate()
        {
            let mark = BASE.get() | i as u32;
            assert_eq!(
                tunnel.path(service, ip(backend)),
                ProbePath::Tunnel {
                    vip: ip("198.19.0.1"),
                    mark
                }
            );
        }
    }

    #[test]
    fn a_backend_keeps_its_mark_across_reloads_and_a_freed_one_is_not_given_again_at_once() {
        let mut tunnel = ProbeTunnel::new(BASE, true, true);
        tunnel.assign(&model(vec![(
            "web",
            dsr_v4(&["198.18.2.1:80", "198.18.2.2:80"]),
        )]));
        let kept = tunnel.mark(ip("198.18.2.2"));
        let changes = tunnel.assign(&model(vec![(
            "web",
            dsr_v4(&["198.18.2.2:80", "198.18.2.3:80"]),
        )]));
        assert_eq!(changes.removed, [0], "198.18.2.1's slot");
        assert_eq!(changes.added, [(2, ip("198.18.2.3"))], "not slot 0");
        assert_eq!(tunnel.mark(ip("198.18.2.2")), kept);
        assert_eq!(tunnel.mark(ip("198.18.2.1")), None);
        assert_eq!(
            tunnel.assign(&model(vec![(
                "web",
                dsr_v4(&["198.18.2.2:80", "198.18.2.3:80"])
            )])),
            SlotChanges::default()
        );
    }

    #[test]
    fn one_mark_per_backend_address_whatever_its_services() {
        let mut tunnel = ProbeTunnel::new(BASE, true, true);
        let other = service(
            Mode::Dsr,
            vec![frontend("198.19.0.2", FrontendKind::Vip)],
            &["198.18.2.1:80"],
        );
        let changes = tunnel.assign(&model(vec![
            ("web", dsr_v4(&["198.18.2.1:80"])),
            ("api", other),
        ]));
        assert_eq!(changes.added, [(0, ip("198.18.2.1"))]);
    }

    #[test]
    fn nat_services_and_unchecked_dsr_services_are_probed_directly_without_a_mark() {
        let mut tunnel = ProbeTunnel::new(BASE, true, true);
        let nat = service(
            Mode::Nat,
            vec![frontend("198.19.0.1", FrontendKind::Vip)],
            &["198.18.2.1:80"],
        );
        let mut unchecked = dsr_v4(&["198.18.2.2:80"]);
        unchecked.health_check = None;
        let changes = tunnel.assign(&model(vec![("nat", nat.clone()), ("dsr", unchecked)]));
        assert_eq!(changes, SlotChanges::default());
        assert_eq!(tunnel.path(&nat, ip("198.18.2.1")), ProbePath::Direct);
    }

    #[test]
    fn the_vip_is_of_the_backends_family_and_an_ipv6_backend_takes_an_ipv4_vip() {
        let tunnel = ProbeTunnel::new(BASE, true, true);
        let both = service(
            Mode::Dsr,
            vec![
                frontend("198.18.0.10", FrontendKind::Node),
                frontend("2001:2::ff00:0:0:1", FrontendKind::Vip),
                frontend("198.19.0.1", FrontendKind::Vip),
            ],
            &[],
        );
        assert_eq!(
            tunnel.wrappable(&both, ip("198.18.2.1")),
            Ok(ip("198.19.0.1"))
        );
        assert_eq!(
            tunnel.wrappable(&both, ip("2001:2:2::1")),
            Ok(ip("2001:2::ff00:0:0:1"))
        );
        let v4_only = dsr_v4(&[]);
        assert_eq!(
            tunnel.wrappable(&v4_only, ip("2001:2:2::1")),
            Ok(ip("198.19.0.1")),
            "IPv4-in-IPv6"
        );
        let v6_only = service(
            Mode::Dsr,
            vec![frontend("2001:2::ff00:0:0:1", FrontendKind::Vip)],
            &[],
        );
        assert_eq!(
            tunnel.wrappable(&v6_only, ip("198.18.2.1")),
            Err(NoTunnel::NoVip),
            "IPv6 is not wrapped in IPv4"
        );
        let node_only = service(
            Mode::Dsr,
            vec![frontend("198.18.0.10", FrontendKind::Node)],
            &[],
        );
        assert_eq!(
            tunnel.wrappable(&node_only, ip("198.18.2.1")),
            Err(NoTunnel::NoVip)
        );
    }

    #[test]
    fn without_an_encap_source_of_its_family_a_backend_gets_no_mark_and_its_path_says_why() {
        let mut tunnel = ProbeTunnel::new(BASE, true, false);
        let model = model(vec![(
            "web",
            dsr_v4(&["198.18.2.1:80", "[2001:2:2::1]:80"]),
        )]);
        let changes = tunnel.assign(&model);
        assert_eq!(changes.added, [(0, ip("198.18.2.1"))]);
        let service = &model.services[&ServiceName("web".into())];
        let path = tunnel.path(service, ip("2001:2:2::1"));
        assert_eq!(
            path,
            ProbePath::Unwrappable(NoTunnel::NoEncapSource { family: Family::V6 })
        );
        assert!(path.to_string().contains("--encap-source"), "{path}");
    }
}
