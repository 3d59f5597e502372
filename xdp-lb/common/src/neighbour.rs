//! L2 announcements: the addresses `xdp_lb` answers ARP requests and IPv6
//! neighbour solicitations for, itself, on the interface that owns them (as
//! MetalLB's and Cilium's L2 announcements do), so that a VIP held by no
//! interface of the host is still reachable on its link.

use crate::pod::impl_pod;

/// Value of the `L2_ANNOUNCE` map (keyed by `service::AddressKey`): where the
/// address is announced, and with which MAC address.
///
/// The datapath answers only a request that came in on `ifindex`: an address
/// announced on one link is not claimed on the others (a host on two links
/// must not steal a neighbour's address on the wrong one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L2Announcement {
    /// The interface the address is announced on (the ingress ifindex of
    /// the requests that are answered).
    pub ifindex: u32,
    /// The MAC address the answers give for the address (the interface's
    /// own, normally).
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<L2Announcement>() == 12);

impl_pod!(L2Announcement);
