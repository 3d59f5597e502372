//! The machine the report is generated on, read at report time: figures
//! mean little without the CPU and memory they were taken on. Whatever cannot
//! be read is shown as unknown rather than failing the report.

use std::time::SystemTime;

use crate::memory::mem_total_kib;

/// What BENCHMARKS.md says about the machine.
#[derive(Clone, Debug)]
pub(super) struct Machine {
    /// `YYYY-MM-DD`, UTC.
    pub(super) date: String,
    pub(super) kernel: String,
    pub(super) cpus: usize,
    /// `/proc/cpuinfo`'s first `model name`.
    pub(super) cpu_model: String,
    /// `/proc/meminfo`'s `MemTotal`, in GiB.
    pub(super) memory_gib: Option<f64>,
}

const UNKNOWN: &str = "unknown";

impl Machine {
    pub(super) fn of_this_machine() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .inspect_err(|e| tracing::warn!(path, %e, "cannot describe the machine"))
                .unwrap_or_default()
        };
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        Self {
            date: date(SystemTime::now()),
            kernel: if kernel.is_empty() {
                UNKNOWN.to_owned()
            } else {
                kernel
            },
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| UNKNOWN.to_owned()),
            memory_gib: mem_total_kib(&read("/proc/meminfo"))
                .map(|kib| kib as f64 / (1024.0 * 1024.0)),
        }
    }

    /// One sentence: kernel, CPUs, memory.
    pub(super) fn describe(&self) -> String {
        let memory = self.memory_gib.map_or_else(
            || format!("{UNKNOWN} memory"),
            |g| format!("{g:.1} GiB of memory"),
        );
        format!(
            "Linux {}, {} CPU{} ({}), {memory}",
            self.kernel,
            self.cpus,
            if self.cpus == 1 { "" } else { "s" },
            self.cpu_model
        )
    }
}

/// The first `model name` of `/proc/cpuinfo` (x86; other architectures may
/// have none).
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// The UTC date of `time`, as `YYYY-MM-DD`: the first ten characters of its
/// RFC 3339 form.
fn date(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .chars()
        .take(10)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_days() {
        let at = |secs| date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01");
        // 2000-02-29 12:00:00 UTC, and the last second of 2024.
        assert_eq!(at(951_825_600), "2000-02-29");
        assert_eq!(at(1_735_689_599), "2024-12-31");
    }

    #[test]
    fn cpu_model_and_memory_come_from_proc() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
        let meminfo = "MemTotal:       25165824 kB\nMemFree:        1000 kB\n";
        assert_eq!(mem_total_kib(meminfo), Some(25_165_824));
        let machine = Machine {
            date: "2025-01-02".into(),
            kernel: "6.18.0".into(),
            cpus: 2,
            cpu_model: "Test CPU".into(),
            memory_gib: mem_total_kib(meminfo).map(|k| k as f64 / 1024.0 / 1024.0),
        };
        assert_eq!(
            machine.describe(),
            "Linux 6.18.0, 2 CPUs (Test CPU), 24.0 GiB of memory"
        );
    }
}
