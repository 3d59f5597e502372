//! Names of rig objects.
//!
//! Every namespace, work directory and mount a rig creates is named
//! `xlb-rig-<pid>-<n>-<role>`: the prefix lets the sweeper find leftovers, the
//! pid keeps parallel test processes apart (and tells whether a rig's creator is
//! still alive), and `<n>` keeps parallel rigs of one process apart.
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Error, Result};

/// The prefix of every name a rig creates.
pub const PREFIX: &str = "xlb-rig-";

/// The longest interface name the kernel accepts (`IFNAMSIZ` - 1).
const IFNAME_MAX: usize = 15;

/// The longest role name, so namespace names stay readable in `ip netns list`.
const ROLE_MAX: usize = 32;

/// The prefix of every name this process creates: `xlb-rig-<pid>-`.
///
/// Sweeping with it removes this process's leftovers without touching the live
/// rigs of other test processes.
pub fn process_prefix() -> String {
    format!("{PREFIX}{}-", std::process::id())
}

/// A fresh rig id, `xlb-rig-<pid>-<n>`, unique within this process.
pub(crate) fn next_rig_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}{n}", process_prefix())
}

/// Refuses a name that lacks the rig prefix.
pub(crate) fn check_rig_name(name: &str) -> Result<()> {
    if name.len() > PREFIX.len() && name.starts_with(PREFIX) && !name.contains('/') {
        Ok(())
    } else {
        Err(Error::NotRigName {
            name: name.to_owned(),
        })
    }
}

/// Refuses a sweep prefix that could match anything but rig names.
pub(crate) fn check_sweep_prefix(prefix: &str) -> Result<()> {
    if prefix.starts_with(PREFIX) && !prefix.contains('/') {
        Ok(())
    } else {
        Err(Error::NotRigName {
            name: prefix.to_owned(),
        })
    }
}

/// Checks a role (the last part of a namespace name): lower-case letters,
/// digits and `-`.
pub(crate) fn check_role(role: &str) -> Result<()> {
    let ok = !role.is_empty()
        && role.len() <= ROLE_MAX
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "role",
            input: role.to_owned(),
            expected: "1 to 32 of [a-z0-9-]",
        })
    }
}

/// Checks an interface name: 1 to 15 bytes of letters, digits, `-` and `_`
/// (the kernel would accept more, but these are all a rig needs, none of them
/// means anything to `ip`, and without `.` a name fits in a sysctl key).
pub(crate) fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "interface name",
            input: name.to_owned(),
            expected: "1 to 15 of [A-Za-z0-9_-]",
        })
    }
}

/// The pid encoded in a rig name (`xlb-rig-<pid>-...`), if any.
pub(crate) fn pid_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits = rest.split('-').next()?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rig_ids_are_prefixed_and_unique() {
        let a = next_rig_id();
        let b = next_rig_id();
        assert_ne!(a, b);
        assert!(a.starts_with(&process_prefix()));
        assert_eq!(pid_of(&a), Some(std::process::id()));
    }

    #[test]
    fn names_without_the_prefix_are_refused() {
        assert!(check_rig_name("xlb-rig-1-0-a").is_ok());
        assert!(check_rig_name("xlb-rig-").is_err());
        assert!(check_rig_name("blue").is_err());
        assert!(check_rig_name("xlb-rig-../x").is_err());
        assert!(check_sweep_prefix("xlb-rig-").is_ok());
        assert!(check_sweep_prefix("xlb-").is_err());
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("abcdefghijklmno").is_ok());
        assert!(check_ifname("abcdefghijklmnop").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_role("client-1").is_ok());
        assert!(check_role("Client").is_err());
    }
}
