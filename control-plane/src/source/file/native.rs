//! The native document: `node:` and `services:`, deserialised strictly and
//! validated service by service.
//!
//! Numbers, addresses and durations are read as plain text or wide integers
//! and checked here, so that a wrong value is reported in the format's own
//! words (`70000 is out of range 1-65535`) rather than as a serde type error,
//! and so that one bad service does not hide the problems of the others.
//! Within a service, [`super::recover`] goes on past a key or a kind that
//! serde refuses, so that those do not hide its other problems either.

use std::{
    collections::BTreeMap,
    fmt,
    marker::PhantomData,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Deserializer};
use serde_yaml_ng::{Mapping, Value};

use super::{
    error::Problem,
    place::Place,
    recover::{self, Recovered},
    suggest,
    value::wide_integer,
};
use crate::{
    model::{
        Affinity, Backend, BackendState, Frontend, FrontendKind, HealthCheck, Mode, Probe,
        Protocol, Service, ServiceName,
    },
    source::kube::{
        NodeInfo,
        validate::{
            MAX_AFFINITY_TIMEOUT_SECS, Origin, check_dns1123_subdomain, check_label_value,
            check_native_name, check_node_port, check_port, family_name, parse_ip, quoted,
        },
    },
};

/// The largest backend weight: Maglev fills a table of M slots in proportion
/// to the weights, and past this ratio the lightest backend's share rounds to
/// nothing at the table sizes xlb uses.
pub(crate) const MAX_WEIGHT: i64 = 10_000;
/// The ClientIP affinity timeout when none is given (Kubernetes' default).
const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10_800);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RISE: i64 = 2;
const DEFAULT_FALL: i64 = 3;
/// The most successes or failures a health check counts (`rise`, `fall`).
pub(super) const MAX_THRESHOLD: i64 = 100;

// `expecting`: what a value of the wrong type is compared with, in the
// format's words rather than the struct's name ("a list is not a frontend
// (...)", see recover::plain).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `name`, `addresses` and `zone`"
)]
struct RawNode {
    name: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a service (a mapping with `name`, `frontends` and the service's other keys)"
)]
struct RawService {
    name: String,
    protocol: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    frontends: Vec<RawFrontend>,
    #[serde(default)]
    backends: Vec<RawBackend>,
    session_affinity: Option<RawAffinity>,
    health_check: Option<RawHealthCheck>,
    // An `Option`, as every other key that may be left out: written empty
    // (`source_nat: ~`), it is unset too.
    source_nat: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a frontend (a mapping with `address` and `port`)"
)]
struct RawFrontend {
    address: FrontendAddress,
    port: i64,
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a backend (a mapping with `address`, and `weight` and `state` if wanted)"
)]
struct RawBackend {
    address: BackendAddress,
    weight: Option<i64>,
    state: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `type` (and `timeout`)"
)]
struct RawAffinity {
    #[serde(rename = "type")]
    kind: String,
    timeout: Option<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `type` and the check's settings"
)]
struct RawHealthCheck {
    #[serde(rename = "type")]
    kind: String,
    path: Option<String>,
    port: Option<i64>,
    interval: Option<DurationText>,
    timeout: Option<DurationText>,
    rise: Option<i64>,
    fall: Option<i64>,
}

/// Text whose type error, for a value that is not text, says what `E`
/// expects and how to write it (an unquoted `[v6]` is a YAML list).
#[derive(Debug)]
struct Text<E>(String, PhantomData<E>);

/// What a [`Text`] holds, in the words of a type error.
trait Expected {
    const TEXT: &'static str;
}

impl<'de, E: Expected> Deserialize<'de> for Text<E> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<E>(PhantomData<E>);
        impl<E: Expected> serde::de::Visitor<'_> for Visitor<E> {
            type Value = Text<E>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(E::TEXT)
            }
            fn visit_str<Er: serde::de::Error>(self, v: &str) -> Result<Self::Value, Er> {
                Ok(Text(v.to_owned(), PhantomData))
            }
        }
        deserializer.deserialize_str(Visitor(PhantomData))
    }
}

/// A frontend's address: an unquoted `[2001:2::100]` is a YAML list.
#[derive(Debug)]
struct Ip;
impl Expected for Ip {
    const TEXT: &'static str = "an IP address (IPv6 without brackets, as 2001:2::100)";
}
type FrontendAddress = Text<Ip>;

/// A backend's `ip:port`.
#[derive(Debug)]
struct IpAndPort;
impl Expected for IpAndPort {
    const TEXT: &'static str = "an address and port, ip:port (IPv6 quoted, as \"[2001:2::1]:80\")";
}
type BackendAddress = Text<IpAndPort>;

/// A duration with a unit (`2s`, `500ms`, `3h`): a bare number would leave
/// the unit to guess.
#[derive(Debug)]
struct WithUnit;
impl Expected for WithUnit {
    const TEXT: &'static str = "a duration with a unit, like 2s, 500ms or 3h";
}
type DurationText = Text<WithUnit>;

/// A valid native service and where it was written.
#[derive(Debug)]
pub(super) struct NativeService {
    /// Its index in `services:`.
    pub(super) index: usize,
    pub(super) name: ServiceName,
    pub(super) service: Service,
}

impl NativeService {
    /// Its place: `services[2]`.
    pub(super) fn place(&self) -> Place {
        Place::native().key("services").index(self.index)
    }
}

/// The place of the node's address `index`: `node.addresses[1]`.
pub(super) fn node_address(index: usize) -> Place {
    Place::native().key("node").key("addresses").index(index)
}

/// The frontends of a native service with problems elsewhere (a backend,
/// its health check): not served, but still claimed, so that another
/// service written on one of them is told so in the same run.
#[derive(Debug)]
pub(super) struct RejectedFrontends {
    /// The service's index in `services:`.
    pub(super) index: usize,
    pub(super) name: ServiceName,
    pub(super) frontends: Vec<Frontend>,
}

impl RejectedFrontends {
    /// Its service's place: `services[2]`.
    pub(super) fn place(&self) -> Place {
        Place::native().key("services").index(self.index)
    }
}

/// What the native document holds. Services with problems are left out (and
/// their problems reported), so the cross-service checks still see the rest;
/// their frontends, when those have none, are kept aside for the claims.
#[derive(Debug, Default)]
pub(super) struct NativeDocument {
    pub(super) node: Option<NodeInfo>,
    pub(super) services: Vec<NativeService>,
    pub(super) rejected_frontends: Vec<RejectedFrontends>,
}

/// The keys of the native document.
const NATIVE_KEYS: [&str; 2] = ["node", "services"];

/// Reads and validates the native document `doc` (at `place`, `documents[0]`),
/// adding every problem found to `problems`. Its places start at its root
/// (`services[2]`), but for the keys of the document itself.
pub(super) fn read(place: &Place, doc: &Mapping, problems: &mut Vec<Problem>) -> NativeDocument {
    let root = Place::native();
    let mut out = NativeDocument::default();
    for (key, value) in doc {
        match key.as_str() {
            Some("node") => out.node = read_node(value, &root.key("node"), problems),
            Some("services") => {
                (out.services, out.rejected_frontends) =
                    read_services(value, &root.key("services"), problems);
            }
            Some(other) => problems.push(Problem::new(
                root.key(other),
                match suggest::closest(
                    other,
                    NATIVE_KEYS.into_iter().filter(|k| !doc.contains_key(k)),
                ) {
                    Some(known) => format!("unknown key, did you mean `{known}`?"),
                    None => "unknown key: the native document has `node` and `services`".to_owned(),
                },
            )),
            None => problems.push(Problem::new(
                place.clone(),
                format!(
                    "{} is not a key name: the native document has `node` and `services`",
                    key_text(key)
                ),
            )),
        }
    }
    out
}

/// A mapping key as it was written, for a message: `~` for null, the number
/// or boolean, the string quoted, or what else it is.
pub(super) fn key_text(key: &Value) -> String {
    if let Some(digits) = wide_integer(key) {
        return format!("`{digits}`");
    }
    match key {
        Value::Null => "`~` (null)".to_owned(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => quoted(s),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", quoted(&tagged.tag.to_string())),
    }
}

/// `node:` at `place`.
fn read_node(value: &Value, place: &Place, all_problems: &mut Vec<Problem>) -> Option<NodeInfo> {
    // The node's problems, put in the order of the file at the end.
    let mut own = Vec::new();
    let Recovered { object, repaired } = recover::deserialize::<RawNode>(value, place, &mut own);
    let Some(raw) = object else {
        all_problems.extend(own);
        return None;
    };
    // Those of the fields, which may be about placeholders where the
    // deserialisation was repaired.
    let problems = &mut Vec::new();
    let name = raw.name.unwrap_or_default();
    if !name.is_empty()
        && let Err(e) = check_dns1123_subdomain(&name)
    {
        problems.push(Problem::new(place.key("name"), e));
    }
    let mut addresses: Vec<IpAddr> = Vec::new();
    for (i, text) in raw.addresses.iter().enumerate() {
        let at = place.key("addresses").index(i);
        match parse_ip(text, Origin::File) {
            Err(e) => problems.push(Problem::new(at, e)),
            Ok(ip) => match addresses.iter().position(|a| *a == ip) {
                Some(first) => problems.push(Problem::new(
                    at,
                    format!("{ip} is already {}", place.key("addresses").index(first)),
                )),
                None => addresses.push(ip),
            },
        }
    }
    if let Some(zone) = &raw.zone
        && let Err(e) = check_label_value(zone)
    {
        problems.push(Problem::new(place.key("zone"), e));
    }
    let valid = repaired.is_empty() && problems.is_empty();
    repaired.report(std::mem::take(problems), &mut own);
    recover::in_file_order(&mut own, value, place);
    all_problems.extend(own);
    valid.then_some(NodeInfo {
        name,
        addresses,
        zone: raw.zone,
    })
}

/// `services:` at `place`: the valid services, and the frontends of those
/// with problems elsewhere.
fn read_services(
    value: &Value,
    place: &Place,
    problems: &mut Vec<Problem>,
) -> (Vec<NativeService>, Vec<RejectedFrontends>) {
    let items: &[Value] = match value {
        Value::Null => &[],
        Value::Sequence(items) => items,
        _ => {
            problems.push(Problem::new(
                place.clone(),
                "must be a list of services (`- name: ...`)",
            ));
            return (Vec::new(), Vec::new());
        }
    };
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut services = Vec::new();
    let mut rejected = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let at = place.index(index);
        // The service's problems, put in the order of the file at the end.
        let mut own = Vec::new();
        let Recovered { object, repaired } =
            recover::deserialize::<RawService>(item, &at, &mut own);
        let Some(raw) = object else {
            problems.extend(own);
            continue;
        };
        // Those of the fields, which may be about placeholders where the
        // deserialisation was repaired.
        let mut found = Vec::new();
        if let Err(e) = check_native_name(&raw.name) {
            found.push(Problem::new(at.key("name"), e));
        } else if let Some(first) = names.get(&raw.name) {
            found.push(Problem::new(
                at.key("name"),
                format!(
                    "{} is already the name of {}",
                    quoted(&raw.name),
                    place.index(*first)
                ),
            ));
        } else {
            names.insert(raw.name.clone(), index);
        }
        let service = read_service(&raw, &at, &mut found);
        let valid = repaired.is_empty() && found.is_empty();
        repaired.report(found, &mut own);
        recover::in_file_order(&mut own, item, &at);
        problems.extend(own);
        let name = ServiceName(raw.name);
        match service {
            Ok(service) if valid => services.push(NativeService {
                index,
                name,
                service,
            }),
            Ok(Service { frontends, .. }) | Err(Some(frontends)) => {
                rejected.push(RejectedFrontends {
                    index,
                    name,
                    frontends,
                });
            }
            Err(None) => {}
        }
    }
    (services, rejected)
}

/// One service; when it has problems (all of them reported), its frontends
/// if neither they nor the protocol they are claimed with have any.
fn read_service(
    raw: &RawService,
    place: &Place,
    problems: &mut Vec<Problem>,
) -> Result<Service, Option<Vec<Frontend>>> {
    let before = problems.len();
    let protocol = match raw.protocol.as_deref() {
        None | Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some("SCTP") => {
            problems.push(Problem::new(
                place.key("protocol"),
                "SCTP is not supported: use TCP or UDP",
            ));
            Protocol::Tcp
        }
        Some(other) => {
            problems.push(Problem::new(
                place.key("protocol"),
                format!("{} is not a protocol: use TCP or UDP", quoted(other)),
            ));
            Protocol::Tcp
        }
    };
    let protocol_known = problems.len() == before;
    let mode = match raw.mode.as_deref() {
        None | Some("nat") => Mode::Nat,
        Some("dsr") => Mode::Dsr,
        Some(other) => {
            problems.push(Problem::new(
                place.key("mode"),
                format!("{} is not a mode: use nat or dsr", quoted(other)),
            ));
            Mode::Nat
        }
    };

    // `family`: the one every backend must have, as the datapath rewrites
    // addresses within one family (no NAT46 / NAT64).
    let (mut frontends, family) = read_frontends(&raw.frontends, place, protocol, problems);
    if raw.source_nat == Some(true) {
        if mode == Mode::Dsr {
            problems.push(Problem::new(
                place.key("source_nat"),
                "source NAT needs replies through this LB: not with mode dsr",
            ));
        }
        // Backends of the file are never pods of this node: every flow
        // gets the LB's source-NAT address (a one-arm load balancer).
        for frontend in frontends.iter_mut().flatten() {
            frontend.snat_remote = true;
        }
    }
    let backends = read_backends(&raw.backends, place, family, problems);
    let affinity = raw
        .session_affinity
        .as_ref()
        .and_then(|a| read_affinity(a, &place.key("session_affinity"), problems));
    let health_check = raw
        .health_check
        .as_ref()
        .and_then(|h| read_health_check(h, &place.key("health_check"), problems));
    if mode == Mode::Dsr
        && let Some(frontends) = &frontends
    {
        check_dsr_ports(frontends, &backends, place, problems);
    }

    let frontends = match frontends {
        Some(frontends) if problems.len() == before => frontends,
        frontends => return Err(frontends.filter(|_| protocol_known)),
    };
    Ok(Service {
        protocol,
        frontends,
        backends,
        mode,
        affinity,
        health_check,
        drop_without_backends: false,
        source_ranges: Vec::new(),
    })
}

/// Direct server return translates no port: the frontends share one, and
/// every backend serves it.
fn check_dsr_ports(
    frontends: &[Frontend],
    backends: &[Backend],
    place: &Place,
    problems: &mut Vec<Problem>,
) {
    let port = frontends[0].port;
    if frontends.iter().any(|f| f.port != port) {
        problems.push(Problem::new(
            place.key("frontends"),
            "a dsr service's frontends share one port: its backends serve it unchanged",
        ));
        return;
    }
    for (j, backend) in backends.iter().enumerate() {
        if backend.addr.port() != port {
            problems.push(Problem::new(
                place.key("backends").index(j).key("address"),
                format!(
                    "a dsr backend serves its frontends' port {port}, not {}: the packet reaches \
                     it unchanged",
                    backend.addr.port()
                ),
            ));
        }
    }
}

fn read_frontends(
    raw: &[RawFrontend],
    place: &Place,
    protocol: Protocol,
    problems: &mut Vec<Problem>,
) -> (Option<Vec<Frontend>>, Option<bool>) {
    if raw.is_empty() {
        problems.push(Problem::new(
            place.key("frontends"),
            "a service needs at least one frontend (address and port)",
        ));
        return (None, None);
    }
    let before = problems.len();
    let mut frontends: Vec<Frontend> = Vec::with_capacity(raw.len());
    // Where each address and port was first written, for messages.
    let mut seen: BTreeMap<(IpAddr, u16), usize> = BTreeMap::new();
    let mut first_family: Option<(usize, IpAddr)> = None;
    for (j, f) in raw.iter().enumerate() {
        let at = place.key("frontends").index(j);
        let kind = match f.kind.as_deref() {
            None | Some("vip") => Some(FrontendKind::Vip),
            Some("node") => Some(FrontendKind::Node),
            Some(other) => {
                problems.push(Problem::new(
                    at.key("kind"),
                    format!("{} is not a frontend kind: use vip or node", quoted(other)),
                ));
                None
            }
        };
        let port = match kind {
            Some(FrontendKind::Node) => check_node_port(f.port).map_err(|e| {
                format!("{e}: a node address only serves NodePorts (or use kind vip)")
            }),
            _ => check_port(f.port),
        };
        let port = port
            .map_err(|e| problems.push(Problem::new(at.key("port"), e)))
            .ok();
        let addr = match parse_ip(&f.address.0, Origin::File) {
            Err(e) => {
                problems.push(match f.address.0.parse::<SocketAddr>() {
                    // A backend's way of writing it.
                    Ok(with_port) => Problem::new(
                        at.key("address"),
                        format!(
                            "{e}: a frontend's port goes in `port`: `address: {}`, `port: {}`",
                            with_port.ip(),
                            with_port.port()
                        ),
                    )
                    .meant_for(at.key("port")),
                    Err(_) => Problem::new(at.key("address"), e),
                });
                None
            }
            Ok(ip) => match first_family {
                Some((first, ip0)) if ip0.is_ipv4() != ip.is_ipv4() => {
                    problems.push(Problem::new(
                        at.key("address"),
                        format!(
                            "{ip} is {} but {} is {}: a service balances one address family \
                             (define another service for {})",
                            family_name(ip),
                            place.key("frontends").index(first),
                            family_name(ip0),
                            family_name(ip)
                        ),
                    ));
                    None
                }
                Some(_) => Some(ip),
                None => {
                    first_family = Some((j, ip));
                    Some(ip)
                }
            },
        };
        // A repeated address and port is a problem of its own, whatever
        // `kind` says: reported in the same run.
        let (Some(addr), Some(port)) = (addr, port) else {
            continue;
        };
        match seen.get(&(addr, port)) {
            Some(first) => problems.push(Problem::new(
                at,
                format!(
                    "{}/{protocol} is already {}",
                    SocketAddr::new(addr, port),
                    place.key("frontends").index(*first)
                ),
            )),
            None => {
                seen.insert((addr, port), j);
            }
        }
        let Some(kind) = kind else {
            continue;
        };
        frontends.push(Frontend {
            addr,
            port,
            protocol,
            kind,
            snat_remote: false,
            source_ranges_only: false,
        });
    }
    let family = first_family.map(|(_, ip)| ip.is_ipv4());
    ((problems.len() == before).then_some(frontends), family)
}

fn read_backends(
    raw: &[RawBackend],
    place: &Place,
    family: Option<bool>,
    problems: &mut Vec<Problem>,
) -> Vec<Backend> {
    let mut backends: Vec<Backend> = Vec::with_capacity(raw.len());
    // Where each address was first written, for messages.
    let mut seen: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    for (j, b) in raw.iter().enumerate() {
        let at = place.key("backends").index(j);
        let addr = match parse_backend_address(&b.address.0) {
            Err(e) => {
                problems.push(Problem::new(at.key("address"), e));
                None
            }
            Ok(addr) => match family {
                Some(v4) if v4 != addr.is_ipv4() => {
                    problems.push(Problem::new(
                        at.key("address"),
                        format!(
                            "{addr} is {} but the service's frontends are {}: the datapath \
                             translates within one address family (no NAT46 or NAT64)",
                            family_name(addr.ip()),
                            if v4 { "IPv4" } else { "IPv6" }
                        ),
                    ));
                    None
                }
                _ => Some(addr),
            },
        };
        let weight = match b.weight {
            None => Some(1),
            Some(0) => {
                problems.push(Problem::new(
                    at.key("weight"),
                    format!(
                        "0 is not a weight (1-{MAX_WEIGHT}): to stop new flows to a backend, \
                         set state: draining"
                    ),
                ));
                None
            }
            Some(w) => match u32::try_from(w)
                .ok()
                .filter(|w| i64::from(*w) <= MAX_WEIGHT)
            {
                Some(w) => Some(w),
                None => {
                    problems.push(Problem::new(
                        at.key("weight"),
                        format!("{w} is out of range 1-{MAX_WEIGHT}"),
                    ));
                    None
                }
            },
        };
        let state = match b.state.as_deref() {
            None | Some("active") => Some(BackendState::Active),
            Some("draining") => Some(BackendState::Draining),
            Some("terminating") => {
                problems.push(Problem::new(
                    at.key("state"),
                    "terminating comes from Kubernetes endpoints only: use active or draining",
                ));
                None
            }
            Some(other) => {
                problems.push(Problem::new(
                    at.key("state"),
                    format!(
                        "{} is not a backend state: use active or draining",
                        quoted(other)
                    ),
                ));
                None
            }
        };
        // A repeated address is a problem of its own, whatever else is
        // wrong with either backend: reported in the same run.
        let Some(addr) = addr else {
            continue;
        };
        if let Some(first) = seen.get(&addr) {
            problems.push(Problem::new(
                at.key("address"),
                format!("{addr} is already {}", place.key("backends").index(*first)),
            ));
            continue;
        }
        seen.insert(addr, j);
        let (Some(weight), Some(state)) = (weight, state) else {
            continue;
        };
        backends.push(Backend {
            addr,
            weight,
            state,
            local: false,
        });
    }
    backends
}

/// `ip:port` or `[ipv6]:port`, with the address rules of frontends.
fn parse_backend_address(text: &str) -> Result<SocketAddr, String> {
    let shape = || format!("{} is not ip:port (IPv6 as [2001:2::1]:80)", quoted(text));
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(shape)?;
        (host, after.strip_prefix(':').ok_or_else(shape)?)
    } else {
        let (host, port) = text.rsplit_once(':').ok_or_else(shape)?;
        if host.contains(':') {
            return Err(format!(
                "{}: an IPv6 address needs brackets: {}",
                quoted(text),
                quoted(&format!("[{host}]:{port}"))
            ));
        }
        (host, port)
    };
    let port: i64 = port
        .parse()
        .map_err(|_| format!("{}: {} is not a port number", quoted(text), quoted(port)))?;
    let port = check_port(port).map_err(|e| format!("{}: port {e}", quoted(text)))?;
    Ok(SocketAddr::new(parse_ip(host, Origin::File)?, port))
}

/// A duration within `min..=max`, `default` when absent.
fn read_duration(
    raw: Option<&DurationText>,
    place: Place,
    default: Duration,
    (min, max): (Duration, Duration),
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    let Some(Text(text, _)) = raw else {
        return Some(default);
    };
    let value = match humantime::parse_duration(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(Problem::new(
                place,
                format!(
                    "{} is not a duration ({e}): write it like 2s, 500ms or 3h",
                    quoted(text)
                ),
            ));
            return None;
        }
    };
    if !(min..=max).contains(&value) {
        problems.push(Problem::new(
            place,
            format!(
                "{} is out of range {}-{}",
                quoted(text),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
        return None;
    }
    Some(value)
}

/// A duration for a message: as written, quoted (`` `1500ms` ``), or the
/// `default` that stands for it, named as one (`2s, the default`).
fn duration_text(raw: Option<&DurationText>, default: Duration) -> String {
    match raw {
        Some(Text(text, _)) => quoted(text),
        None => format!("{}, the default", humantime::format_duration(default)),
    }
}

fn read_affinity(
    raw: &RawAffinity,
    place: &Place,
    problems: &mut Vec<Problem>,
) -> Option<Affinity> {
    if raw.kind != "client_ip" {
        problems.push(Problem::new(
            place.key("type"),
            format!(
                "{} is not a session affinity: use client_ip (or leave session_affinity out)",
                quoted(&raw.kind)
            ),
        ));
    }
    let timeout = read_duration(
        raw.timeout.as_ref(),
        place.key("timeout"),
        DEFAULT_AFFINITY_TIMEOUT,
        (
            Duration::from_secs(1),
            Duration::from_secs(MAX_AFFINITY_TIMEOUT_SECS),
        ),
        problems,
    )?;
    if timeout.subsec_nanos() != 0 {
        // The datapath keeps affinity in whole seconds, like Kubernetes'
        // timeoutSeconds.
        problems.push(Problem::new(
            place.key("timeout"),
            format!(
                "{} is not a whole number of seconds",
                duration_text(raw.timeout.as_ref(), DEFAULT_AFFINITY_TIMEOUT)
            ),
        ));
        return None;
    }
    (raw.kind == "client_ip").then_some(Affinity { timeout })
}

fn read_threshold(
    raw: Option<i64>,
    place: Place,
    default: i64,
    problems: &mut Vec<Problem>,
) -> Option<u32> {
    let value = raw.unwrap_or(default);
    match u32::try_from(value)
        .ok()
        .filter(|v| (1..=MAX_THRESHOLD).contains(&i64::from(*v)))
    {
        Some(v) => Some(v),
        None => {
            problems.push(Problem::new(
                place,
                format!("{value} is out of range 1-{MAX_THRESHOLD}"),
            ));
            None
        }
    }
}

fn read_health_check(
    raw: &RawHealthCheck,
    place: &Place,
    problems: &mut Vec<Problem>,
) -> Option<HealthCheck> {
    let before = problems.len();
    let probe = match (raw.kind.as_str(), raw.path.as_deref()) {
        ("tcp", None) => Some(Probe::Tcp),
        ("tcp", Some(_)) => {
            problems.push(Problem::new(
                place.key("path"),
                "only an http check has a path: remove it or use type: http",
            ));
            None
        }
        ("http", None) => {
            problems.push(Problem::new(
                place.key("path"),
                "required for an http check: the path to GET, like /healthz",
            ));
            None
        }
        ("http", Some(path)) => {
            if !path.starts_with('/') || !path.chars().all(|c| c.is_ascii_graphic()) {
                problems.push(Problem::new(
                    place.key("path"),
                    format!(
                        "{} is not a request path: it starts with '/' and has no spaces or \
                         control characters",
                        quoted(path)
                    ),
                ));
                None
            } else {
                Some(Probe::Http {
                    path: path.to_owned(),
                })
            }
        }
        (other, _) => {
            problems.push(Problem::new(
                place.key("type"),
                format!(
                    "{} is not a health check type: use tcp or http",
                    quoted(other)
                ),
            ));
            None
        }
    };
    let port = match raw.port {
        None => None,
        Some(p) => match check_port(p) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(Problem::new(place.key("port"), e));
                None
            }
        },
    };
    let interval = read_duration(
        raw.interval.as_ref(),
        place.key("interval"),
        DEFAULT_INTERVAL,
        (MIN_INTERVAL, MAX_INTERVAL),
        problems,
    );
    let timeout = read_duration(
        raw.timeout.as_ref(),
        place.key("timeout"),
        DEFAULT_PROBE_TIMEOUT,
        (Duration::from_millis(1), MAX_INTERVAL),
        problems,
    );
    if let (Some(interval), Some(timeout)) = (interval, timeout)
        && timeout >= interval
    {
        // A probe still running when the next one is due would overlap it.
        // The problem is the timeout's, unless it was left to its default
        // (the defaults themselves fit).
        let interval = duration_text(raw.interval.as_ref(), DEFAULT_INTERVAL);
        let timeout = duration_text(raw.timeout.as_ref(), DEFAULT_PROBE_TIMEOUT);
        problems.push(match raw.timeout {
            Some(_) => Problem::new(
                place.key("timeout"),
                format!("{timeout} must be shorter than the interval ({interval})"),
            ),
            None => Problem::new(
                place.key("interval"),
                format!("{interval} must be longer than the timeout ({timeout})"),
            ),
        });
    }
    let rise = read_threshold(raw.rise, place.key("rise"), DEFAULT_RISE, problems);
    let fall = read_threshold(raw.fall, place.key("fall"), DEFAULT_FALL, problems);
    if problems.len() != before {
        return None;
    }
    Some(HealthCheck {
        probe: probe?,
        port,
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
    })
}
