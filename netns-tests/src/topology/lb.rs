//! Load-balancer topologies: one LB box between a client and a backend LAN,
//! and a router spreading VIP traffic over several LBs with ECMP.
use super::{
    Endpoint, Options, endpoint, pin,
    plan::{
        self, BACKEND_LAN, BEHIND_ROUTER_LAN, CLIENT_LAN, LB_LINK_BASE, MAX_BACKENDS, MAX_LBS,
        Subnet,
    },
    route_rig_via, steer_flows,
};
use crate::{Cidr, Error, HostKind, Netns, Result, Rig, Route, Switch};

/// `client` — `lb` — switch — `b0..bN`.
///
/// ```text
/// client eth0 ─── eth0 lb eth1 ─── [switch] ─┬─ eth0 b0
///   LAN 0 .2       .1      LAN 1 .1           ├─ eth0 b1   (LAN 1 .100 + i)
///                                             └─ ...
/// ```
/// The LB forwards (IPv4 and IPv6); the client and the backends route the
/// whole rig range (VIPs included) via the LB. Everything is wire-like, and
/// the client and the backends steer each flow to one CPU (`Rig::steer_flows`).
#[derive(Debug)]
pub struct ClientLbBackends {
    pub rig: Rig,
    pub client: Endpoint,
    pub lb: Netns,
    /// The LB's client-facing interface (`eth0`).
    pub lb_front: Endpoint,
    /// The LB's backend-facing interface (`eth1`).
    pub lb_back: Endpoint,
    pub switch: Switch,
    pub backends: Vec<Endpoint>,
}

impl ClientLbBackends {
    /// Builds the topology with `backends` backends (1 to 150).
    pub fn build(backends: usize, options: &Options) -> Result<Self> {
        check_count("backends", backends, MAX_BACKENDS)?;
        let mut rig = options.rig()?;
        let client_ns = rig.add_host("client", HostKind::Wire)?;
        let lb = rig.add_host("lb", HostKind::Wire)?;
        let switch = rig.add_switch("net")?;

        let front = rig.add_veth_with(&client_ns, "eth0", &lb, "eth0", &options.veth())?;
        let client_lan = Subnet::lan(CLIENT_LAN);
        let client = endpoint(&mut rig, &front.a, &front.b, client_lan.host(2))?;
        let lb_front = endpoint(&mut rig, &front.b, &front.a, client_lan.host(1))?;

        let back_lan = Subnet::lan(BACKEND_LAN);
        let back = rig.add_switch_port(&switch, &lb, "eth1", &options.veth())?;
        let lb_back = endpoint(&mut rig, &back.a, &back.b, back_lan.host(1))?;
        let backends = (0..backends)
            .map(|i| {
                let ns = rig.add_host(&format!("b{i}"), HostKind::Wire)?;
                let port = rig.add_switch_port(&switch, &ns, "eth0", &options.veth())?;
                let backend = endpoint(&mut rig, &port.a, &port.b, back_lan.host(backend_host(i)))?;
                route_rig_via(&mut rig, &ns, &lb_back)?;
                Ok(backend)
            })
            .collect::<Result<Vec<_>>>()?;

        rig.enable_forwarding(&lb)?;
        route_rig_via(&mut rig, &client_ns, &lb_front)?;
        pin(&rig, options, &[&client, &lb_front])?;
        let segment: Vec<&Endpoint> = std::iter::once(&lb_back).chain(&backends).collect();
        pin(&rig, options, &segment)?;
        let ends: Vec<&Endpoint> = std::iter::once(&client).chain(&backends).collect();
        steer_flows(&rig, &ends)?;
        Ok(Self {
            rig,
            client,
            lb,
            lb_front,
            lb_back,
            switch,
            backends,
        })
    }
}

/// `client` — `lb` — `router` — `backend`: a router between the LB and one
/// backend, so that a test can narrow the path past the LB (the router's
/// `eth1`) while every endpoint keeps its own MTU.
///
/// ```text
/// client eth0 ─── eth0 lb eth1 ─── eth0 router eth1 ─── eth0 backend
///   LAN 0 .2       .1      LAN 1 .1  .2          LAN 3 .1  .2
/// ```
/// The LB and the router forward; every host routes the rig range toward the
/// next hop on the way to the others. Everything is wire-like, and the
/// client and the backend steer each flow to one CPU (`Rig::steer_flows`).
#[derive(Debug)]
pub struct ClientLbRouterBackend {
    pub rig: Rig,
    pub client: Endpoint,
    pub lb: Netns,
    /// The LB's client-facing interface (`eth0`).
    pub lb_front: Endpoint,
    /// The LB's router-facing interface (`eth1`).
    pub lb_back: Endpoint,
    pub router: Netns,
    /// The router's LB-facing interface (`eth0`).
    pub router_front: Endpoint,
    /// The router's backend-facing interface (`eth1`).
    pub router_back: Endpoint,
    pub backend: Endpoint,
}

impl ClientLbRouterBackend {
    /// Builds the topology.
    pub fn build(options: &Options) -> Result<Self> {
        let mut rig = options.rig()?;
        let client_ns = rig.add_host("client", HostKind::Wire)?;
        let lb = rig.add_host("lb", HostKind::Wire)?;
        let router = rig.add_host("router", HostKind::Wire)?;
        let backend_ns = rig.add_host("b0", HostKind::Wire)?;

        let client_lan = Subnet::lan(CLIENT_LAN);
        let front = rig.add_veth_with(&client_ns, "eth0", &lb, "eth0", &options.veth())?;
        let client = endpoint(&mut rig, &front.a, &front.b, client_lan.host(2))?;
        let lb_front = endpoint(&mut rig, &front.b, &front.a, client_lan.host(1))?;

        let middle_lan = Subnet::lan(BACKEND_LAN);
        let middle = rig.add_veth_with(&lb, "eth1", &router, "eth0", &options.veth())?;
        let lb_back = endpoint(&mut rig, &middle.a, &middle.b, middle_lan.host(1))?;
        let router_front = endpoint(&mut rig, &middle.b, &middle.a, middle_lan.host(2))?;

        let far_lan = Subnet::lan(BEHIND_ROUTER_LAN);
        let far = rig.add_veth_with(&router, "eth1", &backend_ns, "eth0", &options.veth())?;
        let router_back = endpoint(&mut rig, &far.a, &far.b, far_lan.host(1))?;
        let backend = endpoint(&mut rig, &far.b, &far.a, far_lan.host(2))?;

        rig.enable_forwarding(&lb)?;
        rig.enable_forwarding(&router)?;
        route_rig_via(&mut rig, &client_ns, &lb_front)?;
        // The LB reaches the backend's LAN through the router, everything
        // else (the client's LAN is connected) the same way.
        route_rig_via(&mut rig, &lb, &router_front)?;
        route_rig_via(&mut rig, &router, &lb_back)?;
        route_rig_via(&mut rig, &backend_ns, &router_back)?;
        pin(&rig, options, &[&client, &lb_front])?;
        pin(&rig, options, &[&lb_back, &router_front])?;
        pin(&rig, options, &[&router_back, &backend])?;
        steer_flows(&rig, &[&client, &backend])?;
        Ok(Self {
            rig,
            client,
            lb,
            lb_front,
            lb_back,
            router,
            router_front,
            router_back,
            backend,
        })
    }
}

/// One load balancer behind the ECMP router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcmpLb {
    pub netns: Netns,
    /// Toward the router (`eth0`, LAN 16 + i, host .2).
    pub front: Endpoint,
    /// On the backend LAN (`eth1`, LAN 1, host .10 + i).
    pub back: Endpoint,
    /// The router's interface toward this LB (`lb<i>`, host .1).
    pub router_side: Endpoint,
}

/// `client` — `router` =ECMP=> `lb0..lbN` — switch — `b0..bM`.
///
/// ```text
/// client eth0 ─── eth0 router lb0 ─── eth0 lb0 eth1 ─┐
///                        │    lb1 ─── eth0 lb1 eth1 ─┤
///                        │                           ├─ [switch] ─ b0, b1, ...
///                        └─── net ───────────────────┘
/// ```
/// The router sends the VIP ranges ([`plan::VIP_RANGE_V4`],
/// [`plan::VIP_RANGE_V6`]) over one multipath route to all LBs, hashing on
/// the L4 5-tuple (`fib_multipath_hash_policy` 1). It is on the backend LAN
/// too, as the backends' way back to clients (direct server return). The LBs
/// route the rest of the rig via the router. Everything is wire-like, and
/// the client and the backends steer each flow to one CPU (`Rig::steer_flows`).
#[derive(Debug)]
pub struct EcmpLbs {
    pub rig: Rig,
    pub client: Endpoint,
    pub router: Netns,
    /// The router's client-facing interface (`eth0`).
    pub router_front: Endpoint,
    /// The router's interface on the backend LAN (`net`, host .1).
    pub router_back: Endpoint,
    pub lbs: Vec<EcmpLb>,
    pub switch: Switch,
    pub backends: Vec<Endpoint>,
    /// The IPv4 VIP range routed to the LBs.
    pub vip_range_v4: Cidr,
    /// The IPv6 VIP range routed to the LBs.
    pub vip_range_v6: Cidr,
}

impl EcmpLbs {
    /// Builds the topology with `lbs` load balancers (1 to 16) and
    /// `backends` backends (1 to 150), the router's multipath route to the
    /// VIP ranges included.
    pub fn build(lbs: usize, backends: usize, options: &Options) -> Result<Self> {
        Self::build_routed(lbs, backends, options, true)
    }

    /// [`Self::build`] without the router's route to the VIP ranges: the
    /// LBs announce it over BGP ([`crate::bird`]).
    pub fn build_unrouted(lbs: usize, backends: usize, options: &Options) -> Result<Self> {
        Self::build_routed(lbs, backends, options, false)
    }

    fn build_routed(lbs: usize, backends: usize, options: &Options, routed: bool) -> Result<Self> {
        check_count("LBs", lbs, MAX_LBS)?;
        check_count("backends", backends, MAX_BACKENDS)?;
        let mut rig = options.rig()?;
        let client_ns = rig.add_host("client", HostKind::Wire)?;
        let router = rig.add_host("router", HostKind::Wire)?;
        let switch = rig.add_switch("net")?;

        let front = rig.add_veth_with(&client_ns, "eth0", &router, "eth0", &options.veth())?;
        let client_lan = Subnet::lan(CLIENT_LAN);
        let client = endpoint(&mut rig, &front.a, &front.b, client_lan.host(2))?;
        let router_front = endpoint(&mut rig, &front.b, &front.a, client_lan.host(1))?;
        pin(&rig, options, &[&client, &router_front])?;

        let back_lan = Subnet::lan(BACKEND_LAN);
        let back = rig.add_switch_port(&switch, &router, "net", &options.veth())?;
        let router_back = endpoint(&mut rig, &back.a, &back.b, back_lan.host(1))?;

        let mut lb_list = Vec::with_capacity(lbs);
        for i in 0..lbs {
            let netns = rig.add_host(&format!("lb{i}"), HostKind::Wire)?;
            let link_lan = Subnet::lan(LB_LINK_BASE + u8::try_from(i).unwrap_or(u8::MAX));
            let link =
                rig.add_veth_with(&router, &format!("lb{i}"), &netns, "eth0", &options.veth())?;
            let router_side = endpoint(&mut rig, &link.a, &link.b, link_lan.host(1))?;
            let lb_front = endpoint(&mut rig, &link.b, &link.a, link_lan.host(2))?;
            pin(&rig, options, &[&router_side, &lb_front])?;
            let port = rig.add_switch_port(&switch, &netns, "eth1", &options.veth())?;
            let host = 10 + u8::try_from(i).unwrap_or(u8::MAX);
            let lb_back = endpoint(&mut rig, &port.a, &port.b, back_lan.host(host))?;
            rig.enable_forwarding(&netns)?;
            route_rig_via(&mut rig, &netns, &router_side)?;
            lb_list.push(EcmpLb {
                netns,
                front: lb_front,
                back: lb_back,
                router_side,
            });
        }

        let backends = (0..backends)
            .map(|i| {
                let ns = rig.add_host(&format!("b{i}"), HostKind::Wire)?;
                let port = rig.add_switch_port(&switch, &ns, "eth0", &options.veth())?;
                let backend = endpoint(&mut rig, &port.a, &port.b, back_lan.host(backend_host(i)))?;
                route_rig_via(&mut rig, &ns, &router_back)?;
                Ok(backend)
            })
            .collect::<Result<Vec<_>>>()?;

        rig.enable_forwarding(&router)?;
        // Hash on the 5-tuple, so different flows of one client spread.
        rig.set_sysctl(&router, "net.ipv4.fib_multipath_hash_policy", "1")?;
        rig.set_sysctl(&router, "net.ipv6.fib_multipath_hash_policy", "1")?;
        if routed {
            let (mut ecmp4, mut ecmp6) =
                (Route::to(plan::VIP_RANGE_V4), Route::to(plan::VIP_RANGE_V6));
            for lb in &lb_list {
                ecmp4 = ecmp4.via(lb.front.v4.into());
                ecmp6 = ecmp6.via(lb.front.v6.into());
            }
            rig.add_route(&router, &ecmp4)?;
            rig.add_route(&router, &ecmp6)?;
        }
        route_rig_via(&mut rig, &client_ns, &router_front)?;

        let segment: Vec<&Endpoint> = std::iter::once(&router_back)
            .chain(lb_list.iter().map(|lb| &lb.back))
            .chain(&backends)
            .collect();
        pin(&rig, options, &segment)?;
        let ends: Vec<&Endpoint> = std::iter::once(&client).chain(&backends).collect();
        steer_flows(&rig, &ends)?;
        Ok(Self {
            rig,
            client,
            router,
            router_front,
            router_back,
            lbs: lb_list,
            switch,
            backends,
            vip_range_v4: plan::VIP_RANGE_V4,
            vip_range_v6: plan::VIP_RANGE_V6,
        })
    }
}

/// Backend `i` is host .100 + i of the backend LAN.
fn backend_host(i: usize) -> u8 {
    // `check_count` keeps i below MAX_BACKENDS (150), so this fits.
    u8::try_from(100 + i).unwrap_or(u8::MAX)
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<()> {
    if (1..=max).contains(&count) {
        Ok(())
    } else {
        Err(Error::Invalid {
            what,
            input: count.to_string(),
            expected: "a count within the address plan (see topology::plan)",
        })
    }
}
