//! Addresses as Kubernetes objects hold them, read as kube-proxy reads them
//! (`netutils.ParseIPSloppy`): the standard syntax, or IPv4 numbers with
//! leading zeros, which the API server accepted for years and which objects
//! stored then may still hold. Kubernetes reads those zeros as decimal
//! (`010.0.0.1` is 10.0.0.1), never as octal as BSD's `inet_aton` does.

use std::net::{IpAddr, Ipv4Addr};

/// `text` as an address: the standard syntax, or the legacy one with
/// leading zeros in its IPv4 numbers (alone, or as an IPv6 address's last
/// 32 bits).
pub(crate) fn parse(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    let (head, dotted) = text.split_at(text.rfind(':').map_or(0, |colon| colon + 1));
    let v4 = legacy_v4(dotted)?;
    if head.is_empty() {
        Some(IpAddr::V4(v4))
    } else {
        format!("{head}{v4}").parse().ok()
    }
}

/// True when `text` is an address only in the legacy syntax.
pub(crate) fn is_legacy(text: &str) -> bool {
    text.parse::<IpAddr>().is_err() && parse(text).is_some()
}

/// Four decimal numbers of at most 255, dot-separated, leading zeros
/// allowed.
fn legacy_v4(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut numbers = text.split('.');
    for octet in &mut octets {
        let number = numbers.next()?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = number.trim_start_matches('0');
        *octet = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
    }
    numbers.next().is_none().then_some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zeros_are_decimal_as_kubernetes_reads_them() {
        for (text, expected) in [
            ("198.18.0.1", "198.18.0.1"),
            ("198.018.000.001", "198.18.0.1"),
            ("010.0.0.010", "10.0.0.10"),
            ("0000198.18.0.1", "198.18.0.1"),
            ("::ffff:0:010.0.0.1", "::ffff:0:a00:1"),
            ("2001:2::198.018.0.1", "2001:2::c612:1"),
            ("2001:2::1", "2001:2::1"),
        ] {
            assert_eq!(parse(text), Some(expected.parse().unwrap()), "{text}");
        }
    }

    #[test]
    fn what_is_no_address_in_either_syntax_stays_none() {
        for text in [
            "",
            "198.18.0",
            "198.18.0.1.2",
            "198.18.0.256",
            "198.18.0.0256",
            "198.18..1",
            "198.18.0.+1",
            "198.18.0.1 ",
            "0x10.0.0.1",
            "2001:2::1::010.0.0.1",
            "web",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn only_the_leading_zeros_are_legacy() {
        assert!(is_legacy("198.018.0.1"));
        assert!(!is_legacy("198.18.0.1"));
        assert!(!is_legacy("198.18.0.256"));
    }
}
