//! The Kubernetes source's sync loop: waits until the caches hold a full
//! list, then runs the pure [`translate()`] over their contents whenever they
//! change — at most once per minimum sync period, like kube-proxy's
//! `--min-sync-period` (a burst of events becomes one sync).

use std::{net::IpAddr, sync::Arc, time::Duration};

use k8s_openapi::api::{
    core::v1::{Node, Service as KubeService},
    discovery::v1::EndpointSlice,
};
use kube::Client;
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use super::{
    NodeInfo, TranslateOptions, Translation,
    node::{self, NodePortAddresses},
    translate,
    watch::{self as reflectors, CacheStatus, Caches},
};

/// kube-proxy's default `--min-sync-period`.
pub const DEFAULT_MIN_SYNC_PERIOD: Duration = Duration::from_secs(1);

/// What the sync loop needs besides the caches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    /// This node's name (`NODE_NAME`): the `Local` policies' endpoints and the
    /// Node object watched. Empty: no endpoint is local and no Node is
    /// watched.
    pub node_name: String,
    pub options: TranslateOptions,
    pub nodeport_addresses: NodePortAddresses,
    /// The least time between the starts of two syncs.
    pub min_sync_period: Duration,
}

/// One sync's result: what the agent programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeState {
    /// This node as translated (the addresses that serve NodePorts and
    /// health check node ports).
    pub node: NodeInfo,
    pub translation: Translation,
}

/// Translates the caches' current contents.
pub fn snapshot(caches: &Caches, settings: &SyncSettings, host: &[IpAddr]) -> KubeState {
    let services: Vec<KubeService> = caches
        .services
        .state()
        .iter()
        .map(|s| KubeService::clone(s))
        .collect();
    let slices: Vec<EndpointSlice> = caches
        .slices
        .state()
        .iter()
        .map(|s| EndpointSlice::clone(s))
        .collect();
    // The watch selects the Node by name; the check guards against a store
    // fed from elsewhere.
    let node_object: Option<Arc<Node>> = caches.node.as_ref().and_then(|store| {
        store.find(|n| n.metadata.name.as_deref() == Some(settings.node_name.as_str()))
    });
    let node = node::node_info(
        &settings.node_name,
        node_object.as_deref(),
        &settings.nodeport_addresses,
        host,
    );
    let translation = translate(&services, &slices, &node, &settings.options);
    KubeState { node, translation }
}

/// Syncs until every receiver of `out` is gone: the first time once every
/// cache is synced, then after each change, never sooner than
/// `min_sync_period` after the previous sync started (kube-proxy's
/// BoundedFrequencyRunner: a change after a quiet period syncs at once).
/// `out` only changes when the result does.
pub async fn run(
    caches: Caches,
    settings: SyncSettings,
    out: watch::Sender<Option<Arc<KubeState>>>,
) {
    let mut last_sync: Option<Instant> = None;
    loop {
        tokio::select! {
            () = caches.status.changed.notified() => {}
            () = out.closed() => return,
        }
        if !caches.status.all_synced() {
            continue;
        }
        if let Some(last) = last_sync {
            tokio::select! {
                () = tokio::time::sleep_until(last + settings.min_sync_period) => {}
                () = out.closed() => return,
            }
        }
        last_sync = Some(Instant::now());
        let host = if settings.nodeport_addresses.needs_host_addresses() {
            node::host_addresses().unwrap_or_else(|error| {
                tracing::warn!(%error, "reading this host's addresses for --nodeport-addresses");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        let state = snapshot(&caches, &settings, &host);
        out.send_if_modified(|current| {
            if current.as_deref() == Some(&state) {
                return false;
            }
            *current = Some(Arc::new(state));
            true
        });
    }
}

/// The running Kubernetes source: its reflectors and its sync loop, stopped
/// when dropped.
#[derive(Debug)]
pub struct KubeSource {
    /// The latest sync; None until the caches are synced.
    pub states: watch::Receiver<Option<Arc<KubeState>>>,
    pub status: Arc<CacheStatus>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSource {
    /// Starts watching through `client` and syncing with `settings`.
    pub fn start(client: Client, settings: SyncSettings) -> Self {
        let node_name = (!settings.node_name.is_empty()).then_some(settings.node_name.as_str());
        let (caches, tasks) = reflectors::watch(client, &settings.options, node_name);
        Self::run(caches, tasks, settings)
    }

    /// Syncs `caches`, fed by the reflector `tasks` (which this source
    /// stops when dropped).
    pub fn run(caches: Caches, mut tasks: Vec<JoinHandle<()>>, settings: SyncSettings) -> Self {
        let (out, states) = watch::channel(None);
        let status = Arc::clone(&caches.status);
        tasks.push(tokio::spawn(run(caches, settings, out)));
        Self {
            states,
            status,
            tasks,
        }
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
