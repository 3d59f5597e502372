//! What the datapath's maps hold, as `/v1/datapath/lb` (`xlb bpf lb list`)
//! shows it: read from the maps rather than from the agent's model, so that
//! it shows what the datapath forwards, pinned state of an earlier agent
//! included, and what no frontend reaches: a table under a service ID no
//! frontend names, an active backend record no table names, an address no
//! frontend has.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use xdp_lb::{AddressKind, BackendRecord, Datapath, Frontend, ServiceOptions};

use crate::{
    api::{
        DatapathAddressView, DatapathBackendStatus, DatapathBackendView, DatapathLbView,
        DatapathRecordView, DatapathServiceView, DatapathTableView,
    },
    model::{FrontendKind, Mode},
};

/// The maps' contents a [`view`] call needs, read in one go.
#[derive(Debug, Default)]
pub(crate) struct Programmed {
    /// The `SERVICES` map: frontend → service ID and options.
    pub(crate) frontends: Vec<(Frontend, u32, ServiceOptions)>,
    /// The `ADDRESSES` map.
    pub(crate) addresses: BTreeMap<IpAddr, AddressKind>,
    /// The `BACKENDS` map's written records, by ID.
    pub(crate) backends: BTreeMap<u32, BackendRecord>,
    /// The Maglev table (slots → backend ID) of every service ID that has
    /// one in `MAGLEV_TABLES`, whether a frontend names it or not.
    pub(crate) tables: BTreeMap<u32, Vec<u32>>,
}

/// Reads what [`view`] shows from `datapath`. The caller holds the agent's
/// lock, so no sync writes the maps between the reads.
pub(crate) fn read(datapath: &Datapath) -> Result<Programmed, xdp_lb::Error> {
    // Every table, not only those of the frontends' IDs: one no frontend
    // names is a leak the listing must show.
    let mut tables = BTreeMap::new();
    for id in datapath.table_ids()? {
        if let Some(table) = datapath.table(id)? {
            tables.insert(id, table);
        }
    }
    Ok(Programmed {
        frontends: datapath.frontends()?,
        addresses: datapath.addresses()?.into_iter().collect(),
        backends: datapath.backends()?.into_iter().collect(),
        tables,
    })
}

/// What `programmed` holds, as `xlb bpf lb list` shows it; `names` names
/// the service IDs the agent's model knows.
///
/// One view per frontend, sorted by service ID, then frontend. Each backend
/// ID a table names is listed once, by ID, with the slots naming it and
/// what its record says: `active`, `retired`, or `missing` when there is no
/// record (never written, or a damaged map: shown, not trusted).
///
/// Then what no frontend reaches, each sorted: the tables under a service
/// ID no frontend names, the active records no table names (of a frontend
/// or not), and the addresses no frontend has. Those records'
/// `status_by_service` is left empty: it is the agent's model's to say.
pub(crate) fn view(programmed: &Programmed, names: &BTreeMap<u32, String>) -> DatapathLbView {
    // Each table's backends, built once however many frontends its service
    // has.
    let backends: BTreeMap<u32, Vec<DatapathBackendView>> = programmed
        .tables
        .iter()
        .map(|(&id, table)| (id, table_backends(table, &programmed.backends)))
        .collect();
    DatapathLbView {
        services: service_views(programmed, names, &backends),
        tables_without_frontend: tables_without_frontend(programmed, names, &backends),
        active_backends_without_table: records_without_table(programmed, &backends),
        addresses_without_frontend: addresses_without_frontend(programmed),
    }
}

/// The tables of `programmed` whose service ID no frontend names, by ID;
/// `backends`: each table's backends, by service ID.
fn tables_without_frontend(
    programmed: &Programmed,
    names: &BTreeMap<u32, String>,
    backends: &BTreeMap<u32, Vec<DatapathBackendView>>,
) -> Vec<DatapathTableView> {
    let fronted: BTreeSet<u32> = programmed.frontends.iter().map(|&(_, id, _)| id).collect();
    programmed
        .tables
        .iter()
        .filter(|(id, _)| !fronted.contains(id))
        .map(|(&id, table)| DatapathTableView {
            service_id: id,
            service: names.get(&id).cloned(),
            table_size: table_size(table),
            backends: backends.get(&id).cloned().unwrap_or_default(),
        })
        .collect()
}

/// The active records of `programmed` that no table names (`backends`:
/// each table's backends), by ID, without their status in the model.
fn records_without_table(
    programmed: &Programmed,
    backends: &BTreeMap<u32, Vec<DatapathBackendView>>,
) -> Vec<DatapathRecordView> {
    let named: BTreeSet<u32> = backends.values().flatten().map(|b| b.id).collect();
    programmed
        .backends
        .iter()
        .filter(|&(id, record)| record.active && !named.contains(id))
        .map(|(&id, record)| DatapathRecordView {
            id,
            address: record.addr,
            generation: record.generation,
            status_by_service: BTreeMap::new(),
        })
        .collect()
}

/// The addresses of `programmed` that no frontend has, by address.
fn addresses_without_frontend(programmed: &Programmed) -> Vec<DatapathAddressView> {
    let used: BTreeSet<IpAddr> = programmed
        .frontends
        .iter()
        .map(|(frontend, ..)| frontend.addr.ip())
        .collect();
    programmed
        .addresses
        .iter()
        .filter(|(address, _)| !used.contains(address))
        .map(|(&address, &kind)| DatapathAddressView {
            address,
            kind: frontend_kind(kind),
        })
        .collect()
}

/// One view per frontend of `programmed`, sorted by service ID, then
/// frontend; `backends`: each table's backends, by service ID.
fn service_views(
    programmed: &Programmed,
    names: &BTreeMap<u32, String>,
    backends: &BTreeMap<u32, Vec<DatapathBackendView>>,
) -> Vec<DatapathServiceView> {
    let mut views: Vec<DatapathServiceView> = programmed
        .frontends
        .iter()
        .map(|(frontend, id, options)| DatapathServiceView {
            frontend: frontend.addr,
            protocol: frontend.proto.into(),
            kind: programmed
                .addresses
                .get(&frontend.addr.ip())
                .map(|&kind| frontend_kind(kind)),
            service_id: *id,
            service: names.get(id).cloned(),
            mode: if options.dsr { Mode::Dsr } else { Mode::Nat },
            affinity_timeout_seconds: options.client_ip_affinity.map(|t| t.as_secs()),
            table_size: programmed.tables.get(id).map_or(0, |t| table_size(t)),
            backends: backends.get(id).cloned().unwrap_or_default(),
        })
        .collect();
    views.sort_by_key(|v| (v.service_id, v.frontend.ip(), v.frontend.port(), v.protocol));
    views
}

/// Each backend ID `table` names, by ID, with the slots naming it and what
/// its record in `records` says.
fn table_backends(
    table: &[u32],
    records: &BTreeMap<u32, BackendRecord>,
) -> Vec<DatapathBackendView> {
    let mut slots: BTreeMap<u32, u32> = BTreeMap::new();
    for &backend in table {
        *slots.entry(backend).or_default() += 1;
    }
    slots
        .into_iter()
        .map(|(backend, slots)| {
            let record = records.get(&backend);
            DatapathBackendView {
                id: backend,
                address: record.map(|r| r.addr),
                generation: record.map(|r| r.generation),
                status: match record {
                    Some(r) if r.active => DatapathBackendStatus::Active,
                    Some(_) => DatapathBackendStatus::Retired,
                    None => DatapathBackendStatus::Missing,
                },
                slots,
            }
        })
        .collect()
}

fn table_size(table: &[u32]) -> u32 {
    u32::try_from(table.len()).unwrap_or(u32::MAX)
}

fn frontend_kind(kind: AddressKind) -> FrontendKind {
    match kind {
        AddressKind::Vip => FrontendKind::Vip,
        AddressKind::Node => FrontendKind::Node,
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Duration};

    use super::*;
    use crate::model::Protocol;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn record(address: &str, generation: u32, active: bool) -> BackendRecord {
        BackendRecord {
            addr: addr(address),
            generation,
            active,
            local: false,
        }
    }

    fn frontend(address: &str, proto: xdp_lb::Protocol) -> Frontend {
        Frontend::new(addr(address), proto)
    }

    /// Service 3 (`web`, two frontends, a table of backends 1 and 2),
    /// service 9 (pinned by an earlier agent: no name, DSR with affinity,
    /// its table naming a retired backend and one without a record) and
    /// service 4 (no table).
    fn programmed() -> Programmed {
        let nat = ServiceOptions::default();
        let pinned = ServiceOptions {
            dsr: true,
            client_ip_affinity: Some(Duration::from_secs(600)),
            ..ServiceOptions::default()
        };
        Programmed {
            frontends: vec![
                (frontend("198.19.0.2:53", xdp_lb::Protocol::Udp), 9, pinned),
                (frontend("198.19.0.1:80", xdp_lb::Protocol::Tcp), 3, nat),
                (frontend("198.19.0.9:80", xdp_lb::Protocol::Tcp), 4, nat),
                (frontend("198.18.0.1:30080", xdp_lb::Protocol::Tcp), 3, nat),
            ],
            addresses: BTreeMap::from([
                ("198.19.0.1".parse().unwrap(), AddressKind::Vip),
                ("198.19.0.2".parse().unwrap(), AddressKind::Vip),
                ("198.18.0.1".parse().unwrap(), AddressKind::Node),
            ]),
            backends: BTreeMap::from([
                (1, record("198.18.2.1:8080", 1, true)),
                (2, record("198.18.2.2:8080", 4, true)),
                (5, record("198.18.2.5:53", 2, false)),
            ]),
            tables: BTreeMap::from([(3, vec![2, 1, 1, 2, 1, 2, 1]), (9, vec![5, 7, 7])]),
        }
    }

    #[test]
    fn each_frontend_lists_the_backends_its_table_names() {
        let names = BTreeMap::from([(3, "web".to_owned()), (12, "gone".to_owned())]);
        let views = view(&programmed(), &names).services;
        let frontends: Vec<(u32, SocketAddr)> =
            views.iter().map(|v| (v.service_id, v.frontend)).collect();
        assert_eq!(
            frontends,
            [
                (3, addr("198.18.0.1:30080")),
                (3, addr("198.19.0.1:80")),
                (4, addr("198.19.0.9:80")),
                (9, addr("198.19.0.2:53")),
            ]
        );
        let web = &views[1];
        assert_eq!(web.service.as_deref(), Some("web"));
        assert_eq!(web.kind, Some(FrontendKind::Vip));
        assert_eq!(views[0].kind, Some(FrontendKind::Node));
        assert_eq!(
            (web.protocol, web.mode, web.table_size),
            (Protocol::Tcp, Mode::Nat, 7)
        );
        assert_eq!(
            web.backends,
            [
                DatapathBackendView {
                    id: 1,
                    address: Some(addr("198.18.2.1:8080")),
                    generation: Some(1),
                    status: DatapathBackendStatus::Active,
                    slots: 4,
                },
                DatapathBackendView {
                    id: 2,
                    address: Some(addr("198.18.2.2:8080")),
                    generation: Some(4),
                    status: DatapathBackendStatus::Active,
                    slots: 3,
                },
            ]
        );
        // Both frontends of a service share its table.
        assert_eq!(views[0].backends, web.backends);
    }

    #[test]
    fn what_the_model_does_not_know_is_listed_as_the_maps_hold_it() {
        let views = view(&programmed(), &BTreeMap::new()).services;
        assert!(views.iter().all(|v| v.service.is_none()), "{views:?}");
        let without_table = &views[2];
        assert_eq!(
            (without_table.table_size, &without_table.backends[..]),
            (0, &[][..])
        );
        let pinned = &views[3];
        assert_eq!(pinned.mode, Mode::Dsr);
        assert_eq!(pinned.affinity_timeout_seconds, Some(600));
        assert_eq!(pinned.table_size, 3);
        assert_eq!(
            pinned.backends,
            [
                DatapathBackendView {
                    id: 5,
                    address: Some(addr("198.18.2.5:53")),
                    generation: Some(2),
                    status: DatapathBackendStatus::Retired,
                    slots: 1,
                },
                DatapathBackendView {
                    id: 7,
                    address: None,
                    generation: None,
                    status: DatapathBackendStatus::Missing,
                    slots: 2,
                },
            ]
        );
    }

    #[test]
    fn a_datapath_every_part_of_which_a_frontend_reaches_has_nothing_apart() {
        let mut programmed = programmed();
        // A retired record no table names is what retirement leaves (kept
        // for its generation): nothing a frontend should reach.
        programmed
            .backends
            .insert(10, record("198.18.2.10:8080", 1, false));
        let view = view(&programmed, &BTreeMap::new());
        assert_eq!(view.services.len(), 4);
        assert_eq!(
            (
                &view.tables_without_frontend[..],
                &view.active_backends_without_table[..],
                &view.addresses_without_frontend[..],
            ),
            (&[][..], &[][..], &[][..])
        );
    }

    #[test]
    fn a_table_no_frontend_names_is_listed_apart_with_its_backends() {
        let mut programmed = programmed();
        // Service 20: a table left behind (a sync stopped between writing
        // it and its frontends, or removing them and it), naming backend 1
        // of service 3 and one without a record.
        programmed.tables.insert(20, vec![1, 8, 8]);
        let names = BTreeMap::from([(3, "web".to_owned()), (20, "api".to_owned())]);
        let view = view(&programmed, &names);
        assert_eq!(
            view.tables_without_frontend,
            [DatapathTableView {
                service_id: 20,
                service: Some("api".to_owned()),
                table_size: 3,
                backends: vec![
                    DatapathBackendView {
                        id: 1,
                        address: Some(addr("198.18.2.1:8080")),
                        generation: Some(1),
                        status: DatapathBackendStatus::Active,
                        slots: 1,
                    },
                    DatapathBackendView {
                        id: 8,
                        address: None,
                        generation: None,
                        status: DatapathBackendStatus::Missing,
                        slots: 2,
                    },
                ],
            }]
        );
        // The frontends' listing is what it was.
        assert_eq!(
            view.services,
            super::view(&self::programmed(), &names).services
        );
    }

    #[test]
    fn active_records_no_table_names_are_listed_apart() {
        let mut programmed = programmed();
        programmed.backends.extend([
            // Draining: kept active for its flows, in no table.
            (6, record("198.18.2.6:8080", 3, true)),
            // Retired and in no table: what a retired record is.
            (10, record("198.18.2.10:8080", 1, false)),
            // Named only by a table no frontend names: listed with it.
            (11, record("198.18.2.11:8080", 1, true)),
        ]);
        programmed.tables.insert(20, vec![11]);
        let view = view(&programmed, &BTreeMap::new());
        assert_eq!(
            view.active_backends_without_table,
            [DatapathRecordView {
                id: 6,
                address: addr("198.18.2.6:8080"),
                generation: 3,
                status_by_service: BTreeMap::new(),
            }]
        );
        assert_eq!(view.tables_without_frontend[0].backends[0].id, 11);
    }

    #[test]
    fn addresses_no_frontend_has_are_listed_apart() {
        let mut programmed = programmed();
        programmed.addresses.extend([
            ("198.19.0.50".parse().unwrap(), AddressKind::Vip),
            ("198.18.0.7".parse().unwrap(), AddressKind::Node),
        ]);
        let view = view(&programmed, &BTreeMap::new());
        assert_eq!(
            view.addresses_without_frontend,
            [
                DatapathAddressView {
                    address: "198.18.0.7".parse().unwrap(),
                    kind: FrontendKind::Node,
                },
                DatapathAddressView {
                    address: "198.19.0.50".parse().unwrap(),
                    kind: FrontendKind::Vip,
                },
            ]
        );
    }

    #[test]
    fn a_frontend_whose_address_is_not_declared_has_no_kind() {
        let mut programmed = programmed();
        programmed.addresses.clear();
        assert!(
            view(&programmed, &BTreeMap::new())
                .services
                .iter()
                .all(|v| v.kind.is_none())
        );
    }
}
