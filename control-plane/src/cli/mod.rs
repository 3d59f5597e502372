//! `xlb`: runs the agent (`xlb agent`) and talks to it over the admin socket
//! (everything else). Lists print a table by default, or the admin API's own
//! JSON/YAML documents with `-o json|yaml`; errors go to stderr with exit
//! status 1.

mod decap;
mod output;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{self, IsTerminal as _, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use clap_complete::Shell;

use self::output::Format;
use xdp_lb::MapSizes;

use crate::{
    admin::{AdminClient, Cursor},
    agent::{AgentOptions, MapSizeOptions},
    api::{DrainRequest, SimulateRequest, StatsView, StatusView},
    model::Protocol,
    reconcile::Reconciler,
};

/// The admin socket when neither `--admin-socket` nor `XLB_ADMIN_SOCKET` says otherwise.
const DEFAULT_ADMIN_SOCKET: &str = "/run/xlb/admin.sock";

/// xlb: an XDP layer-4 load balancer — the agent and its command line.
#[derive(Debug, Parser)]
#[command(name = "xlb", version, propagate_version = true)]
struct Cli {
    /// The agent's admin socket.
    // Same ID, flag and variable as `AgentOptions::admin_socket`: clap
    // skips a global for a subcommand that has its own argument of that ID
    // and hands it the value given on either side, so `xlb --admin-socket S
    // agent` and `xlb agent --admin-socket S` agree.
    #[arg(
        long,
        global = true,
        env = "XLB_ADMIN_SOCKET",
        default_value = DEFAULT_ADMIN_SOCKET,
        value_name = "PATH"
    )]
    admin_socket: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: load and attach the datapath and keep it equal to its
    /// source, a configuration file or the Kubernetes API.
    Agent(Box<AgentOptions>),
    /// On a backend of direct-server-return services: strip the LB's outer
    /// header from packets for these VIPs (held on `lo`) until SIGINT or
    /// SIGTERM.
    Decap(decap::DecapArgs),
    /// Validate a configuration file as the agent would, without applying it.
    ///
    /// It must also fit the maps of an agent with the same `--max-*` flags
    /// (`xlb agent`'s, with the same defaults and variables). Counted for a
    /// fresh datapath, as for an agent starting without pinned state: an
    /// agent with pinned state, or in the middle of a change, still holds
    /// the frontends, addresses and IDs of what it has programmed until it
    /// has written what is new, and may need more.
    CheckConfig {
        /// The configuration file (native xlb services and/or Kubernetes
        /// Service + EndpointSlice documents).
        file: PathBuf,

        #[command(flatten)]
        sizes: MapSizeOptions,
    },
    /// Services, their frontends and backends.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Backends, with their status, health and traffic.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Health checks: how each backend is probed, what it found, and why
    /// its last probe failed.
    #[command(subcommand)]
    Health(HealthCommand),
    /// What the datapath maps hold.
    #[command(subcommand)]
    Bpf(BpfCommand),
    /// Connection tracking.
    #[command(subcommand)]
    Ct(CtCommand),
    /// Maglev lookup tables.
    #[command(subcommand)]
    Maglev(MaglevCommand),
    /// Which backend a flow would reach, and why.
    Simulate(SimulateArgs),
    /// The datapath's counters.
    Stats(StatsArgs),
    /// Watch sampled flow events (start the agent with
    /// `--flow-event-sampling N`): new flows and their backend, drops and
    /// their reason, one line each, until Ctrl-C, `--count` or `--duration`.
    /// Also says where events were missed or lost to the datapath's full
    /// ring, and waits through an agent restart, saying so.
    Observe(ObserveArgs),
    /// Drain a backend: it keeps its established flows and gets no new ones.
    Drain(DrainArgs),
    /// Undo a drain: the backend takes new flows again.
    Undrain(DrainArgs),
    /// The agent's state: version, attachments, sync, reloads.
    Status(OutputArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// List services like `cilium service list`: one row per frontend.
    List(OutputArgs),
}

#[derive(Debug, Subcommand)]
enum BackendCommand {
    /// List backends.
    List(OutputArgs),
}

#[derive(Debug, Subcommand)]
enum HealthCommand {
    /// List the health checks the agent runs, one per backend, check and probe path.
    List(OutputArgs),
}

#[derive(Debug, Subcommand)]
enum BpfCommand {
    /// The load-balancing maps.
    #[command(subcommand)]
    Lb(BpfLbCommand),
}

#[derive(Debug, Subcommand)]
enum BpfLbCommand {
    /// Frontend → backends, read from the datapath's maps (what it
    /// forwards, pinned state of an earlier agent included), like `cilium
    /// bpf lb list`; then the tables, active backends and addresses no
    /// frontend reaches, if any.
    List(OutputArgs),
}

#[derive(Debug, Subcommand)]
enum CtCommand {
    /// List tracked flows.
    List {
        /// Only the flows of this service.
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Subcommand)]
enum MaglevCommand {
    /// A service's table: slots held per backend.
    Show {
        /// The service's name (`web`, or `namespace/name:port`).
        service: String,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
struct SimulateArgs {
    /// The client's address and port.
    #[arg(long, value_name = "IP:PORT", value_parser = socket_addr, required_unless_present = "flows")]
    client: Option<SocketAddr>,
    /// The address and port the client connects to.
    #[arg(long, value_name = "IP:PORT", value_parser = socket_addr, required_unless_present = "flows")]
    frontend: Option<SocketAddr>,
    /// The flow's protocol (with --flows, each line names its own).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Tcp, conflicts_with = "flows")]
    protocol: ProtocolArg,
    /// Many flows, one per line (`-`: standard input): `CLIENT FRONTEND
    /// [tcp|udp]`, e.g. `198.18.0.2:40000 198.19.0.1:80 udp`; `#` starts a
    /// comment. One row (or JSON object) per flow, in order: compare the
    /// answers of several LB instances.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["client", "frontend"])]
    flows: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

/// `--protocol`, lowercase on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ProtocolArg {
    Tcp,
    Udp,
}

impl From<ProtocolArg> for Protocol {
    fn from(protocol: ProtocolArg) -> Self {
        match protocol {
            ProtocolArg::Tcp => Self::Tcp,
            ProtocolArg::Udp => Self::Udp,
        }
    }
}

#[derive(Debug, Args)]
struct StatsArgs {
    /// Print what the counters counted every interval, until Ctrl-C.
    #[arg(long, short)]
    watch: bool,
    /// The watch interval (`500ms`, `1s`, `1m`).
    #[arg(long, requires = "watch", default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct ObserveArgs {
    /// Stop after this many events.
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after this long (`10s`, `1m`).
    #[arg(long, value_parser = parse_interval)]
    duration: Option<Duration>,
    /// Output format: a line per event (JSON: one object per line).
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// The longest `--interval` or `--duration`: past it, a deadline would not
/// fit the clock (and Ctrl-C is the way to wait for ever).
const MAX_INTERVAL: Duration = Duration::from_secs(MAX_INTERVAL_DAYS * 24 * 3600);
const MAX_INTERVAL_DAYS: u64 = 365;

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval.is_zero() {
        return Err("must be longer than 0".into());
    }
    if interval > MAX_INTERVAL {
        return Err(format!("at most {MAX_INTERVAL_DAYS} days"));
    }
    Ok(interval)
}

/// An address and port as the command line takes them, with the forms in
/// the error: a bare address is the usual slip.
fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|e| {
        if text.parse::<std::net::IpAddr>().is_ok() {
            format!("no port: write IP:PORT, or [IPv6]:PORT ({e})")
        } else {
            format!("{e}: write IP:PORT, or [IPv6]:PORT")
        }
    })
}

#[derive(Debug, Args)]
struct DrainArgs {
    /// The backend's address and port.
    #[arg(value_name = "IP:PORT", value_parser = socket_addr)]
    backend: SocketAddr,
    /// Only in this service (default: every service the backend serves).
    #[arg(long)]
    service: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

/// `xlb simulate --flows`: every flow of the file, asked one after another.
async fn simulate_flows(client: &AdminClient, path: &Path, format: Format) -> anyhow::Result<()> {
    let text = if path == Path::new("-") {
        io::read_to_string(io::stdin()).context("reading the flows from standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let requests = parse_flows(&text).with_context(|| format!("flows in {}", path.display()))?;
    let mut answers = Vec::with_capacity(requests.len());
    // A flow the agent refuses to simulate (ends of two families, say) is
    // named by its line; the others are answered all the same.
    let mut refused = Vec::new();
    for (line, request) in requests.iter().cloned() {
        match client.simulate(&request).await {
            Ok(view) => answers.push(output::SimulatedFlow { request, view }),
            Err(e) => refused.push(format!(
                "line {line}: {} -> {}: {e:#}",
                request.client, request.frontend
            )),
        }
    }
    print(&output::render(format, &answers, |a| {
        output::simulated_flows_table(a)
    })?)?;
    if refused.is_empty() {
        return Ok(());
    }
    for why in &refused {
        writeln!(io::stderr(), "xlb: {why}")?;
    }
    anyhow::bail!(
        "{} of the {} flows in {} could not be simulated",
        refused.len(),
        requests.len(),
        path.display()
    )
}

/// The lines of a `--flows` file: `CLIENT FRONTEND [tcp|udp]` (TCP when
/// left out), blank lines and `#` comments skipped; each flow with its line
/// number.
fn parse_flows(text: &str) -> anyhow::Result<Vec<(usize, SimulateRequest)>> {
    let mut flows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match fields[..] {
            [client, frontend] => Ok((client, frontend, Protocol::Tcp)),
            [client, frontend, protocol] => match protocol.to_ascii_lowercase().as_str() {
                "tcp" => Ok((client, frontend, Protocol::Tcp)),
                "udp" => Ok((client, frontend, Protocol::Udp)),
                _ => Err(format!("protocol {protocol:?} is neither tcp nor udp")),
            },
            _ => Err("expected `CLIENT FRONTEND [tcp|udp]`".to_owned()),
        };
        let request = parsed.and_then(|(client, frontend, protocol)| {
            let address = |what: &str, text: &str| {
                socket_addr(text).map_err(|e| format!("{what} {text:?}: {e}"))
            };
            Ok(SimulateRequest {
                client: address("client", client)?,
                frontend: address("frontend", frontend)?,
                protocol,
            })
        });
        flows.push((
            n + 1,
            request.map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?,
        ));
    }
    Ok(flows)
}

/// Runs the `xlb` command line and returns its exit status: 0 on success, 1
/// on any failure (with the error on stderr), 2 for a usage error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Agent(options) = &cli.command {
        let mut xlb = Cli::command();
        xlb.build();
        let agent = xlb
            .find_subcommand_mut("agent")
            .expect("`agent` is a subcommand");
        if let Err(usage) = options.check_source(agent) {
            usage.exit();
        }
    }
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            // A closed pipe (`xlb service list | head`) is not a failure.
            if let Some(io_error) = error.downcast_ref::<io::Error>()
                && io_error.kind() == io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            writeln!(
                io::stderr(),
                "xlb: {}",
                crate::error_text::one_line(error.as_ref())
            )
            .ok();
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&cli.admin_socket);
    let command = match cli.command {
        Command::Agent(options) => {
            init_tracing(&options.log_level)?;
            crate::agent::run(*options)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::CheckConfig { file, sizes } => return check_config(&file, sizes),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "xlb", &mut io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        command => command,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Command::Decap(args) = &command {
        init_tracing("info")?;
        runtime.block_on(decap::run(args))?;
        return Ok(ExitCode::SUCCESS);
    }
    runtime.block_on(admin_command(&client, command))?;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr, filtered by `RUST_LOG` when set, else by `--log-level`.
fn init_tracing(level: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;

    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| anyhow::anyhow!("RUST_LOG={directives:?} is not a tracing filter: {e}"))?,
        _ => level_filter(level)?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        // Colours only for a person at a terminal: journald and `kubectl
        // logs` would keep the escape codes.
        .with_ansi(io::stderr().is_terminal())
        .try_init()
        .map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}

/// The levels a `--log-level` directive may name on its own (or by number,
/// 0 for off to 5 for trace).
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// `--log-level`: a level, or `tracing` directives (`TARGET=LEVEL`, comma
/// separated). A bare word that is not a level would be a target at every
/// level to `EnvFilter`, and match nothing of ours: `warning` would silence
/// the agent, so it is refused.
fn level_filter(level: &str) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    for directive in level.split(',').map(str::trim) {
        let is_target = directive.contains('=') || directive.contains('[');
        let is_level = LEVELS.contains(&directive.to_ascii_lowercase().as_str())
            || directive
                .parse::<u8>()
                .is_ok_and(|n| usize::from(n) < LEVELS.len());
        if !is_target && !is_level {
            anyhow::bail!(
                "--log-level {level:?}: {directive:?} is neither a level ({}) nor a \
                 `TARGET=LEVEL` directive (e.g. `control_plane=debug,xdp_lb=debug`)",
                LEVELS.join(", ")
            );
        }
    }
    // The parser's error holds its cause in its own text: kept as a source,
    // it would be printed twice.
    tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("--log-level {level:?} is not a tracing filter: {e}"))
}

/// `xlb check-config`: validation only. Exit 1 and every problem on stderr
/// when the file is bad or does not fit maps of `sizes`; a one-line summary
/// on stdout otherwise.
fn check_config(file: &Path, sizes: MapSizeOptions) -> anyhow::Result<ExitCode> {
    match crate::source::file::load_with_warnings(file) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                writeln!(io::stderr(), "{}: warning: {warning}", file.display())?;
            }
            let model = loaded.model;
            let sizes = sizes.map_sizes(MapSizes::default().conntrack);
            if let Err(refused) = Reconciler::fits_fresh(&model, sizes) {
                for overflow in &refused.overflows {
                    writeln!(io::stderr(), "{}: {overflow}", file.display())?;
                }
                return Ok(ExitCode::FAILURE);
            }
            let frontends = model.frontends().count();
            // A backend is an address:port, however many services share it
            // (the agent gives it one ID).
            let backends: BTreeSet<_> = model
                .services
                .values()
                .flat_map(|s| s.backends.iter().map(|b| b.addr))
                .collect();
            let services = model.services.len();
            print(&format!(
                "{}: ok: {services} {}, {frontends} {}, {} {}\n",
                file.display(),
                plural(services, "service", "services"),
                plural(frontends, "frontend", "frontends"),
                backends.len(),
                plural(backends.len(), "backend", "backends"),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            // One problem per line, each already naming the file and the
            // place (`FILE: services[2].port: ...`), as compilers do; an
            // unreadable file also gets its cause.
            let mut text = error.to_string();
            let mut cause = std::error::Error::source(&error);
            while let Some(source) = cause {
                text.push_str(&format!(": {source}"));
                cause = source.source();
            }
            writeln!(io::stderr(), "{text}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// Writes to stdout; a write error (a closed pipe) is returned as an
/// `io::Error` so [`main`] can tell it apart.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Warns on stderr when the agent has not programmed a first sync: `service
/// list` and `backend list` show its model, which is then not what the
/// datapath holds. An agent restarted on pinned state keeps forwarding it
/// while its configuration is rejected, or while the first sync is under
/// way, and a list showing no service would say otherwise; `xlb bpf lb
/// list` reads the maps and shows it. The list itself is still printed, as
/// the agent has it; a status that could not be read (`None`) adds nothing.
fn warn_unless_synced(status: Option<&StatusView>) {
    if let Some(status) = status
        && !status.synced
    {
        writeln!(
            io::stderr(),
            "xlb: warning: the agent has not programmed its services yet (its configuration \
             was rejected, or its first sync is under way: see `xlb status`); the datapath \
             still forwards what it held before, which this list does not show: `xlb bpf lb \
             list` shows what the datapath holds"
        )
        .ok();
    }
}

/// The commands that ask the agent.
async fn admin_command(client: &AdminClient, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Service(ServiceCommand::List(out)) => {
            let services = client.services().await.context("listing services")?;
            warn_unless_synced(client.status().await.ok().as_ref());
            print(&output::render(out.output, &services, |s| {
                output::services_table(s)
            })?)
        }
        Command::Backend(BackendCommand::List(out)) => {
            let backends = client.backends().await.context("listing backends")?;
            let status = client.status().await.ok();
            warn_unless_synced(status.as_ref());
            // The table says which drains hold in no service; the
            // documents have them in `xlb status`'s.
            let drains = status.as_ref().and_then(|s| s.drains.as_ref());
            print(&output::render(out.output, &backends, |b| {
                output::backends_table(b, drains)
            })?)
        }
        Command::Health(HealthCommand::List(out)) => {
            let checks = client
                .health_checks()
                .await
                .context("listing health checks")?;
            print(&output::render(out.output, &checks, |c| {
                output::health_checks_table(c)
            })?)
        }
        // The datapath's own maps: what it forwards, synced or not, and
        // what no frontend reaches.
        Command::Bpf(BpfCommand::Lb(BpfLbCommand::List(out))) => {
            let view = client
                .datapath_lb()
                .await
                .context("reading the datapath's maps")?;
            print(&output::render(out.output, &view, output::lb_table)?)
        }
        Command::Ct(CtCommand::List {
            service,
            output: out,
        }) => {
            let flows = client
                .conntrack(service.as_deref())
                .await
                .context("listing tracked flows")?;
            print(&output::render(out.output, &flows, |f| {
                output::flows_table(f)
            })?)
        }
        Command::Maglev(MaglevCommand::Show {
            service,
            output: out,
        }) => {
            let table = client
                .maglev(&service)
                .await
                .with_context(|| format!("reading the Maglev table of {service}"))?;
            if let Some(document) = output::document(out.output, &table)? {
                return print(&document);
            }
            let addresses: BTreeMap<u32, SocketAddr> = client
                .services()
                .await
                .context("listing services for the backends' addresses")?
                .into_iter()
                .filter(|s| s.name == table.service)
                .flat_map(|s| s.backends)
                .map(|b| (b.id, b.address))
                .collect();
            print(&output::maglev_text(&table, &addresses))
        }
        Command::Simulate(SimulateArgs {
            flows: Some(path),
            output: out,
            ..
        }) => simulate_flows(client, &path, out.output).await,
        Command::Simulate(args) => {
            let (Some(flow_client), Some(frontend)) = (args.client, args.frontend) else {
                anyhow::bail!("--client and --frontend, or --flows");
            };
            let request = SimulateRequest {
                client: flow_client,
                frontend,
                protocol: args.protocol.into(),
            };
            let view = client
                .simulate(&request)
                .await
                .context("simulating the flow")?;
            print(&output::render(args.output.output, &view, |v| {
                output::simulate_text(&request, v)
            })?)
        }
        Command::Stats(args) if args.watch => {
            watch_stats(client, args.interval, args.output.output).await
        }
        Command::Stats(args) => {
            let stats = client.stats().await.context("reading the counters")?;
            print(&output::render(args.output.output, &stats, |s| {
                output::stats_table(s)
            })?)
        }
        Command::Observe(args) => observe(client, &args).await,
        Command::Drain(args) => drain(client, args, true).await,
        Command::Undrain(args) => drain(client, args, false).await,
        Command::Status(out) => {
            let status = client
                .status()
                .await
                .context("reading the agent's status")?;
            print(&output::render(out.output, &status, |s| {
                output::status_text(s)
            })?)
        }
        Command::Agent(_)
        | Command::Decap(_)
        | Command::CheckConfig { .. }
        | Command::Completions { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

async fn drain(client: &AdminClient, args: DrainArgs, drain: bool) -> anyhow::Result<()> {
    let request = DrainRequest {
        backend: args.backend,
        service: args.service,
    };
    let what = if drain { "draining" } else { "undraining" };
    let view = if drain {
        client.drain(&request).await
    } else {
        client.undrain(&request).await
    }
    .with_context(|| format!("{what} {}", request.backend))?;
    print(&output::render(args.output.output, &view, |v| {
        output::drain_text(request.backend, drain, v)
    })?)?;
    // An undrain the file's drain holds against did not do what was asked:
    // an error, naming the file to edit.
    if !drain && output::undrain_refused(request.backend, &view, None).is_some() {
        let file = client.status().await.ok().and_then(|s| s.config_file);
        if let Some(refused) = output::undrain_refused(request.backend, &view, file.as_deref()) {
            anyhow::bail!(refused);
        }
    }
    Ok(())
}

/// `xlb observe`: events as they come, until Ctrl-C, `--count` events or
/// `--duration`. Each call to the agent waits at most a second, so the
/// bounds hold to about that. It reads the agent's history from a cursor of
/// its own, so another observer takes nothing from it; events that left
/// the history before it read them are told as a `missed` line, events the
/// datapath lost to its full ring since the last answer as a `lost` line.
///
/// An agent that stops answering once it has answered is waited for (it
/// may be restarting; stderr says so once): the new agent's answer to the
/// old cursor says it restarted, told as a `restarted` line, and the
/// observer goes on with the new agent's events from its oldest one.
async fn observe(client: &AdminClient, args: &ObserveArgs) -> anyhow::Result<()> {
    const POLL: Duration = Duration::from_secs(1);
    const BATCH: usize = 256;
    refuse_without_sampling(client, "the agent").await?;
    // Only what happens from now on: the agent's history holds its last
    // few thousand events.
    let since = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .context("reading the clock")?;
    let since_ns = u64::try_from(since.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(since.tv_nsec()).unwrap_or(0);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let batch = |left: Option<u64>| {
        left.and_then(|n| usize::try_from(n).ok())
            .unwrap_or(BATCH)
            .min(BATCH)
    };
    let mut seen = 0;
    let mut cursor: Option<Cursor> = None;
    let mut lost = LostCount::default();
    let mut away = false;
    loop {
        let left = args.count.map(|n| n.saturating_sub(seen));
        let wait = match deadline {
            Some(at) => at
                .saturating_duration_since(tokio::time::Instant::now())
                .min(POLL),
            None => POLL,
        };
        if left == Some(0) || (deadline.is_some() && wait.is_zero()) {
            return Ok(());
        }
        // The first call answers at once: the count of lost events in its
        // answer is where this observer starts counting from.
        let call_wait = if cursor.is_none() {
            Duration::ZERO
        } else {
            wait
        };
        let answer = tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("waiting for Ctrl-C")?;
                return Ok(());
            }
            answer = client.events_since(batch(left), call_wait, since_ns, cursor) => answer,
        };
        let page = match answer {
            Ok(page) => page,
            Err(error) if cursor.is_some() && error.agent_away() => {
                if !away {
                    writeln!(
                        io::stderr(),
                        "xlb: the agent stopped answering ({error}); waiting for it to come back"
                    )
                    .ok();
                    away = true;
                }
                tokio::select! {
                    signal = &mut ctrl_c => {
                        signal.context("waiting for Ctrl-C")?;
                        return Ok(());
                    }
                    () = tokio::time::sleep(wait) => continue,
                }
            }
            Err(error) => return Err(error).context("reading flow events"),
        };
        away = false;
        cursor = Some(Cursor::after(&page));
        let mut text = String::new();
        if page.restarted {
            // The new agent may have been started with other flags.
            refuse_without_sampling(client, "the restarted agent").await?;
            text += &output::restarted_line(args.output, page.missed)?;
            // Losses are counted again from the new agent's first answer:
            // what happened in between is what the restarted line says.
            lost = LostCount::default();
        } else if page.missed > 0 {
            text += &output::missed_line(args.output, page.missed)?;
        }
        if let Some(grown) = lost.grown(page.lost_ring_full) {
            text += &output::lost_line(args.output, grown)?;
        }
        for event in &page.events {
            text += &output::event_line(args.output, event)?;
        }
        seen += u64::try_from(page.events.len()).unwrap_or(u64::MAX);
        print(&text)?;
    }
}

/// Refuses to observe `agent` (as the message names it) when it samples no
/// flow events: `xlb observe` would wait for ever. An agent whose status
/// cannot be read is given the benefit of the doubt.
async fn refuse_without_sampling(client: &AdminClient, agent: &str) -> anyhow::Result<()> {
    if let Ok(status) = client.status().await
        && status.flow_event_sampling == Some(0)
    {
        anyhow::bail!(
            "{agent} reports no flow events: start it with --flow-event-sampling N (one new \
             flow or drop in N)"
        );
    }
    Ok(())
}

/// The datapath's count of flow events lost to its full ring, as `xlb
/// observe` last saw it.
#[derive(Debug, Default)]
struct LostCount(Option<u64>);

impl LostCount {
    /// How much `total` (an answer's) grew since the last one; `None` for
    /// the first (where counting starts) or when it did not grow. A smaller
    /// total is the count of new maps (the datapath was loaded anew): it is
    /// counted from.
    fn grown(&mut self, total: u64) -> Option<u64> {
        let last = self.0.replace(total)?;
        total.checked_sub(last).filter(|&grown| grown > 0)
    }
}

/// `xlb stats --watch`: what the counters counted in each interval, until
/// Ctrl-C. JSON prints one document per line, YAML one document per interval.
async fn watch_stats(
    client: &AdminClient,
    interval: Duration,
    format: Format,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(interval);
    // A slow agent should not make the next intervals shorter.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut last: Option<(StatsView, tokio::time::Instant)> = None;
    let mut printed = false;
    loop {
        let tick = tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("waiting for Ctrl-C")?;
                return Ok(());
            }
            tick = ticks.tick() => tick,
        };
        let stats = client.stats().await.context("reading the counters")?;
        if let Some((before, then)) = &last {
            let delta = output::stats_delta(before, &stats);
            let elapsed = tick.duration_since(*then);
            let text = match format {
                // A blank line between intervals keeps the blocks apart.
                Format::Table if printed => {
                    "\n".to_owned() + &output::stats_delta_table(&delta, SystemTime::now(), elapsed)
                }
                Format::Table => output::stats_delta_table(&delta, SystemTime::now(), elapsed),
                Format::Json => serde_json::to_string(&delta).context("encoding JSON")? + "\n",
                Format::Yaml => {
                    "---\n".to_owned()
                        + &serde_yaml_ng::to_string(&delta).context("encoding YAML")?
                }
            };
            print(&text)?;
            printed = true;
        }
        last = Some((stats, tick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn observe_counts_lost_events_from_its_first_answer() {
        let mut lost = LostCount::default();
        // Lost before the observer came: not its news.
        assert_eq!(lost.grown(40), None);
        assert_eq!(lost.grown(40), None);
        assert_eq!(lost.grown(45), Some(5));
        // New maps count from 0 again: from there on.
        assert_eq!(lost.grown(2), None);
        assert_eq!(lost.grown(3), Some(1));
    }

    #[test]
    fn admin_socket_reaches_the_agent_from_either_side() {
        let agent = |args: &[&str]| match Cli::try_parse_from(args).expect("parses").command {
            Command::Agent(options) => options.admin_socket,
            other => panic!("not the agent: {other:?}"),
        };
        let base = ["xlb", "--config", "c.yaml", "--interface", "eth0"];
        let before: Vec<&str> = ["xlb", "--admin-socket", "/tmp/a.sock", "agent"]
            .into_iter()
            .chain(base[1..].iter().copied())
            .collect();
        assert_eq!(agent(&before), PathBuf::from("/tmp/a.sock"));
        let after: Vec<&str> = ["xlb", "agent"]
            .into_iter()
            .chain(base[1..].iter().copied())
            .chain(["--admin-socket", "/tmp/b.sock"])
            .collect();
        assert_eq!(agent(&after), PathBuf::from("/tmp/b.sock"));
    }

    #[test]
    fn lists_take_an_output_format() {
        let cli = Cli::try_parse_from(["xlb", "ct", "list", "--service", "web", "-o", "yaml"])
            .expect("parses");
        match cli.command {
            Command::Ct(CtCommand::List { service, output }) => {
                assert_eq!(service.as_deref(), Some("web"));
                assert_eq!(output.output, Format::Yaml);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["xlb", "service", "list", "-o", "xml"]).is_err());
    }

    #[test]
    fn stats_interval_needs_watch_and_a_duration() {
        let cli = Cli::try_parse_from(["xlb", "stats", "--watch", "--interval", "250ms"])
            .expect("parses");
        match cli.command {
            Command::Stats(args) => {
                assert!(args.watch);
                assert_eq!(args.interval, Duration::from_millis(250));
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["xlb", "stats", "--interval", "2s"]).is_err());
        assert!(Cli::try_parse_from(["xlb", "stats", "-w", "--interval", "0s"]).is_err());
    }

    #[test]
    fn simulate_defaults_to_tcp() {
        let cli = Cli::try_parse_from([
            "xlb",
            "simulate",
            "--client",
            "198.18.50.77:40000",
            "--frontend",
            "198.18.100.1:80",
        ])
        .expect("parses");
        match cli.command {
            Command::Simulate(args) => assert!(matches!(args.protocol, ProtocolArg::Tcp)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_flows_file_reads_one_flow_per_line() {
        let flows = parse_flows(
            "# client frontend protocol\n\
             198.18.0.2:40000 198.19.0.1:80 udp\n\
             \n\
             [2001:2::2]:40001  [2001:2:0:ff00::1]:443   # TCP by default\n",
        )
        .unwrap();
        assert_eq!(
            flows,
            [
                (
                    2,
                    SimulateRequest {
                        client: "198.18.0.2:40000".parse().unwrap(),
                        frontend: "198.19.0.1:80".parse().unwrap(),
                        protocol: Protocol::Udp,
                    }
                ),
                (
                    4,
                    SimulateRequest {
                        client: "[2001:2::2]:40001".parse().unwrap(),
                        frontend: "[2001:2:0:ff00::1]:443".parse().unwrap(),
                        protocol: Protocol::Tcp,
                    }
                ),
            ]
        );
        for (bad, says) in [
            (
                "198.18.0.2:1 198.19.0.1:80 sctp",
                "line 1: protocol \"sctp\"",
            ),
            (
                "\n198.18.0.2 198.19.0.1:80",
                "line 2: client \"198.18.0.2\"",
            ),
            ("198.18.0.2:1", "line 1: expected"),
        ] {
            let error = parse_flows(bad).unwrap_err().to_string();
            assert!(error.starts_with(says), "{bad:?}: {error}");
        }
    }

    #[test]
    fn a_log_level_that_is_no_level_is_refused() {
        for good in [
            "info",
            "WARN",
            "off",
            "5",
            "control_plane=debug,xdp_lb=trace",
            "info,kube=warn",
        ] {
            assert!(level_filter(good).is_ok(), "{good}");
        }
        for bad in ["warning", "loud", "info,verbose", "", "6"] {
            let error = level_filter(bad).expect_err(bad).to_string();
            assert!(error.contains("neither a level"), "{bad}: {error}");
        }
    }

    #[test]
    fn intervals_and_counts_are_bounded() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.command);
        for args in [
            &["xlb", "observe", "--duration", "300000000000y"][..],
            &["xlb", "stats", "--watch", "--interval", "2y"],
            &["xlb", "observe", "--count", "0"],
            &["xlb", "observe", "--duration", "0s"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
        assert!(parse(&["xlb", "observe", "--duration", "365days", "-n", "1"]).is_ok());
    }

    #[test]
    fn simulate_protocol_is_per_line_with_flows() {
        let error = Cli::try_parse_from(["xlb", "simulate", "--flows", "f", "--protocol", "udp"])
            .expect_err("--protocol with --flows")
            .to_string();
        assert!(error.contains("cannot be used with"), "{error}");
    }

    #[test]
    fn agent_flags_are_checked_before_the_agent_starts() {
        let agent = |extra: &[&str]| {
            let base = ["xlb", "agent", "--config", "c.yaml"];
            Cli::try_parse_from(base.iter().chain(extra)).map(|_| ())
        };
        assert!(agent(&["--interface", "eth0,eth1"]).is_ok());
        for bad in [
            "",
            "../../tmp",
            "a/b",
            "eth0:1",
            "a b",
            "sixteen-bytes-xx",
            "..",
        ] {
            let error = agent(&["--interface", bad]).expect_err(bad).to_string();
            assert!(
                error.contains("is not an interface name"),
                "{bad:?}: {error}"
            );
        }
        let error = agent(&["--interface", "eth0,,eth1"]).expect_err("an empty name");
        assert!(
            error.to_string().contains("is not an interface name"),
            "{error}"
        );
        for flag in [
            "--max-services",
            "--max-backends",
            "--conntrack-size",
            "--max-addresses",
        ] {
            let error = agent(&["--interface", "eth0", flag, "0"])
                .expect_err(flag)
                .to_string();
            assert!(error.contains(flag), "{error}");
        }
    }

    #[test]
    fn an_address_without_its_port_is_named_as_such() {
        for args in [
            &["xlb", "drain", "198.18.1.100"][..],
            &[
                "xlb",
                "simulate",
                "--client",
                "2001:2::1",
                "--frontend",
                "[2001:2::2]:80",
            ],
        ] {
            let error = Cli::try_parse_from(args).expect_err("no port").to_string();
            assert!(
                error.contains("no port: write IP:PORT, or [IPv6]:PORT"),
                "{error}"
            );
        }
        let error = Cli::try_parse_from(["xlb", "drain", "backend-1:80"])
            .expect_err("not an address")
            .to_string();
        assert!(error.contains("write IP:PORT"), "{error}");
        assert!(!error.contains("no port"), "{error}");
    }
}
