//! What a YAML syntax error most likely means, when the parser's words do
//! not say it.
//!
//! An IPv6 backend written `address: [2001:2::2:1]:8443` is the mistake the
//! format invites: unquoted, `[` starts a YAML list, and the parser stops at
//! the `:` after it with "did not find expected key", which names neither
//! the address nor the cure. [`hint`] recognises that case, and only that
//! case, from the line the parser stopped on.

use std::net::Ipv6Addr;

/// A hint to add to the parser's `error` about `text`, when it stopped
/// inside an unquoted value that is a bracketed IPv6 address and port
/// (`[2001:2::2:1]:8443`): how to write it, quoted, as its line should.
pub(super) fn hint(text: &str, error: &serde_yaml_ng::Error) -> Option<String> {
    let location = error.location()?;
    let line = text.lines().nth(location.line().checked_sub(1)?)?;
    let found = unquoted_ipv6_with_port(line)
        .into_iter()
        .find(|found| found.columns.contains(&location.column()))?;
    let quoted = format!("\"{}\"", found.value);
    let fixed = match found.key {
        Some(key) => format!("{key}: {quoted}"),
        None => quoted,
    };
    Some(format!(
        "`{}` unquoted is a YAML list: quote it, `{fixed}`",
        found.value
    ))
}

/// An unquoted `[ipv6]:port` value on a line.
#[derive(Debug, PartialEq, Eq)]
struct Found<'a> {
    /// Its key, when it is the value of one (`address`), rather than an
    /// item of a list.
    key: Option<&'a str>,
    /// The value: `[2001:2::2:1]:8443`.
    value: &'a str,
    /// Where it is on the line, in columns from 1 (characters, as the
    /// parser counts them).
    columns: std::ops::RangeInclusive<usize>,
}

/// The values of `line` that start with `[` outside quotes and comments and
/// are a bracketed IPv6 address and a port number.
fn unquoted_ipv6_with_port(line: &str) -> Vec<Found<'_>> {
    let mut out = Vec::new();
    scan(line, |seen| {
        if seen.c == '['
            && seen.starts_value
            && let Some(value) = ipv6_with_port(&line[seen.at..])
        {
            let column = seen.column + 1;
            let key = match seen.before {
                Some((colon, ':')) => key_before(line, colon),
                _ => None,
            };
            out.push(Found {
                key,
                value,
                columns: column..=column + value.chars().count() - 1,
            });
        }
        true
    });
    out
}

/// A character of YAML text outside quoted scalars and comments, as
/// [`scan`] hands it on.
struct Seen {
    /// Its line's index from 0.
    line_index: usize,
    /// Its byte offset in the line, and its column in characters from 0.
    at: usize,
    column: usize,
    c: char,
    /// The last character before it on its line, outside quotes, that is
    /// not a space, with its byte offset.
    before: Option<(usize, char)>,
    /// Whether a value may start here: after nothing on the line, a key's
    /// `:`, a list item's `-` (a word of its own), a `?`, or a flow
    /// collection's `[`, `{` or `,`. A quote or a bracket elsewhere, as in
    /// `it's` or `/a[0]`, is part of a plain value.
    starts_value: bool,
}

/// Hands `each` every character of `text` outside quoted scalars (which
/// may span lines) and comments, read as YAML reads them, roughly, until
/// `each` answers false. Enough to find where values start; not a parser.
fn scan(text: &str, mut each: impl FnMut(&Seen) -> bool) {
    let mut quote: Option<char> = None;
    for (line_index, line) in text.lines().enumerate() {
        let mut before: Option<(usize, char)> = None;
        let mut chars = line.char_indices().enumerate();
        while let Some((column, (at, c))) = chars.next() {
            if let Some(open) = quote {
                // In double quotes, a backslash escapes what follows it.
                if open == '"' && c == '\\' {
                    chars.next();
                } else if c == open {
                    quote = None;
                    before = Some((at, c));
                }
                continue;
            }
            let starts_value = match before {
                None => true,
                Some((dash, '-')) => dash == 0 || line[..dash].ends_with([' ', '\t']),
                Some((_, c)) => matches!(c, ':' | ',' | '[' | '{' | '?'),
            };
            // A comment starts with `#` at the start or after a space.
            if c == '#' && (at == 0 || line[..at].ends_with([' ', '\t'])) {
                break;
            }
            if matches!(c, '\'' | '"') && starts_value {
                quote = Some(c);
            } else if !each(&Seen {
                line_index,
                at,
                column,
                c,
                before,
                starts_value,
            }) {
                return;
            }
            if !c.is_whitespace() {
                before = Some((at, c));
            }
        }
    }
}

/// The key of the `:` at byte `colon` of `line`: the plain word before it
/// (`address`), if there is one.
fn key_before(line: &str, colon: usize) -> Option<&str> {
    let head = line[..colon].trim_end();
    let start = head
        .rfind(|c: char| c.is_whitespace() || matches!(c, '{' | ',' | '[' | '-'))
        .map_or(0, |i| i + 1);
    let key = &head[start..];
    (!key.is_empty()).then_some(key)
}

/// The `[ipv6]:port` that `text` starts with, ending where a plain value
/// does (a space, a comma or a closing bracket of a flow collection, or the
/// end of the line).
fn ipv6_with_port(text: &str) -> Option<&str> {
    let rest = text.strip_prefix('[')?;
    let (address, after) = rest.split_once(']')?;
    let port = after.strip_prefix(':')?;
    let digits = port
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(port.len());
    let ends = port[digits..]
        .chars()
        .next()
        .is_none_or(|c| c.is_whitespace() || matches!(c, ',' | '}' | ']'));
    let is_port = digits > 0 && ends && port[..digits].parse::<u16>().is_ok();
    (is_port && address.parse::<Ipv6Addr>().is_ok()).then(|| &text[..address.len() + 3 + digits])
}

/// How deep flow collections (`[...]`, `{...}`) may nest before the file
/// is refused unparsed. The parser's own limit, 128, is reached only after
/// work that grows with the square of the depth: `xlb check-config` took
/// 5.4 s to refuse 20 000 `[` and 21 s for 40 000. No value of the file
/// nests more than a few levels.
pub(super) const MAX_FLOW_DEPTH: usize = 256;

/// The line and column (from 1) of the `[` or `{` that opens a flow
/// collection deeper than [`MAX_FLOW_DEPTH`] in `text`, if one does.
///
/// Brackets count where [`scan`] says a value starts, or within a flow
/// collection, so that those of a plain value (`path: /a[0]`) do not. A
/// miscount can only make a pathological file reach the parser, which
/// refuses it too, slowly.
pub(super) fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let mut found = None;
    scan(text, |seen| {
        match seen.c {
            // Within a flow collection every item starts a value.
            '[' | '{' if seen.starts_value || depth > 0 => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    found = Some((seen.line_index + 1, seen.column + 1));
                    return false;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        true
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(line: &str) -> Vec<(Option<&str>, &str, (usize, usize))> {
        unquoted_ipv6_with_port(line)
            .into_iter()
            .map(|f| (f.key, f.value, (*f.columns.start(), *f.columns.end())))
            .collect()
    }

    #[test]
    fn an_unquoted_bracketed_ipv6_address_and_port_is_found_with_its_key() {
        assert_eq!(
            found("      - address: [2001:2::2:1]:8443"),
            [(Some("address"), "[2001:2::2:1]:8443", (18, 35))]
        );
        assert_eq!(
            found("  - {address: [2001:2::1]:80, weight: 2}"),
            [(Some("address"), "[2001:2::1]:80", (15, 28))]
        );
        assert_eq!(found("  - [::1]:80 # x"), [(None, "[::1]:80", (5, 12))]);
        assert_eq!(
            found("b: [[2001:2::1]:80]"),
            [(None, "[2001:2::1]:80", (5, 18))]
        );
        // A column counts characters.
        assert_eq!(
            found("é: [2001:2::1]:80"),
            [(Some("é"), "[2001:2::1]:80", (4, 17))]
        );
    }

    #[test]
    fn only_an_unquoted_value_that_is_an_ipv6_address_and_port_is_found() {
        for line in [
            "address: \"[2001:2::1]:80\"",
            "address: '[2001:2::1]:80'",
            "address: \"a \\\" [2001:2::1]:80\"",
            "address: x # [2001:2::1]:80",
            "# [2001:2::1]:80",
            // Not where a value starts.
            "address: a[2001:2::1]:80",
            "address: a-[2001:2::1]:80",
            // Not an IPv6 address, or no port.
            "address: [198.18.2.1]:80",
            "address: [2001:2::1]",
            "address: [2001:2::1]:",
            "address: [2001:2::1]:https",
            "address: [2001:2::1]:80x",
            "address: [2001:2::1]:99999",
            "address: [2001:2::1]8",
        ] {
            assert_eq!(found(line), [], "{line}");
        }
    }

    #[test]
    fn flow_collections_deeper_than_the_limit_are_found_where_they_pass_it() {
        let deep = "[".repeat(MAX_FLOW_DEPTH + 1);
        assert_eq!(
            too_deep(&format!("services: {deep}")),
            Some((1, 11 + MAX_FLOW_DEPTH))
        );
        let nested = format!("a:\n  b: {}", "{x: ".repeat(MAX_FLOW_DEPTH + 1));
        assert_eq!(too_deep(&nested), Some((2, 6 + 4 * MAX_FLOW_DEPTH)));
        let at_the_limit = format!(
            "services: {}{}",
            "[".repeat(MAX_FLOW_DEPTH),
            "]".repeat(MAX_FLOW_DEPTH)
        );
        assert_eq!(too_deep(&at_the_limit), None);
    }

    #[test]
    fn brackets_in_plain_values_quotes_and_comments_do_not_count() {
        let many = MAX_FLOW_DEPTH + 1;
        for text in [
            format!("path: /a{}", "[0".repeat(many)),
            format!("name: '{}'", "[".repeat(many)),
            format!("name: \"{}\\\" {}\"", "{".repeat(many), "[".repeat(many)),
            format!("port: 80 # {}", "[".repeat(many)),
            format!("# {}\nport: 80", "{".repeat(many)),
            // A quoted value over several lines.
            format!("name: \"a\n  {}\"", "[".repeat(many)),
        ] {
            assert_eq!(too_deep(&text), None, "{text}");
        }
        // Closed lists one after another never add up.
        let siblings = format!("ports: [{}]", "[80], ".repeat(2 * many));
        assert_eq!(too_deep(&siblings), None);
    }
}
