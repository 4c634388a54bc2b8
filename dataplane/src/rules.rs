//! The receive- and send-side rules of SEMANTICS.md as pure functions over plain data.
//!
//! No threads, no clock, no I/O: the control model, the snapshot and the packet path all call
//! these, so each rule has exactly one implementation.

use crate::errno::Errno;
use crate::types::{DevId, IfAddr, Route, Scope, Subnet};
use std::net::Ipv4Addr;

/// R7: may a socket in a namespace that owns `owned` bind `addr`?
///
/// Allowed: `0.0.0.0`, `127.0.0.0/8`, `255.255.255.255`, `224.0.0.0/4`, and for any owned
/// ifaddr its local address, its broadcast, its network address and its directed broadcast
/// (patch 06 `net_ns_check_bind`). Anything else is `EADDRNOTAVAIL`.
pub fn bind_allowed<'a, A: Subnet + 'a>(
    addr: Ipv4Addr,
    owned: impl IntoIterator<Item = &'a A>,
) -> Result<(), Errno> {
    if addr.is_unspecified() || addr.is_loopback() || addr.is_broadcast() || addr.is_multicast() {
        return Ok(());
    }
    let ok = owned.into_iter().any(|ifa| {
        addr == ifa.local()
            || addr == ifa.broadcast()
            || addr == ifa.network()
            || addr == ifa.directed_broadcast()
    });
    if ok {
        Ok(())
    } else {
        Err(Errno::EADDRNOTAVAIL)
    }
}

/// The route chosen for a destination: explicit routes and the connected routes of the
/// family's ifaddrs, longest prefix first (ties: explicit before connected, then first added).
pub fn lookup_route(routes: &[Route], dst: Ipv4Addr) -> Option<&Route> {
    let mut best: Option<&Route> = None;
    for r in routes {
        if r.dst.contains(dst) && best.is_none_or(|b| r.dst.len > b.dst.len) {
            best = Some(r);
        }
    }
    best
}

/// Where a send goes and from which source (R13).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SourceChoice {
    pub src: Ipv4Addr,
    /// Output device; `DevId::LO` for loopback.
    pub dev: DevId,
    /// The address to resolve on the output device: the gateway, or the destination itself.
    pub next_hop: Ipv4Addr,
}

/// R13 source selection (patch 07 `net_ns_select_source_address`).
///
/// `owned` are the sending namespace's ifaddrs (on any device); `routes` are its L2 family's
/// routes, connected routes included. To loopback: `127.0.0.1` on `lo`. Otherwise the route
/// picks the output device and scope; among the owned ifaddrs on that device usable at the
/// route's scope (the patch skips `ifa_scope > scope` in Linux numbering, where a larger number
/// is narrower: a host-scoped address is never chosen for a link or global route), the first
/// whose subnet holds the next hop wins, else the first usable one; else any owned ifaddr of
/// non-link scope usable at that scope on any device. No route: `ENETUNREACH`. No address:
/// `EADDRNOTAVAIL`, and nothing may leave.
pub fn select_source<'a, A: Subnet + 'a, I>(
    owned: I,
    routes: &[Route],
    dst: Ipv4Addr,
) -> Result<SourceChoice, Errno>
where
    I: IntoIterator<Item = &'a A>,
    I::IntoIter: Clone,
{
    if dst.is_loopback() {
        return Ok(SourceChoice {
            src: Ipv4Addr::LOCALHOST,
            dev: DevId::LO,
            next_hop: dst,
        });
    }
    let route = lookup_route(routes, dst).ok_or(Errno::ENETUNREACH)?;
    let next_hop = route.gateway.unwrap_or(dst);
    let owned = owned.into_iter();
    let usable = |ifa: &A| ifa.scope() >= route.scope && ifa.dev() != DevId::LO;
    let mut first = None;
    for ifa in owned.clone().filter(|i| i.dev() == route.dev && usable(i)) {
        if ifa.subnet_contains(next_hop) {
            return Ok(SourceChoice {
                src: ifa.local(),
                dev: route.dev,
                next_hop,
            });
        }
        first.get_or_insert(ifa.local());
    }
    if let Some(src) = first {
        return Ok(SourceChoice {
            src,
            dev: route.dev,
            next_hop,
        });
    }
    owned
        .filter(|i| i.scope() != Scope::Link && usable(i))
        .map(|i| SourceChoice {
            src: i.local(),
            dev: route.dev,
            next_hop,
        })
        .next()
        .ok_or(Errno::EADDRNOTAVAIL)
}

/// The connected route an ifaddr implies on its device (as `ip addr add` installs).
pub fn connected_route(ifa: &IfAddr) -> Route {
    Route {
        dst: crate::types::Ipv4Prefix::new(ifa.network(), ifa.prefix),
        gateway: None,
        dev: ifa.dev,
        scope: Scope::Link,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Ipv4Prefix, NsId};

    fn ifa(dev: u16, local: [u8; 4], prefix: u8, scope: Scope) -> IfAddr {
        let local = Ipv4Addr::from(local);
        let mask = crate::types::prefix_mask(prefix);
        IfAddr {
            dev: DevId(dev),
            label: format!("eth{dev}").into(),
            local,
            prefix,
            broadcast: Ipv4Addr::from(u32::from(local) | !mask),
            scope,
            owner: NsId(1),
        }
    }

    #[test]
    fn r07_bind_allowed_addresses() {
        let owned = [ifa(1, [10, 0, 0, 5], 24, Scope::Global)];
        for ok in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [127, 9, 9, 9],
            [255, 255, 255, 255],
            [224, 0, 0, 251],
            [239, 1, 1, 1],
            [10, 0, 0, 5],
            [10, 0, 0, 0],
            [10, 0, 0, 255],
        ] {
            assert_eq!(bind_allowed(Ipv4Addr::from(ok), &owned), Ok(()), "{ok:?}");
        }
        for bad in [[10, 0, 0, 6], [10, 0, 1, 5], [192, 0, 2, 1]] {
            assert_eq!(
                bind_allowed(Ipv4Addr::from(bad), &owned),
                Err(Errno::EADDRNOTAVAIL)
            );
        }
        // An explicit non-default broadcast is bindable too.
        let mut odd = ifa(1, [10, 0, 0, 5], 24, Scope::Global);
        odd.broadcast = Ipv4Addr::new(10, 0, 0, 127);
        assert_eq!(bind_allowed(Ipv4Addr::new(10, 0, 0, 127), [&odd]), Ok(()));
        assert_eq!(bind_allowed(Ipv4Addr::new(10, 0, 0, 255), [&odd]), Ok(()));
    }

    #[test]
    fn r13_select_source() {
        let a = ifa(1, [10, 0, 0, 5], 24, Scope::Global);
        let b = ifa(1, [10, 0, 1, 5], 24, Scope::Global);
        let h = ifa(1, [10, 0, 2, 5], 24, Scope::Host);
        let other_dev = ifa(2, [192, 168, 7, 1], 24, Scope::Global);
        let mut routes: Vec<Route> = [&a, &b, &h, &other_dev]
            .iter()
            .map(|i| connected_route(i))
            .collect();
        routes.push(Route {
            dst: Ipv4Prefix::new(Ipv4Addr::UNSPECIFIED, 0),
            gateway: Some(Ipv4Addr::new(10, 0, 1, 1)),
            dev: DevId(1),
            scope: Scope::Global,
        });
        // Loopback.
        let c = select_source([&a], &routes, Ipv4Addr::new(127, 0, 0, 9)).unwrap();
        assert_eq!((c.src, c.dev), (Ipv4Addr::LOCALHOST, DevId::LO));
        // Subnet match wins over the first.
        let c = select_source([&a, &b], &routes, Ipv4Addr::new(10, 0, 1, 77)).unwrap();
        assert_eq!(
            (c.src, c.dev, c.next_hop),
            (b.local, DevId(1), Ipv4Addr::new(10, 0, 1, 77))
        );
        // Via the gateway: the address whose subnet holds the gateway.
        let c = select_source([&a, &b], &routes, Ipv4Addr::new(8, 8, 8, 8)).unwrap();
        assert_eq!((c.src, c.next_hop), (b.local, Ipv4Addr::new(10, 0, 1, 1)));
        // No subnet match on the device: the first usable.
        let c = select_source([&a], &routes, Ipv4Addr::new(8, 8, 8, 8)).unwrap();
        assert_eq!(c.src, a.local);
        // Host scope is never used for a link/global route.
        assert_eq!(
            select_source([&h], &routes, Ipv4Addr::new(10, 0, 2, 9)),
            Err(Errno::EADDRNOTAVAIL)
        );
        // Nothing on the output device: any owned non-link address elsewhere.
        let c = select_source([&other_dev], &routes, Ipv4Addr::new(10, 0, 0, 9)).unwrap();
        assert_eq!((c.src, c.dev), (other_dev.local, DevId(1)));
        // Owns nothing: EADDRNOTAVAIL, no route: ENETUNREACH.
        assert_eq!(
            select_source::<IfAddr, _>([], &routes, Ipv4Addr::new(10, 0, 0, 9)),
            Err(Errno::EADDRNOTAVAIL)
        );
        assert_eq!(
            select_source([&a], &routes[..4], Ipv4Addr::new(8, 8, 8, 8)),
            Err(Errno::ENETUNREACH)
        );
    }
}
