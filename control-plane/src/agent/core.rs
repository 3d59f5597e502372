//! The agent's state and its one way of changing the datapath: compute the
//! desired state (model + drains + health) and let the reconciler sync it.

use std::{
    borrow::Cow,
    collections::BTreeSet,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use xdp_lb::Datapath;

use crate::{
    announce::{self, Announcer},
    api::{AttachmentView, ReloadView},
    health::HealthChecker,
    metrics::Metrics,
    model::{BackendState, Model, ServiceName},
    reconcile::{Desired, Reconciler, SyncError, SyncReport},
    source,
};

/// A drain the operator asked for through the admin API: the backend at
/// `backend`, in one service or (None) in all. Drains outlive reloads; they
/// are the admin API's part of the model.
pub(crate) type Drain = (Option<ServiceName>, SocketAddr);

/// Everything the agent knows, behind one lock.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) datapath: Datapath,
    pub(crate) reconciler: Reconciler,
    /// The last good configuration, as loaded.
    pub(crate) model: Model,
    pub(crate) drains: BTreeSet<Drain>,
    /// The desired state of the last sync, refreshed in place by the next.
    pub(crate) desired: Desired,
    pub(crate) health: HealthChecker,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) announcer: Announcer,
    pub(crate) status: Status,
}

/// What `xlb status` shows besides counts.
#[derive(Debug)]
pub(crate) struct Status {
    pub(crate) config_file: PathBuf,
    pub(crate) attached: Vec<AttachmentView>,
    pub(crate) synced: bool,
    pub(crate) last_reload: Option<ReloadView>,
    pub(crate) reloads_ok: u64,
    pub(crate) reloads_failed: u64,
    pub(crate) last_sync: Option<Duration>,
    pub(crate) started: Instant,
}

impl Core {
    /// The model with the operator's drains applied (the model itself when
    /// nothing is drained: no copy of 10 000 services per sync).
    pub(crate) fn effective_model(&self) -> Cow<'_, Model> {
        if self.drains.is_empty() {
            return Cow::Borrowed(&self.model);
        }
        let mut model = self.model.clone();
        for (name, service) in &mut model.services {
            for backend in &mut service.backends {
                let drained = self.drains.contains(&(None, backend.addr))
                    || self.drains.contains(&(Some(name.clone()), backend.addr));
                if drained && backend.state == BackendState::Active {
                    backend.state = BackendState::Draining;
                }
            }
        }
        Cow::Owned(model)
    }

    /// True when the backend at `addr` of service `name` passes its service's
    /// health check (or has none).
    pub(crate) fn healthy(&self, name: &ServiceName, addr: SocketAddr) -> bool {
        let check = self
            .model
            .services
            .get(name)
            .and_then(|s| s.health_check.as_ref());
        check.is_none_or(|check| self.health.is_healthy(addr, check))
    }

    /// Programs the effective model with health overlaid. `since` is when the
    /// change that prompted this sync was seen, for the programming-latency
    /// metric.
    pub(crate) fn sync(&mut self, since: Instant) -> Result<SyncReport, SyncError> {
        let started = Instant::now();
        let mut desired = std::mem::take(&mut self.desired);
        desired.refresh(&self.effective_model(), |name, addr| {
            self.healthy(name, addr)
        });
        let synced = self.reconciler.sync(&desired, &mut self.datapath);
        self.desired = desired;
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

    /// Re-reads the configuration file. A good file replaces the model (and
    /// the health targets) and is synced; a bad one is logged, counted and
    /// shown by `xlb status`, and the running configuration keeps serving.
    /// Returns the rejection (every problem, one per line) when the file was
    /// bad; the error is for a sync that failed.
    pub(crate) fn reload(&mut self, since: Instant) -> anyhow::Result<Result<(), String>> {
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match source::file::load(&self.status.config_file) {
            Ok(model) => {
                self.metrics.reload(true);
                self.status.reloads_ok += 1;
                self.status.last_reload = Some(ReloadView {
                    at,
                    outcome: "ok".to_owned(),
                    error: None,
                });
                if model != self.model {
                    tracing::info!(
                        services = model.services.len(),
                        file = %self.status.config_file.display(),
                        "configuration reloaded"
                    );
                    self.model = model;
                    self.health.set_targets(crate::health::targets(&self.model));
                }
                self.sync(since)?;
                Ok(Ok(()))
            }
            Err(errors) => {
                self.metrics.reload(false);
                self.status.reloads_failed += 1;
                let error = errors.to_string();
                tracing::error!(
                    file = %self.status.config_file.display(),
                    "configuration rejected; the previous one keeps serving:\n{error}"
                );
                self.status.last_reload = Some(ReloadView {
                    at,
                    outcome: "rejected".to_owned(),
                    error: Some(error.clone()),
                });
                Ok(Err(error))
            }
        }
    }
}
