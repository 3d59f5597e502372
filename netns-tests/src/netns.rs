//! Named network namespaces, and running code inside them.
//!
//! A [`Netns`] is a name under `/run/netns` (what `ip netns add` creates).
//! Code runs inside it on a fresh thread that has `setns(2)`-ed into it: a
//! network namespace is per thread, so the rest of the process — and the test
//! harness's own threads — stay where they are. Sockets opened on that thread
//! belong to the namespace for their whole life, wherever they are used later.
use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::Arc,
    thread::JoinHandle,
};

use nix::sched::{CloneFlags, setns};

use crate::{
    Error, Result, cmd,
    counters::{self, LinkStats},
    names,
};

/// Where `ip netns` keeps its namespace names.
pub(crate) const NETNS_RUN_DIR: &str = "/run/netns";

/// A named network namespace whose name carries the rig prefix.
///
/// Cheap to clone: it is only a name. The [`Rig`](crate::Rig) that created it
/// deletes it; a handle that outlives its rig fails with an I/O error.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Netns {
    name: Arc<str>,
}

impl Netns {
    /// A handle to an existing namespace; refuses names without the rig prefix.
    ///
    /// Rigs hand out their own handles; this is for the sweeper and for tests
    /// that inspect a namespace by name.
    pub fn existing(name: &str) -> Result<Self> {
        names::check_rig_name(name)?;
        Ok(Self { name: name.into() })
    }

    /// The namespace's name (`ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&*self.name)
    }

    /// Checks that the name is a rig name, that the namespace exists, and that
    /// it is not the root network namespace under another name.
    pub fn check(&self) -> Result<()> {
        self.open().map(drop)
    }

    /// Runs `f` on a fresh thread inside the namespace and returns its result.
    ///
    /// A panic in `f` is resumed on the calling thread. Refuses (without
    /// running `f`) when the namespace is the root namespace.
    pub fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = self.open()?;
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(self.thread_name())
                .spawn_scoped(scope, move || {
                    enter(&file, self)?;
                    Ok(f())
                })
                .map_err(Error::io(format!("spawning a thread for {}", self.name)))?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a new, detached thread inside the namespace.
    ///
    /// For long-lived work such as servers; the caller joins the handle.
    pub fn spawn<F, T>(&self, f: F) -> Result<JoinHandle<Result<T>>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let file = self.open()?;
        let netns = self.clone();
        std::thread::Builder::new()
            .name(self.thread_name())
            .spawn(move || {
                enter(&file, &netns)?;
                Ok(f())
            })
            .map_err(Error::io(format!("spawning a thread for {}", self.name)))
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    ///
    /// The caller runs it, so the caller bounds it; for processes that must
    /// die with the rig use [`Rig::spawn`](crate::Rig::spawn).
    pub fn command(&self, program: &str) -> Result<Command> {
        self.check()?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.name(), program]);
        Ok(command)
    }

    /// Runs `program args...` inside the namespace to completion and returns
    /// its output; a non-zero exit is an error carrying its stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        self.check()?;
        let mut full = vec!["netns", "exec", self.name(), program];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// Like [`exec`](Self::exec), returning the raw output whatever the exit
    /// status.
    pub fn exec_output(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut command = self.command(program)?;
        command.args(args).stdin(Stdio::null());
        command.output().map_err(|source| Error::Spawn {
            command: cmd::display(program, args),
            source,
        })
    }

    /// Runs `ip -n <name> args...` and returns its standard output.
    pub(crate) fn ip(&self, args: &[&str]) -> Result<String> {
        self.check()?;
        let mut full = vec!["-n", self.name()];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// Reads a sysctl of this namespace (`net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key)?;
        self.run(move || {
            std::fs::read_to_string(&path)
                .map(|value| value.trim().to_owned())
                .map_err(Error::io(format!("reading {}", path.display())))
        })?
    }

    /// Writes sysctls of this namespace, in order; only `net.*` keys, which
    /// are per namespace, are accepted (and checked before any is written).
    pub(crate) fn write_sysctls(&self, settings: &[(&str, &str)]) -> Result<()> {
        let writes = settings
            .iter()
            .map(|&(key, value)| Ok((sysctl_path(key)?, value)))
            .collect::<Result<Vec<_>>>()?;
        self.run(move || {
            writes.into_iter().try_for_each(|(path, value)| {
                std::fs::write(&path, value).map_err(Error::io(format!(
                    "writing {value:?} to {}",
                    path.display()
                )))
            })
        })?
    }

    /// The packet and byte counters of interface `dev`.
    pub fn link_stats(&self, dev: &str) -> Result<LinkStats> {
        names::check_ifname(dev)?;
        let netns = self.name.clone();
        self.run(move || counters::read(&netns, dev))?
    }

    /// The names of the interfaces in the namespace.
    pub fn links(&self) -> Result<Vec<String>> {
        let out = self.ip(&["-br", "link", "show"])?;
        Ok(out
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            // veths show as `eth0@if5`.
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .collect())
    }

    /// The MAC address of interface `dev`.
    pub fn mac(&self, dev: &str) -> Result<crate::Mac> {
        names::check_ifname(dev)?;
        let out = self.ip(&["-br", "link", "show", "dev", dev])?;
        // `eth0@if5  UP  02:..:..  <BROADCAST,...>`
        let field = out.split_whitespace().nth(2).unwrap_or_default();
        field.parse()
    }

    /// Process ids of the processes inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> Result<Vec<u32>> {
        self.check()?;
        let out = cmd::run("ip", &["netns", "pids", self.name()])?;
        Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Opens the namespace file after checking the name and that the
    /// namespace is not a protected one.
    fn open(&self) -> Result<File> {
        names::check_rig_name(&self.name)?;
        let path = self.path();
        let file = File::open(&path).map_err(Error::io(format!(
            "opening namespace {} at {}",
            self.name,
            path.display()
        )))?;
        let meta = file
            .metadata()
            .map_err(Error::io(format!("inspecting {}", path.display())))?;
        if is_protected(NsId::of(&meta)) {
            return Err(Error::RootNamespace {
                netns: self.name.to_string(),
            });
        }
        Ok(file)
    }

    /// True when process `pid` has entered this namespace.
    pub(crate) fn holds_process(&self, pid: u32) -> Result<bool> {
        let ours = self
            .open()?
            .metadata()
            .map_err(Error::io(format!("inspecting {self}")))?;
        Ok(std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|theirs| NsId::of(&theirs) == NsId::of(&ours)))
    }

    fn thread_name(&self) -> String {
        // Thread names are cut to 15 bytes by the kernel; keep the role.
        let role = self.name.rsplit('-').next().unwrap_or("rig");
        format!("netns-{role}")
    }
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Moves the calling thread into the namespace of `file`, then checks where
/// it landed.
fn enter(file: &File, netns: &Netns) -> Result<()> {
    setns(file, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Setns {
        netns: netns.name().to_owned(),
        source,
    })?;
    if current_thread_in_root()? {
        return Err(Error::RootNamespace {
            netns: netns.name().to_owned(),
        });
    }
    Ok(())
}

/// Refuses when the calling thread is in the root network namespace (or in
/// the namespace this process started in).
///
/// Code that attaches programs, configures interfaces or sends traffic from
/// the current thread calls this first.
pub fn ensure_not_root_thread() -> Result<()> {
    if current_thread_in_root()? {
        Err(Error::RootThread)
    } else {
        Ok(())
    }
}

fn current_thread_in_root() -> Result<bool> {
    let path = "/proc/thread-self/ns/net";
    let meta = std::fs::metadata(path).map_err(Error::io(format!("inspecting {path}")))?;
    Ok(is_protected(NsId::of(&meta)))
}

/// A namespace's identity: the device and inode of its nsfs file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NsId {
    dev: u64,
    ino: u64,
}

impl NsId {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// True for a namespace no rig may change: the one of pid 1 (when this
/// process may look at it) and the one this process runs in. The process's
/// own namespace is that of its main thread, which the rig never moves: only
/// the threads it spawns enter rig namespaces.
fn is_protected(id: NsId) -> bool {
    ["/proc/1/ns/net", "/proc/self/ns/net"]
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .any(|meta| NsId::of(&meta) == id)
}

/// True when the namespace at `path` is a protected one; unreadable paths
/// count as protected, so callers err on the safe side.
pub(crate) fn path_is_protected(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |meta| is_protected(NsId::of(&meta)))
}

/// `/proc/sys/net/...` for a `net.*` key.
fn sysctl_path(key: &str) -> Result<PathBuf> {
    let valid = key.starts_with("net.")
        && !key.contains('/')
        && key.split('.').all(|part| !part.is_empty());
    if !valid {
        return Err(Error::GlobalSysctl {
            key: key.to_owned(),
        });
    }
    // /proc/sys/net resolves against the reading thread's network namespace,
    // which is why this runs inside `Netns::run`.
    Ok(Path::new("/proc/sys").join(key.replace('.', "/")))
}
