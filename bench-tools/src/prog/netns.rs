//! The private network namespace every measurement runs in.
//!
//! `BPF_PROG_TEST_RUN` runs a program in the calling thread's network namespace
//! and `bpf_fib_lookup` routes there. The benchmark runs in a thread that
//! unshared a fresh, anonymous namespace with a fixed topology — an LB with a
//! client-side and a backend-side veth, a gateway to the clients and permanent
//! neighbours for every next hop — so every FIB lookup succeeds the same way,
//! the root namespace is never touched, and the namespace vanishes with the
//! thread (nothing to clean up after a crash).

use std::{
    io::Write as _,
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use anyhow::Context as _;

use super::fixture::{BACKEND_POOL, backend_ip, backend_mac};

/// MAC of the LB's client-facing interface `up0`.
pub(crate) const UP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xfe, 0x01];
/// MAC of the LB's backend-facing interface `dn0`.
pub(crate) const DOWN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xfe, 0x02];
/// The router in front of the clients (10.0.0.0/8 is behind it).
pub(crate) const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub(crate) const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The LB's own address on `up0`: not a frontend, the non-VIP case's destination.
pub(crate) const LB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// The LB's own address on `dn0`: the outer source of direct server return.
pub(crate) const DOWN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 254);

/// Interface indexes of the LB's interfaces in the private namespace.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Interfaces {
    /// Faces the clients: requests arrive here.
    pub(crate) up0: u32,
    /// Faces the backends: replies arrive here.
    pub(crate) dn0: u32,
}

/// Runs `f` in a new thread inside a fresh network namespace.
pub(crate) fn in_private_netns<T: Send>(
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("xlb-bench-prog".into())
            .spawn_scoped(scope, || {
                // Only this thread moves: the process stays in its namespace.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("unshare(CLONE_NEWNET): xlb-bench prog needs root")?;
                f()
            })
            .context("spawning the benchmark thread")?;
        // Ctrl-C goes to the benchmark thread, and ends the test run it is
        // in rather than waiting for it (`stop::SignalsElsewhere`).
        let _signals = crate::stop::SignalsElsewhere::block()?;
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Builds the topology in the calling thread's (private) namespace.
pub(crate) fn set_up() -> anyhow::Result<Interfaces> {
    let mut script = vec!["link set lo up".to_owned()];
    for (a, b, mac) in [("up0", "up1", UP_MAC), ("dn0", "dn1", DOWN_MAC)] {
        script.push(format!("link add {a} type veth peer name {b}"));
        script.push(format!("link set {a} address {}", mac_str(mac)));
        script.push(format!("link set {a} up"));
        script.push(format!("link set {b} up"));
    }
    script.push(format!("addr add {LB_ADDR}/24 dev up0"));
    // 198.18.2.0/23 holds the backend pool.
    script.push(format!("addr add {DOWN_ADDR}/23 dev dn0"));
    script.push(format!(
        "neigh add {GATEWAY} lladdr {} dev up0 nud permanent",
        mac_str(GATEWAY_MAC)
    ));
    script.push(format!("route add 10.0.0.0/8 via {GATEWAY} dev up0"));
    for id in 1..=BACKEND_POOL {
        script.push(format!(
            "neigh add {} lladdr {} dev dn0 nud permanent",
            backend_ip(id),
            mac_str(backend_mac(id))
        ));
    }
    ip_batch(&script)?;
    // Forwarding on every interface, `lo` included: a test run without a
    // context arrives on `lo`, and `bpf_fib_lookup` refuses to forward from an
    // interface that does not.
    run(&["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"])?;
    Ok(Interfaces {
        up0: ifindex("up0")?,
        dn0: ifindex("dn0")?,
    })
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Runs `ip -batch -` with one command per line (in this thread's namespace:
/// a child process inherits it).
fn ip_batch(lines: &[String]) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning ip")?;
    {
        let mut stdin = child.stdin.take().context("ip's stdin")?;
        for line in lines {
            writeln!(stdin, "{line}").context("writing to ip")?;
        }
    }
    let out = child.wait_with_output().context("waiting for ip")?;
    anyhow::ensure!(
        out.status.success(),
        "ip -batch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("spawning {}", args[0]))?;
    anyhow::ensure!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    nix::net::if_::if_nametoindex(name).with_context(|| format!("no interface {name}"))
}
