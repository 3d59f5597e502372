//! The configuration file: one YAML file holding a native document (see
//! `docs/config.md`) and/or plain Kubernetes `Service` and `EndpointSlice`
//! documents, which go through the same [`translate`] as the Kubernetes
//! mode.
//!
//! Validation is as strict as the Kubernetes API server's, and reports every
//! problem it finds with its place, not just the first, in the order of the
//! file (then those between services); a file with any problem yields no
//! model at all, so a bad reload never applies half of itself.

mod error;
mod native;
mod place;
mod recover;
mod suggest;
mod syntax;
mod value;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    io::Read as _,
    net::{IpAddr, SocketAddr},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::Path,
};

use k8s_openapi::api::{core::v1::Service as KubeService, discovery::v1::EndpointSlice};
use serde::{Serialize, de::DeserializeOwned};
use serde_yaml_ng::Value;

pub use self::{
    error::{ConfigError, Problem},
    place::Place,
};
use self::{native::NativeDocument, place::Step};
use crate::{
    model::{Frontend, FrontendKind, Model, Protocol, Service, ServiceName},
    source::kube::{
        LABEL_SERVICE_NAME, NodeInfo, TranslateOptions, selected, translate,
        validate::{self, Origin, ServiceType, quoted},
    },
};

/// A valid configuration and what its translation had to say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The services to balance.
    pub model: Model,
    /// Things left out or unused that are not errors (an SCTP port, an
    /// EndpointSlice without its Service, NodePorts without `node:`), one
    /// line each, naming the object.
    pub warnings: Vec<String>,
    /// The `healthCheckNodePort`s of the file's Kubernetes Services, as the
    /// Kubernetes mode serves them, and the node addresses (`node:`) they
    /// are served on.
    pub health_check_node_ports: Vec<crate::source::kube::HealthCheckNodePort>,
    pub node_addresses: Vec<std::net::IpAddr>,
}

/// Reads and validates the configuration file at `path`. Warnings are
/// logged; [`load_with_warnings`] returns them instead.
pub fn load(path: &Path) -> Result<Model, ConfigError> {
    load_with_warnings(path).map(log_warnings)
}

/// Validates a configuration given as text (see [`load`]).
pub fn parse(text: &str) -> Result<Model, ConfigError> {
    parse_with_warnings(text).map(log_warnings)
}

/// The largest configuration file read, in bytes: far above any real one
/// (10 000 services of 10 backends take 4.4 MiB), and a bound on what a
/// wrong path (`/dev/zero`) or a runaway writer costs the agent.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads and validates the configuration file at `path`, returning the
/// warnings with the model. Problems are prefixed with the file name when
/// displayed.
pub fn load_with_warnings(path: &Path) -> Result<Loaded, ConfigError> {
    let text = read_file(path, MAX_FILE_BYTES)?;
    read(&text).map_err(|problems| ConfigError::Invalid {
        file: Some(path.to_owned()),
        problems,
    })
}

/// The text of the regular file at `path` (or at the end of its symlinks, as
/// a Kubernetes ConfigMap mount is), of at most `limit` bytes. The file is
/// opened without blocking, as opening a FIFO waits for a writer (and the
/// agent re-reads the file on every reload), and checked once open, so that
/// nothing can be swapped in between.
fn read_file(path: &Path, limit: u64) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(ConfigError::NotRegular {
            path: path.to_owned(),
            kind: file_kind(metadata.file_type()),
        });
    }
    let too_large = || ConfigError::TooLarge {
        path: path.to_owned(),
        limit,
    };
    if metadata.len() > limit {
        return Err(too_large());
    }
    // One byte over the limit tells a file that grew while it was read (or
    // that says less than it holds, as procfs files do) from one at the
    // limit.
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| not_utf8(path, e.as_bytes(), e.utf8_error()))
}

/// Where `bytes`, the text of the file at `path`, stop being UTF-8
/// (`error`), in the parser's terms: a line and a column in characters, and
/// the offset in bytes, for an editor or `xxd` to go to.
fn not_utf8(path: &Path, bytes: &[u8], error: std::str::Utf8Error) -> ConfigError {
    let offset = error.valid_up_to();
    let (before, after) = bytes.split_at(offset);
    // Valid, by the error's own account.
    let before = String::from_utf8_lossy(before);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    // `None`: a character cut short by the end of the file, whose bytes are
    // what is left (at most 3).
    let invalid = error.error_len().unwrap_or(after.len());
    ConfigError::NotUtf8 {
        path: path.to_owned(),
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
        offset,
        bytes: after[..invalid].to_vec(),
    }
}

/// What a file that is not a regular file is, for [`ConfigError::NotRegular`].
fn file_kind(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Validates a configuration given as text, returning the warnings with the
/// model.
pub fn parse_with_warnings(text: &str) -> Result<Loaded, ConfigError> {
    read(text).map_err(|problems| ConfigError::Invalid {
        file: None,
        problems,
    })
}

fn log_warnings(loaded: Loaded) -> Model {
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    loaded.model
}

/// A Kubernetes object from the file, with the document it came from.
#[derive(Debug)]
struct KubeDocument<T> {
    /// `documents[3] (Service default/web)`: where its fields' places start.
    place: Place,
    object: T,
}

#[derive(Debug, Default)]
struct Documents {
    /// The native document and its index.
    native: Option<(usize, NativeDocument)>,
    /// Valid Services and EndpointSlices, each name once.
    services: Vec<KubeDocument<KubeService>>,
    slices: Vec<KubeDocument<EndpointSlice>>,
    /// `Kind namespace/name` → the place that defined it.
    names: BTreeMap<String, Place>,
}

fn read(text: &str) -> Result<Loaded, Vec<Problem>> {
    if let Some((line, column)) = syntax::too_deep(text) {
        return Err(vec![Problem::new(
            Place::default(),
            format!(
                "lists or mappings nested more than {} deep at line {line} column {column}: \
                 not read (no value of the file nests more than a few levels)",
                syntax::MAX_FLOW_DEPTH
            ),
        )]);
    }
    let mut problems = Vec::new();
    let mut documents = Documents::default();
    let mut said_something = false;
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let place = Place::document(index);
        match value::read(document) {
            Ok(value) => {
                said_something |= value != Value::Null;
                read_document(index, &place, value, &mut documents, &mut problems);
            }
            Err(e) => {
                let message = value::located(&e);
                // The parser cannot resynchronise after a syntax error (it
                // would report the same one for every later document).
                let message = match syntax::hint(text, &e) {
                    Some(hint) => format!("{message}; {hint}"),
                    None => message,
                };
                problems.push(Problem::new(place, message));
                break;
            }
        }
    }
    if !said_something && problems.is_empty() {
        // What an editor that truncates before it writes leaves for a
        // moment: applied, it would remove every service and withdraw every
        // announced VIP. Stopping them all takes saying so.
        return Err(vec![Problem::new(
            Place::default(),
            "the file holds nothing (empty, or only comments): to remove every service, write \
             `services: []`",
        )]);
    }
    let (mut loaded, more) = assemble(documents);
    problems.extend(more);
    if !problems.is_empty() {
        return Err(problems);
    }
    // Each is one line of the log or of `check-config`, whatever the file
    // held (problems see to it themselves, in Problem::new).
    for warning in &mut loaded.warnings {
        *warning = error::one_line(std::mem::take(warning));
    }
    Ok(loaded)
}

fn read_document(
    index: usize,
    place: &Place,
    value: Value,
    documents: &mut Documents,
    problems: &mut Vec<Problem>,
) {
    match value {
        // An empty document, like the one after a trailing `---`.
        Value::Null => {}
        Value::Mapping(map) if map.contains_key("apiVersion") || map.contains_key("kind") => {
            read_kube(place, Value::Mapping(map), false, documents, problems);
        }
        Value::Mapping(map) => {
            if let Some((first, _)) = &documents.native {
                problems.push(Problem::new(
                    place.clone(),
                    format!(
                        "a second native document (the first is {}): put every service in one",
                        Place::document(*first)
                    ),
                ));
            } else {
                documents.native = Some((index, native::read(place, &map, problems)));
            }
        }
        _ => problems.push(Problem::new(
            place.clone(),
            "not a mapping: a document is the native format (node:, services:) or a Kubernetes \
             object (apiVersion:, kind:)",
        )),
    }
}

/// `Kind namespace/name` of an object not yet deserialised, for places.
fn object_label(kind: &str, value: &Value) -> String {
    let meta = value.get("metadata");
    let field = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    match field("name") {
        Some(name) => format!("{kind} {}/{name}", field("namespace").unwrap_or("default")),
        None => kind.to_owned(),
    }
}

fn read_kube(
    place: &Place,
    value: Value,
    in_list: bool,
    documents: &mut Documents,
    problems: &mut Vec<Problem>,
) {
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let kind = value.get("kind").and_then(Value::as_str);
    match (api_version, kind) {
        (Some("v1"), Some("Service")) => {
            let validate = |s: &KubeService| validate::service(s, Origin::File);
            if let Some(document) = read_object(place, &value, validate, documents, problems) {
                documents.services.push(document);
            }
        }
        (Some("discovery.k8s.io/v1"), Some("EndpointSlice")) => {
            let validate = |s: &EndpointSlice| validate::endpoint_slice(s, Origin::File);
            if let Some(document) = read_object(place, &value, validate, documents, problems) {
                documents.slices.push(document);
            }
        }
        (Some("v1"), Some("List")) if !in_list => match value.get("items") {
            None | Some(Value::Null) => {}
            Some(Value::Sequence(items)) => {
                for (i, item) in items.iter().enumerate() {
                    read_kube(&place.item(i), item.clone(), true, documents, problems);
                }
            }
            Some(_) => problems.push(Problem::new(
                place.key("items"),
                "must be a list of objects",
            )),
        },
        // Whatever its apiVersion (the arm below would blame that): only a
        // document itself may be a List.
        (_, Some("List")) if in_list => problems.push(Problem::new(
            place.clone(),
            "a List cannot hold a List: put its items in the outer one",
        )),
        (None, _) => problems.push(left_out(
            place,
            &value,
            "apiVersion",
            "required: v1 for a Service or List, discovery.k8s.io/v1 for an EndpointSlice",
        )),
        (_, None) => problems.push(left_out(
            place,
            &value,
            "kind",
            "required: Service, EndpointSlice or List",
        )),
        (Some(version), Some(kind @ ("Service" | "List"))) => problems.push(Problem::new(
            place.key("apiVersion"),
            format!(
                "{} is not the apiVersion of a {kind}: use v1",
                quoted(version)
            ),
        )),
        (Some(version), Some("EndpointSlice")) => problems.push(Problem::new(
            place.key("apiVersion"),
            format!(
                "{} is not supported for an EndpointSlice: use discovery.k8s.io/v1",
                quoted(version)
            ),
        )),
        (Some(_), Some("Endpoints")) => problems.push(Problem::new(
            place.clone(),
            "kind Endpoints is not supported: write EndpointSlices (discovery.k8s.io/v1), which \
             is what xlb reads",
        )),
        (Some(version), Some(kind)) => problems.push(Problem::new(
            place.clone(),
            format!(
                "kind {} ({}) is not supported{}: a document is the native format, a v1 \
                 Service, a discovery.k8s.io/v1 EndpointSlice{}",
                quoted(kind),
                quoted(version),
                if in_list { " in a List" } else { "" },
                if in_list { "" } else { " or a v1 List of them" }
            ),
        )),
    }
}

/// The problem of the required key `field` of the object `value` (at
/// `place`), left out: `why` at its place, or, when a key written is close
/// to it (`apiVerison`), at that key, which was probably meant for it.
fn left_out(place: &Place, value: &Value, field: &str, why: &str) -> Problem {
    let misspelt = value
        .as_mapping()
        .into_iter()
        .flat_map(|map| map.keys())
        .filter_map(Value::as_str)
        .find(|key| suggest::closest(key, [field]).is_some());
    match misspelt {
        Some(key) => Problem::new(
            place.key(key),
            format!("unknown field, did you mean `{field}`? (`{field}` is {why})"),
        ),
        None => Problem::new(place.key(field), why),
    }
}

/// Deserialises a Kubernetes object strictly, like `kubectl
/// --validate=strict`, and checks it as the API server would (`validate`);
/// returns it when it has no problem, and reports every problem otherwise:
/// those of its fields' kinds, its unknown fields and those `validate` finds,
/// one hiding none of the others, in the order of the file.
///
/// A field the API does not know is an error: the Kubernetes types
/// themselves ignore unknown fields, so a misspelt `externalTrafficPolicy`
/// would silently mean `Cluster`.
fn checked<T: DeserializeOwned + Serialize + k8s_openapi::Resource>(
    value: &Value,
    place: &Place,
    validate: fn(&T) -> Vec<validate::FieldError>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    // The object's own problems, put in the order of the file at the end.
    let mut own = Vec::new();
    let recover::Recovered {
        object,
        mut repaired,
    } = recover::deserialize::<T>(value, place, &mut own);
    let Some(object) = object else {
        // As found, which ends with why the rest is not (too many
        // problems).
        problems.extend(own);
        return None;
    };
    for (kind, pattern) in REQUIRED_NUMBERS {
        if *kind != T::KIND {
            continue;
        }
        for (path, written) in left_empty(value, pattern) {
            let at = place.join(&path);
            // A list or mapping on the way that was of the wrong kind: its
            // problem is reported, and the number was not written.
            if repaired.touches(&at) {
                continue;
            }
            let field = match path.last() {
                Some(Step::Key(field)) => field.as_str(),
                _ => "",
            };
            let problem = Problem::new(at.clone(), recover::not_a_number(written, field));
            match written {
                None => repaired.add_left_out(at, own.len()),
                Some(_) => repaired.add(at),
            }
            own.push(problem);
        }
    }
    // Those found on the object, which may be about placeholders where the
    // deserialisation was repaired.
    let mut found = Vec::new();
    // What the types kept, compared with what was written: a written key
    // that did not survive the round trip is one they do not know.
    let kept = match serde_yaml_ng::to_value(&object) {
        Ok(kept) => kept,
        Err(e) => {
            problems.extend(own);
            problems.push(Problem::new(
                place.clone(),
                format!("cannot be checked: {e}"),
            ));
            return None;
        }
    };
    let mut unknown = Vec::new();
    unknown_fields(value, &kept, &mut Vec::new(), &mut unknown);
    for path in &unknown {
        found.push(unknown_kube_field(place, path, &repaired));
    }
    for error in validate(&object) {
        found.push(Problem::new(place.field(&error.place), error.message));
    }
    let valid = repaired.is_empty() && found.is_empty();
    repaired.report(found, &mut own);
    recover::in_file_order(&mut own, value, place);
    problems.extend(own);
    valid.then_some(object)
}

/// The problem of the key at `path` of the object at `place`, which the
/// Kubernetes API does not know. The API's field names are not at hand, but
/// those of the required keys left out of its mapping are: one close to it
/// (`prot` for `port`) was probably meant, and is asked for, which takes its
/// problem (`required`) into this one (see [`recover::Repaired::report`]).
fn unknown_kube_field(place: &Place, path: &[Step], repaired: &recover::Repaired) -> Problem {
    let at = place.join(path);
    if let Some((Step::Key(key), parent)) = path.split_last() {
        let mapping = place.join(parent);
        if let Some(known) = suggest::closest(key, repaired.left_out_of(&mapping)) {
            let meant = mapping.key(known);
            return Problem::new(at, format!("unknown field, did you mean `{known}`?"))
                .meant_for(meant);
        }
    }
    Problem::new(at, "unknown field (not in the Kubernetes 1.33 API)")
}

/// The numbers the Kubernetes API requires that k8s-openapi holds as a plain
/// `i32` rather than an `Option`, by kind, as paths (`[]`: every item of a
/// list). Left out or written empty (`port:`, `port: ~`), such a number
/// deserialises as 0, which the checks would call out of range; [`checked`]
/// reports what was written instead, in the native format's words:
/// `required`, or `an empty value (null) is not a port number (1-65535)`.
///
/// What Kubernetes makes of an empty value, field by field, which the file
/// follows:
/// - a Service's `spec.ports[].port` is required: the API server decodes
///   null as unset (0) and refuses it, and kubectl's schema validation calls
///   the field missing.
/// - `status.loadBalancer.ingress[].ports[].port` is required by the schema
///   too, but xlb reads nothing of a load balancer's ports: left unchecked,
///   as the rest of them.
/// - The Service's other numbers are optional (`Option`s), and null is
///   unset, as for the API server, which fills them in: `targetPort` (the
///   `port`, as translate takes it), `nodePort` and `healthCheckNodePort`
///   (allocated; the file has no allocator, so the checks say where a
///   `nodePort` is needed), `sessionAffinityConfig.clientIP.timeoutSeconds`
///   (10800).
/// - An EndpointSlice's numbers are all optional: a port without `port`
///   means every port to the API (and matches no port of its Service, with
///   a warning).
const REQUIRED_NUMBERS: &[(&str, &str)] = &[("Service", "spec.ports[].port")];

/// The places in `written` that `pattern` (see [`REQUIRED_NUMBERS`]) names
/// and that were left out (`None`) or written null, as paths
/// (`spec.ports[1].port`). Where something on the way is missing or of
/// another kind, there is nothing to name: that is the problem of the
/// place that holds it.
fn left_empty<'v>(written: &'v Value, pattern: &str) -> Vec<(Vec<Step>, Option<&'v Value>)> {
    let mut places = vec![(Vec::new(), written)];
    let fields: Vec<&str> = pattern.split('.').collect();
    let mut out = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let (key, every) = match field.strip_suffix("[]") {
            Some(key) => (key, true),
            None => (*field, false),
        };
        let last = i + 1 == fields.len();
        let mut next = Vec::new();
        for (mut path, value) in places {
            path.push(Step::Key(key.to_owned()));
            let Value::Mapping(map) = value else {
                continue;
            };
            let found = map.get(key);
            if last {
                match found {
                    None => out.push((path, None)),
                    Some(value @ Value::Null) => out.push((path, Some(value))),
                    Some(_) => {}
                }
                continue;
            }
            match (found, every) {
                (Some(Value::Sequence(items)), true) => {
                    next.extend(items.iter().enumerate().map(|(j, item)| {
                        let mut path = path.clone();
                        path.push(Step::Index(j));
                        (path, item)
                    }));
                }
                (Some(value), false) => next.push((path, value)),
                _ => {}
            }
        }
        places = next;
    }
    out
}

/// The paths of the keys of `written` that `kept` lacks, from `path`. Null
/// values are skipped: they mean "unset", which the types do not write
/// back.
fn unknown_fields(written: &Value, kept: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match (written, kept) {
        (Value::Mapping(written), Value::Mapping(kept)) => {
            for (key, value) in written {
                if value.is_null() {
                    continue;
                }
                path.push(match key {
                    Value::String(name) => Step::Key(name.clone()),
                    key => Step::OddKey(key.clone()),
                });
                match kept.get(key) {
                    None => out.push(path.clone()),
                    Some(kept) => unknown_fields(value, kept, path, out),
                }
                path.pop();
            }
        }
        (Value::Sequence(written), Value::Sequence(kept)) => {
            for (i, (value, kept)) in written.iter().zip(kept).enumerate() {
                path.push(Step::Index(i));
                unknown_fields(value, kept, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Translates the (valid) Kubernetes objects and checks everything together:
/// frontends are unique across all services, an address is either a vip or
/// a node address, and no backend or endpoint is a vip or frontend of the
/// file; warns of what is left unused.
fn assemble(documents: Documents) -> (Loaded, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let native = documents.native.map(|(_, n)| n).unwrap_or_default();
    let node = native.node.clone().unwrap_or_default();

    // In `namespace/name` order, as translate takes them: warnings and
    // health check ports come out in the order the Kubernetes mode gives.
    let mut services = documents.services;
    services.sort_by_key(|d| validate::object_name(&d.object.metadata));
    let slices = documents.slices;
    let options = TranslateOptions::default();
    check_slices(&services, &slices, &options, &mut warnings);
    let taken_cluster_ips = check_cluster_ips(&services, &native.services, &node, &mut problems);
    check_health_check_node_ports(&services, &mut problems);
    check_served(&services, native.node.is_some(), &options, &mut warnings);

    let mut model = Model::default();
    let mut frontends = Frontends::default();
    for (i, addr) in node.addresses.iter().enumerate() {
        frontends
            .kinds
            .insert(*addr, (FrontendKind::Node, native::node_address(i)));
    }
    // In the order of the file, with the frontends of the services that
    // have problems elsewhere: a service on one of them is told so in the
    // same run, not once the other is fixed.
    let mut native_frontends: Vec<(usize, Place, &ServiceName, &[Frontend])> = native
        .services
        .iter()
        .map(|s| (s.index, s.place(), &s.name, s.service.frontends.as_slice()))
        .chain(
            native
                .rejected_frontends
                .iter()
                .map(|r| (r.index, r.place(), &r.name, r.frontends.as_slice())),
        )
        .collect();
    native_frontends.sort_by_key(|(index, ..)| *index);
    for (_, place, name, of_service) in native_frontends {
        let place = place.key("frontends");
        for (j, frontend) in of_service.iter().enumerate() {
            frontends.claim(
                frontend,
                name,
                place.index(j),
                Claimant::Native,
                &mut problems,
            );
        }
    }
    let translated = translate_each(&services, &slices, &node, &options, &mut warnings);
    for (name, kube) in translated.services {
        let service = claim_kube(
            &name,
            kube,
            &taken_cluster_ips,
            &mut frontends,
            &mut problems,
            &mut warnings,
        );
        if !service.frontends.is_empty() {
            model.services.insert(name, service);
        }
    }
    check_backends(&native.services, &frontends, &mut problems);
    check_endpoints(&slices, &frontends, &mut problems);
    warn_of_native_services(&native.services, &mut warnings);
    for service in native.services {
        model.services.insert(service.name, service.service);
    }
    if model.services.is_empty() {
        // Valid (an empty file stops every service), but also what a file
        // cut short while being written looks like: the agent logs it.
        warnings.push("no services: applying this file removes every service".to_owned());
    }
    (
        Loaded {
            model,
            warnings,
            health_check_node_ports: translated.health_check_node_ports,
            node_addresses: node.addresses,
        },
        problems,
    )
}

/// Warns of native services that are valid but likely not what was meant:
/// one whose backends take no new flow (all draining: every new flow is
/// refused), and a UDP service health-checked on its backends' own ports,
/// which the probes (a TCP connect, an HTTP GET) reach over TCP, where a
/// UDP server does not answer: every backend would go down.
fn warn_of_native_services(services: &[native::NativeService], warnings: &mut Vec<String>) {
    for named in services {
        let service = &named.service;
        let place = named.place();
        if !service.backends.is_empty()
            && !service.backends.iter().any(|b| b.state.takes_new_flows())
        {
            warnings.push(format!(
                "{place} ({}): every backend is draining: new flows are refused until one is \
                 active",
                named.name
            ));
        }
        if service.protocol == Protocol::Udp
            && let Some(check) = &service.health_check
            && check.port.is_none()
        {
            warnings.push(format!(
                "{place} ({}): a UDP service whose health check probes each backend's own port \
                 over TCP: a backend that answers only UDP there goes down; set \
                 health_check.port to a TCP port the backends answer on",
                named.name
            ));
        }
    }
}

/// Warns of the Services the file has that xlb will not serve (another
/// proxy's), or not all of (NodePorts without the node's addresses).
fn check_served(
    services: &[KubeDocument<KubeService>],
    node: bool,
    options: &TranslateOptions,
    warnings: &mut Vec<String>,
) {
    let mut node_ports = false;
    for service in services {
        if !selected(&service.object, options) {
            warnings.push(format!(
                "{}: labelled for another proxy (service.kubernetes.io/service-proxy-name or \
                 service.kubernetes.io/headless), so not served",
                service.place
            ));
        }
        let spec = service.object.spec.as_ref();
        node_ports |= spec.is_some_and(|s| {
            ServiceType::of(s).is_ok_and(ServiceType::has_node_ports)
                && s.ports.iter().flatten().any(|p| p.node_port.is_some())
        });
    }
    if node_ports && !node {
        warnings.push(
            "NodePort frontends are not created: the native document has no `node:` with this \
             node's addresses"
                .to_owned(),
        );
    }
}

/// Claims the frontends of a service translated from a Kubernetes Service,
/// returning it without those another Kubernetes Service holds on an
/// external IP of both (as translate resolves it in the Kubernetes mode: the
/// name that sorts first keeps it, with a warning). Its frontends on a
/// clusterIP that `taken_cluster_ips` says is another Service's are left
/// out too: that problem is already reported, once for the address rather
/// than for each of its ports.
fn claim_kube(
    name: &ServiceName,
    kube: FromKube<'_>,
    taken_cluster_ips: &HashSet<(&Place, IpAddr)>,
    frontends: &mut Frontends,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Service {
    let mut service = kube.service;
    service.frontends.retain(|frontend| {
        if taken_cluster_ips.contains(&(kube.place, frontend.addr)) {
            return false;
        }
        let place = kube.place.detail(format!("frontend {frontend} of {name}"));
        let claimant = Claimant::Kube {
            external: kube.external_ips.contains(&frontend.addr),
        };
        match frontends.claim(frontend, name, place, claimant, problems) {
            Claim::Taken => true,
            Claim::Shared(owner) => {
                warnings.push(format!(
                    "{}: {name}: frontend {frontend} is already served by {owner}; skipped",
                    kube.place
                ));
                false
            }
        }
    });
    service
}

/// `namespace/name` of the Service whose endpoints an EndpointSlice holds:
/// its [`LABEL_SERVICE_NAME`] label, in its namespace. `None` for a slice
/// that no Service reads (FQDN or unlabelled), as in translate.
fn service_of(slice: &EndpointSlice) -> Option<String> {
    if slice.address_type == "FQDN" {
        return None;
    }
    let service = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!("{namespace}/{service}"))
}

/// Warns of the EndpointSlices whose endpoints no Service of the file uses:
/// without a Service, or matching none of its ports.
fn check_slices(
    services: &[KubeDocument<KubeService>],
    slices: &[KubeDocument<EndpointSlice>],
    options: &TranslateOptions,
    warnings: &mut Vec<String>,
) {
    let by_name: BTreeMap<String, &KubeService> = services
        .iter()
        .map(|d| (validate::object_name(&d.object.metadata), &d.object))
        .collect();
    for slice in slices {
        if slice.object.address_type == "FQDN" {
            continue;
        }
        let Some(key) = service_of(&slice.object) else {
            warnings.push(format!(
                "{}: no {LABEL_SERVICE_NAME} label, so no Service uses its endpoints",
                slice.place
            ));
            continue;
        };
        let Some(service) = by_name.get(&key) else {
            warnings.push(format!(
                "{}: no Service {} in this file, so its endpoints are unused",
                slice.place,
                // The label's value is not validated.
                quoted(&key)
            ));
            continue;
        };
        if let Some(why) = unmatched(&slice.object, service, options) {
            warnings.push(format!(
                "{}: matches no port of Service {key} ({}), so its endpoints are unused: {why}",
                slice.place,
                service_ports(service)
                    .iter()
                    .map(|(name, protocol)| port_id(name, protocol))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
}

/// Why `slice` gives `service` no backend, when it gives none: translate
/// matches a slice port by name and protocol, needs its number, and reads
/// a slice of the family of one of the Service's clusterIPs (as kube-proxy
/// does). `None` too for a Service whose endpoints are not read at all
/// (headless, ExternalName, another proxy's).
fn unmatched(
    slice: &EndpointSlice,
    service: &KubeService,
    options: &TranslateOptions,
) -> Option<String> {
    let spec = service.spec.as_ref()?;
    if ServiceType::of(spec).ok()? == ServiceType::ExternalName
        || validate::is_headless(spec)
        || !selected(service, options)
    {
        return None;
    }
    let v4 = slice.address_type == "IPv4";
    let family = if v4 { "IPv4" } else { "IPv6" };
    let mut cluster_ips = validate::cluster_ips(spec)
        .into_iter()
        .filter_map(|(_, ip)| ip.parse::<IpAddr>().ok());
    if !cluster_ips.any(|ip| ip.is_ipv4() == v4) {
        return Some(format!(
            "its addressType is {family} and the Service has no {family} clusterIP"
        ));
    }
    let ports = slice.ports.as_deref().unwrap_or_default();
    if ports.is_empty() {
        return Some("it has no ports".to_owned());
    }
    let wanted = service_ports(service);
    let mut why = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let name = port.name.as_deref().unwrap_or("");
        let protocol = validate::port_protocol(port.protocol.as_deref()).unwrap_or("TCP");
        let id = port_id(name, protocol);
        if !wanted.contains(&(name, protocol)) {
            why.push(format!("ports[{i}] is {id}"));
        } else if port.port.is_none() {
            why.push(format!("ports[{i}] ({id}) has no port number"));
        } else {
            return None;
        }
    }
    Some(why.join("; "))
}

/// The (name, protocol) of each port of `service`, as slices name them.
fn service_ports(service: &KubeService) -> Vec<(&str, &str)> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_deref());
    ports
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let protocol = validate::port_protocol(p.protocol.as_deref()).unwrap_or("TCP");
            (p.name.as_deref().unwrap_or(""), protocol)
        })
        .collect()
}

/// `` `http`/TCP ``, or `unnamed/TCP`.
fn port_id(name: &str, protocol: &str) -> String {
    if name.is_empty() {
        format!("unnamed/{protocol}")
    } else {
        format!("{}/{protocol}", quoted(name))
    }
}

/// An address is either a vip or a node address, in the Kubernetes documents
/// as in the native one: a clusterIP on a node address (which translate
/// makes a node frontend, or skips outside the NodePort range) is a problem.
///
/// And a clusterIP is one Service's, as the API server's allocator makes it
/// ("provided IP is already allocated"): two Services of the file on one
/// clusterIP are a problem, even on different ports, where their frontends
/// would not clash. (A live cluster cannot have them, so the Kubernetes mode
/// does not check.) Services are taken in name order, as in
/// [`check_health_check_node_ports`]: the problem is the later one's.
///
/// Nor is a clusterIP a native service's vip, on any port: the address
/// would be held by services of two origins, the API server's to allocate
/// and the file's, whose frontends, address kind and announcement the
/// datapath would mix. The problem is the native frontend's, naming the
/// Service. (translate, which sees no native service, is not concerned.)
/// A native frontend of kind node there is [`Frontends::claim`]'s problem:
/// an address is either a vip or a node address.
///
/// Several native services may share a vip on different ports, as the API
/// server lets several Services share an external IP or a LoadBalancer
/// ingress IP: a native vip may be one of those too, on another port (on the
/// same one, the frontend clashes in [`Frontends::claim`]).
///
/// Returns each Service's place and the clusterIP whose frontends it is
/// left without, their problem being reported once for the address.
fn check_cluster_ips<'a>(
    services: &'a [KubeDocument<KubeService>],
    native: &[native::NativeService],
    node: &NodeInfo,
    problems: &mut Vec<Problem>,
) -> HashSet<(&'a Place, IpAddr)> {
    // Each clusterIP → the Service and the field that took it.
    let mut owners: BTreeMap<IpAddr, (&Place, Place)> = BTreeMap::new();
    let mut taken = HashSet::new();
    for service in services {
        let Some(spec) = service.object.spec.as_ref() else {
            continue;
        };
        for (field, ip) in validate::cluster_ips(spec) {
            // `None` (headless), or an address already reported.
            let Ok(ip) = ip.parse::<IpAddr>() else {
                continue;
            };
            let place = service.place.field(&field);
            if let Some(i) = node.addresses.iter().position(|a| *a == ip) {
                problems.push(Problem::new(
                    place.clone(),
                    format!(
                        "{ip} is {}: an address is either a vip or a node address",
                        native::node_address(i)
                    ),
                ));
            }
            match owners.get(&ip) {
                Some((_, first)) => {
                    problems.push(Problem::new(
                        place,
                        format!("{ip} is already {first}: a clusterIP belongs to one Service"),
                    ));
                    taken.insert((&service.place, ip));
                }
                None => {
                    owners.insert(ip, (&service.place, place));
                }
            }
        }
    }
    for service in native {
        for (j, frontend) in service.service.frontends.iter().enumerate() {
            if frontend.kind != FrontendKind::Vip {
                continue;
            }
            let Some((owner, place)) = owners.get(&frontend.addr) else {
                continue;
            };
            problems.push(Problem::new(
                service.place().key("frontends").index(j).key("address"),
                format!(
                    "{} is {place}: a clusterIP belongs to one Service, so it is no native vip",
                    frontend.addr
                ),
            ));
            taken.insert((*owner, frontend.addr));
        }
    }
    taken
}

/// A `healthCheckNodePort` is one Service's port on the node, as the API
/// server's allocator makes it: no other Service's nodePort or
/// healthCheckNodePort. (Two Services' nodePorts meet as frontends, in
/// [`Frontends::claim`]; within one Service, [`validate::service`] checks.)
fn check_health_check_node_ports(
    services: &[KubeDocument<KubeService>],
    problems: &mut Vec<Problem>,
) {
    // Every node port of the file: (port, is a health check port) → the
    // Service and the field.
    let mut ports: Vec<(i32, bool, &Place, Place)> = Vec::new();
    for service in services {
        let Some(spec) = service.object.spec.as_ref() else {
            continue;
        };
        let spec_place = service.place.key("spec");
        for (i, port) in spec.ports.iter().flatten().enumerate() {
            if let Some(node_port) = port.node_port {
                let place = spec_place.key("ports").index(i).key("nodePort");
                ports.push((node_port, false, &service.place, place));
            }
        }
        if let Some(port) = spec.health_check_node_port {
            let place = spec_place.key("healthCheckNodePort");
            ports.push((port, true, &service.place, place));
        }
    }
    for (i, (port, health, service, place)) in ports.iter().enumerate() {
        let clash = ports[..i]
            .iter()
            .find(|(other, other_health, other_service, _)| {
                other == port && other_service != service && (*health || *other_health)
            });
        if let Some((_, _, _, first)) = clash {
            problems.push(Problem::new(
                place.clone(),
                format!("{port} is already {first}: a node port serves one Service"),
            ));
        }
    }
}

/// A service translated from a Kubernetes Service of the file.
struct FromKube<'a> {
    /// The Service's place, `documents[3] (Service default/web)`.
    place: &'a Place,
    service: Service,
    /// The Service's externalIPs and LoadBalancer ingress IPs that are not
    /// also its clusterIPs: the addresses two Services may share.
    external_ips: BTreeSet<IpAddr>,
}

/// What translate made of the file's Kubernetes Services.
#[derive(Default)]
struct Translated<'a> {
    services: BTreeMap<ServiceName, FromKube<'a>>,
    health_check_node_ports: Vec<crate::source::kube::HealthCheckNodePort>,
}

/// Translates each Service on its own, with its slices, so that its warnings
/// can name its document and so that a frontend two Services claim reaches
/// [`Frontends::claim`] from both, rather than being settled by translate.
fn translate_each<'a>(
    services: &'a [KubeDocument<KubeService>],
    slices: &[KubeDocument<EndpointSlice>],
    node: &NodeInfo,
    options: &TranslateOptions,
    warnings: &mut Vec<String>,
) -> Translated<'a> {
    let mut slices_of: BTreeMap<String, Vec<EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if let Some(key) = service_of(&slice.object) {
            slices_of.entry(key).or_default().push(slice.object.clone());
        }
    }
    let mut out = Translated::default();
    for document in services {
        let key = validate::object_name(&document.object.metadata);
        let slices = slices_of.get(&key).map_or(&[][..], Vec::as_slice);
        let translation = translate(
            std::slice::from_ref(&document.object),
            slices,
            node,
            options,
        );
        warnings.extend(
            translation
                .warnings
                .into_iter()
                .map(|w| format!("{}: {w}", document.place)),
        );
        out.health_check_node_ports
            .extend(translation.health_check_node_ports);
        let external_ips = external_ips(&document.object);
        for (name, service) in translation.model.services {
            out.services.insert(
                name,
                FromKube {
                    place: &document.place,
                    service,
                    external_ips: external_ips.clone(),
                },
            );
        }
    }
    out
}

/// A Kubernetes object of the file, labelled for its problems
/// (`documents[3] (Service default/web)`), when it has none: its fields
/// (`checked`) and its name, defined once in the file (`defined_once`).
fn read_object<T>(
    place: &Place,
    value: &Value,
    validate: fn(&T) -> Vec<validate::FieldError>,
    documents: &mut Documents,
    problems: &mut Vec<Problem>,
) -> Option<KubeDocument<T>>
where
    T: DeserializeOwned
        + Serialize
        + k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    let object_place = place.object(object_label(T::KIND, value));
    let object = checked(value, &object_place, validate, problems)?;
    defined_once(
        &object,
        place,
        &object_place,
        &mut documents.names,
        problems,
    )
    .then_some(KubeDocument {
        place: object_place,
        object,
    })
}

/// Whether the (valid) `object` is the first of its kind and name; reports
/// it otherwise. `names` maps `Kind namespace/name` to the place of the
/// object that took it.
fn defined_once<T>(
    object: &T,
    place: &Place,
    object_place: &Place,
    names: &mut BTreeMap<String, Place>,
    problems: &mut Vec<Problem>,
) -> bool
where
    T: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    let name = format!("{} {}", T::KIND, validate::object_name(object.metadata()));
    if let Some(first) = names.get(&name) {
        problems.push(Problem::new(
            object_place.field("metadata.name"),
            format!("{name} is already defined by {first}"),
        ));
        return false;
    }
    names.insert(name, place.clone());
    true
}

/// A native backend that is a vip or a frontend of the file would send its
/// packets back to xlb (a loop, or a drop): a problem.
fn check_backends(
    services: &[native::NativeService],
    frontends: &Frontends,
    problems: &mut Vec<Problem>,
) {
    for service in services {
        for (j, backend) in service.service.backends.iter().enumerate() {
            let addr = backend.addr;
            if let Some(why) =
                frontends.loops_back(addr.ip(), addr.port(), service.service.protocol)
            {
                problems.push(Problem::new(
                    service.place().key("backends").index(j).key("address"),
                    format!("{addr} is {}", why.explain("backend", true)),
                ));
            }
        }
    }
}

/// [`check_backends`] for the endpoints of the file's EndpointSlices, with
/// each port of the slice.
fn check_endpoints(
    slices: &[KubeDocument<EndpointSlice>],
    frontends: &Frontends,
    problems: &mut Vec<Problem>,
) {
    for slice in slices.iter().filter(|s| s.object.address_type != "FQDN") {
        let ports: Vec<(usize, u16, Protocol)> = slice
            .object
            .ports
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, p)| {
                let number = u16::try_from(p.port?).ok()?;
                let protocol = match validate::port_protocol(p.protocol.as_deref()) {
                    Ok("TCP") => Protocol::Tcp,
                    Ok("UDP") => Protocol::Udp,
                    _ => return None,
                };
                Some((i, number, protocol))
            })
            .collect();
        for (i, endpoint) in slice.object.endpoints.iter().enumerate() {
            for (j, address) in endpoint.addresses.iter().enumerate() {
                // Validated: an address of the slice's family.
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                let place = slice
                    .place
                    .key("endpoints")
                    .index(i)
                    .key("addresses")
                    .index(j);
                // On a vip, whatever the port: one problem for the address.
                if let Some(why @ LoopBack::Vip { .. }) = frontends.loops_back(ip, 0, Protocol::Tcp)
                {
                    problems.push(Problem::new(
                        place,
                        format!("{ip} is {}", why.explain("pod", false)),
                    ));
                    continue;
                }
                for &(k, port, protocol) in &ports {
                    if let Some(why) = frontends.loops_back(ip, port, protocol) {
                        problems.push(Problem::new(
                            place.clone(),
                            format!(
                                "{} (ports[{k}]) is {}",
                                SocketAddr::new(ip, port),
                                why.explain("pod", false)
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// The addresses of `service` that the API server lets other Services name
/// too: its `externalIPs` and LoadBalancer ingress IPs, unless one is also a
/// clusterIP (which the API server allocates once).
fn external_ips(service: &KubeService) -> BTreeSet<IpAddr> {
    let Some(spec) = service.spec.as_ref() else {
        return BTreeSet::new();
    };
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ip.as_deref());
    let cluster_ips: BTreeSet<&str> = validate::cluster_ips(spec)
        .into_iter()
        .map(|(_, ip)| ip)
        .collect();
    spec.external_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(ingress)
        .filter(|ip| !cluster_ips.contains(ip))
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// Who holds each frontend and what kind each address is, to report clashes
/// with both places.
#[derive(Debug, Default)]
struct Frontends {
    owners: BTreeMap<(IpAddr, u16, Protocol), Owner>,
    kinds: BTreeMap<IpAddr, (FrontendKind, Place)>,
}

/// The service that holds a frontend.
#[derive(Debug)]
struct Owner {
    service: ServiceName,
    /// Where it claimed it.
    place: Place,
    claimant: Claimant,
}

/// Where a service that claims a frontend comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claimant {
    Native,
    /// A Kubernetes Service; `external`: the frontend is on one of its
    /// [`external_ips`].
    Kube {
        external: bool,
    },
}

/// What became of a claim.
#[derive(Debug)]
enum Claim {
    /// The frontend is the service's (or a problem says why not).
    Taken,
    /// Another Kubernetes service holds it on an external IP of both, as the
    /// API server lets two Services name the same one: the claimant goes
    /// without.
    Shared(ServiceName),
}

impl Frontends {
    /// Whether a backend at `ip`, `port` and `protocol` would send its
    /// packets back to xlb: `ip` is a vip (whatever the port), or `ip` and
    /// `port` are a frontend of a node address. A node address on another
    /// port is the node's own (a hostNetwork pod), which the node serves.
    fn loops_back(&self, ip: IpAddr, port: u16, protocol: Protocol) -> Option<LoopBack<'_>> {
        match self.kinds.get(&ip)? {
            (FrontendKind::Vip, first) => Some(LoopBack::Vip { ip, first }),
            (FrontendKind::Node, _) => {
                let owner = self.owners.get(&(ip, port, protocol))?;
                Some(LoopBack::Frontend {
                    frontend: Frontend {
                        addr: ip,
                        port,
                        protocol,
                        kind: FrontendKind::Node,
                        snat_remote: false,
                        source_ranges_only: false,
                    },
                    owner,
                })
            }
        }
    }

    fn claim(
        &mut self,
        frontend: &Frontend,
        service: &ServiceName,
        place: Place,
        claimant: Claimant,
        problems: &mut Vec<Problem>,
    ) -> Claim {
        let key = (frontend.addr, frontend.port, frontend.protocol);
        if let Some(owner) = self.owners.get(&key) {
            // A clusterIP or nodePort is the API server's to allocate, once:
            // only external IPs can be claimed twice in a cluster.
            let why = match (claimant, owner.claimant) {
                (Claimant::Kube { external: true }, Claimant::Kube { external: true }) => {
                    return Claim::Shared(owner.service.clone());
                }
                (Claimant::Kube { .. }, Claimant::Kube { .. }) => {
                    ": two Kubernetes Services share a frontend only on an external IP"
                }
                _ => "",
            };
            problems.push(Problem::new(
                place,
                format!(
                    "{frontend} is already a frontend of service {} ({}){why}",
                    owner.service, owner.place
                ),
            ));
            return Claim::Taken;
        }
        match self.kinds.get(&frontend.addr) {
            Some((kind, first)) if *kind != frontend.kind => {
                let (this, that) = match kind {
                    FrontendKind::Node => ("a vip", "a node address"),
                    FrontendKind::Vip => ("a node address", "a vip"),
                };
                problems.push(Problem::new(
                    place,
                    format!(
                        "{} is used as {this} here but is {that} in {first}: an address is \
                         either a vip or a node address",
                        frontend.addr
                    ),
                ));
                return Claim::Taken;
            }
            Some(_) => {}
            None => {
                self.kinds
                    .insert(frontend.addr, (frontend.kind, place.clone()));
            }
        }
        self.owners.insert(
            key,
            Owner {
                service: service.clone(),
                place,
                claimant,
            },
        );
        Claim::Taken
    }
}

/// Why packets to a backend would come back to xlb.
#[derive(Debug)]
enum LoopBack<'a> {
    /// Its address is a vip, which is xlb's alone (at `first`).
    Vip { ip: IpAddr, first: &'a Place },
    /// Its address and port are a frontend (of a node address).
    Frontend {
        frontend: Frontend,
        owner: &'a Owner,
    },
}

impl LoopBack<'_> {
    /// Why, and what to give instead of the address of `whose` ("backend",
    /// "pod"): "a vip (`services[0].frontends[0]`): what is sent to a vip comes
    /// back to xlb, so give the backend's own address". `on`: name the
    /// address, which the caller gave with a port.
    fn explain(&self, whose: &str, on: bool) -> String {
        match self {
            Self::Vip { ip, first } => format!(
                "{}a vip ({first}): what is sent to a vip comes back to xlb, so give the \
                 {whose}'s own address",
                if on {
                    format!("on {ip}, ")
                } else {
                    String::new()
                }
            ),
            Self::Frontend { frontend, owner } => format!(
                "the frontend {frontend} of service {} ({}): what is sent to it is balanced \
                 again, so give the {whose}'s own address and port",
                owner.service, owner.place
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fmt::Write as _, net::SocketAddr, path::PathBuf, time::Duration};

    use proptest::prelude::*;

    use super::*;
    use crate::model::{Affinity, Backend, BackendState, HealthCheck, Mode, Probe, Service};

    /// Every problem of `text`, displayed (`place: message`).
    fn problems(text: &str) -> Vec<String> {
        match parse_with_warnings(text) {
            Ok(loaded) => panic!("expected problems, got {:?}", loaded.model),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_frontend_address_in_brackets_is_told_how_an_ipv6_address_is_written() {
        let text = "\
services:
  - name: web
    frontends: [{address: [2001:2::100], port: 80}, {address: 7, port: 81}]
    backends: [{address: \"[2001:2::1]:80\"}]
";
        assert_eq!(
            problems(text),
            [
                "services[0].frontends[0].address: a list is not an IP address (IPv6 without \
                 brackets, as 2001:2::100)",
                "services[0].frontends[1].address: 7 is not an IP address (IPv6 without \
                 brackets, as 2001:2::100)",
            ]
        );
    }

    #[test]
    fn valid_native_services_that_cannot_work_as_meant_are_warned_of() {
        let text = "\
services:
  - name: dns
    protocol: UDP
    frontends: [{address: 198.19.0.1, port: 53}]
    backends: [{address: \"198.18.2.1:53\"}]
    health_check: {type: tcp}
  - name: dns-checked-elsewhere
    protocol: UDP
    frontends: [{address: 198.19.0.1, port: 54}]
    backends: [{address: \"198.18.2.1:54\"}]
    health_check: {type: http, path: /ready, port: 8080}
  - name: web
    frontends: [{address: 198.19.0.2, port: 80}]
    backends:
      - {address: \"198.18.2.1:80\", state: draining}
      - {address: \"198.18.2.2:80\", state: draining}
  - name: api
    frontends: [{address: 198.19.0.3, port: 80}]
    backends:
      - {address: \"198.18.2.1:80\", state: draining}
      - {address: \"198.18.2.2:80\"}
";
        let warnings = parse_with_warnings(text).expect("valid").warnings;
        assert_eq!(
            warnings,
            [
                "services[0] (dns): a UDP service whose health check probes each backend's own \
                 port over TCP: a backend that answers only UDP there goes down; set \
                 health_check.port to a TCP port the backends answer on",
                "services[2] (web): every backend is draining: new flows are refused until one \
                 is active",
            ]
        );
    }

    #[test]
    fn collections_nested_past_the_limit_are_refused_before_parsing() {
        let deep = format!("services: {}", "[".repeat(40_000));
        assert_eq!(
            problems(&deep),
            [format!(
                "lists or mappings nested more than 256 deep at line 1 column {}: not read (no \
                 value of the file nests more than a few levels)",
                11 + 256
            )]
        );
    }

    fn model(text: &str) -> Model {
        match parse(text) {
            Ok(model) => model,
            Err(e) => panic!("{e}"),
        }
    }

    /// One service `web` with the given frontend and backend lines.
    fn web(body: &str) -> String {
        format!("services:\n  - name: web\n{body}")
    }

    const ONE_FRONTEND: &str = "    frontends:\n      - address: 198.18.100.1\n        port: 80\n";

    #[test]
    fn the_defaults_of_a_minimal_service() {
        let m = model(&web(&format!(
            "{ONE_FRONTEND}    backends:\n      - address: 198.18.2.1:8080\n"
        )));
        let service = &m.services[&ServiceName("web".to_owned())];
        assert_eq!(
            *service,
            Service {
                protocol: Protocol::Tcp,
                frontends: vec![Frontend {
                    addr: "198.18.100.1".parse().unwrap(),
                    port: 80,
                    protocol: Protocol::Tcp,
                    kind: FrontendKind::Vip,
                    snat_remote: false,
                    source_ranges_only: false,
                }],
                backends: vec![Backend {
                    addr: "198.18.2.1:8080".parse().unwrap(),
                    weight: 1,
                    state: BackendState::Active,
                    local: false,
                }],
                mode: Mode::Nat,
                affinity: None,
                health_check: None,
                drop_without_backends: false,
                source_ranges: Vec::new(),
            }
        );
    }

    #[test]
    fn every_field_of_a_service() {
        let m = model(
            "
services:
  - name: dns.v2
    protocol: UDP
    mode: nat
    frontends:
      - address: 2001:2::53
        port: 53
        kind: vip
      - address: 2001:2::10
        port: 30053
        kind: node
    backends:
      - address: \"[2001:2::2:1]:5353\"
        weight: 10000
        state: draining
      - address: \"[2001:2::2:2]:5353\"
    session_affinity:
      type: client_ip
      timeout: 1h 30m
    health_check:
      type: http
      path: /healthz?full=1
      port: 8080
      interval: 500ms
      timeout: 250ms
      rise: 1
      fall: 100
",
        );
        let service = &m.services[&ServiceName("dns.v2".to_owned())];
        assert_eq!(service.protocol, Protocol::Udp);
        assert_eq!(
            service
                .frontends
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["[2001:2::53]:53/UDP", "[2001:2::10]:30053/UDP"]
        );
        assert_eq!(service.frontends[1].kind, FrontendKind::Node);
        assert_eq!(
            service.backends,
            [
                Backend {
                    addr: "[2001:2::2:1]:5353".parse().unwrap(),
                    weight: 10000,
                    state: BackendState::Draining,
                    local: false,
                },
                Backend {
                    addr: "[2001:2::2:2]:5353".parse().unwrap(),
                    weight: 1,
                    state: BackendState::Active,
                    local: false,
                },
            ]
        );
        assert_eq!(
            service.affinity,
            Some(Affinity {
                timeout: Duration::from_secs(5400)
            })
        );
        assert_eq!(
            service.health_check,
            Some(HealthCheck {
                probe: Probe::Http {
                    path: "/healthz?full=1".to_owned()
                },
                port: Some(8080),
                interval: Duration::from_millis(500),
                timeout: Duration::from_millis(250),
                rise: 1,
                fall: 100,
            })
        );
    }

    #[test]
    fn a_dsr_service_keeps_its_port_end_to_end() {
        let m = model(&web(&format!(
            "{ONE_FRONTEND}    mode: dsr\n    backends:\n      - address: 198.18.2.1:80\n"
        )));
        assert_eq!(m.services[&ServiceName("web".to_owned())].mode, Mode::Dsr);
        let two_ports = web(
            "    frontends:\n      - address: 198.18.100.1\n        port: 80\n      - address: \
             198.18.100.1\n        port: 443\n    mode: dsr\n",
        );
        assert_eq!(
            problems(&two_ports),
            [
                "services[0].frontends: a dsr service's frontends share one port: its backends \
              serve it unchanged"
            ]
        );
    }

    #[test]
    fn source_nat_marks_every_frontend_and_refuses_dsr() {
        let m = model(&web(&format!(
            "{ONE_FRONTEND}    source_nat: true\n    backends:\n      - address: 198.18.2.1:80\n"
        )));
        let service = &m.services[&ServiceName("web".to_owned())];
        assert!(service.frontends.iter().all(|f| f.snat_remote));
        assert!(service.backends.iter().all(|b| !b.local));
        let plain = model(&web(ONE_FRONTEND));
        assert!(
            plain.services[&ServiceName("web".to_owned())]
                .frontends
                .iter()
                .all(|f| !f.snat_remote)
        );
        assert_eq!(
            problems(&web(&format!(
                "{ONE_FRONTEND}    mode: dsr\n    source_nat: true\n"
            ))),
            ["services[0].source_nat: source NAT needs replies through this LB: not with mode dsr"]
        );
    }

    #[test]
    fn affinity_and_health_check_defaults() {
        let m = model(&web(&format!(
            "{ONE_FRONTEND}    session_affinity:\n      type: client_ip\n    health_check:\n      type: tcp\n"
        )));
        let service = &m.services[&ServiceName("web".to_owned())];
        assert_eq!(
            service.affinity.map(|a| a.timeout),
            Some(Duration::from_secs(10_800))
        );
        assert_eq!(
            service.health_check,
            Some(HealthCheck {
                probe: Probe::Tcp,
                port: None,
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3,
            })
        );
    }

    #[test]
    fn a_service_without_backends_is_valid() {
        let m = model(&web(ONE_FRONTEND));
        assert!(
            m.services[&ServiceName("web".to_owned())]
                .backends
                .is_empty()
        );
    }

    #[test]
    fn a_file_that_says_it_has_no_services_is_an_empty_model() {
        assert_eq!(model("services: []\n"), Model::default());
        assert_eq!(model("---\nservices:\n---\n"), Model::default());
    }

    #[test]
    fn a_file_that_holds_nothing_is_refused() {
        // What an editor that truncates before it writes leaves for a moment.
        for text in ["", "\n", "---\n", "# xlb\n\n", "---\n---\n"] {
            assert_eq!(
                problems(text),
                [
                    "the file holds nothing (empty, or only comments): to remove every service, \
                  write `services: []`"
                ],
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_file_without_services_says_that_it_removes_every_service() {
        // A file cut short while being written can read like this: the
        // log should show it.
        for text in ["services: []\n", "node: {name: a}\n"] {
            let loaded = parse_with_warnings(text).unwrap();
            assert_eq!(loaded.model, Model::default(), "{text:?}");
            assert_eq!(
                loaded.warnings,
                ["no services: applying this file removes every service"],
                "{text:?}"
            );
        }
        assert!(
            parse_with_warnings(&web(ONE_FRONTEND))
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn frontend_problems() {
        let text = web("    frontends:
      - address: 198.18.100.1
        port: 70000
      - address: 198.18.100.1
        port: 0
      - address: 224.0.0.5
        port: 80
      - address: 255.255.255.255
        port: 80
      - address: 0.0.0.0
        port: 80
      - address: 127.0.0.1
        port: 80
      - address: web.example
        port: 80
      - address: 198.18.100.2
        port: 8080
        kind: node
      - address: 198.18.100.3
        port: 80
        kind: anycast
      - address: 2001:2::1
        port: 80
      - address: 198.18.100.9
        port: 80
      - address: 198.18.100.9
        port: 80
");
        assert_eq!(
            problems(&text),
            [
                "services[0].frontends[0].port: 70000 is out of range 1-65535",
                "services[0].frontends[1].port: 0 is out of range 1-65535",
                "services[0].frontends[2].address: 224.0.0.5 is a multicast address \
                 (224.0.0.0/4): give a unicast address",
                "services[0].frontends[3].address: 255.255.255.255 is the broadcast address: give \
                 a unicast address",
                "services[0].frontends[4].address: 0.0.0.0 is unspecified: give a unicast address",
                "services[0].frontends[5].address: 127.0.0.1 is a loopback address \
                 (127.0.0.0/8): give a unicast address",
                "services[0].frontends[6].address: `web.example` is not an IP address",
                "services[0].frontends[7].port: 8080 is outside the NodePort range 30000-32767: a \
                 node address only serves NodePorts (or use kind vip)",
                "services[0].frontends[8].kind: `anycast` is not a frontend kind: use vip or node",
                "services[0].frontends[9].address: 2001:2::1 is IPv6 but \
                 services[0].frontends[0] is IPv4: a service balances one address family \
                 (define another service for IPv6)",
                "services[0].frontends[11]: 198.18.100.9:80/TCP is already \
                 services[0].frontends[10]",
            ]
        );
    }

    /// A repeated backend or frontend is reported beside whatever else is
    /// wrong with it, in one run: fixing the one first problem a run shows
    /// must not reveal another on the next.
    #[test]
    fn a_repeat_is_reported_beside_the_other_problems_of_its_entry() {
        let text = web("    frontends:
      - address: 198.18.100.9
        port: 80
        kind: anycast
      - address: 198.18.100.9
        port: 80
    backends:
      - address: 198.18.2.1:80
        weight: 0
      - address: 198.18.2.1:80
      - address: 198.18.2.2:80
      - address: 198.18.2.2:80
        state: up
");
        assert_eq!(
            problems(&text),
            [
                "services[0].frontends[0].kind: `anycast` is not a frontend kind: use vip or node",
                "services[0].frontends[1]: 198.18.100.9:80/TCP is already \
                 services[0].frontends[0]",
                "services[0].backends[0].weight: 0 is not a weight (1-10000): to stop new flows \
                 to a backend, set state: draining",
                "services[0].backends[1].address: 198.18.2.1:80 is already \
                 services[0].backends[0]",
                "services[0].backends[3].address: 198.18.2.2:80 is already \
                 services[0].backends[2]",
                "services[0].backends[3].state: `up` is not a backend state: use active or \
                 draining",
            ]
        );
    }

    /// A service with a problem of its own still holds its frontends for the
    /// checks across services: another service on one of them, or a backend
    /// on one, is reported in the same run.
    #[test]
    fn a_service_with_a_problem_still_claims_its_frontends() {
        let text = "\
services:
  - name: web
    frontends: [{address: 198.19.0.1, port: 80}]
    backends: [{address: \"198.18.1.100:8080\", weight: 0}]
  - name: api
    frontends: [{address: 198.19.0.1, port: 80}]
  - name: db
    frontends: [{address: 198.19.0.2, port: 5432}]
    backends: [{address: \"198.19.0.1:80\"}]
";
        assert_eq!(
            problems(text),
            [
                "services[0].backends[0].weight: 0 is not a weight (1-10000): to stop new flows \
                 to a backend, set state: draining",
                "services[1].frontends[0]: 198.19.0.1:80/TCP is already a frontend of service \
                 web (services[0].frontends[0])",
                "services[2].backends[0].address: 198.19.0.1:80 is on 198.19.0.1, a vip \
                 (services[0].frontends[0]): what is sent to a vip comes back to xlb, so give \
                 the backend's own address",
            ]
        );
    }

    #[test]
    fn reserved_ranges_are_refused_as_vips_and_backends() {
        let text = web("    frontends:
      - address: 240.0.0.1
        port: 80
    backends:
      - address: 0.1.2.3:80
");
        assert_eq!(
            problems(&text),
            [
                "services[0].frontends[0].address: 240.0.0.1 is in 240.0.0.0/4, reserved (RFC \
                 6890): give a unicast address",
                "services[0].backends[0].address: 0.1.2.3 is in 0.0.0.0/8, \"this network\", \
                 which is no destination (RFC 6890): give a unicast address",
            ]
        );
        let v6 = web("    frontends:
      - address: \"::198.18.0.1\"
        port: 80
");
        assert_eq!(
            problems(&v6),
            [
                "services[0].frontends[0].address: ::c612:1 is an IPv4-compatible IPv6 address \
                 (::198.18.0.1, in ::/96, deprecated by RFC 4291): write 198.18.0.1 itself"
            ]
        );
        let service = SERVICE.replace("clusterIP: 198.18.100.1", "clusterIP: 240.0.0.1");
        assert_eq!(
            problems(&service),
            [
                "documents[0] (Service shop/web): spec.clusterIP: 240.0.0.1 is in 240.0.0.0/4, \
                 reserved (RFC 6890): give a unicast address"
            ]
        );
    }

    #[test]
    fn a_service_needs_a_frontend() {
        assert_eq!(
            problems("services:\n  - name: web\n    backends: []\n"),
            ["services[0].frontends: a service needs at least one frontend (address and port)"]
        );
    }

    #[test]
    fn backend_problems() {
        let text = web(&format!(
            "{ONE_FRONTEND}    backends:
      - address: 198.18.2.1
      - address: 2001:2::1:80
      - address: 198.18.2.1:0
      - address: 198.18.2.1:70000
      - address: 198.18.2.1:http
      - address: 198.18.2.300:80
      - address: \"[2001:2::1]:80\"
      - address: 198.18.2.1:80
        weight: 0
      - address: 198.18.2.4:80
        weight: 10001
      - address: 198.18.2.5:80
        state: terminating
      - address: 198.18.2.6:80
        state: up
      - address: 198.18.2.2:80
      - address: 198.18.2.2:80
      - address: [198.18.2.3, 80]
"
        ));
        let values = [
            "services[0].backends[0].address: `198.18.2.1` is not ip:port (IPv6 as \
             [2001:2::1]:80)",
            "services[0].backends[1].address: `2001:2::1:80`: an IPv6 address needs \
             brackets: `[2001:2::1]:80`",
            "services[0].backends[2].address: `198.18.2.1:0`: port 0 is out of range 1-65535",
            "services[0].backends[3].address: `198.18.2.1:70000`: port 70000 is out of range \
             1-65535",
            "services[0].backends[4].address: `198.18.2.1:http`: `http` is not a port number",
            "services[0].backends[5].address: `198.18.2.300` is not an IP address",
            "services[0].backends[6].address: [2001:2::1]:80 is IPv6 but the service's \
             frontends are IPv4: the datapath translates within one address family (no \
             NAT46 or NAT64)",
            "services[0].backends[7].weight: 0 is not a weight (1-10000): to stop new flows \
             to a backend, set state: draining",
            "services[0].backends[8].weight: 10001 is out of range 1-10000",
            "services[0].backends[9].state: terminating comes from Kubernetes endpoints \
             only: use active or draining",
            "services[0].backends[10].state: `up` is not a backend state: use active or \
             draining",
            "services[0].backends[12].address: 198.18.2.2:80 is already \
             services[0].backends[11]",
        ];
        // The list-shaped one hides none of the others, and comes in the
        // order of the file, last.
        assert_eq!(
            problems(&text),
            values
                .into_iter()
                .chain([
                    "services[0].backends[13].address: a list is not an address and port, \
                     ip:port (IPv6 quoted, as \"[2001:2::1]:80\")",
                ])
                .collect::<Vec<_>>()
        );
        let text = text.replace("      - address: [198.18.2.3, 80]\n", "");
        assert_eq!(problems(&text), values);
    }

    #[test]
    fn values_are_quoted_and_escaped_so_that_a_problem_is_one_line() {
        let text = web(&format!(
            "{ONE_FRONTEND}    backends:
      - address: \"198.18.2.1:80\\nservices[9].name: forged\"
      - address: \"198.18.2.2:80`, x\"
  - name: api
    frontends:
      - address: 198.18.100.2
        port: 80
    health_check:
      \"pa\\rth\": /
"
        ));
        let error = parse(&text).unwrap_err();
        assert_eq!(
            error.to_string().lines().collect::<Vec<_>>(),
            [
                "services[0].backends[0].address: `198.18.2.1:80\\nservices[9].name: forged`: an \
                 IPv6 address needs brackets: `[198.18.2.1:80\\nservices[9].name]: forged`",
                "services[0].backends[1].address: `198.18.2.2:80\\`, x`: `80\\`, x` is not a port \
                 number",
                // Left out: at its mapping, before what the mapping holds.
                "services[1].health_check.type: required",
                // The key is not echoed in the message, but it is in the place.
                "services[1].health_check.pa\\rth: unknown field, did you mean `path`?",
            ]
        );
    }

    #[test]
    fn service_level_problems() {
        let text = format!(
            "services:
  - name: Web
    protocol: tcp
    mode: dsr
{ONE_FRONTEND}  - name: dns
    protocol: SCTP
    mode: maglev
{ONE_FRONTEND}  - name: dns
    frontends:
      - address: 198.18.100.2
        port: 53
"
        );
        assert_eq!(
            problems(&text),
            [
                "services[0].name: `Web` is not a name: lowercase letters, digits, '.' and '-', \
                 starting with a lowercase letter or digit and ending with a letter or digit",
                "services[0].protocol: `tcp` is not a protocol: use TCP or UDP",
                "services[1].protocol: SCTP is not supported: use TCP or UDP",
                "services[1].mode: `maglev` is not a mode: use nat or dsr",
                "services[2].name: `dns` is already the name of services[1]",
            ]
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_their_place() {
        let text = "
services:
  - name: a
    frontends:
      - address: 198.18.100.1
        port: 80
        prot: TCP
  - name: b
    frontends:
      - address: 198.18.100.2
        port: \"80\"
  - name: c
    frontends:
      - address: 198.18.100.3
        port: 80
    health_check:
      type: tcp
      interval: 2
  - name: d
    frontends: 198.18.100.4
  - frontends: []
servics: []
";
        assert_eq!(
            problems(text),
            [
                "services[0].frontends[0].prot: unknown field: the fields here are `address`, \
                 `port`, `kind`",
                "services[1].frontends[0].port: the text `80` is not a port number (1-65535): \
                 write it without quotes",
                "services[2].health_check.interval: 2 is not a duration with a unit, like 2s, \
                 500ms or 3h",
                "services[3].frontends: the text `198.18.100.4` is not a list",
                "services[4].name: required",
                "services[4].frontends: a service needs at least one frontend (address and port)",
                // `services` is written too.
                "servics: unknown key: the native document has `node` and `services`",
            ]
        );
        assert_eq!(
            problems("services: web\n"),
            ["services: must be a list of services (`- name: ...`)"]
        );
    }

    #[test]
    fn an_unknown_key_asks_for_the_known_one_it_is_close_to() {
        let frontend = |fields: &str| {
            problems(&web(&format!(
                "    frontends:\n      - {{address: 198.19.0.1, {fields}}}\n"
            )))
        };
        // A required key left out and a key close to it: one problem, the
        // misspelling's.
        assert_eq!(
            frontend("prot: 80"),
            [
                "services[0].frontends[0].prot: unknown field, did you mean `port`? (`port` is \
                 required)"
            ]
        );
        assert_eq!(
            frontend("port: 80, kidn: vip"),
            ["services[0].frontends[0].kidn: unknown field, did you mean `kind`?"]
        );
        // Not a key that was written, nor one too far from it.
        assert_eq!(
            frontend("port: 80, prot: 81, weigth: 1"),
            [
                "services[0].frontends[0].prot: unknown field: the fields here are `address`, \
                 `port`, `kind`",
                "services[0].frontends[0].weigth: unknown field: the fields here are `address`, \
                 `port`, `kind`",
            ]
        );
        assert_eq!(
            problems(&web(&format!(
                "{ONE_FRONTEND}    health_check:\n      type: tcp\n      interv: 5s\n    \
                 protocl: UDP\n"
            ))),
            [
                "services[0].health_check.interv: unknown field, did you mean `interval`?",
                "services[0].protocl: unknown field, did you mean `protocol`?",
            ]
        );
        assert_eq!(
            problems("servics: []\nnod: {}\n"),
            [
                "servics: unknown key, did you mean `services`?",
                "nod: unknown key, did you mean `node`?",
            ]
        );
        // A missing key is still required when no key was taken for it.
        assert_eq!(
            frontend("x: 80"),
            [
                "services[0].frontends[0].port: required",
                "services[0].frontends[0].x: unknown field: the fields here are `address`, \
                 `port`, `kind`",
            ]
        );
    }

    #[test]
    fn a_frontend_address_with_a_port_says_where_the_port_goes() {
        let frontends = |lines: &str| problems(&web(&format!("    frontends:\n{lines}")));
        assert_eq!(
            frontends("      - address: 198.19.0.1:80\n"),
            [
                "services[0].frontends[0].address: `198.19.0.1:80` is not an IP address: a \
                 frontend's port goes in `port`: `address: 198.19.0.1`, `port: 80` (`port` is \
                 required)"
            ]
        );
        assert_eq!(
            frontends("      - address: \"[2001:2::1]:443\"\n        port: 443\n"),
            [
                "services[0].frontends[0].address: `[2001:2::1]:443` is not an IP address: a \
                 frontend's port goes in `port`: `address: 2001:2::1`, `port: 443`"
            ]
        );
        // The port is required once, where it was misspelt.
        assert_eq!(
            frontends("      - {address: 198.19.0.1:80, prot: 80}\n"),
            [
                "services[0].frontends[0].address: `198.19.0.1:80` is not an IP address: a \
                 frontend's port goes in `port`: `address: 198.19.0.1`, `port: 80`",
                "services[0].frontends[0].prot: unknown field, did you mean `port`? (`port` is \
                 required)",
            ]
        );
    }

    #[test]
    fn every_problem_of_a_native_service_is_reported_in_one_run() {
        // An unknown key, values of the wrong kind and wrong values, in one
        // service: none hides another.
        let text = web("    protocl: UDP
    frontends:
      - address: 198.18.100.1
        port: eighty
      - address: 198.18.100.300
        port: 70000
    backends:
      - address: 198.18.2.1:80
        weight: heavy
        state: up
");
        assert_eq!(
            problems(&text),
            [
                "services[0].protocl: unknown field, did you mean `protocol`?",
                "services[0].frontends[0].port: the text `eighty` is not a port number (1-65535)",
                "services[0].frontends[1].address: `198.18.100.300` is not an IP address",
                "services[0].frontends[1].port: 70000 is out of range 1-65535",
                "services[0].backends[0].weight: the text `heavy` is not a whole number",
                "services[0].backends[0].state: `up` is not a backend state: use active or \
                 draining",
            ]
        );
    }

    #[test]
    fn every_problem_of_a_kubernetes_object_is_reported_in_one_run() {
        // A misspelt field and a wrong value.
        let text = SERVICE
            .replace(
                "  type: NodePort\n",
                "  type: NodePort\n  externalTraficPolicy: Local\n",
            )
            .replace("port: 80\n", "port: 70000\n");
        assert_eq!(
            problems(&text),
            [
                "documents[0] (Service shop/web): spec.externalTraficPolicy: unknown field (not \
                 in the Kubernetes 1.33 API)",
                "documents[0] (Service shop/web): spec.ports[0].port: 70000 is out of range \
                 1-65535",
            ]
        );
        // Two values of the wrong kind, and a wrong value.
        let text = SERVICE
            .replace("port: 80\n", "port: \"80\"\n")
            .replace("nodePort: 30080", "nodePort: thirty")
            .replace("198.18.100.1", "198.18.100.300");
        assert_eq!(
            problems(&text),
            [
                "documents[0] (Service shop/web): spec.clusterIP: `198.18.100.300` is not an IP \
                 address",
                "documents[0] (Service shop/web): spec.ports[0].port: the text `80` is not a port \
                 number (1-65535): write it without quotes",
                "documents[0] (Service shop/web): spec.ports[0].nodePort: the text `thirty` is \
                 not a node port (30000-32767)",
            ]
        );
        // An EndpointSlice likewise.
        let text = SLICE
            .replace("port: 8080", "port: http")
            .replace("{ready: true}", "{ready: yes please}")
            .replace("[198.18.2.1]", "[198.18.2.1, 198.18.2.300]")
            + "  - adresses: [198.18.2.2]\n";
        assert_eq!(
            problems(&text),
            [
                "documents[0] (EndpointSlice shop/web-abc): ports[0].port: the text `http` is not \
                 a port number (1-65535)",
                "documents[0] (EndpointSlice shop/web-abc): endpoints[0].addresses[1]: \
                 `198.18.2.300` is not an IP address",
                "documents[0] (EndpointSlice shop/web-abc): endpoints[0].conditions.ready: the \
                 text `yes please` is not true or false",
                // Left out: at its mapping, before what the mapping holds.
                "documents[0] (EndpointSlice shop/web-abc): endpoints[1].addresses: required: at \
                 least one address",
                "documents[0] (EndpointSlice shop/web-abc): endpoints[1].adresses: unknown field \
                 (not in the Kubernetes 1.33 API)",
            ]
        );
    }

    #[test]
    fn label_keys_that_begin_alike_are_each_reported_at_their_own_place() {
        // `app.kubernetes.io/name` is one key, not `app` and more: each
        // label is reported, whichever comes first, in the order of the file.
        let text = "apiVersion: v1
kind: Service
metadata:
  name: web
  labels:
    app: [web]
    app.kubernetes.io/name: [web]
    app.kubernetes.io: 7
    tier: {name: web}
  annotations:
    example.com/owner.team: [a]
    example.com/owner: [b]
spec:
  clusterIP: 198.18.100.1
  selector:
    app.kubernetes.io/name: {a: b}
    app: [web]
  ports:
    - port: 80
";
        let label = "documents[0] (Service default/web)";
        assert_eq!(
            problems(text),
            [
                "metadata.labels.app: a list is not a string",
                "metadata.labels[\"app.kubernetes.io/name\"]: a list is not a string",
                "metadata.labels[\"app.kubernetes.io\"]: 7 is not a string",
                "metadata.labels.tier: a mapping is not a string",
                "metadata.annotations[\"example.com/owner.team\"]: a list is not a string",
                "metadata.annotations[\"example.com/owner\"]: a list is not a string",
                "spec.selector[\"app.kubernetes.io/name\"]: a mapping is not a string",
                "spec.selector.app: a list is not a string",
            ]
            .map(|p| format!("{label}: {p}"))
        );
    }

    #[test]
    fn a_problem_at_a_key_with_dots_comes_in_the_order_of_the_file() {
        // Found by different checks (the kinds of values, unknown fields,
        // the API's rules), put in the order of the file by their steps.
        let text = "apiVersion: v1
kind: Service
metadata:
  colour: red
  labels:
    app: web
    app.kubernetes.io/name: [web]
  namespace: Shop
  name: web
  annotations:
    a.b: [c]
spec:
  clusterIP: 198.18.100.1
  ports:
    - port: 80
      x.y: 1
";
        let label = "documents[0] (Service Shop/web)";
        assert_eq!(
            problems(text),
            [
                "metadata.colour: unknown field (not in the Kubernetes 1.33 API)",
                "metadata.labels[\"app.kubernetes.io/name\"]: a list is not a string",
                "metadata.namespace: `Shop` is not a DNS label (RFC 1123): lowercase letters, \
                 digits and '-', starting with a lowercase letter or digit and ending with a \
                 letter or digit",
                "metadata.annotations[\"a.b\"]: a list is not a string",
                "spec.ports[0][\"x.y\"]: unknown field (not in the Kubernetes 1.33 API)",
            ]
            .map(|p| format!("{label}: {p}"))
        );
        // Natively likewise.
        let text = web("    mode: fast
    health.check: {type: tcp}
    frontends:
      - address: 198.18.100.300
        port: 80
");
        assert_eq!(
            problems(&text),
            [
                "services[0].mode: `fast` is not a mode: use nat or dsr",
                "services[0][\"health.check\"]: unknown field, did you mean `health_check`?",
                "services[0].frontends[0].address: `198.18.100.300` is not an IP address",
            ]
        );
    }

    #[test]
    fn the_problems_of_a_document_come_in_the_order_of_the_file() {
        // Values of the wrong kind, unknown fields and wrong values, mixed:
        // each where it was written, whichever check found it.
        let text = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: Shop
  labels:
    app.kubernetes.io/name: [web]
  colour: red
spec:
  type: Weird
  sessionAfinity: ClientIP
  clusterIP: 198.18.100.300
  ports:
    - port: \"80\"
      protocol: XYZ
      extra: 3
    - name: b
";
        let label = "documents[0] (Service Shop/web)";
        assert_eq!(
            problems(text),
            [
                "metadata.namespace: `Shop` is not a DNS label (RFC 1123): lowercase letters, \
                 digits and '-', starting with a lowercase letter or digit and ending with a \
                 letter or digit",
                "metadata.labels[\"app.kubernetes.io/name\"]: a list is not a string",
                "metadata.colour: unknown field (not in the Kubernetes 1.33 API)",
                "spec.type: `Weird` is not a service type: use ClusterIP, NodePort, \
                 LoadBalancer or ExternalName",
                "spec.sessionAfinity: unknown field (not in the Kubernetes 1.33 API)",
                "spec.clusterIP: `198.18.100.300` is not an IP address",
                // A field left out: at its mapping, before what it holds.
                "spec.ports[0].name: required when a Service has more than one port",
                "spec.ports[0].port: the text `80` is not a port number (1-65535): write it \
                 without quotes",
                "spec.ports[0].protocol: `XYZ` is not a protocol: use TCP, UDP or SCTP",
                "spec.ports[0].extra: unknown field (not in the Kubernetes 1.33 API)",
                "spec.ports[1].port: required",
            ]
            .map(|p| format!("{label}: {p}"))
        );
        // A native service likewise.
        let text = web("    protocol: XYZ
    frontends:
      - address: 198.18.100.300
        port: \"80\"
        kind: vpi
    backends:
      - address: 198.18.2.1:8080
        bogus: 1
    mode: fast
");
        assert_eq!(
            problems(&text),
            [
                "services[0].protocol: `XYZ` is not a protocol: use TCP or UDP",
                "services[0].frontends[0].address: `198.18.100.300` is not an IP address",
                "services[0].frontends[0].port: the text `80` is not a port number (1-65535): \
                 write it without quotes",
                "services[0].frontends[0].kind: `vpi` is not a frontend kind: use vip or node",
                "services[0].backends[0].bogus: unknown field: the fields here are `address`, \
                 `weight`, `state`",
                "services[0].mode: `fast` is not a mode: use nat or dsr",
            ]
        );
    }

    #[test]
    fn a_value_of_the_wrong_kind_brings_no_problem_of_its_own() {
        // What stands in for it while the rest is checked is not reported:
        // a type that is no text is no known type, whose rules are not
        // guessed (not "nodePort: may only be set when type is NodePort").
        let text = SERVICE.replace("type: NodePort", "type: [NodePort]");
        assert_eq!(
            problems(&text),
            ["documents[0] (Service shop/web): spec.type: a list is not a string"]
        );
        // clusterIPs that is no list: not also "clusterIP: required".
        let text = SERVICE.replace(
            "  clusterIP: 198.18.100.1\n",
            "  clusterIPs: 198.18.100.1\n",
        );
        assert_eq!(
            problems(&text),
            [
                "documents[0] (Service shop/web): spec.clusterIPs: the text `198.18.100.1` is not \
                 a list"
            ]
        );
        // Two port numbers that are no numbers: not also "port 0/TCP is
        // already spec.ports[0]".
        let text = SERVICE.replace(
            "    - name: http\n      port: 80\n      nodePort: 30080\n",
            "    - {name: a, port: \"80\", nodePort: 30080}\n    - {name: b, port: x, nodePort: \
             30081}\n",
        );
        assert_eq!(
            problems(&text),
            [
                "documents[0] (Service shop/web): spec.ports[0].port: the text `80` is not a port \
                 number (1-65535): write it without quotes",
                "documents[0] (Service shop/web): spec.ports[1].port: the text `x` is not a port \
                 number (1-65535)",
            ]
        );
        // Natively: a mode that is no text is not nat (so source NAT is not
        // refused for dsr, nor allowed), and a port that is no number is not
        // also out of range.
        let text = web(
            "    mode: [dsr]\n    source_nat: true\n    frontends:\n      - address: \
             198.18.100.1\n        port: \"80\"\n",
        );
        assert_eq!(
            problems(&text),
            [
                "services[0].mode: a list is not a string",
                "services[0].frontends[0].port: the text `80` is not a port number (1-65535): \
                 write it without quotes",
            ]
        );
    }

    #[test]
    fn a_port_left_out_or_empty_is_required_not_zero() {
        // k8s-openapi reads both as 0: not "0 is out of range", nor "port
        // 0/TCP is already spec.ports[0]".
        let text = SERVICE.replace(
            "    - name: http\n      port: 80\n      nodePort: 30080\n",
            "    - {name: a, port: ~, nodePort: 30080}\n    - {name: b, nodePort: 30081}\n    \
             - name: c\n      port:\n      nodePort: 30082\n",
        );
        assert_eq!(
            problems(&text),
            [
                "documents[0] (Service shop/web): spec.ports[0].port: an empty value (null) is \
                 not a port number (1-65535)",
                "documents[0] (Service shop/web): spec.ports[1].port: required",
                "documents[0] (Service shop/web): spec.ports[2].port: an empty value (null) is \
                 not a port number (1-65535)",
            ]
        );
        // As natively.
        let text = web("    frontends:\n      - address: 198.18.100.1\n        port:\n");
        assert_eq!(
            problems(&text),
            ["services[0].frontends[0].port: an empty value (null) is not a port number (1-65535)"]
        );
        // A port written as 0 is what was written.
        let text = SERVICE.replace("port: 80\n", "port: 0\n");
        assert_eq!(
            problems(&text),
            ["documents[0] (Service shop/web): spec.ports[0].port: 0 is out of range 1-65535"]
        );
        // The optional numbers: null is unset, as for the API server. A
        // targetPort is then the port; a nodePort, allocated, which the file
        // cannot do for a NodePort Service.
        let text = SERVICE.replace("  type: NodePort\n", "").replace(
            "      nodePort: 30080\n",
            "      nodePort: ~\n      targetPort: ~\n",
        );
        let m = model(&text);
        let web = &m.services[&ServiceName("shop/web:http".to_owned())];
        assert_eq!(web.frontends.len(), 1);
        let text = SERVICE.replace("nodePort: 30080", "nodePort: ~");
        assert_eq!(
            problems(&text),
            [
                "documents[0] (Service shop/web): spec.ports[0].nodePort: required for a \
                 NodePort Service (there is no allocator here): give a port in 30000-32767"
            ]
        );
    }

    #[test]
    fn a_native_key_written_empty_is_unset_as_if_left_out() {
        let text = web(&format!(
            "    protocol: ~\n    mode:\n    source_nat: ~\n    session_affinity: ~\n\
             {ONE_FRONTEND}        kind: ~\n    backends:\n      - address: 198.18.2.1:8080\n\
             \x20       weight: ~\n        state: ~\n    health_check:\n      type: tcp\n\
             \x20     port: ~\n      interval: ~\n      rise: ~\n"
        ));
        let written = model(&text);
        let left_out = model(&web(&format!(
            "{ONE_FRONTEND}    backends:\n      - address: 198.18.2.1:8080\n    health_check:\n\
             \x20     type: tcp\n"
        )));
        assert_eq!(written, left_out);
    }

    #[test]
    fn wrong_kinds_are_named_in_the_files_words_at_every_level() {
        let service = |spec: &str| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {spec}\n")
        };
        let ports = "ports: [{port: 80}]";
        let slice = |rest: &str| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: \
                 web-1}}\naddressType: IPv4\n{rest}"
            )
        };
        let cases: Vec<(String, &[&str])> = vec![
            (
                "node: [a]\n".to_owned(),
                &["node: a list is not a mapping with `name`, `addresses` and `zone`"],
            ),
            (
                "node: {addresses: 198.18.0.1}\n".to_owned(),
                &["node.addresses: the text `198.18.0.1` is not a list"],
            ),
            (
                "services: [web]\n".to_owned(),
                &[
                    "services[0]: the text `web` is not a service (a mapping with `name`, \
                   `frontends` and the service's other keys)",
                ],
            ),
            (
                web("    frontends: {address: 198.18.100.1}\n"),
                &["services[0].frontends: a mapping is not a list"],
            ),
            (
                web(&format!(
                    "{ONE_FRONTEND}    backends:\n      - address: [198.18.2.1, 80]\n"
                )),
                &[
                    "services[0].backends[0].address: a list is not an address and port, ip:port \
                   (IPv6 quoted, as \"[2001:2::1]:80\")",
                ],
            ),
            (
                web(&format!(
                    "{ONE_FRONTEND}    health_check: {{type: tcp, rise: 1.5, port: \"8080\"}}\n"
                )),
                &[
                    "services[0].health_check.rise: 1.5 is not a whole number",
                    "services[0].health_check.port: the text `8080` is not a port number \
                     (1-65535): write it without quotes",
                ],
            ),
            (
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata: web\nspec: {{clusterIP: \
                     198.18.100.1, {ports}}}\n"
                ),
                &["documents[0] (Service): metadata: the text `web` is not a mapping"],
            ),
            (
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: web, labels: [a]}}\nspec: \
                     {{clusterIP: 198.18.100.1, {ports}}}\n"
                ),
                &["documents[0] (Service default/web): metadata.labels: a list is not a mapping"],
            ),
            (
                service("[a]"),
                &["documents[0] (Service default/web): spec: a list is not a mapping"],
            ),
            (
                service("{clusterIP: 198.18.100.1, ports: {port: 80}}"),
                &["documents[0] (Service default/web): spec.ports: a mapping is not a list"],
            ),
            (
                service("{clusterIP: 198.18.100.1, ports: [{port: 80.5}]}"),
                &[
                    "documents[0] (Service default/web): spec.ports[0].port: 80.5 is not a port \
                   number (1-65535)",
                ],
            ),
            (
                service("{clusterIP: 198.18.100.1, ports: [{port: 99999999999}]}"),
                &[
                    "documents[0] (Service default/web): spec.ports[0].port: 99999999999 is out \
                   of range 1-65535",
                ],
            ),
            (
                service("{clusterIP: 198.18.100.1, ports: [{port: 80, targetPort: [8080]}]}"),
                &[
                    "documents[0] (Service default/web): spec.ports[0].targetPort: a list is not a \
                   port number (1-65535) or name",
                ],
            ),
            (
                service(&format!("{{clusterIP: 5, {ports}}}")),
                &["documents[0] (Service default/web): spec.clusterIP: 5 is not a string"],
            ),
            (
                service(&format!(
                    "{{clusterIP: 198.18.100.1, externalIPs: 198.18.100.2, {ports}}}"
                )),
                &[
                    "documents[0] (Service default/web): spec.externalIPs: the text \
                   `198.18.100.2` is not a list",
                ],
            ),
            (
                service(&format!(
                    "{{clusterIP: 198.18.100.1, sessionAffinity: ClientIP, \
                     sessionAffinityConfig: {{clientIP: {{timeoutSeconds: soon}}}}, {ports}}}"
                )),
                &["documents[0] (Service default/web): \
                   spec.sessionAffinityConfig.clientIP.timeoutSeconds: the text `soon` is not a \
                   whole number of seconds"],
            ),
            (
                service(&format!(
                    "{{clusterIP: 198.18.100.1, allocateLoadBalancerNodePorts: maybe, {ports}}}"
                )),
                &[
                    "documents[0] (Service default/web): spec.allocateLoadBalancerNodePorts: the \
                   text `maybe` is not true or false",
                ],
            ),
            (
                service(&format!("{{clusterIP: 198.18.100.1, 5: x, {ports}}}")),
                &["documents[0] (Service default/web): spec: the key `5` is not a field name"],
            ),
            (
                service(&format!("{{clusterIP: 198.18.100.1, {ports}}}"))
                    + "~: x
",
                &["documents[0] (Service default/web): the key `~` (null) is not a field name"],
            ),
            (
                service(&format!("{{clusterIP: 198.18.100.1, {ports}}}"))
                    + "status: {loadBalancer: {ingress: {ip: 198.18.100.9}}}\n",
                &[
                    "documents[0] (Service default/web): status.loadBalancer.ingress: a mapping is \
                   not a list",
                ],
            ),
            (
                slice("endpoints: {addresses: [198.18.2.1]}\n"),
                &[
                    "documents[0] (EndpointSlice default/web-1): endpoints: a mapping is not a \
                   list",
                ],
            ),
            (
                slice("endpoints: [{addresses: 198.18.2.1, conditions: {ready: 1}}]\n"),
                &[
                    "documents[0] (EndpointSlice default/web-1): endpoints[0].addresses: the \
                     text `198.18.2.1` is not a list",
                    "documents[0] (EndpointSlice default/web-1): endpoints[0].conditions.ready: \
                     1 is not true or false",
                ],
            ),
            (
                slice("endpoints: []\nports: [{port: 99999999999, protocol: 6}]\n"),
                &[
                    "documents[0] (EndpointSlice default/web-1): ports[0].port: 99999999999 is \
                     out of range 1-65535",
                    "documents[0] (EndpointSlice default/web-1): ports[0].protocol: 6 is not a \
                     string",
                ],
            ),
        ];
        for (text, expected) in cases {
            let found = problems(&text);
            assert_eq!(found, expected, "{text}");
            // None of serde's words for Rust's types reaches a message.
            for word in [
                "expected",
                "invalid type",
                "invalid value",
                "i32",
                "i64",
                "sequence",
                "ObjectMeta",
                "IntOrString",
                "field identifier",
                "unit value",
            ] {
                assert!(found.iter().all(|p| !p.contains(word)), "{word}: {found:?}");
            }
        }
    }

    #[test]
    fn a_key_that_is_no_name_and_a_value_that_is_no_mapping_are_named_plainly() {
        assert_eq!(
            problems("~: 1\nservices: []\n"),
            [
                "documents[0]: `~` (null) is not a key name: the native document has `node` and \
              `services`"
            ]
        );
        assert_eq!(
            problems("node: []\n"),
            ["node: a list is not a mapping with `name`, `addresses` and `zone`"]
        );
        assert_eq!(
            problems(&web(
                "    frontends: [198.18.100.1]\n    backends: [\"198.18.2.1:80\"]\n"
            )),
            [
                "services[0].frontends[0]: the text `198.18.100.1` is not a frontend (a mapping \
                 with `address` and `port`)",
                "services[0].backends[0]: the text `198.18.2.1:80` is not a backend (a mapping \
                 with `address`, and `weight` and `state` if wanted)",
            ]
        );
        assert_eq!(
            problems("services: [1]\n"),
            [
                "services[0]: 1 is not a service (a mapping with `name`, `frontends` and the \
                 service's other keys)"
            ]
        );
    }

    #[test]
    fn a_number_wider_than_64_bits_is_out_of_range_like_any_other() {
        // As every other number out of its range, with the range and at its
        // place; and it hides no other problem of its document.
        let text = web("    frontends:
      - address: 198.18.100.300
        port: 12345678901234567890123
    backends:
      - address: 198.18.2.1:80
        weight: 18446744073709551616
      - address: 198.18.2.2:80
        weight: 18446744073709551615
    health_check:
      type: tcp
      rise: -12345678901234567890123
---
services: web
");
        assert_eq!(
            problems(&text),
            [
                "services[0].frontends[0].address: `198.18.100.300` is not an IP address",
                "services[0].frontends[0].port: 12345678901234567890123 is out of range 1-65535",
                "services[0].backends[0].weight: 18446744073709551616 is out of range 1-10000",
                // Wider than a signed 64-bit number only.
                "services[0].backends[1].weight: 18446744073709551615 is out of range 1-10000",
                "services[0].health_check.rise: -12345678901234567890123 is out of range 1-100",
                // The next document is still read.
                "documents[1]: a second native document (the first is documents[0]): put every \
                 service in one",
            ]
        );
        // Where no number goes, it is named as any other value.
        assert_eq!(
            problems(
                "services:\n  - name: 12345678901234567890123\n    frontends: []\n    \
                 99999999999999999999999: x\n"
            ),
            [
                "services[0]: the key `99999999999999999999999` is not a field name",
                "services[0].name: 12345678901234567890123 is not a string",
                "services[0].frontends: a service needs at least one frontend (address and port)",
            ]
        );
        let service = SERVICE.replace("port: 80", "port: 12345678901234567890123");
        assert_eq!(
            problems(&service),
            [
                "documents[0] (Service shop/web): spec.ports[0].port: 12345678901234567890123 is \
                 out of range 1-65535"
            ]
        );
    }

    #[test]
    fn affinity_problems() {
        let case = |affinity: &str| {
            problems(&web(&format!(
                "{ONE_FRONTEND}    session_affinity:\n{affinity}"
            )))
        };
        assert_eq!(
            case("      type: cookie\n"),
            [
                "services[0].session_affinity.type: `cookie` is not a session affinity: use \
              client_ip (or leave session_affinity out)"
            ]
        );
        assert_eq!(
            case("      type: client_ip\n      timeout: 0s\n"),
            ["services[0].session_affinity.timeout: `0s` is out of range 1s-1day"]
        );
        assert_eq!(
            case("      type: client_ip\n      timeout: 86401s\n"),
            ["services[0].session_affinity.timeout: `86401s` is out of range 1s-1day"]
        );
        assert_eq!(
            case("      type: client_ip\n      timeout: 1500ms\n"),
            ["services[0].session_affinity.timeout: `1500ms` is not a whole number of seconds"]
        );
        assert_eq!(
            case("      type: client_ip\n      timeout: soon\n"),
            [
                "services[0].session_affinity.timeout: `soon` is not a duration (expected number \
              at 0): write it like 2s, 500ms or 3h"
            ]
        );
        let m = model(&web(&format!(
            "{ONE_FRONTEND}    session_affinity:\n      type: client_ip\n      timeout: 86400s\n"
        )));
        assert_eq!(
            m.services[&ServiceName("web".to_owned())].affinity,
            Some(Affinity {
                timeout: Duration::from_secs(86_400)
            })
        );
    }

    #[test]
    fn health_check_problems() {
        let case =
            |check: &str| problems(&web(&format!("{ONE_FRONTEND}    health_check:\n{check}")));
        assert_eq!(
            case("      type: http\n"),
            [
                "services[0].health_check.path: required for an http check: the path to GET, like \
              /healthz"
            ]
        );
        assert_eq!(
            case("      type: tcp\n      path: /healthz\n"),
            [
                "services[0].health_check.path: only an http check has a path: remove it or use \
              type: http"
            ]
        );
        assert_eq!(
            case("      type: http\n      path: healthz\n"),
            [
                "services[0].health_check.path: `healthz` is not a request path: it starts with \
              '/' and has no spaces or control characters"
            ]
        );
        assert_eq!(
            case("      type: icmp\n"),
            ["services[0].health_check.type: `icmp` is not a health check type: use tcp or http"]
        );
        assert_eq!(
            case(
                "      type: tcp\n      port: 0\n      interval: 50ms\n      rise: 0\n      fall: 101\n"
            ),
            [
                "services[0].health_check.port: 0 is out of range 1-65535",
                "services[0].health_check.interval: `50ms` is out of range 100ms-1h",
                "services[0].health_check.rise: 0 is out of range 1-100",
                "services[0].health_check.fall: 101 is out of range 1-100",
            ]
        );
        // Durations are echoed as written; a default is named as one, and
        // the problem is that of what was written.
        assert_eq!(
            case("      type: tcp\n      interval: 1s\n      timeout: 1000ms\n"),
            ["services[0].health_check.timeout: `1000ms` must be shorter than the interval (`1s`)"]
        );
        assert_eq!(
            case("      type: tcp\n      timeout: 1m 30s\n"),
            [
                "services[0].health_check.timeout: `1m 30s` must be shorter than the interval (2s, the default)"
            ]
        );
        assert_eq!(
            case("      type: tcp\n      interval: 1s\n"),
            [
                "services[0].health_check.interval: `1s` must be longer than the timeout (1s, the default)"
            ]
        );
        assert_eq!(
            case("      type: tcp\n      interval: 2h\n"),
            ["services[0].health_check.interval: `2h` is out of range 100ms-1h"]
        );
    }

    #[test]
    fn problems_of_every_service_are_reported_together() {
        let text = "
services:
  - name: a
    frontends:
      - address: 198.18.100.1
        port: 70000
  - name: b
    frontends:
      - address: 198.18.100.2
        port: 80
    backends:
      - address: 198.18.2.1:80
        weight: 0
  - name: c
    frontends:
      - address: 198.18.100.3
        port: 80
    backends:
      - address: 198.18.2.3:8080
    mode: dsr
";
        assert_eq!(
            problems(text),
            [
                "services[0].frontends[0].port: 70000 is out of range 1-65535",
                "services[1].backends[0].weight: 0 is not a weight (1-10000): to stop new flows \
                 to a backend, set state: draining",
                "services[2].backends[0].address: a dsr backend serves its frontends' port 80, \
                 not 8080: the packet reaches it unchanged",
            ]
        );
    }

    #[test]
    fn a_frontend_is_unique_across_services_naming_both_places() {
        let text = "
services:
  - name: a
    frontends:
      - address: 198.18.100.1
        port: 80
  - name: b
    frontends:
      - address: 198.18.100.2
        port: 80
      - address: 198.18.100.1
        port: 80
  - name: c
    protocol: UDP
    frontends:
      - address: 198.18.100.1
        port: 80
";
        assert_eq!(
            problems(text),
            [
                "services[1].frontends[1]: 198.18.100.1:80/TCP is already a frontend of service a \
              (services[0].frontends[0])"
            ]
        );
    }

    #[test]
    fn an_address_is_either_a_vip_or_a_node_address() {
        let text = "
node:
  name: node-a
  addresses: [198.18.0.10, 198.18.0.11]
services:
  - name: a
    frontends:
      - address: 198.18.0.10
        port: 30080
        kind: node
  - name: b
    frontends:
      - address: 198.18.0.11
        port: 80
  - name: c
    frontends:
      - address: 198.18.100.1
        port: 80
  - name: d
    frontends:
      - address: 198.18.100.1
        port: 30081
        kind: node
";
        assert_eq!(
            problems(text),
            [
                "services[1].frontends[0]: 198.18.0.11 is used as a vip here but is a node \
                 address in node.addresses[1]: an address is either a vip or a node address",
                "services[3].frontends[0]: 198.18.100.1 is used as a node address here but is a \
                 vip in services[2].frontends[0]: an address is either a vip or a node address",
            ]
        );
    }

    #[test]
    fn a_backend_is_not_a_vip_nor_a_frontend_of_the_file() {
        let text = "
node:
  name: node-a
  addresses: [198.18.0.10]
services:
  - name: a
    frontends:
      - address: 198.18.100.1
        port: 80
    backends:
      - address: 198.18.100.1:80
      - address: 198.18.100.2:8080
      - address: 198.18.2.1:80
  - name: b
    frontends:
      - address: 198.18.100.2
        port: 80
      - address: 198.18.0.10
        port: 30080
        kind: node
    backends:
      - address: 198.18.0.10:30080
      # A process of the node itself, as a hostNetwork pod is.
      - address: 198.18.0.10:8080
";
        assert_eq!(
            problems(text),
            [
                "services[0].backends[0].address: 198.18.100.1:80 is on 198.18.100.1, a vip \
                 (services[0].frontends[0]): what is sent to a vip comes back to xlb, so give \
                 the backend's own address",
                "services[0].backends[1].address: 198.18.100.2:8080 is on 198.18.100.2, a vip \
                 (services[1].frontends[0]): what is sent to a vip comes back to xlb, so give \
                 the backend's own address",
                "services[1].backends[0].address: 198.18.0.10:30080 is the frontend \
                 198.18.0.10:30080/TCP of service b (services[1].frontends[1]): what is sent to \
                 it is balanced again, so give the backend's own address and port",
            ]
        );
    }

    #[test]
    fn an_endpoint_is_not_a_vip_nor_a_frontend_of_the_file() {
        let slice = SLICE.replace(
            "  - addresses: [198.18.2.1]\n",
            "  - addresses: [198.18.2.1]
  - addresses: [198.18.100.2]
  - addresses: [198.18.0.10]
",
        );
        let text = format!("{NATIVE}---\n{SERVICE}---\n{slice}");
        assert_eq!(
            problems(&text),
            [
                "documents[2] (EndpointSlice shop/web-abc): endpoints[1].addresses[0]: \
                 198.18.100.2 is a vip (services[0].frontends[0]): what is sent to a vip comes \
                 back to xlb, so give the pod's own address"
            ]
        );
        // The node's own address serves a hostNetwork pod, but not on a port
        // that is a frontend.
        let host_network = slice
            .replace("  - addresses: [198.18.100.2]\n", "")
            .replace("port: 8080", "port: 30080");
        assert_eq!(
            problems(&format!("{NATIVE}---\n{SERVICE}---\n{host_network}")),
            [
                "documents[2] (EndpointSlice shop/web-abc): endpoints[1].addresses[0]: \
                 198.18.0.10:30080 (ports[0]) is the frontend 198.18.0.10:30080/TCP of service \
                 shop/web:http (documents[1] (Service shop/web): frontend 198.18.0.10:30080/TCP \
                 of shop/web:http): what is sent to it is balanced again, so give the pod's own \
                 address and port"
            ]
        );
        let loaded = parse_with_warnings(&format!(
            "{NATIVE}---\n{SERVICE}---\n{}",
            slice.replace("  - addresses: [198.18.100.2]\n", "")
        ))
        .unwrap();
        assert_eq!(
            loaded.model.services[&ServiceName("shop/web:http".to_owned())]
                .backends
                .iter()
                .map(|b| b.addr.to_string())
                .collect::<Vec<_>>(),
            ["198.18.0.10:8080", "198.18.2.1:8080"]
        );
    }

    #[test]
    fn node_problems() {
        let text = "
node:
  name: Node_A
  addresses: [198.18.0.10, 198.18.0.10, 127.0.0.1]
  zone: -a
  region: a
";
        let values = [
            "node.name: `Node_A` is not a DNS subdomain (RFC 1123): lowercase letters, \
             digits, '-' and '.', starting and ending with a letter or digit",
            "node.addresses[1]: 198.18.0.10 is already node.addresses[0]",
            "node.addresses[2]: 127.0.0.1 is a loopback address (127.0.0.0/8): give a \
             unicast address",
            "node.zone: `-a` is not a label value: letters, digits, '-', '_' and '.', \
             starting and ending with a letter or digit",
        ];
        // An unknown key hides none of the others, and comes in the order
        // of the file, last.
        assert_eq!(
            problems(text),
            values
                .into_iter()
                .chain([
                    "node.region: unknown field: the fields here are `name`, `addresses`, `zone`"
                ])
                .collect::<Vec<_>>()
        );
        assert_eq!(problems(&text.replace("  region: a\n", "")), values);
    }

    // --- Documents --------------------------------------------------------

    const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: NodePort
  clusterIP: 198.18.100.1
  ports:
    - name: http
      port: 80
      nodePort: 30080
";

    const SLICE: &str = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
  - name: http
    port: 8080
endpoints:
  - addresses: [198.18.2.1]
    conditions: {ready: true}
";

    const NATIVE: &str = "node:
  name: node-a
  addresses: [198.18.0.10]
services:
  - name: api
    frontends:
      - address: 198.18.100.2
        port: 443
";

    #[test]
    fn native_and_kubernetes_documents_make_one_model() {
        let loaded = parse_with_warnings(&format!("{NATIVE}---\n{SERVICE}---\n{SLICE}")).unwrap();
        let names: Vec<&str> = loaded.model.services.keys().map(|k| k.0.as_str()).collect();
        assert_eq!(names, ["api", "shop/web:http"]);
        let web = &loaded.model.services[&ServiceName("shop/web:http".to_owned())];
        assert_eq!(
            web.frontends
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["198.18.0.10:30080/TCP", "198.18.100.1:80/TCP"]
        );
        assert_eq!(
            web.backends
                .iter()
                .map(|b| b.addr)
                .collect::<Vec<SocketAddr>>(),
            ["198.18.2.1:8080".parse::<SocketAddr>().unwrap()]
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn the_node_zone_selects_the_endpoints_hinted_for_it() {
        let service = SERVICE.replace("spec:\n", "spec:\n  trafficDistribution: PreferClose\n");
        let slice = SLICE.replace(
            "    conditions: {ready: true}\n",
            "    conditions: {ready: true}
    hints: {forZones: [{name: zone-a}]}
  - addresses: [198.18.2.2]
    hints: {forZones: [{name: zone-b}]}
",
        );
        let backends = |node: &str| {
            let loaded = parse_with_warnings(&format!("{node}---\n{service}---\n{slice}"))
                .expect("a valid file");
            loaded.model.services[&ServiceName("shop/web:http".to_owned())]
                .backends
                .iter()
                .map(|b| b.addr.to_string())
                .collect::<Vec<_>>()
        };
        let node = "node: {name: node-a, addresses: [198.18.0.10], zone: zone-b}\n";
        assert_eq!(backends(node), ["198.18.2.2:8080"]);
        assert_eq!(
            backends(&node.replace(", zone: zone-b", "")),
            ["198.18.2.1:8080", "198.18.2.2:8080"],
            "without a zone, every endpoint"
        );
    }

    #[test]
    fn kubernetes_documents_alone_and_in_a_list() {
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n{}{}",
            indent_item(SERVICE),
            indent_item(SLICE)
        );
        let loaded = parse_with_warnings(&list).unwrap();
        assert_eq!(
            loaded
                .model
                .services
                .keys()
                .map(|k| k.0.as_str())
                .collect::<Vec<_>>(),
            ["shop/web:http"]
        );
        assert_eq!(
            loaded.warnings,
            [
                "NodePort frontends are not created: the native document has no `node:` with \
                 this node's addresses",
                "documents[0].items[0] (Service shop/web): shop/web:http: nodePort 30080/TCP not \
                 served: the node has no IPv4 address",
            ]
        );
    }

    fn indent_item(document: &str) -> String {
        let mut out = String::new();
        for (i, line) in document.lines().enumerate() {
            let prefix = if i == 0 { "  - " } else { "    " };
            let _ = writeln!(out, "{prefix}{line}");
        }
        out
    }

    #[test]
    fn document_kinds_that_are_not_supported() {
        let text = "services: []
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
services: []
---
- a list
---
apiVersion: v1
kind: Endpoints
---
apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
---
apiVersion: v2
kind: Service
---
kind: Service
---
apiVersion: v1
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ConfigMap
  - apiVersion: v1
    kind: List
    items: []
---
kind: Service
apiVerison: v1
---
apiVersion: v1
knid: Service
";
        assert_eq!(
            problems(text),
            [
                "documents[1]: kind `Deployment` (`apps/v1`) is not supported: a document is the \
                 native format, a v1 Service, a discovery.k8s.io/v1 EndpointSlice or a v1 List \
                 of them",
                "documents[2]: a second native document (the first is documents[0]): put every \
                 service in one",
                "documents[3]: not a mapping: a document is the native format (node:, \
                 services:) or a Kubernetes object (apiVersion:, kind:)",
                "documents[4]: kind Endpoints is not supported: write EndpointSlices \
                 (discovery.k8s.io/v1), which is what xlb reads",
                "documents[5].apiVersion: `discovery.k8s.io/v1beta1` is not supported for an \
                 EndpointSlice: use discovery.k8s.io/v1",
                "documents[6].apiVersion: `v2` is not the apiVersion of a Service: use v1",
                "documents[7].apiVersion: required: v1 for a Service or List, \
                 discovery.k8s.io/v1 for an EndpointSlice",
                "documents[8].kind: required: Service, EndpointSlice or List",
                "documents[9].items[0]: kind `ConfigMap` (`v1`) is not supported in a List: a \
                 document is the native format, a v1 Service, a discovery.k8s.io/v1 \
                 EndpointSlice",
                "documents[9].items[1]: a List cannot hold a List: put its items in the outer \
                 one",
                // A required key left out, and one close to it: one problem.
                "documents[10].apiVerison: unknown field, did you mean `apiVersion`? \
                 (`apiVersion` is required: v1 for a Service or List, discovery.k8s.io/v1 for an \
                 EndpointSlice)",
                "documents[11].knid: unknown field, did you mean `kind`? (`kind` is required: \
                 Service, EndpointSlice or List)",
            ]
        );
    }

    #[test]
    fn kubernetes_problems_name_the_document_and_the_field() {
        let bad_port = SERVICE.replace("port: 80\n", "port: 70000\n");
        let bad_type = SERVICE.replace("nodePort: 30080", "nodePort: thirty");
        let bad_slice = SLICE.replace("[198.18.2.1]", "[198.18.2.1, \"2001:2::1\"]");
        let text = format!("{bad_port}---\n{bad_type}---\n{bad_slice}");
        assert_eq!(
            problems(&text),
            [
                "documents[0] (Service shop/web): spec.ports[0].port: 70000 is out of range \
                 1-65535",
                "documents[1] (Service shop/web): spec.ports[0].nodePort: the text `thirty` is \
                 not a node port (30000-32767)",
                "documents[2] (EndpointSlice shop/web-abc): endpoints[0].addresses[1]: 2001:2::1 \
                 is IPv6 but addressType is IPv4",
            ]
        );
    }

    #[test]
    fn a_service_type_that_is_not_known_hides_no_other_problem() {
        let text = SERVICE
            .replace("type: NodePort", "type: NodePrt")
            .replace("198.18.100.1", "198.18.100.300")
            .replace("port: 80\n", "port: 70000\n");
        assert_eq!(
            problems(&text),
            [
                "documents[0] (Service shop/web): spec.type: `NodePrt` is not a service type: use \
                 ClusterIP, NodePort, LoadBalancer or ExternalName",
                "documents[0] (Service shop/web): spec.clusterIP: `198.18.100.300` is not an IP \
                 address",
                "documents[0] (Service shop/web): spec.ports[0].port: 70000 is out of range \
                 1-65535",
            ]
        );
    }

    #[test]
    fn unknown_kubernetes_fields_are_errors_like_kubectl_strict_validation() {
        let text = SERVICE
            .replace(
                "  type: NodePort\n",
                "  type: NodePort\n  externalTraficPolicy: Local\n",
            )
            .replace(
                "      nodePort: 30080\n",
                "      nodePort: 30080\n      nodeport: 30081\n",
            )
            .replace(
                "  namespace: shop\n",
                "  namespace: shop\n  creationTimestamp: null\n",
            );
        assert_eq!(
            problems(&text),
            [
                "documents[0] (Service shop/web): spec.externalTraficPolicy: unknown field (not \
                 in the Kubernetes 1.33 API)",
                "documents[0] (Service shop/web): spec.ports[0].nodeport: unknown field (not in \
                 the Kubernetes 1.33 API)",
            ]
        );
    }

    #[test]
    fn an_unknown_kubernetes_field_close_to_a_required_one_left_out_is_one_problem() {
        let text = SERVICE.replace("      port: 80\n", "      prot: 80\n");
        assert_eq!(
            problems(&text),
            [
                "documents[0] (Service shop/web): spec.ports[0].prot: unknown field, did you mean \
                 `port`? (`port` is required)"
            ]
        );
    }

    #[test]
    fn a_kubernetes_object_is_defined_once() {
        let text = format!("{SERVICE}---\n{SERVICE}");
        assert_eq!(
            problems(&text),
            [
                "documents[1] (Service shop/web): metadata.name: Service shop/web is already \
              defined by documents[0]"
            ]
        );
    }

    #[test]
    fn kubernetes_frontends_clash_with_native_ones() {
        // On an external IP, which native services and Kubernetes ones may
        // share on other ports: not on the same one.
        let external = SERVICE.replace(
            "  type: NodePort\n",
            "  type: NodePort\n  externalIPs: [198.18.100.2]\n",
        );
        let native = NATIVE.replace("port: 443", "port: 80");
        assert_eq!(
            problems(&format!("{native}---\n{external}")),
            [
                "documents[1] (Service shop/web): frontend 198.18.100.2:80/TCP of shop/web:http: \
                 198.18.100.2:80/TCP is already a frontend of service api (services[0].frontends[0])"
            ]
        );
        let loaded = parse_with_warnings(&format!("{NATIVE}---\n{external}")).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let frontends: Vec<String> = loaded
            .model
            .services
            .values()
            .flat_map(|s| &s.frontends)
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            frontends,
            [
                "198.18.100.2:443/TCP",
                "198.18.0.10:30080/TCP",
                "198.18.100.1:80/TCP",
                "198.18.100.2:80/TCP"
            ]
        );
    }

    #[test]
    fn a_cluster_ip_is_no_native_vip_on_any_port() {
        let text = |native: &str| format!("{native}---\n{SERVICE}");
        let expected = "services[0].frontends[1].address: 198.18.100.1 is documents[1] (Service \
                        shop/web): spec.clusterIP: a clusterIP belongs to one Service, so it is no \
                        native vip";
        // On another port, and on the Service's own port: one problem, for
        // the address (not also the frontend's).
        for port in [443, 80] {
            let native = NATIVE.replace(
                "        port: 443\n",
                &format!(
                    "        port: 443\n      - address: 198.18.100.1\n        port: {port}\n"
                ),
            );
            assert_eq!(problems(&text(&native)), [expected], "port {port}");
        }
        // Either address of a dual-stack Service, whichever document comes
        // first.
        let dual = SERVICE.replace(
            "  clusterIP: 198.18.100.1\n",
            "  clusterIPs: [198.18.100.1, \"2001:2::1:10\"]\n  ipFamilyPolicy: PreferDualStack\n",
        );
        let native = NATIVE.replace(
            "services:\n",
            "services:\n  - name: v6\n    frontends:\n      \
             - {address: \"2001:2::1:10\", port: 53}\n",
        );
        assert_eq!(
            problems(&format!("{dual}---\n{native}")),
            [
                "services[0].frontends[0].address: 2001:2::1:10 is documents[0] (Service \
                 shop/web): spec.clusterIPs[1]: a clusterIP belongs to one Service, so it is no \
                 native vip"
            ]
        );
        // Native services share a vip on their ports, as before.
        let shared = NATIVE.replace(
            "services:\n",
            "services:\n  - name: admin\n    frontends:\n      \
             - {address: 198.18.100.2, port: 8443}\n",
        );
        let model = model(&text(&shared));
        assert_eq!(model.services.len(), 3);
    }

    #[test]
    fn a_cluster_ip_is_no_node_address() {
        let on_node = SERVICE.replace("198.18.100.1", "198.18.0.10");
        assert_eq!(
            problems(&format!("{NATIVE}---\n{on_node}")),
            [
                "documents[1] (Service shop/web): spec.clusterIP: 198.18.0.10 is \
                 node.addresses[0]: an address is either a vip or a node address"
            ]
        );
        let dual = SERVICE.replace(
            "  clusterIP: 198.18.100.1\n",
            "  clusterIPs: [198.18.100.1, \"2001:2::10\"]\n  ipFamilyPolicy: PreferDualStack\n",
        );
        let node = NATIVE.replace("[198.18.0.10]", "[198.18.0.10, \"2001:2::10\"]");
        assert_eq!(
            problems(&format!("{node}---\n{dual}")),
            [
                "documents[1] (Service shop/web): spec.clusterIPs[1]: 2001:2::10 is \
                 node.addresses[1]: an address is either a vip or a node address"
            ]
        );
    }

    #[test]
    fn a_health_check_node_port_is_no_other_services_node_port() {
        // A LoadBalancer Service with externalTrafficPolicy Local and its
        // healthCheckNodePort.
        let local = |name: &str, ip: &str, node_port: u16, health: u16| {
            SERVICE
                .replace("name: web", &format!("name: {name}"))
                .replace("198.18.100.1", ip)
                .replace(
                    "type: NodePort",
                    "type: LoadBalancer\n  externalTrafficPolicy: Local",
                )
                .replace("nodePort: 30080", &format!("nodePort: {node_port}"))
                + &format!("  healthCheckNodePort: {health}\n")
        };
        let apart = format!(
            "{NATIVE}---\n{}---\n{}",
            local("web", "198.18.100.1", 30080, 30090),
            local("api", "198.18.100.3", 30081, 30091)
        );
        assert!(parse(&apart).is_ok(), "{:?}", parse(&apart));
        // On another Service's nodePort, and on its healthCheckNodePort.
        // Services are taken in name order (as translate takes them): the
        // problem is the later one's.
        for (node_port, health, first) in [
            (
                30081,
                30080,
                "documents[1] (Service shop/api): spec.ports[0].nodePort",
            ),
            (
                30081,
                30090,
                "documents[1] (Service shop/api): spec.healthCheckNodePort",
            ),
        ] {
            let text = format!(
                "{NATIVE}---\n{}---\n{}",
                local("api", "198.18.100.3", 30080, 30090),
                local("web", "198.18.100.1", node_port, health)
            );
            assert_eq!(
                problems(&text),
                [format!(
                    "documents[2] (Service shop/web): spec.healthCheckNodePort: {health} is \
                     already {first}: a node port serves one Service"
                )]
            );
        }
    }

    #[test]
    fn two_kubernetes_services_on_one_frontend_are_an_error_unless_it_is_an_external_ip() {
        // Claimed in name order, as translate settles them: the name that
        // sorts last is the one with a problem.
        let api = |spec: &str| {
            SERVICE
                .replace("name: web", "name: api")
                .replace("198.18.100.1", spec)
        };
        let other_node_port = |text: String| text.replace("nodePort: 30080", "nodePort: 30081");
        // The same clusterIP and port: one problem, for the clusterIP (see
        // a_cluster_ip_belongs_to_one_service), not one for each port too.
        let same_cluster_ip = other_node_port(api("198.18.100.1"));
        assert_eq!(
            problems(&format!("{NATIVE}---\n{SERVICE}---\n{same_cluster_ip}")),
            [
                "documents[1] (Service shop/web): spec.clusterIP: 198.18.100.1 is already \
                 documents[2] (Service shop/api): spec.clusterIP: a clusterIP belongs to one \
                 Service"
            ]
        );
        let api_node_port = other_node_port(api("198.18.100.3"));
        assert!(parse(&format!("{NATIVE}---\n{SERVICE}---\n{api_node_port}")).is_ok());
        // The same nodePort.
        assert_eq!(
            problems(&format!(
                "{NATIVE}---\n{SERVICE}---\n{}",
                api("198.18.100.3")
            )),
            [
                "documents[1] (Service shop/web): frontend 198.18.0.10:30080/TCP of \
                 shop/web:http: 198.18.0.10:30080/TCP is already a frontend of service \
                 shop/api:http (documents[2] (Service shop/api): frontend 198.18.0.10:30080/TCP \
                 of shop/api:http): two Kubernetes Services share a frontend only on an external \
                 IP"
            ]
        );
        // One's clusterIP, the other's external IP.
        let external = api_node_port.replace(
            "  type: NodePort\n",
            "  type: NodePort\n  externalIPs: [198.18.100.1]\n",
        );
        assert_eq!(
            problems(&format!("{NATIVE}---\n{SERVICE}---\n{external}")),
            [
                "documents[1] (Service shop/web): frontend 198.18.100.1:80/TCP of shop/web:http: \
                 198.18.100.1:80/TCP is already a frontend of service shop/api:http \
                 (documents[2] (Service shop/api): frontend 198.18.100.1:80/TCP of \
                 shop/api:http): two Kubernetes Services share a frontend only on an external IP"
            ]
        );
    }

    #[test]
    fn a_cluster_ip_belongs_to_one_service() {
        let api = |cluster_ip: &str| {
            SERVICE
                .replace("name: web", "name: api")
                .replace("  clusterIP: 198.18.100.1\n", cluster_ip)
                .replace("port: 80\n", "port: 81\n")
                .replace("nodePort: 30080", "nodePort: 30081")
        };
        // On other ports, where no frontend clashes: the API server's
        // allocator gives a clusterIP to one Service. In name order, as the
        // other checks across Services: the later one has the problem.
        let text = format!(
            "{NATIVE}---\n{SERVICE}---\n{}",
            api("  clusterIP: 198.18.100.1\n")
        );
        assert_eq!(
            problems(&text),
            [
                "documents[1] (Service shop/web): spec.clusterIP: 198.18.100.1 is already \
                 documents[2] (Service shop/api): spec.clusterIP: a clusterIP belongs to one \
                 Service"
            ]
        );
        // Either address of a dual-stack Service, written another way.
        let dual = api(
            "  clusterIPs: [198.18.100.3, \"2001:2::1:10\"]\n  ipFamilyPolicy: PreferDualStack\n",
        );
        let also_v6 = SERVICE.replace("198.18.100.1", "\"2001:2:0:0::1:10\"");
        assert_eq!(
            problems(&format!("{NATIVE}---\n{dual}---\n{also_v6}")),
            [
                "documents[2] (Service shop/web): spec.clusterIP: 2001:2::1:10 is already \
                 documents[1] (Service shop/api): spec.clusterIPs[1]: a clusterIP belongs to one \
                 Service"
            ]
        );
        // Headless Services have no clusterIP to share.
        let headless = |name: &str| {
            SERVICE
                .replace("name: web", &format!("name: {name}"))
                .replace("198.18.100.1", "None")
                .replace("  type: NodePort\n", "")
                .replace("      nodePort: 30080\n", "")
        };
        let text = format!("{}---\n{}", headless("web"), headless("api"));
        assert!(parse(&text).is_ok(), "{:?}", parse(&text));
        // The Kubernetes mode serves what the API server holds, as it is:
        // both Services, each on its port.
        let objects: Vec<KubeService> = [SERVICE.to_owned(), api("  clusterIP: 198.18.100.1\n")]
            .iter()
            .map(|text| serde_yaml_ng::from_str(text).unwrap())
            .collect();
        let translation = translate(
            &objects,
            &[],
            &NodeInfo::default(),
            &TranslateOptions::default(),
        );
        assert_eq!(
            translation
                .model
                .services
                .values()
                .flat_map(|s| &s.frontends)
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["198.18.100.1:81/TCP", "198.18.100.1:80/TCP"]
        );
    }

    #[test]
    fn two_kubernetes_services_may_share_an_external_ip_as_in_the_api() {
        let external = |name: &str, cluster_ip: &str| {
            SERVICE
                .replace("name: web", &format!("name: {name}"))
                .replace("198.18.100.1", cluster_ip)
                .replace("  type: NodePort\n", "  externalIPs: [198.18.201.1]\n")
                .replace("      nodePort: 30080\n", "")
        };
        let text = format!(
            "{NATIVE}---\n{}---\n{}",
            external("web", "198.18.100.1"),
            external("api", "198.18.100.3")
        );
        let loaded = parse_with_warnings(&text).unwrap();
        assert_eq!(
            loaded.warnings,
            [
                "documents[1] (Service shop/web): shop/web:http: frontend 198.18.201.1:80/TCP is \
                 already served by shop/api:http; skipped"
            ]
        );
        let frontends = |name: &str| {
            loaded.model.services[&ServiceName(name.to_owned())]
                .frontends
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            frontends("shop/api:http"),
            ["198.18.100.3:80/TCP", "198.18.201.1:80/TCP"]
        );
        assert_eq!(frontends("shop/web:http"), ["198.18.100.1:80/TCP"]);
    }

    #[test]
    fn warnings_for_objects_that_are_not_used() {
        let orphan = SLICE.replace("service-name: web", "service-name: db");
        let unlabelled = SLICE
            .replace("  labels:\n    kubernetes.io/service-name: web\n", "")
            .replace("web-abc", "web-def");
        let other_proxy = SERVICE.replace(
            "  namespace: shop\n",
            "  namespace: shop\n  labels:\n    service.kubernetes.io/service-proxy-name: other\n",
        );
        let text = format!("{NATIVE}---\n{orphan}---\n{unlabelled}---\n{other_proxy}");
        let loaded = parse_with_warnings(&text).unwrap();
        assert_eq!(
            loaded.warnings,
            [
                "documents[1] (EndpointSlice shop/web-abc): no Service `shop/db` in this file, so \
                 its endpoints are unused",
                "documents[2] (EndpointSlice shop/web-def): no kubernetes.io/service-name \
                 label, so no Service uses its endpoints",
                "documents[3] (Service shop/web): labelled for another proxy \
                 (service.kubernetes.io/service-proxy-name or service.kubernetes.io/headless), \
                 so not served",
            ]
        );
        assert_eq!(
            loaded
                .model
                .services
                .keys()
                .map(|k| k.0.as_str())
                .collect::<Vec<_>>(),
            ["api"]
        );
    }

    #[test]
    fn a_warning_is_one_line_whatever_the_file_holds() {
        let orphan = SLICE.replace("service-name: web", "service-name: \"db\\nforged\"");
        let loaded = parse_with_warnings(&format!("{NATIVE}---\n{orphan}")).unwrap();
        assert_eq!(
            loaded.warnings,
            [
                "documents[1] (EndpointSlice shop/web-abc): no Service `shop/db\\nforged` in this \
                 file, so its endpoints are unused"
            ]
        );
    }

    #[test]
    fn warnings_for_slices_that_match_no_port_of_their_service() {
        let slice = |name: &str, family: &str, ports: &str| {
            SLICE
                .replace("web-abc", name)
                .replace("addressType: IPv4", &format!("addressType: {family}"))
                .replace("ports:\n  - name: http\n    port: 8080\n", ports)
        };
        let v6 = slice("web-v6", "IPv6", "ports:\n  - name: http\n    port: 8080\n")
            .replace("[198.18.2.1]", "[\"2001:2::2:1\"]");
        let slices = [
            slice(
                "web-name",
                "IPv4",
                "ports:\n  - name: metrics\n    port: 9090\n",
            ),
            slice(
                "web-proto",
                "IPv4",
                "ports:\n  - name: http\n    port: 8080\n    protocol: UDP\n",
            ),
            v6,
            slice("web-nameless", "IPv4", "ports:\n  - port: 8080\n"),
            slice("web-no-number", "IPv4", "ports:\n  - name: http\n"),
            slice("web-no-ports", "IPv4", ""),
            // Matches: no warning.
            SLICE.to_owned(),
        ];
        let text = format!("{NATIVE}---\n{SERVICE}---\n{}", slices.join("---\n"));
        let loaded = parse_with_warnings(&text).unwrap();
        assert_eq!(
            loaded.warnings,
            [
                "documents[2] (EndpointSlice shop/web-name): matches no port of Service shop/web \
                 (`http`/TCP), so its endpoints are unused: ports[0] is `metrics`/TCP",
                "documents[3] (EndpointSlice shop/web-proto): matches no port of Service \
                 shop/web (`http`/TCP), so its endpoints are unused: ports[0] is `http`/UDP",
                "documents[4] (EndpointSlice shop/web-v6): matches no port of Service shop/web \
                 (`http`/TCP), so its endpoints are unused: its addressType is IPv6 and the \
                 Service has no IPv6 clusterIP",
                "documents[5] (EndpointSlice shop/web-nameless): matches no port of Service \
                 shop/web (`http`/TCP), so its endpoints are unused: ports[0] is unnamed/TCP",
                "documents[6] (EndpointSlice shop/web-no-number): matches no port of Service \
                 shop/web (`http`/TCP), so its endpoints are unused: ports[0] (`http`/TCP) has \
                 no port number",
                "documents[7] (EndpointSlice shop/web-no-ports): matches no port of Service \
                 shop/web (`http`/TCP), so its endpoints are unused: it has no ports",
            ]
        );
        assert_eq!(
            loaded.model.services[&ServiceName("shop/web:http".to_owned())]
                .backends
                .len(),
            1
        );
    }

    #[test]
    fn a_syntax_error_names_its_document_and_line() {
        assert_eq!(
            problems("services: []\n---\nservices: [\n"),
            [
                "documents[1]: did not find expected node content at line 4 column 1, while \
              parsing a flow node"
            ]
        );
    }

    #[test]
    fn an_unquoted_bracketed_ipv6_address_is_told_to_be_quoted() {
        // YAML reads `[` as the start of a list: the parser's error is about
        // the `:` after it.
        let backend = |line: &str| {
            problems(&web(&format!(
                "    frontends:\n      - address: 2001:2::100\n        port: 443\n    \
                 backends:\n{line}\n"
            )))
        };
        assert_eq!(
            backend("      - address: [2001:2::2:1]:8443"),
            [
                "documents[0]: did not find expected key at line 7 column 31, while parsing a \
                 block mapping at line 7 column 9; `[2001:2::2:1]:8443` unquoted is a YAML list: \
                 quote it, `address: \"[2001:2::2:1]:8443\"`"
            ]
        );
        assert_eq!(
            backend("      - {address: [2001:2::2:1]:8443, weight: 2} # a comment"),
            [
                "documents[0]: did not find expected ',' or '}' at line 7 column 32, while \
                 parsing a flow mapping at line 7 column 9; `[2001:2::2:1]:8443` unquoted is a \
                 YAML list: quote it, `address: \"[2001:2::2:1]:8443\"`"
            ]
        );
        assert_eq!(
            problems("addresses:\n  - [2001:2::1]:80\n"),
            [
                "documents[0]: did not find expected '-' indicator at line 2 column 16, while \
                 parsing a block collection at line 2 column 3; `[2001:2::1]:80` unquoted is a \
                 YAML list: quote it, `\"[2001:2::1]:80\"`"
            ]
        );
        // Only where it applies: not for another syntax error on a line that
        // has one quoted, or in a comment, nor for what is no IPv6 address
        // and port.
        for line in [
            "      - address: \"[2001:2::2:1]:8443\"\n        weight: [1",
            "      - address: '[2001:2::2:1]:8443' x: y",
            "      - {address: x, weight: 1, state: [a]:b} # [2001:2::2:1]:8443",
            "      - address: [198.18.2.1]:8443",
            "      - address: [2001:2::2:1]:https",
        ] {
            let problems = backend(line);
            assert_eq!(problems.len(), 1, "{line}: {problems:?}");
            assert!(!problems[0].contains("quote it"), "{line}: {problems:?}");
        }
    }

    #[test]
    fn duplicate_yaml_keys_are_errors() {
        assert_eq!(
            problems("services: []\nservices: []\n"),
            ["documents[0]: duplicate entry with key \"services\""]
        );
        // Where the parser was: at the mapping's start, not at the key.
        assert_eq!(
            problems(
                "services:\n  - name: web\n    backends: []\n    frontends: []\n    backends: []\n"
            ),
            [
                "documents[0]: services[0]: duplicate entry with key \"backends\" in the mapping \
                 that starts at line 2 column 5"
            ]
        );
    }

    #[test]
    fn load_reads_a_file_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xlb.yaml");
        std::fs::write(&path, web("    frontends: []\n")).unwrap();
        let error = load(&path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: services[0].frontends: a service needs at least one frontend (address and \
                 port)",
                path.display()
            )
        );
        std::fs::write(&path, web(ONE_FRONTEND)).unwrap();
        assert_eq!(load(&path).unwrap().services.len(), 1);

        let missing = dir.path().join("missing.yaml");
        let error = load(&missing).unwrap_err();
        assert!(matches!(&error, ConfigError::Read { path, .. } if *path == missing));
    }

    #[test]
    fn load_follows_a_symlink_to_a_regular_file() {
        // A Kubernetes ConfigMap mount is a chain of symlinks.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("..data-xlb.yaml");
        std::fs::write(&target, web(ONE_FRONTEND)).unwrap();
        let link = dir.path().join("xlb.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(load(&link).unwrap().services.len(), 1);
    }

    #[test]
    fn load_refuses_what_is_not_a_regular_file_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        // A FIFO nobody writes to: opening it to read would wait for ever.
        let fifo = dir.path().join("xlb.yaml");
        nix::unistd::mkfifo(
            &fifo,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        let cases = [
            (fifo, "a FIFO"),
            (PathBuf::from("/dev/zero"), "a character device"),
            (dir.path().to_owned(), "a directory"),
        ];
        for (path, kind) in cases {
            let error = load(&path).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "{}: not a regular file ({kind}): the configuration is read from a regular \
                     file or a symlink to one",
                    path.display()
                )
            );
            assert!(error.problems().is_empty());
        }
    }

    #[test]
    fn load_refuses_a_file_over_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xlb.yaml");
        let file = std::fs::File::create(&path).unwrap();
        // Sparse: its size says it all before a byte is read.
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        assert_eq!(
            load(&path).unwrap_err().to_string(),
            format!(
                "{}: larger than 64 MiB, the limit of a configuration file",
                path.display()
            )
        );
        file.set_len(MAX_FILE_BYTES).unwrap();
        // At the limit, it is read (and its NULs are not YAML).
        assert!(matches!(
            load(&path).unwrap_err(),
            ConfigError::Invalid { .. }
        ));
    }

    #[test]
    fn a_file_that_is_not_utf8_says_where_it_stops_being_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xlb.yaml");
        let cases: [(&[u8], &str); 3] = [
            // Latin-1 `é`.
            (
                b"services:\n  - name: w\xe9b\n",
                "the byte `\\xe9` at line 2 column 12 (offset 21) is not UTF-8",
            ),
            // A column counts characters, as the parser's do; an offset bytes.
            (
                b"services: []\n# caf\xc3\xa9 \xff",
                "the byte `\\xff` at line 2 column 8 (offset 21) is not UTF-8",
            ),
            // A character cut short by the end of the file.
            (
                b"services: []\n# \xf0\x9f",
                "the bytes `\\xf0\\x9f` at line 2 column 3 (offset 15) are not UTF-8",
            ),
        ];
        for (bytes, why) in cases {
            std::fs::write(&path, bytes).unwrap();
            let error = load(&path).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "{}: {why}: the configuration file is UTF-8 text",
                    path.display()
                )
            );
            assert!(error.problems().is_empty());
        }
    }

    #[test]
    fn a_file_larger_than_its_size_says_is_cut_at_the_limit() {
        // procfs files say they are empty and are not: like a file growing
        // while it is read, only the read itself can tell.
        let path = Path::new("/proc/self/status");
        assert_eq!(std::fs::metadata(path).unwrap().len(), 0);
        assert!(matches!(
            read_file(path, 16),
            Err(ConfigError::TooLarge { limit: 16, .. })
        ));
        assert!(read_file(path, MAX_FILE_BYTES).unwrap().contains("Name:"));
    }

    // --- Round trip -------------------------------------------------------

    /// A valid native service `svc-<index>`: its own /24 of frontends, one
    /// family for frontends and backends, distinct backends, none of them on
    /// a frontend's address.
    fn arb_service(index: usize) -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::btree_set(1u16..=65535, 1..4),
            proptest::collection::btree_set((1u8..=254, 1u16..=65535), 0..6),
            proptest::collection::vec((1u32..=10_000, any::<bool>()), 6),
            proptest::option::of(1u64..=86_400),
        )
            .prop_map(move |(v6, udp, ports, backends, weights, affinity)| {
                let mut text = format!(
                    "  - name: svc-{index}\n    protocol: {}\n    frontends:\n",
                    if udp { "UDP" } else { "TCP" }
                );
                for port in &ports {
                    let address = if v6 {
                        format!("2001:2::{index}:1")
                    } else {
                        format!("198.18.{index}.1")
                    };
                    let _ = writeln!(text, "      - address: {address}\n        port: {port}");
                }
                text.push_str("    backends:\n");
                for ((host, port), (weight, draining)) in backends.iter().zip(&weights) {
                    let address = if v6 {
                        format!("\"[2001:2:0:1::{host:x}]:{port}\"")
                    } else {
                        format!("198.19.{index}.{host}:{port}")
                    };
                    let state = if *draining { "draining" } else { "active" };
                    let _ = writeln!(
                        text,
                        "      - address: {address}\n        weight: {weight}\n        state: {state}"
                    );
                }
                if let Some(secs) = affinity {
                    let _ = writeln!(
                        text,
                        "    session_affinity:\n      type: client_ip\n      timeout: {secs}s"
                    );
                }
                text
            })
    }

    fn arb_config() -> impl Strategy<Value = (String, usize, usize, usize)> {
        proptest::collection::vec(any::<u8>(), 0..8).prop_flat_map(|seeds| {
            let services: Vec<_> = (0..seeds.len()).map(arb_service).collect();
            services.prop_map(|texts| {
                let frontends = texts
                    .iter()
                    .map(|t| {
                        t.matches("      - address: 2001:2::").count()
                            + t.matches("      - address: 198.18.").count()
                    })
                    .sum();
                let backends = texts
                    .iter()
                    .map(|t| t.matches("        weight:").count())
                    .sum();
                let count = texts.len();
                (
                    format!("services:\n{}", texts.concat()),
                    count,
                    frontends,
                    backends,
                )
            })
        })
    }

    proptest! {
        #[test]
        fn a_valid_native_config_round_trips_into_the_model(
            (text, services, frontends, backends) in arb_config()
        ) {
            let m = match parse(&text) {
                Ok(m) => m,
                Err(e) => return Err(TestCaseError::fail(format!("{e}\n{text}"))),
            };
            prop_assert_eq!(m.services.len(), services);
            prop_assert_eq!(m.frontends().count(), frontends);
            prop_assert_eq!(m.services.values().map(|s| s.backends.len()).sum::<usize>(), backends);
        }
    }
}
