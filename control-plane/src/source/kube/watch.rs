//! kube-rs reflectors: the Services, `discovery.k8s.io/v1` EndpointSlices
//! and this agent's Node, each mirrored into a local store by a watch (LIST,
//! then WATCH from its resourceVersion; a relist when the watch cannot
//! resume).
//!
//! [`reflect`] feeds one watch's events into its store and tells the sync
//! loop ([`super::sync`]) what changed; [`watch`] starts the three against an
//! API server. Errors are logged and the watch is retried with kube-runtime's
//! default backoff; the stores keep their contents meanwhile, so an API
//! server that goes away never empties what the agent programs.

use std::{
    fmt,
    hash::Hash,
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use k8s_openapi::api::{
    core::v1::{Node, Service as KubeService},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Lookup, Store, store::Writer},
        watcher::{self, Event},
    },
};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_stream::{Stream, StreamExt as _};

use super::{LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME, TranslateOptions};

/// kube-proxy's label selector, for Services and their EndpointSlices (the
/// EndpointSlice controller copies a Service's labels onto its slices, and
/// adds the headless label): `!service.kubernetes.io/service-proxy-name,
/// !service.kubernetes.io/headless` to replace kube-proxy, or
/// `service.kubernetes.io/service-proxy-name=<name>,!service.kubernetes.io/headless`
/// to coexist with it. The same choice as [`super::translate()`]'s
/// [`TranslateOptions::service_proxy_name`], so the API server filters what
/// translate would skip.
pub fn label_selector(options: &TranslateOptions) -> String {
    match &options.service_proxy_name {
        None => format!("!{LABEL_SERVICE_PROXY_NAME},!{LABEL_HEADLESS}"),
        Some(name) => format!("{LABEL_SERVICE_PROXY_NAME}={name},!{LABEL_HEADLESS}"),
    }
}

/// The field selector that narrows the Node watch to this agent's node.
pub fn node_field_selector(node_name: &str) -> String {
    format!("metadata.name={node_name}")
}

/// One of the watched kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    Services,
    EndpointSlices,
    Node,
}

impl fmt::Display for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Services => "services",
            Self::EndpointSlices => "endpointslices",
            Self::Node => "node",
        })
    }
}

/// Whether each cache holds a full list yet, the last watch error, and the
/// wake-up of the sync loop. Shared by the reflectors, the sync loop and the
/// agent's status view.
#[derive(Debug)]
pub struct CacheStatus {
    services: AtomicBool,
    endpoint_slices: AtomicBool,
    /// None when no Node is watched (no node name given).
    node: Option<AtomicBool>,
    last_error: Mutex<Option<String>>,
    /// Woken on every change of a store, and when a cache becomes synced.
    pub(super) changed: Notify,
}

impl CacheStatus {
    fn new(watch_node: bool) -> Self {
        Self {
            services: AtomicBool::new(false),
            endpoint_slices: AtomicBool::new(false),
            node: watch_node.then(|| AtomicBool::new(false)),
            last_error: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    fn flag(&self, cache: Cache) -> Option<&AtomicBool> {
        match cache {
            Cache::Services => Some(&self.services),
            Cache::EndpointSlices => Some(&self.endpoint_slices),
            Cache::Node => self.node.as_ref(),
        }
    }

    /// Whether `cache` has received its first full list (None: not watched).
    pub fn synced(&self, cache: Cache) -> Option<bool> {
        self.flag(cache).map(|f| f.load(Ordering::Acquire))
    }

    /// True once every watched cache holds a full list: the first sync waits
    /// for this, as programming from a half-listed cluster would withdraw
    /// services that are only not listed yet.
    pub fn all_synced(&self) -> bool {
        [Cache::Services, Cache::EndpointSlices, Cache::Node]
            .into_iter()
            .all(|c| self.synced(c) != Some(false))
    }

    /// The last watch error, until a watch delivers an event again.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn set_error(&self, error: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }
}

/// Read access to the reflector stores.
#[derive(Clone, Debug)]
pub struct Caches {
    pub services: Store<KubeService>,
    pub slices: Store<EndpointSlice>,
    /// This agent's Node (a store of at most one object); None when no node
    /// name was given.
    pub node: Option<Store<Node>>,
    pub status: Arc<CacheStatus>,
}

/// The write side of [`Caches`], one writer per store, each for one
/// [`reflect`].
#[derive(Debug)]
pub struct Writers {
    pub services: Writer<KubeService>,
    pub slices: Writer<EndpointSlice>,
    pub node: Option<Writer<Node>>,
}

/// Empty stores, not synced. `watch_node`: whether a Node store is kept
/// (and needed before the first sync).
pub fn caches(watch_node: bool) -> (Caches, Writers) {
    let (services, services_writer) = reflector::store();
    let (slices, slices_writer) = reflector::store();
    let (node, node_writer) = if watch_node {
        let (reader, writer) = reflector::store();
        (Some(reader), Some(writer))
    } else {
        (None, None)
    };
    (
        Caches {
            services,
            slices,
            node,
            status: Arc::new(CacheStatus::new(watch_node)),
        },
        Writers {
            services: services_writer,
            slices: slices_writer,
            node: node_writer,
        },
    )
}

/// Applies `events` of one watch to `writer`'s store until the stream ends,
/// waking the sync loop on every change. A relist (`Init`, `InitApply`...,
/// `InitDone`) replaces the store's contents at `InitDone` only, which drops
/// the objects deleted while the watch was down; the first `InitDone` marks
/// the cache synced. Errors are logged and kept for the status view (the
/// watcher retries by itself).
pub async fn reflect<K>(
    mut writer: Writer<K>,
    events: impl Stream<Item = watcher::Result<Event<K>>>,
    cache: Cache,
    status: Arc<CacheStatus>,
) where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut events = pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                writer.apply_watcher_event(&event);
                status.set_error(None);
                match event {
                    // Buffered by the writer until InitDone: nothing visible yet.
                    Event::Init | Event::InitApply(_) => {}
                    Event::InitDone => {
                        if let Some(flag) = status.flag(cache)
                            && !flag.swap(true, Ordering::AcqRel)
                        {
                            tracing::info!(%cache, "cache synced");
                        }
                        status.changed.notify_one();
                    }
                    Event::Apply(_) | Event::Delete(_) => status.changed.notify_one(),
                }
            }
            Err(error) => {
                // With its causes: the watcher's own message is only "failed
                // to perform initial object list", the connection's error
                // (refused, no route, a TLS failure) is below it.
                let error = crate::error_text::one_line(&error);
                tracing::warn!(%cache, error, "watch failed; retrying with backoff");
                status.set_error(Some(format!("{cache}: {error}")));
            }
        }
    }
}

/// Starts the reflectors against the API server behind `client`: Services
/// and EndpointSlices of every namespace through [`label_selector`], and the
/// Node named `node_name` when given. Each watch runs in its own task until
/// aborted, retrying with kube-runtime's default backoff (exponential, 800 ms
/// up to 30 s, reset after 120 s of success).
pub fn watch(
    client: Client,
    options: &TranslateOptions,
    node_name: Option<&str>,
) -> (Caches, Vec<JoinHandle<()>>) {
    let (caches, writers) = caches(node_name.is_some());
    let selector = label_selector(options);
    let config = watcher::Config::default().labels(&selector);
    let mut tasks = vec![
        tokio::spawn(reflect(
            writers.services,
            watcher::watcher(Api::<KubeService>::all(client.clone()), config.clone())
                .default_backoff(),
            Cache::Services,
            Arc::clone(&caches.status),
        )),
        tokio::spawn(reflect(
            writers.slices,
            watcher::watcher(Api::<EndpointSlice>::all(client.clone()), config).default_backoff(),
            Cache::EndpointSlices,
            Arc::clone(&caches.status),
        )),
    ];
    if let (Some(writer), Some(name)) = (writers.node, node_name) {
        let config = watcher::Config::default().fields(&node_field_selector(name));
        tasks.push(tokio::spawn(reflect(
            writer,
            watcher::watcher(Api::<Node>::all(client), config).default_backoff(),
            Cache::Node,
            Arc::clone(&caches.status),
        )));
    }
    (caches, tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_is_kube_proxys() {
        assert_eq!(
            label_selector(&TranslateOptions::default()),
            "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"
        );
        assert_eq!(
            label_selector(&TranslateOptions {
                service_proxy_name: Some("xlb".to_owned())
            }),
            "service.kubernetes.io/service-proxy-name=xlb,!service.kubernetes.io/headless"
        );
    }
}
