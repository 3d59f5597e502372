//! A direct-server-return LB for the DSR scenarios: the client → LB →
//! backends topology, a datapath with one `dsr` service per family on the
//! plan's VIP, and every backend holding that VIP on `lo` with an echo
//! server on it, as a DSR backend is set up. What the scenarios attach (and
//! keep apart, to take away) is theirs.

use std::net::{IpAddr, SocketAddr};

use xdp_lb::{AddressKind, Config, Datapath, Frontend, Protocol, ServiceOptions};

use crate::{
    Cidr, Error, Proto, Result,
    topology::{ClientLbBackends, Family, Options},
};

/// What differs between the scenarios.
#[derive(Debug)]
pub struct DsrSettings {
    pub backends: usize,
    pub hash_seed: u64,
    /// Slots of each service's Maglev table; backend `i` holds slots `i`,
    /// `i + backends`, ...
    pub table_size: usize,
    /// The VIPs' port, which DSR does not translate: the backends serve it.
    pub port: u16,
    /// The VIP of each family.
    pub vip: fn(Family) -> IpAddr,
    /// The backend ID of backend `i` of a family's service (service 1 is
    /// IPv4's, 2 IPv6's).
    pub backend_id: fn(Family, usize) -> u32,
}

/// The topology (static neighbours) and a datapath serving its VIPs by
/// direct server return from the LB's back address, nothing attached yet.
pub fn build(settings: &DsrSettings) -> Result<(ClientLbBackends, Datapath)> {
    let options = Options {
        static_neighbours: true,
        ..Options::default()
    };
    let mut topo = ClientLbBackends::build(settings.backends, &options)?;
    let datapath_err = |e| Error::Datapath(Box::new(e));
    let mut datapath = Datapath::load().map_err(datapath_err)?;
    datapath
        .set_config(&Config {
            hash_seed: settings.hash_seed,
            encap_source_v4: topo.lb_back.v4.octets(),
            encap_source_v6: topo.lb_back.v6.octets(),
            ..Config::default()
        })
        .map_err(datapath_err)?;
    let dsr = ServiceOptions {
        dsr: true,
        ..ServiceOptions::default()
    };
    for (service, family) in [(1, Family::V4), (2, Family::V6)] {
        let vip = (settings.vip)(family);
        datapath
            .set_address(vip, AddressKind::Vip)
            .map_err(datapath_err)?;
        let ids: Vec<u32> = (0..settings.backends)
            .map(|i| (settings.backend_id)(family, i))
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            let at = SocketAddr::new(topo.backends[i].ip(family), settings.port);
            datapath.put_backend(id, at, 1).map_err(datapath_err)?;
        }
        let table: Vec<u32> = (0..settings.table_size)
            .map(|slot| ids[slot % ids.len()])
            .collect();
        datapath.swap_table(service, &table).map_err(datapath_err)?;
        let frontend = Frontend::new(SocketAddr::new(vip, settings.port), Protocol::Tcp);
        datapath
            .upsert_service(&frontend, service, &dsr)
            .map_err(datapath_err)?;
        datapath.add_decap_vip(vip).map_err(datapath_err)?;
    }
    let backends = topo.backends.clone();
    for (i, backend) in backends.iter().enumerate() {
        for family in Family::ALL {
            let vip = (settings.vip)(family);
            let prefix = if family == Family::V4 { 32 } else { 128 };
            topo.rig
                .add_address(&backend.netns, "lo", Cidr::new(vip, prefix)?)?;
            topo.rig.serve_echo(
                &backend.netns,
                Proto::Tcp,
                SocketAddr::new(vip, settings.port),
                &format!("b{i}"),
            )?;
        }
    }
    Ok((topo, datapath))
}
