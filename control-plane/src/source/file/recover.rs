//! Deserialising one part of a document with every problem reported, not
//! just the first, and in the format's words rather than Rust's.
//!
//! serde stops at the first error: a Service with a misspelt key and a port
//! written as text would take one run to find each. Checking every document
//! against a schema first would need one for the Kubernetes types, which
//! have none at hand, and one kept in step with the native structs. Instead
//! the error's path repairs a copy of the value, and the deserialisation runs
//! again until it succeeds: a key the type does not know is removed; a value
//! of the wrong kind, or a missing one, is replaced with the first
//! placeholder the type takes. The places repaired are kept ([`Repaired`]),
//! so that the checks run on the result leave out what they would say of a
//! placeholder (`0 is out of range`): what is reported is what was written.
//!
//! serde's messages name Rust's types (`expected i64`, `expected a
//! sequence`): [`plain`] says the same in the format's words, naming the
//! value that was written (`the text \`80\` is not a port number (1-65535)`).

use serde::de::DeserializeOwned;
use serde_path_to_error::{Path, Segment};
use serde_yaml_ng::{Mapping, Value};

use super::{
    error::Problem,
    native::{MAX_THRESHOLD, MAX_WEIGHT, key_text},
    place::{Place, Step},
    suggest,
    value::wide_integer,
};
use crate::source::kube::{
    NODE_PORT_RANGE,
    validate::{MAX_AFFINITY_TIMEOUT_SECS, quoted},
};

/// The placeholder for text. No check accepts it (it is no name, address,
/// keyword or port name), so a field that takes it reads as wrong, not as
/// unset: a Service whose `type` was a list is of no known type, rather than
/// the default `ClusterIP`, whose rules would then be checked.
const TEXT_PLACEHOLDER: &str = "\u{0}";

/// The most repairs made in one value, each a deserialisation: a bound on
/// the work a file can cause, far above what a written one needs.
const MAX_REPAIRS: usize = 200;

type Error = serde_path_to_error::Error<serde_yaml_ng::Error>;

/// What [`deserialize`] made of a value.
#[derive(Debug)]
pub(super) struct Recovered<T> {
    /// The value deserialised, with its repairs; `None` when an error could
    /// not be repaired (its problem is reported all the same).
    pub(super) object: Option<T>,
    /// The places whose problems were reported, and where a placeholder or
    /// nothing stands for what was written.
    pub(super) repaired: Repaired,
}

/// Places where what was written was replaced.
#[derive(Debug, Default)]
pub(super) struct Repaired {
    /// Where a placeholder, or nothing, stands for what was written.
    places: Vec<Place>,
    /// The required keys left out (among `places`), each with the index of
    /// its problem (`required`) in the list [`deserialize`] added to.
    left_out: Vec<(Place, usize)>,
}

impl Repaired {
    /// Whether nothing was: what was written deserialised as it is.
    pub(super) fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// Whether `place` is a repaired place or inside one.
    fn holds(&self, place: &Place) -> bool {
        self.places.iter().any(|repaired| place.within(repaired))
    }

    /// Whether a problem at `place` may be about a placeholder: at a
    /// repaired place, inside one, or holding one (a port whose number was
    /// repaired can clash with another port that has the same number).
    pub(super) fn touches(&self, place: &Place) -> bool {
        self.places
            .iter()
            .any(|repaired| place.within(repaired) || repaired.within(place))
    }

    /// Records `place` as one whose problem is reported and where the value
    /// the checks see is not what was written.
    pub(super) fn add(&mut self, place: Place) {
        self.places.push(place);
    }

    /// Records the required key at `place` as left out, its problem being
    /// `problems[index]` in the list [`deserialize`] added to.
    pub(super) fn add_left_out(&mut self, place: Place, index: usize) {
        self.left_out.push((place.clone(), index));
        self.places.push(place);
    }

    /// The required keys of the mapping at `mapping` that were left out.
    pub(super) fn left_out_of<'a>(&'a self, mapping: &'a Place) -> impl Iterator<Item = &'a str> {
        self.left_out
            .iter()
            .filter_map(|(place, _)| match place.after(mapping) {
                Some([Step::Key(key)]) => Some(key.as_str()),
                _ => None,
            })
    }

    /// Adds to `problems` those of `found` (from checking the repaired value)
    /// that are about what was written. `problems` is the list
    /// [`deserialize`] added to, added to since only at its end. A problem
    /// meant for a required key that was left out (the port in `address:
    /// 198.19.0.1:80`, see [`Problem::meant_for`]) takes that key's problem
    /// into its own.
    pub(super) fn report(&self, found: Vec<Problem>, problems: &mut Vec<Problem>) {
        let mut taken = Vec::new();
        for mut problem in found.into_iter().filter(|p| !self.touches(&p.place)) {
            let left_out = self.left_out.iter().find(|(place, index)| {
                problem.meant_for.as_ref() == Some(place) && !taken.contains(index)
            });
            if let Some((_, index)) = left_out {
                taken.push(*index);
                problem.and_required();
            }
            problems.push(problem);
        }
        // From the last, so that the indexes of the others still hold.
        taken.sort_unstable();
        for index in taken.into_iter().rev() {
            problems.remove(index);
        }
    }
}

/// Deserialises `value` as a `T`, adding to `problems` every key it does not
/// know and every value of the wrong kind or missing, each at its place
/// from `root`, the place of `value`.
pub(super) fn deserialize<T: DeserializeOwned>(
    value: &Value,
    root: &Place,
    problems: &mut Vec<Problem>,
) -> Recovered<T> {
    let mut result = attempt::<T>(value);
    // Repairs change a copy, made only when there is one to make.
    let mut value = match result {
        Ok(object) => {
            return Recovered {
                object: Some(object),
                repaired: Repaired::default(),
            };
        }
        Err(_) => value.clone(),
    };
    let mut repaired = Repaired::default();
    // The problems this value adds, from here.
    let start = problems.len();
    for repairs in 0.. {
        let error = match result {
            Ok(object) => {
                return Recovered {
                    object: Some(object),
                    repaired,
                };
            }
            Err(error) => error,
        };
        if repairs == MAX_REPAIRS {
            problems.push(Problem::new(
                root.clone(),
                "too many problems to list: fix those above, then check again for the rest",
            ));
            break;
        }
        let message = error.inner().to_string();
        if let Some(parent) = key_error(error.path()) {
            // A key of the wrong kind (`5:` where a field's name goes):
            // reported at its mapping, and removed.
            let Some(key) = first_odd_key(&value, &parent) else {
                break;
            };
            let at = root.join(&parent);
            if !repaired.holds(&at) {
                problems.push(Problem::new(at.clone(), plain_key(&message, &key)));
            }
            // Its own place, as unknown_fields names it, for the checks of
            // the result to leave out.
            repaired.add(at.step(Step::OddKey(key.clone())));
            if !remove_key(&mut value, &parent, &key) {
                break;
            }
            result = attempt(&value);
            continue;
        }
        let target = steps(error.path()).map(|mut steps| {
            // A missing field is missing at its own place.
            if let Some(field) = missing_field(&message) {
                steps.push(Step::Key(field.to_owned()));
            }
            steps
        });
        // A path through an enum's variant, which the file's types do not
        // have, is named as far as it has steps.
        let at = match &target {
            Some(target) => root.join(target),
            None => root.join(&known_steps(error.path())),
        };
        // The same place again: its repair did not take.
        if repaired.places.contains(&at) {
            break;
        }
        // Inside a placeholder (`{}` for a mapping lacks its keys), the
        // problem is that of the place repaired, already reported.
        if !repaired.holds(&at) {
            let written = target.as_deref().and_then(|t| lookup(&value, t));
            let field = match target.as_deref().and_then(<[Step]>::last) {
                Some(Step::Key(key)) => Some(key.as_str()),
                _ => None,
            };
            let mut problem = Problem::new(at.clone(), plain(&message, written, field));
            if let (Some(expected), Some(target)) = (unknown_field(&message), &target) {
                problem = suggest_known(problem, &value, root, target, expected);
            }
            // serde finds a key it does not know as it reads the keys, and a
            // required one missing after: a key taken for this one was
            // reported already, and its problem says this one is required.
            let misspelt = missing_field(&message).and_then(|_| {
                problems[start..]
                    .iter_mut()
                    .find(|p| p.meant_for.as_ref() == Some(&at))
            });
            match misspelt {
                Some(misspelt) => misspelt.and_required(),
                None if missing_field(&message).is_some() => {
                    repaired.left_out.push((at.clone(), problems.len()));
                    problems.push(problem);
                }
                None => problems.push(problem),
            }
        }
        repaired.add(at);
        let Some(target) = target else {
            break;
        };
        result = if unknown_field(&message).is_some() {
            if !remove(&mut value, &target) {
                break;
            }
            attempt(&value)
        } else {
            match fill(&mut value, &target) {
                Some(result) => result,
                None => break,
            }
        };
    }
    Recovered {
        object: None,
        repaired,
    }
}

/// Puts `problems`, those of `value` (at `root`: a Kubernetes object,
/// `services[2]`), in the order of the file, keeping the order in which
/// they were found between those at one place.
///
/// A place is ordered by where its path leads in `value`: the position of
/// each step among what was written there, a key among its mapping's keys
/// and an item by its index. A mapping keeps its keys in the order of the
/// text, so this is the order of their lines and columns, which [`Value`]
/// does not keep. A place that was not written (a required key left out)
/// is ordered as its mapping, before what the mapping holds, as a parser
/// reports a missing key at the mapping.
pub(super) fn in_file_order(problems: &mut [Problem], value: &Value, root: &Place) {
    problems.sort_by_cached_key(|problem| {
        problem
            .place
            .after(root)
            .map(|path| position(value, path))
            .unwrap_or_default()
    });
}

/// The positions of the steps of `path` in `value`, as far as it was
/// written: see [`in_file_order`].
fn position(mut value: &Value, path: &[Step]) -> Vec<usize> {
    let mut out = Vec::new();
    for step in path {
        let next = match (untagged(value), step) {
            (Value::Mapping(map), Step::Key(_) | Step::OddKey(_)) => map
                .iter()
                .enumerate()
                .find(|(_, (key, _))| step.names(key))
                .map(|(i, (_, inner))| (i, inner)),
            (Value::Sequence(items), Step::Index(i)) => items.get(*i).map(|inner| (*i, inner)),
            _ => None,
        };
        let Some((i, inner)) = next else {
            break;
        };
        out.push(i);
        value = inner;
    }
    out
}

fn attempt<T: DeserializeOwned>(value: &Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value)
}

/// Puts at `target` the first placeholder that the type takes there,
/// returning what deserialising then gives; `None` when it takes none.
fn fill<T: DeserializeOwned>(value: &mut Value, target: &[Step]) -> Option<Result<T, Error>> {
    // Wrong rather than unset where the type allows it, as unset means a
    // default, whose rules would be checked: text, and a list of text (a
    // Service whose `clusterIPs` was no list is not one without any). The
    // rest are the least a type takes: `false` (`source_nat`), unset, `0`,
    // a mapping without keys (whose missing ones are then added).
    let text = Value::String(TEXT_PLACEHOLDER.to_owned());
    let placeholders = [
        text.clone(),
        Value::Sequence(vec![text]),
        Value::Bool(false),
        Value::Null,
        Value::Number(0.into()),
        Value::Mapping(Mapping::new()),
    ];
    for placeholder in placeholders {
        if !set(value, target, placeholder) {
            return None;
        }
        let result = attempt(value);
        let refused = result.as_ref().is_err_and(|e| {
            steps(e.path()).as_deref() == Some(target)
                && missing_field(&e.inner().to_string()).is_none()
        });
        if !refused {
            return Some(result);
        }
    }
    None
}

/// The steps of a serde path; `None` when one is not a key or an index.
fn steps(path: &Path) -> Option<Vec<Step>> {
    path.iter().map(step).collect()
}

/// The steps of a serde path up to the first that is not a key or an index.
fn known_steps(path: &Path) -> Vec<Step> {
    path.iter().map_while(step).collect()
}

fn step(segment: &Segment) -> Option<Step> {
    match segment {
        Segment::Seq { index } => Some(Step::Index(*index)),
        Segment::Map { key } => Some(Step::Key(key.clone())),
        Segment::Enum { .. } | Segment::Unknown => None,
    }
}

/// The mapping whose key failed to deserialise, when the path is one to a
/// key (its last segment unknown, as serde_path_to_error records a key it
/// could not read).
fn key_error(path: &Path) -> Option<Vec<Step>> {
    let segments: Vec<&Segment> = path.iter().collect();
    let (Segment::Unknown, parent) = segments.split_last()? else {
        return None;
    };
    parent.iter().copied().map(step).collect()
}

/// The first key of the mapping at `parent` that is not text: the one a
/// type with text keys (all of the file's) failed on.
fn first_odd_key(value: &Value, parent: &[Step]) -> Option<Value> {
    let Value::Mapping(map) = untagged(lookup(value, parent)?) else {
        return None;
    };
    map.keys().find(|key| !key.is_string()).cloned()
}

fn remove_key(value: &mut Value, parent: &[Step], key: &Value) -> bool {
    match lookup_mut(value, parent).map(untagged_mut) {
        Some(Value::Mapping(map)) => map.remove(key).is_some(),
        _ => false,
    }
}

/// The value at `steps`, through any tags on the way.
fn lookup<'v>(mut value: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    for step in steps {
        value = match (untagged(value), step) {
            (Value::Mapping(map), Step::Key(_) | Step::OddKey(_)) => {
                map.iter().find(|(key, _)| step.names(key))?.1
            }
            (Value::Sequence(items), Step::Index(i)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

fn untagged(value: &Value) -> &Value {
    match value {
        Value::Tagged(tagged) => untagged(&tagged.value),
        value => value,
    }
}

fn untagged_mut(value: &mut Value) -> &mut Value {
    match value {
        Value::Tagged(tagged) => untagged_mut(&mut tagged.value),
        value => value,
    }
}

fn lookup_mut<'v>(mut value: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    for step in steps {
        value = match (untagged_mut(value), step) {
            (Value::Mapping(map), Step::Key(_) | Step::OddKey(_)) => {
                map.iter_mut().find(|(key, _)| step.names(key))?.1
            }
            (Value::Sequence(items), Step::Index(i)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Sets the value at `target`, adding its key if it is missing; `false`
/// when there is no such place.
fn set(value: &mut Value, target: &[Step], new: Value) -> bool {
    let Some((last, parent)) = target.split_last() else {
        *value = new;
        return true;
    };
    let Some(parent) = lookup_mut(value, parent) else {
        return false;
    };
    let parent = untagged_mut(parent);
    // A struct takes null as a mapping without keys (then missing some).
    if parent.is_null() {
        *parent = Value::Mapping(Mapping::new());
    }
    match (parent, last) {
        (Value::Mapping(map), Step::Key(name)) => {
            put(map, last, Value::String(name.clone()), new);
            true
        }
        (Value::Mapping(map), Step::OddKey(key)) => {
            put(map, last, key.clone(), new);
            true
        }
        (Value::Sequence(items), Step::Index(i)) => match items.get_mut(*i) {
            Some(slot) => {
                *slot = new;
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// Sets the value of the key that `step` names in `map`, adding it as `key`
/// when it is missing.
fn put(map: &mut Mapping, step: &Step, key: Value, new: Value) {
    match map.iter_mut().find(|(written, _)| step.names(written)) {
        Some((_, slot)) => *slot = new,
        None => {
            map.insert(key, new);
        }
    }
}

/// Removes the key at `target`; `false` when there is none.
fn remove(value: &mut Value, target: &[Step]) -> bool {
    let Some((last @ (Step::Key(_) | Step::OddKey(_)), parent)) = target.split_last() else {
        return false;
    };
    let Some(Value::Mapping(map)) = lookup_mut(value, parent).map(untagged_mut) else {
        return false;
    };
    let before = map.len();
    map.retain(|key, _| !last.names(key));
    map.len() != before
}

/// `problem`, that of the unknown key at `target` (from `root`, in `value`),
/// asking whether a key that serde `expected` there was meant ("expected
/// one of \`address\`, \`port\`"), when one is close to it and was not
/// written itself: `unknown field, did you mean \`port\`?`.
fn suggest_known(
    problem: Problem,
    value: &Value,
    root: &Place,
    target: &[Step],
    expected: &str,
) -> Problem {
    let Some((Step::Key(unknown), parent)) = target.split_last() else {
        return problem;
    };
    let written = match lookup(value, parent).map(untagged) {
        Some(Value::Mapping(map)) => map.keys().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    // The names between backticks.
    let known = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| !written.contains(name));
    match suggest::closest(unknown, known) {
        Some(known) => Problem::new(
            problem.place,
            format!("unknown field, did you mean `{known}`?"),
        )
        .meant_for(root.join(parent).key(known)),
        None => problem,
    }
}

/// The field of serde's "missing field \`name\`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// What follows the field in serde's "unknown field \`name\`, expected one
/// of \`a\`, \`b\`" (or ", there are no fields").
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = ["`, expected ", "`, there are no fields"]
        .iter()
        .filter_map(|after| rest.find(after))
        .min()?;
    Some(&rest[end + 3..])
}

/// What a number in a field holds, to name it and its range: ports by their
/// Kubernetes and native names, and the native format's other numbers (no
/// Kubernetes field of the file has their names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NumberField {
    Port,
    NodePort,
    Seconds,
    /// A backend's `weight`.
    Weight,
    /// A health check's `rise` or `fall`.
    Threshold,
    Whole,
}

impl NumberField {
    fn of(field: Option<&str>) -> Self {
        match field {
            Some("port" | "targetPort" | "containerPort") => Self::Port,
            Some("nodePort" | "healthCheckNodePort") => Self::NodePort,
            Some("timeoutSeconds") => Self::Seconds,
            Some("weight") => Self::Weight,
            Some("rise" | "fall") => Self::Threshold,
            _ => Self::Whole,
        }
    }

    fn noun(self) -> String {
        match self {
            Self::Port => "a port number (1-65535)".to_owned(),
            Self::NodePort => format!(
                "a node port ({}-{})",
                NODE_PORT_RANGE.start(),
                NODE_PORT_RANGE.end()
            ),
            Self::Seconds => "a whole number of seconds".to_owned(),
            Self::Weight | Self::Threshold | Self::Whole => "a whole number".to_owned(),
        }
    }

    /// `n` is out of the range of the field's type (or of any number, wider
    /// than 64 bits): the range of what it holds, when known, as the checks
    /// of a value in the type's range say it.
    fn out_of_range(self, n: &dyn std::fmt::Display) -> String {
        match self {
            Self::Port => format!("{n} is out of range 1-65535"),
            Self::NodePort => format!(
                "{n} is outside the NodePort range {}-{}",
                NODE_PORT_RANGE.start(),
                NODE_PORT_RANGE.end()
            ),
            Self::Seconds => format!("{n} is out of range 1-{MAX_AFFINITY_TIMEOUT_SECS}"),
            Self::Weight => format!("{n} is out of range 1-{MAX_WEIGHT}"),
            Self::Threshold => format!("{n} is out of range 1-{MAX_THRESHOLD}"),
            Self::Whole => format!("{n} is out of range"),
        }
    }
}

/// serde's `message` about `written` (the value at the problem's place, if
/// any) in the key `field`, in the format's words: `the text \`80\` is not a
/// port number (1-65535)` for "invalid type: string \"80\", expected i32".
/// A message of another shape (a custom one) is kept.
fn plain(message: &str, written: Option<&Value>, field: Option<&str>) -> String {
    if missing_field(message).is_some() {
        return "required".to_owned();
    }
    if let Some(expected) = unknown_field(message) {
        return match expected
            .strip_prefix("expected one of ")
            .or_else(|| expected.strip_prefix("expected "))
        {
            Some(keys) => format!("unknown field: the fields here are {keys}"),
            None => "unknown field: this mapping has none".to_owned(),
        };
    }
    let shape = match (
        message.strip_prefix("invalid type: "),
        message.strip_prefix("invalid value: "),
    ) {
        (Some(rest), _) => rest.rsplit_once(", expected ").map(|r| (false, r)),
        (None, Some(rest)) => rest.rsplit_once(", expected ").map(|r| (true, r)),
        (None, None) => None,
    };
    let Some((invalid_value, (unexpected, expected))) = shape else {
        // A type's own message, like a time's "input contains invalid
        // characters": plain already, but not naming the value.
        return match written {
            Some(value) => format!("{} is not valid here ({message})", describe(value)),
            None => message.to_owned(),
        };
    };
    let number = NumberField::of(field);
    if invalid_value
        && let Some(Value::Number(n)) = written
        && !n.is_f64()
    {
        return number.out_of_range(n);
    }
    if let Some(digits) = written.and_then(wide_integer)
        && is_integer(expected)
    {
        return number.out_of_range(&digits);
    }
    let mut out = format!(
        "{} is not {}",
        written.map_or_else(|| unexpected_text(unexpected), describe),
        expected_text(expected, number)
    );
    if let Some(Value::String(text)) = written {
        let unquoted = (is_integer(expected) && text.trim().parse::<f64>().is_ok())
            || (expected == "a boolean" && matches!(text.as_str(), "true" | "false"));
        if unquoted {
            out.push_str(": write it without quotes");
        }
    }
    out
}

/// What is wrong with a required number of the field `field` that was left
/// out (`written` is `None`) or written empty, in the words serde's own
/// errors get from [`plain`]: `required`, or `an empty value (null) is not a
/// port number (1-65535)`.
pub(super) fn not_a_number(written: Option<&Value>, field: &str) -> String {
    match written {
        None => "required".to_owned(),
        Some(value) => format!(
            "{} is not {}",
            describe(value),
            NumberField::of(Some(field)).noun()
        ),
    }
}

/// serde's `message` about the mapping key `key`, in the format's words:
/// "the key \`5\` is not a field name".
fn plain_key(message: &str, key: &Value) -> String {
    let expected = message
        .rsplit_once(", expected ")
        .map_or("a string", |(_, expected)| expected);
    format!(
        "the key {} is not {}",
        key_text(key),
        expected_text(expected, NumberField::Whole)
    )
}

/// What serde's `expected` (a Rust type, or a type's own words) is in the
/// format's words.
fn expected_text(expected: &str, number: NumberField) -> String {
    match expected {
        integer if is_integer(integer) => number.noun(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a string" | "a borrowed string" => "a string".to_owned(),
        "a character" => "a single character".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a mapping".to_owned(),
        "unit" => "empty (null)".to_owned(),
        "IntOrString" if number == NumberField::Port => {
            "a port number (1-65535) or name".to_owned()
        }
        "IntOrString" => "a whole number or a name".to_owned(),
        "Time" | "MicroTime" => "a time, like 2025-01-31T12:00:00Z".to_owned(),
        // What a struct's keys are.
        "field identifier" => "a field name".to_owned(),
        // The other Kubernetes types name themselves (`ObjectMeta`,
        // `ServiceSpec`), and serde's derive says `struct RawNode`: they
        // are objects.
        name if name.starts_with("struct ")
            || (name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric())) =>
        {
            "a mapping".to_owned()
        }
        // The native types' own words.
        other => other.to_owned(),
    }
}

/// Whether serde's `expected` is an integer type: Rust's, or what
/// k8s-openapi's `IntOrString` calls one that is out of its range.
fn is_integer(expected: &str) -> bool {
    matches!(
        expected,
        "i8" | "i16"
            | "i32"
            | "i64"
            | "i128"
            | "isize"
            | "u8"
            | "u16"
            | "u32"
            | "u64"
            | "u128"
            | "usize"
            | "a 32-bit integer"
    )
}

/// serde's own words for a value (`integer \`5\``, `string "80"`,
/// `sequence`), as [`describe`] says them, for when the value itself is not
/// at hand.
fn unexpected_text(unexpected: &str) -> String {
    let between = |prefix: &str| {
        unexpected
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('`'))
            .and_then(|rest| rest.strip_suffix('`'))
            .map(str::to_owned)
    };
    if let Some(scalar) = between("integer ")
        .or_else(|| between("floating point "))
        .or_else(|| between("boolean "))
    {
        return scalar;
    }
    match unexpected {
        "unit value" => "an empty value (null)".to_owned(),
        "sequence" => "a list".to_owned(),
        "map" => "a mapping".to_owned(),
        // `string "..."`, escaped as Rust escapes it: still one line.
        other => other.to_owned(),
    }
}

/// A value as a message names it: numbers and booleans as written, text
/// quoted and called text (`80` in quotes is no number).
fn describe(value: &Value) -> String {
    if let Some(digits) = wide_integer(value) {
        return digits;
    }
    match value {
        Value::Null => "an empty value (null)".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the text {}", quoted(s)),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", quoted(&tagged.tag.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Frontend {
        address: String,
        port: i64,
        kind: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Service {
        name: String,
        #[serde(default)]
        frontends: Vec<Frontend>,
        #[serde(default)]
        source_nat: bool,
        weight: Option<i32>,
        addresses: Option<Vec<String>>,
        enabled: Option<bool>,
    }

    /// The place of the values deserialised: `x`.
    fn x() -> Place {
        Place::native().key("x")
    }

    /// Deserialises `yaml` (at [`x`]) as a `T`: the problems, displayed, and
    /// the result.
    fn recover<T: DeserializeOwned>(yaml: &str) -> (Vec<String>, Recovered<T>) {
        let value: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        let recovered = deserialize(&value, &x(), &mut problems);
        (
            problems.iter().map(ToString::to_string).collect(),
            recovered,
        )
    }

    #[test]
    fn every_problem_is_reported_each_at_its_place() {
        let (problems, recovered) = recover::<Service>(
            "name: [web]
frontends:
  - {address: 198.18.100.1, port: \"80\", prot: TCP}
  - 7
  - {port: 81}
source_nat: yes please
weight: 99999999999
",
        );
        assert_eq!(
            problems,
            [
                "x.name: a list is not a string",
                "x.frontends[0].port: the text `80` is not a port number (1-65535): write it \
                 without quotes",
                "x.frontends[0].prot: unknown field: the fields here are `address`, `port`, `kind`",
                "x.frontends[1]: 7 is not a mapping",
                "x.frontends[2].address: required",
                "x.source_nat: the text `yes please` is not true or false",
                // A weight's range, as the native checks say it.
                "x.weight: 99999999999 is out of range 1-10000",
            ]
        );
        // The repaired value deserialised, and each repair is known.
        let service = recovered.object.expect("repaired");
        assert_eq!(service.frontends.len(), 3);
        assert_eq!(service.frontends[0].address, "198.18.100.1");
        assert_eq!(service.frontends[2].port, 81);
        // The least the types take: false, unset.
        assert!(!service.source_nat);
        assert_eq!(service.weight, None);
        for place in ["name", "frontends[1].port", "weight"] {
            assert!(recovered.repaired.touches(&x().field(place)), "{place}");
        }
        assert!(!recovered.repaired.touches(&x().field("frontends[2].port")));
    }

    #[test]
    fn what_was_written_well_is_kept_as_it_is() {
        let (problems, recovered) =
            recover::<Service>("name: web\nfrontends: [{address: 198.18.100.1, port: 80}]\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(recovered.repaired.is_empty());
        let service = recovered.object.unwrap();
        assert_eq!(service.name, "web");
        assert_eq!(service.frontends[0].port, 80);
    }

    #[test]
    fn a_placeholder_reads_as_wrong_rather_than_as_unset() {
        // Unset would mean a default, whose own rules would be checked.
        let (problems, recovered) = recover::<Service>(
            "name: web
frontends: [{address: 198.18.100.1, port: 80, kind: [vip]}]
addresses: 198.18.0.1
enabled: 1
",
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        let service = recovered.object.unwrap();
        assert_eq!(service.frontends[0].kind.as_deref(), Some(TEXT_PLACEHOLDER));
        assert_eq!(service.addresses, Some(vec![TEXT_PLACEHOLDER.to_owned()]));
        assert_eq!(service.enabled, Some(false));
    }

    #[test]
    fn a_repaired_place_touches_what_is_inside_it_and_what_holds_it() {
        let doc = Place::document(0).object("Service default/web".to_owned());
        let labels = doc.field("metadata.labels");
        let repaired = Repaired {
            places: vec![
                doc.field("spec.ports[0].port"),
                doc.field("spec.clusterIP"),
                labels.key("app"),
            ],
            left_out: Vec::new(),
        };
        for place in [
            doc.field("spec.ports[0].port"),
            doc.field("spec.ports[0]"),
            doc.field("spec"),
            doc.clone(),
            labels.clone(),
        ] {
            assert!(repaired.touches(&place), "{place}");
        }
        for place in [
            doc.field("spec.ports[1]"),
            doc.field("spec.ports[0].portName"),
            doc.field("spec.clusterIPs[0]"),
            // Not inside `app`, whatever its text begins with.
            labels.key("app.kubernetes.io/name"),
            // Nor another document's.
            Place::document(1).object("Service default/web".to_owned()),
        ] {
            assert!(!repaired.touches(&place), "{place}");
        }
        assert!(repaired.holds(&doc.field("spec.ports[0].port.x")));
        assert!(!repaired.holds(&doc.field("spec.ports[0]")));
    }

    #[test]
    fn keys_of_the_wrong_kind_are_reported_at_their_mapping_and_left_out() {
        let (problems, recovered) = recover::<BTreeMap<String, String>>("a: b\n7: c\n~: d\n");
        assert_eq!(
            problems,
            [
                "x: the key `7` is not a string",
                "x: the key `~` (null) is not a string",
            ]
        );
        assert_eq!(
            recovered.object,
            Some(BTreeMap::from([("a".to_owned(), "b".to_owned())]))
        );
        let (problems, _) = recover::<Service>("name: web\n5: x\n");
        assert_eq!(problems, ["x: the key `5` is not a field name"]);
    }

    #[test]
    fn places_are_ordered_as_they_were_written() {
        let value: Value = serde_yaml_ng::from_str(
            "spec:
  ports:
    - {port: 80, name: a}
    - !tagged {port: 81}
  type: NodePort
labels:
  app: web
  app.kubernetes.io/name: web
5: odd
",
        )
        .unwrap();
        let key = |name: &str| Step::Key(name.to_owned());
        let cases: [(Vec<Step>, &[usize]); 9] = [
            (vec![], &[]),
            (vec![key("spec"), key("type")], &[0, 1]),
            (
                vec![key("spec"), key("ports"), Step::Index(0), key("name")],
                &[0, 0, 0, 1],
            ),
            (
                vec![key("spec"), key("ports"), Step::Index(1), key("port")],
                &[0, 0, 1, 0],
            ),
            // Not written: as far as it was.
            (
                vec![key("spec"), key("ports"), Step::Index(0), key("protocol")],
                &[0, 0, 0],
            ),
            (vec![key("spec"), key("ports"), Step::Index(7)], &[0, 0]),
            // A key is one step, whatever dots it holds.
            (vec![key("labels"), key("app.kubernetes.io/name")], &[1, 1]),
            (vec![key("labels"), key("app")], &[1, 0]),
            (vec![Step::OddKey(Value::Number(5.into()))], &[2]),
        ];
        for (path, expected) in cases {
            assert_eq!(position(&value, &path), expected, "{path:?}");
        }
        let mut problems: Vec<Problem> = [
            x().field("spec.type"),
            x().key("labels").key("app.kubernetes.io/name"),
            x().key("labels"),
            x().field("spec.ports[1]"),
            x(),
            x().field("spec.ports[0].protocol"),
            x().field("spec.ports[0].port"),
            x().key("labels").key("app"),
            x().field("spec.type"),
            // Elsewhere: as if at the start.
            Place::native().key("y"),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, place)| Problem::new(place, i.to_string()))
        .collect();
        in_file_order(&mut problems, &value, &x());
        assert_eq!(
            problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "x: 4",
                "y: 9",
                "x.spec.ports[0].protocol: 5",
                "x.spec.ports[0].port: 6",
                "x.spec.ports[1]: 3",
                // Two at one place: as they were found.
                "x.spec.type: 0",
                "x.spec.type: 8",
                "x.labels: 2",
                "x.labels.app: 7",
                "x.labels[\"app.kubernetes.io/name\"]: 1",
            ]
        );
    }

    #[test]
    fn the_repairs_of_one_value_are_bounded() {
        let yaml = format!("[{}]", vec!["x"; MAX_REPAIRS + 50].join(", "));
        let (problems, recovered) = recover::<Vec<i64>>(&yaml);
        assert_eq!(problems.len(), MAX_REPAIRS + 1);
        assert_eq!(
            problems.last().unwrap(),
            "x: too many problems to list: fix those above, then check again for the rest"
        );
        assert!(recovered.object.is_none());
    }

    #[test]
    fn serde_messages_in_the_formats_words() {
        let text = |s: &str| Value::String(s.to_owned());
        let number = |n: i64| Value::Number(n.into());
        let cases: Vec<(&str, Option<Value>, Option<&str>, &str)> = vec![
            (
                "invalid type: string \"80\", expected i32",
                Some(text("80")),
                Some("port"),
                "the text `80` is not a port number (1-65535): write it without quotes",
            ),
            (
                "invalid type: string \"x\", expected i32",
                Some(text("x")),
                Some("healthCheckNodePort"),
                "the text `x` is not a node port (30000-32767)",
            ),
            (
                "invalid type: floating point `1.5`, expected i64",
                Some(Value::Number(1.5.into())),
                Some("weight"),
                "1.5 is not a whole number",
            ),
            (
                "invalid type: string \"true\", expected a boolean",
                Some(text("true")),
                None,
                "the text `true` is not true or false: write it without quotes",
            ),
            (
                "invalid type: map, expected a sequence",
                Some(Value::Mapping(Mapping::new())),
                None,
                "a mapping is not a list",
            ),
            (
                "invalid type: sequence, expected a map",
                Some(Value::Sequence(Vec::new())),
                None,
                "a list is not a mapping",
            ),
            (
                "invalid type: unit value, expected a string",
                Some(Value::Null),
                None,
                "an empty value (null) is not a string",
            ),
            (
                "invalid type: sequence, expected ObjectMeta",
                Some(Value::Sequence(Vec::new())),
                Some("metadata"),
                "a list is not a mapping",
            ),
            (
                "invalid type: sequence, expected IntOrString",
                Some(Value::Sequence(Vec::new())),
                Some("targetPort"),
                "a list is not a port number (1-65535) or name",
            ),
            (
                "invalid type: integer `2`, expected a duration with a unit, like 2s",
                Some(number(2)),
                Some("interval"),
                "2 is not a duration with a unit, like 2s",
            ),
            (
                "invalid value: integer `99999999999`, expected i32",
                Some(number(99_999_999_999)),
                Some("port"),
                "99999999999 is out of range 1-65535",
            ),
            (
                "invalid value: integer `-1`, expected a 32-bit integer",
                Some(number(-1)),
                Some("nodePort"),
                "-1 is outside the NodePort range 30000-32767",
            ),
            (
                "invalid value: integer `99999999999`, expected i32",
                Some(number(99_999_999_999)),
                Some("timeoutSeconds"),
                "99999999999 is out of range 1-86400",
            ),
            (
                // Without the value at hand, serde's words for it.
                "invalid type: integer `5`, expected a string",
                None,
                None,
                "5 is not a string",
            ),
            ("missing field `port`", None, Some("port"), "required"),
            (
                "unknown field `prot`, expected one of `address`, `port`",
                Some(text("TCP")),
                Some("prot"),
                "unknown field: the fields here are `address`, `port`",
            ),
            (
                "unknown field `x`, there are no fields",
                Some(text("y")),
                Some("x"),
                "unknown field: this mapping has none",
            ),
            (
                "input contains invalid characters",
                Some(text("abc")),
                Some("creationTimestamp"),
                "the text `abc` is not valid here (input contains invalid characters)",
            ),
        ];
        for (message, written, field, expected) in cases {
            assert_eq!(
                plain(message, written.as_ref(), field),
                expected,
                "{message}"
            );
        }
    }
}
