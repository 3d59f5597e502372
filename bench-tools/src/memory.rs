//! The machine's memory, as `/proc/meminfo` gives it: what `report` says the
//! figures were taken on, and the most kernel memory a run's maps can take
//! (`prog` checks its datapaths against it before it sets anything up).

/// `MemTotal`, in bytes; `None` when it cannot be read.
pub(crate) fn total() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    mem_total_kib(&meminfo)?.checked_mul(1024)
}

/// `MemTotal:  24567890 kB`.
pub(crate) fn mem_total_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `bytes` in GiB, MiB or KiB, whichever shows it as 1 or more, for
/// messages.
pub(crate) fn gib(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["bytes", "KiB", "MiB"] {
        if value < 1024.0 {
            return if unit == "bytes" {
                format!("{bytes} bytes")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{value:.1} GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_kib() {
        let meminfo = "MemTotal:       25165824 kB\nMemFree:        1000 kB\n";
        assert_eq!(mem_total_kib(meminfo), Some(25_165_824));
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
        assert_eq!(gib(25_165_824 * 1024), "24.0 GiB");
        assert_eq!(gib(509 * 4 * 100_000), "194.2 MiB");
        assert_eq!(gib(509 * 4 * 2), "4.0 KiB");
        assert_eq!(gib(1000), "1000 bytes");
    }
}
