//! The control protocol: one JSON object per line each way.
//!
//! A client sends an [`Envelope`] — the identity to act as and a [`Request`] — and reads one
//! [`Reply`]: `{"ok": VALUE}` or `{"error": {"errno": "EPERM", "message": "..."}}`. The
//! values are the view records below; `l3nsctl` renders them as tables or prints them as
//! they are with `--json`.
//!
//! ```text
//! → {"as":"web1","request":{"cmd":"sock_bind","proto":"udp","addr":"0.0.0.0","port":53,"service":"echo"}}
//! ← {"ok":{"id":3,"namespace":"web1","proto":"udp","addr":"0.0.0.0","port":53,"service":"echo",...}}
//! → {"request":{"cmd":"addr_push","local":"10.0.0.2","dev":"eth0","to":"web1"}}
//! ← {"error":{"errno":"EADDRNOTAVAIL","message":"..."}}
//! ```

use crate::error::ControlError;
use crate::model::NsInfo;
use l3ns_dataplane::counters::NsSnapshot;
use l3ns_dataplane::types::{Ipv4Prefix, LoopbackMode, Proto, Scope};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// One command of the interface contract (DESIGN.md), as the control thread receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// `ns add NAME [--parent NS] [--loopback isolated|shared] [--l2]` (R1). With `l2` a
    /// nested L2 namespace under `root` (the forward-compatible path of R1; root only).
    NsAdd {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
        #[serde(default)]
        loopback: LoopbackMode,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        l2: bool,
    },
    /// `ns del NAME` (R5).
    NsDel { name: String },
    /// `ns list`: the caller and, for an L2 caller, its descendants.
    NsList,
    /// `ns info NAME` (`ENOENT` outside the caller's view).
    NsInfo { name: String },
    /// `dev list` (R2): the devices of the caller's L2 family.
    DevList,
    /// `addr add A.B.C.D/LEN dev DEV [label L] [broadcast A.B.C.D] [scope S]` (R3).
    AddrAdd {
        local: Ipv4Addr,
        prefix: u8,
        dev: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broadcast: Option<Ipv4Addr>,
        #[serde(default)]
        scope: Scope,
    },
    /// `addr del A.B.C.D dev DEV` (R3).
    AddrDel { local: Ipv4Addr, dev: String },
    /// `addr push A.B.C.D dev DEV [label L] --to NS` (R4).
    AddrPush {
        local: Ipv4Addr,
        dev: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        to: String,
    },
    /// `addr pull A.B.C.D dev DEV [label L] --from NS` (R4).
    AddrPull {
        local: Ipv4Addr,
        dev: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        from: String,
    },
    /// `addr show [--all]` (R6).
    AddrShow {
        #[serde(default)]
        all: bool,
    },
    /// `route add CIDR [via GW] dev DEV [scope S]` (R2). Without `via` the route is connected
    /// and its scope defaults to `link`; with a gateway to `global`.
    RouteAdd {
        #[serde(with = "cidr")]
        dst: Ipv4Prefix,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<Ipv4Addr>,
        dev: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
    },
    /// `route del CIDR` (R2).
    RouteDel {
        #[serde(with = "cidr")]
        dst: Ipv4Prefix,
    },
    /// `route list` (R2): the caller's family's explicit routes.
    RouteList,
    /// `sock bind udp A.B.C.D:PORT --service echo|sink|attach:PATH` (R7).
    SockBind {
        proto: Proto,
        addr: Ipv4Addr,
        port: u16,
        service: String,
    },
    /// `sock list`, with each socket's queue.
    SockList,
    /// `sock close ID`.
    SockClose { id: u32 },
    /// `stats [--ns NS]` (R16): counters of the namespaces the caller sees.
    Stats {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ns: Option<String>,
    },
    /// `version`: program and snapshot version.
    Version,
    /// `status`: snapshot version, workers, ports, sizes, the caller's identity.
    Status,
}

impl Request {
    /// Whether a successful request changes the model (and so is persisted before the answer).
    pub fn is_mutating(&self) -> bool {
        matches!(
            self,
            Request::NsAdd { .. }
                | Request::NsDel { .. }
                | Request::AddrAdd { .. }
                | Request::AddrDel { .. }
                | Request::AddrPush { .. }
                | Request::AddrPull { .. }
                | Request::RouteAdd { .. }
                | Request::RouteDel { .. }
                | Request::SockBind { .. }
                | Request::SockClose { .. }
        )
    }

    /// The operation name counted in `l3ns_control_operations_total{op}`.
    pub fn op(&self) -> &'static str {
        match self {
            Request::NsAdd { .. } => "ns_add",
            Request::NsDel { .. } => "ns_del",
            Request::NsList => "ns_list",
            Request::NsInfo { .. } => "ns_info",
            Request::DevList => "dev_list",
            Request::AddrAdd { .. } => "addr_add",
            Request::AddrDel { .. } => "addr_del",
            Request::AddrPush { .. } => "addr_push",
            Request::AddrPull { .. } => "addr_pull",
            Request::AddrShow { .. } => "addr_show",
            Request::RouteAdd { .. } => "route_add",
            Request::RouteDel { .. } => "route_del",
            Request::RouteList => "route_list",
            Request::SockBind { .. } => "sock_bind",
            Request::SockList => "sock_list",
            Request::SockClose { .. } => "sock_close",
            Request::Stats { .. } => "stats",
            Request::Version => "version",
            Request::Status => "status",
        }
    }
}

/// What a client sends: the identity to act as (`None`: the connection's own — `root` on the
/// root socket, the namespace on a tenant socket) and the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub as_ns: Option<String>,
    pub request: Request,
}

/// What the daemon answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Ok(serde_json::Value),
    Error(ControlError),
}

impl From<Result<serde_json::Value, ControlError>> for Reply {
    fn from(r: Result<serde_json::Value, ControlError>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e),
        }
    }
}

/// `ns list` answers a list of [`NsInfo`]; `ns info` and `ns add` one.
pub type NsView = NsInfo;

/// A device as `dev list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevView {
    pub name: String,
    pub mac: String,
    /// The L2 namespace the device belongs to.
    pub namespace: String,
}

/// An ifaddr as `addr show` shows it (`addr add`, `push` and `pull` answer the one they
/// touched).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrView {
    pub dev: String,
    pub label: String,
    pub local: Ipv4Addr,
    pub prefix: u8,
    pub broadcast: Ipv4Addr,
    pub scope: Scope,
    pub owner: String,
}

/// A route as `route list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    #[serde(with = "cidr")]
    pub dst: Ipv4Prefix,
    pub via: Option<Ipv4Addr>,
    pub dev: String,
    pub scope: Scope,
}

/// A socket and its receive queue as `sock list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SockView {
    pub id: u32,
    pub namespace: String,
    pub proto: Proto,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub service: String,
    /// Datagrams waiting in the queue now.
    pub queued: usize,
    /// The queue's capacity.
    pub depth: usize,
    /// Highest number of datagrams queued at once.
    pub high_water: usize,
    /// Datagrams refused because the queue was full (`queue_full`).
    pub overflow: u64,
    /// Datagrams handed to the service.
    pub received: u64,
}

/// One namespace's counters, summed over every worker (R16).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsStats {
    pub namespace: String,
    #[serde(flatten)]
    pub counters: NsSnapshot,
}

/// One port's counters, summed over every worker; drops only with a non-zero count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    pub port: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub dropped: BTreeMap<String, u64>,
}

/// One worker's own counters (`l3ns_worker_*` in the metrics): whether it keeps up, and how
/// often it wakes consumers across cores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// The worker's index, from 0.
    pub worker: usize,
    /// Polls that handled at least one packet.
    pub busy_polls: u64,
    /// Polls that found nothing.
    pub idle_polls: u64,
    /// Parked consumer threads the worker woke after handing them datagrams.
    pub consumer_wakeups: u64,
}

/// What `stats` answers. `ports` and `workers` are present for L2 identities only (ports and
/// workers belong to L2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub namespaces: Vec<NsStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortStats>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<WorkerStats>>,
}

/// What `version` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    /// The daemon's crate version.
    pub version: String,
    /// The owner-table snapshot version (bumped by every publish).
    pub snapshot_version: u64,
}

/// What `status` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub snapshot_version: u64,
    pub workers: usize,
    pub ports: Vec<String>,
    /// Namespaces the caller sees.
    pub namespaces: usize,
    /// Sockets the caller sees.
    pub sockets: usize,
    /// The identity the request ran as.
    pub identity: String,
}

/// `A.B.C.D/LEN` as a string, for route destinations.
pub mod cidr {
    use l3ns_dataplane::types::Ipv4Prefix;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Ipv4Prefix, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(p)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Prefix, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    /// Parses `A.B.C.D/LEN` (LEN 0–32); a bare address is `/32`.
    pub fn parse(s: &str) -> Result<Ipv4Prefix, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address; use A.B.C.D/LEN"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{l:?} is not a prefix length; use A.B.C.D/0-32"))?;
        Ok(Ipv4Prefix::new(addr, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let r = Envelope {
            as_ns: Some("web1".into()),
            request: Request::RouteAdd {
                dst: cidr::parse("10.1.0.0/16").unwrap(),
                via: Some(Ipv4Addr::new(10, 0, 0, 254)),
                dev: "eth0".into(),
                scope: None,
            },
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"as":"web1","request":{"cmd":"route_add","dst":"10.1.0.0/16","via":"10.0.0.254","dev":"eth0"}}"#
        );
        assert_eq!(serde_json::from_str::<Envelope>(&s).unwrap(), r);
        let e: Envelope = serde_json::from_str(r#"{"request":{"cmd":"ns_list"}}"#).unwrap();
        assert_eq!(e.request, Request::NsList);
        // A misspelt option is an error, not silently ignored.
        assert!(serde_json::from_str::<Envelope>(
            r#"{"request":{"cmd":"ns_del","name":"x","force":true}}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Envelope>(r#"{"request":{"cmd":"nope"}}"#).is_err());
    }

    #[test]
    fn replies_are_ok_or_error() {
        let ok = serde_json::to_string(&Reply::Ok(serde_json::json!([1]))).unwrap();
        assert_eq!(ok, r#"{"ok":[1]}"#);
        let err = Reply::Error(ControlError::eperm("no"));
        let s = serde_json::to_string(&err).unwrap();
        assert_eq!(s, r#"{"error":{"errno":"EPERM","message":"no"}}"#);
        assert_eq!(serde_json::from_str::<Reply>(&s).unwrap(), err);
    }

    #[test]
    fn cidr_parses_and_rejects() {
        assert_eq!(cidr::parse("10.0.0.0/8").unwrap().len, 8);
        assert_eq!(cidr::parse("10.0.0.1").unwrap().len, 32);
        assert!(cidr::parse("10.0.0.0/33").is_err());
        assert!(cidr::parse("10.0.0/8").is_err());
    }
}
