//! The backends' side of direct server return: which VIPs `xdp_decap`
//! strips encapsulated packets for (its counters: `Datapath::decap_stats`).

use std::net::IpAddr;

use aya::maps::HashMap;
use xdp_lb_common::service::AddressKey;

use crate::{
    Datapath, Error,
    maps::{DECAP_VIPS, map_err},
    net::to_addr,
};

impl Datapath {
    /// Lets `xdp_decap` strip encapsulated packets whose inner destination
    /// is `vip` (an address this host holds, on `lo`).
    pub fn add_decap_vip(&mut self, vip: IpAddr) -> Result<(), Error> {
        HashMap::<_, AddressKey, u32>::try_from(self.map_mut(DECAP_VIPS)?)
            .map_err(map_err(DECAP_VIPS, "open"))?
            .insert(AddressKey { addr: to_addr(vip) }, 1, 0)
            .map_err(map_err(DECAP_VIPS, "insert"))
    }

    /// Stops stripping packets for `vip`.
    pub fn remove_decap_vip(&mut self, vip: IpAddr) -> Result<(), Error> {
        HashMap::<_, AddressKey, u32>::try_from(self.map_mut(DECAP_VIPS)?)
            .map_err(map_err(DECAP_VIPS, "open"))?
            .remove(&AddressKey { addr: to_addr(vip) })
            .map_err(map_err(DECAP_VIPS, "remove"))
    }
}
