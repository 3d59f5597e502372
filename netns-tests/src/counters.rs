//! Interface packet counters, read from inside a namespace.
//!
//! `/sys/class/net` shows the interfaces of the namespace that mounted sysfs,
//! not those of the reading thread, so the counters come from
//! `/proc/thread-self/net/dev`, which follows the calling thread's namespace.
use crate::{Error, Result};

/// The counters of one interface (`/proc/net/dev`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

impl LinkStats {
    /// Counters gained since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            rx_bytes: self.rx_bytes.saturating_sub(earlier.rx_bytes),
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
            rx_dropped: self.rx_dropped.saturating_sub(earlier.rx_dropped),
            tx_bytes: self.tx_bytes.saturating_sub(earlier.tx_bytes),
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            tx_dropped: self.tx_dropped.saturating_sub(earlier.tx_dropped),
        }
    }
}

/// Reads the counters of `dev` in the calling thread's namespace.
pub(crate) fn read(netns: &str, dev: &str) -> Result<LinkStats> {
    let path = "/proc/thread-self/net/dev";
    let text = std::fs::read_to_string(path).map_err(Error::io(format!("reading {path}")))?;
    parse(&text, dev).ok_or_else(|| Error::Invalid {
        what: "interface",
        input: format!("{dev} in {netns}"),
        expected: "an interface listed in /proc/net/dev",
    })
}

/// Finds `dev` in the text of `/proc/net/dev`.
fn parse(text: &str, dev: &str) -> Option<LinkStats> {
    // Two header lines, then `  name: rx_bytes rx_packets errs drop fifo frame
    // compressed multicast tx_bytes tx_packets errs drop ...`.
    text.lines().skip(2).find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != dev {
            return None;
        }
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        Some(LinkStats {
            rx_bytes: *fields.first()?,
            rx_packets: *fields.get(1)?,
            rx_dropped: *fields.get(3)?,
            tx_bytes: *fields.get(8)?,
            tx_packets: *fields.get(9)?,
            tx_dropped: *fields.get(11)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0:     440       4    0    1    0     0          0         0      880       8    0    2    0     0       0          0
";

    #[test]
    fn parses_the_named_interface() {
        let stats = parse(SAMPLE, "eth0").unwrap();
        assert_eq!(
            stats,
            LinkStats {
                rx_bytes: 440,
                rx_packets: 4,
                rx_dropped: 1,
                tx_bytes: 880,
                tx_packets: 8,
                tx_dropped: 2,
            }
        );
        assert_eq!(parse(SAMPLE, "lo").unwrap(), LinkStats::default());
        assert!(parse(SAMPLE, "eth1").is_none());
    }
}
