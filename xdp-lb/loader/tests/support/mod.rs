//! Test support: a private, anonymous network namespace per test.
//!
//! `BPF_PROG_TEST_RUN` runs the program in the caller's network namespace, and
//! `bpf_fib_lookup` routes there. Each test runs in a thread that unshared its
//! own namespace, with interfaces, routes and neighbours set up by `ip` (whose
//! processes inherit the thread's namespace): the routing is deterministic, the
//! root namespace is never touched, and the namespace vanishes with the thread.
#![allow(
    dead_code,
    reason = "each test binary uses a part of the support module"
)]

pub(crate) mod fragment;
pub(crate) mod frame;
pub(crate) mod lb;

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

/// Runs `f` in a thread inside a fresh network namespace and returns its result.
pub(crate) fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("unshare(CLONE_NEWNET) (tests run as root)");
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs a command (in the calling thread's namespace) and panics if it fails.
pub(crate) fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip -batch -` on `commands` (one `ip` command per line, without the
/// leading `ip`): one process for a whole topology.
pub(crate) fn ip_batch(commands: &str) {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(commands.as_bytes())
        .expect("write to ip");
    let out = child.wait_with_output().expect("wait for ip");
    assert!(
        out.status.success(),
        "ip -batch failed: {}\n{commands}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The interface index of `name` in the calling thread's namespace.
pub(crate) fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0, "no interface {name}");
    index
}

/// Runs `f` with a fresh bpffs mounted on a temporary directory, visible only
/// to the calling thread: the thread first moves to a private mount namespace
/// (with every mount made private, so nothing propagates back), and the bpffs
/// is unmounted when `f` returns or panics. Call it from the thread
/// `in_private_netns` made, so the mount namespace dies with that thread.
pub(crate) fn with_private_bpffs<T>(f: impl FnOnce(&Path) -> T) -> T {
    use nix::{
        mount::{MntFlags, MsFlags, mount, umount2},
        sched::{CloneFlags, unshare},
    };

    /// Unmounts on drop, so a failing assertion does not leave the mount.
    struct Mounted<'a>(&'a Path);
    impl Drop for Mounted<'_> {
        fn drop(&mut self) {
            let _ = umount2(self.0, MntFlags::MNT_DETACH);
        }
    }

    unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make every mount private");
    let dir = tempfile::tempdir().expect("temporary directory");
    mount(
        Some("bpf"),
        dir.path(),
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount a bpffs");
    let mounted = Mounted(dir.path());
    let result = f(mounted.0);
    drop(mounted);
    result
}
