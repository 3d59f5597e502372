//! Receive flow steering for a rig's end hosts.
//!
//! A NIC's receive-side scaling hashes each flow to one queue, and so to one
//! CPU: a host's TCP sees a flow's segments one after the other. A veth has
//! one queue, and its NAPI runs on whichever CPU sent to it last. Behind an
//! XDP program that redirects (each hop a veth NAPI), two segments of one
//! flow then reach the host's TCP on two CPUs at once, and the one that
//! misses the socket its twin is creating or closing goes to the listener,
//! which resets it: connections fail that would not behind a NIC. RPS on the
//! end hosts keeps each flow on one CPU, as RSS does (the measurements are
//! in `docs/bench/notes.md`, "How to read the rig").

use crate::{Error, Result};

/// Where the kernel lists the online CPUs, as ranges (`0-3,6`).
const ONLINE: &str = "/sys/devices/system/cpu/online";

/// The `rps_cpus` mask of every online CPU.
pub(crate) fn online_cpu_mask() -> Result<String> {
    let list = std::fs::read_to_string(ONLINE).map_err(Error::io(format!("reading {ONLINE}")))?;
    cpu_mask(list.trim()).ok_or_else(|| Error::Invalid {
        what: "CPU list",
        input: list.trim().to_owned(),
        expected: "ranges of CPU numbers such as 0-3,6",
    })
}

/// The cpumask of a CPU list such as `0-3,6`: hexadecimal, in comma-separated
/// 32-bit groups, the highest first (the format of `rps_cpus`). `None` for a
/// list that does not parse or names no CPU.
fn cpu_mask(list: &str) -> Option<String> {
    let mut groups: Vec<u32> = Vec::new();
    for range in list.split(',') {
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let cpu = range.parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        if last < first || last >= 1 << 16 {
            return None;
        }
        for cpu in first..=last {
            if groups.len() <= cpu / 32 {
                groups.resize(cpu / 32 + 1, 0);
            }
            groups[cpu / 32] |= 1 << (cpu % 32);
        }
    }
    if groups.is_empty() {
        return None;
    }
    let text: Vec<String> = groups.iter().rev().map(|g| format!("{g:08x}")).collect();
    Some(text.join(","))
}

#[cfg(test)]
mod tests {
    use super::cpu_mask;

    #[test]
    fn masks_ranges_and_single_cpus() {
        assert_eq!(cpu_mask("0-1").as_deref(), Some("00000003"));
        assert_eq!(cpu_mask("0").as_deref(), Some("00000001"));
        assert_eq!(cpu_mask("0-3,6").as_deref(), Some("0000004f"));
    }

    #[test]
    fn puts_the_highest_group_first() {
        assert_eq!(cpu_mask("0,33").as_deref(), Some("00000002,00000001"));
        assert_eq!(cpu_mask("32-63").as_deref(), Some("ffffffff,00000000"));
    }

    #[test]
    fn refuses_what_is_not_a_cpu_list() {
        for bad in ["", "a", "3-1", "0-", "-1", "0,,1", "70000"] {
            assert_eq!(cpu_mask(bad), None, "{bad:?}");
        }
    }
}
