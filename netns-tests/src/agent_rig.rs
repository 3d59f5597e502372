//! The `xlb agent` running in a netns rig: the harness of the agent's
//! scenario tests and of `make demo`.
//!
//! ```text
//! client eth0 ─── eth0 [xdp_lb] lb [xdp_lb] eth1 ─── p0 [xdp_pass] switch ─┬─ b0
//!        [xdp_pass]     (xlb agent)                                        ├─ b1
//!                                                                          └─ b2
//! ```
//! [`AgentRig::build`] makes the topology of [`ClientLbBackends`] (three
//! backends, static neighbours) and attaches `xdp_pass` to the far ends of the
//! LB's veths from a datapath of its own (unpinned: a redirect into a veth
//! delivers only when the far end runs XDP, DESIGN.md "Known pitfalls"). The
//! caller starts servers on the backends ([`AgentRig::serve_http`],
//! [`AgentRig::serve_echo`], [`AgentRig::serve_stream`]), writes a
//! configuration ([`AgentRig::write_config`]) and starts the real agent
//! binary in the LB namespace ([`AgentRig::start_agent`]), which returns once
//! `xlb status` says the first sync is programmed and both interfaces are
//! attached. The agent pins its maps and links on the rig's private bpffs,
//! keeps its admin socket and configuration in the rig's work directory, and
//! logs to a file there; the logs are printed when a test panics.
//!
//! Dropping the rig kills the agent, stops the servers and tears the rig down:
//! unmounting the bpffs drops the pins and deleting the namespaces removes the
//! interfaces, which ends the XDP links ([`BpfObjects`] lets a test check it).
//!
//! Failures here are test failures whose value is their context (the command,
//! its output, the agent's log), so this module reports them with `anyhow`.
use std::{
    fmt::Write as _,
    io::{self, Read as _},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output, Stdio},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;
use tracing::{debug, warn};
use xdp_lb::{AttachMode, Attachment, Datapath, ProgramName};

pub use crate::stream::{StreamEchoServer, StreamSession};
use crate::{
    Error, Netns, Proto, Result, Rig, Spawned,
    http::{HttpResponse, HttpServer, http_get},
    topology::{ClientLbBackends, Options, plan},
    wait::wait_for,
};

/// Backends in the rig.
pub const BACKENDS: usize = 3;
/// The port the demo's service listens on at the VIP.
pub const VIP_PORT: u16 = 80;
/// The port the backends serve the demo's service on.
pub const BACKEND_PORT: u16 = 8080;
/// Where the agent serves `/metrics` and `/healthz`, inside the LB namespace.
pub const METRICS_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10256);
/// How long a starting agent may take to attach and program its first sync.
pub const AGENT_READY: Duration = Duration::from_secs(30);
/// How long one `xlb` client command may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// The interfaces the agent attaches `xdp_lb` to.
pub const INTERFACES: [&str; 2] = ["eth0", "eth1"];

/// The rig's IPv4 VIP (plan VIP 1).
pub fn vip() -> IpAddr {
    plan::vip(1).0.into()
}

/// The name backend `i`'s servers answer with (`b0`, `b1`, ...).
pub fn backend_name(i: usize) -> String {
    format!("b{i}")
}

/// The backend index answering as `name`.
pub fn backend_named(name: &str) -> Option<usize> {
    (0..BACKENDS).find(|&i| backend_name(i) == name)
}

/// The xlb agent in a client → LB → backends rig; see the module docs.
#[derive(Debug)]
pub struct AgentRig {
    // Dropped in this order, after `Drop::drop` has killed the agent: the
    // servers, then the xdp_pass programs, then the rig itself.
    http: Vec<HttpServer>,
    streams: Vec<StreamEchoServer>,
    _peer_programs: Vec<Attachment>,
    _peer_datapath: Datapath,
    /// The topology; its `rig` owns the namespaces, the bpffs and the agent
    /// process.
    pub topo: ClientLbBackends,
    client: XlbClient,
    workdir: PathBuf,
    config: PathBuf,
    pin_dir: PathBuf,
    agent: Option<Spawned>,
    /// The log of every agent started, oldest first.
    logs: Vec<PathBuf>,
}

impl AgentRig {
    /// Builds the topology (static neighbours) with `xdp_pass` on the far ends
    /// of the LB's veths; no server and no agent runs yet. `xlb` is the `xlb`
    /// binary the agent and the client commands run from.
    pub fn build(xlb: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let xlb = xlb.into();
        if !xlb.is_file() {
            bail!(
                "the xlb binary {} does not exist: build it first (cargo build -p control-plane)",
                xlb.display()
            );
        }
        let options = Options {
            static_neighbours: true,
            ..Options::default()
        };
        let mut topo = ClientLbBackends::build(BACKENDS, &options).context("building the rig")?;
        let mut datapath = Datapath::load()
            .map_err(|e| Error::Datapath(Box::new(e)))
            .context("loading the datapath for xdp_pass")?;
        let mut programs = Vec::new();
        for peer in [&topo.lb_front.peer, &topo.lb_back.peer] {
            programs.push(
                peer.attach_xdp(&mut datapath, ProgramName::XdpPass, AttachMode::Native)
                    .with_context(|| {
                        format!("attaching xdp_pass to {} in {}", peer.dev, peer.netns)
                    })?,
            );
        }
        let workdir = topo.rig.workdir()?;
        let pin_dir = topo.rig.bpffs()?.join("xlb");
        Ok(Self {
            http: Vec::new(),
            streams: Vec::new(),
            _peer_programs: programs,
            _peer_datapath: datapath,
            topo,
            client: XlbClient::new(xlb, workdir.join("run").join("admin.sock")),
            config: workdir.join("xlb.yaml"),
            workdir,
            pin_dir,
            agent: None,
            logs: Vec::new(),
        })
    }

    /// The client's namespace.
    pub fn client(&self) -> &Netns {
        &self.topo.client.netns
    }

    /// The LB's namespace (where the agent runs).
    pub fn lb(&self) -> &Netns {
        &self.topo.lb
    }

    /// The namespace of backend `i`.
    pub fn backend(&self, i: usize) -> &Netns {
        &self.topo.backends[i].netns
    }

    /// Backend `i`'s IPv4 address with `port`.
    pub fn backend_addr(&self, i: usize, port: u16) -> SocketAddr {
        SocketAddr::new(self.topo.backends[i].v4.into(), port)
    }

    /// The VIP (IPv4) with `port`.
    pub fn vip_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(vip(), port)
    }

    /// The client's IPv4 address.
    pub fn client_ip(&self) -> IpAddr {
        self.topo.client.v4.into()
    }

    /// The `xlb` binary.
    pub fn xlb_path(&self) -> &Path {
        &self.client.xlb
    }

    /// The admin socket.
    pub fn admin_socket(&self) -> &Path {
        &self.client.socket
    }

    /// The configuration file the agent reads.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The pin directory (on the rig's bpffs).
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The rig's work directory.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Routes the VIP in the LB's namespace toward the client, as an LB
    /// routes it toward its upstream router (its default route, usually):
    /// the health probes of `mode: dsr` backends, sent to the VIP, leave by
    /// that route, through `eth0`, where the agent's `tc_probe_encap` wraps
    /// them for their backend.
    pub fn route_vip_upstream(&mut self) -> anyhow::Result<()> {
        let host = crate::Cidr::new(vip(), 32)?;
        let route = crate::Route::to(host).via(self.topo.client.v4.into());
        let lb = self.topo.lb.clone();
        self.topo
            .rig
            .add_route(&lb, &route)
            .context("routing the VIP from the LB toward the client")
    }

    /// Starts an HTTP server on backend `i` (its IPv4 address, `port`)
    /// answering `b<i>`.
    pub fn serve_http(&mut self, i: usize, port: u16) -> anyhow::Result<()> {
        let server = self.start_on_backend(i, port, HttpServer::start)?;
        self.http.push(server);
        Ok(())
    }

    /// The HTTP server of backend `i` on `port`, if it runs.
    pub fn http_server(&self, i: usize, port: u16) -> Option<&HttpServer> {
        let addr = self.backend_addr(i, port);
        self.http.iter().find(|s| s.local_addr() == addr)
    }

    /// Starts an echo server (`b<i> <request>`) on backend `i`.
    pub fn serve_echo(&mut self, i: usize, proto: Proto, port: u16) -> anyhow::Result<()> {
        let netns = self.backend(i).clone();
        let addr = self.backend_addr(i, port);
        self.topo
            .rig
            .serve_echo(&netns, proto, addr, &backend_name(i))?;
        Ok(())
    }

    /// Stops backend `i`'s echo server; an error when none ran.
    pub fn stop_echo(&mut self, i: usize, proto: Proto, port: u16) -> anyhow::Result<()> {
        let netns = self.backend(i).clone();
        let addr = self.backend_addr(i, port);
        if !self.topo.rig.stop_echo(&netns, proto, addr)? {
            bail!("no {proto:?} echo server on {addr} to stop");
        }
        Ok(())
    }

    /// Starts a [`StreamEchoServer`] on backend `i`.
    pub fn serve_stream(&mut self, i: usize, port: u16) -> anyhow::Result<()> {
        let server = self.start_on_backend(i, port, StreamEchoServer::start)?;
        self.streams.push(server);
        Ok(())
    }

    /// Starts a server on backend `i`'s IPv4 address and `port`, answering
    /// as `b<i>`.
    fn start_on_backend<T>(
        &self,
        i: usize,
        port: u16,
        start: impl FnOnce(&Netns, SocketAddr, &str) -> Result<T>,
    ) -> Result<T> {
        start(
            self.backend(i),
            self.backend_addr(i, port),
            &backend_name(i),
        )
    }

    /// Writes the agent's configuration file. The new file is renamed over
    /// the old one (as editors and ConfigMap updates do), so the agent never
    /// reads half of it.
    pub fn write_config(&self, yaml: &str) -> anyhow::Result<()> {
        let partial = self.workdir.join("xlb.yaml.new");
        std::fs::write(&partial, yaml).with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &self.config).with_context(|| {
            format!(
                "renaming {} to {}",
                partial.display(),
                self.config.display()
            )
        })
    }

    /// The `xlb agent` command line (without the program), with `extra`
    /// arguments appended.
    pub fn agent_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "agent",
            "--config",
            &self.config.to_string_lossy(),
            "--interface",
            &INTERFACES.join(","),
            "--pin-dir",
            &self.pin_dir.to_string_lossy(),
            "--admin-socket",
            &self.client.socket.to_string_lossy(),
            "--metrics-address",
            &METRICS_ADDRESS.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(extra.iter().map(|&a| a.to_owned()));
        args
    }

    /// Starts `xlb agent` in the LB namespace on the configuration file
    /// (write it first) and waits until `xlb status` says the first sync is
    /// programmed and both interfaces are attached. `extra` goes on the
    /// agent's command line (`--version-stamp 7`, `--hash-seed 1`, ...).
    pub fn start_agent(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let pid = self.spawn_agent(&self.agent_args(extra))?;
        self.wait_ready(AGENT_READY).with_context(|| {
            format!(
                "the agent (pid {pid}) did not get ready; its log:\n{}",
                self.agent_log()
            )
        })
    }

    /// Starts `xlb` with `args` (a whole agent command line, see
    /// [`Self::agent_args`]) in the LB namespace as the rig's agent, without
    /// waiting for it to get ready; its process ID.
    pub fn spawn_agent(&mut self, args: &[String]) -> anyhow::Result<u32> {
        if let Some(agent) = &self.agent {
            bail!("an agent (pid {}) runs already: kill it first", agent.pid);
        }
        let spawned = self.spawn_xlb(args)?;
        let pid = spawned.pid;
        self.agent = Some(spawned);
        Ok(pid)
    }

    /// Runs `xlb` with `args` in the LB namespace beside the rig's agent, if
    /// any, until it exits (an agent expected to refuse to start): its exit
    /// status and its output. Killed, and an error, if it still runs after
    /// `timeout`.
    pub fn run_to_exit(
        &mut self,
        args: &[String],
        timeout: Duration,
    ) -> anyhow::Result<(ExitStatus, String)> {
        let spawned = self.spawn_xlb(args)?;
        let started = std::time::Instant::now();
        let log = || std::fs::read_to_string(&spawned.log).unwrap_or_default();
        loop {
            if let Some(status) = self.topo.rig.process_status(spawned.pid)? {
                self.topo.rig.stop_process(spawned.pid)?;
                return Ok((status, log()));
            }
            if started.elapsed() > timeout {
                self.topo.rig.stop_process(spawned.pid)?;
                bail!(
                    "`xlb {}` still ran after {timeout:?}; its log:\n{}",
                    args.join(" "),
                    log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn_xlb(&mut self, args: &[String]) -> anyhow::Result<Spawned> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let program = self.client.xlb.to_string_lossy().into_owned();
        let lb = self.topo.lb.clone();
        let spawned = self.topo.rig.spawn(&lb, &program, &args)?;
        debug!(pid = spawned.pid, log = %spawned.log.display(), "xlb started");
        self.logs.push(spawned.log.clone());
        Ok(spawned)
    }

    /// Waits until the agent answers, has programmed its first sync, and has
    /// both interfaces attached; fails at once when the agent exited.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let pid = self.agent.as_ref().context("no agent runs")?.pid;
        wait_agent_ready(&mut self.topo.rig, pid, &self.client, &INTERFACES, timeout)
    }

    /// The exit status of the agent if it has exited; `None` while it runs.
    pub fn agent_exit(&mut self) -> Result<Option<ExitStatus>> {
        match &self.agent {
            Some(agent) => {
                let pid = agent.pid;
                self.topo.rig.process_status(pid)
            }
            None => Ok(None),
        }
    }

    /// The running agent's process ID.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(|a| a.pid)
    }

    /// Kills the agent with SIGKILL (no cleanup of its own can run) and reaps
    /// it. Its pinned links and maps stay and keep forwarding.
    pub fn kill_agent(&mut self) -> anyhow::Result<ExitStatus> {
        let agent = self.agent.take().context("no agent runs")?;
        Ok(self.topo.rig.stop_process(agent.pid)?)
    }

    /// Sends SIGHUP to the agent (reload the configuration now).
    pub fn hangup(&self) -> anyhow::Result<()> {
        let agent = self.agent.as_ref().context("no agent runs")?;
        let pid = i32::try_from(agent.pid).context("pid out of range")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .with_context(|| format!("sending SIGHUP to the agent (pid {pid})"))
    }

    /// The running (or last) agent's log so far.
    pub fn agent_log(&self) -> String {
        self.logs
            .last()
            .map(|log| {
                std::fs::read_to_string(log).unwrap_or_else(|e| format!("({}: {e})", log.display()))
            })
            .unwrap_or_default()
    }

    /// Every agent's log, oldest first, each under a heading.
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        for (n, log) in self.logs.iter().enumerate() {
            let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("({e})"));
            let _ = writeln!(out, "--- agent {n}: {}\n{text}", log.display());
        }
        out
    }

    /// See [`XlbClient::command_line`].
    pub fn xlb_command_line(&self, args: &[&str]) -> String {
        self.client.command_line(args)
    }

    /// See [`XlbClient::run`].
    pub fn xlb(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.client.run(args)
    }

    /// See [`XlbClient::ok`].
    pub fn xlb_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        self.client.ok(args)
    }

    /// See [`XlbClient::json`].
    pub fn xlb_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        self.client.json(args)
    }

    /// `xlb status -o json` (a `StatusView` of the control plane's API).
    pub fn status(&self) -> anyhow::Result<Value> {
        self.client.status()
    }

    /// Reloads attempted so far (good and rejected), from `xlb status`.
    pub fn reloads(&self) -> anyhow::Result<u64> {
        let status = self.status()?;
        let count = |key: &str| {
            status[key]
                .as_u64()
                .with_context(|| format!("status has no {key}: {status}"))
        };
        Ok(count("reloads_ok")? + count("reloads_failed")?)
    }

    /// Writes `yaml` as the configuration, signals the agent, and waits until
    /// it has reloaded (good or rejected); returns `xlb status` after it.
    pub fn apply_config(&self, yaml: &str, timeout: Duration) -> anyhow::Result<Value> {
        let before = self.reloads()?;
        self.write_config(yaml)?;
        self.hangup()?;
        wait_for(timeout, "the agent to reload its configuration", || {
            Ok(self.reloads().ok().filter(|&n| n > before).map(drop))
        })?;
        self.status()
    }

    /// `GET path` on the agent's metrics address, from the LB namespace.
    pub fn metrics_get(&self, path: &str) -> anyhow::Result<HttpResponse> {
        Ok(http_get(self.lb(), METRICS_ADDRESS, path, CLI_TIMEOUT)?)
    }

    /// The ID of the XDP program attached to the LB's `dev`
    /// (`ip -j link show dev <dev>` in the LB namespace), `None` without one.
    pub fn xdp_prog_id(&self, dev: &str) -> anyhow::Result<Option<u32>> {
        let out = self
            .topo
            .lb
            .exec("ip", &["-j", "link", "show", "dev", dev])?;
        let links: Value =
            serde_json::from_str(&out).with_context(|| format!("`ip -j link` printed {out}"))?;
        Ok(xdp_prog_id(&links[0]))
    }

    /// The version stamp of the program attached to the LB's `dev`: the
    /// `BUILD_STAMP` the datapath wrote into the program's frozen
    /// `.rodata.stamp` map, read with bpftool. `None` without a program or
    /// without that map.
    pub fn xdp_prog_stamp(&self, dev: &str) -> anyhow::Result<Option<u32>> {
        let Some(prog) = self.xdp_prog_id(dev)? else {
            return Ok(None);
        };
        let shown = bpftool_json(&["prog", "show", "id", &prog.to_string()])?;
        let maps: Vec<u64> = shown["map_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        for map in maps {
            let id = map.to_string();
            let info = bpftool_json(&["map", "show", "id", &id])?;
            if !info["name"].as_str().is_some_and(|n| n.ends_with(".stamp")) {
                continue;
            }
            let dump = bpftool_json(&["map", "dump", "id", &id])?;
            let bytes: Vec<u8> = dump[0]["value"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter_map(|b| b.as_str())
                        .filter_map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).ok())
                        .collect()
                })
                .unwrap_or_default();
            let stamp: [u8; 4] = bytes
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .with_context(|| format!("map {id} holds no u32: {dump}"))?;
            // BPF maps hold the host's byte order.
            return Ok(Some(u32::from_ne_bytes(stamp)));
        }
        Ok(None)
    }

    /// The BPF objects the agent owns now: the programs on the LB's
    /// interfaces and everything pinned under the pin directory.
    pub fn bpf_objects(&self) -> anyhow::Result<BpfObjects> {
        let mut objects = BpfObjects::default();
        for dev in INTERFACES {
            objects.programs.extend(self.xdp_prog_id(dev)?);
        }
        for path in files_under(&self.pin_dir)? {
            let (kind, id) = pinned_id(&path)?;
            match kind {
                BpfKind::Link => objects.links.push(id),
                BpfKind::Map => objects.maps.push(id),
                BpfKind::Program => objects.programs.push(id),
            }
        }
        objects.programs.sort_unstable();
        objects.programs.dedup();
        Ok(objects)
    }
}

/// The `xlb` command line pointed at one agent's admin socket.
#[derive(Clone, Debug)]
pub struct XlbClient {
    xlb: PathBuf,
    socket: PathBuf,
}

impl XlbClient {
    pub const fn new(xlb: PathBuf, socket: PathBuf) -> Self {
        Self { xlb, socket }
    }

    /// The admin socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The command line for `args` (the program first), as a user would
    /// type it.
    pub fn command_line(&self, args: &[&str]) -> String {
        let mut line = format!("xlb --admin-socket {}", self.socket.display());
        for arg in args {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }

    /// Runs `xlb --admin-socket <socket> args...` and returns its output,
    /// whatever its exit status; at most [`CLI_TIMEOUT`].
    ///
    /// It runs in this process's own namespace: the admin socket is a file
    /// path, reachable from anywhere, and the client sends no network traffic.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = Command::new(&self.xlb);
        command.arg("--admin-socket").arg(&self.socket).args(args);
        output_within(command, CLI_TIMEOUT).with_context(|| self.command_line(args))
    }

    /// [`Self::run`], failing unless the command succeeds; its stdout.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.run(args)?;
        if !output.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                self.command_line(args),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `xlb args... -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all)?;
        serde_json::from_str(&out)
            .with_context(|| format!("`{}` printed no JSON: {out}", self.command_line(&all)))
    }

    /// `xlb status -o json` (a `StatusView` of the control plane's API).
    pub fn status(&self) -> anyhow::Result<Value> {
        self.json(&["status"])
    }
}

impl Drop for AgentRig {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.logs.is_empty() {
            print_logs(&self.all_logs());
        }
        if let Some(agent) = self.agent.take()
            && let Err(e) = self.topo.rig.stop_process(agent.pid)
        {
            warn!(pid = agent.pid, error = %e, "could not kill the agent");
        }
    }
}

#[expect(clippy::print_stderr, reason = "a failing test shows the agent's logs")]
pub(crate) fn print_logs(logs: &str) {
    eprintln!("{logs}");
}

/// Waits until the agent `pid` answers `client`, has programmed its first
/// sync, and has every one of `interfaces` attached; fails at once when the
/// agent exited, with the last status it gave.
pub(crate) fn wait_agent_ready(
    rig: &mut Rig,
    pid: u32,
    client: &XlbClient,
    interfaces: &[&str],
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut last = String::from("no answer yet");
    let waited = wait_for(timeout, "the agent to be synced and attached", || {
        if let Some(status) = rig.process_status(pid)? {
            return Err(Error::Io {
                what: format!("the agent exited ({status})"),
                source: io::Error::other(last.clone()),
            });
        }
        match client.status() {
            Ok(status) if is_ready(&status, interfaces) => Ok(Some(())),
            Ok(status) => {
                last = status.to_string();
                Ok(None)
            }
            Err(e) => {
                last = format!("{e:#}");
                Ok(None)
            }
        }
    });
    waited.with_context(|| format!("last status: {last}"))
}

/// True when a status document says synced with every one of `interfaces`
/// attached.
pub(crate) fn is_ready(status: &Value, interfaces: &[&str]) -> bool {
    let attached: Vec<&str> = status["attached"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v["interface"].as_str()).collect())
        .unwrap_or_default();
    status["synced"] == Value::Bool(true) && interfaces.iter().all(|dev| attached.contains(dev))
}

/// The XDP program ID in one link of `ip -j link show`: `xdp.prog.id`, or
/// the first of `xdp.attached` when several programs are attached.
fn xdp_prog_id(link: &Value) -> Option<u32> {
    let xdp = &link["xdp"];
    let id = xdp["prog"]["id"]
        .as_u64()
        .or_else(|| xdp["attached"][0]["prog"]["id"].as_u64())?;
    u32::try_from(id).ok()
}

/// Runs `command` to completion with its output captured, killing it after
/// `timeout`.
pub(crate) fn output_within(mut command: Command, timeout: Duration) -> anyhow::Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting it")?;
    let drain = |pipe: Option<Box<dyn io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
    );
    let waited = wait_for(timeout, "the command to finish", || {
        child
            .try_wait()
            .map_err(Error::io("waiting for the command"))
    });
    let status = match waited {
        Ok(status) => status,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.into());
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// A kind of BPF object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BpfKind {
    Link,
    Map,
    Program,
}

impl BpfKind {
    const ALL: [Self; 3] = [Self::Link, Self::Map, Self::Program];

    /// `bpftool`'s word for it.
    const fn word(self) -> &'static str {
        match self {
            Self::Link => "link",
            Self::Map => "map",
            Self::Program => "prog",
        }
    }
}

/// BPF object IDs (the kernel never reuses one soon: they are allocated
/// cyclically), to check that they go away with the rig.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpfObjects {
    /// XDP programs attached to the LB's interfaces (and pinned ones).
    pub programs: Vec<u32>,
    /// Pinned links.
    pub links: Vec<u32>,
    /// Pinned maps.
    pub maps: Vec<u32>,
}

impl BpfObjects {
    /// The objects of `self` the kernel still has (`bpftool <kind> show id N`
    /// succeeds).
    pub fn alive(&self) -> anyhow::Result<Self> {
        let still = |kind: BpfKind, ids: &[u32]| -> anyhow::Result<Vec<u32>> {
            let mut alive = Vec::new();
            for &id in ids {
                let output = Command::new("bpftool")
                    .args([kind.word(), "show", "id", &id.to_string()])
                    .stdin(Stdio::null())
                    .output()
                    .context("running bpftool")?;
                if output.status.success() {
                    alive.push(id);
                }
            }
            Ok(alive)
        };
        Ok(Self {
            programs: still(BpfKind::Program, &self.programs)?,
            links: still(BpfKind::Link, &self.links)?,
            maps: still(BpfKind::Map, &self.maps)?,
        })
    }

    /// True when there is no object at all.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty() && self.links.is_empty() && self.maps.is_empty()
    }
}

/// Every file below `dir` (recursively).
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let kind = entry
                .file_type()
                .with_context(|| format!("inspecting {}", entry.path().display()))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `bpftool -j args...`, parsed.
fn bpftool_json(args: &[&str]) -> anyhow::Result<Value> {
    let output = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running bpftool")?;
    if !output.status.success() {
        bail!(
            "`bpftool -j {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("`bpftool -j {}` printed no JSON", args.join(" ")))
}

/// What a pin is, and its object's ID (`bpftool -j <kind> show pinned PATH`).
fn pinned_id(path: &Path) -> anyhow::Result<(BpfKind, u32)> {
    for kind in BpfKind::ALL {
        let output = Command::new("bpftool")
            .args(["-j", kind.word(), "show", "pinned"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .context("running bpftool")?;
        if !output.status.success() {
            continue;
        }
        let shown: Value = serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "bpftool printed {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })?;
        let id = shown["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .with_context(|| format!("bpftool shows no id for {}: {shown}", path.display()))?;
        return Ok((kind, id));
    }
    Err(anyhow!(
        "{} is no pinned link, map or program",
        path.display()
    ))
}

/// The first I/O error in `err`'s chain, for telling resets from timeouts.
pub fn io_error_kind(err: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prog_ids_from_ip_link_json() {
        let single: Value = serde_json::from_str(
            r#"{"ifname":"eth0","xdp":{"mode":1,"prog":{"id":42,"name":"xdp_lb"}}}"#,
        )
        .unwrap();
        assert_eq!(xdp_prog_id(&single), Some(42));
        let multi: Value = serde_json::from_str(
            r#"{"ifname":"eth0","xdp":{"mode":4,"attached":[{"mode":1,"prog":{"id":7}}]}}"#,
        )
        .unwrap();
        assert_eq!(xdp_prog_id(&multi), Some(7));
        let none: Value = serde_json::from_str(r#"{"ifname":"eth0"}"#).unwrap();
        assert_eq!(xdp_prog_id(&none), None);
    }

    #[test]
    fn ready_means_synced_with_both_interfaces() {
        let status = |synced: bool, ifaces: &[&str]| {
            let attached: Vec<Value> = ifaces
                .iter()
                .map(|i| serde_json::json!({"interface": i, "mode": "native"}))
                .collect();
            serde_json::json!({"synced": synced, "attached": attached})
        };
        assert!(is_ready(&status(true, &["eth0", "eth1"]), &INTERFACES));
        assert!(!is_ready(&status(false, &["eth0", "eth1"]), &INTERFACES));
        assert!(!is_ready(&status(true, &["eth0"]), &INTERFACES));
    }
}
