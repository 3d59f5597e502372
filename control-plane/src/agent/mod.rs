//! The agent: loads and pins the datapath, attaches it, and keeps it equal to
//! its source — the configuration file (reloads) or the Kubernetes API
//! (`--kubernetes`: reflectors and debounced syncs) — with health checks,
//! the admin API, metrics and, in Kubernetes mode, the healthCheckNodePorts.
//!
//! Restart without loss: maps are pinned under `<pin-dir>/maps`, the XDP
//! links under `<pin-dir>/links` and the uplinks' egress links under
//! `<pin-dir>/uplinks`, so the programs keep forwarding while no agent runs.
//! A starting agent reopens the pinned maps, rebuilds its IDs and
//! generations from them ([`crate::reconcile::Reconciler::recover`]), swaps
//! its own program build into the pinned links (one atomic link update), and
//! deletes pinned state only with its first full sync from its source (in
//! Kubernetes mode: once the Service and EndpointSlice caches hold a full
//! list, however long the API server takes to answer).

mod bpffs;
mod collector;
mod core;
mod dir_lock;
mod drains;
mod event_drain;
mod event_names;
mod fabric;
mod health_views;
mod host_addresses;
mod interfaces;
mod kubernetes;
mod options;
mod probe_tunnel;
mod programmed;
mod recover;
mod views;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use consistent_hash::SizingPolicy;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
    time::{MissedTickBehavior, interval},
};
use xdp_lb::{AttachMode, Config, Datapath, LoadOptions, MapSizes, ProgramName};

pub use options::{AgentOptions, DsrHealthProbes, MapSizeOptions};
pub(crate) use options::{each_once, parse_interface_name};

use self::{
    core::{ConfigRead, Core, Status},
    views::AgentAdmin,
};
use crate::{
    admin::{self, Admin},
    announce::{Announcer, Bird, L2, Speaker},
    api::AttachmentView,
    health::{HealthChecker, node_port::HealthCheckNodePorts},
    metrics::{self, Metrics},
    pod_interfaces::PodInterfaces,
    reconcile::Reconciler,
};

/// How often the configuration file is checked for changes.
const FILE_POLL: Duration = Duration::from_secs(1);
/// The announcement tick: how often a speaker that failed (BIRD down, say)
/// is tried again, and the spacing of repeated L2 announcements (RFC 5227's
/// `ANNOUNCE_INTERVAL`).
const ANNOUNCE_TICK: Duration = Duration::from_secs(2);

/// Runs the agent until SIGTERM or SIGINT. The datapath keeps forwarding
/// after it exits: links and maps stay pinned for the next agent.
pub fn run(options: AgentOptions) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run_async(options))
}

async fn run_async(options: AgentOptions) -> anyhow::Result<()> {
    // Everything a flag can get wrong is checked, and every socket bound,
    // before anything pinned changes: a mistyped flag must not take down
    // what an earlier agent left forwarding.
    let group = options
        .admin_group
        .as_deref()
        .map(admin::server::resolve_group)
        .transpose()
        .context("--admin-group")?;
    interfaces::check_names(&options.interfaces)?;
    fabric::check_sources("--encap-source", &options.encap_sources)?;
    fabric::check_sources("--snat-source", &options.snat_sources)?;
    let host = host_addresses::of_this_host();
    for warning in host_addresses::hairpin_sources_among(&options.hairpin_sources, &host) {
        tracing::warn!("{warning}");
    }
    if let Some(pattern) = &options.pod_interfaces {
        PodInterfaces::new(pattern)?;
    }
    let speakers = speakers(&options)?;
    let kube_client = if options.kubernetes {
        Some(kubernetes::client(&options).await?)
    } else {
        None
    };
    // The file too: on a node with nothing pinned, a file the agent would
    // refuse is fatal, and must be so before the maps are made and pinned
    // at this run's sizes (they would outlive it, and fix the sizes of the
    // next run).
    let asked = options.sizes.map_sizes(options.conntrack_size);
    let maps_dir = options.pin_dir.join("maps");
    let first_read = options
        .config
        .as_deref()
        .map(|file| (file, core::read_config(file)));
    let had_pins = bpffs::holds_pins(&maps_dir);
    if let Some((file, read)) = &first_read
        && !had_pins
    {
        refuse_on_a_fresh_node(file, read, asked)?;
    }
    bpffs::ensure(&options.pin_dir)?;
    let _pin_dir_lock = bpffs::lock(&options.pin_dir)?;
    interfaces::check_xdp_free(&options.interfaces, &fabric::xdp_link_dir(&options.pin_dir))
        .await?;
    // Their errors name the socket and the flag.
    let admin_server = admin::server::AdminServer::bind(&options.admin_socket, group).await?;
    let metrics_server = metrics::MetricsServer::bind(options.metrics_address).await?;
    let drains = drains::Drains::open(&drains::state_dir(
        options.state_dir.as_deref(),
        &options.admin_socket,
    ))?;
    let mut datapath = Datapath::load_stamped(
        &LoadOptions {
            sizes: asked,
            pin_dir: Some(maps_dir),
        },
        options
            .version_stamp
            .unwrap_or(xdp_lb::DEFAULT_VERSION_STAMP),
    )
    .context("loading the datapath (pinned maps of an older layout are refused: see --pin-dir)")?;
    let sizes = datapath.sizes();
    warn_of_pinned_sizes(asked, sizes, &options.pin_dir);
    let (encap_source_v4, encap_source_v6) =
        fabric::one_per_family("--encap-source", &options.encap_sources)?;
    let pinned = datapath.config()?;
    if had_pins && pinned.hash_seed != options.hash_seed {
        tracing::warn!(
            pinned = pinned.hash_seed,
            hash_seed = options.hash_seed,
            "--hash-seed differs from the pinned datapath's: the first sync rebuilds every Maglev \
             table with it, so new flows may reach other backends than before (tracked flows \
             keep theirs); every LB behind one ECMP group must run with the same seed"
        );
    }
    let mut config = Config {
        hash_seed: options.hash_seed,
        new_flows_per_cpu_per_sec: options.new_flows_per_cpu,
        flow_event_sampling: options.flow_event_sampling,
        encap_source_v4: encap_source_v4.map_or([0; 4], |a| a.octets()),
        encap_source_v6: encap_source_v6.map_or([0; 16], |a| a.octets()),
        ..pinned
    };
    fabric::snat_config(
        &mut config,
        &options.snat_sources,
        options.snat_ports,
        &options.hairpin_sources,
        &options.interfaces[0],
    )?;
    datapath
        .set_config(&config)
        .context("writing the datapath configuration")?;
    if options.l2_interface.is_none() {
        forget_l2_announcements(&mut datapath)?;
    }
    if options.pod_interfaces.is_none() {
        fabric::forget_pod_interfaces(&mut datapath, &options.pin_dir)?;
    }
    let recovered = recover::read(&datapath).context("reading the pinned state")?;
    let adopted = !recovered.frontends.is_empty() || !recovered.backends.is_empty();
    if adopted {
        tracing::info!(
            frontends = recovered.frontends.len(),
            backends = recovered.backends.len(),
            tables = recovered.tables.len(),
            "adopted the pinned state of an earlier agent"
        );
    }
    if !recovered.removed_frontends_with_flows.is_empty() {
        tracing::info!(
            frontends = recovered.removed_frontends_with_flows.len(),
            "tracked flows to frontends an earlier agent removed: deleted at the first sync"
        );
    }
    let reconciler = Reconciler::recover(
        options.hash_seed,
        SizingPolicy::with_min_size(options.maglev_min_size),
        sizes,
        &recovered,
    );
    let (mut health, mut health_changes) = HealthChecker::new();
    // Backends the previous agent served keep serving until a probe says
    // otherwise; the others wait for their first probe, as on a first start.
    health.recover(
        recover::pinned_tables(&datapath, &recovered).context("reading the pinned tables")?,
    );
    // Only the file's native services can be `dsr`: a Kubernetes node
    // gets no probe program, whose mark range a CNI's marks might meet.
    let probe_tunnel = match options.dsr_health_probes {
        DsrHealthProbes::Tunnel if !options.kubernetes => Some(probe_tunnel::TunnelProbes::start(
            &mut datapath,
            options.health_probe_mark,
            (
                encap_source_v4.map(Into::into),
                encap_source_v6.map(Into::into),
            ),
            &options.interfaces,
        )?),
        DsrHealthProbes::Tunnel | DsrHealthProbes::Direct => None,
    };
    let metrics = Arc::new(Metrics::new());
    for speaker in &speakers {
        metrics.speaker_configured(speaker.name());
    }
    let (kube_source, kube_status) = match kube_client {
        Some(client) => {
            let (source, status) = kubernetes::start(client, kubernetes::settings(&options));
            (Some(source), Some(status))
        }
        None => (None, None),
    };
    let mut core = Core {
        datapath,
        reconciler,
        model: Default::default(),
        drains,
        desired: Default::default(),
        health,
        probe_tunnel,
        metrics: Arc::clone(&metrics),
        announcer: Announcer::new(speakers),
        file_health_ports: Default::default(),
        status: Status {
            config_file: options.config.clone(),
            kubernetes: kube_status,
            attached: Vec::new(),
            loaded: false,
            adopted,
            synced: false,
            last_sync_error: None,
            last_reload: None,
            reloads_ok: 0,
            reloads_failed: 0,
            last_sync: None,
            started: Instant::now(),
        },
    };

    core.announcer.record_held(&core.datapath, &core.metrics);

    // The first load: a bad file with nothing pinned is fatal; with pinned
    // state, that state keeps forwarding until a good file arrives (nothing
    // is withdrawn because a file is broken). The Kubernetes source has
    // nothing to load yet: its first sync arrives in the loop below once
    // its caches are full, and until then the pinned state forwards.
    if let Some((_, read)) = first_read
        && let Err(rejected) = core.reload(read, Instant::now())?
        && !adopted
    {
        return Err(anyhow::anyhow!("{rejected}").context("the configuration file was rejected"));
    }
    if kube_source.is_some() {
        tracing::info!(
            adopted,
            "waiting for the Kubernetes caches before the first sync (the pinned state, if any, \
             keeps forwarding)"
        );
    }

    let mode = if options.generic_xdp {
        AttachMode::Generic
    } else {
        AttachMode::Native
    };
    let links = fabric::xdp_link_dir(&options.pin_dir);
    let uplink_links = fabric::uplink_link_dir(&options.pin_dir);
    fabric::forget_dropped_interfaces(&options.interfaces, &links, &uplink_links)?;
    for iface in &options.interfaces {
        fabric::accept_local(iface).await?;
        let attached = core
            .datapath
            .attach_pinned(ProgramName::XdpLb, iface, mode, &links)
            .with_context(|| format!("attaching xdp_lb to {iface}"))?;
        core.datapath
            .attach_uplink_egress_pinned(iface, &uplink_links)
            .with_context(|| format!("attaching tc_lb_uplink to the egress of {iface}"))?;
        core.status.attached.push(AttachmentView {
            interface: iface.clone(),
            // A taken-over link keeps the mode it was made in.
            mode: match attached.native() {
                Some(true) => "native",
                Some(false) => "generic",
                None => "kept, program replaced in the pinned link",
            }
            .to_owned(),
        });
    }
    tracing::info!(
        interfaces = ?options.interfaces,
        dsr_health_probes = ?options.dsr_health_probes,
        "xdp_lb attached, and tc_lb_uplink at their egress (with tc_probe_encap before it when \
         dsr backends are probed through the tunnel)"
    );
    // Now that it can serve: announce what the first sync programmed.
    core.announce();

    let events = match options.flow_event_sampling {
        0 => None,
        _ => Some(
            core.datapath
                .flow_events()
                .context("opening the datapath's flow events")?,
        ),
    };
    let conntrack = core
        .datapath
        .conntrack_tables()
        .context("opening the conntrack tables for the collector")?;
    let core = Arc::new(Mutex::new(core));
    let pod_task = match &options.pod_interfaces {
        Some(pattern) => Some(
            fabric::follow_pod_interfaces(pattern, Arc::clone(&core), options.pin_dir.clone())
                .await
                .context("following the pod interfaces")?,
        ),
        None => None,
    };
    let conntrack_count = Arc::new(collector::ConntrackCount::default());
    let event_history = Arc::new(admin::SharedHistory::new(admin::EventHistory::new(
        admin::HISTORY_CAPACITY,
    )));
    let admin_api: Arc<dyn Admin> = Arc::new(AgentAdmin {
        core: Arc::clone(&core),
        events: Arc::clone(&event_history),
        conntrack_count: Arc::clone(&conntrack_count),
    });
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&s| s).await;
    };
    let admin_task =
        tokio::spawn(admin_server.serve(Arc::clone(&admin_api), until_stopped(stopped.clone())));
    let metrics_task = tokio::spawn(metrics_server.serve(
        Arc::clone(&metrics),
        Arc::clone(&admin_api),
        until_stopped(stopped.clone()),
    ));
    let collector_task = tokio::spawn(collector::run(
        conntrack,
        conntrack_count,
        until_stopped(stopped.clone()),
    ));
    let event_task = events.map(|ring| {
        tokio::spawn(event_drain::run(
            ring,
            Arc::clone(&core),
            event_history,
            until_stopped(stopped.clone()),
        ))
    });

    let mut hangup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut file_poll = interval(FILE_POLL);
    file_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut announce_tick = interval(ANNOUNCE_TICK);
    announce_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let config = options.config.as_deref();
    let mut stamp = config.and_then(file_stamp);
    let mut kube_states = kube_source.as_ref().map(|k| k.states.clone());
    let mut last_kube_state = None;
    let mut health_ports = HealthCheckNodePorts::new();
    serve_file_health_ports(&core, &mut health_ports).await;
    tracing::info!("agent running");
    loop {
        tokio::select! {
            _ = hangup.recv() => match config {
                Some(config) => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    stamp = file_stamp(config);
                    let read = read_off_lock(config).await;
                    locked(&core, |c| c.reload(read, Instant::now()).map(drop));
                    serve_file_health_ports(&core, &mut health_ports).await;
                }
                None => tracing::info!("SIGHUP ignored: the Kubernetes source syncs on every change"),
            },
            _ = file_poll.tick(), if config.is_some() => {
                let now = config.and_then(file_stamp);
                if now != stamp
                    && let Some(file) = config
                {
                    stamp = now;
                    let read = read_off_lock(file).await;
                    locked(&core, |c| c.reload(read, Instant::now()).map(drop));
                    serve_file_health_ports(&core, &mut health_ports).await;
                }
            }
            state = kubernetes::next_state(&mut kube_states) => {
                let since = Instant::now();
                locked(&core, |c| c.apply_kube(&state, since).map(drop).map_err(Into::into));
                kubernetes::serve_health_ports(&core, &mut health_ports, &state).await;
                last_kube_state = Some(state);
            }
            Some(change) = health_changes.recv() => {
                let since = Instant::now();
                tracing::info!(
                    backend = %change.target,
                    path = %change.path,
                    healthy = change.healthy,
                    reason = change.reason.as_deref().unwrap_or(""),
                    "backend health changed"
                );
                locked(&core, |c| c.sync(since).map(drop).map_err(Into::into));
                // A failed (or recovered) sync changes the ports' answers.
                match &last_kube_state {
                    Some(state) => {
                        kubernetes::serve_health_ports(&core, &mut health_ports, state).await;
                    }
                    None => serve_file_health_ports(&core, &mut health_ports).await,
                }
            }
            _ = announce_tick.tick() => {
                locked(&core, |c| {
                    c.announcer.tick(&mut c.datapath, &c.metrics);
                    Ok(())
                });
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("stopping; the datapath keeps forwarding from its pinned links and maps");
    if let Some(task) = pod_task {
        task.abort();
    }
    health_ports.close().await;
    drop(kube_source);
    let _ = stop.send(true);
    admin_task.await.context("admin server task")?;
    metrics_task.await.context("metrics server task")?;
    collector_task.await.context("conntrack collector task")?;
    if let Some(task) = event_task {
        task.await.context("flow event drain task")?;
    }
    Ok(())
}

/// The first file, on a node where nothing is pinned: refused as the agent
/// would refuse it (a bad file, or one maps of `sizes` cannot hold, counted
/// as `xlb check-config` counts), before anything is made or pinned.
fn refuse_on_a_fresh_node(file: &Path, read: &ConfigRead, sizes: MapSizes) -> anyhow::Result<()> {
    let rejected =
        |why: String| anyhow::anyhow!(why).context("the configuration file was rejected");
    let loaded = read.as_ref().map_err(|why| rejected(why.clone()))?;
    Reconciler::fits_fresh(&loaded.model, sizes)
        .map_err(|refused| rejected(format!("{}: {refused}", file.display())))
}

/// Reads the configuration file off the async executor and outside the
/// agent's lock (`core::read_config`).
async fn read_off_lock(file: &Path) -> ConfigRead {
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || core::read_config(&file))
        .await
        .unwrap_or_else(|failed| Err(format!("reading the configuration file: {failed}")))
}

/// Says which map-size flags did not apply: pinned maps keep the size they
/// were made with, and the agent goes on with those.
fn warn_of_pinned_sizes(asked: MapSizes, pinned: MapSizes, pin_dir: &Path) {
    for (flag, asked, pinned) in [
        ("--max-services", asked.services, pinned.services),
        ("--max-backends", asked.backends, pinned.backends),
        ("--conntrack-size", asked.conntrack, pinned.conntrack),
        ("--max-addresses", asked.addresses, pinned.addresses),
    ] {
        if asked != pinned {
            tracing::warn!(
                pin_dir = %pin_dir.display(),
                "{flag} {asked} does not apply: the pinned maps were made for {pinned}, \
                 and a map keeps its size (to resize, stop the agent and remove the pinned \
                 maps, which drops the tracked flows)"
            );
        }
    }
}

/// File mode: serves the `healthCheckNodePort`s of the file's Kubernetes
/// Services on the addresses of its `node:` section, as the Kubernetes mode
/// serves them.
async fn serve_file_health_ports(core: &Mutex<Core>, ports: &mut HealthCheckNodePorts) {
    let Ok((addresses, wanted)) = core.lock().map(|c| c.file_health_ports.clone()) else {
        return;
    };
    kubernetes::serve_node_ports(core, ports, &addresses, &wanted).await;
}

/// Runs `f` on the agent's state, off the async executor (a sync may take a
/// while), and logs its error: a failed sync is retried by the next event.
fn locked(core: &Mutex<Core>, f: impl FnOnce(&mut Core) -> anyhow::Result<()>) {
    tokio::task::block_in_place(|| match core.lock() {
        Ok(mut core) => {
            if let Err(error) = f(&mut core) {
                tracing::error!(
                    error = crate::error_text::one_line(error.as_ref()),
                    "agent step failed"
                );
            }
        }
        Err(_) => tracing::error!("the agent's state is poisoned"),
    });
}

/// What changes when the file is rewritten or replaced (editors and
/// ConfigMap updates rename a new file over the old one).
fn file_stamp(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// `--bird-socket` and `--l2-interface`.
fn speakers(options: &AgentOptions) -> anyhow::Result<Vec<Speaker>> {
    let mut speakers = Vec::new();
    if let Some(socket) = &options.bird_socket {
        check_bird_include(&options.bird_include)?;
        speakers.push(Speaker::Bgp(Bird::new(
            socket.clone(),
            options.bird_include.clone(),
        )));
    }
    if let Some(interface) = &options.l2_interface {
        anyhow::ensure!(
            options.interfaces.contains(interface),
            "--l2-interface {interface}: not one of --interface {}: the answers come from \
             xdp_lb on that interface",
            options.interfaces.join(",")
        );
        let link = xdp_lb::L2Link::of_interface(interface)
            .with_context(|| format!("--l2-interface {interface}"))?;
        speakers.push(Speaker::L2(L2::new(interface.clone(), link)));
    }
    Ok(speakers)
}

/// The directory of `--bird-include` must exist: bird.conf includes that
/// very file, and a mistyped path would have the agent create a directory
/// and write routes no BIRD reads. The default's directory, the agent's
/// runtime directory, is created.
fn check_bird_include(include: &Path) -> anyhow::Result<()> {
    let dir = include
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if include == Path::new(options::DEFAULT_BIRD_INCLUDE) {
        return std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} for --bird-include", dir.display()));
    }
    anyhow::ensure!(
        dir.is_dir(),
        "--bird-include {}: no directory {} (bird.conf includes this file; create the directory, \
         or correct the path)",
        include.display(),
        dir.display()
    );
    Ok(())
}

/// Without `--l2-interface`, no VIP is this instance's to answer for on a
/// segment: the answers an earlier agent left in the pinned map stop.
fn forget_l2_announcements(datapath: &mut Datapath) -> anyhow::Result<()> {
    let left = datapath
        .l2_announcements()
        .context("reading the pinned L2 announcements")?;
    for (addr, _) in left {
        datapath
            .withdraw_l2(addr)
            .with_context(|| format!("withdrawing the L2 announcement of {addr}"))?;
        tracing::info!(%addr, "L2 announcement of an earlier agent withdrawn (no --l2-interface)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bird_include_in_a_directory_that_does_not_exist_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mistyped = dir.path().join("no-such-dir").join("vips.conf");
        let error = check_bird_include(&mistyped).unwrap_err().to_string();
        assert!(error.contains("no directory"), "{error}");
        assert!(!dir.path().join("no-such-dir").exists(), "created: {error}");
        check_bird_include(&dir.path().join("vips.conf")).expect("an existing directory");
    }
}
