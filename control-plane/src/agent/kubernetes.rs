//! The agent's Kubernetes mode: the API client, the source's settings, and
//! the health check node ports that follow each sync.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;

use super::{AgentOptions, core::Core, core::KubeStatus};
use crate::{
    health::node_port::{HealthCheckNodePorts, ListenError},
    source::kube::{
        HealthCheckNodePort, TranslateOptions,
        node::NodePortAddresses,
        sync::{KubeSource, KubeState, SyncSettings},
        watch::label_selector,
    },
};

/// A client for the API server of `--kubeconfig`, else kube's inference
/// (`KUBECONFIG` or `~/.kube/config`, then the in-cluster service account).
/// Nothing is sent yet: an unreachable API server shows in the watches,
/// which retry.
pub(super) async fn client(options: &AgentOptions) -> anyhow::Result<kube::Client> {
    let config = match &options.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using --kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "finding the Kubernetes API: no kubeconfig and not in a pod with a service account \
             (give --kubeconfig)",
        )?,
    };
    tracing::info!(api = %config.cluster_url, "Kubernetes API");
    kube::Client::try_from(config).context("creating the Kubernetes client")
}

/// The sync settings the flags ask for.
pub(super) fn settings(options: &AgentOptions) -> SyncSettings {
    SyncSettings {
        node_name: options.node_name.clone().unwrap_or_default(),
        options: TranslateOptions {
            service_proxy_name: options.service_proxy_name.clone(),
        },
        nodeport_addresses: if options.nodeport_addresses.is_empty() {
            NodePortAddresses::FromNode
        } else {
            NodePortAddresses::Given(options.nodeport_addresses.clone())
        },
        min_sync_period: options.min_sync_period,
    }
}

/// Starts the source; returns it with its part of the status view.
pub(super) fn start(client: kube::Client, settings: SyncSettings) -> (KubeSource, KubeStatus) {
    if settings.node_name.is_empty() {
        tracing::warn!(
            "no node name (NODE_NAME or --node-name): no endpoint is local and, without \
             --nodeport-addresses, no NodePort is served"
        );
    }
    let node = settings.node_name.clone();
    let selector = label_selector(&settings.options);
    let source = KubeSource::start(client, settings);
    let status = KubeStatus {
        node,
        label_selector: selector,
        caches: Arc::clone(&source.status),
        health_check_node_ports: Vec::new(),
        warnings: BTreeSet::new(),
    };
    (source, status)
}

/// The next sync of the source; pending forever when there is none (file
/// mode) or the source stopped (which only a panic does).
pub(super) async fn next_state(
    states: &mut Option<watch::Receiver<Option<Arc<KubeState>>>>,
) -> Arc<KubeState> {
    if let Some(receiver) = states {
        loop {
            if receiver.changed().await.is_err() {
                tracing::error!("the Kubernetes source stopped; the programmed state stays");
                break;
            }
            if let Some(state) = receiver.borrow_and_update().clone() {
                return state;
            }
        }
    }
    std::future::pending().await
}

/// Opens and closes the health check node ports to match `state`, answering
/// 503 everywhere while the last sync failed.
pub(super) async fn serve_health_ports(
    core: &Mutex<Core>,
    ports: &mut HealthCheckNodePorts,
    state: &KubeState,
) {
    let errors = serve_node_ports(
        core,
        ports,
        &state.node.addresses,
        &state.translation.health_check_node_ports,
    )
    .await;
    if let Ok(mut core) = core.lock()
        && let Some(kube) = &mut core.status.kubernetes
    {
        let failed: BTreeSet<u16> = errors.iter().map(|e| e.addr.port()).collect();
        kube.health_check_node_ports = state
            .translation
            .health_check_node_ports
            .iter()
            .map(|h| h.port)
            .filter(|p| !failed.contains(p) && !state.node.addresses.is_empty())
            .collect();
    }
}

/// Opens and closes the listeners of `wanted` on `addresses` (Kubernetes
/// mode, and file mode for the file's Kubernetes Services); returns the
/// ports that could not be served, each logged.
pub(super) async fn serve_node_ports(
    core: &Mutex<Core>,
    ports: &mut HealthCheckNodePorts,
    addresses: &[IpAddr],
    wanted: &[HealthCheckNodePort],
) -> Vec<ListenError> {
    let proxy_healthy = core
        .lock()
        .is_ok_and(|c| c.status.last_sync_error.is_none());
    let errors = ports.reconcile(addresses, wanted, proxy_healthy).await;
    for error in &errors {
        tracing::error!(
            error = crate::error_text::one_line(error),
            "healthCheckNodePort not served; retried at the next sync"
        );
    }
    if !wanted.is_empty() && addresses.is_empty() {
        tracing::warn!(
            "healthCheckNodePorts not served: this node has no address (see --nodeport-addresses \
             and the Node's InternalIP/ExternalIP, or the file's node: section)"
        );
    }
    errors
}
