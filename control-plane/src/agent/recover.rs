//! Reading back what an earlier agent programmed, from the pinned maps.

use xdp_lb::Datapath;

use crate::reconcile::Recovered;

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
