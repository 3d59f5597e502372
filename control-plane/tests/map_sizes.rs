//! The reconciler against a real datapath whose maps are tiny: a
//! configuration that does not fit is refused before anything is written,
//! and the maps go on holding what they held. Loads the datapath (root),
//! attaches nothing and sends nothing.

use std::net::SocketAddr;

use consistent_hash::SizingPolicy;
use control_plane::{
    model::{Model, ServiceName},
    reconcile::{Desired, Reconciler, SyncError},
    source::file,
};
use xdp_lb::{AddressKind, BackendRecord, Datapath, Frontend, LoadOptions, MapSizes};

/// 4 frontends, 3 service IDs and 4 client networks, 3 backend IDs, 2
/// frontend addresses.
const TINY: MapSizes = MapSizes {
    services: 4,
    backends: 4,
    conntrack: 64,
    addresses: 2,
    fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
};

type Frontends = Vec<(Frontend, u32)>;
type Backends = Vec<(u32, BackendRecord)>;
type Tables = Vec<(u32, Option<Vec<u32>>)>;
type Addresses = Vec<(std::net::IpAddr, AddressKind)>;
type SourceRanges = Vec<(u32, std::net::IpAddr, u8)>;

/// Everything the reconciler writes, read back from the maps, sorted.
fn contents(dp: &Datapath) -> (Frontends, Backends, Tables, Addresses, SourceRanges) {
    let mut frontends: Frontends = dp
        .frontends()
        .expect("frontends")
        .into_iter()
        .map(|(frontend, id, _)| (frontend, id))
        .collect();
    frontends.sort_unstable_by_key(|(f, _)| (f.addr, f.proto.number()));
    let mut backends = dp.backends().expect("backends");
    backends.sort_unstable_by_key(|&(id, _)| id);
    let tables = dp
        .table_ids()
        .expect("table IDs")
        .into_iter()
        .map(|id| (id, dp.table(id).expect("table")))
        .collect();
    let mut addresses = dp.addresses().expect("addresses");
    addresses.sort_unstable_by_key(|&(addr, _)| addr);
    let source_ranges = dp.source_ranges().expect("source ranges");
    (frontends, backends, tables, addresses, source_ranges)
}

fn model(yaml: &str) -> Model {
    file::parse(yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// A datapath with the `TINY` maps (as root), and a reconciler for it.
fn tiny() -> (Datapath, Reconciler) {
    let dp = Datapath::load_with(&LoadOptions {
        sizes: TINY,
        pin_dir: None,
    })
    .expect("load the datapath (as root)");
    let reconciler = Reconciler::new(1, SizingPolicy::default(), dp.sizes());
    (dp, reconciler)
}

fn desired(m: &Model) -> Desired {
    Desired::new(m, |_: &ServiceName, _: SocketAddr| true)
}

#[test]
fn a_configuration_too_big_for_the_maps_leaves_them_as_they_were() {
    let (mut dp, mut reconciler) = tiny();
    let running = model(
        "\
services:
  - name: web
    frontends: [{address: 198.18.100.1, port: 80}]
    backends: [{address: \"198.18.2.1:8080\"}, {address: \"198.18.2.2:8080\"}]
  - name: api
    frontends: [{address: 198.18.100.1, port: 443}]
    backends: [{address: \"198.18.2.3:8080\"}]
",
    );
    reconciler
        .sync(&desired(&running), &mut dp)
        .expect("the running configuration fits");
    let before = contents(&dp);
    assert_eq!(before.0.len(), 2, "{before:?}");

    // web loses a backend, api goes and dns brings three frontends: five
    // at once, as api's frontend goes only after dns's are written. This
    // was written until SERVICES was full — web's table patched, two of
    // dns's three frontends live, api still there — and failed with E2BIG.
    let bigger = model(
        "\
services:
  - name: web
    frontends: [{address: 198.18.100.1, port: 80}]
    backends: [{address: \"198.18.2.1:8080\"}]
  - name: dns
    protocol: UDP
    frontends:
      - {address: 198.18.100.1, port: 53}
      - {address: 198.18.100.1, port: 5353}
      - {address: 198.18.100.1, port: 5354}
    backends: [{address: \"198.18.2.1:8080\"}]
",
    );
    let refused = reconciler
        .sync(&desired(&bigger), &mut dp)
        .expect_err("5 frontends at once in a map of 4");
    assert!(matches!(refused, SyncError::DoesNotFit(_)), "{refused:?}");
    assert_eq!(
        refused.to_string(),
        "the configuration needs 4 frontends, plus 1 of those it drops, which stay programmed \
         until the new ones are written: 5 at once, but --max-services is 4: raise \
         --max-services, or make the removals a change of their own first (nothing was written)"
    );
    assert_eq!(contents(&dp), before, "the maps hold what they held");

    // Without api first, it fits.
    let web_only = model(
        "\
services:
  - name: web
    frontends: [{address: 198.18.100.1, port: 80}]
    backends: [{address: \"198.18.2.1:8080\"}]
",
    );
    reconciler.sync(&desired(&web_only), &mut dp).expect("fits");
    reconciler.sync(&desired(&bigger), &mut dp).expect("fits");
    let after = contents(&dp);
    assert_eq!(after.0.len(), 4, "{after:?}");
}

#[test]
fn too_many_client_networks_leave_the_maps_as_they_were() {
    let (mut dp, mut reconciler) = tiny();
    // A LoadBalancer Service of two ports: two xlb services, each with the
    // Service's networks (and its cluster IP and ingress IP: 4 frontends).
    let lb = |ranges: &str| {
        model(&format!(
            "\
apiVersion: v1
kind: Service
metadata: {{name: lb, namespace: shop}}
spec:
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  clusterIP: 198.18.100.1
  ports:
    - {{name: http, port: 80}}
    - {{name: https, port: 443}}
  loadBalancerSourceRanges: {ranges}
status:
  loadBalancer:
    ingress: [{{ip: 198.18.100.2}}]
"
        ))
    };
    reconciler
        .sync(&desired(&lb("[198.18.0.0/24]")), &mut dp)
        .expect("the running configuration fits");
    let before = contents(&dp);
    assert_eq!(before.4.len(), 2, "{before:?}");

    // Two networks instead of one: http's go in while both old ones are
    // there (4), then https's while its old one is (5). This was written
    // until SOURCE_RANGES was full — http's networks replaced, one of
    // https's two written — and failed with ENOSPC.
    let two = lb("[198.18.1.0/24, 198.18.2.0/24]");
    let refused = reconciler
        .sync(&desired(&two), &mut dp)
        .expect_err("5 networks at once in a trie of 4");
    assert!(matches!(refused, SyncError::DoesNotFit(_)), "{refused:?}");
    assert_eq!(
        refused.to_string(),
        "the configuration needs 4 client networks of loadBalancerSourceRanges (one entry per \
         network and Service port), plus 1 of those it drops, which stay programmed until the \
         new ones are written: 5 at once, but --max-services is 4: raise --max-services, or make \
         the removals a change of their own first (nothing was written)"
    );
    assert_eq!(contents(&dp), before, "the maps hold what they held");

    // One new network at a time, it fits.
    reconciler
        .sync(&desired(&lb("[198.18.1.0/24]")), &mut dp)
        .expect("fits");
    reconciler.sync(&desired(&two), &mut dp).expect("fits");
    let after = contents(&dp);
    let ids: Vec<u32> = after.4.iter().map(|&(id, ..)| id).collect();
    assert_eq!(after.4.len(), 4, "{after:?}");
    assert!(
        ids[0] == ids[1] && ids[2] == ids[3] && ids[1] != ids[2],
        "{after:?}"
    );
}
