//! What `xlb` prints: aligned tables and short reports for people, JSON and
//! YAML (the admin API's own documents) for scripts. Pure functions from the
//! API's views to text, so the exact output is unit-tested here.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    api::{
        BackendStatus, BackendView, DatapathAddressView, DatapathBackendStatus,
        DatapathBackendView, DatapathLbView, DatapathRecordView, DatapathServiceView,
        DatapathTableView, DrainEntryView, DrainSource, DrainUnchanged, DrainView, DrainsView,
        FlowEventView, FlowView, HealthCheckView, MaglevView, ProbePathView, ServiceBackendView,
        ServiceView, SimulateRequest, SimulateView, StatsView, StatusView,
    },
    model::{FrontendKind, Protocol},
};

/// `-o`: how a command prints its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The admin API's JSON document (stable for scripts).
    Json,
    /// The same document as YAML.
    Yaml,
}

/// `value` as `format`; `table` renders the human form.
pub(crate) fn render<T: Serialize + ?Sized>(
    format: Format,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<String> {
    Ok(document(format, value)?.unwrap_or_else(|| table(value)))
}

/// `value` as a JSON or YAML document; `None` for [`Format::Table`].
pub(crate) fn document<T: Serialize + ?Sized>(
    format: Format,
    value: &T,
) -> anyhow::Result<Option<String>> {
    Ok(match format {
        Format::Table => None,
        Format::Json => {
            let mut json = serde_json::to_string_pretty(value).context("encoding JSON")?;
            json.push('\n');
            Some(json)
        }
        Format::Yaml => Some(serde_yaml_ng::to_string(value).context("encoding YAML")?),
    })
}

/// Columns separated by [`GAP`], each as wide as its widest line. A cell may
/// hold several lines (a service's backends); the row then spans as many
/// lines, the other cells blank below their first line.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Spaces between columns.
const GAP: usize = 3;

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate().take(columns) {
                for line in cell.lines() {
                    widths[column] = widths[column].max(line.chars().count());
                }
            }
        }
        let mut out = String::new();
        let mut line_out = |cells: &[&str]| {
            let mut line = String::new();
            for (column, cell) in cells.iter().enumerate() {
                line.push_str(cell);
                if column + 1 < cells.len() {
                    let pad = widths[column] - cell.chars().count() + GAP;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        };
        let header: Vec<&str> = self.header.iter().map(String::as_str).collect();
        line_out(&header);
        for row in &self.rows {
            let cells: Vec<Vec<&str>> = (0..columns)
                .map(|c| {
                    row.get(c)
                        .map_or_else(Vec::new, |cell| cell.lines().collect())
                })
                .collect();
            let height = cells.iter().map(Vec::len).max().unwrap_or(0).max(1);
            for i in 0..height {
                let physical: Vec<&str> = cells
                    .iter()
                    .map(|lines| lines.get(i).copied().unwrap_or(""))
                    .collect();
                line_out(&physical);
            }
        }
        out
    }
}

/// `addr/PROTO`, as cilium prints frontends and backends.
fn with_protocol(address: SocketAddr, protocol: Protocol) -> String {
    format!("{address}/{protocol}")
}

/// `VIP` or `NodePort` (the `Service Type` column).
fn kind_name(kind: FrontendKind) -> &'static str {
    match kind {
        FrontendKind::Vip => "VIP",
        FrontendKind::Node => "NodePort",
    }
}

/// `5 => 198.18.2.5:8080/TCP (active)` per backend: its backend ID, as
/// `xlb ct list`, `simulate` and `bpf lb list` name it (`cilium service
/// list` numbers them within the service instead), `-` for a backend that
/// holds no record (down).
fn backend_lines(backends: &[ServiceBackendView], protocol: Protocol) -> String {
    backends
        .iter()
        .map(|b| {
            let id = if b.id == 0 {
                "-".to_owned()
            } else {
                b.id.to_string()
            };
            format!(
                "{id} => {} ({})",
                with_protocol(b.address, protocol),
                b.status.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `xlb service list`: one row per frontend, its service's backends under it.
pub(crate) fn services_table(services: &[ServiceView]) -> String {
    let mut table = Table::new(&["ID", "Name", "Frontend", "Service Type", "Backend"]);
    for service in services {
        let backends = backend_lines(&service.backends, service.protocol);
        if service.frontends.is_empty() {
            table.row(vec![
                service.id.to_string(),
                service.name.clone(),
                "-".into(),
                "-".into(),
                backends.clone(),
            ]);
        }
        for frontend in &service.frontends {
            table.row(vec![
                service.id.to_string(),
                service.name.clone(),
                with_protocol(frontend.address, frontend.protocol),
                kind_name(frontend.kind).into(),
                backends.clone(),
            ]);
        }
    }
    table.render()
}

/// A backend's status over its services: the status they all give it, or
/// for each status other than `active`, in how many services it holds
/// (`draining (1 of 2 services)`): never `active` while a service drains it.
/// `xlb service list` shows which.
fn backend_status(backend: &BackendView) -> String {
    let mut counts: BTreeMap<BackendStatus, usize> = BTreeMap::new();
    for status in backend.status_by_service.values() {
        *counts.entry(*status).or_default() += 1;
    }
    let total = backend.status_by_service.len();
    match counts.keys().collect::<Vec<_>>()[..] {
        // An agent that predates the per-service statuses.
        [] => backend.status.as_str().to_owned(),
        [one] => one.as_str().to_owned(),
        _ => counts
            .iter()
            .filter(|(status, _)| **status != BackendStatus::Active)
            .map(|(status, n)| format!("{} ({n} of {total} services)", status.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A backend's health, as the services that check it find it, each with
/// the path of its probes: `up (direct)` when they agree, else each
/// verdict, worst first, with its services (`down (tunnel: web), up
/// (direct: api)`). From an agent that predates the per-service health,
/// or for a backend no service checks, the health over its services.
fn backend_health(backend: &BackendView) -> String {
    let mut groups: BTreeMap<(u8, &str, &str), Vec<&str>> = BTreeMap::new();
    for (service, view) in &backend.health_by_service {
        let path = match view.path {
            ProbePathView::Direct => "direct",
            ProbePathView::Tunnel => "tunnel",
            ProbePathView::Unwrappable => "unwrappable",
        };
        let worst_first = match view.health.as_str() {
            "down" => 0,
            "pending" => 1,
            _ => 2,
        };
        groups
            .entry((worst_first, view.health.as_str(), path))
            .or_default()
            .push(service);
    }
    match groups.len() {
        0 => backend.health.clone(),
        1 => groups
            .keys()
            .map(|(_, health, path)| format!("{health} ({path})"))
            .collect(),
        _ => groups
            .iter()
            .map(|((_, health, path), services)| {
                format!("{health} ({path}: {})", services.join(","))
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Who drains a backend: each source, with the services it drains it in
/// unless that is every one of its services; `-` when nothing does.
fn drained_by(backend: &BackendView) -> String {
    if backend.drained_by.is_empty() {
        let draining = backend.status == BackendStatus::Draining
            || backend
                .status_by_service
                .values()
                .any(|s| *s == BackendStatus::Draining);
        // Draining, from an agent that predates `drained_by`.
        return if draining { "unknown" } else { "-" }.to_owned();
    }
    let mut by_source: BTreeMap<DrainSource, Vec<&str>> = BTreeMap::new();
    for (service, sources) in &backend.drained_by {
        for source in sources {
            by_source.entry(*source).or_default().push(service);
        }
    }
    by_source
        .iter()
        .map(|(source, services)| {
            if services.len() >= backend.services.len() {
                source.as_str().to_owned()
            } else {
                format!("{} ({})", source.as_str(), services.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `xlb backend list`, and under it the drains of `xlb drain` that hold in
/// no service now, when the agent says (`drains`, from `xlb status`).
pub(crate) fn backends_table(backends: &[BackendView], drains: Option<&DrainsView>) -> String {
    let mut table = Table::new(&[
        "ID",
        "Address",
        "Status",
        "Drained By",
        "Health",
        "Gen",
        "Services",
        "Packets",
        "Bytes",
    ]);
    for b in backends {
        // ID 0 is never given out: a backend that holds no record (down,
        // retired) has no ID or generation to show.
        let (id, generation) = if b.id == 0 {
            ("-".to_owned(), "-".to_owned())
        } else {
            (b.id.to_string(), b.generation.to_string())
        };
        table.row(vec![
            id,
            with_protocol(b.address, b.protocol),
            backend_status(b),
            drained_by(b),
            backend_health(b),
            generation,
            if b.services.is_empty() {
                "-".into()
            } else {
                b.services.join(",")
            },
            b.packets.to_string(),
            b.bytes.to_string(),
        ]);
    }
    let mut out = table.render();
    let unmatched: Vec<&DrainEntryView> = drains
        .iter()
        .flat_map(|d| &d.drains)
        .filter(|d| d.services.is_empty())
        .collect();
    if !unmatched.is_empty() {
        let mut kept = Table::new(&["Backend", "Drained In"]);
        for drain in unmatched {
            kept.row(vec![drain.backend.to_string(), drained_in(drain)]);
        }
        section(
            &mut out,
            "Drains of `xlb drain` that hold in no service now:",
            &kept.render(),
            "the backend is not in the configuration now (or not in the service named); the \
             drain is kept, and holds again if it comes back. `xlb undrain ADDR:PORT \
             [--service S]` forgets it",
        );
    }
    out
}

/// Where a drain was made: every service, or the one it names.
fn drained_in(drain: &DrainEntryView) -> String {
    drain
        .service
        .as_ref()
        .map_or_else(|| "every service".to_owned(), |s| format!("service {s}"))
}

/// `xlb bpf lb list`: the frontends of the datapath's maps
/// ([`frontends_table`]), then, each under a heading and only when there is
/// some, what no frontend reaches: tables, active backend records and
/// addresses, each with a note on why it may be there and what the agent
/// does with it.
pub(crate) fn lb_table(view: &DatapathLbView) -> String {
    let mut out = frontends_table(&view.services);
    if !view.tables_without_frontend.is_empty() {
        section(
            &mut out,
            "Tables no frontend names (new flows reach none of them):",
            &tables_without_frontend(&view.tables_without_frontend),
            "the agent adopts every table it finds in the pinned maps when it starts, and its \
             first sync removes them; one still listed after a successful sync was not written \
             by this agent, and stays",
        );
    }
    if !view.active_backends_without_table.is_empty() {
        section(
            &mut out,
            "Active backends no table names (no new flow goes to them; their tracked flows do):",
            &backends_without_table(&view.active_backends_without_table),
            "draining and terminating backends are expected here: the agent keeps their records \
             for their tracked flows. It adopts every record it finds in the pinned maps when it \
             starts, and a sync retires those its model does not keep (`-`: no backend of its \
             model); one listed with `-` after a successful sync was not written by this agent",
        );
    }
    if !view.addresses_without_frontend.is_empty() {
        section(
            &mut out,
            "Addresses no frontend has:",
            &addresses_without_frontend(&view.addresses_without_frontend),
            "new flows to a VIP here are dropped (`drop_unknown_port`), to a node address passed. \
             The agent adopts every address it finds in the pinned maps when it starts, and a \
             sync removes those no frontend of its model is on; one still listed after a \
             successful sync was not written by this agent",
        );
    }
    out
}

/// Appends a blank line, `heading`, `table` and `note` to `out`.
fn section(out: &mut String, heading: &str, table: &str, note: &str) {
    writeln!(out, "\n{heading}\n{table}\nnote: {note}").ok();
}

/// The frontends of `xlb bpf lb list`: each with its service (ID, and name
/// where the agent knows it, else `-`), its table's size, and each backend
/// ID its table names with the record's state and the slots naming it. A
/// note under the table counts the slots whose backend takes no new flow (a
/// retired record, or none at all).
fn frontends_table(services: &[DatapathServiceView]) -> String {
    let mut table = Table::new(&[
        "Service Address",
        "Service",
        "Table",
        "Backend Address (ID)",
        "State",
        "Slots",
    ]);
    // Slots whose backend takes no new flow, per status, counted once per
    // table (a service's frontends share it).
    let mut dead: BTreeMap<DatapathBackendStatus, u32> = BTreeMap::new();
    let mut counted = BTreeSet::new();
    for service in services {
        let first_of_table = counted.insert(service.service_id);
        let frontend = format!(
            "{} ({})",
            with_protocol(service.frontend, service.protocol),
            service.service_id
        );
        let name = service.service.clone().unwrap_or_else(|| "-".into());
        let size = service.table_size.to_string();
        if service.backends.is_empty() {
            table.row(vec![frontend, name, size, "(no table)".into()]);
            continue;
        }
        let column = |f: &dyn Fn(&DatapathBackendView) -> String| {
            service
                .backends
                .iter()
                .map(f)
                .collect::<Vec<_>>()
                .join("\n")
        };
        for b in &service.backends {
            if first_of_table && b.status != DatapathBackendStatus::Active {
                *dead.entry(b.status).or_default() += b.slots;
            }
        }
        table.row(vec![
            frontend,
            name,
            size,
            column(&|b| {
                let address = b
                    .address
                    .map_or_else(|| "-".to_owned(), |a| with_protocol(a, service.protocol));
                format!("{address} ({})", b.id)
            }),
            column(&|b| b.status.as_str().to_owned()),
            column(&|b| b.slots.to_string()),
        ]);
    }
    let mut out = table.render();
    if !dead.is_empty() {
        let counts: Vec<String> = dead
            .iter()
            .map(|(status, slots)| format!("{slots} {} {}", plural_slots(*slots), status.as_str()))
            .collect();
        writeln!(
            out,
            "\nnote: {}: new flows hashed to these slots find no backend \
             (`missing`: the table names an ID without a backend record)",
            counts.join(", ")
        )
        .ok();
    }
    out
}

/// The tables no frontend names: each with its service ID (and name where
/// the agent's model has one, else `-`), its size, and each backend ID it
/// names as [`frontends_table`] shows them (no protocol: no frontend says
/// which).
fn tables_without_frontend(tables: &[DatapathTableView]) -> String {
    let mut table = Table::new(&[
        "Service ID",
        "Service",
        "Table",
        "Backend Address (ID)",
        "State",
        "Slots",
    ]);
    for t in tables {
        let column = |f: &dyn Fn(&DatapathBackendView) -> String| {
            t.backends.iter().map(f).collect::<Vec<_>>().join("\n")
        };
        table.row(vec![
            t.service_id.to_string(),
            t.service.clone().unwrap_or_else(|| "-".into()),
            t.table_size.to_string(),
            column(&|b| {
                let address = b.address.map_or_else(|| "-".to_owned(), |a| a.to_string());
                format!("{address} ({})", b.id)
            }),
            column(&|b| b.status.as_str().to_owned()),
            column(&|b| b.slots.to_string()),
        ]);
    }
    table.render()
}

/// The active records no table names: address (ID), generation, and the
/// backend's status in each service of the agent's model, one per line
/// (`-` when the model has none for the record).
fn backends_without_table(records: &[DatapathRecordView]) -> String {
    let mut table = Table::new(&["Backend Address (ID)", "Gen", "Agent's Status"]);
    for r in records {
        let statuses = if r.status_by_service.is_empty() {
            "-".to_owned()
        } else {
            r.status_by_service
                .iter()
                .map(|(service, status)| format!("{} ({service})", status.as_str()))
                .collect::<Vec<_>>()
                .join("\n")
        };
        table.row(vec![
            format!("{} ({})", r.address, r.id),
            r.generation.to_string(),
            statuses,
        ]);
    }
    table.render()
}

/// The addresses no frontend has, with what `ADDRESSES` declares them.
fn addresses_without_frontend(addresses: &[DatapathAddressView]) -> String {
    let mut table = Table::new(&["Address", "Kind"]);
    for a in addresses {
        let kind = match a.kind {
            FrontendKind::Vip => "VIP",
            FrontendKind::Node => "node",
        };
        table.row(vec![a.address.to_string(), kind.to_owned()]);
    }
    table.render()
}

fn plural_slots(n: u32) -> &'static str {
    if n == 1 { "slot" } else { "slots" }
}

/// `xlb ct list`.
pub(crate) fn flows_table(flows: &[FlowView]) -> String {
    let mut table = Table::new(&[
        "Protocol", "Client", "Frontend", "Backend", "SNAT", "Service", "State", "Idle",
    ]);
    for flow in flows {
        let backend = match flow.backend {
            Some(address) => format!("{} => {address}", flow.backend_id),
            None => format!("{} (gone)", flow.backend_id),
        };
        table.row(vec![
            flow.protocol.to_string(),
            flow.client.to_string(),
            flow.frontend.to_string(),
            backend,
            flow.snat
                .map_or_else(|| "-".to_owned(), |source| source.to_string()),
            flow.service.clone().unwrap_or_else(|| "-".into()),
            flow.state.clone(),
            format!("{}s", flow.idle_seconds),
        ]);
    }
    table.render()
}

/// `xlb health list`: one row per check and path, the failed ones with why. With
/// none, says so rather than print an empty table: in Kubernetes mode, and
/// for services without `health_check`, readiness comes from elsewhere.
pub(crate) fn health_checks_table(checks: &[HealthCheckView]) -> String {
    if checks.is_empty() {
        return "No health checks run: no service of the configuration has a health_check \
                (in Kubernetes mode, readiness comes from the EndpointSlices)\n"
            .to_owned();
    }
    let mut table = Table::new(&[
        "Backend",
        "Services",
        "Probe",
        "Probed At",
        "Health",
        "In A Row",
        "Last Error",
    ]);
    for check in checks {
        let probed_at = match (check.path, check.mark) {
            (ProbePathView::Tunnel, Some(mark)) => format!(
                "{} through the DSR tunnel (mark {mark:#010x})",
                check.probe_address
            ),
            (ProbePathView::Unwrappable, _) => "- (cannot be wrapped for)".to_owned(),
            _ => check.probe_address.to_string(),
        };
        let in_a_row = match (check.consecutive_successes, check.consecutive_failures) {
            (0, 0) => "-".to_owned(),
            (_, 0) => format!("{} passed", check.consecutive_successes),
            (_, failed) => format!("{failed} failed"),
        };
        table.row(vec![
            check.backend.to_string(),
            if check.services.is_empty() {
                "-".into()
            } else {
                check.services.join(",")
            },
            check.probe.clone(),
            probed_at,
            check.health.clone(),
            in_a_row,
            check.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table.render()
}

/// `xlb maglev show`: the table's shares per backend; `addresses` names the
/// backend IDs where known.
pub(crate) fn maglev_text(view: &MaglevView, addresses: &BTreeMap<u32, SocketAddr>) -> String {
    let mut out = format!(
        "Service:      {} (ID {})\nTable size:   {}\n\n",
        view.service, view.id, view.size
    );
    let mut table = Table::new(&["Backend", "Address", "Slots", "Share"]);
    for (id, slots) in &view.shares {
        let share = if view.size == 0 {
            0.0
        } else {
            f64::from(*slots) * 100.0 / f64::from(view.size)
        };
        table.row(vec![
            id.to_string(),
            addresses
                .get(id)
                .map_or_else(|| "-".to_owned(), ToString::to_string),
            slots.to_string(),
            format!("{share:.1}%"),
        ]);
    }
    out.push_str(&table.render());
    out
}

/// One answer of `xlb simulate --flows`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct SimulatedFlow {
    #[serde(flatten)]
    pub(crate) request: SimulateRequest,
    #[serde(flatten)]
    pub(crate) view: SimulateView,
}

/// `xlb simulate --flows`: a row per flow.
pub(crate) fn simulated_flows_table(flows: &[SimulatedFlow]) -> String {
    let mut table = Table::new(&["Client", "Frontend", "Outcome", "Service", "Backend"]);
    for flow in flows {
        table.row(vec![
            flow.request.client.to_string(),
            with_protocol(flow.request.frontend, flow.request.protocol),
            flow.view.outcome.clone(),
            flow.view.service.clone().unwrap_or_else(|| "-".into()),
            flow.view
                .backend
                .map_or_else(|| "-".into(), |b| b.to_string()),
        ]);
    }
    table.render()
}

/// `xlb simulate`: the flow and what the datapath would do with it.
pub(crate) fn simulate_text(request: &SimulateRequest, view: &SimulateView) -> String {
    let explanation = match view.outcome.as_str() {
        "backend" => "a new flow: balanced by the service's Maglev table",
        "tracked" => "an existing flow: keeps the backend conntrack holds",
        "no_backend" => {
            "the service has no backend taking new flows: refused (a TCP reset, or ICMP port \
             unreachable), or dropped where a Kubernetes Local policy's endpoints are all on \
             other nodes"
        }
        "not_a_frontend" => "not a frontend: passed to the host's stack",
        "unknown_port" => {
            "a VIP without a frontend on this port and protocol: dropped (--protocol is tcp \
             unless given)"
        }
        _ => "",
    };
    let mut out = format!(
        "Flow:      {} -> {}/{}\nOutcome:   {}",
        request.client, request.frontend, request.protocol, view.outcome
    );
    if !explanation.is_empty() {
        write!(out, " ({explanation})").ok();
    }
    out.push('\n');
    if let Some(service) = &view.service {
        writeln!(out, "Service:   {service}").ok();
    }
    match (view.backend_id, view.backend) {
        (Some(id), Some(address)) => writeln!(out, "Backend:   {id} => {address}").ok(),
        (Some(id), None) => writeln!(out, "Backend:   {id}").ok(),
        (None, Some(address)) => writeln!(out, "Backend:   {address}").ok(),
        (None, None) => None,
    };
    out
}

/// The services of `view` that `reason` left unchanged, joined; None when
/// there is none.
fn unchanged_in(view: &DrainView, reason: DrainUnchanged) -> Option<String> {
    let services: Vec<&str> = view
        .unchanged
        .iter()
        .filter(|u| u.reason == reason)
        .map(|u| u.service.as_str())
        .collect();
    (!services.is_empty()).then(|| services.join(", "))
}

/// `xlb drain` / `xlb undrain`: where the backend changed, and why it did
/// not where it did not. An undrain the configuration file's drain holds
/// against is not here: [`undrain_refused`] says it, as an error.
pub(crate) fn drain_text(backend: SocketAddr, drain: bool, view: &DrainView) -> String {
    use DrainUnchanged::{AlreadyDrained, DrainedByFile, NotDrained, Terminating};
    let mut out = String::new();
    if !view.services.is_empty() {
        let verb = if drain { "draining" } else { "undrained" };
        writeln!(out, "{backend}: {verb} in {}", view.services.join(", ")).ok();
    }
    for reason in [AlreadyDrained, NotDrained, DrainedByFile, Terminating] {
        let Some(services) = unchanged_in(view, reason) else {
            continue;
        };
        let why = match (drain, reason) {
            (true, DrainedByFile) => format!(
                "already draining in {services}: the configuration file drains it (state: \
                 draining); this drain is kept as well, and holds if the file stops draining it"
            ),
            (true, Terminating) => format!(
                "already gets no new flows in {services}: it is terminating; this drain is kept, \
                 and holds if it turns active"
            ),
            (true, _) => format!("already drained by xlb drain in {services}"),
            (false, DrainedByFile) => continue,
            (false, Terminating) => format!(
                "still gets no new flows in {services}: it is terminating, which is not a drain"
            ),
            (false, _) => format!("not drained in {services}: nothing to undrain"),
        };
        writeln!(out, "{backend}: {why}").ok();
    }
    for forgotten in &view.forgotten {
        writeln!(
            out,
            "{backend}: drain forgotten ({}): it held in no service (the backend, or the \
             service, is not in the configuration now)",
            drained_in(forgotten)
        )
        .ok();
    }
    if out.is_empty() && view.unchanged.is_empty() {
        // An agent that predates the reasons.
        let already = if drain {
            "already draining"
        } else {
            "not drained by xlb drain"
        };
        writeln!(out, "{backend}: no service changed: {already}").ok();
    }
    out
}

/// The undrain's error where the configuration file (`config_file`, when
/// known) still drains the backend: only an edit of the file lifts that.
pub(crate) fn undrain_refused(
    backend: SocketAddr,
    view: &DrainView,
    config_file: Option<&str>,
) -> Option<String> {
    let services = unchanged_in(view, DrainUnchanged::DrainedByFile)?;
    let file = config_file.map_or_else(|| "the configuration file".to_owned(), str::to_owned);
    Some(format!(
        "{backend}: still draining in {services}: the configuration file drains it there \
         (state: draining), which xlb undrain cannot lift: set `state: active` for it in {file}"
    ))
}

/// The `Drains:` field of `xlb status`: how many `xlb drain` made and
/// where they are kept, then, a line each, those that hold in no service
/// now, and a restore that failed at start.
fn drains_text(drains: &DrainsView) -> String {
    let count = match drains.drains.len() {
        0 => "none".to_owned(),
        n => n.to_string(),
    };
    let mut text = format!(
        "{count} by xlb drain (kept in {} across restarts)",
        drains.file
    );
    for drain in drains.drains.iter().filter(|d| d.services.is_empty()) {
        write!(
            text,
            "\n{:<14}{} ({}): holds in no service now; kept until xlb undrain",
            "",
            drain.backend,
            drained_in(drain)
        )
        .ok();
    }
    if let Some(error) = &drains.restore_error {
        write!(
            text,
            "\n{:<14}not restored at start (started without them): {error}",
            ""
        )
        .ok();
    }
    text
}

/// Every counter of a [`StatsView`] as (group, name, packets).
fn counters(stats: &StatsView) -> impl Iterator<Item = (&'static str, &str, u64)> {
    fn group<'a>(
        name: &'static str,
        map: &'a BTreeMap<String, u64>,
    ) -> impl Iterator<Item = (&'static str, &'a str, u64)> {
        map.iter().map(move |(k, v)| (name, k.as_str(), *v))
    }
    group("verdict", &stats.verdicts)
        .chain(group("conntrack", &stats.conntrack))
        .chain(group("parser", &stats.parser))
        .chain(group("flow events", &stats.flow_events))
}

/// `xlb stats`: every datapath counter.
pub(crate) fn stats_table(stats: &StatsView) -> String {
    let mut table = Table::new(&["Group", "Counter", "Packets"]);
    for (group, name, packets) in counters(stats) {
        table.row(vec![group.into(), name.into(), packets.to_string()]);
    }
    table.render()
}

/// What each counter counted between `before` and `after`. A counter that
/// went down was reset (the agent recreated its maps): it counted `after`.
pub(crate) fn stats_delta(before: &StatsView, after: &StatsView) -> StatsView {
    fn delta(
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
    ) -> BTreeMap<String, u64> {
        after
            .iter()
            .map(|(name, now)| {
                let then = before.get(name).copied().unwrap_or(0);
                let counted = if *now >= then { now - then } else { *now };
                (name.clone(), counted)
            })
            .collect()
    }
    StatsView {
        verdicts: delta(&before.verdicts, &after.verdicts),
        conntrack: delta(&before.conntrack, &after.conntrack),
        parser: delta(&before.parser, &after.parser),
        flow_events: delta(&before.flow_events, &after.flow_events),
    }
}

/// One `xlb stats --watch` interval: the counters that moved, with a rate.
pub(crate) fn stats_delta_table(delta: &StatsView, at: SystemTime, interval: Duration) -> String {
    let mut out = format!(
        "{} (+{})\n",
        humantime::format_rfc3339_seconds(at),
        humantime::format_duration(interval)
    );
    let seconds = interval.as_secs_f64();
    let mut table = Table::new(&["Group", "Counter", "Packets", "Per second"]);
    let mut moved = false;
    for (group, name, packets) in counters(delta).filter(|(_, _, n)| *n > 0) {
        moved = true;
        let rate = if seconds > 0.0 {
            packets as f64 / seconds
        } else {
            0.0
        };
        table.row(vec![
            group.into(),
            name.into(),
            packets.to_string(),
            format!("{rate:.1}"),
        ]);
    }
    if moved {
        out.push_str(&table.render());
    } else {
        out.push_str("no packets\n");
    }
    out
}

/// One flow event as a line: `new_flow tcp CLIENT -> FRONTEND service => BACKEND`,
/// or `drop tcp CLIENT -> FRONTEND [service: ]reason` (and so `refused`);
/// JSON: the event as one object.
pub(crate) fn event_line(format: Format, event: &FlowEventView) -> anyhow::Result<String> {
    observe_line(format, event, || event_row(event))
}

/// One line of `xlb observe`: `table` in a table, else `document` as one
/// JSON object on a line, or one YAML document.
fn observe_line(
    format: Format,
    document: &impl Serialize,
    table: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    Ok(match format {
        Format::Table => table(),
        Format::Json => serde_json::to_string(document).context("encoding JSON")? + "\n",
        Format::Yaml => format!("---\n{}", serde_yaml_ng::to_string(document)?),
    })
}

/// `event` as a line of the table.
fn event_row(event: &FlowEventView) -> String {
    let protocol = event
        .protocol
        .map_or("-".to_owned(), |p| format!("{p:?}").to_lowercase());
    let client = event.client.map_or("-".to_owned(), |c| c.to_string());
    let what = match (&event.backend, &event.reason) {
        (Some(backend), _) => format!(
            "{} => {backend}",
            event.service.as_deref().unwrap_or("(unknown service)")
        ),
        (None, Some(reason)) => match &event.service {
            Some(service) => format!("{service}: {reason}"),
            None => reason.clone(),
        },
        (None, None) => String::new(),
    };
    format!(
        "{:<8} {protocol:<3} {client} -> {} {what}\n",
        event.kind, event.frontend
    )
}

/// What `xlb observe` prints where it missed `missed` events (they left the
/// agent's history before it read them): a line like an event's in a table,
/// `{"missed":N}` in JSON, a `missed: N` document in YAML.
pub(crate) fn missed_line(format: Format, missed: u64) -> anyhow::Result<String> {
    observe_line(format, &MissedView { missed }, || {
        format!(
            // No size: the agent's history is the agent build's, not this
            // client's.
            "{:<8} {missed} events: this observer fell behind the agent's history\n",
            "missed"
        )
    })
}

/// `xlb observe -o json`'s line for events it missed.
#[derive(Serialize)]
struct MissedView {
    missed: u64,
}

/// What `xlb observe` prints where the agent restarted since its last
/// answer: what happened from that answer to the new agent's start is not
/// known, and `missed` of the new agent's events left its history before
/// this read. `{"restarted":true,"missed":N}` in JSON.
pub(crate) fn restarted_line(format: Format, missed: u64) -> anyhow::Result<String> {
    let document = RestartedView {
        restarted: true,
        missed,
    };
    observe_line(format, &document, || {
        let mut line = format!(
            "{:<8} the agent restarted: events from its last answer to its start are not known",
            "restarted"
        );
        if missed > 0 {
            line += &format!(", and {missed} of the new agent's left its history unread");
        }
        line + "\n"
    })
}

/// `xlb observe -o json`'s line for an agent restart.
#[derive(Serialize)]
struct RestartedView {
    restarted: bool,
    missed: u64,
}

/// What `xlb observe` prints where the datapath lost `lost` flow events to
/// its full ring since the last answer (they were never written, so no
/// reader sees them): `{"lost_ring_full":N}` in JSON.
pub(crate) fn lost_line(format: Format, lost: u64) -> anyhow::Result<String> {
    let document = LostView {
        lost_ring_full: lost,
    };
    observe_line(format, &document, || {
        format!(
            "{:<8} {lost} events: the datapath's ring was full, the agent's drain behind \
             (xlb stats: flow events lost_ring_full)\n",
            "lost"
        )
    })
}

/// `xlb observe -o json`'s line for events lost to the datapath's full ring.
#[derive(Serialize)]
struct LostView {
    lost_ring_full: u64,
}

/// `xlb status`.
pub(crate) fn status_text(status: &StatusView) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        writeln!(out, "{:<14}{value}", format!("{name}:")).ok();
    };
    field(
        "Version",
        &format!(
            "{} (datapath layout {})",
            status.version, status.layout_version
        ),
    );
    if let Some(maglev) = status.maglev {
        field(
            "Maglev",
            &format!(
                "hash seed {}, tables of at least {} slots",
                maglev.hash_seed, maglev.min_table_size
            ),
        );
    }
    match status.flow_event_sampling {
        Some(0) => field("Flow events", "off (--flow-event-sampling 0)"),
        Some(n) => field(
            "Flow events",
            &format!("1 in {n} new flows, drops and refusals"),
        ),
        None => {}
    }
    match &status.kubernetes {
        None => field("Source", "file"),
        Some(kube) => {
            let node = if kube.node.is_empty() {
                "no node name".to_owned()
            } else {
                format!("node {}", kube.node)
            };
            field(
                "Source",
                &format!("kubernetes ({node}, selector {})", kube.label_selector),
            );
            let caches = kube
                .caches
                .iter()
                .map(|(cache, synced)| {
                    format!("{cache} {}", if *synced { "synced" } else { "waiting" })
                })
                .collect::<Vec<_>>()
                .join(", ");
            field("Caches", &caches);
            if let Some(error) = &kube.last_error {
                field("Watch error", &format!("{error} (retrying)"));
            }
            if !kube.health_check_node_ports.is_empty() {
                let ports = kube
                    .health_check_node_ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                field("Health ports", &ports);
            }
        }
    }
    field("Config", status.config_file.as_deref().unwrap_or("-"));
    let attached = if status.attached.is_empty() {
        "none".to_owned()
    } else {
        status
            .attached
            .iter()
            .map(|a| format!("{} ({})", a.interface, a.mode))
            .collect::<Vec<_>>()
            .join(", ")
    };
    field("Attached", &attached);
    let synced = match (status.synced, status.last_sync_seconds) {
        (true, Some(seconds)) if seconds < 1.0 => {
            format!("yes (last full sync took {:.1} ms)", seconds * 1e3)
        }
        (true, Some(seconds)) => format!("yes (last full sync took {seconds:.2} s)"),
        (true, None) => "yes".to_owned(),
        (false, _) => "no (the first full sync is not programmed yet)".to_owned(),
    };
    field("Synced", &synced);
    if let Some(reason) = &status.earlier_agent_state_kept {
        // What would take a failed backend out: the agent's own health
        // checks (file mode), the endpoints' conditions (Kubernetes).
        let waiting = if status.kubernetes.is_some() {
            "no endpoint change is applied until the caches are synced"
        } else {
            "no health check runs until a good file is loaded"
        };
        field(
            "Serving",
            &format!(
                "what an earlier agent pinned, unchanged: {reason}\n{:<14}{waiting}: a backend \
                 that fails meanwhile stays in its table\n{:<14}the announcements stay as that \
                 agent left them",
                "", ""
            ),
        );
    }
    if let Some(error) = &status.last_sync_error {
        // The error's lines under the field, as the last reload's.
        let mut text =
            "failed (the datapath keeps what it held; the next change syncs again)".to_owned();
        for line in error.lines() {
            text.push_str(&format!("\n{:<14}{line}", ""));
        }
        field("Last sync", &text);
    }
    field("Services", &status.services.to_string());
    field("Backends", &status.backends.to_string());
    if let Some(drains) = &status.drains {
        field("Drains", &drains_text(drains));
    }
    field(
        "Reloads",
        &format!(
            "{} ok, {} rejected",
            status.reloads_ok, status.reloads_failed
        ),
    );
    if let Some(reload) = &status.last_reload {
        let at = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(reload.at));
        field("Last reload", &format!("{} at {at}", reload.outcome));
        if let Some(error) = &reload.error {
            for line in error.lines() {
                writeln!(out, "{:<14}{line}", "").ok();
            }
        }
    }
    for announcing in &status.announcements {
        let speaker = match &announcing.interface {
            Some(interface) => format!("{} on {interface}", announcing.speaker),
            None => announcing.speaker.clone(),
        };
        let mut vips = if announcing.vips.is_empty() {
            "nothing".to_owned()
        } else {
            announcing
                .vips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if announcing.left_by_earlier_agent {
            vips.push_str(if announcing.vips.is_empty() {
                " (until this agent's first sync)"
            } else {
                " (an earlier agent's, kept until this agent's first sync)"
            });
        }
        writeln!(out, "{:<14}{speaker}: {vips}", "Announcing:").ok();
        if let Some(error) = &announcing.error {
            writeln!(out, "{:<14}last attempt failed (retrying): {error}", "").ok();
        }
    }
    let uptime = humantime::format_duration(Duration::from_secs(status.uptime_seconds));
    writeln!(out, "{:<14}{uptime}", "Uptime:").ok();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{AnnouncementView, AttachmentView, FrontendView, MaglevSettingsView, ReloadView},
        model::Mode,
    };

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn backend(id: u32, address: &str, status: BackendStatus, slots: u32) -> ServiceBackendView {
        ServiceBackendView {
            id,
            address: addr(address),
            weight: 1,
            status,
            slots,
        }
    }

    fn web() -> ServiceView {
        ServiceView {
            id: 1,
            name: "web".into(),
            protocol: Protocol::Tcp,
            mode: Mode::Nat,
            frontends: vec![
                FrontendView {
                    address: addr("198.18.100.1:80"),
                    protocol: Protocol::Tcp,
                    kind: FrontendKind::Vip,
                },
                FrontendView {
                    address: addr("10.0.0.5:30080"),
                    protocol: Protocol::Tcp,
                    kind: FrontendKind::Node,
                },
            ],
            affinity_timeout_seconds: None,
            table_size: 7,
            backends: vec![
                backend(3, "198.18.2.1:8080", BackendStatus::Active, 7),
                backend(4, "198.18.2.2:8080", BackendStatus::Draining, 0),
            ],
            packets: 10,
            bytes: 1000,
        }
    }

    fn dns() -> ServiceView {
        ServiceView {
            id: 12,
            name: "kube-system/dns:dns".into(),
            protocol: Protocol::Udp,
            mode: Mode::Nat,
            frontends: vec![FrontendView {
                address: addr("198.19.9.1:53"),
                protocol: Protocol::Udp,
                kind: FrontendKind::Vip,
            }],
            affinity_timeout_seconds: Some(10800),
            table_size: 0,
            backends: vec![],
            packets: 0,
            bytes: 0,
        }
    }

    #[test]
    fn table_aligns_columns_by_content_and_spans_multiline_cells() {
        let mut table = Table::new(&["A", "Longer", "C"]);
        table.row(vec!["wide cell".into(), "x".into(), "1\n2".into()]);
        table.row(vec!["y".into(), "two\nlines".into()]);
        assert_eq!(
            table.render(),
            "\
A           Longer   C
wide cell   x        1
                     2
y           two
            lines
"
        );
    }

    #[test]
    fn service_list_names_each_service_and_its_backends_by_id() {
        let mut web = web();
        // Down: no record, so no ID.
        web.backends[1].id = 0;
        web.backends[1].status = BackendStatus::Down;
        assert_eq!(
            services_table(&[web, dns()]),
            "\
ID   Name                  Frontend              Service Type   Backend
1    web                   198.18.100.1:80/TCP   VIP            3 => 198.18.2.1:8080/TCP (active)
                                                                - => 198.18.2.2:8080/TCP (down)
1    web                   10.0.0.5:30080/TCP    NodePort       3 => 198.18.2.1:8080/TCP (active)
                                                                - => 198.18.2.2:8080/TCP (down)
12   kube-system/dns:dns   198.19.9.1:53/UDP     VIP
"
        );
    }

    /// A backend of `api` and `web` with these statuses there, drained by
    /// `xlb drain` where it is draining.
    fn shared_backend(
        id: u32,
        address: &str,
        api: BackendStatus,
        web: BackendStatus,
    ) -> BackendView {
        let status_by_service: BTreeMap<String, BackendStatus> =
            BTreeMap::from([("api".into(), api), ("web".into(), web)]);
        let drained_by = status_by_service
            .iter()
            .filter(|(_, status)| **status == BackendStatus::Draining)
            .map(|(service, _)| (service.clone(), vec![DrainSource::Admin]))
            .collect();
        BackendView {
            id,
            address: addr(address),
            protocol: Protocol::Tcp,
            generation: 2,
            status: api.min(web),
            health: "unchecked".into(),
            health_by_service: BTreeMap::new(),
            services: vec!["api".into(), "web".into()],
            status_by_service,
            drained_by,
            packets: 5,
            bytes: 300,
        }
    }

    #[test]
    fn backend_list() {
        let view = BackendView {
            health: "down".into(),
            ..shared_backend(
                3,
                "198.18.2.1:8080",
                BackendStatus::Down,
                BackendStatus::Down,
            )
        };
        // Down and retired: no record, so no ID (0 is never given out).
        let retired = BackendView {
            id: 0,
            generation: 0,
            ..view.clone()
        };
        assert_eq!(
            backends_table(&[view, retired], None),
            "\
ID   Address               Status   Drained By   Health   Gen   Services   Packets   Bytes
3    198.18.2.1:8080/TCP   down     -            down     2     api,web    5         300
-    198.18.2.1:8080/TCP   down     -            down     -     api,web    5         300
"
        );
    }

    #[test]
    fn backend_list_says_how_each_service_probes_a_backend_and_what_it_finds() {
        use crate::api::ServiceHealthView;
        use BackendStatus::{Active, Down};
        let checked = |path, health: &str| ServiceHealthView {
            path,
            health: health.into(),
        };
        // A `dsr` service (web) and a NAT one (api) under one check; the
        // backend's decap stopped.
        let split = BackendView {
            health: "down".into(),
            health_by_service: BTreeMap::from([
                ("api".into(), checked(ProbePathView::Direct, "up")),
                ("web".into(), checked(ProbePathView::Tunnel, "down")),
            ]),
            ..shared_backend(4, "198.18.2.1:8080", Active, Down)
        };
        let agreed = BackendView {
            health: "up".into(),
            health_by_service: BTreeMap::from([
                ("api".into(), checked(ProbePathView::Tunnel, "up")),
                ("web".into(), checked(ProbePathView::Tunnel, "up")),
            ]),
            ..shared_backend(5, "198.18.2.2:8080", Active, Active)
        };
        let unwrappable = BackendView {
            health: "down".into(),
            health_by_service: BTreeMap::from([(
                "web".into(),
                checked(ProbePathView::Unwrappable, "down"),
            )]),
            services: vec!["web".into()],
            status_by_service: BTreeMap::from([("web".into(), Down)]),
            ..shared_backend(6, "[2001:2::6]:8080", Down, Down)
        };
        let table = backends_table(&[split, agreed, unwrappable], None);
        assert_eq!(
            table,
            "\
ID   Address                Status                   Drained By   Health                                 Gen   Services   Packets   Bytes
4    198.18.2.1:8080/TCP    down (1 of 2 services)   -            down (tunnel: web), up (direct: api)   2     api,web    5         300
5    198.18.2.2:8080/TCP    active                   -            up (tunnel)                            2     api,web    5         300
6    [2001:2::6]:8080/TCP   down                     -            down (unwrappable)                     2     web        5         300
"
        );
        let json =
            serde_json::to_value(shared_backend(7, "198.18.2.3:8080", Active, Active)).unwrap();
        assert!(
            json.get("health_by_service").is_none(),
            "left out when no service checks it: {json}"
        );
    }

    #[test]
    fn backend_list_says_in_how_many_services_a_status_holds() {
        use BackendStatus::{Active, Down, Draining};
        let old_agent = BackendView {
            status_by_service: BTreeMap::new(),
            drained_by: BTreeMap::new(),
            ..shared_backend(7, "198.18.2.4:8080", Draining, Draining)
        };
        assert_eq!(
            backends_table(
                &[
                    shared_backend(4, "198.18.2.1:8080", Draining, Active),
                    shared_backend(5, "198.18.2.2:8080", Draining, Down),
                    shared_backend(6, "198.18.2.3:8080", Active, Active),
                    old_agent,
                ],
                None
            ),
            "\
ID   Address               Status                                               Drained By        Health      Gen   Services   Packets   Bytes
4    198.18.2.1:8080/TCP   draining (1 of 2 services)                           xlb drain (api)   unchecked   2     api,web    5         300
5    198.18.2.2:8080/TCP   draining (1 of 2 services), down (1 of 2 services)   xlb drain (api)   unchecked   2     api,web    5         300
6    198.18.2.3:8080/TCP   active                                               -                 unchecked   2     api,web    5         300
7    198.18.2.4:8080/TCP   draining                                             unknown           unchecked   2     api,web    5         300
"
        );
    }

    #[test]
    fn backend_list_says_who_drains_a_backend_and_which_drains_hold_nowhere() {
        use BackendStatus::{Active, Draining};
        use DrainSource::{Admin, File};
        let by_file = BackendView {
            drained_by: BTreeMap::from([("api".into(), vec![File]), ("web".into(), vec![File])]),
            ..shared_backend(4, "198.18.2.1:8080", Draining, Draining)
        };
        let by_both = BackendView {
            drained_by: BTreeMap::from([
                ("api".into(), vec![Admin]),
                ("web".into(), vec![File, Admin]),
            ]),
            ..shared_backend(5, "198.18.2.2:8080", Draining, Draining)
        };
        let file_in_web = BackendView {
            drained_by: BTreeMap::from([("web".into(), vec![File])]),
            ..shared_backend(6, "198.18.2.3:8080", Active, Draining)
        };
        let entry = |backend: &str, service: Option<&str>, services: &[&str]| DrainEntryView {
            backend: addr(backend),
            service: service.map(str::to_owned),
            services: services.iter().map(|s| (*s).to_owned()).collect(),
        };
        let drains = DrainsView {
            file: "/run/xlb/drains.json".into(),
            drains: vec![
                entry("198.18.1.100:9000", None, &[]),
                entry("198.18.2.2:8080", None, &["api", "web"]),
                entry("198.18.2.3:8080", Some("old"), &[]),
            ],
            restore_error: None,
        };
        assert_eq!(
            backends_table(&[by_file, by_both, file_in_web], Some(&drains)),
            "\
ID   Address               Status                       Drained By              Health      Gen   Services   Packets   Bytes
4    198.18.2.1:8080/TCP   draining                     file                    unchecked   2     api,web    5         300
5    198.18.2.2:8080/TCP   draining                     file (web), xlb drain   unchecked   2     api,web    5         300
6    198.18.2.3:8080/TCP   draining (1 of 2 services)   file (web)              unchecked   2     api,web    5         300

Drains of `xlb drain` that hold in no service now:
Backend             Drained In
198.18.1.100:9000   every service
198.18.2.3:8080     service old

note: the backend is not in the configuration now (or not in the service named); the drain is \
kept, and holds again if it comes back. `xlb undrain ADDR:PORT [--service S]` forgets it
"
        );
    }

    /// A frontend of the datapath's maps with `backends` in its table.
    fn programmed(
        frontend: &str,
        protocol: Protocol,
        service_id: u32,
        service: Option<&str>,
        backends: Vec<DatapathBackendView>,
    ) -> DatapathServiceView {
        DatapathServiceView {
            frontend: addr(frontend),
            protocol,
            kind: Some(FrontendKind::Vip),
            service_id,
            service: service.map(str::to_owned),
            mode: Mode::Nat,
            affinity_timeout_seconds: None,
            table_size: backends.iter().map(|b| b.slots).sum(),
            backends,
        }
    }

    /// What `xlb bpf lb list` shows of a datapath every part of which a
    /// frontend reaches.
    fn only(services: Vec<DatapathServiceView>) -> DatapathLbView {
        DatapathLbView {
            services,
            tables_without_frontend: vec![],
            active_backends_without_table: vec![],
            addresses_without_frontend: vec![],
        }
    }

    fn programmed_backend(
        id: u32,
        address: Option<&str>,
        status: DatapathBackendStatus,
        slots: u32,
    ) -> DatapathBackendView {
        DatapathBackendView {
            id,
            address: address.map(addr),
            generation: address.map(|_| 1),
            status,
            slots,
        }
    }

    #[test]
    fn bpf_lb_list_lists_each_frontend_with_its_backends() {
        use DatapathBackendStatus::Active;
        let web = vec![
            programmed_backend(3, Some("198.18.2.1:8080"), Active, 4),
            programmed_backend(4, Some("198.18.2.2:8080"), Active, 3),
        ];
        let services = vec![
            programmed(
                "198.18.100.1:80",
                Protocol::Tcp,
                1,
                Some("web"),
                web.clone(),
            ),
            programmed("10.0.0.5:30080", Protocol::Tcp, 1, Some("web"), web),
            programmed(
                "198.19.9.1:53",
                Protocol::Udp,
                12,
                Some("kube-system/dns:dns"),
                vec![],
            ),
        ];
        assert_eq!(
            lb_table(&only(services)),
            "\
Service Address           Service               Table   Backend Address (ID)      State    Slots
198.18.100.1:80/TCP (1)   web                   7       198.18.2.1:8080/TCP (3)   active   4
                                                        198.18.2.2:8080/TCP (4)   active   3
10.0.0.5:30080/TCP (1)    web                   7       198.18.2.1:8080/TCP (3)   active   4
                                                        198.18.2.2:8080/TCP (4)   active   3
198.19.9.1:53/UDP (12)    kube-system/dns:dns   0       (no table)
"
        );
    }

    #[test]
    fn bpf_lb_list_counts_the_slots_that_find_no_backend() {
        use DatapathBackendStatus::{Active, Missing, Retired};
        let pinned = vec![
            programmed_backend(3, Some("198.18.2.1:8080"), Active, 4),
            programmed_backend(5, Some("198.18.2.5:8080"), Retired, 1),
            programmed_backend(9, None, Missing, 2),
        ];
        // Two frontends of one table: its slots are counted once.
        let services = vec![
            programmed("198.19.0.1:80", Protocol::Tcp, 2, None, pinned.clone()),
            programmed("198.19.0.2:80", Protocol::Tcp, 2, None, pinned),
        ];
        assert_eq!(
            lb_table(&only(services)),
            "\
Service Address         Service   Table   Backend Address (ID)      State     Slots
198.19.0.1:80/TCP (2)   -         7       198.18.2.1:8080/TCP (3)   active    4
                                          198.18.2.5:8080/TCP (5)   retired   1
                                          - (9)                     missing   2
198.19.0.2:80/TCP (2)   -         7       198.18.2.1:8080/TCP (3)   active    4
                                          198.18.2.5:8080/TCP (5)   retired   1
                                          - (9)                     missing   2

note: 1 slot retired, 2 slots missing: new flows hashed to these slots find no backend \
(`missing`: the table names an ID without a backend record)
"
        );
    }

    /// A datapath with one frontend, and one of each kind of state no
    /// frontend reaches.
    fn with_unreached() -> DatapathLbView {
        use DatapathBackendStatus::{Active, Missing};
        DatapathLbView {
            services: vec![programmed(
                "198.19.0.1:80",
                Protocol::Tcp,
                2,
                Some("web"),
                vec![programmed_backend(3, Some("198.18.2.1:8080"), Active, 7)],
            )],
            tables_without_frontend: vec![DatapathTableView {
                service_id: 40,
                service: None,
                table_size: 7,
                backends: vec![
                    programmed_backend(3, Some("198.18.2.1:8080"), Active, 4),
                    programmed_backend(9, None, Missing, 3),
                ],
            }],
            active_backends_without_table: vec![
                DatapathRecordView {
                    id: 6,
                    address: addr("198.18.2.6:8080"),
                    generation: 3,
                    status_by_service: [
                        ("api".to_owned(), BackendStatus::Terminating),
                        ("web".to_owned(), BackendStatus::Draining),
                    ]
                    .into(),
                },
                DatapathRecordView {
                    id: 11,
                    address: addr("198.18.2.11:53"),
                    generation: 1,
                    status_by_service: BTreeMap::new(),
                },
            ],
            addresses_without_frontend: vec![
                DatapathAddressView {
                    address: "198.18.0.7".parse().expect("address"),
                    kind: FrontendKind::Node,
                },
                DatapathAddressView {
                    address: "198.19.0.50".parse().expect("address"),
                    kind: FrontendKind::Vip,
                },
            ],
        }
    }

    #[test]
    fn bpf_lb_list_shows_what_no_frontend_reaches_apart() {
        assert_eq!(
            lb_table(&with_unreached()),
            "\
Service Address         Service   Table   Backend Address (ID)      State    Slots
198.19.0.1:80/TCP (2)   web       7       198.18.2.1:8080/TCP (3)   active   7

Tables no frontend names (new flows reach none of them):
Service ID   Service   Table   Backend Address (ID)   State     Slots
40           -         7       198.18.2.1:8080 (3)    active    4
                               - (9)                  missing   3

note: the agent adopts every table it finds in the pinned maps when it starts, and its first \
sync removes them; one still listed after a successful sync was not written by this agent, \
and stays

Active backends no table names (no new flow goes to them; their tracked flows do):
Backend Address (ID)   Gen   Agent's Status
198.18.2.6:8080 (6)    3     terminating (api)
                             draining (web)
198.18.2.11:53 (11)    1     -

note: draining and terminating backends are expected here: the agent keeps their records for \
their tracked flows. It adopts every record it finds in the pinned maps when it starts, and a \
sync retires those its model does not keep (`-`: no backend of its model); one listed with `-` \
after a successful sync was not written by this agent

Addresses no frontend has:
Address       Kind
198.18.0.7    node
198.19.0.50   VIP

note: new flows to a VIP here are dropped (`drop_unknown_port`), to a node address passed. The \
agent adopts every address it finds in the pinned maps when it starts, and a sync removes those \
no frontend of its model is on; one still listed after a successful sync was not written by \
this agent
"
        );
    }

    #[test]
    fn bpf_lb_list_shows_each_kind_of_unreached_state_only_when_there_is_some() {
        let full = with_unreached();
        let headings = [
            "Tables no frontend names",
            "Active backends no table names",
            "Addresses no frontend has",
        ];
        let shown = |view: &DatapathLbView| -> Vec<bool> {
            let text = lb_table(view);
            headings.iter().map(|h| text.contains(h)).collect()
        };
        let mut view = full.clone();
        view.tables_without_frontend.clear();
        assert_eq!(shown(&view), [false, true, true]);
        let mut view = full.clone();
        view.active_backends_without_table.clear();
        assert_eq!(shown(&view), [true, false, true]);
        let mut view = full;
        view.addresses_without_frontend.clear();
        assert_eq!(shown(&view), [true, true, false]);
    }

    #[test]
    fn bpf_lb_list_json_is_the_api_document() {
        let mut view = with_unreached();
        view.services = vec![programmed(
            "198.19.0.1:80",
            Protocol::Tcp,
            2,
            None,
            vec![programmed_backend(
                9,
                None,
                DatapathBackendStatus::Missing,
                2,
            )],
        )];
        let json = render(Format::Json, &view, |_| unreachable!()).expect("json");
        let raw: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let frontend = &raw["services"][0];
        assert_eq!(frontend["service"], serde_json::Value::Null);
        assert_eq!(
            frontend["backends"][0],
            serde_json::json!({"id": 9, "address": null, "generation": null, "status": "missing", "slots": 2})
        );
        assert_eq!(raw["tables_without_frontend"][0]["service_id"], 40);
        assert_eq!(
            raw["active_backends_without_table"][0],
            serde_json::json!({
                "id": 6,
                "address": "198.18.2.6:8080",
                "generation": 3,
                "status_by_service": {"api": "terminating", "web": "draining"},
            })
        );
        assert_eq!(
            raw["addresses_without_frontend"][1],
            serde_json::json!({"address": "198.19.0.50", "kind": "vip"})
        );
        let back: DatapathLbView = serde_json::from_str(&json).expect("parse json");
        assert_eq!(back, view);
    }

    #[test]
    fn conntrack_list() {
        let flows = [
            FlowView {
                protocol: Protocol::Tcp,
                client: addr("198.18.50.77:40000"),
                frontend: addr("198.18.100.1:80"),
                backend_id: 3,
                backend: Some(addr("198.18.2.1:8080")),
                snat: Some(addr("198.18.0.1:61004")),
                service: Some("web".into()),
                state: "established".into(),
                idle_seconds: 4,
            },
            FlowView {
                protocol: Protocol::Udp,
                client: addr("198.18.50.77:5353"),
                frontend: addr("198.19.9.1:53"),
                backend_id: 9,
                backend: None,
                snat: None,
                service: None,
                state: "udp".into(),
                idle_seconds: 120,
            },
        ];
        assert_eq!(
            flows_table(&flows),
            "\
Protocol   Client               Frontend          Backend                SNAT               Service   State         Idle
TCP        198.18.50.77:40000   198.18.100.1:80   3 => 198.18.2.1:8080   198.18.0.1:61004   web       established   4s
UDP        198.18.50.77:5353    198.19.9.1:53     9 (gone)               -                  -         udp           120s
"
        );
        // JSON and YAML name the new source as the other addresses are
        // named, and leave it out of a flow that has none.
        let json = serde_json::to_value(&flows).expect("serialize flows");
        assert_eq!(json[0]["snat"], "198.18.0.1:61004");
        assert!(json[1].get("snat").is_none(), "{json}");
    }

    #[test]
    fn maglev_shows_shares() {
        let view = MaglevView {
            service: "web".into(),
            id: 1,
            size: 7,
            slots: vec![3, 3, 4, 3, 4, 3, 4],
            shares: BTreeMap::from([(3, 4), (4, 3)]),
        };
        let addresses = BTreeMap::from([(3, addr("198.18.2.1:8080"))]);
        assert_eq!(
            maglev_text(&view, &addresses),
            "\
Service:      web (ID 1)
Table size:   7

Backend   Address           Slots   Share
3         198.18.2.1:8080   4       57.1%
4         -                 3       42.9%
"
        );
    }

    #[test]
    fn simulate_explains_the_outcome() {
        let request = SimulateRequest {
            client: addr("198.18.50.77:40000"),
            frontend: addr("198.18.100.1:80"),
            protocol: Protocol::Tcp,
        };
        let view = SimulateView {
            outcome: "backend".into(),
            service: Some("web".into()),
            backend_id: Some(3),
            backend: Some(addr("198.18.2.1:8080")),
        };
        assert_eq!(
            simulate_text(&request, &view),
            "\
Flow:      198.18.50.77:40000 -> 198.18.100.1:80/TCP
Outcome:   backend (a new flow: balanced by the service's Maglev table)
Service:   web
Backend:   3 => 198.18.2.1:8080
"
        );
        let view = SimulateView {
            outcome: "not_a_frontend".into(),
            service: None,
            backend_id: None,
            backend: None,
        };
        assert_eq!(
            simulate_text(&request, &view),
            "\
Flow:      198.18.50.77:40000 -> 198.18.100.1:80/TCP
Outcome:   not_a_frontend (not a frontend: passed to the host's stack)
"
        );
    }

    /// A drain's answer: `changed`, and the services left `unchanged` for
    /// their reason.
    fn drain_view(changed: &[&str], unchanged: &[(&str, DrainUnchanged)]) -> DrainView {
        DrainView {
            services: changed.iter().map(|s| (*s).to_owned()).collect(),
            unchanged: unchanged
                .iter()
                .map(|(service, reason)| crate::api::DrainUnchangedView {
                    service: (*service).to_owned(),
                    reason: *reason,
                })
                .collect(),
            forgotten: Vec::new(),
        }
    }

    #[test]
    fn drain_reports_the_services_changed_and_why_the_others_did_not() {
        use DrainUnchanged::{AlreadyDrained, DrainedByFile, NotDrained, Terminating};
        let backend = addr("198.18.2.2:8080");
        assert_eq!(
            drain_text(backend, true, &drain_view(&["web", "api"], &[])),
            "198.18.2.2:8080: draining in web, api\n"
        );
        assert_eq!(
            drain_text(
                backend,
                true,
                &drain_view(
                    &["db"],
                    &[
                        ("web", AlreadyDrained),
                        ("api", AlreadyDrained),
                        ("files", DrainedByFile),
                        ("pods", Terminating),
                    ]
                )
            ),
            "\
198.18.2.2:8080: draining in db
198.18.2.2:8080: already drained by xlb drain in web, api
198.18.2.2:8080: already draining in files: the configuration file drains it (state: draining); \
this drain is kept as well, and holds if the file stops draining it
198.18.2.2:8080: already gets no new flows in pods: it is terminating; this drain is kept, and \
holds if it turns active
"
        );
        let undrain = drain_view(&[], &[("web", NotDrained), ("files", DrainedByFile)]);
        assert_eq!(
            drain_text(backend, false, &undrain),
            "198.18.2.2:8080: not drained in web: nothing to undrain\n"
        );
        assert_eq!(
            undrain_refused(backend, &undrain, Some("/etc/xlb/xlb.yaml")).as_deref(),
            Some(
                "198.18.2.2:8080: still draining in files: the configuration file drains it \
                 there (state: draining), which xlb undrain cannot lift: set `state: active` for \
                 it in /etc/xlb/xlb.yaml"
            )
        );
        assert_eq!(
            undrain_refused(backend, &drain_view(&["web"], &[]), None),
            None
        );
        // An undrain of a backend no service has now forgets its drains.
        let forgotten = DrainView {
            forgotten: vec![DrainEntryView {
                backend,
                service: None,
                services: Vec::new(),
            }],
            ..drain_view(&[], &[])
        };
        assert_eq!(
            drain_text(backend, false, &forgotten),
            "198.18.2.2:8080: drain forgotten (every service): it held in no service (the \
             backend, or the service, is not in the configuration now)\n"
        );
        // An agent that predates the reasons.
        assert_eq!(
            drain_text(backend, true, &drain_view(&[], &[])),
            "198.18.2.2:8080: no service changed: already draining\n"
        );
    }

    fn stats(verdicts: &[(&str, u64)], parser: &[(&str, u64)]) -> StatsView {
        let map = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect::<BTreeMap<_, _>>()
        };
        StatsView {
            verdicts: map(verdicts),
            conntrack: BTreeMap::new(),
            parser: map(parser),
            flow_events: BTreeMap::new(),
        }
    }

    #[test]
    fn stats_lists_every_counter() {
        let view = stats(
            &[("forward_to_backend", 12), ("drop_no_backend", 0)],
            &[("ipv4", 12)],
        );
        assert_eq!(
            stats_table(&view),
            "\
Group     Counter              Packets
verdict   drop_no_backend      0
verdict   forward_to_backend   12
parser    ipv4                 12
"
        );
    }

    #[test]
    fn stats_watch_prints_what_moved() {
        let before = stats(
            &[("forward_to_backend", 100), ("drop_no_backend", 7)],
            &[("ipv4", 50)],
        );
        let after = stats(
            &[
                ("forward_to_backend", 300),
                ("drop_no_backend", 7),
                ("pass", 4),
            ],
            // Reset (maps recreated): counted 20 since.
            &[("ipv4", 20)],
        );
        let delta = stats_delta(&before, &after);
        assert_eq!(delta.verdicts["forward_to_backend"], 200);
        assert_eq!(delta.verdicts["drop_no_backend"], 0);
        assert_eq!(delta.verdicts["pass"], 4);
        assert_eq!(delta.parser["ipv4"], 20);
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            stats_delta_table(&delta, at, Duration::from_secs(2)),
            "\
2023-11-14T22:13:20Z (+2s)
Group     Counter              Packets   Per second
verdict   forward_to_backend   200       100.0
verdict   pass                 4         2.0
parser    ipv4                 20        10.0
"
        );
        assert_eq!(
            stats_delta_table(&stats_delta(&after, &after), at, Duration::from_secs(1)),
            "2023-11-14T22:13:20Z (+1s)\nno packets\n"
        );
    }

    #[test]
    fn status_report() {
        let status = StatusView {
            version: "0.1.0".into(),
            layout_version: 1,
            config_file: Some("/etc/xlb/xlb.yaml".into()),
            attached: vec![AttachmentView {
                interface: "eth0".into(),
                mode: "native".into(),
            }],
            services: 3,
            backends: 9,
            synced: true,
            last_reload: Some(ReloadView {
                at: 1_700_000_000,
                outcome: "rejected".into(),
                error: Some(
                    "services[0].port: 70000 is out of range 1-65535\nservices[1]: x".into(),
                ),
            }),
            reloads_ok: 4,
            reloads_failed: 1,
            last_sync_seconds: Some(0.0124),
            last_sync_error: Some(
                "the configuration needs 5 frontends but --max-services is 4: raise \
                 --max-services (nothing was written)"
                    .into(),
            ),
            uptime_seconds: 3723,
            announcements: vec![
                AnnouncementView {
                    speaker: "bgp".into(),
                    interface: None,
                    vips: vec![
                        "198.19.0.1".parse().unwrap(),
                        "2001:2:1::1".parse().unwrap(),
                    ],
                    left_by_earlier_agent: false,
                    error: Some("BIRD's control socket /run/bird/bird.ctl: refused".into()),
                },
                AnnouncementView {
                    speaker: "l2".into(),
                    interface: Some("eth0".into()),
                    vips: Vec::new(),
                    left_by_earlier_agent: false,
                    error: None,
                },
            ],
            earlier_agent_state_kept: None,
            kubernetes: None,
            flow_event_sampling: None,
            maglev: Some(MaglevSettingsView {
                hash_seed: 42,
                min_table_size: 16381,
            }),
            drains: Some(DrainsView {
                file: "/run/xlb/drains.json".into(),
                drains: vec![DrainEntryView {
                    backend: addr("198.18.1.100:9000"),
                    service: None,
                    services: Vec::new(),
                }],
                restore_error: Some("/run/xlb/drains.json: not a drains file".into()),
            }),
        };
        assert_eq!(
            status_text(&status),
            "\
Version:      0.1.0 (datapath layout 1)
Maglev:       hash seed 42, tables of at least 16381 slots
Source:       file
Config:       /etc/xlb/xlb.yaml
Attached:     eth0 (native)
Synced:       yes (last full sync took 12.4 ms)
Last sync:    failed (the datapath keeps what it held; the next change syncs again)
              the configuration needs 5 frontends but --max-services is 4: raise --max-services (nothing was written)
Services:     3
Backends:     9
Drains:       1 by xlb drain (kept in /run/xlb/drains.json across restarts)
              198.18.1.100:9000 (every service): holds in no service now; kept until xlb undrain
              not restored at start (started without them): /run/xlb/drains.json: not a drains file
Reloads:      4 ok, 1 rejected
Last reload:  rejected at 2023-11-14T22:13:20Z
              services[0].port: 70000 is out of range 1-65535
              services[1]: x
Announcing:   bgp: 198.19.0.1, 2001:2:1::1
              last attempt failed (retrying): BIRD's control socket /run/bird/bird.ctl: refused
Announcing:   l2 on eth0: nothing
Uptime:       1h 2m 3s
"
        );
    }

    #[test]
    fn status_of_an_agent_restarted_on_a_rejected_file_says_what_it_keeps() {
        let announcement =
            |speaker: &str, interface: Option<&str>, vips: &[&str]| AnnouncementView {
                speaker: speaker.into(),
                interface: interface.map(Into::into),
                vips: vips.iter().map(|v| v.parse().unwrap()).collect(),
                left_by_earlier_agent: true,
                error: None,
            };
        let status = StatusView {
            version: "0.1.0".into(),
            layout_version: 1,
            config_file: Some("/etc/xlb/xlb.yaml".into()),
            attached: vec![AttachmentView {
                interface: "eth0".into(),
                mode: "kept, program replaced in the pinned link".into(),
            }],
            services: 0,
            backends: 3,
            synced: false,
            last_reload: Some(ReloadView {
                at: 1_700_000_000,
                outcome: "rejected".into(),
                error: Some("services[0].backends[1].weight: 0 is out of range 1-65535".into()),
            }),
            reloads_ok: 0,
            reloads_failed: 1,
            last_sync_seconds: None,
            last_sync_error: None,
            uptime_seconds: 5,
            announcements: vec![
                announcement("bgp", None, &["198.19.0.1", "2001:2:1::1"]),
                announcement("l2", Some("eth0"), &[]),
            ],
            earlier_agent_state_kept: Some("the configuration file is rejected".into()),
            kubernetes: None,
            flow_event_sampling: None,
            maglev: None,
            drains: None,
        };
        assert_eq!(
            status_text(&status),
            "\
Version:      0.1.0 (datapath layout 1)
Source:       file
Config:       /etc/xlb/xlb.yaml
Attached:     eth0 (kept, program replaced in the pinned link)
Synced:       no (the first full sync is not programmed yet)
Serving:      what an earlier agent pinned, unchanged: the configuration file is rejected
              no health check runs until a good file is loaded: a backend that fails meanwhile stays in its table
              the announcements stay as that agent left them
Services:     0
Backends:     3
Reloads:      0 ok, 1 rejected
Last reload:  rejected at 2023-11-14T22:13:20Z
              services[0].backends[1].weight: 0 is out of range 1-65535
Announcing:   bgp: 198.19.0.1, 2001:2:1::1 (an earlier agent's, kept until this agent's first sync)
Announcing:   l2 on eth0: nothing (until this agent's first sync)
Uptime:       5s
"
        );
        let json = serde_json::to_value(&status).expect("serialize the status");
        assert_eq!(json["announcements"][0]["left_by_earlier_agent"], true);
        assert_eq!(
            json["earlier_agent_state_kept"],
            "the configuration file is rejected"
        );
    }

    #[test]
    fn status_report_in_kubernetes_mode() {
        let status = StatusView {
            version: "0.1.0".into(),
            layout_version: 1,
            config_file: None,
            attached: Vec::new(),
            services: 0,
            backends: 0,
            synced: false,
            last_reload: None,
            reloads_ok: 0,
            reloads_failed: 0,
            last_sync_seconds: None,
            last_sync_error: None,
            uptime_seconds: 5,
            announcements: Vec::new(),
            earlier_agent_state_kept: Some("the Kubernetes caches are not synced yet".into()),
            kubernetes: Some(crate::api::KubernetesView {
                node: "node-a".into(),
                label_selector: "!service.kubernetes.io/service-proxy-name".into(),
                caches: BTreeMap::from([
                    ("endpointslices".into(), false),
                    ("node".into(), true),
                    ("services".into(), true),
                ]),
                caches_synced: false,
                last_error: Some("endpointslices: connection refused".into()),
                health_check_node_ports: vec![32100, 32101],
            }),
            flow_event_sampling: None,
            maglev: None,
            drains: None,
        };
        let text = status_text(&status);
        assert!(
            text.starts_with(
                "\
Version:      0.1.0 (datapath layout 1)
Source:       kubernetes (node node-a, selector !service.kubernetes.io/service-proxy-name)
Caches:       endpointslices waiting, node synced, services synced
Watch error:  endpointslices: connection refused (retrying)
Health ports: 32100, 32101
Config:       -
Attached:     none
Synced:       no (the first full sync is not programmed yet)
Serving:      what an earlier agent pinned, unchanged: the Kubernetes caches are not synced yet
              no endpoint change is applied until the caches are synced: a backend that fails meanwhile stays in its table
              the announcements stay as that agent left them
"
            ),
            "{text}"
        );
    }

    #[test]
    fn json_and_yaml_are_the_api_documents() {
        let services = vec![web()];
        let json = render(Format::Json, &services, |_| unreachable!()).expect("json");
        let back: Vec<ServiceView> = serde_json::from_str(&json).expect("parse json");
        assert_eq!(back, services);
        let yaml = render(Format::Yaml, &services, |_| unreachable!()).expect("yaml");
        let back: Vec<ServiceView> = serde_yaml_ng::from_str(&yaml).expect("parse yaml");
        assert_eq!(back, services);
        let table = render(Format::Table, &services, |s| services_table(s)).expect("table");
        assert!(table.starts_with("ID   Name   Frontend"), "{table}");
    }
}
