//! What the datapath's maps hold, as `/v1/datapath/services` (`xlb bpf lb
//! list`) shows it: read from the maps rather than from the agent's model,
//! so that it shows what the datapath forwards, pinned state of an earlier
//! agent included.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use xdp_lb::{AddressKind, BackendRecord, Datapath, Frontend, ServiceOptions};

use crate::{
    api::{DatapathBackendStatus, DatapathBackendView, DatapathServiceView},
    model::{FrontendKind, Mode},
};

/// The maps' contents a [`views`] call needs, read in one go.
#[derive(Debug, Default)]
pub(crate) struct Programmed {
    /// The `SERVICES` map: frontend → service ID and options.
    pub(crate) frontends: Vec<(Frontend, u32, ServiceOptions)>,
    /// The `ADDRESSES` map.
    pub(crate) addresses: BTreeMap<IpAddr, AddressKind>,
    /// The `BACKENDS` map's written records, by ID.
    pub(crate) backends: BTreeMap<u32, BackendRecord>,
    /// The Maglev table (slots → backend ID) of each service ID the
    /// frontends name and that has one.
    pub(crate) tables: BTreeMap<u32, Vec<u32>>,
}

/// Reads what [`views`] shows from `datapath`. The caller holds the agent's
/// lock, so no sync writes the maps between the reads.
pub(crate) fn read(datapath: &Datapath) -> Result<Programmed, xdp_lb::Error> {
    let frontends = datapath.frontends()?;
    let ids: BTreeSet<u32> = frontends.iter().map(|&(_, id, _)| id).collect();
    let mut tables = BTreeMap::new();
    for id in ids {
        if let Some(table) = datapath.table(id)? {
            tables.insert(id, table);
        }
    }
    Ok(Programmed {
        frontends,
        addresses: datapath.addresses()?.into_iter().collect(),
        backends: datapath.backends()?.into_iter().collect(),
        tables,
    })
}

/// One view per frontend of `programmed`, sorted by service ID, then
/// frontend; `names` names the service IDs the agent's model knows. Each
/// backend ID a table names is listed once, by ID, with the slots naming it
/// and what its record says: `active`, `retired`, or `missing` when there
/// is no record (never written, or a damaged map: shown, not trusted).
pub(crate) fn views(
    programmed: &Programmed,
    names: &BTreeMap<u32, String>,
) -> Vec<DatapathServiceView> {
    // Each table's backends, built once however many frontends its service
    // has: by ID, with the slots naming each.
    let backends: BTreeMap<u32, Vec<DatapathBackendView>> = programmed
        .tables
        .iter()
        .map(|(&id, table)| {
            let mut slots: BTreeMap<u32, u32> = BTreeMap::new();
            for &backend in table {
                *slots.entry(backend).or_default() += 1;
            }
            let views = slots
                .into_iter()
                .map(|(backend, slots)| {
                    let record = programmed.backends.get(&backend);
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
                .collect();
            (id, views)
        })
        .collect();
    let mut views: Vec<DatapathServiceView> = programmed
        .frontends
        .iter()
        .map(|(frontend, id, options)| {
            let table = programmed.tables.get(id).map_or(&[][..], Vec::as_slice);
            DatapathServiceView {
                frontend: frontend.addr,
                protocol: frontend.proto.into(),
                kind: programmed
                    .addresses
                    .get(&frontend.addr.ip())
                    .map(|kind| match kind {
                        AddressKind::Vip => FrontendKind::Vip,
                        AddressKind::Node => FrontendKind::Node,
                    }),
                service_id: *id,
                service: names.get(id).cloned(),
                mode: if options.dsr { Mode::Dsr } else { Mode::Nat },
                affinity_timeout_seconds: options.client_ip_affinity.map(|t| t.as_secs()),
                table_size: u32::try_from(table.len()).unwrap_or(u32::MAX),
                backends: backends.get(id).cloned().unwrap_or_default(),
            }
        })
        .collect();
    views.sort_by_key(|v| (v.service_id, v.frontend.ip(), v.frontend.port(), v.protocol));
    views
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
        let views = views(&programmed(), &names);
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
        let views = views(&programmed(), &BTreeMap::new());
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
    fn a_frontend_whose_address_is_not_declared_has_no_kind() {
        let mut programmed = programmed();
        programmed.addresses.clear();
        assert!(
            views(&programmed, &BTreeMap::new())
                .iter()
                .all(|v| v.kind.is_none())
        );
    }
}
