//! Executes one [`Request`] against the [`Runtime`] as one identity: the model checks the
//! rules (R1–R7), this module turns names into ids, starts and stops services, and shapes
//! the answer into the view records of `protocol`.
//!
//! Visibility (R6 and its extension to counters): every listing goes through the model's
//! caller-aware accessors, so an L3 identity sees only its own namespace, addresses, sockets
//! and counters; `stats --ns OTHER` for a namespace outside the view is `ENOENT`, exactly as
//! `ns info OTHER` is.

use super::protocol::{
    AddrView, DevView, NsStats, PortStats, Request, RouteView, SockView, StatsView, StatusView,
    VersionView, WorkerStats,
};
use super::ServiceHost;
use crate::error::{ControlError, Result};
use crate::model::{Model, Socket};
use crate::runtime::Runtime;
use l3ns_dataplane::counters::PortDrop;
use l3ns_dataplane::types::{IfAddr, Level, NsId, Route, Scope, SocketId};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// What a successful request did besides its answer, for the server's bookkeeping.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// The set of namespaces changed (tenant sockets must follow).
    pub namespaces_changed: bool,
}

/// Runs `req` as `caller`. The model is unchanged when an error is returned; a service that
/// fails to start undoes its bind.
pub fn execute(
    rt: &mut Runtime,
    host: &mut dyn ServiceHost,
    caller: NsId,
    req: &Request,
) -> Result<(Value, Effects)> {
    let op = req.op();
    let mut fx = Effects::default();
    if matches!(
        req,
        Request::Version | Request::Status | Request::Stats { .. }
    ) {
        // Inside the control thread's batch: these report the dataplane (snapshot version,
        // counters of queues closed earlier in the batch), so what the batch changed before
        // them is published first.
        rt.flush();
    }
    let value = match req {
        Request::NsAdd {
            name,
            parent,
            loopback,
            l2,
        } => {
            if *l2 {
                if let Some(p) = parent.as_deref().filter(|p| *p != "root") {
                    return Err(ControlError::einval(format!(
                        "a nested L2 namespace is always a child of root, not of {p} (R1); drop --parent"
                    )));
                }
                rt.apply(op, |m| m.ns_add_l2(caller, name, *loopback))?;
            } else {
                rt.apply(op, |m| m.ns_add(caller, name, parent.as_deref(), *loopback))?;
            }
            fx.namespaces_changed = true;
            json(rt.model().ns_info(caller, name)?)
        }
        Request::NsDel { name } => {
            let closed = rt.apply(op, |m| {
                m.ns_del(caller, name)
                    .map(|c| (c.closed_sockets.clone(), c))
            })?;
            for id in &closed {
                host.stop(*id);
            }
            fx.namespaces_changed = true;
            serde_json::json!({
                "deleted": name,
                "closed_sockets": closed.iter().map(|s| s.0).collect::<Vec<_>>(),
            })
        }
        Request::NsList => {
            let m = rt.model();
            let infos = m
                .ns_list(caller)?
                .into_iter()
                .map(|ns| m.ns_info(caller, &ns.name))
                .collect::<Result<Vec<_>>>()?;
            json(infos)
        }
        Request::NsInfo { name } => json(rt.model().ns_info(caller, name)?),
        Request::DevList => {
            let m = rt.model();
            let v: Vec<DevView> = m
                .dev_list(caller)?
                .into_iter()
                .map(|d| DevView {
                    name: d.name.clone(),
                    mac: mac_string(d.mac),
                    namespace: name_of(m, d.owner),
                })
                .collect();
            json(v)
        }
        Request::AddrAdd {
            local,
            prefix,
            dev,
            label,
            broadcast,
            scope,
        } => {
            rt.apply(op, |m| {
                m.addr_add(
                    caller,
                    dev,
                    *local,
                    *prefix,
                    label.as_deref(),
                    *broadcast,
                    *scope,
                )
                .map(|c| ((), c))
            })?;
            json(addr_view_at(rt.model(), caller, dev, *local)?)
        }
        Request::AddrDel { local, dev } => {
            rt.apply(op, |m| m.addr_del(caller, dev, *local).map(|c| ((), c)))?;
            serde_json::json!({ "deleted": local, "dev": dev })
        }
        Request::AddrPush {
            local,
            dev,
            label,
            to,
        } => {
            rt.apply(op, |m| {
                m.addr_push(caller, dev, *local, label.as_deref(), to)
                    .map(|c| ((), c))
            })?;
            json(addr_view_at(rt.model(), caller, dev, *local)?)
        }
        Request::AddrPull {
            local,
            dev,
            label,
            from,
        } => {
            rt.apply(op, |m| {
                m.addr_pull(caller, dev, *local, label.as_deref(), from)
                    .map(|c| ((), c))
            })?;
            json(addr_view_at(rt.model(), caller, dev, *local)?)
        }
        Request::AddrShow { all } => {
            let m = rt.model();
            let v: Vec<AddrView> = m
                .addr_show(caller, *all)?
                .iter()
                .map(|i| addr_view(m, i))
                .collect();
            json(v)
        }
        Request::RouteAdd {
            dst,
            via,
            dev,
            scope,
        } => {
            // A connected route reaches hosts on the link; one through a gateway goes further.
            let scope = scope.unwrap_or(if via.is_some() {
                Scope::Global
            } else {
                Scope::Link
            });
            rt.apply(op, |m| {
                m.route_add(caller, *dst, *via, dev, scope).map(|c| ((), c))
            })?;
            let m = rt.model();
            let r = m
                .route_list(caller)?
                .into_iter()
                .find(|r| r.dst == *dst)
                .ok_or_else(|| ControlError::eio("the route vanished after it was added"))?;
            json(route_view(m, &r))
        }
        Request::RouteDel { dst } => {
            rt.apply(op, |m| m.route_del(caller, *dst).map(|c| ((), c)))?;
            serde_json::json!({ "deleted": dst.to_string() })
        }
        Request::RouteList => {
            let m = rt.model();
            let v: Vec<RouteView> = m
                .route_list(caller)?
                .iter()
                .map(|r| route_view(m, r))
                .collect();
            json(v)
        }
        Request::SockBind {
            proto: _,
            addr,
            port,
            service,
        } => {
            let (id, _queue) = rt.bind(caller, *addr, *port, service)?;
            // The service gets the socket on another thread and may use it at once: the
            // binding (and what the batch changed before it) must be live first.
            rt.flush();
            if let Err(e) = host.start(rt, id, service) {
                // All or nothing: a socket without its service is closed again.
                let _ = rt.close(caller, id);
                return Err(e);
            }
            let s = rt
                .model()
                .socket(id)
                .ok_or_else(|| ControlError::eio("the socket vanished after it was bound"))?;
            json(sock_view(rt, s))
        }
        Request::SockList => {
            let v: Vec<SockView> = rt
                .model()
                .sock_list(caller)?
                .into_iter()
                .map(|s| sock_view(rt, s))
                .collect();
            json(v)
        }
        Request::SockClose { id } => {
            let id = SocketId(*id);
            rt.close(caller, id)?;
            host.stop(id);
            serde_json::json!({ "closed": id.0 })
        }
        Request::Stats { ns } => json(stats(rt, caller, ns.as_deref())?),
        Request::Version => json(VersionView {
            version: env!("CARGO_PKG_VERSION").to_string(),
            snapshot_version: rt.version(),
        }),
        Request::Status => {
            let m = rt.model();
            json(StatusView {
                version: env!("CARGO_PKG_VERSION").to_string(),
                snapshot_version: rt.version(),
                workers: rt.stats.workers.len(),
                ports: rt.stats.port_names.clone(),
                namespaces: m.ns_list(caller)?.len(),
                sockets: m.sock_list(caller)?.len(),
                identity: name_of(m, caller),
            })
        }
    };
    Ok((value, fx))
}

/// R16 counters of the namespaces `caller` sees (one of them with `only`), and for an L2
/// caller the ports and the workers.
fn stats(rt: &Runtime, caller: NsId, only: Option<&str>) -> Result<StatsView> {
    let m = rt.model();
    let visible = m.ns_list(caller)?;
    let chosen: Vec<_> = match only {
        None => visible,
        Some(name) => {
            // Same answer as `ns info` for a namespace outside the view: ENOENT.
            let info = m.ns_info(caller, name)?;
            visible.into_iter().filter(|n| n.id == info.id).collect()
        }
    };
    let namespaces = chosen
        .iter()
        .map(|n| NsStats {
            namespace: n.name.to_string(),
            counters: rt.stats.ns(n.id),
        })
        .collect();
    let is_l2 = m.namespace(caller).is_some_and(|c| c.level == Level::L2);
    let ports = is_l2.then(|| {
        rt.stats
            .port_names
            .iter()
            .enumerate()
            .map(|(i, name)| PortStats {
                port: name.clone(),
                rx_packets: rt.stats.port_sum(i, |p| p.rx_packets.get()),
                rx_bytes: rt.stats.port_sum(i, |p| p.rx_bytes.get()),
                tx_packets: rt.stats.port_sum(i, |p| p.tx_packets.get()),
                tx_bytes: rt.stats.port_sum(i, |p| p.tx_bytes.get()),
                dropped: PortDrop::all()
                    .map(|d| (d.as_str().to_string(), rt.stats.port_dropped(i, d)))
                    .filter(|(_, n)| *n > 0)
                    .collect::<BTreeMap<_, _>>(),
            })
            .collect()
    });
    let workers = is_l2.then(|| {
        rt.stats
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerStats {
                worker: i,
                busy_polls: w.busy_polls.get(),
                idle_polls: w.idle_polls.get(),
                consumer_wakeups: w.consumer_wakeups.get(),
            })
            .collect()
    });
    Ok(StatsView {
        namespaces,
        ports,
        workers,
    })
}

fn json<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("view records always serialize")
}

fn name_of(m: &Model, ns: NsId) -> String {
    m.namespace(ns)
        .map_or_else(|| ns.to_string(), |n| n.name.to_string())
}

fn dev_name(m: &Model, i: &IfAddr) -> String {
    m.device(i.dev)
        .map_or_else(|| format!("dev#{}", i.dev.0), |d| d.name.clone())
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn addr_view(m: &Model, i: &IfAddr) -> AddrView {
    AddrView {
        dev: dev_name(m, i),
        label: i.label.to_string(),
        local: i.local,
        prefix: i.prefix,
        broadcast: i.broadcast,
        scope: i.scope,
        owner: name_of(m, i.owner),
    }
}

/// The ifaddr `local` on `dev` as resolved by `caller` (after an operation that succeeded).
fn addr_view_at(m: &Model, caller: NsId, dev: &str, local: std::net::Ipv4Addr) -> Result<AddrView> {
    let d = m.resolve_dev(caller, dev)?;
    m.ifaddr(d, local)
        .map(|i| addr_view(m, &i))
        .ok_or_else(|| ControlError::eio("the address vanished after the operation"))
}

fn route_view(m: &Model, r: &Route) -> RouteView {
    RouteView {
        dst: r.dst,
        via: r.gateway,
        dev: m
            .device(r.dev)
            .map_or_else(|| format!("dev#{}", r.dev.0), |d| d.name.clone()),
        scope: r.scope,
    }
}

fn sock_view(rt: &Runtime, s: &Socket) -> SockView {
    use std::sync::atomic::Ordering::Relaxed;
    let b = &s.binding;
    let q = rt.queue(b.id);
    SockView {
        id: b.id.0,
        namespace: name_of(rt.model(), b.ns),
        proto: b.proto,
        addr: b.addr,
        port: b.port,
        service: s.service.to_string(),
        queued: q.map_or(0, |q| q.len()),
        depth: q.map_or(0, |q| q.depth()),
        high_water: q.map_or(0, |q| q.high_water.load(Relaxed)),
        overflow: q.map_or(0, |q| q.overflow.load(Relaxed)),
        received: q.map_or(0, |q| q.received.load(Relaxed)),
    }
}
