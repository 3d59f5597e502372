//! Fuzzing `xdp_lb` through `BPF_PROG_TEST_RUN`: random bytes, well-formed
//! frames toward every kind of destination — ICMP errors about the run's own
//! flows included — and mutations of them, each checked against a userspace
//! model (`fuzz/model.rs`) of what the datapath must do:
//!
//! - never XDP_ABORTED; every frame counted in exactly one parser slot and
//!   one verdict slot — the ones the model names;
//! - a frame that is neither for a frontend, nor a reply of a tracked flow,
//!   nor an ICMP error about one leaves untouched, or is dropped for a
//!   documented reason;
//! - a translated frame is the input with exactly its destination (request)
//!   or source (reply) replaced — by the backend `simulate` names, a live
//!   backend of the service, or by the frontend the flow was sent to — and,
//!   under source NAT, its other end too: a request's source by the one the
//!   flow was given (for a new flow, a port of the range no other live flow
//!   to the backend has, at the client's address on a clash of reply tuples
//!   or at the hairpin source when the client is the backend, and the one
//!   conntrack then names), a reply's destination by the flow's client —
//!   routed (MACs, TTL) when the datapath sends it on itself, with its IPv4
//!   header and TCP/UDP checksums, recomputed from scratch, holding as they
//!   held before;
//! - an ICMP error about a tracked flow is the input with exactly the quoted
//!   header and the outer address translated (`fuzz/icmp.rs`), routed likewise,
//!   every checksum over the rewritten bytes moved with them; one about a
//!   source-NATed flow goes the way of any other ICMP packet;
//! - a request to a direct-server-return service leaves as exactly the outer
//!   header the model builds with etherparse — every field, the IPv4 header
//!   checksum holding — followed by the input from its network header on,
//!   byte for byte (`fuzz/encap.rs`), routed likewise (the outer TTL), or is
//!   dropped as `drop_encap_unsupported` when its backend's family has no
//!   encapsulation source (the fixture takes each family's away for a phase
//!   of the run) or it is IPv6 toward an IPv4 backend;
//! - a request too big for the link toward its backend (once wrapped, for
//!   direct server return), and a packet for a service without a live
//!   backend, is answered byte for byte as the model builds the answer with
//!   etherparse (`fuzz/answer.rs`), or dropped where no answer can be written;
//! - conntrack holds exactly the flows the model saw translated or
//!   encapsulated — each to the model's backend, with its source NAT and
//!   closing state, checked after every frame of the flow — and one reply
//!   entry per translated one (none for direct server return), besides those
//!   of ports re-created source-NAT flows gave up until a reply orphans them
//!   or a flow claims them; it counts the entries created and re-created,
//!   the source-NAT ports given and refused, and the orphaned reply entries
//!   exactly as often as the model saw them.
//! - a first fragment of a TCP or UDP datagram is balanced as a whole packet
//!   would be, and its ports are remembered by the datagram's addresses,
//!   protocol and identification; a later fragment whose first was sent
//!   (for an IPv6 one whose Fragment header names Destination Options, the
//!   first of its UDP datagram's, else of its TCP one's) goes that flow's way — its IP header alone translated (the IPv4 header
//!   checksum holding as it held), or wrapped unchanged — and one without,
//!   or of a flow no longer tracked, is dropped to a VIP-only address
//!   (`drop_fragment_untracked`) and passes elsewhere; the fragment map
//!   holds no more datagrams than the model remembers (a count, not the
//!   keys).
//!
//! `XLB_FUZZ_PACKETS` sets the number of frames (default 100 000) and
//! `XLB_FUZZ_SEED` the seed (default `DEFAULT_SEED`); a failure names both,
//! with the frame's index and bytes, so the run can be replayed.
#![expect(
    clippy::print_stderr,
    reason = "the seed and the mix of frames are this test's report"
)]

mod support;

#[path = "fuzz/answer.rs"]
mod answer;
#[path = "fuzz/check.rs"]
mod check;
#[path = "fuzz/checksum.rs"]
mod checksum;
#[path = "fuzz/encap.rs"]
mod encap;
#[path = "fuzz/fixture.rs"]
mod fixture;
#[path = "fuzz/generate.rs"]
mod generate;
#[path = "fuzz/icmp.rs"]
mod icmp;
#[path = "fuzz/model.rs"]
mod model;
#[path = "fuzz/mutate.rs"]
mod mutate;
#[path = "fuzz/parse.rs"]
mod parse;

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    time::Instant,
};

use proptest::test_runner::{RngAlgorithm, TestRng};
use xdp_lb::{Counters, CtEvent, ParseCounter, ProgramName, TestRunOutput, Verdict};

use crate::{
    check::Outcome,
    fixture::{EncapSources, Fixture},
    generate::{Case, Kind, Side},
    model::{Entry, Expected, Model, Prediction, Snat, Source},
    parse::IpPacket,
    support::{in_private_netns, lb::Lb},
};

/// The seed of a run without `XLB_FUZZ_SEED` ("xlb fuzz").
const DEFAULT_SEED: u64 = 0x786c_6220_6675_7a7a;
const DEFAULT_PACKETS: u64 = 100_000;
/// Conntrack is compared with the model and emptied when the model tracks
/// this many flows: far below the fixture's capacity (4096 entries: 2048
/// buckets of eight slots), so that no entry is ever evicted behind the
/// model's back. Keys go to buckets by a hash with a random seed: with 256
/// flows, one of the two tables has a bucket of nine about once in ten
/// billion fills.
const MAX_TRACKED_FLOWS: usize = 256;
/// The fragment map is emptied, and the model's memory of it, when the model
/// remembers this many datagrams: an eighth of the fixture's `FRAGMENTS`
/// (an LRU map, which may evict before it is full: each CPU takes free
/// entries from the common list in batches of 128), so that no entry is
/// ever evicted behind the model's back. Mutated addresses and
/// identifications make some 2 400 datagrams in 100 000 frames.
const MAX_DATAGRAMS: usize = 1024;

/// A run's parameters, from the environment.
#[derive(Clone, Copy, Debug)]
struct Run {
    seed: u64,
    packets: u64,
}

impl Run {
    fn from_env() -> Self {
        Self {
            seed: env_number("XLB_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
            packets: env_number("XLB_FUZZ_PACKETS").unwrap_or(DEFAULT_PACKETS),
        }
    }

    /// ChaCha (proptest's default generator) seeded from the run's seed.
    fn rng(&self) -> TestRng {
        let seed: Vec<u8> = (0..4).flat_map(|_| self.seed.to_le_bytes()).collect();
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed)
    }

    /// How to run exactly this again.
    fn replay(&self, packets: u64) -> String {
        format!(
            "XLB_FUZZ_SEED={:#x} XLB_FUZZ_PACKETS={packets} cargo test -p xdp-lb --test fuzz",
            self.seed
        )
    }
}

/// A decimal or `0x` hexadecimal number from the environment (unset or
/// empty: none).
fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim().replace('_', "");
    if text.is_empty() {
        return None;
    }
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text}: not a number ({e})")))
}

/// Lowercase hex, two digits a byte.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[test]
fn random_and_mutated_frames_keep_the_datapath_invariants() {
    let run = Run::from_env();
    eprintln!(
        "fuzz: seed {:#x}, {} frames (XLB_FUZZ_SEED, XLB_FUZZ_PACKETS)",
        run.seed, run.packets
    );
    let started = Instant::now();
    let mix = in_private_netns(|| Fuzzer::new(run).run());
    eprintln!(
        "fuzz: {} frames in {:.1} s\n{mix}",
        run.packets,
        started.elapsed().as_secs_f64()
    );
}

/// One run: the datapath, the model of it, and the frames sent so far.
struct Fuzzer {
    run: Run,
    lb: Lb,
    model: Model,
    rng: TestRng,
    counters: CounterSnapshot,
    mix: Mix,
}

impl Fuzzer {
    fn new(run: Run) -> Self {
        let mut lb = Lb::new();
        let model = Model::new(Fixture::configure(&mut lb));
        Self {
            run,
            counters: CounterSnapshot::read(&lb),
            lb,
            model,
            rng: run.rng(),
            mix: Mix::default(),
        }
    }

    /// Sends `run.packets` frames, checks each, and returns the mix sent.
    fn run(mut self) -> Mix {
        for index in 0..self.run.packets {
            self.send_one(index);
            if self.model.conntrack.len() >= MAX_TRACKED_FLOWS {
                empty_conntrack(&mut self.lb, &mut self.model)
                    .unwrap_or_else(|why| self.fail_after(index, &why));
                self.mix.emptied += 1;
            }
            if self.model.fragments.len() >= MAX_DATAGRAMS {
                forget_fragments(&mut self.lb, &mut self.model)
                    .unwrap_or_else(|why| self.fail_after(index, &why));
                self.mix.fragments_forgotten += 1;
            }
        }
        let last = self.run.packets.saturating_sub(1);
        check_conntrack(&self.lb, &self.model).unwrap_or_else(|why| self.fail_after(last, &why));
        forget_fragments(&mut self.lb, &mut self.model)
            .unwrap_or_else(|why| self.fail_after(last, &why));
        let verdicts = self.lb.dp.verdict_stats().expect("verdict stats");
        if verdicts.total_packets() != self.run.packets {
            self.fail_after(
                last,
                &format!("{} frames counted", verdicts.total_packets()),
            );
        }
        self.mix
    }

    /// Generates frame `index`, sends it, and checks what became of it.
    fn send_one(&mut self, index: u64) {
        let sources = EncapSources::at(index);
        if sources != self.model.fixture.encap_sources() {
            self.model.fixture.set_encap_sources(&mut self.lb, sources);
        }
        let case = generate::case(&mut self.rng, &self.model);
        let fail = |out: Option<&TestRunOutput>, why: String| -> ! {
            panic!("{}", failure(&self.run, index, &case, sources, out, &why))
        };
        let prediction = self
            .model
            .predict(&self.lb, &case.frame)
            .unwrap_or_else(|why| fail(None, why));
        let ingress = match case.side {
            Side::Clients => self.lb.up0,
            Side::Backends => self.lb.dn0,
        };
        // Not `Lb::send`: a refused frame must fail with this report too.
        let out = self
            .lb
            .dp
            .test_run_on(ProgramName::XdpLb, &case.frame, ingress)
            .unwrap_or_else(|e| fail(None, format!("test run: {e}")));
        let (counter, verdict) = self
            .counters
            .advance(&self.lb, case.frame.len())
            .unwrap_or_else(|why| fail(Some(&out), why));
        let outcome = Outcome {
            action: out.action,
            packet: &out.packet,
            counter,
            verdict,
        };
        check::outcome(
            &self.model.fixture,
            &prediction,
            &case.frame,
            ingress,
            &outcome,
        )
        .unwrap_or_else(|why| {
            fail(
                Some(&out),
                format!("{why}\nexpected: {:?}", prediction.expected),
            )
        });
        // The source a new source NAT gave the request, as the frame shows
        // it when it left translated (never a later fragment's: it joins a
        // flow that has its source).
        let written = match (&prediction.expected, prediction.headers.ip) {
            (Expected::Request { .. }, Some(ip))
                if !ip.later_fragment
                    && matches!(
                        verdict,
                        Verdict::ForwardToBackend | Verdict::PassToBackendViaStack
                    ) =>
            {
                check::written_source(&out.packet, &ip)
            }
            _ => None,
        };
        self.mix.add(&case, verdict, &prediction, &self.model);
        self.model
            .learn(&self.lb, &prediction, verdict, written)
            .unwrap_or_else(|why| {
                fail(
                    Some(&out),
                    format!("{why}\nexpected: {:?}", prediction.expected),
                )
            });
    }

    /// Fails on state that frames up to `index` left behind.
    fn fail_after(&self, index: u64, why: &str) -> ! {
        panic!(
            "fuzz failure after frame {index} (seed {:#x}): {why}\nreplay: {}",
            self.run.seed,
            self.run.replay(index + 1)
        )
    }
}

/// The failure report of one frame: everything needed to replay it.
fn failure(
    run: &Run,
    index: u64,
    case: &Case,
    sources: EncapSources,
    out: Option<&TestRunOutput>,
    why: &str,
) -> String {
    let mut report = format!(
        "fuzz failure at frame {index} (seed {:#x}): {why}\n\
         replay: {}\n\
         kind: {:?}, arriving on {:?}, mutations: {:?}, encapsulation sources: {sources:?}\n\
         frame ({} bytes): {}",
        run.seed,
        run.replay(index + 1),
        case.kind,
        case.side,
        case.mutations,
        case.frame.len(),
        hex(&case.frame)
    );
    if let Some(out) = out {
        let _ = write!(
            report,
            "\noutput (action {}, {} bytes): {}",
            out.action,
            out.packet.len(),
            hex(&out.packet)
        );
    }
    report
}

/// Compares the datapath's conntrack with the model's flows: no entry
/// evicted, none created by a frame the model did not see translated or
/// encapsulated, every one on the model's backend, with the model's source
/// NAT and closing state; as many reply entries as the translated flows
/// have (direct server return adds none) and the stale ones; and the
/// conntrack events the model follows counted as often as it saw them.
fn check_conntrack(lb: &Lb, model: &Model) -> Result<(), String> {
    check_reply_entries(lb, model)?;
    check_events(lb, model)?;
    let tracked: HashMap<_, _> = lb
        .dp
        .conntrack()
        .map_err(|e| format!("conntrack: {e}"))?
        .into_iter()
        .map(|t| (t.flow, Entry::of(&t)))
        .collect();
    let expected = model.conntrack.entries();
    if tracked == expected {
        return Ok(());
    }
    let unexpected: Vec<_> = tracked
        .iter()
        .filter(|(flow, backend)| expected.get(flow) != Some(backend))
        .take(5)
        .collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|(flow, backend)| tracked.get(flow) != Some(backend))
        .take(5)
        .collect();
    Err(format!(
        "conntrack holds {} flows, the model {}; not in the model: {unexpected:?}; \
         not in conntrack: {missing:?}",
        tracked.len(),
        expected.len()
    ))
}

/// The conntrack events the model follows (`model::Events`), counted by the
/// datapath exactly as often as the model saw them happen.
fn check_events(lb: &Lb, model: &Model) -> Result<(), String> {
    let stats = lb.dp.ct_stats().map_err(|e| format!("ct stats: {e}"))?;
    let events = model.conntrack.events;
    let pairs = [
        (CtEvent::Created, events.created),
        (CtEvent::ReselectedClosing, events.reselected_closing),
        (CtEvent::SnatAllocated, events.snat_allocated),
        (CtEvent::SnatExhausted, events.snat_exhausted),
        (CtEvent::ReplyOrphan, events.reply_orphan),
    ];
    for (event, expected) in pairs {
        let counted = stats.get(event).packets;
        if counted != expected {
            return Err(format!(
                "conntrack counted {counted} {} events, the model saw {expected}",
                event.name()
            ));
        }
    }
    Ok(())
}

/// The reply entries the datapath holds: exactly one per NAT flow of the
/// model, and the stale ones.
fn check_reply_entries(lb: &Lb, model: &Model) -> Result<(), String> {
    let usage = lb.dp.map_usage().map_err(|e| format!("map usage: {e}"))?;
    let replies = usage
        .iter()
        .find(|u| u.name == "CONNTRACK_REPLY")
        .ok_or("no CONNTRACK_REPLY map in the usage")?
        .entries;
    let expected = model.conntrack.reply_entries() as u64;
    if replies != expected {
        return Err(format!(
            "CONNTRACK_REPLY holds {replies} entries, the model {expected} \
             ({} of its {} flows are DSR, with none; {} stale)",
            model.conntrack.dsr_flows(),
            model.conntrack.len(),
            model.conntrack.stale().len()
        ));
    }
    Ok(())
}

/// Checks conntrack, then deletes every flow from it (`delete_flow`, in the
/// order they were created) with its reply entry, and from the model, and
/// checks it is empty but for the stale reply entries, which name no flow's
/// replies and stay.
fn empty_conntrack(lb: &mut Lb, model: &mut Model) -> Result<(), String> {
    check_conntrack(lb, model)?;
    for index in 0..model.conntrack.len() {
        let (flow, _) = model.conntrack.nth(index).expect("a tracked flow");
        match lb.dp.delete_flow(&flow) {
            Ok(true) => {}
            Ok(false) => return Err(format!("delete_flow: {flow:?} was not tracked")),
            Err(e) => return Err(format!("delete_flow {flow:?}: {e}")),
        }
    }
    model.conntrack.clear();
    check_conntrack(lb, model)
}

/// Empties the datapath's fragment map and the model's memory of it, after
/// checking the map held no datagram the model does not remember: the model
/// remembers every first fragment of a TCP or UDP datagram, the datapath
/// those of frames its address filter lets through to the core (which are
/// all that matter: a later fragment has its first's addresses, and the
/// filter lets it through or not alike).
fn forget_fragments(lb: &mut Lb, model: &mut Model) -> Result<(), String> {
    let held = lb
        .dp
        .forget_fragments()
        .map_err(|e| format!("forget_fragments: {e}"))?;
    let remembered = model.fragments.len();
    if held > remembered {
        return Err(format!(
            "FRAGMENTS held {held} datagrams, more than the model's {remembered}"
        ));
    }
    model.fragments.clear();
    Ok(())
}

/// The counters from the last frame, to tell which slots the next one bumps.
struct CounterSnapshot {
    parse: Counters<ParseCounter>,
    verdicts: Counters<Verdict>,
}

impl CounterSnapshot {
    fn read(lb: &Lb) -> Self {
        Self {
            parse: lb.dp.parse_stats().expect("parse stats"),
            verdicts: lb.dp.verdict_stats().expect("verdict stats"),
        }
    }

    /// The parser slot and the verdict slot the last frame (of `len` bytes)
    /// was counted in: exactly one of each, by one packet and `len` bytes.
    fn advance(&mut self, lb: &Lb, len: usize) -> Result<(ParseCounter, Verdict), String> {
        let now = Self::read(lb);
        let counter = counted_once(&self.parse, &now.parse, len, ParseCounter::name)?;
        let verdict = counted_once(&self.verdicts, &now.verdicts, len, Verdict::name)?;
        *self = now;
        Ok((counter, verdict))
    }
}

/// The one slot that grew from `before` to `after`, by one packet of `len` bytes.
fn counted_once<C: Copy + Into<u32>>(
    before: &Counters<C>,
    after: &Counters<C>,
    len: usize,
    name: fn(C) -> &'static str,
) -> Result<C, String> {
    let grown: Vec<(C, u64, u64)> = after
        .iter()
        .map(|(c, n)| {
            let was = before.get(c);
            (c, n.packets - was.packets, n.bytes - was.bytes)
        })
        .filter(|&(_, packets, bytes)| packets != 0 || bytes != 0)
        .collect();
    match grown[..] {
        [(c, 1, bytes)] if bytes == len as u64 => Ok(c),
        _ => Err(format!(
            "counted as {:?} (slot, packets, bytes), not once in one slot",
            grown
                .iter()
                .map(|&(c, p, b)| (name(c), p, b))
                .collect::<Vec<_>>()
        )),
    }
}

/// How many frames of each kind were sent, their verdicts, and how many of
/// them reached the corners the checks are about.
#[derive(Debug, Default)]
struct Mix {
    kinds: BTreeMap<Kind, u64>,
    verdicts: BTreeMap<&'static str, u64>,
    /// Translated frames whose checksums all held before (and so must after).
    translated_whole: u64,
    /// Translated frames with a checksum that did not hold (nor may after).
    translated_broken: u64,
    /// Source NAT, by why (clash, hairpin): new sources given and checked,
    /// requests of flows with one, and replies to them translated on both
    /// ends.
    snat_new: [u64; 2],
    snat_requests: [u64; 2],
    snat_replies: [u64; 2],
    /// ICMP errors about source-NATed flows, translated at both ends.
    snat_errors: u64,
    /// Flows refused for want of a free source-NAT port.
    snat_exhausted: u64,
    /// Replies to stale reply entries (ports source-NATed flows gave up).
    orphans: u64,
    /// Translated ICMP errors whose ICMP checksum held before, and not.
    errors_whole: u64,
    errors_broken: u64,
    /// Wrapped frames (sent on or passed), by inner and outer family:
    /// IPv4 in IPv4, IPv4 in IPv6, IPv6 in IPv6.
    wrapped: [u64; 3],
    /// Of those, ICMP errors about direct-server-return flows.
    wrapped_errors: u64,
    /// Times conntrack was checked and emptied flow by flow.
    emptied: u64,
    /// First fragments of TCP and UDP datagrams (their ports remembered),
    /// and later fragments that joined a flow by them: translated (request
    /// or reply) and wrapped, or passed as expiring.
    first_fragments: u64,
    later_translated: u64,
    later_wrapped: u64,
    later_expiring: u64,
    /// Datagrams the model remembers ports of at the end of the run.
    datagrams: usize,
    /// Times the fragment map was checked and emptied.
    fragments_forgotten: u64,
}

impl Mix {
    fn add(&mut self, case: &Case, verdict: Verdict, prediction: &Prediction, model: &Model) {
        *self.kinds.entry(case.kind).or_default() += 1;
        *self.verdicts.entry(verdict.name()).or_default() += 1;
        let why = |snat: Snat| match snat {
            Snat::Clash => 0,
            Snat::Hairpin => 1,
        };
        self.snat_errors += u64::from(prediction.about_snat);
        self.orphans += u64::from(prediction.orphan.is_some());
        self.first_fragments += u64::from(prediction.remembers.is_some());
        self.datagrams = model.fragments.len();
        if let Some(ip) = prediction.headers.ip
            && ip.later_fragment
        {
            match (&prediction.expected, verdict) {
                (Expected::Request { .. } | Expected::Reply { .. }, _) => {
                    self.later_translated += 1;
                }
                (Expected::Encapsulated { .. }, _) => self.later_wrapped += 1,
                (_, Verdict::PassTtlExpired) => self.later_expiring += 1,
                _ => {}
            }
        }
        match (&prediction.expected, prediction.headers.ip) {
            (Expected::Request { source, .. }, Some(ip)) => {
                match source {
                    Source::New(_)
                        if matches!(
                            verdict,
                            Verdict::RefuseReset
                                | Verdict::RefuseUnreachable
                                | Verdict::DropNoBackend
                        ) =>
                    {
                        self.snat_exhausted += 1;
                    }
                    Source::New(new) => self.snat_new[why(new.why)] += 1,
                    Source::Translated(snat, _) => self.snat_requests[why(*snat)] += 1,
                    Source::Kept => {}
                }
                self.add_translated(&case.frame, &ip);
            }
            (Expected::Reply { original, .. }, Some(ip)) => {
                if let Some(snat) = model.snat_of(original) {
                    self.snat_replies[why(snat)] += 1;
                }
                self.add_translated(&case.frame, &ip);
            }
            (Expected::IcmpError { error, .. }, _) => {
                if checksum::icmp_holds(&case.frame, &error.ip) {
                    self.errors_whole += 1;
                } else {
                    self.errors_broken += 1;
                }
            }
            (
                Expected::Encapsulated {
                    flow,
                    backend,
                    error,
                    ..
                },
                _,
            ) if matches!(
                verdict,
                Verdict::ForwardEncapsulated
                    | Verdict::PassEncapsulatedViaStack
                    | Verdict::ForwardIcmpErrorToBackend
            ) =>
            {
                let pair = match (flow.src.is_ipv4(), backend.is_ipv4()) {
                    (true, true) => 0,
                    (true, false) => 1,
                    _ => 2,
                };
                self.wrapped[pair] += 1;
                self.wrapped_errors += u64::from(*error);
            }
            _ => {}
        }
    }

    fn add_translated(&mut self, frame: &[u8], ip: &IpPacket) {
        if ip.later_fragment {
            // No transport checksum: counted with the fragments.
            return;
        }
        if (!ip.is_v4() || checksum::ip4_header_holds(frame, ip))
            && checksum::transport_holds(frame, ip) == Some(true)
        {
            self.translated_whole += 1;
        } else {
            self.translated_broken += 1;
        }
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "frames by kind:")?;
        for (kind, n) in &self.kinds {
            writeln!(f, "  {n:>8}  {kind:?}")?;
        }
        writeln!(f, "frames by verdict:")?;
        for (verdict, n) in &self.verdicts {
            writeln!(f, "  {n:>8}  {verdict}")?;
        }
        writeln!(f, "translated frames:")?;
        writeln!(f, "  {:>8}  checksums holding", self.translated_whole)?;
        writeln!(f, "  {:>8}  a checksum not holding", self.translated_broken)?;
        writeln!(f, "source NAT (clash, hairpin):")?;
        let [clash, hairpin] = self.snat_new;
        writeln!(f, "  {clash:>8} {hairpin:>8}  new sources given")?;
        let [clash, hairpin] = self.snat_requests;
        writeln!(f, "  {clash:>8} {hairpin:>8}  requests of flows with one")?;
        let [clash, hairpin] = self.snat_replies;
        writeln!(f, "  {clash:>8} {hairpin:>8}  replies translated back")?;
        writeln!(
            f,
            "  {:>8}  ICMP errors about them, translated",
            self.snat_errors
        )?;
        writeln!(
            f,
            "  {:>8}  replies to ports they gave up (orphaned)",
            self.orphans
        )?;
        writeln!(f, "  {:>8}  refused, no port free", self.snat_exhausted)?;
        writeln!(f, "translated ICMP errors:")?;
        writeln!(f, "  {:>8}  ICMP checksum holding", self.errors_whole)?;
        writeln!(f, "  {:>8}  ICMP checksum not holding", self.errors_broken)?;
        writeln!(f, "wrapped frames (direct server return):")?;
        let [four_in_four, four_in_six, six_in_six] = self.wrapped;
        writeln!(f, "  {four_in_four:>8}  IPv4 in IPv4")?;
        writeln!(f, "  {four_in_six:>8}  IPv4 in IPv6")?;
        writeln!(f, "  {six_in_six:>8}  IPv6 in IPv6")?;
        writeln!(
            f,
            "  {:>8}  of them ICMP errors about their flows",
            self.wrapped_errors
        )?;
        writeln!(f, "fragments of TCP and UDP datagrams:")?;
        writeln!(
            f,
            "  {:>8}  first fragments, their ports remembered",
            self.first_fragments
        )?;
        writeln!(
            f,
            "  {:>8}  later ones of a tracked flow, translated",
            self.later_translated
        )?;
        writeln!(f, "  {:>8}  later ones wrapped", self.later_wrapped)?;
        writeln!(
            f,
            "  {:>8}  later ones of a tracked flow, passed as expiring",
            self.later_expiring
        )?;
        writeln!(
            f,
            "  {:>8}  datagrams remembered at the end; the map emptied {} times",
            self.datagrams, self.fragments_forgotten
        )?;
        write!(
            f,
            "conntrack checked and emptied {} times, flow by flow",
            self.emptied
        )
    }
}
