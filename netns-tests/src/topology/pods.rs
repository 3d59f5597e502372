//! Kubernetes-like nodes: a node namespace with a veth per pod.
use super::{
    Endpoint, Options, endpoint, pin,
    plan::{CLIENT_LAN, FABRIC_LAN, MAX_PODS, Subnet},
    route_rig_via,
};
use crate::{Error, HostKind, Offloads, Result, Rig, Route, VethOptions};

/// A pod: its own namespace, linked to its node by a veth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// The pod's `eth0` (host .2 of its /30 and ::2 of its /64).
    pub eth0: Endpoint,
    /// The node's end of the pod's veth (`pod<i>`, host .1 and ::1): the
    /// pod's gateway, where the TC program goes.
    pub host_side: Endpoint,
}

/// A node namespace with its pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub netns: crate::Netns,
    pub pods: Vec<Pod>,
    /// Every pod address of this node lies in this range.
    pub pod_range: Subnet,
}

/// One node (`node0`, forwarding on) with `pods` pods.
///
/// The node is wire-like (its future uplinks stand for NICs), but the node
/// ends of the pod veths keep the kernel defaults, as on a real node; pods
/// are pod-like. Each pod routes the whole rig range via its node.
#[derive(Debug)]
pub struct NodeWithPods {
    pub rig: Rig,
    pub node: Node,
}

impl NodeWithPods {
    /// Builds a node with `pods` pods (1 to 64).
    pub fn build(pods: usize, options: &Options) -> Result<Self> {
        let mut rig = options.rig()?;
        let node = build_node(&mut rig, 0, pods, options)?;
        Ok(Self { rig, node })
    }
}

/// Two nodes linked by a veth "fabric" (`fab0` on both, LAN 2 .1 and .2),
/// each with its pods and a route to the other's pod range.
#[derive(Debug)]
pub struct TwoNodes {
    pub rig: Rig,
    pub nodes: [Node; 2],
    /// The fabric interfaces of node 0 and node 1.
    pub fabric: [Endpoint; 2],
}

impl TwoNodes {
    /// Builds two nodes with `pods_per_node` pods each (1 to 64).
    pub fn build(pods_per_node: usize, options: &Options) -> Result<Self> {
        let mut rig = options.rig()?;
        let node0 = build_node(&mut rig, 0, pods_per_node, options)?;
        let node1 = build_node(&mut rig, 1, pods_per_node, options)?;
        let link =
            rig.add_veth_with(&node0.netns, "fab0", &node1.netns, "fab0", &options.veth())?;
        let lan = Subnet::lan(FABRIC_LAN);
        let fab0 = endpoint(&mut rig, &link.a, &link.b, lan.host(1))?;
        let fab1 = endpoint(&mut rig, &link.b, &link.a, lan.host(2))?;
        pin(&rig, options, &[&fab0, &fab1])?;
        for (from, to, via) in [(&node0, &node1, &fab1), (&node1, &node0, &fab0)] {
            let v4 = Route::to(to.pod_range.v4).via(via.v4.into());
            let v6 = Route::to(to.pod_range.v6).via(via.v6.into());
            rig.add_route(&from.netns, &v4)?;
            rig.add_route(&from.netns, &v6)?;
        }
        Ok(Self {
            rig,
            nodes: [node0, node1],
            fabric: [fab0, fab1],
        })
    }
}

fn build_node(rig: &mut Rig, index: usize, pods: usize, options: &Options) -> Result<Node> {
    if !(1..=MAX_PODS).contains(&pods) {
        return Err(Error::Invalid {
            what: "pods per node",
            input: pods.to_string(),
            expected: "1 to 64",
        });
    }
    let pod_range = Subnet::pods_of_node(index)?;
    let netns = rig.add_host(&format!("node{index}"), HostKind::Wire)?;
    rig.enable_forwarding(&netns)?;
    let veth_options = VethOptions {
        // The node's end of a pod veth is a plain host-side veth.
        offloads_b: Some(Offloads::KEEP),
        ..options.veth()
    };
    let pods = (0..pods)
        .map(|i| {
            let pod_ns = rig.add_host(&format!("n{index}-pod{i}"), HostKind::Pod)?;
            let link =
                rig.add_veth_with(&pod_ns, "eth0", &netns, &format!("pod{i}"), &veth_options)?;
            let subnet = Subnet::pod(index, i)?;
            let host_side = endpoint(rig, &link.b, &link.a, subnet.host(1))?;
            let eth0 = endpoint(rig, &link.a, &link.b, subnet.host(2))?;
            route_rig_via(rig, &pod_ns, &host_side)?;
            pin(rig, options, &[&eth0, &host_side])?;
            Ok(Pod { eth0, host_side })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Node {
        netns,
        pods,
        pod_range,
    })
}

/// A wire-like host outside the nodes (`client`, `eth0`), linked to node 0
/// by an uplink (`uplink0` in the node), as a machine on the node's network
/// reaches a NodePort: the client LAN ([`CLIENT_LAN`]), node .1, client .2.
///
/// Both ends are wire-like (TX checksum offload off: what crosses the uplink
/// carries full checksums, as from a NIC), so `xdp_lb` goes on `uplink0`.
/// The client routes the whole rig range via node 0; no other node has a
/// route to the client LAN, so a reply that does not come back through node
/// 0 is lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutsideClient {
    /// The client's `eth0`.
    pub client: Endpoint,
    /// Node 0's `uplink0`: the client's gateway, and a node address.
    pub uplink: Endpoint,
}

impl NodeWithPods {
    /// Adds an [`OutsideClient`] on the node's uplink.
    pub fn add_outside_client(&mut self, options: &Options) -> Result<OutsideClient> {
        outside_client(&mut self.rig, &self.node, options)
    }
}

impl TwoNodes {
    /// Adds an [`OutsideClient`] on node 0's uplink.
    pub fn add_outside_client(&mut self, options: &Options) -> Result<OutsideClient> {
        outside_client(&mut self.rig, &self.nodes[0], options)
    }
}

fn outside_client(rig: &mut Rig, node: &Node, options: &Options) -> Result<OutsideClient> {
    let client_ns = rig.add_host("client", HostKind::Wire)?;
    let link = rig.add_veth_with(&client_ns, "eth0", &node.netns, "uplink0", &options.veth())?;
    let lan = Subnet::lan(CLIENT_LAN);
    let client = endpoint(rig, &link.a, &link.b, lan.host(2))?;
    let uplink = endpoint(rig, &link.b, &link.a, lan.host(1))?;
    route_rig_via(rig, &client_ns, &uplink)?;
    pin(rig, options, &[&client, &uplink])?;
    Ok(OutsideClient { client, uplink })
}
