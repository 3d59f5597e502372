//! The ClusterIP fabric driven by Kubernetes objects through the real agent
//! (issue 8): the rig of [`crate::fabric`] — two nodes with pods, a
//! wire-like fabric link between them, a wire-like client outside on node
//! 0's uplink — with one `xlb agent` per node namespace instead of a
//! datapath programmed by the test.
//!
//! ```text
//! client eth0 ── uplink0 [xdp_lb] node0 [xdp_lb] fab0 ── fab0 [xdp_lb] node1
//! [xdp_pass]               (xlb agent)                   (xlb agent)
//!                               │                              │
//!                    pod<i> [tc_lb] ── eth0 n0-pod<i>   pod<i> [tc_lb] ── eth0 n1-pod<i>
//! ```
//! Each agent runs `xlb agent --config FILE` on a file of its own that holds
//! the node's `node:` section (its name, `node<i>`, and its addresses: its
//! uplink's and its fabric end's) and the same Kubernetes `Service` and
//! `EndpointSlice` documents as every other node's ([`KubeService`] writes
//! them from the pods' addresses). The agent attaches `xdp_lb` to the node's
//! uplink and fabric end (`--interface`) and `tc_lb` to every pod veth
//! (`--pod-interfaces 'pod*'`), pins on the rig's bpffs under `node<i>`,
//! and takes the node's fabric address as its source-NAT address (the other
//! node routes it back; the client LAN it does not) and hairpin sources
//! inside the VIP range, which the pods route via their node like the rest
//! of the rig. Both agents share one Maglev hash seed.
//!
//! The client's `eth0` runs `xdp_pass` from a datapath of the rig's own: a
//! redirect into a veth delivers only when its far end runs XDP (DESIGN.md,
//! "Known pitfalls"); the fabric link's far ends run the agents' `xdp_lb`.
//!
//! Dropping the rig kills the agents (their logs are printed when a test
//! panics), stops the servers and removes the namespaces and the bpffs,
//! which ends every program and pin.
use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tracing::{debug, warn};
use xdp_lb::{AttachMode, Attachment, Datapath, LoadOptions, ProgramName};

use crate::{
    Error, Spawned,
    agent_rig::{CLI_TIMEOUT, XlbClient, output_within, print_logs, wait_agent_ready},
    fabric::{Fabric, HAIRPIN_SOURCE_V4, HAIRPIN_SOURCE_V6, HASH_SEED, PodRef, SIZES, Shape},
    topology::{Family, Options},
    wait::wait_for,
};

/// Nodes in the rig.
pub const NODES: usize = 2;
/// The glob the agents attach `tc_lb` by: the host sides of the pod veths.
pub const POD_INTERFACES: &str = "pod*";
/// The namespace of every Kubernetes object of the rig.
pub const NAMESPACE: &str = "default";
/// How long a starting agent may take to attach and program its first sync.
pub const AGENT_READY: Duration = Duration::from_secs(30);
/// How long an agent may take to notice a rewritten file (it polls every
/// second) and program it.
pub const RELOAD: Duration = Duration::from_secs(10);
/// Where each agent serves `/metrics`, inside its node's namespace.
pub const METRICS_ADDRESS: &str = "127.0.0.1:10256";

/// The name of node `i` (its `node:` section's and its endpoints' `nodeName`).
pub fn node_name(i: usize) -> String {
    format!("node{i}")
}

/// A Service's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    const fn name(self) -> &'static str {
        match self {
            Self::ClusterIp => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// An endpoint's conditions (KEP-1669).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `ready: true, serving: true, terminating: false`.
    Ready,
    /// `ready: false, serving: true, terminating: true`: a pod shutting down
    /// that still answers.
    ServingTerminating,
}

impl Condition {
    fn json(self) -> Value {
        match self {
            Self::Ready => json!({"ready": true, "serving": true, "terminating": false}),
            Self::ServingTerminating => {
                json!({"ready": false, "serving": true, "terminating": true})
            }
        }
    }
}

/// A dual-stack TCP Service of one unnamed port in [`NAMESPACE`], with its
/// endpoints: the documents a cluster would hold for it (the Service and one
/// EndpointSlice per family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeService {
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`.
    pub service_type: ServiceType,
    /// The ClusterIPs: plan VIP number `n` of both families.
    pub cluster_ip: u16,
    /// `spec.ports[0].port`.
    pub port: u16,
    /// `spec.ports[0].targetPort`, and the EndpointSlices' port.
    pub target_port: u16,
    /// `spec.ports[0].nodePort` (NodePort and LoadBalancer only).
    pub node_port: Option<u16>,
    /// `externalTrafficPolicy: Local` (else `Cluster`, for NodePort and
    /// LoadBalancer Services).
    pub external_local: bool,
    /// `spec.healthCheckNodePort` (LoadBalancer with `Local` only).
    pub health_check_node_port: Option<u16>,
    /// `sessionAffinity: ClientIP` (with the default timeout).
    pub client_ip_affinity: bool,
    /// The endpoints: pods and their conditions.
    pub endpoints: Vec<(PodRef, Condition)>,
}

impl KubeService {
    /// A ClusterIP Service on plan VIP `cluster_ip`, `port` → `target_port`
    /// of the ready pods `pods`.
    pub fn cluster_ip(
        name: &str,
        cluster_ip: u16,
        port: u16,
        target_port: u16,
        pods: &[PodRef],
    ) -> Self {
        Self {
            name: name.to_owned(),
            service_type: ServiceType::ClusterIp,
            cluster_ip,
            port,
            target_port,
            node_port: None,
            external_local: false,
            health_check_node_port: None,
            client_ip_affinity: false,
            endpoints: pods.iter().map(|&p| (p, Condition::Ready)).collect(),
        }
    }

    /// [`Self::cluster_ip`] of type NodePort, `externalTrafficPolicy:
    /// Cluster`, on `node_port`.
    pub fn node_port(
        name: &str,
        cluster_ip: u16,
        port: u16,
        target_port: u16,
        node_port: u16,
        pods: &[PodRef],
    ) -> Self {
        Self {
            service_type: ServiceType::NodePort,
            node_port: Some(node_port),
            ..Self::cluster_ip(name, cluster_ip, port, target_port, pods)
        }
    }

    /// Sets the conditions of the endpoint `pod`; false when it has none.
    pub fn set_condition(&mut self, pod: PodRef, condition: Condition) -> bool {
        let mut found = false;
        for (at, c) in &mut self.endpoints {
            if *at == pod {
                *c = condition;
                found = true;
            }
        }
        found
    }

    /// The Service and its EndpointSlices (IPv4, IPv6), as JSON (which is
    /// YAML) documents, with `fabric`'s pod addresses.
    pub fn documents(&self, fabric: &Fabric) -> Vec<Value> {
        let cluster_ips: Vec<String> = Family::ALL
            .iter()
            .map(|&f| crate::fabric::cluster_ip(self.cluster_ip, f).to_string())
            .collect();
        let mut port =
            json!({"port": self.port, "targetPort": self.target_port, "protocol": "TCP"});
        if let Some(node_port) = self.node_port {
            port["nodePort"] = json!(node_port);
        }
        let mut spec = json!({
            "type": self.service_type.name(),
            "ipFamilyPolicy": "RequireDualStack",
            "ipFamilies": ["IPv4", "IPv6"],
            "clusterIP": cluster_ips[0],
            "clusterIPs": cluster_ips,
            "ports": [port],
        });
        if self.service_type != ServiceType::ClusterIp {
            spec["externalTrafficPolicy"] = json!(if self.external_local {
                "Local"
            } else {
                "Cluster"
            });
        }
        if let Some(port) = self.health_check_node_port {
            spec["healthCheckNodePort"] = json!(port);
        }
        if self.client_ip_affinity {
            spec["sessionAffinity"] = json!("ClientIP");
        }
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": NAMESPACE},
            "spec": spec,
        });
        let mut documents = vec![service];
        for (family, suffix, address_type) in
            [(Family::V4, "v4", "IPv4"), (Family::V6, "v6", "IPv6")]
        {
            let endpoints: Vec<Value> = self
                .endpoints
                .iter()
                .map(|&(pod, condition)| {
                    json!({
                        "addresses": [fabric.pod_socket(pod, family, 0).ip().to_string()],
                        "nodeName": node_name(pod.node),
                        "conditions": condition.json(),
                    })
                })
                .collect();
            documents.push(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{}-{suffix}", self.name),
                    "namespace": NAMESPACE,
                    "labels": {"kubernetes.io/service-name": self.name},
                },
                "addressType": address_type,
                "ports": [{"port": self.target_port, "protocol": "TCP"}],
                "endpoints": endpoints,
            }));
        }
        documents
    }
}

/// One node's agent: its files, its pins, its process.
#[derive(Debug)]
pub struct NodeAgent {
    /// `xlb` pointed at the agent's admin socket.
    pub client: XlbClient,
    /// The agent's configuration file.
    pub config: PathBuf,
    /// The agent's pin directory, on the rig's bpffs.
    pub pin_dir: PathBuf,
    /// The interfaces the agent attaches `xdp_lb` to.
    pub interfaces: Vec<String>,
    agent: Option<Spawned>,
    /// The log of every agent started on this node, oldest first.
    logs: Vec<PathBuf>,
}

/// Two nodes with pods, an outside client, and an agent per node; see the
/// module docs.
#[derive(Debug)]
pub struct KubeFabric {
    // Dropped after `Drop::drop` has killed the agents: the client's
    // xdp_pass, then the fabric (servers, then the rig).
    _peer_program: Attachment,
    _peer_datapath: Datapath,
    /// The nodes, pods, links and servers.
    pub fabric: Fabric,
    agents: Vec<NodeAgent>,
    xlb: PathBuf,
}

impl KubeFabric {
    /// Builds two nodes of `pods_per_node` pods and the outside client
    /// (neighbours resolve as they are needed), with `xdp_pass` on the
    /// client's `eth0`. No agent runs yet: write the objects
    /// ([`Self::write_objects`]) and start them ([`Self::start_agents`]).
    pub fn build(xlb: impl Into<PathBuf>, pods_per_node: usize) -> anyhow::Result<Self> {
        let xlb = xlb.into();
        if !xlb.is_file() {
            bail!(
                "the xlb binary {} does not exist: build it first (cargo build -p control-plane)",
                xlb.display()
            );
        }
        let shape = Shape {
            nodes: NODES,
            pods_per_node,
            outside_client: true,
        };
        let mut fabric =
            Fabric::build_plain(shape, &Options::default()).context("building the rig")?;
        let mut datapath = Datapath::load_with(&LoadOptions {
            sizes: SIZES,
            pin_dir: None,
        })
        .map_err(|e| Error::Datapath(Box::new(e)))
        .context("loading the datapath for xdp_pass")?;
        let client = fabric.outside().client.clone();
        let pass = client
            .netns
            .attach_xdp(
                &client.dev,
                &mut datapath,
                ProgramName::XdpPass,
                AttachMode::Native,
            )
            .with_context(|| format!("xdp_pass on {} in {}", client.dev, client.netns))?;
        let workdir = fabric.rig.workdir()?;
        let bpffs = fabric.rig.bpffs()?;
        let agents = (0..NODES)
            .map(|i| {
                let dir = workdir.join(node_name(i));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                Ok(NodeAgent {
                    client: XlbClient::new(xlb.clone(), dir.join("admin.sock")),
                    config: dir.join("xlb.yaml"),
                    pin_dir: bpffs.join(node_name(i)),
                    interfaces: fabric
                        .node_interfaces(i)
                        .iter()
                        .map(|e| e.dev.clone())
                        .collect(),
                    agent: None,
                    logs: Vec::new(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            _peer_program: pass,
            _peer_datapath: datapath,
            fabric,
            agents,
            xlb,
        })
    }

    /// Node `i`'s agent.
    pub fn agent(&self, i: usize) -> &NodeAgent {
        &self.agents[i]
    }

    /// Node `i`'s addresses (its uplink's, then its fabric end's), where its
    /// NodePorts and healthCheckNodePorts are served.
    pub fn node_addresses(&self, i: usize, family: Family) -> Vec<IpAddr> {
        self.fabric
            .node_interfaces(i)
            .iter()
            .map(|e| e.ip(family))
            .collect()
    }

    /// Node `i`'s source-NAT address of `family`: its fabric address.
    pub fn snat_source(&self, i: usize, family: Family) -> IpAddr {
        self.fabric.fabric[i].ip(family)
    }

    /// Node `i`'s configuration file: its `node:` section, then the
    /// documents of `services`.
    pub fn config_yaml(&self, i: usize, services: &[KubeService]) -> anyhow::Result<String> {
        let addresses: Vec<String> = Family::ALL
            .iter()
            .flat_map(|&f| self.node_addresses(i, f))
            .map(|a| a.to_string())
            .collect();
        let node = json!({"node": {"name": node_name(i), "addresses": addresses}});
        let mut yaml = format!(
            "# node {i}'s agent: its node section, then the cluster's objects\n{}\n",
            serde_json::to_string_pretty(&node)?
        );
        for document in services.iter().flat_map(|s| s.documents(&self.fabric)) {
            let _ = write!(yaml, "---\n{}\n", serde_json::to_string_pretty(&document)?);
        }
        Ok(yaml)
    }

    /// Writes every node's configuration file for `services` (a new file
    /// renamed over the old one: an agent never reads half of it).
    pub fn write_objects(&self, services: &[KubeService]) -> anyhow::Result<()> {
        for (i, agent) in self.agents.iter().enumerate() {
            let yaml = self.config_yaml(i, services)?;
            let partial = agent.config.with_extension("yaml.new");
            std::fs::write(&partial, yaml)
                .with_context(|| format!("writing {}", partial.display()))?;
            std::fs::rename(&partial, &agent.config)
                .with_context(|| format!("renaming {}", partial.display()))?;
        }
        Ok(())
    }

    /// The `xlb agent` command line of node `i` (without the program).
    pub fn agent_args(&self, i: usize) -> Vec<String> {
        let agent = &self.agents[i];
        let mut args: Vec<String> = [
            "agent",
            "--config",
            &agent.config.to_string_lossy(),
            "--interface",
            &agent.interfaces.join(","),
            "--pod-interfaces",
            POD_INTERFACES,
            "--pin-dir",
            &agent.pin_dir.to_string_lossy(),
            "--admin-socket",
            &agent.client.socket().to_string_lossy(),
            "--metrics-address",
            METRICS_ADDRESS,
            "--hash-seed",
            &HASH_SEED.to_string(),
            "--hairpin-source",
            &HAIRPIN_SOURCE_V4.to_string(),
            "--hairpin-source",
            &HAIRPIN_SOURCE_V6.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        for family in Family::ALL {
            args.push("--snat-source".to_owned());
            args.push(self.snat_source(i, family).to_string());
        }
        args
    }

    /// `xlb check-config` on node `i`'s file: its summary, or an error with
    /// every problem the file has.
    pub fn check_config(&self, i: usize) -> anyhow::Result<String> {
        let config = &self.agents[i].config;
        let mut command = Command::new(&self.xlb);
        command.arg("check-config").arg(config);
        let output = output_within(command, CLI_TIMEOUT)
            .with_context(|| format!("xlb check-config {}", config.display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            bail!(
                "xlb check-config {} ({}):\n{stderr}",
                config.display(),
                output.status
            );
        }
        Ok(format!(
            "{}{stderr}",
            String::from_utf8_lossy(&output.stdout)
        ))
    }

    /// Starts every node's agent on its file (write them first; each is
    /// checked with `xlb check-config` first, for a clear error) and waits
    /// until each says its first sync is programmed and its interfaces are
    /// attached, then until `tc_lb` is on every pod veth.
    pub fn start_agents(&mut self) -> anyhow::Result<()> {
        for i in 0..NODES {
            let checked = self.check_config(i)?;
            debug!(node = i, "{}", checked.trim_end());
        }
        for i in 0..NODES {
            if let Some(agent) = &self.agents[i].agent {
                bail!("node {i}'s agent (pid {}) runs already", agent.pid);
            }
            let args = self.agent_args(i);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let netns = self.fabric.nodes[i].netns.clone();
            let spawned = self
                .fabric
                .rig
                .spawn(&netns, &self.xlb.to_string_lossy(), &args)?;
            self.agents[i].logs.push(spawned.log.clone());
            self.agents[i].agent = Some(spawned);
        }
        for i in 0..NODES {
            let pid = self.agents[i].agent.as_ref().map_or(0, |a| a.pid);
            let client = self.agents[i].client.clone();
            let interfaces = self.agents[i].interfaces.clone();
            let interfaces: Vec<&str> = interfaces.iter().map(String::as_str).collect();
            wait_agent_ready(&mut self.fabric.rig, pid, &client, &interfaces, AGENT_READY)
                .with_context(|| format!("node {i}'s agent (pid {pid})"))?;
        }
        for i in 0..NODES {
            let pods: Vec<String> = self.fabric.nodes[i]
                .pods
                .iter()
                .map(|p| p.host_side.dev.clone())
                .collect();
            let mut missing = Vec::new();
            wait_for(AGENT_READY, "tc_lb on every pod veth", || {
                missing = self.pod_links_missing(i, &pods);
                Ok(missing.is_empty().then_some(()))
            })
            .with_context(|| format!("node {i}: no pinned tcx link {missing:?}"))?;
        }
        Ok(())
    }

    /// The pins of `pods`' tcx links that node `i`'s agent has not made
    /// (`<pin-dir>/pods/{ingress,egress}/<dev>`, which the agent pins once
    /// `tc_lb` is attached; this machine's bpftool is too old to list tcx
    /// programs).
    pub fn pod_links_missing(&self, i: usize, pods: &[String]) -> Vec<PathBuf> {
        let links = self.agents[i].pin_dir.join("pods");
        let mut missing = Vec::new();
        for hook in ["ingress", "egress"] {
            for dev in pods {
                let pin = links.join(hook).join(dev);
                if !pin.exists() {
                    missing.push(pin);
                }
            }
        }
        missing
    }

    /// The exit status of node `i`'s agent if it has exited.
    pub fn agent_exit(&mut self, i: usize) -> anyhow::Result<Option<std::process::ExitStatus>> {
        match &self.agents[i].agent {
            Some(agent) => {
                let pid = agent.pid;
                Ok(self.fabric.rig.process_status(pid)?)
            }
            None => Ok(None),
        }
    }

    /// `xlb status -o json` of node `i`'s agent.
    pub fn status(&self, i: usize) -> anyhow::Result<Value> {
        self.agents[i].client.status()
    }

    /// `xlb stats -o json` of node `i`'s agent.
    pub fn stats(&self, i: usize) -> anyhow::Result<Value> {
        self.agents[i].client.json(&["stats"])
    }

    /// Node `i`'s verdict counter `name` (`drop_no_backend`, ...), from
    /// `xlb stats`.
    pub fn verdict(&self, i: usize, name: &str) -> anyhow::Result<u64> {
        Ok(self.stats(i)?["verdicts"][name].as_u64().unwrap_or(0))
    }

    /// Good reloads of every node's agent so far (`xlb status`).
    pub fn reloads(&self) -> anyhow::Result<Vec<u64>> {
        (0..NODES)
            .map(|i| {
                let status = self.status(i)?;
                status["reloads_ok"]
                    .as_u64()
                    .with_context(|| format!("node {i}: no reloads_ok in {status}"))
            })
            .collect()
    }

    /// Writes `services` and waits until every agent has loaded the new
    /// files (one more good reload each than before); an agent that rejects
    /// its file fails at once, with its error.
    pub fn rewrite_objects(&self, services: &[KubeService]) -> anyhow::Result<()> {
        let before = self.reloads()?;
        let failed_before: Vec<u64> = (0..NODES)
            .map(|i| Ok(self.status(i)?["reloads_failed"].as_u64().unwrap_or(0)))
            .collect::<anyhow::Result<_>>()?;
        self.write_objects(services)?;
        for i in 0..NODES {
            let mut last = Value::Null;
            let waited = wait_for(RELOAD, "the agent to reload its file", || {
                let status = self.status(i).map_err(|e| Error::Io {
                    what: format!("node {i}: xlb status"),
                    source: std::io::Error::other(format!("{e:#}")),
                })?;
                let ok = status["reloads_ok"].as_u64().unwrap_or(0);
                let failed = status["reloads_failed"].as_u64().unwrap_or(0);
                if failed > failed_before[i] {
                    return Err(Error::Invalid {
                        what: "rewritten configuration",
                        input: status["last_reload"].to_string(),
                        expected: "a file the agent accepts",
                    });
                }
                last = status;
                Ok((ok > before[i]).then_some(()))
            });
            waited.with_context(|| format!("node {i}: last status {last}"))?;
        }
        Ok(())
    }

    /// Every agent's log, each under a heading.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, agent) in self.agents.iter().enumerate() {
            for log in &agent.logs {
                let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("({e})"));
                let _ = writeln!(out, "--- node {i}'s agent: {}\n{text}", log.display());
            }
        }
        out
    }

    /// The configuration file of node `i`, as written.
    pub fn config_path(&self, i: usize) -> &Path {
        &self.agents[i].config
    }

    /// `ip(family):port` on node `i`'s first address (its uplink's on node
    /// 0, its fabric end's on node 1).
    pub fn node_socket(&self, i: usize, family: Family, port: u16) -> SocketAddr {
        SocketAddr::new(self.node_addresses(i, family)[0], port)
    }
}

impl Drop for KubeFabric {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs(&self.logs());
        }
        for i in 0..self.agents.len() {
            if let Some(agent) = self.agents[i].agent.take()
                && let Err(e) = self.fabric.rig.stop_process(agent.pid)
            {
                warn!(pid = agent.pid, error = %e, "could not kill an agent");
            }
        }
    }
}
