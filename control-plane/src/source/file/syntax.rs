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
    let mut quote: Option<char> = None;
    // The last character outside quotes that is not a space, and its byte
    // offset: a value starts after nothing, a key's `:`, a list item's `-`,
    // or within a flow collection. (A quote elsewhere, as in `it's`, is
    // part of a plain value.)
    let mut before: Option<(usize, char)> = None;
    let starts_value = |before: Option<(usize, char)>| match before {
        None => true,
        // A list item's `-` is a word of its own.
        Some((at, '-')) => at == 0 || line[..at].ends_with([' ', '\t']),
        Some((_, c)) => matches!(c, ':' | ',' | '[' | '{'),
    };
    let mut chars = line.char_indices();
    while let Some((at, c)) = chars.next() {
        match quote {
            // In double quotes, a backslash escapes what follows it.
            Some('"') if c == '\\' => {
                chars.next();
            }
            Some(open) if c == open => quote = None,
            Some(_) => {}
            None if matches!(c, '\'' | '"') && starts_value(before) => quote = Some(c),
            // A comment starts with `#` after a space, or at the start.
            None if c == '#' && (at == 0 || line[..at].ends_with([' ', '\t'])) => break,
            None if c == '[' && starts_value(before) => {
                if let Some(value) = ipv6_with_port(&line[at..]) {
                    let column = line[..at].chars().count() + 1;
                    let key = match before {
                        Some((colon, ':')) => key_before(line, colon),
                        _ => None,
                    };
                    out.push(Found {
                        key,
                        value,
                        columns: column..=column + value.chars().count() - 1,
                    });
                }
            }
            None => {}
        }
        if !c.is_whitespace() {
            before = Some((at, c));
        }
    }
    out
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
}
