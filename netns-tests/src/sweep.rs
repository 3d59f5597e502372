//! Finding and removing what rigs left behind (a crashed run, a
//! `std::mem::forget`-ed rig): namespaces, mounts and work directories whose
//! names start with a prefix.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracing::{debug, info, warn};

use crate::{
    Error, Result, bpffs, cmd,
    names::{self, PREFIX},
    netns::{self, NETNS_RUN_DIR},
};

/// Rig objects found under a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Namespace names (`ip netns list`).
    pub namespaces: Vec<String>,
    /// Mount points with a path component that starts with the prefix
    /// (bpffs mounts, and the nsfs mounts behind namespace names).
    pub mounts: Vec<PathBuf>,
    /// Work directories in the temporary directory.
    pub dirs: Vec<PathBuf>,
}

impl Leftovers {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.mounts.is_empty() && self.dirs.is_empty()
    }
}

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// What was removed.
    pub removed: Leftovers,
    /// Processes killed because they were inside a swept namespace.
    pub killed: Vec<u32>,
    /// What could not be removed, and why.
    pub failures: Vec<String>,
}

/// Lists the rig objects whose names start with `prefix` (which must itself
/// start with [`PREFIX`]).
pub fn leftovers(prefix: &str) -> Result<Leftovers> {
    names::check_sweep_prefix(prefix)?;
    let namespaces = list_dir_names(Path::new(NETNS_RUN_DIR))?
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect();
    let mounts = mount_points()?
        .into_iter()
        .filter(|path| has_component_with_prefix(path, prefix))
        .collect();
    let tmp = std::env::temp_dir();
    let dirs = list_dir_names(&tmp)?
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .map(|name| tmp.join(name))
        .filter(|path| path.is_dir())
        .collect();
    Ok(Leftovers {
        namespaces,
        mounts,
        dirs,
    })
}

/// Removes every rig object whose name starts with `prefix`: kills the
/// processes inside those namespaces, deletes the namespaces, unmounts the
/// mounts and removes the work directories.
///
/// `prefix` must start with [`PREFIX`]. To leave other test processes' live
/// rigs alone, sweep [`process_prefix`](crate::process_prefix) or a rig's
/// [`prefix`](crate::Rig::prefix), or use [`sweep_orphans`].
pub fn sweep(prefix: &str) -> Result<SweepReport> {
    let found = leftovers(prefix)?;
    let mut report = SweepReport::default();
    for name in &found.namespaces {
        match remove_namespace(name) {
            Ok(killed) => {
                report.killed.extend(killed);
                report.removed.namespaces.push(name.clone());
            }
            Err(err) => report.failures.push(format!("namespace {name}: {err}")),
        }
    }
    // Namespace deletion took their nsfs mounts along; look again.
    let mut mounts: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|path| has_component_with_prefix(path, prefix))
        .collect();
    // Deepest first, so a mount stacked inside another goes before it.
    mounts.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    mounts.dedup();
    for mount in mounts {
        match bpffs::unmount(&mount) {
            Ok(()) => report.removed.mounts.push(mount),
            Err(err) => report.failures.push(err.to_string()),
        }
    }
    for dir in found.dirs {
        // Never recurse into a directory that still has something mounted
        // under it: that would delete the contents of the mounted file system.
        match mounts_under(&dir) {
            Ok(inside) if inside.is_empty() => match std::fs::remove_dir_all(&dir) {
                Ok(()) => report.removed.dirs.push(dir),
                Err(err) => report
                    .failures
                    .push(format!("removing {}: {err}", dir.display())),
            },
            Ok(inside) => report.failures.push(format!(
                "{} still has mounts under it: {inside:?}",
                dir.display()
            )),
            Err(err) => report.failures.push(err.to_string()),
        }
    }
    info!(
        prefix,
        namespaces = report.removed.namespaces.len(),
        mounts = report.removed.mounts.len(),
        dirs = report.removed.dirs.len(),
        killed = report.killed.len(),
        failures = report.failures.len(),
        "swept"
    );
    Ok(report)
}

/// Sweeps the leftovers of processes that no longer run: every
/// `xlb-rig-<pid>-...` name whose pid is gone.
pub fn sweep_orphans() -> Result<SweepReport> {
    let found = leftovers(PREFIX)?;
    let pids: BTreeSet<u32> = found
        .namespaces
        .iter()
        .map(String::as_str)
        .chain(found.mounts.iter().filter_map(|p| rig_component(p)))
        .chain(found.dirs.iter().filter_map(|p| rig_component(p)))
        .filter_map(names::pid_of)
        .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    let mut report = SweepReport::default();
    for pid in pids {
        let one = sweep(&format!("{PREFIX}{pid}-"))?;
        report.removed.namespaces.extend(one.removed.namespaces);
        report.removed.mounts.extend(one.removed.mounts);
        report.removed.dirs.extend(one.removed.dirs);
        report.killed.extend(one.killed);
        report.failures.extend(one.failures);
    }
    Ok(report)
}

/// Kills the processes inside namespace `name`, then deletes the name.
///
/// When the name is bound to a protected namespace (the root one), only the
/// name goes: nothing inside it is touched.
pub(crate) fn remove_namespace(name: &str) -> Result<Vec<u32>> {
    names::check_rig_name(name)?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    let mut killed = Vec::new();
    if !path.exists() {
        // Deleted since it was listed (its rig ended meanwhile): nothing to
        // remove, and nothing bound to the root namespace either.
        debug!(netns = name, "namespace already gone");
        return Ok(killed);
    }
    if netns::path_is_protected(&path) {
        warn!(
            netns = name,
            "namespace name is bound to the root namespace; removing the name only"
        );
    } else {
        let own = std::process::id();
        let pids = cmd::run("ip", &["netns", "pids", name])?;
        for pid in pids.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            if pid == own || pid <= 1 {
                continue;
            }
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            match kill(Pid::from_raw(raw), Signal::SIGKILL) {
                Ok(()) => killed.push(pid),
                Err(err) => debug!(pid, error = %err, "process already gone"),
            }
        }
    }
    cmd::run("ip", &["netns", "del", name])?;
    debug!(netns = name, ?killed, "namespace deleted");
    Ok(killed)
}

/// Mount points at or below `dir`.
pub(crate) fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(mount_points()?
        .into_iter()
        .filter(|path| path.starts_with(dir))
        .collect())
}

/// Every mount point of this process's mount namespace.
fn mount_points() -> Result<Vec<PathBuf>> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(Error::io(format!("reading {path}")))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mount_path(field)))
        .collect())
}

/// Undoes the octal escapes (`\040` for a space) of `/proc/self/mountinfo`.
fn unescape_mount_path(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], escaped) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn has_component_with_prefix(path: &Path, prefix: &str) -> bool {
    path.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|s| s.starts_with(prefix))
    })
}

/// The first path component that carries a rig name.
fn rig_component(path: &Path) -> Option<&str> {
    path.components()
        .filter_map(|c| c.as_os_str().to_str())
        .find(|s| s.starts_with(PREFIX))
}

/// File names in `dir`; a missing directory has none.
fn list_dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::io(format!("listing {}", dir.display()))(err)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("listing {}", dir.display())))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path(r"/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape_mount_path(r"/tmp/x\\"), r"/tmp/x\\");
    }

    #[test]
    fn prefixes_match_whole_path_components() {
        let path = Path::new("/tmp/xlb-rig-12-3-work.abc/bpffs");
        assert!(has_component_with_prefix(path, "xlb-rig-12-3-"));
        assert!(!has_component_with_prefix(path, "xlb-rig-12-4-"));
        assert_eq!(rig_component(path), Some("xlb-rig-12-3-work.abc"));
    }

    #[test]
    fn a_namespace_gone_since_it_was_listed_is_skipped() {
        // No rig of pid 0 exists: as a name whose rig ended between the
        // listing and the removal.
        let name = format!("{PREFIX}0-gone");
        assert!(!Path::new(NETNS_RUN_DIR).join(&name).exists());
        assert_eq!(
            remove_namespace(&name).expect("nothing to do"),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn sweeping_refuses_foreign_prefixes() {
        assert!(matches!(sweep("tmp"), Err(Error::NotRigName { .. })));
        assert!(matches!(leftovers(""), Err(Error::NotRigName { .. })));
    }
}
