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

use std::process::Command;

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

/// The interface index of `name` in the calling thread's namespace.
pub(crate) fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0, "no interface {name}");
    index
}
