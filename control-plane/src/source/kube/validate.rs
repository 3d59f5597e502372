//! The API server's validation of the Service and EndpointSlice fields that
//! [`super::translate()`] reads, plus the address rules the native format
//! shares with it.
//!
//! Objects from a live API server already passed these checks; objects from a
//! file did not, and the file source reports every problem found here.
//! `translate` runs them too, so that an object no API server would accept is
//! skipped rather than half-translated.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::{
    api::{
        core::v1::{Service, ServicePort, ServiceSpec},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{NODE_PORT_RANGE, address};

/// One problem with one field of an object: `place` is the field's path in
/// the object as written in YAML (`spec.ports[0].port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub(crate) place: String,
    pub(crate) message: String,
}

impl FieldError {
    fn new(place: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            place: place.into(),
            message: message.into(),
        }
    }
}

/// The largest `sessionAffinityConfig.clientIP.timeoutSeconds` the API server
/// accepts (one day); also the native format's limit.
pub(crate) const MAX_AFFINITY_TIMEOUT_SECS: u64 = 86_400;

/// Where an object comes from, which decides a few address and port rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A live API server, which accepted it: on top of the API server's
    /// rules, only what no flow can be sent to is refused, as clusters do
    /// number pods and Services in ranges a file should not name (GKE uses
    /// 240.0.0.0/4, "Class E"). Node ports may be any port: the API server
    /// allocates them from the cluster's `--service-node-port-range`, which
    /// xlb cannot know.
    Cluster,
    /// The configuration file, which also refuses the ranges of
    /// [`check_reserved`], and node ports outside [`NODE_PORT_RANGE`].
    File,
}

/// Parses an address and applies [`check_unicast`]. From the cluster, IPv4
/// numbers with leading zeros are read as decimal, as kube-proxy reads
/// them (`address`); a file must write them without, as the API server
/// now asks of new objects (some parsers read such zeros as octal).
pub(crate) fn parse_ip(text: &str, origin: Origin) -> Result<IpAddr, String> {
    let ip = parse_address(text, origin).ok_or_else(|| not_an_address(text))?;
    check_unicast(ip, origin)?;
    Ok(ip)
}

/// `text` as an address by `origin`'s syntax (see [`parse_ip`]).
fn parse_address(text: &str, origin: Origin) -> Option<IpAddr> {
    match origin {
        Origin::Cluster => address::parse(text),
        Origin::File => text.parse().ok(),
    }
}

/// Why `text` is not an address.
fn not_an_address(text: &str) -> String {
    match address::parse(text) {
        Some(ip) if address::is_legacy(text) => format!(
            "{} is not an IP address: write {ip}, without leading zeros (which some parsers \
             read as octal)",
            quoted(text)
        ),
        _ => format!("{} is not an IP address", quoted(text)),
    }
}

/// The API server's rules for an endpoint or external IP (`ValidateEndpointIP`,
/// `ValidateNonSpecialIP`), plus multicast and broadcast, which cannot be a
/// flow's destination either. IPv4-mapped IPv6 addresses are refused because
/// the datapath uses that form for IPv4 itself: the two would be one address.
/// From a file, also [`check_reserved`].
pub(crate) fn check_unicast(ip: IpAddr, origin: Origin) -> Result<(), String> {
    let problem = match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() {
                Some("is unspecified")
            } else if v4 == Ipv4Addr::BROADCAST {
                Some("is the broadcast address")
            } else if v4.is_multicast() {
                Some("is a multicast address (224.0.0.0/4)")
            } else if v4.is_loopback() {
                Some("is a loopback address (127.0.0.0/8)")
            } else if v4.is_link_local() {
                Some("is a link-local address (169.254.0.0/16)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("is unspecified")
            } else if v6.is_multicast() {
                Some("is a multicast address (ff00::/8)")
            } else if v6.is_loopback() {
                Some("is the loopback address")
            } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
                Some("is a link-local address (fe80::/10)")
            } else if v6.to_ipv4_mapped().is_some() {
                return Err(format!(
                    "{ip} is an IPv4-mapped IPv6 address: write the IPv4 address itself"
                ));
            } else {
                None
            }
        }
    };
    match problem {
        Some(what) => Err(format!("{ip} {what}: give a unicast address")),
        None if origin == Origin::File => check_reserved(ip),
        None => Ok(()),
    }
}

/// Ranges that RFC 6890 marks as no destination, which a file should not
/// name: 0.0.0.0/8 ("this network", a martian destination to Linux),
/// 240.0.0.0/4 (reserved, RFC 1112) and the IPv4-compatible IPv6 addresses
/// (::/96, deprecated by RFC 4291). Unspecified and loopback addresses are
/// refused before this.
fn check_reserved(ip: IpAddr) -> Result<(), String> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Err(format!(
            "{ip} is in 0.0.0.0/8, \"this network\", which is no destination (RFC 6890): give \
             a unicast address"
        )),
        IpAddr::V4(v4) if v4.octets()[0] >= 240 => Err(format!(
            "{ip} is in 240.0.0.0/4, reserved (RFC 6890): give a unicast address"
        )),
        IpAddr::V6(v6) if v6.segments()[..6] == [0; 6] => {
            let v4 = v6.to_ipv4().unwrap_or(Ipv4Addr::UNSPECIFIED);
            Err(format!(
                "{ip} is an IPv4-compatible IPv6 address (::{v4}, in ::/96, deprecated by RFC \
                 4291): write {v4} itself"
            ))
        }
        _ => Ok(()),
    }
}

/// `text` from an object or file, quoted for a message: in backticks, with
/// control characters, backslashes and backticks escaped (`\n`, `\\`), so
/// that a value can neither split a message's line nor end its quote.
pub(crate) fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('`');
    for c in text.chars() {
        match c {
            '`' => out.push_str("\\`"),
            // Quotes need no escape between backticks.
            '"' | '\'' => out.push(c),
            c => out.extend(c.escape_debug()),
        }
    }
    out.push('`');
    out
}

/// `"IPv4"` or `"IPv6"`, as Kubernetes spells the families.
pub(crate) fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// A port number in 1-65535.
pub(crate) fn check_port(port: i64) -> Result<u16, String> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port} is out of range 1-65535"))
}

/// A NodePort (or healthCheckNodePort) from `origin`: any port from a
/// cluster, one in [`NODE_PORT_RANGE`] from a file.
fn check_node_port_of(port: i64, origin: Origin) -> Result<u16, String> {
    match origin {
        Origin::Cluster => check_port(port),
        Origin::File => check_node_port(port),
    }
}

/// A NodePort: in [`NODE_PORT_RANGE`].
pub(crate) fn check_node_port(port: i64) -> Result<u16, String> {
    u16::try_from(port)
        .ok()
        .filter(|p| NODE_PORT_RANGE.contains(p))
        .ok_or_else(|| {
            format!(
                "{port} is outside the NodePort range {}-{}",
                NODE_PORT_RANGE.start(),
                NODE_PORT_RANGE.end()
            )
        })
}

/// RFC 1123 label: lowercase alphanumerics and '-', alphanumeric at both
/// ends, at most 63 characters (namespaces, port names).
pub(crate) fn check_dns1123_label(name: &str) -> Result<(), String> {
    check_name(name, 63, true, false, "a DNS label (RFC 1123)")
}

/// RFC 1035 label: like RFC 1123 but starting with a letter (Service names).
pub(crate) fn check_dns1035_label(name: &str) -> Result<(), String> {
    check_name(name, 63, false, false, "a DNS label (RFC 1035)")
}

/// RFC 1123 subdomain: labels joined by '.', at most 253 characters
/// (EndpointSlice and node names).
pub(crate) fn check_dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!(
            "{} is longer than 253 characters: must be a DNS subdomain (RFC 1123)",
            quoted(name)
        ));
    }
    if name
        .split('.')
        .all(|label| check_dns1123_label(label).is_ok())
    {
        Ok(())
    } else {
        Err(format!(
            "{} is not a DNS subdomain (RFC 1123): lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit",
            quoted(name)
        ))
    }
}

/// The native format's service names: lowercase alphanumerics, '-' and '.',
/// alphanumeric at both ends, at most 63 characters. No '/' or ':', so they
/// can never equal a Kubernetes service name (`namespace/name:port`).
pub(crate) fn check_native_name(name: &str) -> Result<(), String> {
    check_name(name, 63, true, true, "a name")
}

/// A non-empty Kubernetes label value (the node's zone): letters, digits,
/// '-', '_' and '.', a letter or digit at both ends, at most 63 characters.
pub(crate) fn check_label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err(format!(
            "{} is {} characters long; a label value has at most 63",
            quoted(value),
            value.len()
        ));
    }
    let end_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let inner_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if end_ok(value.chars().next())
        && end_ok(value.chars().next_back())
        && value.chars().all(inner_ok)
    {
        return Ok(());
    }
    Err(format!(
        "{} is not a label value: letters, digits, '-', '_' and '.', starting and ending \
         with a letter or digit",
        quoted(value)
    ))
}

fn check_name(
    name: &str,
    max: usize,
    digit_first: bool,
    allow_dot: bool,
    what: &str,
) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("required: {what}"));
    }
    if name.len() > max {
        return Err(format!(
            "{} is {} characters long; {what} has at most {max}",
            quoted(name),
            name.len()
        ));
    }
    let inner_ok = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (allow_dot && c == '.')
    };
    let end_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || (digit_first && c.is_ascii_digit()));
    let last = name.chars().next_back().is_some_and(end_ok);
    if first && last && name.chars().all(inner_ok) {
        return Ok(());
    }
    let start = if digit_first {
        "a lowercase letter or digit"
    } else {
        "a lowercase letter"
    };
    let dot = if allow_dot { ", '.'" } else { "" };
    Err(format!(
        "{} is not {what}: lowercase letters, digits{dot} and '-', starting with {start} \
         and ending with a letter or digit",
        quoted(name)
    ))
}

/// A Service's `metadata.namespace/metadata.name`, with `default` for a
/// missing namespace (as `kubectl apply` assumes).
pub(crate) fn object_name(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("")
    )
}

fn check_meta(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    check_name: fn(&str) -> Result<(), String>,
    errors: &mut Vec<FieldError>,
) {
    match meta.name.as_deref() {
        None | Some("") => errors.push(FieldError::new("metadata.name", "required")),
        Some(name) => {
            if let Err(e) = check_name(name) {
                errors.push(FieldError::new("metadata.name", e));
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref()
        && let Err(e) = check_dns1123_label(ns)
    {
        errors.push(FieldError::new("metadata.namespace", e));
    }
}

/// The Service types xlb knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

impl ServiceType {
    /// `spec.type`, `ClusterIP` when unset (the API server's default).
    pub(crate) fn of(spec: &ServiceSpec) -> Result<Self, String> {
        match spec.type_.as_deref() {
            None | Some("") | Some("ClusterIP") => Ok(Self::ClusterIp),
            Some("NodePort") => Ok(Self::NodePort),
            Some("LoadBalancer") => Ok(Self::LoadBalancer),
            Some("ExternalName") => Ok(Self::ExternalName),
            Some(other) => Err(format!(
                "{} is not a service type: use ClusterIP, NodePort, LoadBalancer or \
                 ExternalName",
                quoted(other)
            )),
        }
    }

    /// Whether the Service has node ports.
    pub(crate) const fn has_node_ports(self) -> bool {
        matches!(self, Self::NodePort | Self::LoadBalancer)
    }
}

/// A Service port's protocol, `TCP` when unset (the API server's default).
pub(crate) fn port_protocol(protocol: Option<&str>) -> Result<&str, String> {
    match protocol {
        None | Some("") => Ok("TCP"),
        Some(p @ ("TCP" | "UDP" | "SCTP")) => Ok(p),
        Some(other) => Err(format!(
            "{} is not a protocol: use TCP, UDP or SCTP",
            quoted(other)
        )),
    }
}

/// `spec.clusterIPs` if set, else `spec.clusterIP`, each with its place.
/// Empty strings count as unset.
pub(crate) fn cluster_ips(spec: &ServiceSpec) -> Vec<(String, &str)> {
    match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip.as_str()))
            .collect(),
        _ => spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty())
            .map(|ip| vec![("spec.clusterIP".to_owned(), ip)])
            .unwrap_or_default(),
    }
}

/// Whether a Service is headless (`clusterIP: None`).
pub(crate) fn is_headless(spec: &ServiceSpec) -> bool {
    cluster_ips(spec)
        .first()
        .is_some_and(|(_, ip)| *ip == "None")
}

/// Every problem the API server would find in the fields of `service` that
/// `translate` reads (with the address rules of `origin`). Empty: the Service
/// is valid.
pub(crate) fn service(service: &Service, origin: Origin) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_meta(&service.metadata, check_dns1035_label, &mut errors);
    let Some(spec) = service.spec.as_ref() else {
        errors.push(FieldError::new("spec", "required"));
        return errors;
    };
    // An unknown type is reported, and the rest checked without it: only
    // the rules that depend on the type (which ports a NodePort needs,
    // where a headless Service or a traffic policy may be) are skipped, so
    // that a file's author sees every problem of the Service at once.
    let ty = match ServiceType::of(spec) {
        // Skipped by translate: nothing else of it is read.
        Ok(ServiceType::ExternalName) => return errors,
        Ok(ty) => Some(ty),
        Err(e) => {
            errors.push(FieldError::new("spec.type", e));
            None
        }
    };
    let headless = is_headless(spec);
    check_cluster_ips(spec, ty, headless, origin, &mut errors);
    check_ip_families(spec, headless, &mut errors);
    check_ports(spec, ty, headless, origin, &mut errors);

    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if let Err(e) = parse_ip(ip, origin) {
            errors.push(FieldError::new(format!("spec.externalIPs[{i}]"), e));
        }
    }
    check_affinity(spec, &mut errors);
    check_traffic_policies(spec, ty, origin, &mut errors);
    // A newer API server may take values this build does not know; from the
    // cluster, such a Service is served without topology hints (translate
    // reads only the values it knows), not skipped.
    if origin == Origin::File {
        check_traffic_distribution(spec, &mut errors);
    }

    if let Some(ranges) = spec.load_balancer_source_ranges.as_deref() {
        if !ranges.is_empty() && ty.is_some_and(|ty| ty != ServiceType::LoadBalancer) {
            errors.push(FieldError::new(
                "spec.loadBalancerSourceRanges",
                "may only be set when type is LoadBalancer",
            ));
        }
        for (i, range) in ranges.iter().enumerate() {
            if let Err(e) = parse_source_range(range, origin) {
                errors.push(FieldError::new(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    e,
                ));
            }
        }
    }

    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    for (i, entry) in ingress.iter().enumerate() {
        let place = format!("status.loadBalancer.ingress[{i}]");
        if let Some(ip) = entry.ip.as_deref()
            && let Err(e) = parse_ip(ip, origin)
        {
            errors.push(FieldError::new(format!("{place}.ip"), e));
        }
        match entry.ip_mode.as_deref() {
            None | Some("VIP" | "Proxy") => {}
            Some(other) => errors.push(FieldError::new(
                format!("{place}.ipMode"),
                format!("{} is not an ipMode: use VIP or Proxy", quoted(other)),
            )),
        }
        if entry.ip_mode.is_some() && entry.ip.is_none() {
            errors.push(FieldError::new(
                format!("{place}.ipMode"),
                "may only be set together with ip",
            ));
        }
    }
    errors
}

fn check_cluster_ips(
    spec: &ServiceSpec,
    ty: Option<ServiceType>,
    headless: bool,
    origin: Origin,
    errors: &mut Vec<FieldError>,
) {
    let ips = cluster_ips(spec);
    if let (Some(single), Some(list)) = (spec.cluster_ip.as_deref(), spec.cluster_ips.as_deref())
        && !single.is_empty()
        && list.first().is_some_and(|first| first != single)
    {
        errors.push(FieldError::new(
            "spec.clusterIPs[0]",
            format!("must equal spec.clusterIP ({})", quoted(single)),
        ));
    }
    if ips.is_empty() {
        errors.push(FieldError::new(
            "spec.clusterIP",
            "required: the Service's cluster IP (there is no allocator here), or None for a \
             headless Service",
        ));
        return;
    }
    if headless {
        if ips.len() > 1 {
            errors.push(FieldError::new(
                "spec.clusterIPs",
                "None must be the only entry of a headless Service",
            ));
        }
        if ty.is_some_and(|ty| ty != ServiceType::ClusterIp) {
            errors.push(FieldError::new(
                "spec.clusterIP",
                "None (headless) is only allowed for type ClusterIP",
            ));
        }
        return;
    }
    if ips.len() > 2 {
        errors.push(FieldError::new(
            "spec.clusterIPs",
            format!(
                "{} entries; at most 2 (one IPv4 and one IPv6 address)",
                ips.len()
            ),
        ));
    }
    let mut first_family = None;
    for (place, ip) in &ips {
        match parse_ip(ip, origin) {
            Err(e) => errors.push(FieldError::new(place.clone(), e)),
            Ok(ip) => match first_family {
                None => first_family = Some(ip.is_ipv4()),
                Some(v4) if v4 == ip.is_ipv4() => errors.push(FieldError::new(
                    place.clone(),
                    format!(
                        "{ip} is {} like spec.clusterIPs[0]: a dual-stack Service has one IPv4 \
                         and one IPv6 cluster IP",
                        family_name(ip)
                    ),
                )),
                Some(_) => {}
            },
        }
    }
}

/// `ipFamilyPolicy` and `ipFamilies`, as the API server's
/// `ValidateServiceClusterIPsRelatedFields` and its allocator check them:
/// each family once, in the order of the cluster IPs, and a policy that fits
/// how many there are.
fn check_ip_families(spec: &ServiceSpec, headless: bool, errors: &mut Vec<FieldError>) {
    let policy = spec.ip_family_policy.as_deref();
    match policy {
        None | Some("SingleStack" | "PreferDualStack" | "RequireDualStack") => {}
        Some(other) => errors.push(FieldError::new(
            "spec.ipFamilyPolicy",
            format!(
                "{} is not an IP family policy: use SingleStack, PreferDualStack or \
                 RequireDualStack",
                quoted(other)
            ),
        )),
    }
    let families: &[String] = spec.ip_families.as_deref().unwrap_or_default();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, family) in families.iter().enumerate() {
        let place = format!("spec.ipFamilies[{i}]");
        if !matches!(family.as_str(), "IPv4" | "IPv6") {
            errors.push(FieldError::new(
                place,
                format!("{} is not an IP family: use IPv4 or IPv6", quoted(family)),
            ));
        } else if let Some(first) = seen.get(family.as_str()) {
            errors.push(FieldError::new(
                place,
                format!(
                    "{family} is already spec.ipFamilies[{first}]: a Service has at most one of \
                     each family"
                ),
            ));
        } else {
            seen.insert(family, i);
        }
    }
    if headless {
        return;
    }
    let ips = cluster_ips(spec);
    if policy == Some("SingleStack") {
        for (count, what) in [(ips.len(), "cluster IPs"), (families.len(), "ipFamilies")] {
            if count > 1 {
                errors.push(FieldError::new(
                    "spec.ipFamilyPolicy",
                    format!("SingleStack with two {what}: use PreferDualStack or RequireDualStack"),
                ));
            }
        }
    }
    if policy == Some("RequireDualStack") && ips.len() == 1 {
        errors.push(FieldError::new(
            "spec.clusterIPs",
            "RequireDualStack needs a cluster IP of each family (there is no allocator here)",
        ));
    }
    for (i, ((place, ip), family)) in ips.iter().zip(families).enumerate() {
        // Addresses that do not parse are reported by check_cluster_ips.
        let Some(ip) = address::parse(ip) else {
            continue;
        };
        if matches!(family.as_str(), "IPv4" | "IPv6") && family_name(ip) != family {
            errors.push(FieldError::new(
                place.clone(),
                format!(
                    "{ip} is {} but spec.ipFamilies[{i}] is {family}: the families are those of \
                     the cluster IPs, in order",
                    family_name(ip)
                ),
            ));
        }
    }
}

/// `ty`: `None` for a type that is not known, whose node port rules are
/// not checked.
fn check_ports(
    spec: &ServiceSpec,
    ty: Option<ServiceType>,
    headless: bool,
    origin: Origin,
    errors: &mut Vec<FieldError>,
) {
    let ports: &[ServicePort] = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && !headless {
        errors.push(FieldError::new("spec.ports", "required: at least one port"));
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut numbers: BTreeMap<(i32, &str), usize> = BTreeMap::new();
    let mut node_ports: BTreeMap<(i32, &str), usize> = BTreeMap::new();
    let allocates_node_ports = match ty {
        Some(ServiceType::NodePort) => true,
        Some(ServiceType::LoadBalancer) => spec.allocate_load_balancer_node_ports != Some(false),
        Some(ServiceType::ClusterIp | ServiceType::ExternalName) | None => false,
    };
    for (i, port) in ports.iter().enumerate() {
        let place = format!("spec.ports[{i}]");
        let name = port.name.as_deref().unwrap_or("");
        if name.is_empty() {
            if ports.len() > 1 {
                errors.push(FieldError::new(
                    format!("{place}.name"),
                    "required when a Service has more than one port",
                ));
            }
        } else if let Err(e) = check_dns1123_label(name) {
            errors.push(FieldError::new(format!("{place}.name"), e));
        } else if let Some(first) = names.get(name) {
            errors.push(FieldError::new(
                format!("{place}.name"),
                format!(
                    "{} is already the name of spec.ports[{first}]",
                    quoted(name)
                ),
            ));
        } else {
            names.insert(name, i);
        }
        if let Err(e) = check_port(port.port.into()) {
            errors.push(FieldError::new(format!("{place}.port"), e));
        }
        if let Some(Err(e)) = port.target_port.as_ref().map(check_target_port) {
            errors.push(FieldError::new(format!("{place}.targetPort"), e));
        }
        let protocol = match port_protocol(port.protocol.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                errors.push(FieldError::new(format!("{place}.protocol"), e));
                continue;
            }
        };
        if let Some(first) = numbers.get(&(port.port, protocol)) {
            errors.push(FieldError::new(
                place.clone(),
                format!(
                    "port {}/{protocol} is already spec.ports[{first}]",
                    port.port
                ),
            ));
        } else {
            numbers.insert((port.port, protocol), i);
        }
        match port.node_port.filter(|n| *n != 0) {
            None if allocates_node_ports => errors.push(FieldError::new(
                format!("{place}.nodePort"),
                format!(
                    "required for a {} Service (there is no allocator here): give a port in {}-{}",
                    if ty == Some(ServiceType::NodePort) {
                        "NodePort"
                    } else {
                        "LoadBalancer"
                    },
                    NODE_PORT_RANGE.start(),
                    NODE_PORT_RANGE.end()
                ),
            )),
            None => {}
            Some(_) if ty.is_some_and(|ty| !ty.has_node_ports()) => errors.push(FieldError::new(
                format!("{place}.nodePort"),
                "may only be set when type is NodePort or LoadBalancer",
            )),
            Some(node_port) => {
                if let Err(e) = check_node_port_of(node_port.into(), origin) {
                    errors.push(FieldError::new(format!("{place}.nodePort"), e));
                } else if let Some(first) = node_ports.get(&(node_port, protocol)) {
                    errors.push(FieldError::new(
                        format!("{place}.nodePort"),
                        format!(
                            "{node_port}/{protocol} is already the nodePort of spec.ports[{first}]"
                        ),
                    ));
                } else {
                    node_ports.insert((node_port, protocol), i);
                }
            }
        }
    }
}

/// A port number or an IANA service name (`ValidatePortNumOrName`). The API
/// server defaults 0 and "" to the Service's `port` rather than refusing
/// them.
fn check_target_port(target: &IntOrString) -> Result<(), String> {
    match target {
        IntOrString::Int(0) => Ok(()),
        IntOrString::Int(number) => check_port(i64::from(*number)).map(drop),
        IntOrString::String(name) if name.is_empty() => Ok(()),
        IntOrString::String(name) => check_port_name(name),
    }
}

/// IANA_SVC_NAME (RFC 6335), the API server's `IsValidPortName`: at most 15
/// lowercase letters, digits and '-', at least one letter, no '-' at either
/// end or twice in a row.
fn check_port_name(name: &str) -> Result<(), String> {
    let valid = name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.contains("--")
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        return Ok(());
    }
    Err(format!(
        "{} is not a port name (IANA_SVC_NAME): at most 15 lowercase letters, digits and \
         '-', at least one letter, no '-' at either end or twice in a row",
        quoted(name)
    ))
}

fn check_affinity(spec: &ServiceSpec, errors: &mut Vec<FieldError>) {
    let client_ip = match spec.session_affinity.as_deref() {
        None | Some("" | "None") => false,
        Some("ClientIP") => true,
        Some(other) => {
            errors.push(FieldError::new(
                "spec.sessionAffinity",
                format!(
                    "{} is not a session affinity: use None or ClientIP",
                    quoted(other)
                ),
            ));
            return;
        }
    };
    let config = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref());
    match (client_ip, config) {
        (false, Some(_)) => errors.push(FieldError::new(
            "spec.sessionAffinityConfig",
            "must not be set when sessionAffinity is None",
        )),
        (true, Some(config)) => {
            if let Some(secs) = config.timeout_seconds
                && !(1..=MAX_AFFINITY_TIMEOUT_SECS).contains(&u64::try_from(secs).unwrap_or(0))
            {
                errors.push(FieldError::new(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    format!("{secs} is out of range 1-{MAX_AFFINITY_TIMEOUT_SECS}"),
                ));
            }
        }
        (_, None) => {}
    }
}

/// kube-proxy's `ExternallyAccessible`: the Service has frontends outside
/// the cluster network, to which `externalTrafficPolicy` applies.
pub(crate) fn externally_accessible(spec: &ServiceSpec, ty: ServiceType) -> bool {
    ty.has_node_ports()
        || (ty == ServiceType::ClusterIp
            && spec
                .external_ips
                .as_ref()
                .is_some_and(|ips| !ips.is_empty()))
}

/// `ty`: `None` for a type that is not known, where the policies may be set
/// is not checked.
fn check_traffic_policies(
    spec: &ServiceSpec,
    ty: Option<ServiceType>,
    origin: Origin,
    errors: &mut Vec<FieldError>,
) {
    for (place, value) in [
        ("spec.externalTrafficPolicy", &spec.external_traffic_policy),
        ("spec.internalTrafficPolicy", &spec.internal_traffic_policy),
    ] {
        match value.as_deref() {
            None | Some("" | "Cluster" | "Local") => {}
            Some(other) => errors.push(FieldError::new(
                place,
                format!(
                    "{} is not a traffic policy: use Cluster or Local",
                    quoted(other)
                ),
            )),
        }
    }
    if spec
        .external_traffic_policy
        .as_deref()
        .is_some_and(|p| !p.is_empty())
        && ty.is_some_and(|ty| !externally_accessible(spec, ty))
    {
        errors.push(FieldError::new(
            "spec.externalTrafficPolicy",
            "may only be set for a NodePort or LoadBalancer Service or one with externalIPs",
        ));
    }
    if let Some(port) = spec.health_check_node_port {
        // The API server's NeedsHealthCheck: only a LoadBalancer's external
        // balancer probes nodes for `Local` endpoints.
        if ty.is_some_and(|ty| ty != ServiceType::LoadBalancer)
            || spec.external_traffic_policy.as_deref() != Some("Local")
        {
            errors.push(FieldError::new(
                "spec.healthCheckNodePort",
                "may only be set when type is LoadBalancer and externalTrafficPolicy is Local",
            ));
        }
        check_health_check_node_port(spec, port, origin, errors);
    }
}

/// The API server allocates a `healthCheckNodePort` from the NodePort range,
/// like the Service's nodePorts, and each port once: one equal to a nodePort
/// of the Service (of either protocol) is refused.
fn check_health_check_node_port(
    spec: &ServiceSpec,
    port: i32,
    origin: Origin,
    errors: &mut Vec<FieldError>,
) {
    const PLACE: &str = "spec.healthCheckNodePort";
    if let Err(e) = check_node_port_of(port.into(), origin) {
        errors.push(FieldError::new(PLACE, e));
        return;
    }
    if let Some(i) = spec
        .ports
        .iter()
        .flatten()
        .position(|p| p.node_port == Some(port))
    {
        errors.push(FieldError::new(
            PLACE,
            format!(
                "{port} is already the nodePort of spec.ports[{i}]: each NodePort is allocated once"
            ),
        ));
    }
}

/// `trafficDistribution`: the values [`super::translate()`] reads. The API
/// server accepts `PreferClose`, and `PreferSameZone` (its newer name) and
/// `PreferSameNode` behind the PreferSameTrafficDistribution feature gate
/// (KEP-3015).
fn check_traffic_distribution(spec: &ServiceSpec, errors: &mut Vec<FieldError>) {
    match spec.traffic_distribution.as_deref() {
        None | Some("PreferClose" | "PreferSameZone" | "PreferSameNode") => {}
        Some(other) => errors.push(FieldError::new(
            "spec.trafficDistribution",
            format!(
                "{} is not a traffic distribution: use PreferClose, PreferSameZone or \
                 PreferSameNode",
                quoted(other)
            ),
        )),
    }
}

/// A `loadBalancerSourceRanges` entry: a CIDR, which the API server
/// accepts with spaces around it (a leftover of the annotation it replaced,
/// `service.beta.kubernetes.io/load-balancer-source-ranges`) and kube-proxy
/// reads trimmed.
pub(crate) fn parse_source_range(text: &str, origin: Origin) -> Result<(IpAddr, u8), String> {
    parse_cidr(text.trim(), origin)
}

/// `address/prefix`: the network, host bits cleared (`198.18.0.1/24` is
/// `198.18.0.0/24`, as kube-proxy reads it: one network, one datapath
/// entry), or why `text` is not one. The address by `origin`'s syntax
/// ([`parse_ip`]).
pub(crate) fn parse_cidr(text: &str, origin: Origin) -> Result<(IpAddr, u8), String> {
    let wrong = || {
        format!(
            "{} is not a CIDR: write address/prefix, like 198.18.0.0/15",
            quoted(text)
        )
    };
    let (addr, prefix) = text.split_once('/').ok_or_else(wrong)?;
    let addr = parse_address(addr, origin).ok_or_else(wrong)?;
    let prefix: u8 = prefix.parse().map_err(|_| wrong())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!(
            "{}: prefix length {prefix} exceeds {max}",
            quoted(text)
        ));
    }
    let network = match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    Ok((network, prefix))
}

/// The most endpoints and ports an EndpointSlice may have.
const MAX_SLICE_ENDPOINTS: usize = 1000;
const MAX_SLICE_PORTS: usize = 100;
const MAX_ENDPOINT_ADDRESSES: usize = 100;

/// Every problem the API server would find in the fields of `slice` that
/// `translate` reads (with the address rules of `origin`). Empty: the
/// EndpointSlice is valid.
pub(crate) fn endpoint_slice(slice: &EndpointSlice, origin: Origin) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_meta(&slice.metadata, check_dns1123_subdomain, &mut errors);
    // `None` for an address type that is not known: the addresses are
    // still checked, all but their family, like the rest of the slice.
    let v4 = match slice.address_type.as_str() {
        "IPv4" => Some(true),
        "IPv6" => Some(false),
        // Names, not addresses: translate ignores these slices.
        "FQDN" => return errors,
        "" => {
            errors.push(FieldError::new(
                "addressType",
                "required: IPv4, IPv6 or FQDN",
            ));
            None
        }
        other => {
            errors.push(FieldError::new(
                "addressType",
                format!(
                    "{} is not an address type: use IPv4, IPv6 or FQDN",
                    quoted(other)
                ),
            ));
            None
        }
    };
    if slice.endpoints.len() > MAX_SLICE_ENDPOINTS {
        errors.push(FieldError::new(
            "endpoints",
            format!(
                "{} endpoints; at most {MAX_SLICE_ENDPOINTS}",
                slice.endpoints.len()
            ),
        ));
    }
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        let place = format!("endpoints[{i}]");
        if endpoint.addresses.is_empty() {
            errors.push(FieldError::new(
                format!("{place}.addresses"),
                "required: at least one address",
            ));
        }
        if endpoint.addresses.len() > MAX_ENDPOINT_ADDRESSES {
            errors.push(FieldError::new(
                format!("{place}.addresses"),
                format!(
                    "{} addresses; at most {MAX_ENDPOINT_ADDRESSES}",
                    endpoint.addresses.len()
                ),
            ));
        }
        for (j, addr) in endpoint.addresses.iter().enumerate() {
            let at = format!("{place}.addresses[{j}]");
            match parse_ip(addr, origin) {
                Err(e) => errors.push(FieldError::new(at, e)),
                Ok(ip) if v4.is_some_and(|v4| ip.is_ipv4() != v4) => errors.push(FieldError::new(
                    at,
                    format!(
                        "{ip} is {} but addressType is {}",
                        family_name(ip),
                        slice.address_type
                    ),
                )),
                Ok(_) => {}
            }
        }
        if let Some(node) = endpoint.node_name.as_deref()
            && let Err(e) = check_dns1123_subdomain(node)
        {
            errors.push(FieldError::new(format!("{place}.nodeName"), e));
        }
    }
    let ports = slice.ports.as_deref().unwrap_or_default();
    if ports.len() > MAX_SLICE_PORTS {
        errors.push(FieldError::new(
            "ports",
            format!("{} ports; at most {MAX_SLICE_PORTS}", ports.len()),
        ));
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        let place = format!("ports[{i}]");
        let name = port.name.as_deref().unwrap_or("");
        if !name.is_empty()
            && let Err(e) = check_dns1123_label(name)
        {
            errors.push(FieldError::new(format!("{place}.name"), e));
        } else if let Some(first) = names.get(name) {
            errors.push(FieldError::new(
                format!("{place}.name"),
                format!("{} is already the name of ports[{first}]", quoted(name)),
            ));
        } else {
            names.insert(name, i);
        }
        if let Some(number) = port.port
            && let Err(e) = check_port(number.into())
        {
            errors.push(FieldError::new(format!("{place}.port"), e));
        }
        if let Err(e) = port_protocol(port.protocol.as_deref()) {
            errors.push(FieldError::new(format!("{place}.protocol"), e));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn problems_of_service(spec: Value) -> Vec<String> {
        let object: Service = serde_json::from_value(
            json!({ "metadata": { "name": "web", "namespace": "default" }, "spec": spec }),
        )
        .expect("a Service");
        service(&object, Origin::Cluster)
            .into_iter()
            .map(|e| format!("{}: {}", e.place, e.message))
            .collect()
    }

    fn with_port(extra: Value) -> Value {
        let mut spec = json!({ "clusterIP": "198.18.100.1", "ports": [{ "port": 80 }] });
        if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
            spec.extend(extra);
        }
        spec
    }

    #[test]
    fn a_valid_service_has_no_problems() {
        assert!(problems_of_service(with_port(json!({}))).is_empty());
        assert!(
            problems_of_service(json!({
                "type": "LoadBalancer",
                "clusterIPs": ["198.18.100.1", "2001:2::100"],
                "ports": [{ "name": "http", "port": 80, "nodePort": 30080 },
                          { "name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053 }],
                "externalIPs": ["198.18.201.1"],
                "externalTrafficPolicy": "Local",
                "internalTrafficPolicy": "Cluster",
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 86400 } },
                // The API server accepts spaces around a range.
                "loadBalancerSourceRanges": ["198.18.0.0/15", " 2001:2::/48 "],
                "ipFamilyPolicy": "RequireDualStack",
                "ipFamilies": ["IPv4", "IPv6"],
                "trafficDistribution": "PreferSameNode",
            }))
            .is_empty()
        );
        assert!(
            problems_of_service(with_port(json!({
                "ports": [{ "name": "http", "port": 80, "targetPort": "http-alt" },
                          { "name": "a", "port": 81, "targetPort": 65535 },
                          // The API server defaults these two to `port`.
                          { "name": "b", "port": 82, "targetPort": 0 },
                          { "name": "c", "port": 83, "targetPort": "" }],
                "ipFamilyPolicy": "PreferDualStack",
                // A second family the Service has no cluster IP of yet.
                "ipFamilies": ["IPv4", "IPv6"],
                "trafficDistribution": "PreferClose",
            })))
            .is_empty()
        );
    }

    #[test]
    fn dual_stack_target_port_and_traffic_distribution_rules() {
        let cases: Vec<(Value, &[&str])> = vec![
            (
                with_port(json!({ "ipFamilies": ["IPv6"] })),
                &[
                    "spec.clusterIP: 198.18.100.1 is IPv4 but spec.ipFamilies[0] is IPv6: the \
                     families are those of the cluster IPs, in order",
                ],
            ),
            (
                json!({ "clusterIPs": ["198.18.100.1", "2001:2::100"],
                        "ipFamilyPolicy": "PreferDualStack",
                        "ipFamilies": ["IPv6", "IPv4"], "ports": [{ "port": 80 }] }),
                &[
                    "spec.clusterIPs[0]: 198.18.100.1 is IPv4 but spec.ipFamilies[0] is IPv6: \
                     the families are those of the cluster IPs, in order",
                    "spec.clusterIPs[1]: 2001:2::100 is IPv6 but spec.ipFamilies[1] is IPv4: \
                     the families are those of the cluster IPs, in order",
                ],
            ),
            (
                with_port(json!({ "ipFamilies": ["IPv4", "IPv4", "IPv5"] })),
                &[
                    "spec.ipFamilies[1]: IPv4 is already spec.ipFamilies[0]: a Service has at \
                     most one of each family",
                    "spec.ipFamilies[2]: `IPv5` is not an IP family: use IPv4 or IPv6",
                ],
            ),
            (
                with_port(json!({ "ipFamilyPolicy": "Bogus" })),
                &[
                    "spec.ipFamilyPolicy: `Bogus` is not an IP family policy: use SingleStack, \
                     PreferDualStack or RequireDualStack",
                ],
            ),
            (
                json!({ "clusterIPs": ["198.18.100.1", "2001:2::100"],
                        "ipFamilyPolicy": "SingleStack", "ports": [{ "port": 80 }] }),
                &[
                    "spec.ipFamilyPolicy: SingleStack with two cluster IPs: use PreferDualStack \
                     or RequireDualStack",
                ],
            ),
            (
                with_port(json!({ "ipFamilyPolicy": "SingleStack",
                                  "ipFamilies": ["IPv4", "IPv6"] })),
                &[
                    "spec.ipFamilyPolicy: SingleStack with two ipFamilies: use PreferDualStack or \
                     RequireDualStack",
                ],
            ),
            (
                with_port(json!({ "ipFamilyPolicy": "RequireDualStack" })),
                &[
                    "spec.clusterIPs: RequireDualStack needs a cluster IP of each family (there \
                     is no allocator here)",
                ],
            ),
            (
                with_port(json!({ "ports": [
                    { "name": "a", "port": 80, "targetPort": 70000 },
                    { "name": "b", "port": 81, "targetPort": -1 },
                    { "name": "c", "port": 82, "targetPort": "HTTP" },
                    { "name": "d", "port": 83, "targetPort": "8080" },
                    { "name": "e", "port": 84, "targetPort": "a-very-long-port-name" },
                    { "name": "f", "port": 85, "targetPort": "web--alt" }] })),
                &[
                    "spec.ports[0].targetPort: 70000 is out of range 1-65535",
                    "spec.ports[1].targetPort: -1 is out of range 1-65535",
                    "spec.ports[2].targetPort: `HTTP` is not a port name (IANA_SVC_NAME): at most \
                     15 lowercase letters, digits and '-', at least one letter, no '-' at either \
                     end or twice in a row",
                    "spec.ports[3].targetPort: `8080` is not a port name (IANA_SVC_NAME): at most \
                     15 lowercase letters, digits and '-', at least one letter, no '-' at either \
                     end or twice in a row",
                    "spec.ports[4].targetPort: `a-very-long-port-name` is not a port name \
                     (IANA_SVC_NAME): at most 15 lowercase letters, digits and '-', at least one \
                     letter, no '-' at either end or twice in a row",
                    "spec.ports[5].targetPort: `web--alt` is not a port name (IANA_SVC_NAME): at \
                     most 15 lowercase letters, digits and '-', at least one letter, no '-' at \
                     either end or twice in a row",
                ],
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(problems_of_service(spec.clone()), expected, "spec: {spec}");
        }
        // An unknown traffic distribution: a problem in a file only, as a
        // newer API server may know more values than this build.
        let spec = with_port(json!({ "trafficDistribution": "PreferNearby" }));
        assert!(problems_of_service(spec.clone()).is_empty());
        let object: Service = serde_json::from_value(
            json!({ "metadata": { "name": "web", "namespace": "default" }, "spec": spec }),
        )
        .expect("a Service");
        let in_file: Vec<String> = service(&object, Origin::File)
            .into_iter()
            .map(|e| format!("{}: {}", e.place, e.message))
            .collect();
        assert_eq!(
            in_file,
            [
                "spec.trafficDistribution: `PreferNearby` is not a traffic distribution: use \
                 PreferClose, PreferSameZone or PreferSameNode"
            ]
        );
    }

    #[test]
    fn service_rules_name_their_field() {
        let cases: Vec<(Value, &[&str])> = vec![
            (
                // An unknown type hides none of the other problems.
                json!({ "type": "Foo" }),
                &[
                    "spec.type: `Foo` is not a service type: use ClusterIP, NodePort, LoadBalancer \
                 or ExternalName",
                    "spec.clusterIP: required: the Service's cluster IP (there is no allocator \
                 here), or None for a headless Service",
                    "spec.ports: required: at least one port",
                ],
            ),
            (
                json!({ "ports": [{ "port": 80 }] }),
                &[
                    "spec.clusterIP: required: the Service's cluster IP (there is no allocator \
                 here), or None for a headless Service",
                ],
            ),
            (
                with_port(json!({ "clusterIP": "198.18.100.300" })),
                &["spec.clusterIP: `198.18.100.300` is not an IP address"],
            ),
            (
                with_port(json!({ "clusterIPs": ["198.18.100.2"] })),
                &["spec.clusterIPs[0]: must equal spec.clusterIP (`198.18.100.1`)"],
            ),
            (
                with_port(json!({ "clusterIP": "198.18.100.1",
                "clusterIPs": ["198.18.100.1", "198.18.100.2"] })),
                &[
                    "spec.clusterIPs[1]: 198.18.100.2 is IPv4 like spec.clusterIPs[0]: a dual-stack \
                 Service has one IPv4 and one IPv6 cluster IP",
                ],
            ),
            (
                json!({ "clusterIP": "None", "type": "NodePort",
                "ports": [{ "port": 80, "nodePort": 30080 }] }),
                &["spec.clusterIP: None (headless) is only allowed for type ClusterIP"],
            ),
            (
                json!({ "clusterIP": "198.18.100.1" }),
                &["spec.ports: required: at least one port"],
            ),
            (
                with_port(json!({ "ports": [{ "port": 70000 }] })),
                &["spec.ports[0].port: 70000 is out of range 1-65535"],
            ),
            (
                with_port(json!({ "ports": [{ "port": 0 }] })),
                &["spec.ports[0].port: 0 is out of range 1-65535"],
            ),
            (
                with_port(json!({ "ports": [{ "name": "a", "port": 80 }, { "port": 81 }] })),
                &["spec.ports[1].name: required when a Service has more than one port"],
            ),
            (
                with_port(
                    json!({ "ports": [{ "name": "a", "port": 80 }, { "name": "a", "port": 81 }] }),
                ),
                &["spec.ports[1].name: `a` is already the name of spec.ports[0]"],
            ),
            (
                with_port(json!({ "ports": [{ "name": "Web_1", "port": 80 }] })),
                &[
                    "spec.ports[0].name: `Web_1` is not a DNS label (RFC 1123): lowercase letters, \
                 digits and '-', starting with a lowercase letter or digit and ending with a \
                 letter or digit",
                ],
            ),
            (
                with_port(
                    json!({ "ports": [{ "name": "a", "port": 80 }, { "name": "b", "port": 80 }] }),
                ),
                &["spec.ports[1]: port 80/TCP is already spec.ports[0]"],
            ),
            (
                with_port(json!({ "ports": [{ "port": 80, "protocol": "tcp" }] })),
                &["spec.ports[0].protocol: `tcp` is not a protocol: use TCP, UDP or SCTP"],
            ),
            (
                with_port(json!({ "ports": [{ "port": 80, "nodePort": 30080 }] })),
                &["spec.ports[0].nodePort: may only be set when type is NodePort or LoadBalancer"],
            ),
            (
                with_port(json!({ "type": "NodePort", "ports": [{ "port": 80 }] })),
                &[
                    "spec.ports[0].nodePort: required for a NodePort Service (there is no allocator \
                 here): give a port in 30000-32767",
                ],
            ),
            (
                with_port(
                    json!({ "type": "NodePort", "ports": [{ "port": 80, "nodePort": 70000 }] }),
                ),
                &["spec.ports[0].nodePort: 70000 is out of range 1-65535"],
            ),
            (
                with_port(json!({ "type": "NodePort", "ports": [
                { "name": "a", "port": 80, "nodePort": 30080 },
                { "name": "b", "port": 81, "nodePort": 30080 }] })),
                &["spec.ports[1].nodePort: 30080/TCP is already the nodePort of spec.ports[0]"],
            ),
            (
                with_port(json!({ "externalIPs": ["0.0.0.0", "198.18.201.1", "127.0.0.1"] })),
                &[
                    "spec.externalIPs[0]: 0.0.0.0 is unspecified: give a unicast address",
                    "spec.externalIPs[2]: 127.0.0.1 is a loopback address (127.0.0.0/8): give a \
                 unicast address",
                ],
            ),
            (
                with_port(json!({ "sessionAffinity": "Sticky" })),
                &["spec.sessionAffinity: `Sticky` is not a session affinity: use None or ClientIP"],
            ),
            (
                with_port(json!({ "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 86401 } } })),
                &[
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds: 86401 is out of range \
                 1-86400",
                ],
            ),
            (
                with_port(json!({ "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 0 } } })),
                &["spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of range 1-86400"],
            ),
            (
                with_port(json!({
                "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 60 } } })),
                &["spec.sessionAffinityConfig: must not be set when sessionAffinity is None"],
            ),
            (
                with_port(json!({ "externalTrafficPolicy": "Local" })),
                &[
                    "spec.externalTrafficPolicy: may only be set for a NodePort or LoadBalancer \
                 Service or one with externalIPs",
                ],
            ),
            (
                with_port(json!({ "healthCheckNodePort": 30500 })),
                &[
                    "spec.healthCheckNodePort: may only be set when type is LoadBalancer and \
                 externalTrafficPolicy is Local",
                ],
            ),
            (
                with_port(
                    json!({ "type": "LoadBalancer", "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 70000, "ports": [{ "port": 80, "nodePort": 30080 }] }),
                ),
                &["spec.healthCheckNodePort: 70000 is out of range 1-65535"],
            ),
            (
                with_port(
                    json!({ "type": "LoadBalancer", "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 30081, "ports": [
                { "name": "a", "port": 80, "nodePort": 30080 },
                { "name": "b", "port": 53, "protocol": "UDP", "nodePort": 30081 }] }),
                ),
                &[
                    "spec.healthCheckNodePort: 30081 is already the nodePort of spec.ports[1]: \
                 each NodePort is allocated once",
                ],
            ),
            (
                with_port(json!({ "internalTrafficPolicy": "Nearest" })),
                &[
                    "spec.internalTrafficPolicy: `Nearest` is not a traffic policy: use Cluster or \
                 Local",
                ],
            ),
            (
                with_port(json!({ "loadBalancerSourceRanges": ["198.18.0.0/33"] })),
                &[
                    "spec.loadBalancerSourceRanges: may only be set when type is LoadBalancer",
                    "spec.loadBalancerSourceRanges[0]: `198.18.0.0/33`: prefix length 33 exceeds 32",
                ],
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(problems_of_service(spec.clone()), expected, "spec: {spec}");
        }
    }

    #[test]
    fn an_unknown_type_hides_no_other_problem_and_invents_none() {
        // Every rule that does not depend on the type still applies.
        assert_eq!(
            problems_of_service(json!({
                "type": "Foo",
                "clusterIP": "198.18.100.300",
                "sessionAffinity": "Sticky",
                "ports": [{ "port": 70000, "protocol": "XYZ" }],
            })),
            [
                "spec.type: `Foo` is not a service type: use ClusterIP, NodePort, LoadBalancer or \
                 ExternalName",
                "spec.clusterIP: `198.18.100.300` is not an IP address",
                "spec.ports[0].port: 70000 is out of range 1-65535",
                "spec.ports[0].protocol: `XYZ` is not a protocol: use TCP, UDP or SCTP",
                "spec.sessionAffinity: `Sticky` is not a session affinity: use None or ClientIP",
            ]
        );
        // Those that depend on it are not guessed at: no "nodePort required",
        // "may only be set when type is ...", for a type that may well be
        // a misspelt NodePort or LoadBalancer. A value is still checked.
        assert_eq!(
            problems_of_service(with_port(json!({
                "type": "NodePrt",
                "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 30090,
                "loadBalancerSourceRanges": ["198.18.0.0/15"],
                "ports": [{ "port": 80, "nodePort": 70000 }],
            }))),
            [
                "spec.type: `NodePrt` is not a service type: use ClusterIP, NodePort, \
                 LoadBalancer or ExternalName",
                "spec.ports[0].nodePort: 70000 is out of range 1-65535",
            ]
        );
    }

    #[test]
    fn node_ports_outside_the_default_range_are_refused_in_a_file_only() {
        // A cluster allocates node ports from its own
        // --service-node-port-range, which may be wider than the default.
        let object: Service = serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "default" },
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "198.18.100.1",
                "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 8080,
                "ports": [{ "port": 80, "nodePort": 40000 }],
            },
        }))
        .expect("a Service");
        assert!(service(&object, Origin::Cluster).is_empty());
        let in_file: Vec<String> = service(&object, Origin::File)
            .into_iter()
            .map(|e| format!("{}: {}", e.place, e.message))
            .collect();
        assert_eq!(
            in_file,
            [
                "spec.ports[0].nodePort: 40000 is outside the NodePort range 30000-32767",
                "spec.healthCheckNodePort: 8080 is outside the NodePort range 30000-32767",
            ]
        );
    }

    #[test]
    fn service_metadata_and_status_rules() {
        let service: Service = serde_json::from_value(json!({
            "metadata": { "name": "Web", "namespace": "Team_A" },
            "spec": { "clusterIP": "198.18.100.1", "ports": [{ "port": 80 }],
                      "type": "LoadBalancer", "allocateLoadBalancerNodePorts": false },
            "status": { "loadBalancer": { "ingress": [
                { "ip": "224.0.0.1" }, { "ip": "198.18.200.1", "ipMode": "Direct" },
                { "hostname": "lb.example", "ipMode": "VIP" },
            ]}},
        }))
        .unwrap();
        let problems: Vec<String> = super::service(&service, Origin::Cluster)
            .into_iter()
            .map(|e| format!("{}: {}", e.place, e.message))
            .collect();
        assert_eq!(
            problems,
            [
                "metadata.name: `Web` is not a DNS label (RFC 1035): lowercase letters, digits \
                 and '-', starting with a lowercase letter and ending with a letter or digit",
                "metadata.namespace: `Team_A` is not a DNS label (RFC 1123): lowercase letters, \
                 digits and '-', starting with a lowercase letter or digit and ending with a \
                 letter or digit",
                "status.loadBalancer.ingress[0].ip: 224.0.0.1 is a multicast address \
                 (224.0.0.0/4): give a unicast address",
                "status.loadBalancer.ingress[1].ipMode: `Direct` is not an ipMode: use VIP or \
                 Proxy",
                "status.loadBalancer.ingress[2].ipMode: may only be set together with ip",
            ]
        );
        let nameless: Service = serde_json::from_value(json!({})).unwrap();
        let problems: Vec<String> = super::service(&nameless, Origin::Cluster)
            .into_iter()
            .map(|e| format!("{}: {}", e.place, e.message))
            .collect();
        assert_eq!(problems, ["metadata.name: required", "spec: required"]);
    }

    #[test]
    fn headless_and_external_name_services_need_no_ports() {
        assert!(problems_of_service(json!({ "clusterIP": "None" })).is_empty());
        assert!(
            problems_of_service(json!({ "type": "ExternalName", "externalName": "x" })).is_empty()
        );
    }

    fn problems_of_slice(slice: Value) -> Vec<String> {
        let mut object = json!({ "metadata": { "name": "web-1", "namespace": "default" } });
        if let (Some(o), Value::Object(extra)) = (object.as_object_mut(), slice) {
            o.extend(extra);
        }
        let slice: EndpointSlice = serde_json::from_value(object).expect("an EndpointSlice");
        endpoint_slice(&slice, Origin::Cluster)
            .into_iter()
            .map(|e| format!("{}: {}", e.place, e.message))
            .collect()
    }

    #[test]
    fn endpoint_slice_rules_name_their_field() {
        assert!(
            problems_of_slice(json!({ "addressType": "IPv6", "endpoints": [
                { "addresses": ["2001:2::1"], "nodeName": "node-a.example" }],
                "ports": [{ "name": "http", "port": 8080 }, { "port": 9090 }] }))
            .is_empty()
        );
        assert!(
            problems_of_slice(json!({ "addressType": "FQDN", "endpoints": [
                { "addresses": ["not an ip"] }] }))
            .is_empty()
        );
        let cases: Vec<(Value, &[&str])> = vec![
            (
                json!({ "addressType": "", "endpoints": [] }),
                &["addressType: required: IPv4, IPv6 or FQDN"],
            ),
            (
                json!({ "addressType": "IPv5", "endpoints": [] }),
                &["addressType: `IPv5` is not an address type: use IPv4, IPv6 or FQDN"],
            ),
            (
                // An unknown address type hides none of the other problems;
                // only the family of the addresses is not checked.
                json!({ "addressType": "IPv5", "endpoints": [
                { "addresses": ["198.18.2.1", "2001:2::1", "x"] }],
                "ports": [{ "port": 0 }] }),
                &[
                    "addressType: `IPv5` is not an address type: use IPv4, IPv6 or FQDN",
                    "endpoints[0].addresses[2]: `x` is not an IP address",
                    "ports[0].port: 0 is out of range 1-65535",
                ],
            ),
            (
                json!({ "addressType": "IPv4", "endpoints": [{ "addresses": [] }] }),
                &["endpoints[0].addresses: required: at least one address"],
            ),
            (
                json!({ "addressType": "IPv4", "endpoints": [
                { "addresses": ["198.18.2.1"] },
                { "addresses": ["2001:2::1", "169.254.0.1", "x"] }] }),
                &[
                    "endpoints[1].addresses[0]: 2001:2::1 is IPv6 but addressType is IPv4",
                    "endpoints[1].addresses[1]: 169.254.0.1 is a link-local address \
                 (169.254.0.0/16): give a unicast address",
                    "endpoints[1].addresses[2]: `x` is not an IP address",
                ],
            ),
            (
                json!({ "addressType": "IPv4", "endpoints": [
                { "addresses": ["198.18.2.1"], "nodeName": "Node_A" }] }),
                &[
                    "endpoints[0].nodeName: `Node_A` is not a DNS subdomain (RFC 1123): lowercase \
                 letters, digits, '-' and '.', starting and ending with a letter or digit",
                ],
            ),
            (
                json!({ "addressType": "IPv4", "endpoints": [], "ports": [
                { "name": "http", "port": 0 }, { "name": "http", "port": 80, "protocol": "ICMP" }] }),
                &[
                    "ports[0].port: 0 is out of range 1-65535",
                    "ports[1].name: `http` is already the name of ports[0]",
                    "ports[1].protocol: `ICMP` is not a protocol: use TCP, UDP or SCTP",
                ],
            ),
        ];
        for (slice, expected) in cases {
            assert_eq!(problems_of_slice(slice.clone()), expected, "slice: {slice}");
        }
    }

    #[test]
    fn unicast_rules() {
        let cases = [
            ("198.18.0.1", None),
            ("2001:2::1", None),
            (
                "0.0.0.0",
                Some("0.0.0.0 is unspecified: give a unicast address"),
            ),
            ("::", Some(":: is unspecified: give a unicast address")),
            (
                "255.255.255.255",
                Some("255.255.255.255 is the broadcast address: give a unicast address"),
            ),
            (
                "239.1.1.1",
                Some("239.1.1.1 is a multicast address (224.0.0.0/4): give a unicast address"),
            ),
            (
                "ff02::1",
                Some("ff02::1 is a multicast address (ff00::/8): give a unicast address"),
            ),
            (
                "127.0.0.2",
                Some("127.0.0.2 is a loopback address (127.0.0.0/8): give a unicast address"),
            ),
            (
                "::1",
                Some("::1 is the loopback address: give a unicast address"),
            ),
            (
                "fe80::1",
                Some("fe80::1 is a link-local address (fe80::/10): give a unicast address"),
            ),
            (
                "::ffff:198.18.0.1",
                Some(
                    "::ffff:198.18.0.1 is an IPv4-mapped IPv6 address: write the IPv4 address itself",
                ),
            ),
            ("198.18.0.256", Some("`198.18.0.256` is not an IP address")),
        ];
        for (text, expected) in cases {
            for origin in [Origin::Cluster, Origin::File] {
                assert_eq!(parse_ip(text, origin).err().as_deref(), expected, "{text}");
            }
        }
    }

    #[test]
    fn leading_zeros_are_read_from_the_cluster_and_refused_from_a_file() {
        // As kube-proxy reads what the API server once stored: decimal.
        assert_eq!(
            parse_ip("198.018.0.010", Origin::Cluster),
            Ok("198.18.0.10".parse().unwrap())
        );
        assert_eq!(
            parse_cidr("198.018.0.0/24", Origin::Cluster),
            Ok(("198.18.0.0".parse().unwrap(), 24))
        );
        assert_eq!(
            parse_ip("198.018.0.010", Origin::File).unwrap_err(),
            "`198.018.0.010` is not an IP address: write 198.18.0.10, without leading zeros \
             (which some parsers read as octal)"
        );
        assert!(parse_cidr("198.018.0.0/24", Origin::File).is_err());
    }

    #[test]
    fn a_file_also_refuses_this_network_reserved_and_ipv4_compatible_addresses() {
        let cases = [
            (
                "0.1.2.3",
                "0.1.2.3 is in 0.0.0.0/8, \"this network\", which is no destination (RFC 6890): \
                 give a unicast address",
            ),
            (
                "240.0.0.1",
                "240.0.0.1 is in 240.0.0.0/4, reserved (RFC 6890): give a unicast address",
            ),
            (
                "255.255.255.254",
                "255.255.255.254 is in 240.0.0.0/4, reserved (RFC 6890): give a unicast address",
            ),
            (
                "::198.18.0.1",
                "::c612:1 is an IPv4-compatible IPv6 address (::198.18.0.1, in ::/96, deprecated \
                 by RFC 4291): write 198.18.0.1 itself",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_ip(text, Origin::File).err().as_deref(),
                Some(expected),
                "{text}"
            );
            // A cluster may number pods and Services there (240.0.0.0/4 on
            // GKE): objects the API server accepted keep working.
            assert_eq!(parse_ip(text, Origin::Cluster).err(), None, "{text}");
        }
        for text in [
            "198.18.0.1",
            "198.19.255.254",
            "2001:2::1",
            "2001:2:0:ffff::1",
            "::ffff:0:1:1",
        ] {
            assert_eq!(parse_ip(text, Origin::File).err(), None, "{text}");
        }
    }

    #[test]
    fn quoted_escapes_what_could_end_the_quote_or_the_line() {
        assert_eq!(quoted("web"), "`web`");
        assert_eq!(quoted("a`b"), "`a\\`b`");
        assert_eq!(quoted("a\nb\r\u{2028}"), "`a\\nb\\r\\u{2028}`");
        assert_eq!(quoted("C:\\x \"y\" 'z'"), "`C:\\\\x \"y\" 'z'`");
    }

    #[test]
    fn name_rules() {
        assert!(check_native_name("web.v2-a").is_ok());
        assert!(check_native_name("0web").is_ok());
        assert_eq!(
            check_native_name("default/web").unwrap_err(),
            "`default/web` is not a name: lowercase letters, digits, '.' and '-', starting with \
             a lowercase letter or digit and ending with a letter or digit"
        );
        assert!(check_native_name("web-").is_err());
        assert!(check_native_name("").is_err());
        assert_eq!(
            check_native_name(&"a".repeat(64)).unwrap_err(),
            format!(
                "`{}` is 64 characters long; a name has at most 63",
                "a".repeat(64)
            )
        );
        assert!(check_dns1035_label("0web").is_err());
        assert!(check_dns1035_label("web-0").is_ok());
        assert!(check_dns1123_subdomain("node-a.example").is_ok());
        assert!(check_dns1123_subdomain("node-a..example").is_err());
    }
}
