//! The reconciler against [`MemoryTarget`], which refuses any write that
//! would break make-before-break.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use consistent_hash::SizingPolicy;
use proptest::prelude::*;
use xdp_lb::{AddressKind, MapSizes};

use super::{
    Desired, DoesNotFit, MemoryTarget, Quantity, Reconciler, Recovered, SyncError, SyncReport,
};
use crate::model::{
    Backend, BackendState, Frontend, FrontendKind, Mode, Model, Protocol, Service, ServiceName,
};

const SEED: u64 = 7;

fn backend(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::from([198, 18, 2, i]), 8080)
}

fn vip(i: u8) -> IpAddr {
    IpAddr::from([198, 18, 100, i])
}

fn service(vip_index: u8, backends: &[(u8, BackendState)]) -> Service {
    Service {
        protocol: Protocol::Tcp,
        frontends: vec![Frontend {
            addr: vip(vip_index),
            port: 80,
            protocol: Protocol::Tcp,
            kind: FrontendKind::Vip,
            snat_remote: false,
            source_ranges_only: false,
        }],
        backends: backends
            .iter()
            .map(|&(i, state)| Backend {
                addr: backend(i),
                weight: 1,
                state,
                local: false,
            })
            .collect(),
        mode: Mode::Nat,
        affinity: None,
        health_check: None,
        drop_without_backends: false,
        source_ranges: Vec::new(),
    }
}

/// Client network `i`: 198.19.i.0/24.
fn network(i: u8) -> (IpAddr, u8) {
    (IpAddr::from([198, 19, i, 0]), 24)
}

/// `service` with only client networks `networks` reaching its frontends
/// (none: every client), as a Kubernetes LoadBalancer Service's ingress IP
/// with `loadBalancerSourceRanges`.
fn ranged(mut service: Service, networks: &[u8]) -> Service {
    service.source_ranges = networks.iter().map(|&i| network(i)).collect();
    for frontend in &mut service.frontends {
        frontend.source_ranges_only = !networks.is_empty();
    }
    service
}

fn model(services: impl IntoIterator<Item = (&'static str, Service)>) -> Model {
    Model {
        services: services
            .into_iter()
            .map(|(n, s)| (ServiceName(n.to_owned()), s))
            .collect(),
    }
}

fn active(ids: &[u8]) -> Vec<(u8, BackendState)> {
    ids.iter().map(|&i| (i, BackendState::Active)).collect()
}

fn all_healthy(_: &ServiceName, _: SocketAddr) -> bool {
    true
}

/// Room for everything the tests program.
const SIZES: MapSizes = MapSizes {
    services: 64,
    backends: 64,
    conntrack: 64,
    addresses: 64,
    fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
};

fn reconciler() -> Reconciler {
    Reconciler::new(SEED, SizingPolicy::default(), SIZES)
}

fn sync(r: &mut Reconciler, m: &Model, t: &mut MemoryTarget) -> SyncReport {
    r.sync(&Desired::new(m, all_healthy), t).expect("sync")
}

/// Asserts the target holds exactly `m`: each frontend names its service's
/// ID, whose table holds exactly the active backends, all live, and whose
/// client networks are exactly the service's.
fn assert_programs(r: &Reconciler, m: &Model, t: &MemoryTarget) {
    assert_programs_with(r, m, t, all_healthy);
}

/// [`assert_programs`] with some backends down.
fn assert_programs_with(
    r: &Reconciler,
    m: &Model,
    t: &MemoryTarget,
    healthy: impl Fn(&ServiceName, SocketAddr) -> bool,
) {
    let desired = Desired::new(m, healthy);
    let mut frontends = BTreeMap::new();
    let mut networks = BTreeMap::new();
    for (name, service) in &desired.services {
        let id = r.service_id(name).expect("service has an ID");
        if !service.source_ranges.is_empty() {
            networks.insert(id, service.source_ranges.clone());
        }
        for &(addr, proto) in &service.frontends {
            frontends.insert(
                (addr, xdp_lb::Protocol::from(proto).number()),
                (id, service.options_for(&(addr, proto))),
            );
        }
        let table = t.tables.get(&id);
        if service.members.is_empty() {
            assert!(table.is_none(), "{name}: no members, no table");
            continue;
        }
        let table = table.expect("table");
        let named: BTreeSet<u32> = table.iter().copied().collect();
        let members: BTreeSet<u32> = service
            .members
            .iter()
            .map(|(a, _)| r.backend(*a).expect("member has a record").id)
            .collect();
        assert_eq!(
            named, members,
            "{name}: the table names exactly its members"
        );
        assert_eq!(Some(table.as_slice()), r.table(name));
    }
    assert_eq!(t.frontends, frontends);
    assert_eq!(t.source_ranges, networks);
    let live: BTreeSet<SocketAddr> = desired
        .services
        .iter()
        .flat_map(|(_, s)| s.live.iter().copied())
        .collect();
    let programmed_live: BTreeSet<SocketAddr> =
        t.backends.values().filter(|b| b.2).map(|b| b.0).collect();
    assert_eq!(programmed_live, live);
    assert_eq!(
        t.addresses.keys().copied().collect::<BTreeSet<_>>(),
        desired.addresses.iter().map(|&(a, _)| a).collect()
    );
}

#[test]
fn first_sync_programs_everything_and_a_second_writes_nothing() {
    let m = model([("web", service(1, &active(&[1, 2, 3])))]);
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    let report = sync(&mut r, &m, &mut t);
    assert_eq!(report.backends_written, 3);
    assert_eq!(report.tables_swapped, 1);
    assert_eq!(report.frontends_written, 1);
    assert_eq!(t.addresses.get(&vip(1)), Some(&AddressKind::Vip));
    assert_eq!(t.tables.values().next().map(Vec::len), Some(509));
    assert_programs(&r, &m, &t);
    assert!(sync(&mut r, &m, &mut t).is_empty());
}

#[test]
fn removing_a_backend_patches_its_slots_then_retires_it() {
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(
        &mut r,
        &model([("web", service(1, &active(&[1, 2, 3, 4])))]),
        &mut t,
    );
    let gone = r.backend(backend(4)).expect("record").id;
    let before = r.table(&ServiceName("web".into())).expect("table").to_vec();
    let held = before.iter().filter(|&&b| b == gone).count();

    let m = model([("web", service(1, &active(&[1, 2, 3])))]);
    let report = sync(&mut r, &m, &mut t);
    assert_eq!(report.tables_swapped, 0, "same size: patched in place");
    assert_eq!(report.tables_patched, 1);
    // Maglev moves the removed backend's slots and a few others.
    assert!(report.slots_patched >= held && report.slots_patched < held * 2);
    assert_eq!(report.backends_retired, 1);
    assert!(!t.backends[&gone].2, "retired");
    assert_programs(&r, &m, &t);
}

#[test]
fn a_draining_backend_keeps_its_record_but_leaves_the_table() {
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(
        &mut r,
        &model([("web", service(1, &active(&[1, 2, 3])))]),
        &mut t,
    );
    let drained = r.backend(backend(2)).expect("record");
    let mut backends = active(&[1, 3]);
    backends.push((2, BackendState::Draining));
    let m = model([("web", service(1, &backends))]);
    let report = sync(&mut r, &m, &mut t);
    assert_eq!(report.backends_retired, 0);
    assert!(t.backends[&drained.id].2, "still live");
    let table = r.table(&ServiceName("web".into())).expect("table");
    assert!(!table.contains(&drained.id), "no new flows");
    assert_programs(&r, &m, &t);
}

#[test]
fn an_unhealthy_backend_is_retired_and_returns_with_a_new_generation() {
    let m = model([("web", service(1, &active(&[1, 2, 3])))]);
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(&mut r, &m, &mut t);
    let before = r.backend(backend(3)).expect("record");
    let down = |_: &ServiceName, a: SocketAddr| a != backend(3);
    let report = r.sync(&Desired::new(&m, down), &mut t).expect("sync");
    assert_eq!(report.backends_retired, 1);
    assert!(r.backend(backend(3)).is_none());

    let report = sync(&mut r, &m, &mut t);
    assert_eq!(report.backends_written, 1);
    let after = r.backend(backend(3)).expect("record");
    assert!(
        (after.id, after.generation) != (before.id, before.generation),
        "flows of the old record must not be revived: {before:?} -> {after:?}"
    );
    assert_programs(&r, &m, &t);
}

#[test]
fn an_id_given_to_a_service_or_backend_has_its_counters_zeroed_first() {
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    let web = model([("web", service(1, &active(&[1, 2])))]);
    sync(&mut r, &web, &mut t);
    let web_id = r.service_id(&ServiceName("web".into())).expect("an ID");
    let ids = |r: &Reconciler, backends: &[u8]| -> Vec<u32> {
        backends
            .iter()
            .map(|&i| r.backend(backend(i)).expect("a record").id)
            .collect()
    };
    let web_backends = ids(&r, &[1, 2]);
    assert_eq!(t.service_stats_cleared, vec![web_id]);
    assert_eq!(t.backend_stats_cleared, web_backends);

    // Unchanged, and then gone: nothing more is zeroed.
    sync(&mut r, &web, &mut t);
    sync(&mut r, &model([]), &mut t);
    assert_eq!(t.service_stats_cleared, vec![web_id]);

    // The next service and backends take the freed IDs: zeroed again (the
    // memory target refuses a zeroing while anything points at the ID).
    let api = model([("api", service(2, &active(&[3, 4])))]);
    sync(&mut r, &api, &mut t);
    let api_id = r.service_id(&ServiceName("api".into())).expect("an ID");
    assert_eq!(api_id, web_id, "the lowest free ID is reused");
    assert_eq!(t.service_stats_cleared, vec![web_id, web_id]);
    let api_backends = ids(&r, &[3, 4]);
    assert_eq!(api_backends, web_backends, "backend IDs too");
    assert_eq!(
        t.backend_stats_cleared,
        [web_backends, api_backends].concat()
    );
    assert_programs(&r, &api, &t);
}

#[test]
fn a_programmed_service_is_found_by_its_id_and_its_frontends() {
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    let m = model([
        ("web", service(1, &active(&[1]))),
        ("api", service(2, &active(&[2]))),
    ]);
    sync(&mut r, &m, &mut t);
    let name = |s: &str| ServiceName(s.into());
    let web = r.service_id(&name("web")).expect("an ID");
    let api = r.service_id(&name("api")).expect("an ID");
    assert_eq!(r.service_name(web), Some(&name("web")));
    assert_eq!(r.service_name(api), Some(&name("api")));
    let frontend = |i, protocol| (SocketAddr::new(vip(i), 80), protocol);
    assert_eq!(r.frontend_service(&frontend(1, Protocol::Tcp)), Some(web));
    assert_eq!(r.frontend_service(&frontend(2, Protocol::Tcp)), Some(api));
    assert_eq!(r.frontend_service(&frontend(1, Protocol::Udp)), None);

    // Removed: neither its ID nor its frontend names it any more.
    sync(&mut r, &model([("api", service(2, &active(&[2])))]), &mut t);
    assert_eq!(r.service_name(web), None);
    assert_eq!(r.frontend_service(&frontend(1, Protocol::Tcp)), None);
    assert_eq!(r.service_name(api), Some(&name("api")));
}

#[test]
fn a_restarted_reconciler_keeps_the_counters_of_what_it_recovers() {
    let m = model([("web", service(1, &active(&[1, 2, 3])))]);
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(&mut r, &m, &mut t);
    let zeroed = (
        t.service_stats_cleared.clone(),
        t.backend_stats_cleared.clone(),
    );
    let mut restarted = Reconciler::recover(SEED, SizingPolicy::default(), SIZES, &recovered(&t));
    sync(&mut restarted, &m, &mut t);
    assert_eq!(
        (
            t.service_stats_cleared.clone(),
            t.backend_stats_cleared.clone()
        ),
        zeroed,
        "nothing zeroed by the restart"
    );
}

#[test]
fn a_service_without_usable_backends_keeps_its_frontend_and_loses_its_table() {
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(
        &mut r,
        &model([("web", service(1, &active(&[1, 2])))]),
        &mut t,
    );
    let m = model([("web", service(1, &[]))]);
    let report = sync(&mut r, &m, &mut t);
    assert_eq!(report.tables_removed, 1);
    assert_eq!(report.backends_retired, 2);
    assert_eq!(t.frontends.len(), 1, "the datapath counts drop_no_backend");
    assert_programs(&r, &m, &t);
}

#[test]
fn removing_a_service_removes_frontend_table_address_and_backends() {
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(
        &mut r,
        &model([
            ("web", service(1, &active(&[1, 2]))),
            ("api", service(2, &active(&[2, 3]))),
        ]),
        &mut t,
    );
    let m = model([("api", service(2, &active(&[2, 3])))]);
    let report = sync(&mut r, &m, &mut t);
    assert_eq!(report.frontends_removed, 1);
    assert_eq!(
        t.frontend_flows_deleted,
        vec![(SocketAddr::new(vip(1), 80), 6)],
        "the flows of the frontend too: backend 2 lives on, and the datapath finds a VIP's \
         tracked flows before its service"
    );
    assert_eq!(report.tables_removed, 1);
    assert_eq!(report.addresses_removed, 1);
    assert_eq!(report.backends_retired, 1, "backend 2 is still api's");
    assert_programs(&r, &m, &t);
}

#[test]
fn a_failed_deletion_of_a_removed_frontend_s_flows_is_tried_again_at_the_next_sync() {
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    let both = model([
        ("web", service(1, &active(&[1, 2]))),
        ("api", service(2, &active(&[2, 3]))),
    ]);
    sync(&mut r, &both, &mut t);
    let m = model([("api", service(2, &active(&[2, 3])))]);
    t.refuse_flow_deletes = 1;
    let failed = r.sync(&Desired::new(&m, all_healthy), &mut t);
    assert!(failed.is_err(), "the refusal surfaces as a sync error");
    assert!(t.frontend_flows_deleted.is_empty());

    let report = sync(&mut r, &m, &mut t);
    let web = (SocketAddr::new(vip(1), 80), 6);
    assert_eq!(t.frontend_flows_deleted, vec![web], "tried again");
    assert_eq!(
        report.frontends_removed, 0,
        "the frontend went the first time"
    );
    assert_programs(&r, &m, &t);
    sync(&mut r, &m, &mut t);
    assert_eq!(t.frontend_flows_deleted, vec![web], "and only once");
}

#[test]
fn a_frontend_written_again_before_its_flows_are_deleted_keeps_them() {
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    let both = model([
        ("web", service(1, &active(&[1, 2]))),
        ("api", service(2, &active(&[2, 3]))),
    ]);
    sync(&mut r, &both, &mut t);
    t.refuse_flow_deletes = 1;
    let api_only = model([("api", service(2, &active(&[2, 3])))]);
    assert!(
        r.sync(&Desired::new(&api_only, all_healthy), &mut t)
            .is_err()
    );

    // The memory target refuses a live frontend's deletion as a violation.
    sync(&mut r, &both, &mut t);
    assert!(t.frontend_flows_deleted.is_empty());
    assert_programs(&r, &both, &t);
}

#[test]
fn growing_past_the_size_swaps_a_bigger_table() {
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(
        &mut r,
        &model([("web", service(1, &active(&[1, 2])))]),
        &mut t,
    );
    let m = model([("web", service(1, &active(&[1, 2, 3, 4, 5, 6])))]);
    let report = sync(&mut r, &m, &mut t);
    assert_eq!(report.tables_swapped, 1);
    assert_eq!(t.tables.values().next().map(Vec::len), Some(1021));
    assert_programs(&r, &m, &t);
}

#[test]
fn a_table_is_sized_by_the_backends_listed_whatever_their_health_or_drains() {
    let web = |backends: &[(u8, BackendState)]| model([("web", service(1, backends))]);
    let table_size = |r: &Reconciler| r.table(&ServiceName("web".into())).map(<[u32]>::len);
    // Three listed: 509 slots, with one of them draining, down, or both.
    let three = web(&[
        (1, BackendState::Active),
        (2, BackendState::Active),
        (3, BackendState::Draining),
    ]);
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(&mut r, &three, &mut t);
    assert_eq!(table_size(&r), Some(509));
    let down = |_: &ServiceName, a: SocketAddr| a != backend(2);
    r.sync(&Desired::new(&three, down), &mut t).expect("sync");
    assert_eq!(table_size(&r), Some(509));
    assert_programs_with(&r, &three, &t, down);
}

#[test]
fn instances_with_different_histories_agree_on_sizes_above_their_minimum() {
    let policy = SizingPolicy::with_min_size(1021);
    let fresh = |r: &mut Reconciler, m: &Model| {
        let mut t = MemoryTarget::default();
        sync(r, m, &mut t);
        t
    };
    // The backend each slot names, by address (IDs are each instance's).
    let slots = |t: &MemoryTarget| -> Vec<SocketAddr> {
        let table = t.tables.values().next().expect("a table");
        table.iter().map(|id| t.backends[id].0).collect()
    };
    // One instance saw six backends, then three; the other only three. By
    // the default policy they hold 1021 and 509 slots; above a common
    // minimum, the same.
    let six = model([("web", service(1, &active(&[1, 2, 3, 4, 5, 6])))]);
    let three = model([("web", service(1, &active(&[1, 2, 3])))]);
    let mut sizes = Vec::new();
    for policy in [SizingPolicy::default(), policy] {
        let mut long_running = Reconciler::new(SEED, policy, SIZES);
        let mut t = fresh(&mut long_running, &six);
        sync(&mut long_running, &three, &mut t);
        let mut restarted = Reconciler::new(SEED, policy, SIZES);
        let t2 = fresh(&mut restarted, &three);
        let size = |t: &MemoryTarget| t.tables.values().next().map(Vec::len);
        sizes.push((size(&t), size(&t2)));
        if policy.min_size == 1021 {
            assert_eq!(
                slots(&t),
                slots(&t2),
                "the same backend per slot, so per flow"
            );
        }
    }
    assert_eq!(sizes, [(Some(1021), Some(509)), (Some(1021), Some(1021))]);
}

/// What a restarted agent reads back from the pinned maps of `t`.
fn recovered(t: &MemoryTarget) -> Recovered {
    Recovered {
        frontends: t
            .frontends
            .iter()
            .map(|(&(addr, proto), &(id, affinity))| {
                let proto = if proto == 6 {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                };
                ((addr, proto), id, affinity)
            })
            .collect(),
        backends: t
            .backends
            .iter()
            .map(|(&id, &(addr, generation, live))| (id, addr, generation, live))
            .collect(),
        tables: t
            .tables
            .iter()
            .map(|(&id, slots)| (id, slots.len() as u32))
            .collect(),
        addresses: t.addresses.iter().map(|(&a, &k)| (a, k)).collect(),
        source_ranges: t
            .source_ranges
            .iter()
            .flat_map(|(&id, networks)| networks.iter().map(move |&(a, len)| (id, a, len)))
            .collect(),
        removed_frontends_with_flows: Vec::new(),
    }
}

#[test]
fn a_restarted_reconciler_keeps_ids_and_rewrites_tables_identically() {
    let m = model([
        ("web", service(1, &active(&[1, 2, 3]))),
        ("api", service(2, &active(&[3, 4]))),
    ]);
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(&mut r, &m, &mut t);
    let before = t.clone();

    let mut restarted = Reconciler::recover(SEED, SizingPolicy::default(), SIZES, &recovered(&t));
    let report = sync(&mut restarted, &m, &mut t);
    assert_eq!(report.backends_written, 0);
    assert_eq!(report.frontends_written, 0);
    assert_eq!(report.tables_swapped, 0, "same sizes: rewritten in place");
    assert_eq!(report.tables_patched, 2, "contents were not read back");
    assert_eq!(t.tables, before.tables, "the same tables");
    assert_eq!(t.backends, before.backends);
    assert_programs(&restarted, &m, &t);

    // What the source no longer has goes only now, after the first sync.
    let fewer = model([("api", service(2, &active(&[3, 4])))]);
    let mut restarted = Reconciler::recover(SEED, SizingPolicy::default(), SIZES, &recovered(&t));
    sync(&mut restarted, &fewer, &mut t);
    assert_programs(&restarted, &fewer, &t);
}

#[test]
fn a_recovered_table_of_a_size_the_policy_does_not_list_is_replaced_or_removed() {
    let m = model([
        ("web", service(1, &active(&[1, 2, 3]))),
        ("api", service(2, &active(&[3, 4]))),
    ]);
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(&mut r, &m, &mut t);
    // An earlier agent's tables, of a size no longer listed: one under
    // `web`'s ID, one under an ID no frontend names.
    let web = r.service_id(&ServiceName("web".into())).expect("web's ID");
    let unlisted = 12;
    t.tables.insert(web, vec![1; unlisted]);
    t.tables.insert(4000, vec![1; unlisted]);

    let mut restarted = Reconciler::recover(SEED, SizingPolicy::default(), SIZES, &recovered(&t));
    let report = sync(&mut restarted, &m, &mut t);
    assert_eq!(report.tables_swapped, 1, "web's table replaced whole");
    assert!(!t.tables.contains_key(&4000), "{:?}", t.tables.keys());
    assert_programs(&restarted, &m, &t);
}

#[test]
fn a_restarted_reconciler_deletes_the_flows_of_frontends_removed_before_the_restart() {
    let both = model([
        ("web", service(1, &active(&[1, 2]))),
        ("api", service(2, &active(&[2, 3]))),
    ]);
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(&mut r, &both, &mut t);
    // Stopped after removing web's frontend from the datapath, before
    // deleting its flows; api's frontend was removed too, and is written
    // again by the first sync (its flows stay).
    let web = (SocketAddr::new(vip(1), 80), Protocol::Tcp);
    let api = (SocketAddr::new(vip(2), 80), Protocol::Tcp);
    let mut left = recovered(&t);
    left.frontends
        .retain(|(key, ..)| *key != web && *key != api);
    left.removed_frontends_with_flows = vec![web, api];

    let mut restarted = Reconciler::recover(SEED, SizingPolicy::default(), SIZES, &left);
    let api_only = model([("api", service(2, &active(&[2, 3])))]);
    t.frontends.remove(&(web.0, 6));
    t.frontends.remove(&(api.0, 6));
    sync(&mut restarted, &api_only, &mut t);
    assert_eq!(t.frontend_flows_deleted, vec![(web.0, 6)]);
    assert_programs(&restarted, &api_only, &t);
    sync(&mut restarted, &api_only, &mut t);
    assert_eq!(t.frontend_flows_deleted, vec![(web.0, 6)], "once");
}

fn arbitrary_model() -> impl Strategy<Value = Model> {
    let backends = proptest::collection::btree_map(
        1u8..12,
        prop_oneof![
            4 => Just(BackendState::Active),
            1 => Just(BackendState::Draining),
        ],
        0..8,
    );
    // Client networks from a small pool, so that services keep, swap and
    // share some of them from one model to the next.
    let networks = proptest::collection::btree_set(0u8..4, 0..3);
    proptest::collection::btree_map(1u8..6, (backends, networks), 0..5).prop_map(|services| Model {
        services: services
            .into_iter()
            .map(|(i, (backends, networks))| {
                let list: Vec<(u8, BackendState)> = backends.into_iter().collect();
                let networks: Vec<u8> = networks.into_iter().collect();
                (
                    ServiceName(format!("svc-{i}")),
                    ranged(service(i, &list), &networks),
                )
            })
            .collect(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of models, with any backends down, is programmed without
    /// ever breaking make-before-break (the target refuses such a write), and
    /// each sync leaves exactly the model in the target.
    #[test]
    fn any_sequence_of_models_is_programmed_make_before_break(
        models in proptest::collection::vec((arbitrary_model(), 0u8..12), 1..8)
    ) {
        let (mut r, mut t) = (reconciler(), MemoryTarget::default());
        let mut refreshed = Desired::default();
        for (m, down) in &models {
            let healthy = |_: &ServiceName, a: SocketAddr| a != backend(*down);
            // Refreshing in place gives what building anew gives.
            refreshed.refresh(m, healthy);
            prop_assert_eq!(&refreshed, &Desired::new(m, healthy));
            r.sync(&refreshed, &mut t).expect("sync");
            assert_programs_with(&r, m, &t, healthy);
        }
    }
}

#[test]
fn source_nat_is_per_frontend_and_locality_per_backend() {
    let mut model = Model::default();
    let mut web = service(1, &active(&[1, 2]));
    let mut node_port = web.frontends[0];
    node_port.port = 30080;
    node_port.snat_remote = true;
    web.frontends.push(node_port);
    web.backends[1].local = true;
    model
        .services
        .insert(ServiceName("web".into()), web.clone());
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(&mut r, &model, &mut t);
    assert_programs(&r, &model, &t);
    let snat: Vec<(u16, bool)> = t
        .frontends
        .iter()
        .map(|((addr, _), (_, options))| (addr.port(), options.snat_remote))
        .collect();
    assert_eq!(snat, [(80, false), (30080, true)]);
    let local: Vec<SocketAddr> = t.local.iter().map(|id| t.backends[id].0).collect();
    assert_eq!(local, [web.backends[1].addr]);
}

#[test]
fn source_ranges_are_written_before_their_frontends_and_removed_after() {
    let mut model = Model::default();
    let mut lb = service(1, &active(&[1, 2]));
    lb.frontends[0].source_ranges_only = true;
    lb.source_ranges = vec![("198.18.0.0".parse().unwrap(), 24)];
    model.services.insert(ServiceName("lb".into()), lb.clone());
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    sync(&mut r, &model, &mut t);
    assert_programs(&r, &model, &t);
    let id = r.service_id(&ServiceName("lb".into())).expect("id");
    assert_eq!(t.source_ranges[&id], lb.source_ranges);
    assert!(t.frontends.values().all(|(_, o)| o.source_ranges_only));

    // Changed, then gone: MemoryTarget refuses networks removed while a
    // frontend reads them.
    lb.source_ranges = vec![("2001:2::".parse().unwrap(), 64)];
    model.services.insert(ServiceName("lb".into()), lb.clone());
    sync(&mut r, &model, &mut t);
    assert_eq!(t.source_ranges[&id], lb.source_ranges);
    sync(&mut r, &Model::default(), &mut t);
    assert!(t.source_ranges.is_empty());
}

#[test]
fn a_service_that_drops_its_source_ranges_keeps_them_until_its_frontends_stop_reading_them() {
    let (mut r, mut t) = (reconciler(), MemoryTarget::default());
    let lb = |networks: &[u8]| model([("lb", ranged(service(1, &active(&[1])), networks))]);
    sync(&mut r, &lb(&[0]), &mut t);
    // The frontend stops reading them, then they go: the other way round,
    // it would drop every client in between (MemoryTarget refuses it).
    let report = sync(&mut r, &lb(&[]), &mut t);
    assert_eq!(report.frontends_written, 1);
    assert!(t.source_ranges.is_empty());
    assert_programs(&r, &lb(&[]), &t);
    // And back: the networks first.
    sync(&mut r, &lb(&[1]), &mut t);
    assert_programs(&r, &lb(&[1]), &t);
}

#[test]
fn source_ranges_a_write_left_half_done_are_written_again_whatever_comes_next() {
    // The target holds 4 client networks; the reconciler thinks 64.
    let (mut r, mut t) = (
        reconciler(),
        target_of(MapSizes {
            services: 4,
            ..SIZES
        }),
    );
    let lb = |networks: &[u8]| model([("lb", ranged(service(1, &active(&[1])), networks))]);
    sync(&mut r, &lb(&[0]), &mut t);
    let failed = r.sync(&Desired::new(&lb(&[0, 1, 2, 3, 4]), all_healthy), &mut t);
    assert!(
        matches!(failed, Err(SyncError::Datapath { .. })),
        "{failed:?}"
    );
    let id = r.service_id(&ServiceName("lb".into())).expect("id");
    assert_eq!(t.source_ranges[&id].len(), 4, "stopped part-way");
    // Back to what the last successful sync had: the networks written
    // part-way go, though the service is as it was.
    sync(&mut r, &lb(&[0]), &mut t);
    assert_programs(&r, &lb(&[0]), &t);
}

/// Maps that hold 4 frontends and 3 services, 3 backends, 2 addresses.
const SMALL: MapSizes = MapSizes {
    services: 4,
    backends: 4,
    conntrack: 64,
    addresses: 2,
    fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
};

/// A memory target that refuses what maps of `sizes` would refuse.
/// A fresh reconciler and a target whose maps are of `sizes`.
fn sized(sizes: MapSizes) -> (Reconciler, MemoryTarget) {
    (
        Reconciler::new(SEED, SizingPolicy::default(), sizes),
        target_of(sizes),
    )
}

fn target_of(sizes: MapSizes) -> MemoryTarget {
    MemoryTarget {
        sizes: Some(sizes),
        ..MemoryTarget::default()
    }
}

fn refusal(r: &mut Reconciler, m: &Model, t: &mut MemoryTarget) -> DoesNotFit {
    match r.sync(&Desired::new(m, all_healthy), t) {
        Err(SyncError::DoesNotFit(refused)) => refused,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_model_too_big_for_the_maps_is_refused_before_anything_is_written() {
    let small = model([("web", service(1, &active(&[1, 2])))]);
    let (mut r, mut t) = (
        Reconciler::new(SEED, SizingPolicy::default(), SMALL),
        target_of(SMALL),
    );
    sync(&mut r, &small, &mut t);
    let before = t.clone();

    // 5 frontends, 4 services, 5 backends, 4 addresses: each too many.
    let mut web = service(1, &active(&[1, 2]));
    let mut second_port = web.frontends[0];
    second_port.port = 8080;
    web.frontends.push(second_port);
    let big = model([
        ("web", web),
        ("api", service(2, &active(&[2, 3]))),
        ("dns", service(3, &active(&[4]))),
        ("ntp", service(4, &active(&[5]))),
    ]);
    let refused = refusal(&mut r, &big, &mut t);
    assert_eq!(t, before, "nothing written");
    let counts: Vec<(Quantity, usize, usize, usize)> = refused
        .overflows
        .iter()
        .map(|o| (o.quantity, o.wanted, o.leaving, o.capacity))
        .collect();
    assert_eq!(
        counts,
        [
            (Quantity::Frontends, 5, 0, 4),
            (Quantity::Services, 4, 0, 3),
            (Quantity::Backends, 5, 0, 3),
            (Quantity::Addresses, 4, 0, 2),
        ]
    );
    assert_eq!(
        refused.to_string(),
        "the configuration needs 5 frontends but --max-services is 4: raise --max-services; \
         the configuration needs 4 services but --max-services 4 holds 3 (ID 0 is never given \
         out): raise --max-services; the configuration needs 5 backends but --max-backends 4 \
         holds 3 (ID 0 is never given out): raise --max-backends; the configuration needs 4 \
         frontend addresses but --max-addresses is 2: raise --max-addresses (nothing was \
         written)"
    );
    // The same count without a sync, as `xlb check-config` makes it.
    assert_eq!(
        Reconciler::new(SEED, SizingPolicy::default(), SMALL)
            .fits(&Desired::new(&big, all_healthy)),
        Err(refused)
    );

    // The reconciler still knows exactly what is programmed: the running
    // model needs no write, and what fits is programmed.
    assert!(sync(&mut r, &small, &mut t).is_empty());
    let fits = model([
        ("web", service(1, &active(&[1, 2]))),
        ("api", service(2, &active(&[2, 3]))),
    ]);
    sync(&mut r, &fits, &mut t);
    assert_programs(&r, &fits, &t);
}

#[test]
fn a_change_needs_room_for_what_it_drops_until_its_break_half() {
    // 2 backend IDs: web's two, then two others instead.
    let sizes = MapSizes {
        backends: 3,
        ..SIZES
    };
    let (mut r, mut t) = sized(sizes);
    let old = model([("web", service(1, &active(&[1, 2])))]);
    sync(&mut r, &old, &mut t);
    let before = t.clone();
    let new = model([("web", service(1, &active(&[3, 4])))]);
    let refused = refusal(&mut r, &new, &mut t);
    assert_eq!(t, before, "nothing written");
    assert_eq!(
        refused.to_string(),
        "the configuration needs 2 backends, plus 2 of those it drops, which stay programmed \
         until the new ones are written: 4 at once, but --max-backends 3 holds 2 (ID 0 is never \
         given out): raise --max-backends, or make the removals a change of their own first \
         (nothing was written)"
    );

    // In two steps it fits: a retired backend's ID is free for the next
    // sync (a new generation keeps its old flows off the new backend).
    sync(&mut r, &model([("web", service(1, &[]))]), &mut t);
    sync(&mut r, &new, &mut t);
    assert_programs(&r, &new, &t);
}

#[test]
fn a_restarted_reconciler_counts_the_pinned_services_until_a_sync_drops_them() {
    let three = model([
        ("web", service(1, &active(&[1]))),
        ("api", service(2, &active(&[1]))),
        ("dns", service(3, &active(&[1]))),
    ]);
    // 3 service IDs.
    let sizes = MapSizes {
        services: 4,
        ..SIZES
    };
    let (mut r, mut t) = sized(sizes);
    sync(&mut r, &three, &mut t);

    // web and api take their pinned IDs over by their frontends; dns keeps
    // its ID until the sync's break half, so ntp finds none.
    let mut restarted = Reconciler::recover(SEED, SizingPolicy::default(), sizes, &recovered(&t));
    let before = t.clone();
    let with_ntp = model([
        ("web", service(1, &active(&[1]))),
        ("api", service(2, &active(&[1]))),
        ("ntp", service(4, &active(&[1]))),
    ]);
    let refused = refusal(&mut restarted, &with_ntp, &mut t);
    assert_eq!(t, before, "nothing written");
    let services = refused
        .overflows
        .iter()
        .find(|o| o.quantity == Quantity::Services)
        .expect("services overflow");
    assert_eq!(
        (services.wanted, services.leaving, services.capacity),
        (3, 1, 3)
    );

    let two = model([
        ("web", service(1, &active(&[1]))),
        ("api", service(2, &active(&[1]))),
    ]);
    sync(&mut restarted, &two, &mut t);
    sync(&mut restarted, &with_ntp, &mut t);
    assert_programs(&restarted, &with_ntp, &t);
}

#[test]
fn client_networks_are_replaced_service_by_service_each_needing_room_for_its_new_ones() {
    // 4 client networks (and 4 frontends, 3 service IDs).
    let sizes = MapSizes {
        services: 4,
        ..SIZES
    };
    let (mut r, mut t) = sized(sizes);
    let three = |networks: &[u8]| {
        model([
            ("a", ranged(service(1, &active(&[1])), networks)),
            ("b", ranged(service(2, &active(&[1])), networks)),
            ("c", ranged(service(3, &active(&[1])), networks)),
        ])
    };
    sync(&mut r, &three(&[0]), &mut t);
    // One service at a time: 3 and the one new to the service written, not
    // the 6 of old and new together.
    sync(&mut r, &three(&[1]), &mut t);
    assert_programs(&r, &three(&[1]), &t);

    let before = t.clone();
    let refused = refusal(&mut r, &three(&[1, 2]), &mut t);
    assert_eq!(t, before, "nothing written");
    let counts: Vec<(Quantity, usize, usize, usize)> = refused
        .overflows
        .iter()
        .map(|o| (o.quantity, o.wanted, o.leaving, o.capacity))
        .collect();
    // a's, b's and c's new one in turn: 4, 5, 6 at once.
    assert_eq!(counts, [(Quantity::SourceRanges, 6, 0, 4)]);
    assert_eq!(
        refused.to_string(),
        "the configuration needs 6 client networks of loadBalancerSourceRanges (one entry per \
         network and Service port) but --max-services is 4: raise --max-services (nothing was \
         written)"
    );
}

#[test]
fn client_networks_a_change_drops_stay_until_the_new_ones_are_written() {
    let sizes = MapSizes {
        services: 4,
        ..SIZES
    };
    let (mut r, mut t) = sized(sizes);
    let two = |networks: &[u8]| {
        model([
            ("http", ranged(service(1, &active(&[1])), networks)),
            ("https", ranged(service(2, &active(&[1])), networks)),
        ])
    };
    sync(&mut r, &two(&[0]), &mut t);
    let before = t.clone();
    // http's two new ones with both old ones (4), then https's two new ones
    // with its old one (5).
    let refused = refusal(&mut r, &two(&[1, 2]), &mut t);
    assert_eq!(t, before, "nothing written");
    assert_eq!(
        refused.to_string(),
        "the configuration needs 4 client networks of loadBalancerSourceRanges (one entry per \
         network and Service port), plus 1 of those it drops, which stay programmed until the \
         new ones are written: 5 at once, but --max-services is 4: raise --max-services, or make \
         the removals a change of their own first (nothing was written)"
    );
    // In two steps it fits: each service then adds one.
    sync(&mut r, &two(&[1]), &mut t);
    sync(&mut r, &two(&[1, 2]), &mut t);
    assert_programs(&r, &two(&[1, 2]), &t);
}

#[test]
fn a_restarted_reconciler_counts_the_pinned_client_networks_until_a_sync_drops_them() {
    let sizes = MapSizes {
        services: 4,
        ..SIZES
    };
    let (mut r, mut t) = sized(sizes);
    let a = ("a", ranged(service(1, &active(&[1])), &[0, 1]));
    let b = ("b", ranged(service(2, &active(&[1])), &[2]));
    sync(&mut r, &model([a.clone(), b]), &mut t);
    // Stopped after removing b's frontend and table, before its networks.
    let b_id = r.service_id(&ServiceName("b".into())).expect("id");
    t.frontends.retain(|_, &mut (id, _)| id != b_id);
    t.tables.remove(&b_id);

    let mut restarted = Reconciler::recover(SEED, SizingPolicy::default(), sizes, &recovered(&t));
    let before = t.clone();
    let with_c = model([a.clone(), ("c", ranged(service(3, &active(&[1])), &[3, 0]))]);
    let refused = refusal(&mut restarted, &with_c, &mut t);
    assert_eq!(t, before, "nothing written");
    let networks = refused
        .overflows
        .iter()
        .find(|o| o.quantity == Quantity::SourceRanges)
        .expect("client networks overflow");
    assert_eq!(
        (networks.wanted, networks.leaving, networks.capacity),
        (4, 1, 4),
        "b's network is there until the break half"
    );

    let a_only = model([a]);
    sync(&mut restarted, &a_only, &mut t);
    assert_programs(&restarted, &a_only, &t);
    sync(&mut restarted, &with_c, &mut t);
    assert_programs(&restarted, &with_c, &t);
}

/// How many of each counted thing a sync from `programmed` to `desired`
/// needs at once: frontends, services, live backends, addresses — what the
/// two hold together — and client networks: what the trie holds at its
/// fullest, as each service in name order has its networks replaced (the
/// new ones in before the old ones go), while those of services dropped or
/// left without any stay until the end.
fn peak_counts(programmed: &Desired, desired: &Desired) -> [usize; 5] {
    let both = [programmed, desired];
    let frontends: BTreeSet<_> = both
        .iter()
        .flat_map(|d| d.services.iter().flat_map(|(_, s)| s.frontends.iter()))
        .collect();
    let names: BTreeSet<_> = both
        .iter()
        .flat_map(|d| d.services.iter().map(|(n, _)| n))
        .collect();
    let live: BTreeSet<_> = both
        .iter()
        .flat_map(|d| d.services.iter().flat_map(|(_, s)| s.live.iter()))
        .collect();
    let addresses: BTreeSet<_> = both
        .iter()
        .flat_map(|d| d.addresses.iter().map(|(a, _)| a))
        .collect();
    let mut networks: usize = programmed
        .services
        .iter()
        .map(|(_, s)| s.source_ranges.len())
        .sum();
    let mut networks_peak = networks;
    for (name, service) in &desired.services {
        let new = &service.source_ranges;
        let old = programmed.get(name).map_or(&[][..], |s| &s.source_ranges);
        if new.is_empty() || new == old {
            continue;
        }
        let added = new.iter().filter(|n| !old.contains(n)).count();
        networks_peak = networks_peak.max(networks + added);
        networks = networks + new.len() - old.len();
    }
    [
        frontends.len(),
        names.len(),
        live.len(),
        addresses.len(),
        networks_peak,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With maps too small for some of the models: a sync is refused
    /// exactly when its peak overflows a map (an oracle from the models,
    /// not the reconciler's books), a refused sync writes nothing, and one
    /// that is not refused never meets a full map (client networks
    /// included).
    #[test]
    fn a_sync_is_refused_whole_exactly_when_its_peak_overflows_a_map(
        models in proptest::collection::vec((arbitrary_model(), 0u8..12), 1..8)
    ) {
        let sizes = MapSizes { services: 4, backends: 6, conntrack: 64, addresses: 3, fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES };
        let capacities = [4, 3, 5, 3, 4];
        let (mut r, mut t) = sized(sizes);
        let mut programmed = Desired::default();
        for (m, down) in &models {
            let healthy = |_: &ServiceName, a: SocketAddr| a != backend(*down);
            let desired = Desired::new(m, healthy);
            let needed = peak_counts(&programmed, &desired);
            let overflowing: Vec<usize> =
                (0..5).filter(|&i| needed[i] > capacities[i]).collect();
            let before = t.clone();
            match r.sync(&desired, &mut t) {
                Ok(_) => {
                    prop_assert!(overflowing.is_empty(), "{needed:?} was not refused");
                    assert_programs_with(&r, m, &t, healthy);
                    programmed = desired;
                }
                Err(SyncError::DoesNotFit(refused)) => {
                    prop_assert_eq!(&t, &before);
                    let counted: Vec<(usize, usize)> = refused
                        .overflows
                        .iter()
                        .map(|o| (o.quantity as usize, o.needed()))
                        .collect();
                    let expected: Vec<(usize, usize)> =
                        overflowing.iter().map(|&i| (i, needed[i])).collect();
                    prop_assert_eq!(counted, expected);
                }
                Err(other) => prop_assert!(false, "the sync failed half-way: {other}"),
            }
        }
    }
}

#[test]
fn an_overflow_of_one_entry_is_named_in_the_singular() {
    let overflow = super::Overflow {
        quantity: Quantity::Services,
        wanted: 1,
        leaving: 0,
        capacity: 0,
        size: 1,
    };
    assert_eq!(
        overflow.to_string(),
        "the configuration needs 1 service but --max-services 1 holds 0 (ID 0 is never given \
         out): raise --max-services"
    );
}
