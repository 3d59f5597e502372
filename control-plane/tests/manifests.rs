//! The Kubernetes manifests of `manifests/`, as a cluster would get them:
//! each overlay and example rendered by kustomize (`kubectl kustomize`),
//! every document checked by an independent schema validator
//! (`kubernetes-validate --strict`, Kubernetes 1.33) and parsed into the
//! k8s-openapi types, then held to what the agent needs: its capabilities,
//! host network, bpffs, probes on its metrics port, read-only RBAC, the real
//! API server, flags the agent has; and the Grafana dashboard to metrics the
//! agent exports.
//!
//! `scripts/setup` installs both tools under `/opt/xlb-tools/bin`
//! (`XLB_TOOLS` names another root); without them these tests fail and say so.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use clap::Args as _;
use control_plane::{
    admin::{Admin, AdminError, EventsRead},
    agent::AgentOptions,
    api::{
        BackendStatus, BackendView, DatapathLbView, DrainRequest, DrainView, EventsView, FlowView,
        MaglevView, MapUsageView, ServiceView, SimulateRequest, SimulateView, StatsView,
        StatusView,
    },
    metrics::Metrics,
    model::{Mode, Protocol},
};
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment},
        core::v1::{
            ConfigMap, Container, HTTPGetAction, Namespace, PodSpec, Probe, Service, ServiceAccount,
        },
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::Deserialize as _;

/// The Kubernetes version the documents are validated against: the one the
/// workspace's k8s-openapi is built for (feature `v1_33`).
const KUBERNETES_VERSION: &str = "1.33.0";

/// The agent's overlays: kube-proxy replacement and running beside kube-proxy.
const REPLACEMENT: &str = "overlays/kube-proxy-replacement";
const COEXIST: &str = "overlays/coexist";
const OVERLAYS: [&str; 2] = [REPLACEMENT, COEXIST];
/// The demo, and the same for the coexist overlay.
const EXAMPLE: &str = "examples/pod-to-pod";
const EXAMPLE_COEXIST: &str = "examples/pod-to-pod-coexist";
const EXAMPLES: [&str; 2] = [EXAMPLE, EXAMPLE_COEXIST];

/// kube-proxy's `/healthz` port (`--healthz-bind-address`, 0.0.0.0:10256).
const KUBE_PROXY_HEALTHZ_PORT: u16 = 10256;

/// The label kube-proxy and xlb select Services by (KEP-2447's
/// `service.kubernetes.io/service-proxy-name`).
const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// A tool `scripts/setup` installs; fails naming it when it is not there.
fn tool(name: &str) -> PathBuf {
    let root = std::env::var_os("XLB_TOOLS").map_or_else(|| "/opt/xlb-tools".into(), PathBuf::from);
    let path = root.join("bin").join(name);
    assert!(
        path.is_file(),
        "{name} is missing: expected it at {} (run scripts/setup, which installs kubectl for \
         `kubectl kustomize` and kubernetes-validate there; XLB_TOOLS names another root)",
        path.display()
    );
    path
}

/// One rendered document, by kind.
#[derive(Debug)]
enum Object {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    ConfigMap(Box<ConfigMap>),
    DaemonSet(Box<DaemonSet>),
    Deployment(Box<Deployment>),
    Service(Box<Service>),
}

/// A kustomization rendered: its YAML text and its documents.
#[derive(Debug)]
struct Rendered {
    dir: &'static str,
    yaml: String,
    objects: Vec<Object>,
}

fn render(dir: &'static str) -> Rendered {
    let output = Command::new(tool("kubectl"))
        .arg("kustomize")
        .arg(manifests().join(dir))
        .output()
        .expect("running kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize manifests/{dir}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let yaml = String::from_utf8(output.stdout).expect("kustomize writes UTF-8");
    let objects = serde_yaml_ng::Deserializer::from_str(&yaml)
        .enumerate()
        .map(|(i, document)| {
            let value = serde_yaml_ng::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("manifests/{dir}: document {i} is not YAML: {e}"));
            parse(dir, i, value)
        })
        .collect::<Vec<_>>();
    assert!(!objects.is_empty(), "manifests/{dir} rendered no document");
    Rendered { dir, yaml, objects }
}

/// Parses one document into the type its `apiVersion` and `kind` name;
/// a kind this list does not know fails (add it here, with its checks).
fn parse(dir: &str, i: usize, value: serde_yaml_ng::Value) -> Object {
    fn typed<T: serde::de::DeserializeOwned>(
        dir: &str,
        i: usize,
        value: serde_yaml_ng::Value,
    ) -> Box<T> {
        Box::new(serde_yaml_ng::from_value(value).unwrap_or_else(|e| {
            panic!(
                "manifests/{dir}: document {i} does not parse as {}: {e}",
                std::any::type_name::<T>()
            )
        }))
    }
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or_default();
    match (field("apiVersion"), field("kind")) {
        ("v1", "Namespace") => Object::Namespace(typed(dir, i, value)),
        ("v1", "ServiceAccount") => Object::ServiceAccount(typed(dir, i, value)),
        ("v1", "ConfigMap") => Object::ConfigMap(typed(dir, i, value)),
        ("v1", "Service") => Object::Service(typed(dir, i, value)),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            Object::ClusterRole(typed(dir, i, value))
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(typed(dir, i, value))
        }
        ("apps/v1", "DaemonSet") => Object::DaemonSet(typed(dir, i, value)),
        ("apps/v1", "Deployment") => Object::Deployment(typed(dir, i, value)),
        (api_version, kind) => panic!(
            "manifests/{dir}: document {i} is {api_version}/{kind}, a kind these tests do not \
             know: add it to manifests.rs with the checks it needs"
        ),
    }
}

impl Rendered {
    fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.objects.iter().filter_map(|o| match o {
            Object::Namespace(x) => Some(&**x),
            _ => None,
        })
    }
    fn service_accounts(&self) -> impl Iterator<Item = &ServiceAccount> {
        self.objects.iter().filter_map(|o| match o {
            Object::ServiceAccount(x) => Some(&**x),
            _ => None,
        })
    }
    fn cluster_roles(&self) -> impl Iterator<Item = &ClusterRole> {
        self.objects.iter().filter_map(|o| match o {
            Object::ClusterRole(x) => Some(&**x),
            _ => None,
        })
    }
    fn cluster_role_bindings(&self) -> impl Iterator<Item = &ClusterRoleBinding> {
        self.objects.iter().filter_map(|o| match o {
            Object::ClusterRoleBinding(x) => Some(&**x),
            _ => None,
        })
    }
    fn config_maps(&self) -> impl Iterator<Item = &ConfigMap> {
        self.objects.iter().filter_map(|o| match o {
            Object::ConfigMap(x) => Some(&**x),
            _ => None,
        })
    }
    fn services(&self) -> impl Iterator<Item = &Service> {
        self.objects.iter().filter_map(|o| match o {
            Object::Service(x) => Some(&**x),
            _ => None,
        })
    }
    fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.objects.iter().filter_map(|o| match o {
            Object::Deployment(x) => Some(&**x),
            _ => None,
        })
    }

    /// The one DaemonSet: the agent's.
    fn agent_daemonset(&self) -> &DaemonSet {
        let daemonsets: Vec<&DaemonSet> = self
            .objects
            .iter()
            .filter_map(|o| match o {
                Object::DaemonSet(x) => Some(&**x),
                _ => None,
            })
            .collect();
        assert_eq!(daemonsets.len(), 1, "manifests/{}: one DaemonSet", self.dir);
        daemonsets[0]
    }

    fn agent_pod(&self) -> &PodSpec {
        self.agent_daemonset()
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .unwrap_or_else(|| panic!("manifests/{}: the DaemonSet has no pod spec", self.dir))
    }

    fn agent_container(&self) -> &Container {
        let pod = self.agent_pod();
        assert_eq!(
            pod.containers.len(),
            1,
            "manifests/{}: the agent pod runs one container",
            self.dir
        );
        &pod.containers[0]
    }

    /// The value of the agent's variable `name`, resolved through its
    /// ConfigMap when it comes from one.
    fn agent_env(&self, name: &str) -> String {
        let var = self
            .agent_container()
            .env
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("manifests/{}: the agent has no {name}", self.dir));
        if let Some(value) = &var.value {
            return value.clone();
        }
        let key_ref = var
            .value_from
            .as_ref()
            .and_then(|f| f.config_map_key_ref.as_ref())
            .unwrap_or_else(|| {
                panic!(
                    "manifests/{}: {name} is neither a value nor from a ConfigMap",
                    self.dir
                )
            });
        self.config_map_value(&key_ref.name, &key_ref.key)
    }

    fn config_map_value(&self, name: &str, key: &str) -> String {
        let map = self
            .config_maps()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| {
                panic!(
                    "manifests/{}: no ConfigMap {name} (referenced by the agent)",
                    self.dir
                )
            });
        map.data
            .as_ref()
            .and_then(|d| d.get(key))
            .unwrap_or_else(|| panic!("manifests/{}: ConfigMap {name} has no key {key}", self.dir))
            .clone()
    }

    /// The metrics port: `--metrics-address` as the agent gets it, which
    /// must name the container port `http-metrics`.
    fn metrics_port(&self) -> u16 {
        let address: SocketAddr = self
            .agent_env("XLB_METRICS_ADDRESS")
            .parse()
            .unwrap_or_else(|e| panic!("manifests/{}: XLB_METRICS_ADDRESS: {e}", self.dir));
        assert!(
            address.ip().is_unspecified(),
            "manifests/{}: the metrics address {address} must listen on every address: the \
             kubelet probes, and Prometheus scrapes, the node's address",
            self.dir
        );
        address.port()
    }
}

/// Every overlay and example, rendered.
fn everything() -> Vec<Rendered> {
    OVERLAYS
        .iter()
        .chain(&EXAMPLES)
        .map(|dir| render(dir))
        .collect()
}

/// Runs kubernetes-validate in strict mode on `yaml`; Ok with its report when
/// every one of `documents` passed, Err with the report otherwise.
fn kubernetes_validate(yaml: &str, documents: usize) -> Result<String, String> {
    let file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("a temporary file");
    std::fs::write(file.path(), yaml).expect("writing the rendered YAML");
    let output = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(file.path())
        .output()
        .expect("running kubernetes-validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // A kind it has no schema for is only a warning, with exit status 0:
    // count the documents it says passed.
    let passed = report
        .lines()
        .filter(|l| l.starts_with("INFO") && l.contains(" passed for resource "))
        .count();
    if output.status.success() && passed == documents {
        Ok(report)
    } else {
        Err(format!(
            "{}; {passed} of {documents} documents passed:\n{report}",
            output.status
        ))
    }
}

#[test]
fn every_rendered_document_passes_kubernetes_validate_strict() {
    for rendered in everything() {
        if let Err(report) = kubernetes_validate(&rendered.yaml, rendered.objects.len()) {
            panic!(
                "manifests/{} against Kubernetes {KUBERNETES_VERSION}: {report}",
                rendered.dir
            );
        }
    }
}

/// The validator is strict and knows its kinds, or the test above proves
/// nothing.
#[test]
fn kubernetes_validate_rejects_an_unknown_field_and_an_unknown_kind() {
    let misspelt = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  portz: []\n";
    let report = kubernetes_validate(misspelt, 1).expect_err("an unknown field must fail");
    assert!(report.contains("portz"), "{report}");
    let unknown = "apiVersion: v1\nkind: Servic\nmetadata:\n  name: x\n";
    kubernetes_validate(unknown, 1).expect_err("an unknown kind must not pass");
}

#[test]
fn every_workload_selects_its_own_pods() {
    for rendered in everything() {
        let workloads = rendered
            .objects
            .iter()
            .filter_map(|o| match o {
                Object::DaemonSet(d) => {
                    let s = d.spec.as_ref()?;
                    Some((d.metadata.name.clone(), &s.selector, &s.template))
                }
                Object::Deployment(d) => {
                    let s = d.spec.as_ref()?;
                    Some((d.metadata.name.clone(), &s.selector, &s.template))
                }
                _ => None,
            })
            .collect::<Vec<_>>();
        assert!(
            !workloads.is_empty(),
            "manifests/{}: no workload",
            rendered.dir
        );
        for (name, selector, template) in workloads {
            let name = name.unwrap_or_default();
            assert!(
                selector.match_expressions.is_none(),
                "manifests/{}: {name}: selector by labels only",
                rendered.dir
            );
            let wanted = selector.match_labels.clone().unwrap_or_default();
            assert!(
                !wanted.is_empty(),
                "manifests/{}: {name}: empty selector",
                rendered.dir
            );
            let labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            for (key, value) in &wanted {
                assert_eq!(
                    labels.get(key),
                    Some(value),
                    "manifests/{}: {name}: the selector's {key}={value} is not on the pod template ({labels:?})",
                    rendered.dir
                );
            }
        }
    }
}

#[test]
fn agent_has_exactly_bpf_net_admin_perfmon_and_only_the_init_container_is_privileged() {
    for dir in OVERLAYS {
        let rendered = render(dir);
        let pod = rendered.agent_pod();
        let agent = rendered.agent_container();
        let security = agent
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("manifests/{dir}: the agent has no securityContext"));
        assert_eq!(
            security.privileged,
            Some(false),
            "manifests/{dir}: agent privileged"
        );
        assert_eq!(
            security.allow_privilege_escalation,
            Some(false),
            "manifests/{dir}: agent allowPrivilegeEscalation"
        );
        let capabilities = security.capabilities.as_ref().expect("agent capabilities");
        assert_eq!(
            capabilities.drop,
            Some(vec!["ALL".to_owned()]),
            "manifests/{dir}: the agent drops every capability it does not add"
        );
        let added: BTreeSet<&str> = capabilities
            .add
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        assert_eq!(
            added,
            BTreeSet::from(["BPF", "NET_ADMIN", "PERFMON"]),
            "manifests/{dir}: the agent's capabilities"
        );
        let init = pod.init_containers.as_deref().unwrap_or_default();
        assert_eq!(init.len(), 1, "manifests/{dir}: one init container (bpffs)");
        let privileged: Vec<&str> = init
            .iter()
            .chain(&pod.containers)
            .filter(|c| {
                c.security_context
                    .as_ref()
                    .and_then(|s| s.privileged)
                    .unwrap_or(false)
            })
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            privileged,
            [init[0].name.as_str()],
            "manifests/{dir}: only the bpffs init container is privileged"
        );
    }
}

#[test]
fn agent_runs_on_the_host_network_as_a_node_critical_daemon() {
    for dir in OVERLAYS {
        let rendered = render(dir);
        let daemonset = rendered.agent_daemonset();
        let pod = rendered.agent_pod();
        assert_eq!(pod.host_network, Some(true), "manifests/{dir}: hostNetwork");
        assert_eq!(
            pod.dns_policy.as_deref(),
            Some("Default"),
            "manifests/{dir}: dnsPolicy: the node's resolver, not the cluster DNS ClusterIP"
        );
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("system-node-critical"),
            "manifests/{dir}: priorityClassName"
        );
        assert!(
            pod.tolerations
                .iter()
                .flatten()
                .any(|t| t.operator.as_deref() == Some("Exists")
                    && t.key.is_none()
                    && t.effect.is_none()),
            "manifests/{dir}: a toleration of every taint"
        );
        let strategy = daemonset
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .expect("an update strategy");
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        assert_eq!(
            strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.max_unavailable.clone()),
            Some(IntOrString::Int(1)),
            "manifests/{dir}: one node at a time"
        );

        let node_name = rendered
            .agent_container()
            .env
            .iter()
            .flatten()
            .find(|v| v.name == "NODE_NAME")
            .unwrap_or_else(|| panic!("manifests/{dir}: the agent has no NODE_NAME"));
        assert_eq!(
            node_name
                .value_from
                .as_ref()
                .and_then(|f| f.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("spec.nodeName"),
            "manifests/{dir}: NODE_NAME from the downward API"
        );
        let requests = rendered
            .agent_container()
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .expect("resource requests");
        assert!(
            requests.contains_key("cpu") && requests.contains_key("memory"),
            "manifests/{dir}: cpu and memory requests"
        );
    }
}

/// The agent reaches the API server directly, never through a ClusterIP it
/// implements itself (DESIGN.md): KUBERNETES_SERVICE_HOST and _PORT come from
/// the ConfigMap and override the kubelet's, which name the `kubernetes`
/// Service.
#[test]
fn agent_reaches_the_api_server_named_in_its_configmap() {
    for dir in OVERLAYS {
        let rendered = render(dir);
        for name in ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"] {
            let var = rendered
                .agent_container()
                .env
                .iter()
                .flatten()
                .find(|v| v.name == name)
                .unwrap_or_else(|| panic!("manifests/{dir}: the agent does not set {name}"));
            assert!(
                var.value_from
                    .as_ref()
                    .is_some_and(|f| f.config_map_key_ref.is_some()),
                "manifests/{dir}: {name} comes from the ConfigMap"
            );
        }
        let host = rendered.agent_env("KUBERNETES_SERVICE_HOST");
        assert!(
            !host.is_empty()
                && host != "kubernetes"
                && !host.starts_with("kubernetes.default")
                && !host.contains(".svc"),
            "manifests/{dir}: KUBERNETES_SERVICE_HOST={host:?} names the kubernetes Service"
        );
        let port: u16 = rendered
            .agent_env("KUBERNETES_SERVICE_PORT")
            .parse()
            .unwrap_or_else(|e| panic!("manifests/{dir}: KUBERNETES_SERVICE_PORT: {e}"));
        assert_ne!(port, 0);
    }
}

/// Every variable the pods take from a ConfigMap is there: a missing key
/// leaves a pod in CreateContainerConfigError, which no schema catches.
#[test]
fn every_configmap_reference_resolves() {
    for rendered in everything() {
        let pods = rendered.objects.iter().filter_map(|o| match o {
            Object::DaemonSet(d) => d.spec.as_ref()?.template.spec.as_ref(),
            Object::Deployment(d) => d.spec.as_ref()?.template.spec.as_ref(),
            _ => None,
        });
        for pod in pods {
            let containers = pod.init_containers.iter().flatten().chain(&pod.containers);
            for var in containers.flat_map(|c| c.env.iter().flatten()) {
                if let Some(key_ref) = var
                    .value_from
                    .as_ref()
                    .and_then(|f| f.config_map_key_ref.as_ref())
                {
                    rendered.config_map_value(&key_ref.name, &key_ref.key);
                }
            }
        }
    }
}

fn probe_port(probe: Option<&Probe>, what: &str, dir: &str) -> IntOrString {
    let HTTPGetAction { path, port, .. } = probe
        .and_then(|p| p.http_get.as_ref())
        .unwrap_or_else(|| panic!("manifests/{dir}: the agent has no HTTP {what} probe"));
    assert_eq!(
        path.as_deref(),
        Some("/healthz"),
        "manifests/{dir}: {what} probe path"
    );
    port.clone()
}

#[test]
fn probes_and_scrapes_use_the_metrics_address_of_the_agent() {
    for dir in OVERLAYS {
        let rendered = render(dir);
        let agent = rendered.agent_container();
        let port = rendered.metrics_port();
        let ports = agent.ports.as_deref().unwrap_or_default();
        let names: BTreeSet<_> = ports.iter().filter_map(|p| p.name.as_deref()).collect();
        assert_eq!(
            names.len(),
            ports.len(),
            "manifests/{dir}: port names unique"
        );
        let named = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("http-metrics"))
            .unwrap_or_else(|| panic!("manifests/{dir}: no container port http-metrics"));
        assert_eq!(
            named.container_port,
            i32::from(port),
            "manifests/{dir}: the http-metrics port and --metrics-address"
        );
        for (what, probe) in [
            ("startup", agent.startup_probe.as_ref()),
            ("liveness", agent.liveness_probe.as_ref()),
            ("readiness", agent.readiness_probe.as_ref()),
        ] {
            let probed = match probe_port(probe, what, dir) {
                IntOrString::Int(n) => n,
                IntOrString::String(name) => {
                    ports
                        .iter()
                        .find(|p| p.name.as_deref() == Some(&*name))
                        .unwrap_or_else(|| {
                            panic!("manifests/{dir}: {what} probe port {name} is not a port")
                        })
                        .container_port
                }
            };
            assert_eq!(
                probed,
                i32::from(port),
                "manifests/{dir}: {what} probe port"
            );
        }
        let annotations = rendered
            .agent_daemonset()
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        assert_eq!(
            annotations.get("prometheus.io/port"),
            Some(&port.to_string()),
            "manifests/{dir}: the scrape annotation"
        );
    }
    assert_eq!(render(REPLACEMENT).metrics_port(), 10256);
    assert_ne!(
        render(COEXIST).metrics_port(),
        KUBE_PROXY_HEALTHZ_PORT,
        "beside kube-proxy the agent cannot bind kube-proxy's healthz port"
    );
}

/// Maps and links are pinned in the node's bpffs (so they outlive the pod),
/// which the privileged init container mounts and propagates to the node;
/// the admin socket is in the node's /run/xlb.
#[test]
fn pins_and_admin_socket_live_on_the_node() {
    for dir in OVERLAYS {
        let rendered = render(dir);
        let pod = rendered.agent_pod();
        let host_path = |volume: &str| {
            pod.volumes
                .iter()
                .flatten()
                .find(|v| v.name == volume)
                .and_then(|v| v.host_path.as_ref())
                .map(|h| h.path.clone())
                .unwrap_or_else(|| panic!("manifests/{dir}: no hostPath volume {volume}"))
        };
        let mount = |container: &Container, path: &str| {
            container
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| Path::new(path).starts_with(&m.mount_path))
                .cloned()
                .unwrap_or_else(|| {
                    panic!(
                        "manifests/{dir}: {path} is on no volume of {}",
                        container.name
                    )
                })
        };

        let agent = rendered.agent_container();
        let pin_dir = rendered.agent_env("XLB_PIN_DIR");
        let pins = mount(agent, &pin_dir);
        assert_eq!(
            host_path(&pins.name),
            "/sys/fs/bpf",
            "manifests/{dir}: pin dir volume"
        );
        assert_eq!(pins.mount_path, "/sys/fs/bpf");
        assert_eq!(pins.mount_propagation.as_deref(), Some("HostToContainer"));

        let init = &pod.init_containers.as_deref().unwrap_or_default()[0];
        let mounted = mount(init, "/sys/fs/bpf");
        assert_eq!(
            mounted.name, pins.name,
            "manifests/{dir}: the init container mounts the agent's bpffs"
        );
        assert_eq!(
            mounted.mount_propagation.as_deref(),
            Some("Bidirectional"),
            "manifests/{dir}: the bpffs mount must reach the node"
        );
        let script = init
            .command
            .iter()
            .flatten()
            .chain(init.args.iter().flatten());
        assert!(
            script.into_iter().any(|s| s.contains("mount -t bpf")),
            "manifests/{dir}: the init container mounts bpffs"
        );

        let socket = rendered.agent_env("XLB_ADMIN_SOCKET");
        let run = mount(agent, &socket);
        assert_eq!(
            host_path(&run.name),
            "/run/xlb",
            "manifests/{dir}: admin socket volume"
        );
    }
}

#[test]
fn agent_account_is_bound_to_a_read_only_cluster_role() {
    for dir in OVERLAYS {
        let rendered = render(dir);
        let daemonset = rendered.agent_daemonset();
        let namespace = daemonset.metadata.namespace.clone().expect("a namespace");
        let account = rendered
            .agent_pod()
            .service_account_name
            .clone()
            .expect("the agent's serviceAccountName");
        assert!(
            rendered
                .service_accounts()
                .any(|a| a.metadata.name.as_deref() == Some(&*account)
                    && a.metadata.namespace.as_deref() == Some(&*namespace)),
            "manifests/{dir}: ServiceAccount {namespace}/{account} is not rendered"
        );
        let ns = rendered
            .namespaces()
            .find(|n| n.metadata.name.as_deref() == Some(&*namespace))
            .unwrap_or_else(|| panic!("manifests/{dir}: Namespace {namespace} is not rendered"));
        assert_eq!(
            ns.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-security.kubernetes.io/enforce"))
                .map(String::as_str),
            Some("privileged"),
            "manifests/{dir}: the agent's pod needs the privileged Pod Security level"
        );

        let bindings: Vec<&ClusterRoleBinding> = rendered
            .cluster_role_bindings()
            .filter(|b| {
                b.subjects.iter().flatten().any(|s| {
                    s.kind == "ServiceAccount"
                        && s.name == account
                        && s.namespace.as_deref() == Some(&*namespace)
                })
            })
            .collect();
        assert_eq!(
            bindings.len(),
            1,
            "manifests/{dir}: one binding of {account}"
        );
        let role_ref = &bindings[0].role_ref;
        assert_eq!(role_ref.kind, "ClusterRole");
        let role = rendered
            .cluster_roles()
            .find(|r| r.metadata.name.as_deref() == Some(&*role_ref.name))
            .unwrap_or_else(|| {
                panic!(
                    "manifests/{dir}: ClusterRole {} is not rendered",
                    role_ref.name
                )
            });

        let mut granted: BTreeSet<(String, String, String)> = BTreeSet::new();
        for rule in role.rules.iter().flatten() {
            assert!(
                rule.non_resource_urls.is_none() && rule.resource_names.is_none(),
                "manifests/{dir}: {rule:?}"
            );
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        assert!(
                            !group.contains('*') && !resource.contains('*') && verb != "*",
                            "manifests/{dir}: no wildcard in {rule:?}"
                        );
                        assert!(
                            ["get", "list", "watch"].contains(&verb.as_str()),
                            "manifests/{dir}: the agent may only read: {verb} {group}/{resource}"
                        );
                        granted.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
        for (group, resource) in [
            ("", "services"),
            ("discovery.k8s.io", "endpointslices"),
            ("", "nodes"),
        ] {
            for verb in ["list", "watch"] {
                assert!(
                    granted.contains(&(group.to_owned(), resource.to_owned(), verb.to_owned())),
                    "manifests/{dir}: the agent needs {verb} on {group}/{resource}"
                );
            }
        }
    }
}

/// `--service-proxy-name` selects which Services the agent serves:
/// `=xlb` beside kube-proxy; absent (every unlabelled Service) as its replacement.
#[test]
fn only_the_coexist_overlay_sets_a_service_proxy_name() {
    let flag = |dir: &'static str| {
        let rendered = render(dir);
        let args = rendered.agent_container().args.clone().unwrap_or_default();
        let env = rendered.agent_container().env.clone().unwrap_or_default();
        assert!(
            !env.iter().any(|v| v.name.contains("SERVICE_PROXY_NAME")),
            "manifests/{dir}: --service-proxy-name as an argument, where it shows"
        );
        args.iter()
            .filter(|a| a.starts_with("--service-proxy-name"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(flag(COEXIST), ["--service-proxy-name=xlb"]);
    assert_eq!(flag(REPLACEMENT), Vec::<String>::new());
}

/// Every flag and XLB_* variable the manifests give the agent is one it
/// has, so none is silently ignored (clap ignores variables it does not
/// know), and the first argument runs the agent.
#[test]
fn agent_flags_and_variables_are_the_agents_own() {
    let command = AgentOptions::augment_args(clap::Command::new("agent"));
    let flags: BTreeMap<String, Option<String>> = command
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
            a.get_long().map(|l| (l.to_owned(), env))
        })
        .collect();
    assert!(flags.contains_key("metrics-address"), "{flags:?}");
    let known_variable = |name: &str| flags.values().flatten().any(|e| e == name);
    for dir in OVERLAYS {
        let rendered = render(dir);
        let agent = rendered.agent_container();
        assert!(
            agent.command.is_none(),
            "manifests/{dir}: the image's entrypoint is xlb"
        );
        let args = agent.args.as_deref().unwrap_or_default();
        assert_eq!(
            args.first().map(String::as_str),
            Some("agent"),
            "manifests/{dir}"
        );
        for arg in &args[1..] {
            let flag = arg
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("manifests/{dir}: {arg:?} is not a --flag"));
            let flag = flag.split_once('=').map_or(flag, |(f, _)| f);
            assert!(
                flags.contains_key(flag),
                "manifests/{dir}: xlb agent has no --{flag}"
            );
        }
        for var in agent.env.iter().flatten() {
            if var.name.starts_with("XLB_") || var.name == "NODE_NAME" {
                assert!(
                    known_variable(&var.name),
                    "manifests/{dir}: no flag of xlb agent reads {}",
                    var.name
                );
            }
        }
    }
}

/// The demo: a frontend asks the `echo` Service on 8080, whose selector
/// finds the two echo pods on a port they open.
#[test]
fn example_frontend_reaches_the_echo_service() {
    for dir in EXAMPLES {
        let rendered = render(dir);
        let namespace = "pod-to-pod-communication";
        assert!(
            rendered
                .namespaces()
                .any(|n| n.metadata.name.as_deref() == Some(namespace)),
            "manifests/{dir}: Namespace {namespace}"
        );
        let deployment = |name: &str| {
            rendered
                .deployments()
                .find(|d| d.metadata.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("manifests/{dir}: no Deployment {name}"))
        };
        let frontend = deployment("frontend");
        let script = frontend
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| {
                p.containers
                    .iter()
                    .flat_map(|c| c.command.iter().flatten().chain(c.args.iter().flatten()))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        // http://SERVICE[.NAMESPACE[.svc...]]:PORT/
        let url = script
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .unwrap_or_else(|| {
                panic!("manifests/{dir}: the frontend asks no http:// URL: {script}")
            });
        let authority = url.split('/').next().unwrap_or_default();
        let (host, port) = authority
            .split_once(':')
            .unwrap_or_else(|| panic!("manifests/{dir}: {url} names no port"));
        let mut labels = host.split('.');
        let service_name = labels.next().unwrap_or_default();
        let service_namespace = labels.next().unwrap_or(namespace);
        let port: i32 = port.parse().expect("a port number");
        assert_eq!(port, 8080, "manifests/{dir}: the frontend's port");

        let service = rendered
            .services()
            .find(|s| {
                s.metadata.name.as_deref() == Some(service_name)
                    && s.metadata.namespace.as_deref() == Some(service_namespace)
            })
            .unwrap_or_else(|| {
                panic!("manifests/{dir}: the frontend asks {host}, which is no Service here")
            });
        let spec = service.spec.as_ref().expect("a Service spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        let service_port = spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.port == port)
            .unwrap_or_else(|| {
                panic!("manifests/{dir}: Service {service_name} has no port {port}")
            });

        let echo = deployment("echo");
        let echo_spec = echo.spec.as_ref().expect("a Deployment spec");
        assert_eq!(
            echo_spec.replicas,
            Some(2),
            "manifests/{dir}: two echo replicas"
        );
        let pod_labels = echo_spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let selector = spec.selector.clone().unwrap_or_default();
        assert!(
            !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "manifests/{dir}: Service {service_name} selects {selector:?}, the echo pods carry {pod_labels:?}"
        );
        let container_ports: Vec<_> = echo_spec
            .template
            .spec
            .iter()
            .flat_map(|p| &p.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .collect();
        let reached = match service_port
            .target_port
            .clone()
            .unwrap_or(IntOrString::Int(port))
        {
            IntOrString::Int(n) => container_ports.iter().any(|p| p.container_port == n),
            IntOrString::String(name) => container_ports
                .iter()
                .any(|p| p.name.as_deref() == Some(&*name)),
        };
        assert!(
            reached,
            "manifests/{dir}: the echo pods open no port the Service targets"
        );

        let proxy_name = service
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_PROXY_NAME_LABEL))
            .map(String::as_str);
        let wanted = if dir == EXAMPLE_COEXIST {
            Some("xlb")
        } else {
            None
        };
        assert_eq!(
            proxy_name, wanted,
            "manifests/{dir}: {SERVICE_PROXY_NAME_LABEL}"
        );
    }
}

/// An agent with something of everything, so every family has a series.
#[derive(Debug)]
struct EveryFamily;

impl Admin for EveryFamily {
    fn services(&self) -> Result<Vec<ServiceView>, AdminError> {
        Ok(vec![ServiceView {
            id: 1,
            name: "default/web:http".into(),
            protocol: Protocol::Tcp,
            mode: Mode::Nat,
            frontends: vec![],
            affinity_timeout_seconds: None,
            table_size: 251,
            backends: vec![],
            packets: 10,
            bytes: 1000,
        }])
    }
    fn backends(&self) -> Result<Vec<BackendView>, AdminError> {
        Ok(vec![BackendView {
            id: 1,
            address: "198.18.2.1:8080".parse().expect("an address"),
            protocol: Protocol::Tcp,
            generation: 1,
            status: BackendStatus::Active,
            health: "up".into(),
            health_by_service: BTreeMap::new(),
            services: vec!["default/web:http".into()],
            status_by_service: [("default/web:http".into(), BackendStatus::Active)].into(),
            drained_by: BTreeMap::new(),
            packets: 10,
            bytes: 1000,
        }])
    }
    fn datapath_lb(&self) -> Result<DatapathLbView, AdminError> {
        Ok(DatapathLbView::default())
    }
    fn conntrack(&self, _: Option<&str>) -> Result<Vec<FlowView>, AdminError> {
        Ok(vec![])
    }
    fn stats(&self) -> Result<StatsView, AdminError> {
        Ok(StatsView {
            verdicts: BTreeMap::from([
                ("forward_to_backend".to_owned(), 9),
                ("drop_unknown_port".to_owned(), 1),
            ]),
            ..StatsView::default()
        })
    }
    fn maps(&self) -> Result<Vec<MapUsageView>, AdminError> {
        Ok(vec![MapUsageView {
            name: "CONNTRACK".into(),
            entries: 1,
            capacity: 2,
            age_seconds: Some(3.0),
        }])
    }
    fn maglev(&self, service: &str) -> Result<MaglevView, AdminError> {
        Err(AdminError::NotFound(service.into()))
    }
    fn simulate(&self, _: &SimulateRequest) -> Result<SimulateView, AdminError> {
        Err(AdminError::BadRequest("not in this test".into()))
    }
    fn drain(&self, _: &DrainRequest, _: bool) -> Result<DrainView, AdminError> {
        Err(AdminError::BadRequest("not in this test".into()))
    }
    fn status(&self) -> Result<StatusView, AdminError> {
        Err(AdminError::Internal("not in this test".into()))
    }
    fn events(&self, _: &EventsRead) -> Result<EventsView, AdminError> {
        Ok(EventsView::default())
    }
    /// No events ever come: a reader waits out its wait.
    fn event_arrivals(&self) -> tokio::sync::watch::Receiver<u64> {
        tokio::sync::watch::channel(0).1
    }
}

/// Every series name the agent's `/metrics` exposes, with its label names,
/// from the agent's own registry rendered as OpenMetrics text.
fn exported_series() -> BTreeMap<String, BTreeSet<String>> {
    let metrics = Metrics::new();
    metrics.observe_sync(Duration::from_millis(5));
    metrics.observe_programming(Duration::from_millis(1));
    metrics.reload(true);
    metrics.announced("bgp", 1);
    metrics.announce_failed("bgp");
    let text = metrics.render(&EveryFamily).expect("rendering the metrics");
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = series.entry(line[..end].to_owned()).or_default();
        if let Some(inner) = line[end..].strip_prefix('{') {
            // name="value",name="value"} 1 (the test's values hold no quotes)
            let inner = &inner[..inner.find('}').expect("a closing brace")];
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                labels.insert(pair.split('=').next().unwrap_or_default().to_owned());
            }
        }
    }
    series
}

/// PromQL words the dashboard may use besides metric and label names.
const PROMQL_WORDS: [&str; 13] = [
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "topk",
    "by",
    "without",
    "rate",
    "increase",
    "histogram_quantile",
    "label_values",
    "on",
];
/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// The metric names and label names a PromQL expression uses. Fails on any
/// identifier that is neither a PromQL word nor an `xlb_` metric.
fn promql_names(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // Inside `by (...)` / `without (...)`, or a selector's `{...}`, an
    // identifier is a label name; strings (label values) are skipped whole.
    let (mut i, mut grouping, mut matching) = (0, false, false);
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1
                + chars[i + 1..]
                    .iter()
                    .position(|&c| c == '"')
                    .expect("a closing quote")
                + 1;
        } else if c == '[' {
            i += chars[i..]
                .iter()
                .position(|&c| c == ']')
                .expect("a closing ]")
                + 1;
        } else if c == '$' {
            i += 1 + chars[i + 1..].iter().take_while(|&&c| ident(c)).count();
        } else if c.is_ascii_digit() || c == '.' {
            i += chars[i..]
                .iter()
                .take_while(|&&c| c.is_ascii_alphanumeric() || c == '.')
                .count();
        } else if ident(c) {
            let word: String = chars[i..].iter().take_while(|&&c| ident(c)).collect();
            i += word.len();
            if grouping || matching {
                labels.insert(word);
            } else if word == "by" || word == "without" {
                grouping = true;
            } else if word.starts_with("xlb_") {
                metrics.insert(word);
            } else {
                assert!(
                    PROMQL_WORDS.contains(&&*word),
                    "{word:?} in {expr:?} is neither PromQL nor an xlb metric"
                );
            }
        } else {
            match c {
                ')' => grouping = false,
                '{' => matching = true,
                '}' => matching = false,
                _ => {}
            }
            i += 1;
        }
    }
    (metrics, labels)
}

#[test]
fn promql_names_finds_metrics_and_labels() {
    let (metrics, labels) = promql_names(
        r#"histogram_quantile(0.99, sum by (le, instance) (rate(xlb_a_bucket{instance=~"$instance", x!="1,2"}[$__rate_interval]))) * 8"#,
    );
    assert_eq!(metrics, BTreeSet::from(["xlb_a_bucket".to_owned()]));
    assert_eq!(labels, ["instance", "le", "x"].map(str::to_owned).into());
}

#[test]
#[should_panic(expected = "neither PromQL nor an xlb metric")]
fn promql_names_rejects_a_foreign_metric() {
    promql_names("rate(node_cpu_seconds_total[5m])");
}

#[test]
fn grafana_dashboard_queries_only_what_the_agent_exports() {
    let exported = exported_series();
    // A family whose samples did not render would make this test vacuous.
    for name in [
        "xlb_build_info",
        "xlb_datapath_packets_total",
        "xlb_sync_rules_duration_seconds_bucket",
        "xlb_announce_failures_total",
    ] {
        assert!(exported.contains_key(name), "{name} not in {exported:?}");
    }
    let path = manifests().join("grafana/xlb-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("reading the dashboard"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    let mut queries = 0;
    let mut used = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    let ids: BTreeSet<_> = panels
        .iter()
        .map(|p| p["id"].as_u64().expect("a panel id"))
        .collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("a panel title");
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        for target in targets.unwrap_or_else(|| panic!("panel {title:?} has no query")) {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let (metrics, labels) = promql_names(expr);
            assert!(
                !metrics.is_empty(),
                "panel {title:?}: {expr} queries no xlb metric"
            );
            let mut available: BTreeSet<&str> = TARGET_LABELS.into();
            for metric in &metrics {
                let series_labels = exported.get(metric).unwrap_or_else(|| {
                    panic!(
                        "panel {title:?}: the agent exports no {metric} (it has {:?})",
                        exported.keys()
                    )
                });
                available.extend(series_labels.iter().map(String::as_str));
            }
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            let legend_labels = legend
                .split("{{")
                .skip(1)
                .filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim().to_owned()));
            for label in labels.into_iter().chain(legend_labels) {
                assert!(
                    available.contains(label.as_str()),
                    "panel {title:?}: {expr} uses label {label:?}; {metrics:?} carry {available:?}"
                );
            }
            used.extend(metrics);
            queries += 1;
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(query) = variable["definition"].as_str() {
            let args = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| {
                    panic!("variable query {query:?}: label_values(metric, label) only")
                });
            let (metric, label) = args.split_once(',').expect("label_values(metric, label)");
            let labels = exported
                .get(metric.trim())
                .unwrap_or_else(|| panic!("variable {query:?}: the agent exports no {metric}"));
            let label = label.trim();
            assert!(
                labels.contains(label) || TARGET_LABELS.contains(&label),
                "variable {query:?}: {metric} has no label {label}"
            );
        }
    }
    assert!(queries >= 10, "the dashboard has {queries} queries");
    // Every family the agent exports has a panel.
    let used: BTreeSet<&str> = used.iter().map(|u| family(u)).collect();
    for series in exported.keys() {
        assert!(
            used.contains(family(series)),
            "no panel shows {}",
            family(series)
        );
    }
}

/// A histogram's series without their `_bucket`, `_sum`, `_count` suffix.
fn family(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix))
        .unwrap_or(series)
}
