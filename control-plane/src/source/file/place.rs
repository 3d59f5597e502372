//! Where a problem is in the file: the document, the Kubernetes object it
//! holds, and a path of keys and list indexes from there, each kept as a
//! step, never as text to be read back (only the Kubernetes checks name a
//! field by text, and [`Place::field`] takes that apart: API field names
//! hold no dot).
//!
//! A place is built where its problem is found and displayed as
//! `services[2].backends[0].address`, or `documents[3] (Service
//! default/web): spec.ports[0].port`. Comparing places (is one problem about
//! a value inside another's, which comes first in the file) goes by steps: a
//! label key such as `app.kubernetes.io/name` is one step, whatever its dots,
//! and is displayed quoted, `metadata.labels["app.kubernetes.io/name"]`, as
//! JSONPath and jq write such a key.

use std::fmt::{self, Write as _};

use serde_yaml_ng::Value;

use super::{error::one_line, native::key_text};

/// One step of a path into a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Step {
    /// A key of a mapping that is text: a field (`port`), a label's key
    /// (`app.kubernetes.io/name`).
    Key(String),
    /// A key of a mapping that is not text (`5:`, `~:`), which no type of
    /// the file takes: its place is named only to be left out.
    OddKey(Value),
    /// An item of a list.
    Index(usize),
}

impl Step {
    /// Whether `key`, a key of a mapping, is the one this step names. A path
    /// from serde holds a number or boolean key as text.
    pub(super) fn names(&self, key: &Value) -> bool {
        match (self, key) {
            (Self::Key(name), Value::String(s)) => s == name,
            (Self::Key(name), Value::Number(n)) => n.to_string() == *name,
            (Self::Key(name), Value::Bool(b)) => b.to_string() == *name,
            (Self::OddKey(odd), key) => odd == key,
            _ => false,
        }
    }
}

/// Where in the file something is (see the module's documentation). The
/// default is the file as a whole, displayed as nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Place {
    /// The document; `None` for the native document's places, which start
    /// at its root (`services[2]`), as the file has one native document.
    document: Option<Document>,
    /// From the document, or from the object it holds when it is named.
    path: Vec<Step>,
    /// What is there that no path leads to: a Kubernetes Service's frontend,
    /// which translation makes from several fields (`frontend
    /// 198.18.100.1:80/TCP of default/web`).
    detail: Option<String>,
}

/// A document of the file and what is known of the object it holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Document {
    /// Its index in the file: `documents[3]`.
    index: usize,
    /// The item of the List the document is, if in one:
    /// `documents[0].items[2]` (a List holds no List).
    item: Option<usize>,
    /// The Kubernetes object there, `Service default/web`, once it is one:
    /// its paths then start at the object (`documents[3] (Service
    /// default/web): spec`).
    object: Option<String>,
}

impl Place {
    /// The root of the native document.
    pub(super) fn native() -> Self {
        Self::default()
    }

    /// The document at `index` in the file: `documents[3]`.
    pub(super) fn document(index: usize) -> Self {
        Self {
            document: Some(Document {
                index,
                item: None,
                object: None,
            }),
            ..Self::default()
        }
    }

    /// The item `index` of this place's List document:
    /// `documents[0].items[2]`.
    pub(super) fn item(&self, index: usize) -> Self {
        let mut out = self.clone();
        if let Some(document) = &mut out.document {
            document.item = Some(index);
        }
        out
    }

    /// This place's document as the Kubernetes object `object` (`Service
    /// default/web`), the start of the paths of its fields.
    pub(super) fn object(&self, object: String) -> Self {
        let mut out = self.clone();
        if let Some(document) = &mut out.document {
            document.object = Some(object);
        }
        out
    }

    /// The key `name` of the mapping here.
    pub(super) fn key(&self, name: impl Into<String>) -> Self {
        self.step(Step::Key(name.into()))
    }

    /// The item `index` of the list here.
    pub(super) fn index(&self, index: usize) -> Self {
        self.step(Step::Index(index))
    }

    /// `step` from here.
    pub(super) fn step(&self, step: Step) -> Self {
        self.join(std::slice::from_ref(&step))
    }

    /// `path` from here.
    pub(super) fn join(&self, path: &[Step]) -> Self {
        let mut out = self.clone();
        out.path.extend_from_slice(path);
        out
    }

    /// The field at `path` from here, as [`crate::source::kube::validate`]
    /// names a field of an object: API field names and list indexes
    /// (`spec.ports[0].port`). Field names hold no dot, so here a dot always
    /// parts two steps; no key from the file (a label's) is named this way.
    pub(super) fn field(&self, path: &str) -> Self {
        let mut steps = Vec::new();
        for part in path.split('.').filter(|part| !part.is_empty()) {
            let (name, mut indexes) = part.split_once('[').unwrap_or((part, ""));
            if !name.is_empty() {
                steps.push(Step::Key(name.to_owned()));
            }
            while let Some((index, rest)) = indexes.split_once(']') {
                match index.parse() {
                    Ok(index) => steps.push(Step::Index(index)),
                    // No index: not a path validate writes, named as given.
                    Err(_) => steps.push(Step::Key(format!("[{index}]"))),
                }
                indexes = rest.strip_prefix('[').unwrap_or(rest);
            }
        }
        self.join(&steps)
    }

    /// Here, with `detail`: what is there that no path leads to.
    pub(super) fn detail(&self, detail: String) -> Self {
        let mut out = self.clone();
        out.detail = Some(detail);
        out
    }

    /// The steps from `outer` to here, when this place is `outer` or inside
    /// it: in the same document (and object), on a path that goes on from
    /// `outer`'s.
    pub(super) fn after(&self, outer: &Self) -> Option<&[Step]> {
        if self.document != outer.document
            || (outer.detail.is_some() && self.detail != outer.detail)
        {
            return None;
        }
        self.path
            .strip_prefix(outer.path.as_slice())
            .filter(|_| outer.detail.is_none() || self.path.len() == outer.path.len())
    }

    /// Whether this place is `outer` or inside it.
    pub(super) fn within(&self, outer: &Self) -> bool {
        self.after(outer).is_some()
    }

    /// The key this place ends with, if it ends with one that is text.
    pub(super) fn last_key(&self) -> Option<&str> {
        match self.path.last() {
            Some(Step::Key(key)) if self.detail.is_none() => Some(key),
            _ => None,
        }
    }

    /// Whether this is the file as a whole.
    pub(super) fn is_empty(&self) -> bool {
        self.document.is_none() && self.path.is_empty() && self.detail.is_none()
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        // Whether the path goes on from what is written (`documents[0]` +
        // `.kind`) rather than starting after a separator.
        let mut goes_on = false;
        if let Some(document) = &self.document {
            write!(out, "documents[{}]", document.index)?;
            if let Some(item) = document.item {
                write!(out, ".items[{item}]")?;
            }
            match &document.object {
                Some(object) => {
                    write!(out, " ({object})")?;
                    if !self.path.is_empty() {
                        out.push_str(": ");
                    }
                }
                None => goes_on = true,
            }
        }
        for step in &self.path {
            match step {
                Step::Index(index) => write!(out, "[{index}]")?,
                Step::Key(key) if !is_bare(key) => write!(out, "[{}]", quoted_key(key))?,
                Step::Key(key) => {
                    if goes_on {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Step::OddKey(key) => {
                    if goes_on {
                        out.push('.');
                    }
                    out.push_str(&key_text(key));
                }
            }
            goes_on = true;
        }
        if let Some(detail) = &self.detail {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(detail);
        }
        // Keys, names and details come from the file: one line, whatever
        // they hold (see one_line).
        f.write_str(&one_line(out))
    }
}

/// Whether a key is written as it is in a place (`port`), rather than
/// quoted (`["app.kubernetes.io/name"]`): when nothing in it could be read
/// as another step (a dot, a bracket) or as the end of the place (a colon),
/// and it is not empty.
fn is_bare(key: &str) -> bool {
    !key.is_empty() && !key.contains(['.', '[', ']', '"', '\\', ':'])
}

/// `key` in double quotes, a quote or backslash in it escaped.
fn quoted_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    out.push('"');
    for c in key.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_displayed_as_paths_from_their_document_or_object() {
        let service = Place::native().key("services").index(2);
        assert_eq!(service.key("name").to_string(), "services[2].name");
        assert_eq!(Place::native().to_string(), "");
        assert!(Place::native().is_empty());
        let document = Place::document(3);
        assert_eq!(document.to_string(), "documents[3]");
        assert_eq!(document.key("kind").to_string(), "documents[3].kind");
        assert_eq!(
            document.item(1).key("kind").to_string(),
            "documents[3].items[1].kind"
        );
        let object = document.object("Service default/web".to_owned());
        assert_eq!(object.to_string(), "documents[3] (Service default/web)");
        assert_eq!(
            object.field("spec.ports[0].port").to_string(),
            "documents[3] (Service default/web): spec.ports[0].port"
        );
        assert_eq!(
            object.detail("frontend x".to_owned()).to_string(),
            "documents[3] (Service default/web): frontend x"
        );
        assert_eq!(
            Place::native()
                .step(Step::OddKey(Value::Number(5.into())))
                .to_string(),
            "`5`"
        );
    }

    #[test]
    fn a_key_that_could_read_as_more_steps_is_quoted() {
        let labels = Place::document(0)
            .object("Service default/web".to_owned())
            .field("metadata.labels");
        assert_eq!(
            labels.key("app.kubernetes.io/name").to_string(),
            "documents[0] (Service default/web): metadata.labels[\"app.kubernetes.io/name\"]"
        );
        assert_eq!(
            labels.key("app").to_string(),
            "documents[0] (Service default/web): metadata.labels.app"
        );
        for (key, shown) in [
            ("", "[\"\"]"),
            ("a[0]", "[\"a[0]\"]"),
            ("say \"hi\\\"", "[\"say \\\"hi\\\\\\\"\"]"),
            ("a:b", "[\"a:b\"]"),
            // Escaped, as every place is, but not quoted.
            ("a\nb", ".a\\nb"),
        ] {
            assert_eq!(
                Place::native().key("x").key(key).to_string(),
                format!("x{shown}"),
                "{key}"
            );
        }
    }

    #[test]
    fn a_field_path_is_parted_at_dots_and_indexes() {
        let root = Place::native();
        assert_eq!(
            root.field("spec.ports[0].port").path,
            [
                Step::Key("spec".to_owned()),
                Step::Key("ports".to_owned()),
                Step::Index(0),
                Step::Key("port".to_owned()),
            ]
        );
        assert_eq!(
            root.field("a[1][2]").path,
            [Step::Key("a".to_owned()), Step::Index(1), Step::Index(2)]
        );
        assert!(root.field("").path.is_empty());
    }

    #[test]
    fn a_place_is_within_another_by_its_steps() {
        let labels = Place::document(0)
            .object("Service default/web".to_owned())
            .field("metadata.labels");
        let app = labels.key("app");
        let dotted = labels.key("app.kubernetes.io/name");
        // One key, however many dots it holds.
        assert!(!dotted.within(&app));
        assert!(!app.within(&dotted));
        assert!(dotted.within(&labels));
        assert!(app.key("x").within(&app));
        assert_eq!(app.key("x").after(&labels), Some(&app.key("x").path[2..]));
        // Another document, object or item is elsewhere.
        assert!(!Place::document(1).within(&Place::document(0)));
        assert!(!Place::document(0).item(1).within(&Place::document(0)));
        assert!(!labels.within(&Place::document(0)));
        // A detail is only within the same one.
        let frontend = Place::document(0).detail("frontend a".to_owned());
        assert!(frontend.within(&Place::document(0)));
        assert!(
            !Place::document(0)
                .detail("frontend b".to_owned())
                .within(&frontend)
        );
    }
}
