//! Services and EndpointSlices to a [`Model`], with kube-proxy's semantics.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use k8s_openapi::{
    api::{
        core::v1::{Service as KubeService, ServicePort},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::{
    HealthCheckNodePort, LABEL_HEADLESS, LABEL_SERVICE_NAME, LABEL_SERVICE_PROXY_NAME,
    NODE_PORT_RANGE, NodeInfo, SkipReason, TranslateOptions, Translation, address,
    endpoints::{self, Scope},
    node::AddressRange,
    validate::{self, FieldError, Origin, ServiceType},
};
use crate::model::{
    Affinity, Backend, Frontend, FrontendKind, Mode, Model, Protocol, Service, ServiceName,
};

/// kube-proxy's default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECS: u64 = 10_800;

/// Translates Services and EndpointSlices into the services xlb balances on
/// `node`. Pure and deterministic: the result depends on neither the order of
/// `services` nor that of `slices`.
///
/// **Names.** One model service per Service port, named like kube-proxy's
/// service port name: `namespace/name:port` — or `namespace/name` when the
/// port has no name (the API allows that only for a Service's single port).
/// Two suffixes split it further, each because the datapath balances one
/// backend pool per service:
/// - `/external`: when `internalTrafficPolicy` and `externalTrafficPolicy`
///   differ (one `Local`, the other `Cluster`), the external frontends
///   (NodePorts, LoadBalancer ingress IPs, externalIPs) get their own service
///   with their own backends. The split follows the policies, not the
///   endpoints, so a name never comes and goes as pods move.
/// - `/ipv4` or `/ipv6`: a dual-stack Service's second family (that of
///   `clusterIPs[1]`): the datapath translates within one family. The first
///   family keeps the plain name, so turning a Service dual-stack does not
///   rename what already runs.
///
/// A Service with both reads `namespace/name:port/ipv6/external`. Names and
/// namespaces cannot contain '/', so none of these can collide.
///
/// **Frontends.** Every `clusterIPs` entry at `port` (kind vip); for NodePort
/// and LoadBalancer Services with a `nodePort`, every node address of the
/// family at `nodePort` (kind node; a `nodePort` outside
/// [`NODE_PORT_RANGE`], which a cluster with a wider
/// `--service-node-port-range` allocates, is left out with a warning); `status.loadBalancer.ingress[].ip`
/// (unless `ipMode: Proxy`, KEP-1860) and `spec.externalIPs` at `port` (kind
/// vip; node when the address is one of the node's, which the datapath only
/// serves within [`NODE_PORT_RANGE`]). Addresses of a family the Service has no
/// clusterIP in are ignored, as kube-proxy does. A frontend claimed by two
/// services goes to the one whose name sorts first.
///
/// **Backends.** The endpoints of the Service's slices (label
/// `kubernetes.io/service-name`, same namespace, addressType IPv4/IPv6), ports
/// matched by name and protocol, KEP-1669 conditions (see
/// `endpoints::backends`), `publishNotReadyAddresses` making every endpoint
/// ready; weight 1 each; mode NAT. `internalTrafficPolicy: Local` limits the
/// clusterIP frontends to endpoints on `node` (by `nodeName`);
/// `externalTrafficPolicy: Local` does the same for the external frontends.
/// A `Local` service with no local endpoint but endpoints on other nodes gets
/// no backend and `drop_without_backends`: the datapath drops its packets,
/// as kube-proxy does. A service with no endpoints at all is refused (TCP
/// RST / ICMP unreachable), as kube-proxy refuses it. External frontends of
/// a `Cluster` policy source-NAT toward endpoints on other nodes
/// (`Frontend::snat_remote`); endpoints on `node` are `Backend::local`.
///
/// **Topology.** `Cluster` policy frontends get only the ready endpoints
/// hinted for this node (`hints.forNodes`, which the EndpointSlice
/// controller writes for `trafficDistribution: PreferSameNode`), else those
/// hinted for this node's zone ([`NodeInfo::zone`], `hints.forZones`, which
/// it writes for `PreferClose`, `PreferSameZone` and the annotation
/// `service.kubernetes.io/topology-mode: Auto`) — each only when every
/// ready endpoint of the family has such a hint and one at least is for
/// this node or zone; otherwise every endpoint, as kube-proxy falls back.
/// As in kube-proxy, the hints decide, whoever wrote them, not the
/// Service's fields. `Local` policies are not affected.
///
/// **Health check node ports.** For each Service with
/// `externalTrafficPolicy: Local` and a `healthCheckNodePort`, the port and
/// the number of this node's ready endpoints
/// ([`Translation::health_check_node_ports`]), for the agent to answer the
/// external load balancer's probes as kube-proxy does.
///
/// **Affinity.** `sessionAffinity: ClientIP`, timeout
/// `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10800 s).
///
/// **Left out** (counted in [`Translation::skipped`]): ExternalName and
/// headless Services, Services outside the label selector (see
/// [`TranslateOptions`]), SCTP ports, FQDN slices, objects the API server
/// would reject, and LoadBalancer ingress IPs with `ipMode: Proxy`. The
/// ingress IPs of a Service with `loadBalancerSourceRanges` accept only those
/// networks (`Frontend::source_ranges_only`, `Service::source_ranges`) — per
/// family, as kube-proxy filters them: ingress IPs of a family that no range
/// is of accept every client.
pub fn translate(
    services: &[KubeService],
    slices: &[EndpointSlice],
    node: &NodeInfo,
    options: &TranslateOptions,
) -> Translation {
    let mut out = Output::default();
    let slices_by_service = index_slices(slices, options, &mut out);
    let node_addresses: BTreeSet<IpAddr> = node.addresses.iter().copied().collect();

    for service in unique_objects("Service", services, |s| &s.metadata, &mut out) {
        let key = validate::object_name(&service.metadata);
        let service_slices = slices_by_service.get(&key).map_or(&[][..], Vec::as_slice);
        translate_service(
            service,
            service_slices,
            node,
            &node_addresses,
            options,
            &mut out,
        );
    }
    out.resolve_conflicts();
    Translation {
        model: Model {
            services: out.services,
        },
        warnings: out.warnings,
        skipped: out.skipped,
        health_check_node_ports: out.health_check_node_ports,
    }
}

/// Whether the label selector of `options` keeps `service` (kube-proxy's
/// `!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless`,
/// or `service.kubernetes.io/service-proxy-name=<name>` to coexist).
pub(crate) fn selected(service: &KubeService, options: &TranslateOptions) -> bool {
    matches_selector(&service.metadata, options)
}

/// Whether the labels of `meta` match the label selector of `options` (see
/// [`selected`]). kube-proxy watches EndpointSlices with the same selector.
fn matches_selector(meta: &ObjectMeta, options: &TranslateOptions) -> bool {
    let labels = meta.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    if label(LABEL_HEADLESS).is_some() {
        return false;
    }
    match options.service_proxy_name.as_deref() {
        None => label(LABEL_SERVICE_PROXY_NAME).is_none(),
        Some(name) => label(LABEL_SERVICE_PROXY_NAME) == Some(name),
    }
}

#[derive(Debug, Default)]
struct Output {
    services: BTreeMap<ServiceName, Service>,
    warnings: Vec<String>,
    skipped: BTreeMap<SkipReason, usize>,
    health_check_node_ports: Vec<HealthCheckNodePort>,
}

impl Output {
    fn skip(&mut self, reason: SkipReason, warning: Option<String>) {
        *self.skipped.entry(reason).or_default() += 1;
        self.warnings.extend(warning);
    }

    /// Gives each frontend to the first service (by name) that claims it.
    fn resolve_conflicts(&mut self) {
        let mut owners: BTreeMap<(IpAddr, u16, Protocol), ServiceName> = BTreeMap::new();
        let mut emptied = Vec::new();
        let mut conflicts = Vec::new();
        for (name, service) in &mut self.services {
            service
                .frontends
                .retain(|f| match owners.get(&(f.addr, f.port, f.protocol)) {
                    Some(owner) => {
                        conflicts.push(format!(
                            "{name}: frontend {f} is already served by {owner}; skipped"
                        ));
                        false
                    }
                    None => {
                        owners.insert((f.addr, f.port, f.protocol), name.clone());
                        true
                    }
                });
            if service.frontends.is_empty() {
                emptied.push(name.clone());
            }
        }
        for warning in conflicts {
            self.skip(SkipReason::FrontendConflict, Some(warning));
        }
        for name in emptied {
            self.services.remove(&name);
        }
    }
}

/// The objects in `namespace/name` order, each name once: every copy of a
/// name that appears more than once is skipped, as no order can say which
/// one is meant.
fn unique_objects<'a, T>(
    kind: &str,
    objects: &'a [T],
    meta: impl Fn(&T) -> &ObjectMeta,
    out: &mut Output,
) -> Vec<&'a T> {
    let mut by_name: BTreeMap<String, Vec<&T>> = BTreeMap::new();
    for object in objects {
        by_name
            .entry(validate::object_name(meta(object)))
            .or_default()
            .push(object);
    }
    let mut unique = Vec::with_capacity(by_name.len());
    for (name, copies) in by_name {
        if let [only] = copies[..] {
            unique.push(only);
        } else {
            out.warnings.push(format!(
                "{kind} {name}: given {} times; every copy skipped",
                copies.len()
            ));
            *out.skipped.entry(SkipReason::Duplicate).or_default() += copies.len();
        }
    }
    unique
}

/// Valid IP slices within the label selector of `options`, by their
/// Service's `namespace/name`, each list in slice name order.
fn index_slices<'a>(
    slices: &'a [EndpointSlice],
    options: &TranslateOptions,
    out: &mut Output,
) -> BTreeMap<String, Vec<&'a EndpointSlice>> {
    let mut index: BTreeMap<String, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in unique_objects("EndpointSlice", slices, |s| &s.metadata, out) {
        // kube-proxy watches slices with its Service selector, so a slice
        // labelled for another proxy (or headless) never reaches it, whatever
        // its Service's labels; the Kubernetes mode's watch filters them too.
        if !matches_selector(&slice.metadata, options) {
            out.skip(SkipReason::NotSelected, None);
            continue;
        }
        let name = validate::object_name(&slice.metadata);
        if let Some(first) = validate::endpoint_slice(slice, Origin::Cluster).first() {
            out.skip(
                SkipReason::Invalid,
                Some(invalid_warning("EndpointSlice", &name, first)),
            );
            continue;
        }
        if slice.address_type == "FQDN" {
            out.skip(SkipReason::FqdnSlice, None);
            continue;
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_NAME))
        else {
            // Not a Service's slice (a custom controller's): nobody reads it.
            continue;
        };
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
        index
            .entry(format!("{namespace}/{service}"))
            .or_default()
            .push(slice);
    }
    index
}

fn invalid_warning(kind: &str, name: &str, error: &FieldError) -> String {
    format!(
        "{kind} {name}: {}: {}; skipped (the API server would reject it)",
        error.place, error.message
    )
}

/// What one Service port's frontends share: the Service-level fields.
struct ServiceContext<'a> {
    name: String,
    ty: ServiceType,
    /// The clusterIPs, primary family first.
    cluster_ips: Vec<IpAddr>,
    /// externalIPs and the LoadBalancer ingress IPs that are served.
    external_ips: BTreeSet<IpAddr>,
    /// The LoadBalancer ingress IPs that only `source_ranges` reach: those
    /// of a family some range is of.
    ranged_ips: BTreeSet<IpAddr>,
    /// `loadBalancerSourceRanges`, parsed, of both families.
    source_ranges: Vec<(IpAddr, u8)>,
    internal_local: bool,
    external_local: bool,
    affinity: Option<Affinity>,
    publish_not_ready: bool,
    node: &'a NodeInfo,
    node_addresses: &'a BTreeSet<IpAddr>,
}

/// The ranged ingress IPs that kube-proxy lets through as sources too: those
/// of a family where a source range holds one of this node's addresses. A
/// LoadBalancer IP is often routed to the node itself, and a request the node
/// sends to it then loops back with that IP as its source; a range that lets
/// the node in is meant to let those requests in as well. Each as a host
/// range, to add to the Service's ranges.
fn allowed_from_node(
    source_ranges: &[(IpAddr, u8)],
    ranged_ips: &BTreeSet<IpAddr>,
    node_addresses: &BTreeSet<IpAddr>,
) -> Vec<(IpAddr, u8)> {
    // `contains` is false across families.
    let in_a_range = |addr: IpAddr| {
        source_ranges
            .iter()
            .any(|&(network, prefix)| AddressRange::Cidr { network, prefix }.contains(addr))
    };
    let node_in = |ipv4: bool| {
        node_addresses
            .iter()
            .any(|&node| node.is_ipv4() == ipv4 && in_a_range(node))
    };
    let (v4, v6) = (node_in(true), node_in(false));
    ranged_ips
        .iter()
        .filter(|ip| if ip.is_ipv4() { v4 } else { v6 })
        // An IP a range holds already needs no range of its own.
        .filter(|&&ip| !in_a_range(ip))
        .map(|&ip| (ip, if ip.is_ipv4() { 32 } else { 128 }))
        .collect()
}

fn translate_service(
    service: &KubeService,
    slices: &[&EndpointSlice],
    node: &NodeInfo,
    node_addresses: &BTreeSet<IpAddr>,
    options: &TranslateOptions,
    out: &mut Output,
) {
    let name = validate::object_name(&service.metadata);
    if !selected(service, options) {
        out.skip(SkipReason::NotSelected, None);
        return;
    }
    let errors = validate::service(service, Origin::Cluster);
    if let Some(first) = errors.first() {
        out.skip(
            SkipReason::Invalid,
            Some(invalid_warning("Service", &name, first)),
        );
        return;
    }
    let Some(spec) = service.spec.as_ref() else {
        // Unreachable after validation, which requires spec; skipping keeps
        // this function total anyway.
        return;
    };
    let Ok(ty) = ServiceType::of(spec) else {
        return;
    };
    if ty == ServiceType::ExternalName {
        out.skip(SkipReason::ExternalName, None);
        return;
    }
    if validate::is_headless(spec) {
        out.skip(SkipReason::Headless, None);
        return;
    }

    let cluster_ips: Vec<IpAddr> = validate::cluster_ips(spec)
        .iter()
        .filter_map(|(_, ip)| address::parse(ip))
        .collect();
    let mut external_ips: BTreeSet<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| address::parse(ip))
        .collect();
    // Validated CIDRs: the client networks its LoadBalancer IPs accept,
    // each once.
    let mut source_ranges: Vec<(IpAddr, u8)> = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        // Validated by the object's origin already: the cluster's reading,
        // the lenient one, takes what the validation let through.
        .filter_map(|range| validate::parse_source_range(range, Origin::Cluster).ok())
        .collect();
    source_ranges.sort_unstable();
    source_ranges.dedup();
    let mut ranged_ips = BTreeSet::new();
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    let port_count = spec.ports.as_ref().map_or(0, Vec::len);
    for entry in ingress {
        let Some(ip) = entry.ip.as_deref().and_then(address::parse) else {
            continue;
        };
        if entry.ip_mode.as_deref() == Some("Proxy") {
            *out.skipped.entry(SkipReason::ProxyIpMode).or_default() += port_count;
        } else {
            // kube-proxy filters the ranges by family: an ingress IP of a
            // family no range is of accepts every client.
            if source_ranges
                .iter()
                .any(|(n, _)| n.is_ipv4() == ip.is_ipv4())
            {
                ranged_ips.insert(ip);
            }
            external_ips.insert(ip);
        }
    }
    let from_node = allowed_from_node(&source_ranges, &ranged_ips, node_addresses);
    source_ranges.extend(from_node);
    source_ranges.sort_unstable();

    let timeout_secs = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or(DEFAULT_AFFINITY_SECS);
    let context = ServiceContext {
        ty,
        cluster_ips,
        external_ips,
        ranged_ips,
        source_ranges,
        internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        external_local: validate::externally_accessible(spec, ty)
            && spec.external_traffic_policy.as_deref() == Some("Local"),
        affinity: (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| Affinity {
            timeout: Duration::from_secs(timeout_secs),
        }),
        publish_not_ready: spec.publish_not_ready_addresses == Some(true),
        node,
        node_addresses,
        name,
    };
    for port in spec.ports.iter().flatten() {
        translate_port(&context, port, slices, out);
    }
    if context.external_local
        && let Some(port) = spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok())
    {
        out.health_check_node_ports.push(HealthCheckNodePort {
            namespace: service
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            name: service.metadata.name.clone().unwrap_or_default(),
            port,
            local_endpoints: endpoints::local_ready_addresses(
                slices,
                &node.name,
                context.publish_not_ready,
            )
            .len(),
        });
    }
}

fn translate_port(
    context: &ServiceContext<'_>,
    port: &ServicePort,
    slices: &[&EndpointSlice],
    out: &mut Output,
) {
    let port_name = port.name.as_deref().unwrap_or("");
    let port_id = if port_name.is_empty() {
        context.name.clone()
    } else {
        format!("{}:{port_name}", context.name)
    };
    let protocol_name = port.protocol.as_deref().unwrap_or("TCP");
    let protocol = match protocol_name {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        _ => {
            out.skip(
                SkipReason::Sctp,
                Some(format!(
                    "{port_id}: {protocol_name} is not supported; skipped"
                )),
            );
            return;
        }
    };
    // Validated: 1-65535.
    let Ok(number) = u16::try_from(port.port) else {
        return;
    };
    let node_port = port
        .node_port
        .filter(|_| context.ty.has_node_ports())
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0);

    for ip in &context.external_ips {
        if !context
            .cluster_ips
            .iter()
            .any(|c| c.is_ipv4() == ip.is_ipv4())
        {
            out.skip(
                SkipReason::OtherFamily,
                Some(format!(
                    "{port_id}: {ip} not served: the Service has no {} clusterIP",
                    validate::family_name(*ip)
                )),
            );
        }
    }

    let endpoints = endpoints::collect(slices, port_name, protocol_name, context.publish_not_ready);
    for (index, cluster_ip) in context.cluster_ips.iter().enumerate() {
        let ipv4 = cluster_ip.is_ipv4();
        let base = match (index, ipv4) {
            (0, _) => port_id.clone(),
            (_, true) => format!("{port_id}/ipv4"),
            (_, false) => format!("{port_id}/ipv6"),
        };
        let frontend = |addr: IpAddr, port: u16, out: &mut Output| {
            frontend(context, &base, addr, port, protocol, out)
        };

        let cluster: Vec<Frontend> = frontend(*cluster_ip, number, out).into_iter().collect();
        let mut external = Vec::new();
        if let Some(node_port) = node_port {
            let mut addresses: Vec<IpAddr> = context
                .node_addresses
                .iter()
                .copied()
                .filter(|a| a.is_ipv4() == ipv4)
                .collect();
            if addresses.is_empty() {
                out.skip(
                    SkipReason::NoNodeAddress,
                    Some(format!(
                        "{base}: nodePort {node_port}/{protocol} not served: the node has no {} \
                         address",
                        validate::family_name(*cluster_ip)
                    )),
                );
            } else if !NODE_PORT_RANGE.contains(&node_port) {
                // A cluster with a wider --service-node-port-range: the
                // datapath passes these ports of node addresses to the node.
                *out.skipped.entry(SkipReason::NodeAddressPort).or_default() += addresses.len();
                out.warnings.push(format!(
                    "{base}: nodePort {node_port}/{protocol} is outside the NodePort range {}-{} \
                     that is served on node addresses; not served",
                    NODE_PORT_RANGE.start(),
                    NODE_PORT_RANGE.end()
                ));
                addresses.clear();
            }
            external.extend(addresses.into_iter().map(|addr| Frontend {
                addr,
                port: node_port,
                protocol,
                kind: FrontendKind::Node,
                snat_remote: false,
                source_ranges_only: false,
            }));
        }
        for ip in context
            .external_ips
            .iter()
            .filter(|ip| ip.is_ipv4() == ipv4)
        {
            external.extend(frontend(*ip, number, out));
        }
        // `Cluster`: a client from outside may land on another node's
        // endpoint, whose reply must come back through this node (as
        // kube-proxy masquerades it). `Local` keeps the client's source.
        for f in &mut external {
            f.snat_remote = !context.external_local;
            f.source_ranges_only = context.ranged_ips.contains(&f.addr);
        }

        let backends = |local: bool| {
            let scope = if local {
                Scope::Node(&context.node.name)
            } else {
                Scope::Cluster {
                    node: &context.node.name,
                    zone: context.node.zone.as_deref(),
                }
            };
            endpoints::backends(&endpoints, ipv4, scope, &context.node.name)
        };
        // A `Local` policy whose endpoints are all on other nodes drops (as
        // kube-proxy does); a service with no endpoints at all is refused.
        let elsewhere = !backends(false).is_empty();
        let drops = |local: bool| local && elsewhere;
        if context.internal_local == context.external_local {
            let mut frontends = cluster;
            frontends.extend(external);
            insert(
                context,
                out,
                base,
                frontends,
                protocol,
                backends(context.internal_local),
                drops(context.internal_local),
            );
        } else {
            let external_name = format!("{base}/external");
            insert(
                context,
                out,
                base,
                cluster,
                protocol,
                backends(context.internal_local),
                drops(context.internal_local),
            );
            insert(
                context,
                out,
                external_name,
                external,
                protocol,
                backends(context.external_local),
                drops(context.external_local),
            );
        }
    }
}

/// A frontend at `addr`: kind node when `addr` is one of the node's
/// addresses — then only a port in the NodePort range can be served, as the
/// datapath passes every other port of a node address to the node.
fn frontend(
    context: &ServiceContext<'_>,
    service: &str,
    addr: IpAddr,
    port: u16,
    protocol: Protocol,
    out: &mut Output,
) -> Option<Frontend> {
    let kind = if context.node_addresses.contains(&addr) {
        if !NODE_PORT_RANGE.contains(&port) {
            out.skip(
                SkipReason::NodeAddressPort,
                Some(format!(
                    "{service}: {addr} is this node's address and port {port} is outside the \
                     NodePort range {}-{}; not served",
                    NODE_PORT_RANGE.start(),
                    NODE_PORT_RANGE.end()
                )),
            );
            return None;
        }
        FrontendKind::Node
    } else {
        FrontendKind::Vip
    };
    Some(Frontend {
        addr,
        port,
        protocol,
        kind,
        snat_remote: false,
        source_ranges_only: false,
    })
}

fn insert(
    context: &ServiceContext<'_>,
    out: &mut Output,
    name: String,
    frontends: Vec<Frontend>,
    protocol: Protocol,
    backends: Vec<Backend>,
    drop_without_backends: bool,
) {
    let frontends: BTreeSet<Frontend> = frontends.into_iter().collect();
    let Some(first) = frontends.first() else {
        return;
    };
    // A service's frontends are of one family (its clusterIP's), and only
    // the ranges of that family can match its clients.
    let ipv4 = first.addr.is_ipv4();
    let source_ranges = context
        .source_ranges
        .iter()
        .copied()
        .filter(|(network, _)| network.is_ipv4() == ipv4)
        .collect();
    out.services.insert(
        ServiceName(name),
        Service {
            protocol,
            frontends: frontends.into_iter().collect(),
            backends,
            mode: Mode::Nat,
            affinity: context.affinity,
            health_check: None,
            drop_without_backends,
            source_ranges,
        },
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::{core::v1::Service as KubeService, discovery::v1::EndpointSlice};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::model::{BackendState, Model};

    fn service(value: Value) -> KubeService {
        serde_json::from_value(value).expect("a Service")
    }

    /// A Service `default/<name>` with `spec`.
    fn svc(name: &str, spec: Value) -> KubeService {
        service(json!({ "metadata": { "name": name, "namespace": "default" }, "spec": spec }))
    }

    /// A ClusterIP Service `default/web` at 198.18.100.1 with one port `http` 80/TCP.
    fn web(extra: Value) -> KubeService {
        let mut spec = json!({
            "clusterIP": "198.18.100.1",
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }],
        });
        merge(&mut spec, extra);
        svc("web", spec)
    }

    fn merge(into: &mut Value, extra: Value) {
        if let (Some(into), Value::Object(extra)) = (into.as_object_mut(), extra) {
            into.extend(extra);
        }
    }

    fn slice(
        name: &str,
        service: &str,
        family: &str,
        ports: Value,
        endpoints: Value,
    ) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "namespace": "default",
                "labels": { "kubernetes.io/service-name": service },
            },
            "addressType": family,
            "ports": ports,
            "endpoints": endpoints,
        }))
        .expect("an EndpointSlice")
    }

    /// An endpoint on `node` with the given conditions (`null`: unset).
    fn ep(addr: &str, node: &str, ready: Value, serving: Value, terminating: Value) -> Value {
        json!({
            "addresses": [addr],
            "nodeName": node,
            "conditions": { "ready": ready, "serving": serving, "terminating": terminating },
        })
    }

    fn ready(addr: &str, node: &str) -> Value {
        ep(addr, node, json!(true), json!(true), json!(false))
    }

    fn terminating(addr: &str, node: &str) -> Value {
        ep(addr, node, json!(false), json!(true), json!(true))
    }

    /// The slice of `default/web` with port `http` 8080/TCP.
    fn web_slice(endpoints: Value) -> EndpointSlice {
        slice(
            "web-1",
            "web",
            "IPv4",
            json!([{ "name": "http", "port": 8080, "protocol": "TCP" }]),
            endpoints,
        )
    }

    fn node() -> NodeInfo {
        NodeInfo {
            name: "node-a".to_owned(),
            addresses: vec![
                "198.18.0.10".parse().unwrap(),
                "2001:2::10".parse().unwrap(),
            ],
            zone: None,
        }
    }

    fn run(services: &[KubeService], slices: &[EndpointSlice]) -> Translation {
        translate(services, slices, &node(), &TranslateOptions::default())
    }

    /// One line per service: `name: frontends => backends [affinity]`.
    fn describe(model: &Model) -> Vec<String> {
        model
            .services
            .iter()
            .map(|(name, s)| {
                assert_eq!(s.mode, Mode::Nat);
                assert!(s.health_check.is_none());
                let frontends: Vec<String> = s
                    .frontends
                    .iter()
                    .map(|f| {
                        assert_eq!(f.protocol, s.protocol);
                        let kind = match f.kind {
                            FrontendKind::Vip => "vip",
                            FrontendKind::Node => "node",
                        };
                        format!("{f} {kind}")
                    })
                    .collect();
                let backends: Vec<String> = s
                    .backends
                    .iter()
                    .map(|b| {
                        assert_eq!(b.weight, 1);
                        let state = match b.state {
                            BackendState::Active => "active",
                            BackendState::Draining => "draining",
                            BackendState::Terminating => "terminating",
                        };
                        format!("{} {state}", b.addr)
                    })
                    .collect();
                let affinity = s
                    .affinity
                    .map(|a| format!(" affinity {}s", a.timeout.as_secs()))
                    .unwrap_or_default();
                format!(
                    "{name}: {} => {}{affinity}",
                    frontends.join(", "),
                    backends.join(", ")
                )
            })
            .collect()
    }

    fn skipped(t: &Translation) -> Vec<(SkipReason, usize)> {
        t.skipped.iter().map(|(r, n)| (*r, *n)).collect()
    }

    #[test]
    fn cluster_ip_named_port_is_namespace_name_port() {
        let t = run(
            &[web(json!({}))],
            &[web_slice(json!([ready("198.18.2.1", "node-a")]))],
        );
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active"]
        );
        assert!(t.warnings.is_empty() && t.skipped.is_empty());
    }

    #[test]
    fn an_unnamed_port_is_namespace_name() {
        let s = svc(
            "web",
            json!({ "clusterIP": "198.18.100.1", "ports": [{ "port": 80 }] }),
        );
        let sl = slice(
            "web-1",
            "web",
            "IPv4",
            json!([{ "port": 8080 }]),
            json!([ready("198.18.2.1", "n")]),
        );
        assert_eq!(
            describe(&run(&[s], &[sl]).model),
            ["default/web: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active"]
        );
    }

    #[test]
    fn each_port_is_a_service_with_endpoints_matched_by_port_name() {
        let s = web(json!({ "ports": [
            { "name": "http", "port": 80 },
            { "name": "metrics", "port": 9090 },
        ]}));
        let sl = slice(
            "web-1",
            "web",
            "IPv4",
            json!([{ "name": "metrics", "port": 19090 }, { "name": "http", "port": 8080 }]),
            json!([ready("198.18.2.1", "n")]),
        );
        assert_eq!(
            describe(&run(&[s], &[sl]).model),
            [
                "default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active",
                "default/web:metrics: 198.18.100.1:9090/TCP vip => 198.18.2.1:19090 active",
            ]
        );
    }

    #[test]
    fn slice_ports_match_by_protocol_too() {
        let s = svc(
            "dns",
            json!({ "clusterIP": "198.18.100.10", "ports": [
                { "name": "dns", "port": 53, "protocol": "UDP" },
                { "name": "dns-tcp", "port": 53, "protocol": "TCP" },
            ]}),
        );
        let sl = slice(
            "dns-1",
            "dns",
            "IPv4",
            // A TCP port named like the UDP one does not serve it.
            json!([{ "name": "dns", "port": 5353, "protocol": "TCP" },
                   { "name": "dns-tcp", "port": 53, "protocol": "TCP" }]),
            json!([ready("198.18.2.1", "n")]),
        );
        assert_eq!(
            describe(&run(&[s], &[sl]).model),
            [
                "default/dns:dns: 198.18.100.10:53/UDP vip => ",
                "default/dns:dns-tcp: 198.18.100.10:53/TCP vip => 198.18.2.1:53 active",
            ]
        );
    }

    #[test]
    fn a_port_without_matching_endpoints_is_a_service_without_backends() {
        let sl = slice(
            "web-1",
            "web",
            "IPv4",
            json!([{ "name": "https", "port": 8443 }]),
            json!([ready("198.18.2.1", "n")]),
        );
        assert_eq!(
            describe(&run(&[web(json!({}))], &[sl]).model),
            ["default/web:http: 198.18.100.1:80/TCP vip => "]
        );
    }

    #[test]
    fn dual_stack_is_one_service_per_family_the_second_suffixed() {
        let s = web(
            json!({ "clusterIPs": ["2001:2::100", "198.18.100.1"], "clusterIP": "2001:2::100" }),
        );
        let v4 = web_slice(json!([ready("198.18.2.1", "n")]));
        let v6 = slice(
            "web-2",
            "web",
            "IPv6",
            json!([{ "name": "http", "port": 8080 }]),
            json!([ready("2001:2::2:1", "n")]),
        );
        assert_eq!(
            describe(&run(&[s], &[v4, v6]).model),
            [
                "default/web:http: [2001:2::100]:80/TCP vip => [2001:2::2:1]:8080 active",
                "default/web:http/ipv4: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active",
            ]
        );
    }

    #[test]
    fn endpoints_of_another_family_are_not_backends() {
        let v6 = slice(
            "web-2",
            "web",
            "IPv6",
            json!([{ "name": "http", "port": 8080 }]),
            json!([ready("2001:2::2:1", "n")]),
        );
        assert_eq!(
            describe(&run(&[web(json!({}))], &[v6]).model),
            ["default/web:http: 198.18.100.1:80/TCP vip => "]
        );
    }

    #[test]
    fn node_port_is_served_on_the_node_addresses_of_its_family() {
        let s = web(json!({ "type": "NodePort",
            "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }] }));
        let t = run(&[s], &[web_slice(json!([ready("198.18.2.1", "n")]))]);
        assert_eq!(
            describe(&t.model),
            [
                "default/web:http: 198.18.0.10:30080/TCP node, 198.18.100.1:80/TCP vip => \
              198.18.2.1:8080 active"
            ]
        );
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn node_port_without_a_node_address_of_its_family_warns() {
        let s = web(json!({ "type": "NodePort",
            "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }] }));
        let t = translate(
            &[s],
            &[],
            &NodeInfo::default(),
            &TranslateOptions::default(),
        );
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => "]
        );
        assert_eq!(
            t.warnings,
            ["default/web:http: nodePort 30080/TCP not served: the node has no IPv4 address"]
        );
        assert_eq!(skipped(&t), [(SkipReason::NoNodeAddress, 1)]);
    }

    #[test]
    fn a_node_port_outside_the_default_range_is_left_out_and_the_rest_served() {
        // A cluster with --service-node-port-range=20000-40000: the API
        // server accepted both ports; the datapath serves node addresses in
        // 30000-32767 only.
        let s = web(json!({ "type": "NodePort", "ports": [
            { "name": "http", "port": 80, "nodePort": 40000 },
            { "name": "alt", "port": 81, "nodePort": 30081 },
        ]}));
        let t = run(&[s], &[web_slice(json!([ready("198.18.2.1", "n")]))]);
        assert_eq!(
            describe(&t.model),
            [
                "default/web:alt: 198.18.0.10:30081/TCP node, 198.18.100.1:81/TCP vip => ",
                "default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active",
            ]
        );
        assert_eq!(
            t.warnings,
            [
                "default/web:http: nodePort 40000/TCP is outside the NodePort range 30000-32767 \
                 that is served on node addresses; not served"
            ]
        );
        assert_eq!(skipped(&t), [(SkipReason::NodeAddressPort, 1)]);
    }

    #[test]
    fn load_balancer_serves_ingress_ips_and_node_ports() {
        let mut s = web(json!({ "type": "LoadBalancer",
            "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }] }));
        s.status = serde_json::from_value(json!({ "loadBalancer": { "ingress": [
            { "ip": "198.18.200.1" }, { "hostname": "lb.example" },
        ]}}))
        .unwrap();
        assert_eq!(
            describe(&run(&[s], &[]).model),
            [
                "default/web:http: 198.18.0.10:30080/TCP node, 198.18.100.1:80/TCP vip, \
              198.18.200.1:80/TCP vip => "
            ]
        );
    }

    #[test]
    fn load_balancer_without_node_ports_has_none() {
        let s = web(json!({ "type": "LoadBalancer", "allocateLoadBalancerNodePorts": false }));
        let t = run(&[s], &[]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => "]
        );
        assert!(t.warnings.is_empty());
        // Node ports it has all the same (given, or allocated before the
        // field was turned off) are served, as kube-proxy serves every
        // nodePort it finds.
        let s = web(
            json!({ "type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
            "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }] }),
        );
        assert_eq!(
            describe(&run(&[s], &[]).model),
            ["default/web:http: 198.18.0.10:30080/TCP node, 198.18.100.1:80/TCP vip => "]
        );
    }

    #[test]
    fn ingress_ips_of_a_family_without_cluster_ip_are_ignored() {
        let mut s = web(json!({ "type": "LoadBalancer", "allocateLoadBalancerNodePorts": false }));
        s.status = serde_json::from_value(json!({ "loadBalancer": { "ingress": [
            { "ip": "198.18.200.1" }, { "ip": "2001:2::200" },
        ]}}))
        .unwrap();
        let t = run(&[s], &[]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip, 198.18.200.1:80/TCP vip => "]
        );
        assert_eq!(
            t.warnings,
            ["default/web:http: 2001:2::200 not served: the Service has no IPv6 clusterIP"]
        );
        assert_eq!(skipped(&t), [(SkipReason::OtherFamily, 1)]);
    }

    #[test]
    fn ingress_ip_mode_proxy_is_not_served_here() {
        let mut s = web(json!({ "type": "LoadBalancer", "allocateLoadBalancerNodePorts": false }));
        s.status = serde_json::from_value(json!({ "loadBalancer": { "ingress": [
            { "ip": "198.18.200.1", "ipMode": "Proxy" }, { "ip": "198.18.200.2", "ipMode": "VIP" },
        ]}}))
        .unwrap();
        let t = run(&[s], &[]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip, 198.18.200.2:80/TCP vip => "]
        );
        assert_eq!(skipped(&t), [(SkipReason::ProxyIpMode, 1)]);
    }

    #[test]
    fn source_ranges_restrict_only_the_ingress_ips() {
        let mut s = web(
            json!({ "type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
            "externalIPs": ["198.18.201.1"],
            "loadBalancerSourceRanges": ["198.18.9.9/32", "198.18.0.7/24", "198.18.0.0/24"] }),
        );
        s.status = serde_json::from_value(
            json!({ "loadBalancer": { "ingress": [{ "ip": "198.18.200.1" }]}}),
        )
        .unwrap();
        let t = run(&[s], &[]);
        let service = &t.model.services[&ServiceName("default/web:http".into())];
        let ranged: Vec<(String, bool)> = service
            .frontends
            .iter()
            .map(|f| (f.to_string(), f.source_ranges_only))
            .collect();
        assert_eq!(
            ranged,
            [
                ("198.18.100.1:80/TCP".to_owned(), false),
                ("198.18.200.1:80/TCP".to_owned(), true),
                ("198.18.201.1:80/TCP".to_owned(), false),
            ]
        );
        // 198.18.0.7/24 is 198.18.0.0/24: one network, sorted. It holds the
        // node's 198.18.0.10, so the ingress IP is let through as a source
        // too (`allowed_from_node`).
        assert_eq!(
            service.source_ranges,
            [
                ("198.18.0.0".parse().unwrap(), 24),
                ("198.18.9.9".parse().unwrap(), 32),
                ("198.18.200.1".parse().unwrap(), 32),
            ]
        );
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        assert_eq!(skipped(&t), []);
    }

    #[test]
    fn source_ranges_restrict_the_ingress_ips_of_their_own_family() {
        let mut s = web(
            json!({ "type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
            "clusterIPs": ["198.18.100.1", "2001:2::100"],
            "loadBalancerSourceRanges": ["198.18.9.0/24"] }),
        );
        s.status = serde_json::from_value(json!({ "loadBalancer": { "ingress": [
            { "ip": "198.18.200.1" }, { "ip": "2001:2::200" },
        ]}}))
        .unwrap();
        let t = run(&[s], &[]);
        // One line per service: `name: its ranges => its ranged frontends`.
        let ranged: Vec<String> = t
            .model
            .services
            .iter()
            .map(|(name, s)| {
                let ranges = s.source_ranges.iter().map(|(n, p)| format!("{n}/{p}"));
                let frontends = s.frontends.iter().filter(|f| f.source_ranges_only);
                format!(
                    "{name}: {} => {}",
                    ranges.collect::<Vec<_>>().join(", "),
                    frontends
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        // kube-proxy filters the ranges by family: with IPv4 ranges only,
        // the IPv6 ingress IP accepts every client.
        assert_eq!(
            ranged,
            [
                "default/web:http: 198.18.9.0/24 => 198.18.200.1:80/TCP",
                "default/web:http/ipv6:  => ",
            ]
        );
    }

    #[test]
    fn a_range_holding_the_node_lets_the_ingress_ips_of_its_family_in() {
        // As kube-proxy: a LoadBalancer IP routed to the node loops the
        // node's own requests back with that IP as their source, and a range
        // that holds the node (here 2001:2::/64, the node's 2001:2::10) lets
        // them in. The IPv4 range holds no node address: no host range.
        let mut s = web(
            json!({ "type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
            "clusterIPs": ["198.18.100.1", "2001:2::100"],
            "loadBalancerSourceRanges": ["198.18.9.0/24", "2001:2::/64"] }),
        );
        s.status = serde_json::from_value(json!({ "loadBalancer": { "ingress": [
            { "ip": "198.18.200.1" }, { "ip": "2001:2::200" }, { "ip": "2001:2:0:1::200" },
        ]}}))
        .unwrap();
        let t = run(&[s], &[]);
        let ranges: Vec<(String, Vec<String>)> = t
            .model
            .services
            .iter()
            .map(|(name, s)| {
                let ranges = s.source_ranges.iter().map(|(n, p)| format!("{n}/{p}"));
                (name.to_string(), ranges.collect())
            })
            .collect();
        assert_eq!(
            ranges,
            [
                (
                    "default/web:http".to_owned(),
                    vec!["198.18.9.0/24".to_owned()]
                ),
                (
                    "default/web:http/ipv6".to_owned(),
                    // 2001:2::200 is inside 2001:2::/64 already.
                    vec!["2001:2::/64".to_owned(), "2001:2:0:1::200/128".to_owned()]
                ),
            ]
        );
    }

    #[test]
    fn source_ranges_padded_with_spaces_are_read_trimmed() {
        // The API server accepts the padding (a leftover of the annotation
        // the field replaced), and kube-proxy trims it.
        let mut s = web(
            json!({ "type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
            "loadBalancerSourceRanges": [" 198.18.9.0/24 ", "\t198.18.8.0/24"] }),
        );
        s.status = serde_json::from_value(
            json!({ "loadBalancer": { "ingress": [{ "ip": "198.18.200.1" }]}}),
        )
        .unwrap();
        let t = run(&[s], &[]);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        let service = &t.model.services[&ServiceName("default/web:http".into())];
        assert_eq!(
            service.source_ranges,
            [
                ("198.18.8.0".parse().unwrap(), 24),
                ("198.18.9.0".parse().unwrap(), 24)
            ]
        );
        assert!(
            service
                .frontends
                .iter()
                .any(|f| f.to_string() == "198.18.200.1:80/TCP" && f.source_ranges_only)
        );
    }

    #[test]
    fn external_ips_are_vips() {
        let s = web(json!({ "externalIPs": ["198.18.201.1", "198.18.201.1", "198.18.201.2"] }));
        assert_eq!(
            describe(&run(&[s], &[]).model),
            [
                "default/web:http: 198.18.100.1:80/TCP vip, 198.18.201.1:80/TCP vip, \
              198.18.201.2:80/TCP vip => "
            ]
        );
    }

    #[test]
    fn legacy_addresses_with_leading_zeros_are_read_as_kube_proxy_reads_them() {
        // Stored before the API server refused them; decimal, never octal.
        let s = web(json!({
            "clusterIP": "198.018.100.001",
            "clusterIPs": ["198.018.100.001"],
            "externalIPs": ["198.18.201.010"],
            "type": "LoadBalancer",
            "allocateLoadBalancerNodePorts": false,
            "loadBalancerSourceRanges": ["198.018.50.0/24"],
        }));
        let s = KubeService {
            status: Some(
                serde_json::from_value(json!({
                    "loadBalancer": { "ingress": [{ "ip": "198.18.202.010" }] },
                }))
                .unwrap(),
            ),
            ..s
        };
        let t = run(&[s], &[web_slice(json!([ready("198.18.2.010", "node-a")]))]);
        assert_eq!(t.warnings, Vec::<String>::new());
        assert_eq!(skipped(&t), []);
        let service = &t.model.services[&ServiceName("default/web:http".into())];
        let frontends: Vec<String> = service.frontends.iter().map(ToString::to_string).collect();
        for expected in [
            "198.18.100.1:80/TCP",
            "198.18.201.10:80/TCP",
            "198.18.202.10:80/TCP",
        ] {
            assert!(
                frontends.iter().any(|f| f == expected),
                "{expected} in {frontends:?}"
            );
        }
        assert_eq!(
            service.backends.iter().map(|b| b.addr).collect::<Vec<_>>(),
            ["198.18.2.10:8080".parse().unwrap()]
        );
        assert_eq!(
            service.source_ranges,
            [("198.18.50.0".parse().unwrap(), 24)]
        );
    }

    #[test]
    fn external_ips_of_a_family_without_cluster_ip_are_ignored() {
        let s = web(json!({ "externalIPs": ["2001:2::201"] }));
        let t = run(&[s], &[]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => "]
        );
        assert_eq!(
            t.warnings,
            ["default/web:http: 2001:2::201 not served: the Service has no IPv6 clusterIP"]
        );
        assert_eq!(skipped(&t), [(SkipReason::OtherFamily, 1)]);
    }

    #[test]
    fn an_external_ip_on_a_node_address_is_a_node_frontend_within_the_node_port_range() {
        let s = web(json!({ "externalIPs": ["198.18.0.10"], "ports": [
            { "name": "http", "port": 80 }, { "name": "alt", "port": 30999 },
        ]}));
        let t = run(&[s], &[]);
        assert_eq!(
            describe(&t.model),
            [
                "default/web:alt: 198.18.0.10:30999/TCP node, 198.18.100.1:30999/TCP vip => ",
                "default/web:http: 198.18.100.1:80/TCP vip => ",
            ]
        );
        assert_eq!(
            t.warnings,
            [
                "default/web:http: 198.18.0.10 is this node's address and port 80 is outside the \
              NodePort range 30000-32767; not served"
            ]
        );
        assert_eq!(skipped(&t), [(SkipReason::NodeAddressPort, 1)]);
    }

    #[test]
    fn external_name_and_headless_services_are_skipped_silently() {
        let external = svc(
            "ext",
            json!({ "type": "ExternalName", "externalName": "db.example" }),
        );
        let headless = svc(
            "db",
            json!({ "clusterIP": "None", "ports": [{ "port": 5432 }] }),
        );
        let t = run(&[external, headless], &[]);
        assert!(t.model.services.is_empty());
        assert!(t.warnings.is_empty());
        assert_eq!(
            skipped(&t),
            [(SkipReason::ExternalName, 1), (SkipReason::Headless, 1)]
        );
    }

    fn labelled(labels: Value) -> KubeService {
        let mut s = web(json!({}));
        s.metadata.labels = serde_json::from_value(labels).unwrap();
        s
    }

    #[test]
    fn without_a_proxy_name_labelled_services_are_left_to_their_proxy() {
        for labels in [
            json!({ "service.kubernetes.io/service-proxy-name": "other" }),
            json!({ "service.kubernetes.io/headless": "" }),
        ] {
            let t = run(&[labelled(labels)], &[]);
            assert!(t.model.services.is_empty());
            assert_eq!(skipped(&t), [(SkipReason::NotSelected, 1)]);
        }
        let t = run(&[labelled(json!({ "app": "web" }))], &[]);
        assert_eq!(t.model.services.len(), 1);
    }

    #[test]
    fn with_a_proxy_name_only_services_labelled_with_it_are_served() {
        let options = TranslateOptions {
            service_proxy_name: Some("xlb".to_owned()),
        };
        let mine = labelled(json!({ "service.kubernetes.io/service-proxy-name": "xlb" }));
        let mut other = labelled(json!({ "service.kubernetes.io/service-proxy-name": "other" }));
        other.metadata.name = Some("other".to_owned());
        let mut plain = web(json!({}));
        plain.metadata.name = Some("plain".to_owned());
        let t = translate(&[mine, other, plain], &[], &node(), &options);
        assert_eq!(
            t.model
                .services
                .keys()
                .map(|k| k.0.as_str())
                .collect::<Vec<_>>(),
            ["default/web:http"]
        );
        assert_eq!(skipped(&t), [(SkipReason::NotSelected, 2)]);
    }

    #[test]
    fn slices_outside_the_label_selector_are_not_read() {
        // kube-proxy watches EndpointSlices with its Service selector too
        // (the EndpointSlice controller copies the Service's labels onto
        // them): a slice labelled otherwise never reaches it, whatever its
        // Service's labels.
        let labelled_slice = |name: &str, addr: &str, labels: Value| {
            let mut sl = web_slice(json!([ready(addr, "n")]));
            sl.metadata.name = Some(name.to_owned());
            let extra: BTreeMap<String, String> = serde_json::from_value(labels).unwrap();
            sl.metadata.labels.get_or_insert_default().extend(extra);
            sl
        };
        let slices = [
            labelled_slice("web-1", "198.18.2.1", json!({})),
            labelled_slice(
                "web-2",
                "198.18.2.2",
                json!({ LABEL_SERVICE_PROXY_NAME: "xlb" }),
            ),
            labelled_slice("web-3", "198.18.2.3", json!({ LABEL_HEADLESS: "" })),
        ];
        let t = run(&[web(json!({}))], &slices);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active"]
        );
        assert_eq!(skipped(&t), [(SkipReason::NotSelected, 2)]);
        // Beside kube-proxy, only the slices labelled with our name.
        let options = TranslateOptions {
            service_proxy_name: Some("xlb".to_owned()),
        };
        let mine = labelled(json!({ LABEL_SERVICE_PROXY_NAME: "xlb" }));
        let t = translate(&[mine], &slices, &node(), &options);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.2:8080 active"]
        );
    }

    #[test]
    fn sctp_ports_are_skipped_with_a_warning() {
        let s = svc(
            "dns",
            json!({ "clusterIP": "198.18.100.10", "ports": [
                { "name": "dns", "port": 53, "protocol": "UDP" },
                { "name": "dns-sctp", "port": 53, "protocol": "SCTP" },
            ]}),
        );
        let t = run(&[s], &[]);
        assert_eq!(
            describe(&t.model),
            ["default/dns:dns: 198.18.100.10:53/UDP vip => "]
        );
        assert_eq!(
            t.warnings,
            ["default/dns:dns-sctp: SCTP is not supported; skipped"]
        );
        assert_eq!(skipped(&t), [(SkipReason::Sctp, 1)]);
    }

    #[test]
    fn slices_of_other_namespaces_or_without_the_label_are_not_used() {
        let mut elsewhere = web_slice(json!([ready("198.18.2.1", "n")]));
        elsewhere.metadata.namespace = Some("other".to_owned());
        let mut unlabelled = web_slice(json!([ready("198.18.2.2", "n")]));
        unlabelled.metadata.name = Some("web-2".to_owned());
        unlabelled.metadata.labels = None;
        let t = run(&[web(json!({}))], &[elsewhere, unlabelled]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => "]
        );
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn fqdn_slices_are_ignored() {
        let fqdn = slice(
            "web-1",
            "web",
            "FQDN",
            json!([{ "name": "http", "port": 8080 }]),
            json!([{ "addresses": ["backend.example"] }]),
        );
        let t = run(&[web(json!({}))], &[fqdn]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => "]
        );
        assert_eq!(skipped(&t), [(SkipReason::FqdnSlice, 1)]);
    }

    #[test]
    fn endpoints_are_deduplicated_across_slices_and_a_ready_copy_wins() {
        let first = web_slice(json!([
            terminating("198.18.2.1", "n"),
            ready("198.18.2.2", "n")
        ]));
        let mut second = web_slice(json!([ready("198.18.2.1", "n"), ready("198.18.2.2", "n")]));
        second.metadata.name = Some("web-2".to_owned());
        assert_eq!(
            describe(&run(&[web(json!({}))], &[first, second]).model),
            [
                "default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active, \
              198.18.2.2:8080 active"
            ]
        );
    }

    #[test]
    fn a_reused_address_takes_the_conditions_of_the_pod_that_is_not_terminating() {
        // The network gave 198.18.2.1 to a new pod on node-a while the old
        // one, on node-b, is still terminating: the address is the new
        // pod's, which is not ready yet, so it serves nothing — even though
        // the old copy is serving and no endpoint is ready (kubernetes#135266).
        let old = web_slice(json!([terminating("198.18.2.1", "node-b")]));
        let mut new = web_slice(json!([ep(
            "198.18.2.1",
            "node-a",
            json!(false),
            json!(false),
            json!(false)
        )]));
        new.metadata.name = Some("web-2".to_owned());
        let t = run(&[web(json!({}))], &[old.clone(), new]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => "]
        );
        // Once the new pod is ready, it serves.
        let mut ready_new = web_slice(json!([ready("198.18.2.1", "node-a")]));
        ready_new.metadata.name = Some("web-2".to_owned());
        let t = run(&[web(json!({}))], &[old, ready_new]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active"]
        );
        let local: Vec<bool> = t
            .model
            .services
            .values()
            .flat_map(|s| s.backends.iter().map(|b| b.local))
            .collect();
        assert_eq!(local, [true], "the new pod's node, node-a, is this node");
    }

    #[test]
    fn only_the_first_address_of_an_endpoint_is_used() {
        let sl = web_slice(json!([{ "addresses": ["198.18.2.1", "198.18.2.9"] }]));
        assert_eq!(
            describe(&run(&[web(json!({}))], &[sl]).model),
            ["default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active"]
        );
    }

    #[test]
    fn unset_conditions_count_as_ready() {
        let sl = web_slice(json!([
            { "addresses": ["198.18.2.1"] },
            ep("198.18.2.2", "n", json!(null), json!(null), json!(null)),
        ]));
        assert_eq!(
            describe(&run(&[web(json!({}))], &[sl]).model),
            [
                "default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active, \
              198.18.2.2:8080 active"
            ]
        );
    }

    #[test]
    fn with_ready_endpoints_terminating_ones_keep_only_their_flows() {
        let sl = web_slice(json!([
            ready("198.18.2.1", "n"),
            terminating("198.18.2.2", "n"),
            // Not ready, not terminating: starting up, never a backend.
            ep("198.18.2.3", "n", json!(false), json!(false), json!(false)),
            // Terminating and no longer serving: gone.
            ep("198.18.2.4", "n", json!(false), json!(false), json!(true)),
        ]));
        assert_eq!(
            describe(&run(&[web(json!({}))], &[sl]).model),
            [
                "default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active, \
              198.18.2.2:8080 terminating"
            ]
        );
    }

    #[test]
    fn without_ready_endpoints_serving_terminating_ones_take_new_flows() {
        let sl = web_slice(json!([
            terminating("198.18.2.2", "n"),
            ep("198.18.2.3", "n", json!(false), json!(true), json!(false)),
        ]));
        assert_eq!(
            describe(&run(&[web(json!({}))], &[sl]).model),
            ["default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.2:8080 active"]
        );
    }

    #[test]
    fn publish_not_ready_addresses_makes_every_endpoint_ready() {
        let sl = web_slice(json!([
            ready("198.18.2.1", "n"),
            terminating("198.18.2.2", "n"),
            ep("198.18.2.3", "n", json!(false), json!(false), json!(false)),
        ]));
        assert_eq!(
            describe(&run(&[web(json!({ "publishNotReadyAddresses": true }))], &[sl]).model),
            [
                "default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active, \
              198.18.2.2:8080 active, 198.18.2.3:8080 active"
            ]
        );
    }

    #[test]
    fn client_ip_affinity_with_default_and_given_timeout() {
        let t = run(&[web(json!({ "sessionAffinity": "ClientIP" }))], &[]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip =>  affinity 10800s"]
        );
        let t = run(
            &[web(json!({ "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 60 } } }))],
            &[],
        );
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip =>  affinity 60s"]
        );
        let t = run(&[web(json!({ "sessionAffinity": "None" }))], &[]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => "]
        );
    }

    fn two_nodes() -> EndpointSlice {
        web_slice(json!([
            ready("198.18.2.1", "node-a"),
            ready("198.18.2.2", "node-b")
        ]))
    }

    #[test]
    fn internal_traffic_policy_local_uses_node_local_endpoints() {
        let t = run(
            &[web(json!({ "internalTrafficPolicy": "Local" }))],
            &[two_nodes()],
        );
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active"]
        );
    }

    #[test]
    fn local_policy_applies_kep_1669_among_local_endpoints() {
        let sl = web_slice(json!([
            ready("198.18.2.2", "node-b"),
            terminating("198.18.2.1", "node-a"),
        ]));
        let t = run(&[web(json!({ "internalTrafficPolicy": "Local" }))], &[sl]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active"]
        );
    }

    #[test]
    fn external_traffic_policy_local_splits_off_the_external_frontends() {
        let s = web(
            json!({ "type": "NodePort", "externalTrafficPolicy": "Local",
            "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }] }),
        );
        let t = run(&[s], &[two_nodes()]);
        assert_eq!(
            describe(&t.model),
            [
                "default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active, \
                 198.18.2.2:8080 active",
                "default/web:http/external: 198.18.0.10:30080/TCP node => 198.18.2.1:8080 active",
            ]
        );
    }

    #[test]
    fn cluster_policy_external_frontends_source_nat_toward_other_nodes_endpoints() {
        let service = |policy: &str| {
            web(json!({ "type": "NodePort", "externalTrafficPolicy": policy,
                "externalIPs": ["198.18.201.1"],
                "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }] }))
        };
        // (frontend, source NAT) of every service, and the local backends.
        let flags = |t: &Translation| {
            let frontends: Vec<(String, bool)> = t
                .model
                .frontends()
                .map(|(_, f)| (f.to_string(), f.snat_remote))
                .collect();
            let local: Vec<String> = t
                .model
                .services
                .values()
                .flat_map(|s| s.backends.iter().filter(|b| b.local))
                .map(|b| b.addr.to_string())
                .collect();
            (frontends, local)
        };
        let (frontends, local) = flags(&run(&[service("Cluster")], &[two_nodes()]));
        assert_eq!(
            frontends,
            [
                ("198.18.0.10:30080/TCP".to_owned(), true),
                ("198.18.100.1:80/TCP".to_owned(), false),
                ("198.18.201.1:80/TCP".to_owned(), true),
            ]
        );
        assert_eq!(local, ["198.18.2.1:8080"], "the endpoint on node-a");
        // `Local` keeps the client's source: only local endpoints serve.
        let (frontends, _) = flags(&run(&[service("Local")], &[two_nodes()]));
        assert!(frontends.iter().all(|(_, snat)| !snat), "{frontends:?}");
    }

    #[test]
    fn external_traffic_policy_local_without_local_endpoints_has_no_backends() {
        let s = web(
            json!({ "type": "NodePort", "externalTrafficPolicy": "Local",
            "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }] }),
        );
        let sl = web_slice(json!([ready("198.18.2.2", "node-b")]));
        let t = run(&[s], &[sl]);
        assert_eq!(
            describe(&t.model),
            [
                "default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.2:8080 active",
                "default/web:http/external: 198.18.0.10:30080/TCP node => ",
            ]
        );
    }

    #[test]
    fn internal_local_policy_drops_without_local_endpoints_and_refuses_without_any() {
        let s = web(json!({ "internalTrafficPolicy": "Local" }));
        let drops = |slice: EndpointSlice| -> Vec<(String, usize, bool)> {
            run(std::slice::from_ref(&s), &[slice])
                .model
                .services
                .iter()
                .map(|(name, s)| (name.0.clone(), s.backends.len(), s.drop_without_backends))
                .collect()
        };
        // Endpoints on another node only: the clusterIP drops, as
        // kube-proxy's `internalTrafficPolicy: Local` does.
        assert_eq!(
            drops(web_slice(json!([ready("198.18.2.2", "node-b")]))),
            [("default/web:http".to_owned(), 0, true)]
        );
        // A serving-terminating endpoint elsewhere counts as one too.
        assert_eq!(
            drops(web_slice(json!([terminating("198.18.2.2", "node-b")]))),
            [("default/web:http".to_owned(), 0, true)]
        );
        // None anywhere (or none usable): refused.
        let starting = ep(
            "198.18.2.2",
            "node-b",
            json!(false),
            json!(false),
            json!(false),
        );
        assert_eq!(
            drops(web_slice(json!([starting]))),
            [("default/web:http".to_owned(), 0, false)]
        );
    }

    #[test]
    fn local_policy_drops_without_local_endpoints_and_refuses_without_any() {
        let s = web(
            json!({ "type": "NodePort", "externalTrafficPolicy": "Local",
            "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }] }),
        );
        let drops = |t: &Translation| -> Vec<(String, bool)> {
            t.model
                .services
                .iter()
                .map(|(name, s)| (name.0.clone(), s.drop_without_backends))
                .collect()
        };
        let elsewhere = web_slice(json!([ready("198.18.2.2", "node-b")]));
        assert_eq!(
            drops(&run(std::slice::from_ref(&s), &[elsewhere])),
            [
                ("default/web:http".to_owned(), false),
                ("default/web:http/external".to_owned(), true),
            ]
        );
        let nowhere = web_slice(json!([]));
        assert!(drops(&run(&[s], &[nowhere])).iter().all(|(_, d)| !d));
    }

    #[test]
    fn both_policies_local_is_one_service_of_local_endpoints() {
        let s = web(
            json!({ "externalIPs": ["198.18.201.1"], "externalTrafficPolicy": "Local",
            "internalTrafficPolicy": "Local" }),
        );
        assert_eq!(
            describe(&run(&[s], &[two_nodes()]).model),
            [
                "default/web:http: 198.18.100.1:80/TCP vip, 198.18.201.1:80/TCP vip => \
              198.18.2.1:8080 active"
            ]
        );
    }

    #[test]
    fn internal_local_with_external_cluster_splits_too() {
        let s = web(json!({ "externalIPs": ["198.18.201.1"], "internalTrafficPolicy": "Local" }));
        assert_eq!(
            describe(&run(&[s], &[two_nodes()]).model),
            [
                "default/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 active",
                "default/web:http/external: 198.18.201.1:80/TCP vip => 198.18.2.1:8080 active, \
                 198.18.2.2:8080 active",
            ]
        );
    }

    #[test]
    fn a_local_policy_on_a_node_without_a_name_has_no_local_endpoints() {
        let s = web(json!({ "internalTrafficPolicy": "Local" }));
        let node = NodeInfo::default();
        let t = translate(&[s], &[two_nodes()], &node, &TranslateOptions::default());
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => "]
        );
    }

    #[test]
    fn dual_stack_with_external_local_names_family_then_external() {
        let s = web(
            json!({ "type": "NodePort", "externalTrafficPolicy": "Local",
            "clusterIPs": ["198.18.100.1", "2001:2::100"],
            "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }] }),
        );
        let names: Vec<String> = run(&[s], &[])
            .model
            .services
            .into_keys()
            .map(|k| k.0)
            .collect();
        assert_eq!(
            names,
            [
                "default/web:http",
                "default/web:http/external",
                "default/web:http/ipv6",
                "default/web:http/ipv6/external",
            ]
        );
    }

    // --- Topology -----------------------------------------------------------

    /// A ready endpoint on `node` hinted for `zones`.
    fn hinted(addr: &str, node: &str, zones: &[&str]) -> Value {
        let mut endpoint = ready(addr, node);
        let zones: Vec<Value> = zones.iter().map(|z| json!({ "name": z })).collect();
        endpoint["hints"] = json!({ "forZones": zones });
        endpoint
    }

    fn annotated(mut service: KubeService, key: &str, value: &str) -> KubeService {
        service
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(key.to_owned(), value.to_owned());
        service
    }

    #[test]
    fn topology_aware_routing_keeps_this_zones_endpoints_when_the_hints_allow() {
        let prefer_close = |extra: Value| {
            let mut spec = json!({ "trafficDistribution": "PreferClose" });
            merge(&mut spec, extra);
            web(spec)
        };
        // 2.1 and 2.3 are hinted for zone-a (node-a's zone in most cases).
        let zoned = |more: &[Value]| {
            let mut endpoints = vec![
                hinted("198.18.2.1", "node-b", &["zone-a"]),
                hinted("198.18.2.2", "node-b", &["zone-b"]),
                hinted("198.18.2.3", "node-c", &["zone-b", "zone-a"]),
            ];
            endpoints.extend_from_slice(more);
            vec![web_slice(Value::Array(endpoints))]
        };
        let vip =
            |backends: &str| format!("default/web:http: 198.18.100.1:80/TCP vip => {backends}");
        let in_zone = "198.18.2.1:8080 active, 198.18.2.3:8080 active";
        let all = "198.18.2.1:8080 active, 198.18.2.2:8080 active, 198.18.2.3:8080 active";
        let node_port = json!({ "type": "NodePort",
            "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }] });
        /// (what, the Service, its slices, node-a's zone, the model)
        type Case = (
            &'static str,
            KubeService,
            Vec<EndpointSlice>,
            Option<&'static str>,
            Vec<String>,
        );
        let cases: Vec<Case> = vec![
            (
                "trafficDistribution: PreferClose",
                prefer_close(json!({})),
                zoned(&[]),
                Some("zone-a"),
                vec![vip(in_zone)],
            ),
            (
                "trafficDistribution: PreferSameZone, its newer name",
                web(json!({ "trafficDistribution": "PreferSameZone" })),
                zoned(&[]),
                Some("zone-a"),
                vec![vip(in_zone)],
            ),
            (
                "a Service that does not ask: the hints decide all the same, as in kube-proxy",
                web(json!({})),
                zoned(&[]),
                Some("zone-a"),
                vec![vip(in_zone)],
            ),
            (
                "nor does the older annotation's `disabled` turn them off",
                annotated(
                    web(json!({})),
                    "service.kubernetes.io/topology-aware-hints",
                    "disabled",
                ),
                zoned(&[]),
                Some("zone-a"),
                vec![vip(in_zone)],
            ),
            (
                "no ready endpoint: the serving-terminating ones of every zone take new flows",
                prefer_close(json!({})),
                vec![web_slice(json!([
                    terminating("198.18.2.4", "node-b"),
                    terminating("198.18.2.5", "node-c"),
                ]))],
                Some("zone-a"),
                vec![vip("198.18.2.4:8080 active, 198.18.2.5:8080 active")],
            ),
            (
                "a ready endpoint without a hint: every endpoint",
                prefer_close(json!({})),
                zoned(&[ready("198.18.2.4", "node-b")]),
                Some("zone-a"),
                vec![vip(&format!("{all}, 198.18.2.4:8080 active"))],
            ),
            (
                "no endpoint for this zone: every endpoint",
                prefer_close(json!({})),
                zoned(&[]),
                Some("zone-c"),
                vec![vip(all)],
            ),
            (
                "a node without a zone: every endpoint",
                prefer_close(json!({})),
                zoned(&[]),
                None,
                vec![vip(all)],
            ),
            (
                "a terminating endpoint (never hinted) keeps its flows and blocks nothing",
                prefer_close(json!({})),
                zoned(&[terminating("198.18.2.4", "node-b")]),
                Some("zone-a"),
                vec![vip(&format!("{in_zone}, 198.18.2.4:8080 terminating"))],
            ),
            (
                "Cluster policy external frontends follow the hints too",
                prefer_close(node_port.clone()),
                zoned(&[]),
                Some("zone-a"),
                vec![format!(
                    "default/web:http: 198.18.0.10:30080/TCP node, 198.18.100.1:80/TCP vip => \
                     {in_zone}"
                )],
            ),
            (
                "a Local policy keeps this node's endpoints, whatever their hints",
                prefer_close({
                    let mut spec = node_port;
                    merge(&mut spec, json!({ "externalTrafficPolicy": "Local" }));
                    spec
                }),
                zoned(&[hinted("198.18.2.4", "node-a", &["zone-b"])]),
                Some("zone-a"),
                vec![
                    vip(in_zone),
                    "default/web:http/external: 198.18.0.10:30080/TCP node => 198.18.2.4:8080 \
                     active"
                        .to_owned(),
                ],
            ),
            (
                "each family on its own: IPv6 endpoints without hints use all of theirs",
                prefer_close(json!({ "clusterIPs": ["198.18.100.1", "2001:2::100"] })),
                {
                    let mut slices = zoned(&[]);
                    slices.push(slice(
                        "web-2",
                        "web",
                        "IPv6",
                        json!([{ "name": "http", "port": 8080, "protocol": "TCP" }]),
                        json!([
                            ready("2001:2::2:1", "node-b"),
                            ready("2001:2::2:2", "node-c")
                        ]),
                    ));
                    slices
                },
                Some("zone-a"),
                vec![
                    vip(in_zone),
                    "default/web:http/ipv6: [2001:2::100]:80/TCP vip => [2001:2::2:1]:8080 \
                     active, [2001:2::2:2]:8080 active"
                        .to_owned(),
                ],
            ),
        ];
        for (what, service, slices, zone, expected) in cases {
            let node = NodeInfo {
                zone: zone.map(str::to_owned),
                ..node()
            };
            let t = translate(&[service], &slices, &node, &TranslateOptions::default());
            assert_eq!(describe(&t.model), expected, "{what}");
        }
    }

    /// `hinted` with node hints too (`PreferSameNode`: the EndpointSlice
    /// controller hints each endpoint for its own node and its zone).
    fn node_hinted(addr: &str, node: &str, zones: &[&str], nodes: &[&str]) -> Value {
        let mut endpoint = hinted(addr, node, zones);
        let nodes: Vec<Value> = nodes.iter().map(|n| json!({ "name": n })).collect();
        endpoint["hints"]["forNodes"] = Value::Array(nodes);
        endpoint
    }

    #[test]
    fn prefer_same_node_keeps_this_nodes_endpoints_then_its_zones() {
        let same_node = web(json!({ "trafficDistribution": "PreferSameNode" }));
        let vip =
            |backends: &str| format!("default/web:http: 198.18.100.1:80/TCP vip => {backends}");
        let slices = |endpoints: Value| vec![web_slice(endpoints)];
        // (what, the endpoints, node-a's zone, the backends)
        let cases: [(&str, Value, Option<&str>, &str); 5] = [
            (
                "this node's endpoint",
                json!([
                    node_hinted("198.18.2.1", "node-a", &["zone-a"], &["node-a"]),
                    node_hinted("198.18.2.2", "node-b", &["zone-a"], &["node-b"]),
                    node_hinted("198.18.2.3", "node-c", &["zone-b"], &["node-c"]),
                ]),
                Some("zone-a"),
                "198.18.2.1:8080 active",
            ),
            (
                "without a zone, the node hints alone",
                json!([
                    node_hinted("198.18.2.1", "node-a", &["zone-a"], &["node-a"]),
                    node_hinted("198.18.2.2", "node-b", &["zone-a"], &["node-b"]),
                ]),
                None,
                "198.18.2.1:8080 active",
            ),
            (
                "no endpoint on this node: this zone's",
                json!([
                    node_hinted("198.18.2.2", "node-b", &["zone-a"], &["node-b"]),
                    node_hinted("198.18.2.3", "node-c", &["zone-b"], &["node-c"]),
                ]),
                Some("zone-a"),
                "198.18.2.2:8080 active",
            ),
            (
                "a ready endpoint without a node hint: the zone hints",
                json!([
                    node_hinted("198.18.2.1", "node-a", &["zone-a"], &["node-a"]),
                    hinted("198.18.2.2", "node-b", &["zone-a"]),
                    hinted("198.18.2.3", "node-c", &["zone-b"]),
                ]),
                Some("zone-a"),
                "198.18.2.1:8080 active, 198.18.2.2:8080 active",
            ),
            (
                "neither applies: every endpoint",
                json!([
                    node_hinted("198.18.2.2", "node-b", &["zone-b"], &["node-b"]),
                    ready("198.18.2.3", "node-c"),
                ]),
                Some("zone-a"),
                "198.18.2.2:8080 active, 198.18.2.3:8080 active",
            ),
        ];
        for (what, endpoints, zone, backends) in cases {
            let node = NodeInfo {
                zone: zone.map(str::to_owned),
                ..node()
            };
            let t = translate(
                std::slice::from_ref(&same_node),
                &slices(endpoints),
                &node,
                &TranslateOptions::default(),
            );
            assert_eq!(describe(&t.model), [vip(backends)], "{what}");
        }
        // A Service that does not ask follows the node hints all the same.
        let t = translate(
            &[web(json!({}))],
            &slices(json!([
                node_hinted("198.18.2.1", "node-a", &["zone-a"], &["node-a"]),
                node_hinted("198.18.2.2", "node-b", &["zone-a"], &["node-b"]),
            ])),
            &node(),
            &TranslateOptions::default(),
        );
        assert_eq!(describe(&t.model), [vip("198.18.2.1:8080 active")]);
    }

    #[test]
    fn a_frontend_claimed_twice_goes_to_the_first_name() {
        let a = web(json!({ "externalIPs": ["198.18.201.1"] }));
        let mut b = web(json!({ "externalIPs": ["198.18.201.1"], "clusterIP": "198.18.100.2" }));
        b.metadata.name = Some("api".to_owned());
        let t = run(&[a, b], &[]);
        assert_eq!(
            describe(&t.model),
            [
                "default/api:http: 198.18.100.2:80/TCP vip, 198.18.201.1:80/TCP vip => ",
                "default/web:http: 198.18.100.1:80/TCP vip => ",
            ]
        );
        assert_eq!(
            t.warnings,
            [
                "default/web:http: frontend 198.18.201.1:80/TCP is already served by \
              default/api:http; skipped"
            ]
        );
        assert_eq!(skipped(&t), [(SkipReason::FrontendConflict, 1)]);
    }

    #[test]
    fn an_object_given_twice_is_skipped_entirely() {
        let t = run(&[web(json!({})), web(json!({}))], &[]);
        assert!(t.model.services.is_empty());
        assert_eq!(
            t.warnings,
            ["Service default/web: given 2 times; every copy skipped"]
        );
        assert_eq!(skipped(&t), [(SkipReason::Duplicate, 2)]);
    }

    #[test]
    fn an_invalid_service_is_skipped_naming_its_first_problem() {
        let s = web(json!({ "ports": [{ "name": "http", "port": 70000 }] }));
        let t = run(&[s], &[]);
        assert!(t.model.services.is_empty());
        assert_eq!(
            t.warnings,
            [
                "Service default/web: spec.ports[0].port: 70000 is out of range 1-65535; skipped \
              (the API server would reject it)"
            ]
        );
        assert_eq!(skipped(&t), [(SkipReason::Invalid, 1)]);
    }

    #[test]
    fn an_invalid_slice_is_skipped_naming_its_first_problem() {
        let sl = web_slice(json!([ready("198.18.2.1", "n"), ready("2001:2::1", "n")]));
        let t = run(&[web(json!({}))], &[sl]);
        assert_eq!(
            describe(&t.model),
            ["default/web:http: 198.18.100.1:80/TCP vip => "]
        );
        assert_eq!(
            t.warnings,
            [
                "EndpointSlice default/web-1: endpoints[1].addresses[0]: 2001:2::1 is IPv6 but \
              addressType is IPv4; skipped (the API server would reject it)"
            ]
        );
    }

    #[test]
    fn a_cluster_ip_on_a_node_address_is_a_node_frontend() {
        let s = web(json!({ "clusterIP": "198.18.0.10",
            "ports": [{ "name": "http", "port": 31000 }] }));
        assert_eq!(
            describe(&run(&[s], &[]).model),
            ["default/web:http: 198.18.0.10:31000/TCP node => "]
        );
    }

    #[test]
    fn a_service_left_without_frontends_is_not_in_the_model() {
        // Its only frontend is a node address outside the NodePort range.
        let s = web(json!({ "clusterIP": "198.18.0.10" }));
        let t = run(&[s], &[]);
        assert!(t.model.services.is_empty());
        assert_eq!(skipped(&t), [(SkipReason::NodeAddressPort, 1)]);
    }

    #[test]
    fn udp_services_are_udp_throughout() {
        let s = svc(
            "dns",
            json!({ "clusterIP": "198.18.100.10",
                "ports": [{ "name": "dns", "port": 53, "protocol": "UDP" }] }),
        );
        let sl = slice(
            "dns-1",
            "dns",
            "IPv4",
            json!([{ "name": "dns", "port": 53, "protocol": "UDP" }]),
            json!([ready("198.18.2.1", "n")]),
        );
        let t = run(&[s], &[sl]);
        assert_eq!(
            describe(&t.model),
            ["default/dns:dns: 198.18.100.10:53/UDP vip => 198.18.2.1:53 active"]
        );
        assert!(
            t.model
                .services
                .values()
                .all(|s| s.protocol == Protocol::Udp)
        );
    }

    // --- healthCheckNodePort -------------------------------------------------

    /// `default/web` as a LoadBalancer with `externalTrafficPolicy: Local`
    /// and healthCheckNodePort 30500, plus `extra`.
    fn local_lb(extra: Value) -> KubeService {
        let mut spec = json!({
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 30500,
            "ports": [
                { "name": "http", "port": 80, "nodePort": 30080 },
                { "name": "admin", "port": 81, "nodePort": 30081 },
            ],
        });
        merge(&mut spec, extra);
        web(spec)
    }

    fn health_check_ports(t: &Translation) -> Vec<(String, u16, usize)> {
        t.health_check_node_ports
            .iter()
            .map(|h| {
                (
                    format!("{}/{}", h.namespace, h.name),
                    h.port,
                    h.local_endpoints,
                )
            })
            .collect()
    }

    #[test]
    fn health_check_node_ports_count_this_nodes_ready_endpoints() {
        let both_ports = json!([
            { "name": "http", "port": 8080, "protocol": "TCP" },
            { "name": "admin", "port": 8081, "protocol": "TCP" },
        ]);
        let web_slice_of = |name: &str, endpoints: Value| {
            slice(name, "web", "IPv4", both_ports.clone(), endpoints)
        };
        /// (what, the Service, its slices, the expected health check ports)
        type Case = (
            &'static str,
            KubeService,
            Vec<EndpointSlice>,
            Vec<(String, u16, usize)>,
        );
        let cases: Vec<Case> = vec![
            (
                "local ready endpoints count, remote ones do not",
                local_lb(json!({})),
                vec![web_slice_of(
                    "web-1",
                    json!([
                        ready("198.18.2.1", "node-a"),
                        ready("198.18.2.2", "node-a"),
                        ready("198.18.2.3", "node-b"),
                    ]),
                )],
                vec![("default/web".to_owned(), 30500, 2)],
            ),
            (
                "a pod in two slices counts once, whatever its ports",
                local_lb(json!({})),
                vec![
                    web_slice_of("web-1", json!([ready("198.18.2.1", "node-a")])),
                    web_slice_of("web-2", json!([ready("198.18.2.1", "node-a")])),
                ],
                vec![("default/web".to_owned(), 30500, 1)],
            ),
            (
                "terminating and not-ready local endpoints do not count",
                local_lb(json!({})),
                vec![web_slice_of(
                    "web-1",
                    json!([
                        terminating("198.18.2.1", "node-a"),
                        ep(
                            "198.18.2.2",
                            "node-a",
                            json!(false),
                            json!(false),
                            json!(false)
                        ),
                        ready("198.18.2.3", "node-b"),
                    ]),
                )],
                vec![("default/web".to_owned(), 30500, 0)],
            ),
            (
                "publishNotReadyAddresses makes a not-ready local endpoint count",
                local_lb(json!({ "publishNotReadyAddresses": true })),
                vec![web_slice_of(
                    "web-1",
                    json!([ep(
                        "198.18.2.1",
                        "node-a",
                        json!(false),
                        json!(false),
                        json!(false)
                    )]),
                )],
                vec![("default/web".to_owned(), 30500, 1)],
            ),
            (
                "no slices at all: zero",
                local_lb(json!({})),
                vec![],
                vec![("default/web".to_owned(), 30500, 0)],
            ),
            (
                "a Local LoadBalancer without healthCheckNodePort has none",
                local_lb(json!({ "healthCheckNodePort": null })),
                vec![web_slice_of(
                    "web-1",
                    json!([ready("198.18.2.1", "node-a")]),
                )],
                vec![],
            ),
            (
                "with Cluster policy the API server rejects the port: the Service is skipped",
                local_lb(json!({ "externalTrafficPolicy": "Cluster" })),
                vec![],
                vec![],
            ),
            (
                "a Service left to another proxy answers no health check here",
                {
                    let mut s = local_lb(json!({}));
                    s.metadata.labels = Some(BTreeMap::from([(
                        LABEL_SERVICE_PROXY_NAME.to_owned(),
                        "other".to_owned(),
                    )]));
                    s
                },
                vec![],
                vec![],
            ),
        ];
        for (what, service, slices, expected) in cases {
            let t = run(&[service], &slices);
            assert_eq!(health_check_ports(&t), expected, "{what}");
        }
    }

    #[test]
    fn health_check_node_ports_are_in_service_order_and_need_a_node_name() {
        let mut other = local_lb(json!({ "healthCheckNodePort": 30501 }));
        other.metadata.namespace = Some("alpha".to_owned());
        let sl = web_slice(json!([ready("198.18.2.1", "node-a")]));
        let t = run(&[local_lb(json!({})), other], std::slice::from_ref(&sl));
        assert_eq!(
            health_check_ports(&t),
            [
                ("alpha/web".to_owned(), 30501, 0),
                ("default/web".to_owned(), 30500, 1)
            ]
        );
        let nameless = translate(
            &[local_lb(json!({}))],
            &[sl],
            &NodeInfo::default(),
            &TranslateOptions::default(),
        );
        assert_eq!(
            health_check_ports(&nameless),
            [("default/web".to_owned(), 30500, 0)]
        );
    }

    // --- Order independence -------------------------------------------------

    fn arb_endpoint() -> impl Strategy<Value = Value> {
        (
            0u8..6,
            prop_oneof![Just("node-a"), Just("node-b")],
            prop_oneof![Just(json!(true)), Just(json!(false)), Just(json!(null))],
            prop_oneof![Just(json!(true)), Just(json!(false))],
            prop_oneof![Just(json!(true)), Just(json!(false)), Just(json!(null))],
        )
            .prop_map(|(host, node, ready, serving, terminating)| {
                ep(
                    &format!("198.18.2.{}", host + 1),
                    node,
                    ready,
                    serving,
                    terminating,
                )
            })
    }

    fn arb_service(index: usize) -> impl Strategy<Value = KubeService> {
        (
            prop_oneof![Just("ClusterIP"), Just("NodePort"), Just("LoadBalancer")],
            prop_oneof![Just("Cluster"), Just("Local")],
            prop_oneof![Just("Cluster"), Just("Local")],
            proptest::option::of(0u8..3),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                move |(ty, internal, external, external_ip, udp, two_ports)| {
                    let protocol = if udp { "UDP" } else { "TCP" };
                    let node_port =
                        |n: usize| (ty != "ClusterIP").then_some(json!(30000 + index * 2 + n));
                    let mut ports = vec![json!({ "name": "p0", "port": 80, "protocol": protocol,
                    "nodePort": node_port(0) })];
                    if two_ports {
                        ports.push(json!({ "name": "p1", "port": 81, "protocol": protocol,
                        "nodePort": node_port(1) }));
                    }
                    let mut spec = json!({
                        "type": ty,
                        "clusterIP": format!("198.18.100.{}", index + 1),
                        "ports": ports,
                        "internalTrafficPolicy": internal,
                    });
                    if let Some(ip) = external_ip {
                        merge(
                            &mut spec,
                            json!({ "externalIPs": [format!("198.18.201.{}", ip + 1)] }),
                        );
                    }
                    if ty != "ClusterIP" || external_ip.is_some() {
                        merge(&mut spec, json!({ "externalTrafficPolicy": external }));
                    }
                    svc(&format!("svc-{index}"), spec)
                },
            )
    }

    fn arb_slice(index: usize) -> impl Strategy<Value = EndpointSlice> {
        (
            0usize..4,
            any::<bool>(),
            proptest::collection::vec(arb_endpoint(), 0..5),
        )
            .prop_map(move |(service, udp, endpoints)| {
                let protocol = if udp { "UDP" } else { "TCP" };
                slice(
                    &format!("slice-{index}"),
                    &format!("svc-{service}"),
                    "IPv4",
                    json!([{ "name": "p0", "port": 8080, "protocol": protocol },
                           { "name": "p1", "port": 8081, "protocol": protocol }]),
                    Value::Array(endpoints),
                )
            })
    }

    fn arb_objects() -> impl Strategy<Value = (Vec<KubeService>, Vec<EndpointSlice>)> {
        let services: Vec<_> = (0..4).map(arb_service).collect();
        let slices: Vec<_> = (0..6).map(arb_slice).collect();
        (services, slices, 0usize..=4, 0usize..=6).prop_map(|(mut s, mut l, ns, nl)| {
            s.truncate(ns);
            l.truncate(nl);
            (s, l)
        })
    }

    proptest! {
        #[test]
        fn translate_is_deterministic_and_order_independent(
            (services, slices, service_perm, slice_perm) in arb_objects().prop_flat_map(|(s, l)| {
                let sp = Just((0..s.len()).collect::<Vec<_>>()).prop_shuffle();
                let lp = Just((0..l.len()).collect::<Vec<_>>()).prop_shuffle();
                (Just(s), Just(l), sp, lp)
            }),
        ) {
            let expected = run(&services, &slices);
            prop_assert_eq!(&run(&services, &slices), &expected);
            let services: Vec<_> = service_perm.iter().map(|&i| services[i].clone()).collect();
            let slices: Vec<_> = slice_perm.iter().map(|&i| slices[i].clone()).collect();
            let got = run(&services, &slices);
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn skip_reasons_have_metric_label_names() {
        let names: BTreeMap<String, SkipReason> = [
            SkipReason::ExternalName,
            SkipReason::Sctp,
            SkipReason::FrontendConflict,
        ]
        .into_iter()
        .map(|r| (r.to_string(), r))
        .collect();
        assert_eq!(
            names.keys().map(String::as_str).collect::<Vec<_>>(),
            ["external_name", "frontend_conflict", "sctp"]
        );
    }
}
