//! The model: what `xdp_lb` must do with a frame, from the model's own parse,
//! the fixture's configuration, the flows the run has translated or
//! encapsulated — their source NAT included — and `Datapath::simulate` for
//! the backend Maglev (or conntrack) picks.
//!
//! Source NAT (`lb/conntrack.rs`, `create`): a new NAT flow whose client is
//! the backend it lands on (hairpin) is given the hairpin source and a port
//! of the source-NAT range; one whose reply tuple (backend to client) is
//! already another live flow's (one client port, two frontends, one backend:
//! a clash) keeps its address and is given a port of the range. The port is
//! the datapath's random pick: the model names the ports it may not take
//! (those other live flows to the backend reply to) and learns the one it
//! took from the frame and from conntrack. The reply entry of a port a flow
//! gave up (re-created, it picked another) stays behind, naming the flow,
//! until a reply to it finds it orphaned or a new flow claims it: the model
//! keeps those too (`Conntrack::stale`).
//!
//! Fragments (`lb/fragment.rs`): a first fragment of a TCP or UDP datagram
//! carries its transport header and is a packet of its flow; the model
//! remembers its ports by datagram (`Model::fragments`), as the datapath
//! does, and a later fragment finds its flow by them (`decide_later`); an
//! IPv6 one whose Fragment header names Destination Options, which only its
//! first fragment carries, by its UDP datagram's, else its TCP one's.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
};

use xdp_lb::{AddressKind, Flow, FlowState, Protocol, Simulation, Verdict};

use crate::{
    answer::{self, IcmpAnswer},
    fixture::{Fixture, Service},
    hex,
    icmp::{self, IcmpError},
    parse::{Datagram, Headers, IPPROTO_TCP, IpPacket, parse},
    support::lb::Lb,
};

/// TCP flags.
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// How many ports of the range a new flow tries before it is refused
/// (`SNAT_PORT_TRIES`): consecutive ones, from a random start.
const SNAT_PORT_TRIES: u16 = 8;

/// What must happen to a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Expected {
    /// Passed byte for byte, counted as this verdict.
    Untouched(Verdict),
    /// Dropped with this (documented) reason.
    Dropped(Verdict),
    /// A request to a frontend: translated to `backend`, its source as
    /// `source` says, and sent on. `created`: the request creates the
    /// flow's entry (a new flow, or a SYN on a closing one).
    Request {
        flow: Flow,
        backend: SocketAddr,
        source: Source,
        created: bool,
    },
    /// A request to a direct-server-return frontend: wrapped, unchanged, in
    /// an outer header from `source` to `backend` and sent on
    /// (`fuzz/encap.rs`); dropped as `drop_encap_unsupported` when there is
    /// no `source` (IPv6 to an IPv4 backend, or no source configured for the
    /// backend's family). Tracked either way: the datapath creates the entry
    /// before it wraps.
    Encapsulated {
        flow: Flow,
        backend: SocketAddr,
        source: Option<IpAddr>,
        /// An ICMP error about `flow` (a direct-server-return flow), wrapped
        /// as it came rather than translated: it creates and refreshes
        /// nothing, is counted as an error sent to the backend, and when even
        /// it does not fit once wrapped it is dropped (nothing the LB sent to
        /// answer about).
        error: bool,
    },
    /// A reply of the tracked flow `original`: its source becomes the
    /// frontend `original` was sent to, and under source NAT its destination
    /// becomes `original`'s client (`client`). A reply tuple is one flow's
    /// alone: a flow whose tuple would clash is given another source.
    Reply {
        flow: Flow,
        original: Flow,
        frontend: SocketAddr,
        client: Option<SocketAddr>,
    },
    /// Answered in its place: the frame becomes exactly `answer` and goes
    /// back out where it came in (XDP_TX), counted as `verdict`.
    Answered { verdict: Verdict, answer: Frame },
    /// An ICMP or ICMPv6 error about a tracked flow: translated toward
    /// `toward` and sent on.
    IcmpError {
        error: IcmpError,
        toward: ErrorToward,
    },
}

/// Where an ICMP error about a tracked flow goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ErrorToward {
    /// To the flow's backend (an error about a reply, sent to a frontend);
    /// under source NAT, with the address and port the flow was given.
    Backend(SocketAddr, Option<SocketAddr>),
    /// To the client, the quote translated back to the frontend the flow
    /// was sent to; under source NAT, with the client.
    Client(SocketAddr, Option<SocketAddr>),
}

/// Why a flow's source is translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Snat {
    /// Its reply tuple is another live flow's: the client keeps its address
    /// and is given a port of the range.
    Clash,
    /// The client is the backend: the hairpin source and a port of the range.
    Hairpin,
}

/// The source a request leaves with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The client's own.
    Kept,
    /// The one source NAT gave the flow when its entry was created.
    Translated(Snat, SocketAddr),
    /// One source NAT gives it now (the entry is created).
    New(NewSource),
}

/// A source the datapath picks for a new entry: `addr`, with a port of
/// `ports` that no other live flow to the backend has its replies sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewSource {
    pub why: Snat,
    pub addr: IpAddr,
    pub ports: RangeInclusive<u16>,
    /// The ports of `ports` at `addr` taken by other live flows to the
    /// backend (over the flow's protocol).
    pub taken: BTreeSet<u16>,
    /// When `SNAT_PORT_TRIES` consecutive ports of the range (from any
    /// start, wrapping) are taken, the datapath may find none free and
    /// refuse the flow as a service without backends refuses it: this
    /// refusal. `None` while the tries cannot all fail.
    pub refusal: Option<Box<Expected>>,
}

impl NewSource {
    /// `source` is one the datapath may have given the flow.
    pub(crate) fn admits(&self, source: SocketAddr) -> Result<(), String> {
        if source.ip() != self.addr {
            return Err(format!(
                "source NAT ({:?}) gave the flow the source {source}, not one at {}",
                self.why, self.addr
            ));
        }
        if !self.ports.contains(&source.port()) {
            return Err(format!(
                "source NAT ({:?}) gave the flow port {}, outside the range {:?}",
                self.why,
                source.port(),
                self.ports
            ));
        }
        if self.taken.contains(&source.port()) {
            return Err(format!(
                "source NAT ({:?}) gave the flow {source}, which another live flow to the \
                 same backend already has its replies sent to",
                self.why
            ));
        }
        Ok(())
    }
}

/// A frame's bytes, shown in hex.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Frame(pub Vec<u8>);

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes: {}", self.0.len(), hex(&self.0))
    }
}

/// The model's parse of a frame and what must happen to it.
#[derive(Clone, Debug)]
pub(crate) struct Prediction {
    pub headers: Headers,
    pub expected: Expected,
    /// The TCP flags of a TCP packet (0 for anything else).
    pub tcp_flags: u8,
    /// A reply whose tuple is a stale reply entry's: the datapath finds it
    /// orphaned and deletes it, then treats the frame as no reply.
    pub orphan: Option<Flow>,
    /// An ICMP error about a source-NATed flow (translated at both ends).
    pub about_snat: bool,
    /// A first fragment of a TCP or UDP datagram: the datapath remembers its
    /// ports, source then destination, for the datagram's later fragments
    /// (`FRAGMENTS`), whatever becomes of it.
    pub remembers: Option<(Datagram, (u16, u16))>,
}

/// A flow the datapath tracks, as the model knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub backend: SocketAddr,
    /// The source it was given by source NAT (the backend answers it).
    pub snat: Option<SocketAddr>,
    /// TCP: a FIN or RST was seen (either way): the next SYN re-creates it.
    pub closing: bool,
    /// TCP: the client sent a FIN, or either end a RST.
    pub client_closed: bool,
    /// TCP: the backend sent a FIN, or either end a RST.
    pub backend_closed: bool,
}

impl Entry {
    /// The datapath's entry, as the model describes one.
    pub(crate) fn of(tracked: &xdp_lb::TrackedFlow) -> Self {
        Self {
            backend: tracked.backend,
            snat: tracked.snat,
            closing: tracked.state == FlowState::Closing,
            client_closed: tracked.client_closed,
            backend_closed: tracked.backend_closed,
        }
    }

    /// A new entry, created by a packet with TCP `flags` from the client.
    fn new(backend: SocketAddr, snat: Option<SocketAddr>, flags: u8) -> Self {
        let mut entry = Self {
            backend,
            snat,
            closing: false,
            client_closed: false,
            backend_closed: false,
        };
        // A SYN opens the flow, whatever else it carries.
        if !is_syn(flags) {
            entry.see(flags, true);
        }
        entry
    }

    /// A packet of the flow with TCP `flags`, from the client or the
    /// backend: a FIN or RST makes it closing; a FIN closes its sender's
    /// end, a RST both.
    fn see(&mut self, flags: u8, from_client: bool) {
        if !is_closing(flags) {
            return;
        }
        self.closing = true;
        let rst = flags & TCP_RST != 0;
        self.client_closed |= rst || from_client;
        self.backend_closed |= rst || !from_client;
    }

    /// Both ends closed: the flow no longer holds its reply tuple, which a
    /// new flow takes over instead of clashing (`CtEntry::is_closed`).
    const fn is_closed(&self) -> bool {
        self.client_closed && self.backend_closed
    }
}

/// A tracked flow's entry and what the model knows beside it.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    entry: Entry,
    dsr: bool,
    /// Why `entry.snat` is set.
    why: Option<Snat>,
}

/// How often the datapath must have counted each conntrack event the model
/// follows (`CtEvent`), since the run began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Events {
    pub created: u64,
    pub reselected_closing: u64,
    pub snat_allocated: u64,
    pub snat_exhausted: u64,
    pub reply_orphan: u64,
}

/// The flows the datapath tracks, as the model knows them: every request it
/// translated or encapsulated since the last `clear`, and the reply entries
/// (one per NAT flow, none for direct server return, and the stale ones).
#[derive(Debug, Default)]
pub(crate) struct Conntrack {
    tracked: HashMap<Flow, Tracked>,
    /// Creation order, so that picking a flow does not depend on hashing.
    flows: Vec<Flow>,
    /// Reply tuple (from the backend, to the client or the source NAT gave
    /// the flow) → the flow it answers: NAT flows only, one each. A
    /// direct-server-return flow has no reply entry (its replies do not come
    /// back this way).
    replies: HashMap<Flow, Flow>,
    /// Reply entries no flow's replies carry any more, with the flow each
    /// still names, oldest first: the port a re-created source-NAT flow gave
    /// up. `delete_flow` leaves them (they are not the flow's), so they
    /// outlive `clear`.
    stale: Vec<(Flow, Flow)>,
    /// The direct-server-return flows among `flows`.
    dsr: HashSet<Flow>,
    pub events: Events,
}

impl Conntrack {
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// The backend `flow` is tracked to.
    pub(crate) fn backend(&self, flow: &Flow) -> Option<SocketAddr> {
        self.tracked.get(flow).map(|t| t.entry.backend)
    }

    /// The `index`-th flow tracked and its backend.
    pub(crate) fn nth(&self, index: usize) -> Option<(Flow, SocketAddr)> {
        let flow = *self.flows.get(index)?;
        Some((flow, self.tracked[&flow].entry.backend))
    }

    /// Every tracked flow and its entry.
    pub(crate) fn entries(&self) -> HashMap<Flow, Entry> {
        self.tracked.iter().map(|(f, t)| (*f, t.entry)).collect()
    }

    /// The source `flow` was given by source NAT, if it is tracked with one.
    pub(crate) fn snat(&self, flow: &Flow) -> Option<SocketAddr> {
        self.tracked.get(flow)?.entry.snat
    }

    /// The tracked flows source NAT gave another source, in creation order.
    pub(crate) fn source_natted(&self) -> Vec<Flow> {
        self.flows
            .iter()
            .filter(|flow| self.tracked[flow].entry.snat.is_some())
            .copied()
            .collect()
    }

    /// The stale reply entries: each tuple, and the flow it names.
    pub(crate) fn stale(&self) -> &[(Flow, Flow)] {
        &self.stale
    }

    fn stale_holder(&self, reply: &Flow) -> Option<Flow> {
        self.stale
            .iter()
            .find(|(tuple, _)| tuple == reply)
            .map(|&(_, holder)| holder)
    }

    /// The reply entries the datapath holds: one per NAT flow, none for DSR
    /// flows, and the stale ones.
    pub(crate) fn reply_entries(&self) -> usize {
        self.replies.len() + self.stale.len()
    }

    /// How many of the tracked flows are direct server return.
    pub(crate) fn dsr_flows(&self) -> usize {
        self.dsr.len()
    }

    /// `flow` is tracked as direct server return.
    pub(crate) fn is_dsr(&self, flow: &Flow) -> bool {
        self.dsr.contains(flow)
    }

    /// The reply tuple of `flow` tracked as `entry`.
    fn reply_tuple(flow: &Flow, entry: &Entry) -> Flow {
        Flow::new(entry.backend, entry.snat.unwrap_or(flow.src), flow.proto)
    }

    /// The ports of `ports` at `addr` whose reply tuples from `backend` over
    /// `proto` are live flows' other than `flow`'s.
    fn taken_ports(
        &self,
        flow: &Flow,
        backend: SocketAddr,
        addr: IpAddr,
        ports: &RangeInclusive<u16>,
    ) -> BTreeSet<u16> {
        self.replies
            .iter()
            .filter(|(tuple, holder)| {
                *holder != flow
                    && self.holds(holder)
                    && tuple.proto == flow.proto
                    && tuple.src == backend
                    && tuple.dst.ip() == addr
                    && ports.contains(&tuple.dst.port())
            })
            .map(|(tuple, _)| tuple.dst.port())
            .collect()
    }

    /// The flow `holder` of a reply entry still holds its tuple: it is not
    /// closed at both ends (`CtEntry::is_closed`).
    fn holds(&self, holder: &Flow) -> bool {
        self.tracked
            .get(holder)
            .is_some_and(|t| !t.entry.is_closed())
    }

    /// Creates (or re-creates) `flow`'s entry: to `backend`, with `snat`'s
    /// source, closing or not. A source-NAT reply tuple it gave up is
    /// released (the datapath deletes it when it drops the old entry); any
    /// other stays behind, stale; the one it takes is no longer stale.
    fn create(&mut self, flow: Flow, tracked: Tracked) {
        let old = self.tracked.insert(flow, tracked);
        match old {
            None => self.flows.push(flow),
            Some(old) if !old.dsr => {
                // Unless a new flow took the tuple over from it, closed.
                let tuple = Self::reply_tuple(&flow, &old.entry);
                if self.replies.get(&tuple) == Some(&flow) {
                    self.replies.remove(&tuple);
                    if old.entry.snat.is_none() {
                        self.stale.push((tuple, flow));
                    }
                }
            }
            Some(_) => {}
        }
        if tracked.dsr {
            self.dsr.insert(flow);
        } else {
            let tuple = Self::reply_tuple(&flow, &tracked.entry);
            self.stale.retain(|(t, _)| *t != tuple);
            self.replies.insert(tuple, flow);
        }
    }

    /// Deletes every flow and its reply entry (`delete_flow`); the stale
    /// reply entries stay.
    pub(crate) fn clear(&mut self) {
        self.tracked.clear();
        self.flows.clear();
        self.replies.clear();
        self.dsr.clear();
    }
}

/// The fixture and the flows: everything the model predicts from.
#[derive(Debug)]
pub(crate) struct Model {
    pub fixture: Fixture,
    pub conntrack: Conntrack,
    /// The ports of every first fragment of a TCP or UDP datagram sent, by
    /// datagram, the latest for each: what `FRAGMENTS` holds (an LRU map far
    /// larger than a run's datagrams, so nothing is evicted; the run checks
    /// it holds no more), and what a later fragment finds there. Deleting
    /// flows leaves it, as it leaves the map.
    pub fragments: HashMap<Datagram, (u16, u16)>,
}

/// The TCP flags of `frame`'s TCP packet; 0 for anything else.
fn tcp_flags(frame: &[u8], ip: &IpPacket) -> u8 {
    if ip.proto == IPPROTO_TCP {
        frame.get(ip.l4 + 13).copied().unwrap_or(0)
    } else {
        0
    }
}

/// A SYN that opens a connection (no ACK).
const fn is_syn(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// A FIN or RST.
const fn is_closing(flags: u8) -> bool {
    flags & (TCP_FIN | TCP_RST) != 0
}

/// `SNAT_PORT_TRIES` consecutive ports of `ports` (wrapping) are all in
/// `taken`: a random start may find none free.
fn exhaustible(ports: &RangeInclusive<u16>, taken: &BTreeSet<u16>) -> bool {
    let (min, max) = (u32::from(*ports.start()), u32::from(*ports.end()));
    if min == 0 || max < min {
        return true;
    }
    let span = max - min + 1;
    taken.iter().any(|&start| {
        (0..u32::from(SNAT_PORT_TRIES)).all(|i| {
            let port = min + (u32::from(start) - min + i) % span;
            u16::try_from(port).is_ok_and(|p| taken.contains(&p))
        })
    })
}

impl Model {
    pub(crate) fn new(fixture: Fixture) -> Self {
        Self {
            fixture,
            conntrack: Conntrack::default(),
            fragments: HashMap::new(),
        }
    }

    /// What `xdp_lb` must do with `frame`, given the state before it is sent.
    /// An error is a disagreement between the model and `simulate`.
    pub(crate) fn predict(&self, lb: &Lb, frame: &[u8]) -> Result<Prediction, String> {
        let headers = parse(frame);
        let mut prediction = Prediction {
            headers,
            expected: Expected::Untouched(Verdict::PassNotIp),
            tcp_flags: 0,
            orphan: None,
            about_snat: false,
            remembers: None,
        };
        prediction.expected = if headers.counter.is_malformed() {
            Expected::Untouched(Verdict::PassMalformed)
        } else if let Some(ip) = headers.ip {
            // ICMP errors about tracked flows take a path of their own;
            // any other goes the way of any other ICMP packet.
            let error = icmp::read(frame, &headers)
                .and_then(|error| self.decide_error(&error, &mut prediction.about_snat));
            match (error, headers.flow(frame)) {
                (Some(expected), _) => expected,
                (None, Some(flow)) => {
                    if ip.fragment {
                        let ports = (flow.src.port(), flow.dst.port());
                        prediction.remembers = Some((Datagram::of_first(&ip, &flow), ports));
                    }
                    prediction.tcp_flags = tcp_flags(frame, &ip);
                    self.decide_flow(lb, frame, &mut prediction, flow)?
                }
                (None, None) => match headers.later_fragment().as_slice() {
                    [] => self.not_balanced(&ip),
                    datagrams => self.decide_later(lb, &ip, datagrams, &mut prediction)?,
                },
            }
        } else {
            Expected::Untouched(Verdict::PassNotIp)
        };
        Ok(prediction)
    }

    /// Learns from a frame whose outcome matched `prediction` (`verdict`,
    /// and `written`, the source the request left with when it left
    /// translated): a translated or encapsulated request is a tracked flow
    /// from now on; a new source NAT is the one conntrack names, which must
    /// be the one the frame showed; FIN, RST and SYN move the flow's state;
    /// an orphaned stale reply entry is gone. Checks the flow's entry in
    /// conntrack against what the model learnt.
    pub(crate) fn learn(
        &mut self,
        lb: &Lb,
        prediction: &Prediction,
        verdict: Verdict,
        written: Option<SocketAddr>,
    ) -> Result<(), String> {
        if let Some(orphan) = prediction.orphan {
            self.conntrack.stale.retain(|(tuple, _)| *tuple != orphan);
            self.conntrack.events.reply_orphan += 1;
        }
        if let Some((datagram, ports)) = prediction.remembers {
            self.fragments.insert(datagram, ports);
        }
        let flags = prediction.tcp_flags;
        let flow = match &prediction.expected {
            Expected::Request {
                flow,
                backend,
                source,
                created,
            } => {
                let refused = matches!(
                    verdict,
                    Verdict::RefuseReset | Verdict::RefuseUnreachable | Verdict::DropNoBackend
                );
                let request = Learnt {
                    flow: *flow,
                    backend: *backend,
                    created: *created,
                    flags,
                };
                if refused {
                    // Only a new source NAT may be refused (the check held
                    // it to that): no port was free among those tried, and
                    // nothing was created (a re-created flow keeps its
                    // closing entry).
                    self.conntrack.events.reselected_closing +=
                        u64::from(*created && self.conntrack.tracked.contains_key(flow));
                    self.conntrack.events.snat_exhausted += 1;
                } else {
                    self.learn_request(lb, &request, source, written)?;
                }
                *flow
            }
            Expected::Encapsulated {
                flow,
                backend,
                error: false,
                ..
            } => {
                let tracked = self.conntrack.tracked.get(flow).copied();
                match tracked {
                    Some(mut t) if !(is_syn(flags) && t.entry.closing) => {
                        t.entry.see(flags, true);
                        self.conntrack.tracked.insert(*flow, t);
                    }
                    _ => {
                        self.conntrack.events.created += 1;
                        self.conntrack.events.reselected_closing += u64::from(tracked.is_some());
                        let entry = Entry::new(*backend, None, flags);
                        let tracked = Tracked {
                            entry,
                            dsr: true,
                            why: None,
                        };
                        self.conntrack.create(*flow, tracked);
                    }
                }
                *flow
            }
            Expected::Reply { original, .. } => {
                if let Some(t) = self.conntrack.tracked.get_mut(original) {
                    t.entry.see(flags, false);
                }
                *original
            }
            _ => return Ok(()),
        };
        self.check_entry(lb, &flow)
    }

    fn learn_request(
        &mut self,
        lb: &Lb,
        request: &Learnt,
        source: &Source,
        written: Option<SocketAddr>,
    ) -> Result<(), String> {
        let Learnt {
            flow,
            backend,
            created,
            flags,
        } = *request;
        let (why, snat) = match source {
            Source::New(new) => {
                let tracked = lb
                    .dp
                    .tracked_flow(&flow)
                    .map_err(|e| format!("tracked_flow: {e}"))?
                    .ok_or_else(|| format!("{flow:?} was translated, but is not tracked"))?;
                let given = tracked.snat.ok_or_else(|| {
                    format!(
                        "{flow:?} needed source NAT ({:?}), but conntrack holds it without",
                        new.why
                    )
                })?;
                new.admits(given)?;
                if let Some(written) = written
                    && written != given
                {
                    return Err(format!(
                        "{flow:?} left with the source {written}, but conntrack gave it {given}"
                    ));
                }
                self.conntrack.events.snat_allocated += 1;
                (Some(new.why), Some(given))
            }
            Source::Translated(why, given) => (Some(*why), Some(*given)),
            Source::Kept => (None, None),
        };
        let was = self.conntrack.tracked.get(&flow).copied();
        match was {
            Some(mut t) if !created => {
                t.entry.see(flags, true);
                self.conntrack.tracked.insert(flow, t);
            }
            _ => {
                self.conntrack.events.created += 1;
                self.conntrack.events.reselected_closing += u64::from(was.is_some());
                let entry = Entry::new(backend, snat, flags);
                let tracked = Tracked {
                    entry,
                    dsr: false,
                    why,
                };
                self.conntrack.create(flow, tracked);
            }
        }
        Ok(())
    }

    /// Conntrack's entry of `flow` is the model's.
    fn check_entry(&self, lb: &Lb, flow: &Flow) -> Result<(), String> {
        let tracked = lb
            .dp
            .tracked_flow(flow)
            .map_err(|e| format!("tracked_flow: {e}"))?;
        let expected = self.conntrack.tracked.get(flow).map(|t| t.entry);
        let actual = tracked.as_ref().map(Entry::of);
        if actual != expected {
            return Err(format!(
                "conntrack holds {flow:?} as {actual:?}, the model as {expected:?} \
                 (conntrack: {tracked:?})"
            ));
        }
        Ok(())
    }

    /// Why tracked `flow`'s source is translated, if it is.
    pub(crate) fn snat_of(&self, flow: &Flow) -> Option<Snat> {
        self.conntrack.tracked.get(flow)?.why
    }

    /// What a frame of `flow` (with `ttl`) found through a reply entry
    /// must do: translated back to its client, or, when it would expire
    /// here, left to the kernel, which answers with ICMP time exceeded, as a
    /// router does. `None` when no reply entry holds `flow`.
    fn reply(&self, flow: Flow, ttl: u8) -> Option<Expected> {
        let &original = self.conntrack.replies.get(&flow)?;
        let tracked = &self.conntrack.tracked[&original];
        Some(if ttl <= 1 {
            Expected::Untouched(Verdict::PassTtlExpired)
        } else {
            Expected::Reply {
                flow,
                original,
                frontend: original.dst,
                client: tracked.entry.snat.map(|_| original.src),
            }
        })
    }

    /// A later fragment of a TCP or UDP datagram (`lb/fragment.rs`): the
    /// ports its first fragment left (`fragments`), under the first of
    /// `datagrams` it may be of that has them (IPv6 after Destination
    /// Options: UDP's, then TCP's), name its flow, looked up
    /// as the flow's own entry first, then as a reply entry, and it goes the
    /// flow's way — translated, its IP header alone (`check`), or for direct
    /// server return wrapped unchanged — or, as a whole packet of the flow
    /// would, passes when its TTL would expire here. Without ports or flow,
    /// it is dropped when addressed to a VIP-only address, which would get
    /// it alone (`drop_fragment_untracked`), and passes elsewhere; a stale
    /// reply entry its ports name is found orphaned on the way.
    fn decide_later(
        &self,
        lb: &Lb,
        ip: &IpPacket,
        datagrams: &[Datagram],
        prediction: &mut Prediction,
    ) -> Result<Expected, String> {
        let untracked =
            self.unbalanced_to(ip.dst, Expected::Dropped(Verdict::DropFragmentUntracked));
        let Some((datagram, &(src_port, dst_port))) = datagrams
            .iter()
            .find_map(|datagram| Some((datagram, self.fragments.get(datagram)?)))
        else {
            return Ok(untracked);
        };
        let flow = Flow::new(
            SocketAddr::new(ip.src, src_port),
            SocketAddr::new(ip.dst, dst_port),
            datagram.proto,
        );
        let expiring = Expected::Untouched(Verdict::PassTtlExpired);
        if let Some(tracked) = self.conntrack.tracked.get(&flow) {
            let backend = tracked.entry.backend;
            match lb
                .dp
                .simulate(&flow)
                .map_err(|e| format!("simulate: {e}"))?
            {
                Simulation::Backend {
                    addr,
                    tracked: true,
                    ..
                } if addr == backend => {}
                other => {
                    return Err(format!(
                        "{flow:?}, a later fragment's flow, is tracked to {backend} in the \
                         model, but simulate says {other:?}"
                    ));
                }
            }
            return Ok(if ip.ttl <= 1 {
                expiring
            } else if tracked.dsr {
                Expected::Encapsulated {
                    flow,
                    backend,
                    source: self.fixture.encap_source(ip.is_v4(), backend.ip()),
                    error: false,
                }
            } else {
                Expected::Request {
                    flow,
                    backend,
                    source: match (tracked.why, tracked.entry.snat) {
                        (Some(why), Some(given)) => Source::Translated(why, given),
                        _ => Source::Kept,
                    },
                    created: false,
                }
            });
        }
        if let Some(reply) = self.reply(flow, ip.ttl) {
            return Ok(reply);
        }
        if self.conntrack.stale_holder(&flow).is_some() {
            prediction.orphan = Some(flow);
        }
        Ok(untracked)
    }

    /// An IP packet that is neither a TCP/UDP packet nor a fragment of one
    /// (other protocols and their fragments, IPv6 with an IPv4-mapped
    /// address): untouched unless addressed to a VIP-only address, where
    /// fragments are dropped (no ports to balance a later fragment by, no
    /// reassembly) and other protocols pass.
    fn not_balanced(&self, ip: &IpPacket) -> Expected {
        self.unbalanced_to(
            ip.dst,
            if ip.fragment {
                Expected::Dropped(Verdict::DropFragment)
            } else {
                Expected::Untouched(Verdict::PassOtherProtocol)
            },
        )
    }

    /// A frame to `dst` that no flow or service takes (`lb::unbalanced_to`):
    /// `at_vip` on a VIP-only address, untouched anywhere else.
    fn unbalanced_to(&self, dst: IpAddr, at_vip: Expected) -> Expected {
        match self.fixture.address_kind(dst) {
            None => Expected::Untouched(Verdict::PassNotFrontend),
            Some(AddressKind::Node) => Expected::Untouched(Verdict::PassNodeAddress),
            Some(AddressKind::Vip) => at_vip,
        }
    }

    /// An ICMP or ICMPv6 error quoting a TCP or UDP header (`lb/icmp.rs`):
    /// reversed, the quoted tuple is a tracked flow's own key when the error
    /// is addressed to a frontend address (it quotes a reply the LB sent to
    /// a client), else a reply entry's key (it quotes a request the LB sent
    /// to a backend), which names a tracked flow to that backend. `None`
    /// when it is neither: the error is then any other ICMP packet. An error
    /// is no packet of the flow: it creates and refreshes nothing.
    ///
    /// A direct-server-return flow has no reply key, so only errors to its
    /// frontend find it, and they go to its backend wrapped as they came, as
    /// the flow's packets do: the backend answered from the frontend's own
    /// address and port, and recognises the error only unchanged.
    ///
    /// An error to a frontend address that is no flow's key is tried as a
    /// reply key too: the source-NAT address may be a node address. An
    /// error about a source-NATed flow (`about_snat`) has both quoted ends
    /// translated. The reply entry's flow is the one it names, stale or
    /// not: the datapath checks only that the flow is live and to the
    /// quoted backend.
    fn decide_error(&self, error: &IcmpError, about_snat: &mut bool) -> Option<Expected> {
        let reversed = Flow::new(error.inner_dst, error.inner_src, error.proto);
        let to_frontend = self.fixture.address_kind(error.ip.dst).is_some();
        let toward =
            if let Some(backend) = self.conntrack.backend(&reversed).filter(|_| to_frontend) {
                if self.conntrack.is_dsr(&reversed) {
                    return Some(if error.ip.ttl <= 1 {
                        Expected::Untouched(Verdict::PassTtlExpired)
                    } else {
                        Expected::Encapsulated {
                            flow: reversed,
                            backend,
                            source: self.fixture.encap_source(error.ip.is_v4(), backend.ip()),
                            error: true,
                        }
                    });
                }
                ErrorToward::Backend(backend, self.conntrack.snat(&reversed))
            } else {
                let holder = self
                    .conntrack
                    .replies
                    .get(&reversed)
                    .copied()
                    .or_else(|| self.conntrack.stale_holder(&reversed))?;
                let tracked = self.conntrack.tracked.get(&holder)?;
                // The flow's current reply tuple only: a stale entry (left by a
                // re-created flow) names it, but is not its own any more.
                if Conntrack::reply_tuple(&holder, &tracked.entry) != reversed {
                    return None;
                }
                ErrorToward::Client(holder.dst, tracked.entry.snat.map(|_| holder.src))
            };
        *about_snat = matches!(
            toward,
            ErrorToward::Backend(_, Some(_)) | ErrorToward::Client(_, Some(_))
        );
        // As for the flow's own packets: one that would expire here goes to
        // the kernel, which answers it as a router does.
        Some(if error.ip.ttl <= 1 {
            Expected::Untouched(Verdict::PassTtlExpired)
        } else {
            Expected::IcmpError {
                error: *error,
                toward,
            }
        })
    }

    /// A whole TCP or UDP packet (DESIGN.md "Per packet, in this order"):
    /// the reply direction first, then the frontend lookup with the node
    /// address rule, then the TTL, then the backend.
    fn decide_flow(
        &self,
        lb: &Lb,
        frame: &[u8],
        prediction: &mut Prediction,
        flow: Flow,
    ) -> Result<Expected, String> {
        let headers = &prediction.headers;
        let ip = headers.ip.ok_or("a flow without an IP header")?;
        let ttl = ip.ttl;
        let kind = self.fixture.address_kind(flow.dst.ip());
        // A VIP-only address never receives a reply: a client is never a VIP.
        if kind != Some(AddressKind::Vip) {
            if let Some(reply) = self.reply(flow, ttl) {
                return Ok(reply);
            }
            // A stale reply entry is found, orphaned, and deleted; the frame
            // goes on as any other.
            if self.conntrack.stale_holder(&flow).is_some() {
                prediction.orphan = Some(flow);
            }
        }
        let Some(kind) = kind else {
            return Ok(Expected::Untouched(Verdict::PassNotFrontend));
        };
        let node = kind == AddressKind::Node;
        if node && !self.fixture.in_nodeport_range(flow.dst.port()) {
            return Ok(Expected::Untouched(Verdict::PassNodeAddress));
        }
        let Some(service) = self.fixture.service(flow.dst, flow.proto) else {
            return Ok(if node {
                Expected::Untouched(Verdict::PassNodeAddress)
            } else {
                Expected::Dropped(Verdict::DropUnknownPort)
            });
        };
        if ttl <= 1 {
            return Ok(Expected::Untouched(Verdict::PassTtlExpired));
        }
        let refusal = || refuse(frame, headers, &ip, &flow);
        self.request(lb, flow, service, prediction.tcp_flags, refusal)
    }

    /// A request to `service`: its tracked backend, or the one Maglev picks,
    /// as `simulate` names it — checked against what the model knows — or,
    /// when the service has no live backend, its `refusal`. Translated (its
    /// source too when source NAT applies), or for a direct-server-return
    /// service encapsulated.
    fn request(
        &self,
        lb: &Lb,
        flow: Flow,
        service: &Service,
        flags: u8,
        refusal: impl Fn() -> Expected,
    ) -> Result<Expected, String> {
        let simulation = lb
            .dp
            .simulate(&flow)
            .map_err(|e| format!("simulate: {e}"))?;
        let tracked = self.conntrack.tracked.get(&flow);
        let backend = tracked.map(|t| t.entry.backend);
        match simulation {
            Simulation::Backend {
                service_id,
                addr,
                tracked: simulated_tracked,
                ..
            } if service_id == service.id
                && service.backends.contains(&addr)
                && simulated_tracked == tracked.is_some()
                && backend.is_none_or(|backend| backend == addr) =>
            {
                Ok(if service.dsr {
                    Expected::Encapsulated {
                        flow,
                        backend: addr,
                        source: self.fixture.encap_source(flow.src.is_ipv4(), addr.ip()),
                        error: false,
                    }
                } else {
                    // A SYN on a closing entry re-creates it.
                    let created = tracked.is_none_or(|t| is_syn(flags) && t.entry.closing);
                    let source = match tracked {
                        Some(t) if !created => match (t.why, t.entry.snat) {
                            (Some(why), Some(given)) => Source::Translated(why, given),
                            _ => Source::Kept,
                        },
                        _ => self.new_source(&flow, addr, &refusal),
                    };
                    Expected::Request {
                        flow,
                        backend: addr,
                        source,
                        created,
                    }
                })
            }
            Simulation::NoBackend { service_id }
                if service_id == service.id && tracked.is_none() =>
            {
                Ok(refusal())
            }
            other => Err(format!(
                "{flow:?} is for service {} (live backends {:?}; \
                 the model tracks it to {backend:?}), but simulate says {other:?}",
                service.id, service.backends
            )),
        }
    }

    /// The source a NAT flow's new entry to `backend` is given: the hairpin
    /// source when the client is the backend (and one is configured), the
    /// client's own address when its reply tuple is another live flow's,
    /// each with a port the datapath picks; else the client's own.
    fn new_source(
        &self,
        flow: &Flow,
        backend: SocketAddr,
        refusal: &impl Fn() -> Expected,
    ) -> Source {
        let hairpin = self.fixture.hairpin_source(flow.src.is_ipv4());
        let natural = Flow::new(backend, flow.src, flow.proto);
        let (why, addr) = match hairpin {
            Some(addr) if flow.src.ip() == backend.ip() => (Snat::Hairpin, addr),
            _ if self
                .conntrack
                .replies
                .get(&natural)
                .is_some_and(|holder| holder != flow && self.conntrack.holds(holder)) =>
            {
                (Snat::Clash, flow.src.ip())
            }
            _ => return Source::Kept,
        };
        let ports = self.fixture.snat_ports();
        let taken = self.conntrack.taken_ports(flow, backend, addr, &ports);
        let refusal = exhaustible(&ports, &taken).then(|| Box::new(refusal()));
        Source::New(NewSource {
            why,
            addr,
            ports,
            taken,
            refusal,
        })
    }
}

/// A request the model learns from.
#[derive(Clone, Copy, Debug)]
struct Learnt {
    flow: Flow,
    backend: SocketAddr,
    created: bool,
    flags: u8,
}

/// A packet for a service without a live backend is refused as a host
/// without a listener refuses it (`xdp/answer.rs`): a TCP segment with a
/// reset, a UDP datagram with port unreachable, both from the frontend and
/// back where it came from. Dropped instead: a reset (never answered), and a
/// packet whose transport header does not follow its network header
/// directly (IPv4 options, IPv6 extension headers: 8 quoted bytes would not
/// hold its ports).
fn refuse(frame: &[u8], headers: &Headers, ip: &IpPacket, flow: &Flow) -> Expected {
    if !ip.transport_follows_directly() {
        return Expected::Dropped(Verdict::DropNoBackend);
    }
    match flow.proto {
        Protocol::Tcp if frame[ip.l4 + 13] & TCP_RST != 0 => {
            Expected::Dropped(Verdict::DropNoBackend)
        }
        Protocol::Tcp => Expected::Answered {
            verdict: Verdict::RefuseReset,
            answer: Frame(answer::reset(frame, headers, ip, flow)),
        },
        Protocol::Udp => Expected::Answered {
            verdict: Verdict::RefuseUnreachable,
            answer: Frame(answer::icmp(
                frame,
                headers,
                ip,
                flow,
                IcmpAnswer::PortUnreachable,
            )),
        },
    }
}
