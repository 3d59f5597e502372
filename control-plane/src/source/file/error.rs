//! What is wrong with a configuration: every problem, each with its place.

use std::{fmt, io, path::PathBuf};

use super::place::Place;

/// One thing wrong with a configuration, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where, as steps into the document, displayed as
    /// `services[2].backends[0].address` in the native document;
    /// `documents[3] (Service default/web): spec.ports[0].port` in a
    /// Kubernetes one; `documents[1]` for a whole document.
    pub place: Place,
    /// What is wrong, and what would be right.
    pub message: String,
    /// The key that what is written here was probably meant for: `port`,
    /// for a misspelt `prot` or for the port in `address: 198.19.0.1:80`.
    /// When that key is required and was left out, this problem says so
    /// (`` (`port` is required) ``) and the key has no problem of its own:
    /// one mistake, one problem.
    pub(super) meant_for: Option<Place>,
}

impl Problem {
    /// A problem at `place`. Control characters in the message are escaped
    /// (see [`one_line`]), as they are where a place is displayed: values
    /// from the file are echoed in both.
    pub(crate) fn new(place: Place, message: impl Into<String>) -> Self {
        Self {
            place,
            message: one_line(message.into()),
            meant_for: None,
        }
    }

    /// This problem, about what was probably meant for the key at `place`
    /// (see [`Problem::meant_for`]).
    pub(super) fn meant_for(mut self, place: Place) -> Self {
        self.meant_for = Some(place);
        self
    }

    /// Says that the key this problem's value was meant for is required and
    /// was left out: its problem, taken into this one.
    pub(super) fn and_required(&mut self) {
        if let Some(key) = self.meant_for.take().as_ref().and_then(Place::last_key) {
            self.message = one_line(format!("{} (`{key}` is required)", self.message));
        }
    }
}

/// `text` with its control characters and Unicode line and paragraph
/// separators escaped (`\n`): output shows one problem or warning a line, and
/// a value from the file that held a newline would otherwise split its line
/// and could forge the next one. Values are quoted where they are echoed
/// ([`crate::source::kube::validate::quoted`]); this is for what is not, like
/// serde's own messages (`unknown field ...`) and the keys in places.
pub(crate) fn one_line(text: String) -> String {
    let breaks = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !text.contains(breaks) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if breaks(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.place.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.place, self.message)
        }
    }
}

/// A configuration that cannot be used. Nothing of it is applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// The path is not a regular file, nor a symlink to one: a FIFO would
    /// block the read, a device might never end it.
    #[error(
        "{}: not a regular file ({kind}): the configuration is read from a regular file or a \
         symlink to one",
        path.display()
    )]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead: `a directory`, `a FIFO`, ...
        kind: &'static str,
    },
    /// The file is larger than the limit ([`super::MAX_FILE_BYTES`]).
    #[error(
        "{}: larger than {} MiB, the limit of a configuration file",
        path.display(),
        limit >> 20
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The file is not UTF-8 text, the encoding the configuration is read
    /// in: says where the first byte that is not was found.
    #[error(
        "{}: the {} {} at line {line} column {column} (offset {offset}) {} not UTF-8: the \
         configuration file is UTF-8 text",
        path.display(),
        if bytes.len() == 1 { "byte" } else { "bytes" },
        quoted_bytes(bytes),
        if bytes.len() == 1 { "is" } else { "are" }
    )]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// The line of the first byte that is not UTF-8, from 1.
        line: usize,
        /// Its column, in characters from 1, as the YAML parser counts them.
        column: usize,
        /// Its offset in the file, in bytes from 0.
        offset: usize,
        /// The bytes that are not UTF-8 there: one, or the start of a
        /// character cut short by the end of the file.
        bytes: Vec<u8>,
    },
    /// The text is not a valid configuration. Holds every problem found, in
    /// document order; displayed one per line, each prefixed with the file
    /// name when there is one.
    #[error("{}", Lines { file: file.as_ref(), problems })]
    Invalid {
        /// The file the text came from; `None` for [`super::parse`].
        file: Option<PathBuf>,
        /// At least one.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem found; empty when the file could not be read.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Read { .. }
            | Self::NotRegular { .. }
            | Self::TooLarge { .. }
            | Self::NotUtf8 { .. } => &[],
            Self::Invalid { problems, .. } => problems,
        }
    }
}

/// `bytes` in backticks, each escaped: `` `\xe9` ``.
fn quoted_bytes(bytes: &[u8]) -> String {
    format!("`{}`", bytes.escape_ascii())
}

struct Lines<'a> {
    file: Option<&'a PathBuf>,
    problems: &'a [Problem],
}

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if let Some(file) = self.file {
                write!(f, "{}: ", file.display())?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_problem_per_line_prefixed_with_the_file() {
        let error = ConfigError::Invalid {
            file: Some(PathBuf::from("/etc/xlb/xlb.yaml")),
            problems: vec![
                Problem::new(
                    Place::native().key("services").index(0).key("name"),
                    "required",
                ),
                Problem::new(Place::document(1), "not a mapping"),
            ],
        };
        assert_eq!(
            error.to_string(),
            "/etc/xlb/xlb.yaml: services[0].name: required\n\
             /etc/xlb/xlb.yaml: documents[1]: not a mapping"
        );
        assert_eq!(error.problems().len(), 2);
    }

    #[test]
    fn control_characters_are_escaped_in_places_and_messages() {
        let problem = Problem::new(
            Place::native().key("services").index(0).key("a\nb"),
            "unknown field `a\nb`\r\u{2028}\t",
        );
        assert_eq!(
            problem.to_string(),
            "services[0].a\\nb: unknown field `a\\nb`\\r\\u{2028}\\t"
        );
        assert_eq!(one_line("é \"quoted\" \\n".to_owned()), "é \"quoted\" \\n");
    }

    #[test]
    fn display_without_a_file_has_no_prefix() {
        let error = ConfigError::Invalid {
            file: None,
            problems: vec![Problem::new(
                Place::native(),
                "did not find expected key at line 2",
            )],
        };
        assert_eq!(error.to_string(), "did not find expected key at line 2");
    }

    #[test]
    fn a_read_error_names_the_path_and_keeps_its_cause() {
        let error = ConfigError::Read {
            path: PathBuf::from("/nonexistent/xlb.yaml"),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(
            error.to_string(),
            "/nonexistent/xlb.yaml: cannot read the configuration file"
        );
        assert!(std::error::Error::source(&error).is_some());
        assert!(error.problems().is_empty());
    }
}
