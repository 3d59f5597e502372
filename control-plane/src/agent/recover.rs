//! Reading back what an earlier agent programmed, from the pinned maps.

use xdp_lb::Datapath;

use crate::{health::PinnedTables, reconcile::Recovered};

/// The pinned state of `datapath`, as the reconciler adopts it.
pub(crate) fn read(datapath: &Datapath) -> Result<Recovered, xdp_lb::Error> {
    let frontends = datapath
        .frontends()?
        .into_iter()
        .map(|(frontend, id, options)| ((frontend.addr, frontend.proto.into()), id, options))
        .collect();
    let backends = datapath
        .backends()?
        .into_iter()
        .map(|(id, record)| (id, record.addr, record.generation, record.active))
        .collect();
    let tables = datapath
        .table_ids()?
        .into_iter()
        .map(|id| Ok((id, datapath.table_size(id)?.unwrap_or(0))))
        .collect::<Result<_, xdp_lb::Error>>()?;
    let removed_frontends_with_flows = datapath
        .removed_frontends_with_flows()?
        .into_iter()
        .map(|frontend| (frontend.addr, frontend.proto.into()))
        .collect();
    Ok(Recovered {
        frontends,
        backends,
        tables,
        addresses: datapath.addresses()?,
        source_ranges: datapath.source_ranges()?,
        removed_frontends_with_flows,
    })
}

/// What the earlier agent served, for the health checker
/// ([`crate::health::HealthChecker::recover`]): `recovered`'s frontends and
/// records, and the slots of its tables, read from `datapath` (the
/// reconciler does not read them: it rebuilds every table at its first
/// sync).
pub(crate) fn pinned_tables(
    datapath: &Datapath,
    recovered: &Recovered,
) -> Result<PinnedTables, xdp_lb::Error> {
    let mut tables = Vec::with_capacity(recovered.tables.len());
    for &(id, _) in &recovered.tables {
        if let Some(slots) = datapath.table(id)? {
            tables.push((id, slots));
        }
    }
    Ok(PinnedTables::new(
        recovered.frontends.iter().map(|&(key, id, _)| (key, id)),
        recovered
            .backends
            .iter()
            .map(|&(id, addr, _, live)| (id, addr, live)),
        tables,
    ))
}
