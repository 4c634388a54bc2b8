//! Plain identifiers and records shared by the model (control) and the snapshot (dataplane).
//!
//! These are data only: the rules that act on them live in `rules` (pure functions) and in
//! the control crate's model.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A namespace. `NsId::ROOT` is the dataplane's initial L2 namespace (R1).
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct NsId(pub u32);

impl NsId {
    pub const ROOT: NsId = NsId(0);
}

impl fmt::Display for NsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ns#{}", self.0)
    }
}

/// A device (port) of an L2 namespace. `DevId::LO` is the implicit loopback device.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DevId(pub u16);

impl DevId {
    pub const LO: DevId = DevId(0);
}

/// A socket, unique for the lifetime of the dataplane.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct SocketId(pub u32);

/// Namespace level (R1): L2 namespaces own devices and routes and may create L3 children;
/// L3 namespaces use their parent's devices and routes and cannot create namespaces.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    L2,
    L3,
}

/// Loopback policy of a namespace (R11).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopbackMode {
    /// 127.0.0.0/8 traffic stays inside the namespace.
    #[default]
    Isolated,
    /// With no local listener, loopback traffic goes to the L2 parent's listener.
    Shared,
}

/// Address scope, ordered from narrowest to widest (R13 "scope no wider than the route's").
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Host,
    Link,
    #[default]
    Global,
}

/// Transport protocol of a socket.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Udp,
}

/// An IPv4 prefix `addr/len`; `addr` is kept as given (host bits allowed where it matters).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ipv4Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Prefix {
    pub fn new(addr: Ipv4Addr, len: u8) -> Self {
        debug_assert!(len <= 32);
        Ipv4Prefix { addr, len }
    }
    pub fn mask(&self) -> u32 {
        prefix_mask(self.len)
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        (u32::from(a) ^ u32::from(self.addr)) & self.mask() == 0
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The netmask of a prefix length (0..=32).
pub fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// An interface address (R3): who owns it decides where packets to `local` go (R8).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IfAddr {
    pub dev: DevId,
    /// Defaults to the device name; an alias is `DEV:SUFFIX`. Shared, so that cloning an
    /// ifaddr (every namespace view the publisher rebuilds does) allocates nothing; it
    /// serializes as a plain string.
    pub label: Arc<str>,
    pub local: Ipv4Addr,
    pub prefix: u8,
    /// Defaults to the directed broadcast of the subnet.
    pub broadcast: Ipv4Addr,
    pub scope: Scope,
    pub owner: NsId,
}

/// The subnet arithmetic of an address with a prefix, shared by the model's `IfAddr` and the
/// views' compact `LocalAddr` (the rules in `rules.rs` take either).
pub trait Subnet {
    fn local(&self) -> Ipv4Addr;
    fn prefix(&self) -> u8;
    fn broadcast(&self) -> Ipv4Addr;
    fn dev(&self) -> DevId;
    fn scope(&self) -> Scope;
    fn mask(&self) -> u32 {
        prefix_mask(self.prefix())
    }
    /// `local & mask`.
    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.local()) & self.mask())
    }
    /// `local | !mask`.
    fn directed_broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.local()) | !self.mask())
    }
    /// Whether `a` lies in this address's subnet.
    fn subnet_contains(&self, a: Ipv4Addr) -> bool {
        (u32::from(a) ^ u32::from(self.local())) & self.mask() == 0
    }
}

/// `Subnet` for a record with `local`, `prefix`, `broadcast`, `dev` and `scope` fields.
macro_rules! subnet_from_fields {
    ($t:ty) => {
        impl Subnet for $t {
            fn local(&self) -> Ipv4Addr {
                self.local
            }
            fn prefix(&self) -> u8 {
                self.prefix
            }
            fn broadcast(&self) -> Ipv4Addr {
                self.broadcast
            }
            fn dev(&self) -> DevId {
                self.dev
            }
            fn scope(&self) -> Scope {
                self.scope
            }
        }
    };
}

subnet_from_fields!(IfAddr);

/// What the packet path needs of an ifaddr (12 bytes: no label, no owner): a namespace view
/// keeps these for the addresses it owns.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct LocalAddr {
    pub local: Ipv4Addr,
    pub broadcast: Ipv4Addr,
    pub dev: DevId,
    pub prefix: u8,
    pub scope: Scope,
}

impl LocalAddr {
    pub fn of(i: &IfAddr) -> Self {
        LocalAddr {
            local: i.local,
            broadcast: i.broadcast,
            dev: i.dev,
            prefix: i.prefix,
            scope: i.scope,
        }
    }
}

subnet_from_fields!(LocalAddr);

/// A route of an L2 namespace (R2). `gateway: None` is a directly connected route.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    pub dst: Ipv4Prefix,
    pub gateway: Option<Ipv4Addr>,
    pub dev: DevId,
    pub scope: Scope,
}

/// A device as the snapshot sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Device {
    pub id: DevId,
    pub name: String,
    /// The L2 namespace the device belongs to (R2).
    pub owner: NsId,
    pub mac: [u8; 6],
}

/// One bound socket: `(proto, addr, port)` in namespace `ns` (R7, R9).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Binding {
    pub id: SocketId,
    pub ns: NsId,
    pub proto: Proto,
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// The loopback ifaddr every namespace sees (R6).
pub fn loopback_ifaddr(owner: NsId) -> IfAddr {
    IfAddr {
        dev: DevId::LO,
        label: "lo".into(),
        local: Ipv4Addr::LOCALHOST,
        prefix: 8,
        broadcast: Ipv4Addr::new(127, 255, 255, 255),
        scope: Scope::Host,
        owner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_subnets() {
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(24), 0xffff_ff00);
        assert_eq!(prefix_mask(32), u32::MAX);
        let a = IfAddr {
            dev: DevId(1),
            label: "eth0".into(),
            local: Ipv4Addr::new(10, 1, 2, 3),
            prefix: 24,
            broadcast: Ipv4Addr::new(10, 1, 2, 255),
            scope: Scope::Global,
            owner: NsId::ROOT,
        };
        assert_eq!(a.network(), Ipv4Addr::new(10, 1, 2, 0));
        assert_eq!(a.directed_broadcast(), Ipv4Addr::new(10, 1, 2, 255));
        assert!(a.subnet_contains(Ipv4Addr::new(10, 1, 2, 200)));
        assert!(!a.subnet_contains(Ipv4Addr::new(10, 1, 3, 1)));
        assert!(Scope::Host < Scope::Link && Scope::Link < Scope::Global);
    }
}
