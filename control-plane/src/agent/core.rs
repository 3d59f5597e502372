//! The agent's state and its one way of changing the datapath: compute the
//! desired state (model + drains + health) and let the reconciler sync it.

use std::{
    borrow::Cow,
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use xdp_lb::Datapath;

use super::{
    drains::{Drains, with_drains},
    host_addresses,
    probe_tunnel::TunnelProbes,
};
use crate::{
    announce::{self, Announcer},
    api::{AttachmentView, ReloadView},
    health::{Health, HealthChecker, ProbePath, ProbeTunnel},
    metrics::Metrics,
    model::{Model, ServiceName},
    reconcile::{Desired, Reconciler, SyncError, SyncReport},
    source::{
        self,
        kube::{HealthCheckNodePort, sync::KubeState, watch::CacheStatus},
    },
};

/// The configuration file as read and checked on its own: what it holds, or
/// why it is refused (every problem, one per line, with its causes).
pub(crate) type ConfigRead = Result<source::file::Loaded, String>;

/// Reads and checks the configuration file `file`, outside the agent's lock:
/// a large file takes a while to parse, and the admin API and the syncs
/// must not wait for it. [`Core::reload`] takes the result.
pub(crate) fn read_config(file: &Path) -> ConfigRead {
    // With its causes: an unreadable file says why.
    source::file::load_with_warnings(file).map_err(|e| crate::error_text::one_line(&e))
}

/// Everything the agent knows, behind one lock.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) datapath: Datapath,
    pub(crate) reconciler: Reconciler,
    /// The last good configuration, as loaded.
    pub(crate) model: Model,
    /// The drains made through the admin API, kept across restarts.
    pub(crate) drains: Drains,
    /// The desired state of the last sync, refreshed in place by the next.
    pub(crate) desired: Desired,
    pub(crate) health: HealthChecker,
    /// Health probes of `dsr` services' backends through the tunnel; None
    /// with `--dsr-health-probes direct`.
    pub(crate) probe_tunnel: Option<TunnelProbes>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) announcer: Announcer,
    pub(crate) status: Status,
    /// File mode: the `healthCheckNodePort`s of the last good file and the
    /// node addresses they are served on.
    pub(crate) file_health_ports: (Vec<IpAddr>, Vec<HealthCheckNodePort>),
}

/// What `xlb status` shows besides counts.
#[derive(Debug)]
pub(crate) struct Status {
    /// The configuration file; None in Kubernetes mode.
    pub(crate) config_file: Option<PathBuf>,
    /// The Kubernetes source; None in file mode.
    pub(crate) kubernetes: Option<KubeStatus>,
    pub(crate) attached: Vec<AttachmentView>,
    /// True once the source delivered a model. Before, the agent programs
    /// nothing: the pinned state of an earlier agent keeps forwarding
    /// (a sync of the empty model would withdraw it all).
    pub(crate) loaded: bool,
    /// The agent adopted the pinned state of an earlier agent at start.
    pub(crate) adopted: bool,
    /// True once a sync was programmed.
    pub(crate) synced: bool,
    /// Why the last sync failed, until one succeeds (health check node
    /// ports answer 503 meanwhile, as kube-proxy's do when it is
    /// unhealthy; `xlb status` shows it).
    pub(crate) last_sync_error: Option<String>,
    pub(crate) last_reload: Option<ReloadView>,
    pub(crate) reloads_ok: u64,
    pub(crate) reloads_failed: u64,
    pub(crate) last_sync: Option<Duration>,
    pub(crate) started: Instant,
}

/// The Kubernetes source, as `xlb status` shows it.
#[derive(Debug)]
pub(crate) struct KubeStatus {
    pub(crate) node: String,
    pub(crate) label_selector: String,
    pub(crate) caches: Arc<CacheStatus>,
    /// The healthCheckNodePorts answered, as of the last reconcile.
    pub(crate) health_check_node_ports: Vec<u16>,
    /// The translation's warnings of the last sync, so that each is logged
    /// once when it appears rather than on every sync.
    pub(crate) warnings: BTreeSet<String>,
}

impl Core {
    /// The model with the operator's drains applied (see [`with_drains`]).
    pub(crate) fn effective_model(&self) -> Cow<'_, Model> {
        with_drains(&self.model, self.drains.set())
    }

    /// The tunnel `dsr` services' backends are probed through, if any.
    pub(crate) fn tunnel(&self) -> Option<&ProbeTunnel> {
        self.probe_tunnel.as_ref().map(TunnelProbes::tunnel)
    }

    /// The path and verdict of service `name`'s check of the backend at
    /// `addr`; None when it has no check
    /// ([`crate::health::checked_in_service`]).
    pub(crate) fn checked_in_service(
        &self,
        name: &ServiceName,
        addr: SocketAddr,
    ) -> Option<(ProbePath, Health)> {
        crate::health::checked_in_service(&self.model, &self.health, self.tunnel(), name, addr)
    }

    /// True when the backend at `addr` of service `name` passes its service's
    /// health check, on the path the service's traffic takes (or has none:
    /// [`crate::health::in_service`]).
    pub(crate) fn healthy(&self, name: &ServiceName, addr: SocketAddr) -> bool {
        crate::health::in_service(&self.model, &self.health, self.tunnel(), name, addr).is_up()
    }

    /// Programs the effective model with health overlaid. `since` is when the
    /// change that prompted this sync was seen, for the programming-latency
    /// metric.
    pub(crate) fn sync(&mut self, since: Instant) -> Result<SyncReport, SyncError> {
        if !self.status.loaded {
            return Ok(SyncReport::default());
        }
        let started = Instant::now();
        let mut desired = std::mem::take(&mut self.desired);
        desired.refresh(&self.effective_model(), |name, addr| {
            self.healthy(name, addr)
        });
        let synced = self.reconciler.sync(&desired, &mut self.datapath);
        self.desired = desired;
        self.status.last_sync_error = synced.as_ref().err().map(ToString::to_string);
        if let Err(error) = &synced {
            self.metrics.sync_failed(error);
        }
        let report = synced?;
        let took = started.elapsed();
        self.metrics.observe_sync(took);
        if !report.is_empty() {
            self.metrics.observe_programming(since.elapsed());
        }
        self.status.last_sync = Some(took);
        self.status.synced = true;
        tracing::debug!(?report, ?took, "synced");
        self.announce();
        Ok(report)
    }

    /// Brings the announcements in line with what the datapath serves, once
    /// it can serve at all (attached, first sync programmed).
    pub(crate) fn announce(&mut self) {
        if self.status.attached.is_empty() || !self.status.synced {
            return;
        }
        let vips = announce::servable(&self.desired);
        self.announcer
            .update(vips, &mut self.datapath, &self.metrics);
    }

    /// Takes the configuration file as [`read_config`] read it. A good file
    /// replaces the model (and the health targets) and is synced; a bad
    /// one, or one the maps cannot hold, is logged, counted and shown by
    /// `xlb status`, and the running configuration keeps serving. Returns
    /// the rejection (every problem, one per line) when the file was
    /// refused; the error is for a sync that failed.
    pub(crate) fn reload(
        &mut self,
        read: ConfigRead,
        since: Instant,
    ) -> anyhow::Result<Result<(), String>> {
        let Some(file) = self.status.config_file.clone() else {
            // Kubernetes mode: the source pushes its syncs (`apply_kube`).
            return Ok(Ok(()));
        };
        let loaded = match read {
            Ok(loaded) => loaded,
            Err(rejected) => return Ok(Err(self.reject(&file, rejected))),
        };
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let host = host_addresses::of_this_host();
        for warning in host_addresses::vips_among(&loaded.model, &host) {
            tracing::warn!("{warning}");
        }
        // Counted as `xlb check-config` counts, every backend healthy: a file
        // that fits only while some of its backends are down would stop
        // syncing when they come back. Refused as a bad file is, before the
        // model is taken, so that `xlb status` and the lists keep showing
        // what the datapath serves.
        let desired = Desired::new(&with_drains(&loaded.model, self.drains.set()), |_, _| true);
        if let Err(refused) = self.reconciler.fits(&desired) {
            return Ok(Err(
                self.reject(&file, format!("{}: {refused}", file.display()))
            ));
        }
        self.file_health_ports = (loaded.node_addresses, loaded.health_check_node_ports);
        let model = loaded.model;
        if model != self.model {
            tracing::info!(
                services = model.services.len(),
                file = %file.display(),
                "configuration reloaded"
            );
        }
        self.take_model(model);
        self.sync(since)?;
        Ok(Ok(()))
    }

    /// Counts, logs and shows the refusal of the configuration `file` for
    /// `error`, and returns `error`.
    fn reject(&mut self, file: &Path, error: String) -> String {
        self.metrics.reload(false);
        self.status.reloads_failed += 1;
        // One record per problem: a record with a line break in it is split
        // by line-based log collectors (journald, `kubectl logs`).
        let problems = error.lines().filter(|l| !l.trim().is_empty());
        tracing::error!(
            file = %file.display(),
            problems = problems.clone().count(),
            "configuration rejected; nothing in the datapath changes"
        );
        for problem in problems {
            tracing::error!(file = %file.display(), "{problem}");
        }
        self.status.last_reload = Some(ReloadView {
            at: unix_now(),
            outcome: "rejected".to_owned(),
            error: Some(error.clone()),
        });
        error
    }

    /// Takes a sync of the Kubernetes source: its model replaces the running
    /// one and is programmed. Counted as a good reload; the translation's
    /// warnings are logged when they first appear.
    pub(crate) fn apply_kube(
        &mut self,
        state: &KubeState,
        since: Instant,
    ) -> Result<SyncReport, SyncError> {
        if let Some(kube) = &mut self.status.kubernetes {
            let warnings: BTreeSet<String> = state.translation.warnings.iter().cloned().collect();
            for warning in warnings.difference(&kube.warnings) {
                tracing::warn!("{warning}");
            }
            kube.warnings = warnings;
        }
        if state.translation.model != self.model || !self.status.loaded {
            tracing::info!(
                services = state.translation.model.services.len(),
                node = %state.node.name,
                node_addresses = ?state.node.addresses,
                "services synced from Kubernetes"
            );
        }
        self.take_model(state.translation.model.clone());
        self.sync(since)
    }

    /// A good model from the source: counted, shown, and the health targets
    /// follow it.
    fn take_model(&mut self, model: Model) {
        self.metrics.reload(true);
        self.status.reloads_ok += 1;
        self.status.last_reload = Some(ReloadView {
            at: unix_now(),
            outcome: "ok".to_owned(),
            error: None,
        });
        self.status.loaded = true;
        if model != self.model {
            self.model = model;
            // New probe marks are in the datapath before their probes
            // start; freed ones leave once theirs have stopped.
            let freed = match &mut self.probe_tunnel {
                Some(probes) => probes.follow(&self.model, &mut self.datapath),
                None => Vec::new(),
            };
            self.health.set_targets(crate::health::targets(
                &self.model,
                self.probe_tunnel.as_ref().map(TunnelProbes::tunnel),
            ));
            TunnelProbes::forget(&freed, &mut self.datapath);
            self.drains.note_model(&self.model);
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
