//! Routes, including ECMP (multipath) routes.
use std::{fmt, net::IpAddr};

use crate::{Cidr, Error, Result, names};

/// One next hop of a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Nexthop {
    /// The gateway; must be an address of the same rig.
    pub via: IpAddr,
    /// The interface toward it (found by the kernel when `None`).
    pub dev: Option<String>,
    /// The ECMP weight, 1 to 256 (`None` is 1).
    pub weight: Option<u16>,
}

/// A route to add in a rig namespace.
///
/// ```
/// # use netns_tests::{Cidr, Route};
/// # fn main() -> netns_tests::Result<()> {
/// let ecmp = Route::to("198.19.0.0/16".parse::<Cidr>()?)
///     .via("198.18.16.2".parse().unwrap())
///     .via("198.18.17.2".parse().unwrap());
/// assert_eq!(ecmp.nexthops().len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// `None` for a default route.
    dest: Option<Cidr>,
    ipv6: bool,
    nexthops: Vec<Nexthop>,
    dev: Option<String>,
}

impl Route {
    /// A route to `dest` (give it next hops with [`via`](Self::via) or a
    /// device with [`dev`](Self::dev)).
    pub fn to(dest: Cidr) -> Self {
        Self {
            dest: Some(dest.network()),
            ipv6: dest.is_ipv6(),
            nexthops: Vec::new(),
            dev: None,
        }
    }

    /// The IPv4 default route; it must go via a rig address.
    pub const fn default_v4() -> Self {
        Self {
            dest: None,
            ipv6: false,
            nexthops: Vec::new(),
            dev: None,
        }
    }

    /// The IPv6 default route; it must go via a rig address.
    pub const fn default_v6() -> Self {
        Self {
            dest: None,
            ipv6: true,
            nexthops: Vec::new(),
            dev: None,
        }
    }

    /// Adds a next hop; two or more make an ECMP route.
    #[must_use]
    pub fn via(self, gateway: IpAddr) -> Self {
        self.nexthop(Nexthop {
            via: gateway,
            dev: None,
            weight: None,
        })
    }

    /// Adds a next hop with all its settings.
    #[must_use]
    pub fn nexthop(mut self, nexthop: Nexthop) -> Self {
        self.nexthops.push(nexthop);
        self
    }

    /// Sends the route out of `dev` (a device route when it has no next hop).
    #[must_use]
    pub fn dev(mut self, dev: &str) -> Self {
        self.dev = Some(dev.to_owned());
        self
    }

    /// The destination, `None` for a default route.
    pub const fn dest(&self) -> Option<Cidr> {
        self.dest
    }

    /// The next hops.
    pub fn nexthops(&self) -> &[Nexthop] {
        &self.nexthops
    }

    /// True for a default route.
    pub const fn is_default(&self) -> bool {
        self.dest.is_none()
    }

    /// Checks the parts that do not depend on the rig: destination in range,
    /// families consistent, names valid, something to route over.
    pub(crate) fn check_shape(&self) -> Result<()> {
        if let Some(dest) = self.dest {
            dest.check_in_rig()?;
        }
        for hop in &self.nexthops {
            if hop.via.is_ipv6() != self.ipv6 {
                return Err(Error::RouteFamily {
                    route: self.to_string(),
                    gateway: hop.via,
                });
            }
            if let Some(dev) = &hop.dev {
                names::check_ifname(dev)?;
            }
            if hop.weight.is_some_and(|w| !(1..=256).contains(&w)) {
                return Err(Error::Invalid {
                    what: "next hop weight",
                    input: format!("{:?}", hop.weight),
                    expected: "1 to 256",
                });
            }
        }
        if let Some(dev) = &self.dev {
            names::check_ifname(dev)?;
        }
        if self.nexthops.is_empty() && self.dev.is_none() {
            return Err(Error::Invalid {
                what: "route",
                input: self.to_string(),
                expected: "at least one next hop or a device",
            });
        }
        Ok(())
    }

    /// The arguments after `ip -n NS`.
    pub(crate) fn ip_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            if self.ipv6 { "-6" } else { "-4" }.into(),
            "route".into(),
            "replace".into(),
            self.dest
                .map_or_else(|| "default".to_owned(), |d| d.to_string()),
        ];
        match self.nexthops.as_slice() {
            [] => {}
            [hop] if hop.weight.is_none() => {
                args.extend(["via".into(), hop.via.to_string()]);
                if let Some(dev) = hop.dev.as_ref().or(self.dev.as_ref()) {
                    args.extend(["dev".into(), dev.clone()]);
                }
            }
            hops => {
                for hop in hops {
                    args.extend(["nexthop".into(), "via".into(), hop.via.to_string()]);
                    if let Some(dev) = hop.dev.as_ref().or(self.dev.as_ref()) {
                        args.extend(["dev".into(), dev.clone()]);
                    }
                    if let Some(weight) = hop.weight {
                        args.extend(["weight".into(), weight.to_string()]);
                    }
                }
            }
        }
        if self.nexthops.is_empty()
            && let Some(dev) = &self.dev
        {
            args.extend(["dev".into(), dev.clone()]);
        }
        args
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dest {
            Some(dest) => write!(f, "{dest}")?,
            None if self.ipv6 => f.write_str("default (IPv6)")?,
            None => f.write_str("default (IPv4)")?,
        }
        for hop in &self.nexthops {
            write!(f, " via {}", hop.via)?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn single_and_multipath_arguments() {
        let single = Route::to("198.19.0.0/16".parse().unwrap()).via(ip("198.18.0.1"));
        assert_eq!(
            single.ip_args(),
            [
                "-4",
                "route",
                "replace",
                "198.19.0.0/16",
                "via",
                "198.18.0.1"
            ]
        );
        let ecmp = Route::to("2001:2:0:ff00::1/56".parse().unwrap())
            .via(ip("2001:2:0:10::2"))
            .via(ip("2001:2:0:11::2"));
        assert_eq!(
            ecmp.ip_args().join(" "),
            "-6 route replace 2001:2:0:ff00::/56 nexthop via 2001:2:0:10::2 nexthop via 2001:2:0:11::2"
        );
        let dev = Route::to("198.18.5.0/24".parse().unwrap()).dev("eth1");
        assert_eq!(
            dev.ip_args().join(" "),
            "-4 route replace 198.18.5.0/24 dev eth1"
        );
        let default = Route::default_v4().via(ip("198.18.0.1"));
        assert_eq!(
            default.ip_args().join(" "),
            "-4 route replace default via 198.18.0.1"
        );
    }

    #[test]
    fn shapes_that_are_refused() {
        let out = Route::to("10.0.0.0/8".parse().unwrap()).via(ip("198.18.0.1"));
        assert!(matches!(
            out.check_shape(),
            Err(Error::AddressOutOfRange { .. })
        ));
        let mixed = Route::to("198.19.0.0/16".parse().unwrap()).via(ip("2001:2::1"));
        assert!(matches!(
            mixed.check_shape(),
            Err(Error::RouteFamily { .. })
        ));
        let nothing = Route::to("198.19.0.0/16".parse().unwrap());
        assert!(nothing.check_shape().is_err());
    }
}
