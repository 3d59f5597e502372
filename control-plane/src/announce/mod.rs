//! Getting traffic to the VIPs: which addresses this instance announces, and
//! the speakers that announce them.
//!
//! An address is announced while this instance can serve it: `xdp_lb` is
//! attached, the first full sync is programmed, and at least one service
//! with a frontend on the address has a backend in its Maglev table (active
//! and healthy). A VIP whose backends all fail their checks is withdrawn, so
//! the routers send its traffic to the instances that can serve it. Node
//! addresses (NodePort) belong to the node and are never announced.
//!
//! Speakers:
//! - [`bird`]: BGP, through the BIRD daemon the operator runs beside the
//!   agent (we do not speak BGP ourselves);
//! - [`l2`]: the datapath answers ARP requests and IPv6 neighbour
//!   solicitations for the VIPs on one interface, as MetalLB's and Cilium's
//!   L2 modes do, and the agent announces each address it starts answering
//!   for to the segment.
//!
//! When the agent stops, announcements stay as they are, like the pinned
//! datapath they point at: a restart withdraws nothing. A failed box is
//! withdrawn by its BGP sessions going down. A restarted agent changes them
//! only once it can serve (its first sync programmed): until then, a
//! configuration file it rejects for one, `xlb status` shows what each
//! speaker holds as the earlier agent left it, read back.

pub mod bird;
pub mod l2;

use std::{collections::BTreeSet, net::IpAddr};

use xdp_lb::{AddressKind, Datapath};

pub use self::{
    bird::{Bird, BirdError},
    l2::L2,
};
use crate::{api::AnnouncementView, metrics::Metrics, reconcile::Desired};

/// The VIPs `desired` can serve: see the module docs.
pub fn servable(desired: &Desired) -> BTreeSet<IpAddr> {
    let vips: BTreeSet<IpAddr> = desired
        .addresses
        .iter()
        .filter(|(_, kind)| *kind == AddressKind::Vip)
        .map(|(addr, _)| *addr)
        .collect();
    desired
        .services
        .iter()
        .filter(|(_, service)| !service.members.is_empty())
        .flat_map(|(_, service)| service.frontends.iter().map(|(addr, _)| addr.ip()))
        .filter(|addr| vips.contains(addr))
        .collect()
}

/// One way of announcing.
#[derive(Debug)]
pub enum Speaker {
    Bgp(Bird),
    /// Answer ARP / neighbour solicitations on an interface.
    L2(L2),
}

impl Speaker {
    /// The name in `xlb status` and the metrics' `speaker` label.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Bgp(_) => "bgp",
            Self::L2(_) => "l2",
        }
    }

    /// Moves the speaker from announcing `before` (None: unknown, e.g. left
    /// by an earlier agent) to announcing exactly `after`.
    fn announce(
        &mut self,
        before: Option<&BTreeSet<IpAddr>>,
        after: &BTreeSet<IpAddr>,
        datapath: &mut Datapath,
        metrics: &Metrics,
    ) -> anyhow::Result<()> {
        match self {
            Self::Bgp(bird) => Ok(bird.announce(after)?),
            Self::L2(l2) => l2.announce(before, after, datapath, metrics),
        }
    }

    /// What the speaker announces now, read back from where it keeps it
    /// (BIRD's included file, the L2 map), whoever wrote it.
    fn held(&self, datapath: &Datapath) -> anyhow::Result<BTreeSet<IpAddr>> {
        match self {
            Self::Bgp(bird) => Ok(bird.routed()?),
            Self::L2(l2) => Ok(l2.held(datapath)?),
        }
    }
}

#[derive(Debug)]
struct Announcing {
    speaker: Speaker,
    /// What the speaker announces as of its last success.
    announced: Option<BTreeSet<IpAddr>>,
    /// The last attempt failed part-way: the speaker may hold some of what
    /// it was to add (the L2 map's entries written before the failure), so
    /// what it holds is not `announced`, and the next attempt reads it back
    /// (passes no `before`) rather than leave such an address answered for
    /// once it is no longer wanted.
    unknown: bool,
    /// Why its last attempt failed, until one succeeds.
    error: Option<String>,
    /// Attempts that failed since the last success.
    failures: u64,
}

/// The speakers and what each announces.
#[derive(Debug, Default)]
pub struct Announcer {
    speakers: Vec<Announcing>,
    /// What should be announced; None until the agent can serve at all.
    wanted: Option<BTreeSet<IpAddr>>,
}

impl Announcer {
    pub fn new(speakers: Vec<Speaker>) -> Self {
        Self {
            speakers: speakers
                .into_iter()
                .map(|speaker| Announcing {
                    speaker,
                    announced: None,
                    unknown: false,
                    error: None,
                    failures: 0,
                })
                .collect(),
            wanted: None,
        }
    }

    /// Starts each speaker's `xlb_announced_vips` at what it holds now,
    /// read back: an earlier agent's announcements stay until this agent's
    /// first [`Announcer::update`], and the gauge says so meanwhile rather
    /// than 0. A speaker that cannot be read back keeps 0 (status names
    /// the error).
    pub fn record_held(&self, datapath: &Datapath, metrics: &Metrics) {
        for one in &self.speakers {
            if let Ok(held) = one.speaker.held(datapath) {
                metrics.announced(one.speaker.name(), held.len());
            }
        }
    }

    /// Announces exactly `vips` with every speaker that does not already.
    /// A speaker that fails keeps its error for `xlb status` and is tried
    /// again by [`Announcer::retry`].
    pub fn update(&mut self, vips: BTreeSet<IpAddr>, datapath: &mut Datapath, metrics: &Metrics) {
        self.wanted = Some(vips);
        self.retry(datapath, metrics);
    }

    /// The agent's announcement tick: sends the L2 announcements still due,
    /// and tries again every speaker that failed ([`Announcer::retry`]).
    pub fn tick(&mut self, datapath: &mut Datapath, metrics: &Metrics) {
        for one in &mut self.speakers {
            if let Speaker::L2(l2) = &mut one.speaker {
                l2.send_pending(metrics);
            }
        }
        self.retry(datapath, metrics);
    }

    /// Tries again every speaker whose announcements differ from what is
    /// wanted (a BIRD that was down, say).
    pub fn retry(&mut self, datapath: &mut Datapath, metrics: &Metrics) {
        let Some(wanted) = &self.wanted else { return };
        for one in &mut self.speakers {
            if !one.unknown && one.announced.as_ref() == Some(wanted) {
                continue;
            }
            let name = one.speaker.name();
            match one.speaker.announce(
                one.announced.as_ref().filter(|_| !one.unknown),
                wanted,
                datapath,
                metrics,
            ) {
                Ok(()) => {
                    if one.failures == 0 {
                        tracing::info!(speaker = name, vips = ?wanted, "announcing");
                    } else {
                        tracing::info!(
                            speaker = name,
                            vips = ?wanted,
                            failed_attempts = one.failures,
                            "announcing, after failed attempts"
                        );
                    }
                    metrics.announced(name, wanted.len());
                    one.announced = Some(wanted.clone());
                    one.unknown = false;
                    one.error = None;
                    one.failures = 0;
                }
                Err(error) => {
                    let error = crate::error_text::one_line(error.as_ref());
                    // Logged when it starts or changes; each attempt is
                    // counted, and `xlb status` shows the error meanwhile.
                    if one.error.as_deref() == Some(error.as_str()) {
                        tracing::debug!(speaker = name, error, "announcing the VIPs failed again");
                    } else {
                        tracing::error!(
                            speaker = name,
                            error,
                            "announcing the VIPs failed; retrying (logged again when the error \
                             changes, and when it succeeds)"
                        );
                    }
                    metrics.announce_failed(name);
                    one.unknown = true;
                    one.error = Some(error);
                    one.failures += 1;
                }
            }
        }
    }

    /// What `xlb status` shows, one entry per speaker. Before this agent
    /// has announced anything (it cannot serve yet: its configuration file
    /// is rejected, its Kubernetes caches are not synced), each speaker
    /// still holds what an earlier agent left, and that is what is shown,
    /// read back from `datapath` or BIRD's file.
    pub fn views(&self, datapath: &Datapath) -> Vec<AnnouncementView> {
        let left_by_earlier_agent = self.wanted.is_none();
        self.speakers
            .iter()
            .map(|one| {
                let (vips, error) = if left_by_earlier_agent {
                    match one.speaker.held(datapath) {
                        Ok(held) => (held, None),
                        Err(error) => (
                            BTreeSet::new(),
                            Some(format!(
                                "reading back what an earlier agent announced: {}",
                                crate::error_text::one_line(error.as_ref())
                            )),
                        ),
                    }
                } else {
                    (one.announced.clone().unwrap_or_default(), one.error.clone())
                };
                AnnouncementView {
                    speaker: one.speaker.name().to_owned(),
                    interface: match &one.speaker {
                        Speaker::L2(l2) => Some(l2.interface().to_owned()),
                        Speaker::Bgp(_) => None,
                    },
                    vips: vips.into_iter().collect(),
                    left_by_earlier_agent,
                    error,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use xdp_lb::ServiceOptions;

    use super::*;
    use crate::{
        model::{Protocol, ServiceName},
        reconcile::DesiredService,
    };

    fn service(frontends: &[&str], members: usize) -> DesiredService {
        let backend: SocketAddr = "198.18.1.100:80".parse().unwrap();
        DesiredService {
            frontends: frontends
                .iter()
                .map(|f| (f.parse().unwrap(), Protocol::Tcp))
                .collect(),
            options: ServiceOptions::default(),
            snat_frontends: Vec::new(),
            local: Vec::new(),
            ranged_frontends: Vec::new(),
            source_ranges: Vec::new(),
            members: vec![(backend, 1); members],
            listed: members,
            live: vec![backend; members],
        }
    }

    #[test]
    fn a_vip_is_servable_while_one_of_its_services_has_a_backend() {
        let ip = |a: &str| -> IpAddr { a.parse().unwrap() };
        let desired = Desired {
            services: vec![
                // Same VIP, one service empty: still served by the other.
                (ServiceName("a".into()), service(&["198.19.0.1:80"], 1)),
                (ServiceName("b".into()), service(&["198.19.0.1:53"], 0)),
                // Every backend down.
                (ServiceName("c".into()), service(&["198.19.0.2:80"], 0)),
                (ServiceName("d".into()), service(&["[2001:2:1::1]:80"], 2)),
                // A NodePort on the node's own address.
                (ServiceName("e".into()), service(&["198.18.0.1:30080"], 1)),
            ],
            addresses: vec![
                (ip("198.18.0.1"), AddressKind::Node),
                (ip("198.19.0.1"), AddressKind::Vip),
                (ip("198.19.0.2"), AddressKind::Vip),
                (ip("2001:2:1::1"), AddressKind::Vip),
            ],
        };
        assert_eq!(
            servable(&desired),
            BTreeSet::from([ip("198.19.0.1"), ip("2001:2:1::1")])
        );
    }
}
