//! The snapshot publisher: turns the model into the `OwnerTable` workers read.
//!
//! A publish starts from the last snapshot (cheap clone: shards and chunks are shared),
//! rebuilds only what the operation's `Changes` name — each changed local address, each
//! changed namespace view, each changed family's routes — bumps the version and stores it
//! with one `ArcSwap::store`. Workers are never stopped: a burst in flight keeps the
//! snapshot it loaded, the next burst sees the new one.

use crate::model::{Changes, Model};
use arc_swap::ArcSwap;
use l3ns_dataplane::owner_table::{AddrEntry, NsView, OwnerTable};
use l3ns_dataplane::socket::SocketQueue;
use l3ns_dataplane::types::{NsId, SocketId};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Owns the publication side of the snapshot.
#[derive(Debug)]
pub struct Publisher {
    current: Arc<OwnerTable>,
    swap: Arc<ArcSwap<OwnerTable>>,
    /// How long the last publish took (clone, rebuild, store).
    pub last_publish: Duration,
}

/// The view of namespace `ns` as the packet path needs it, read from the model.
pub fn ns_view(model: &Model, ns: NsId) -> Option<NsView> {
    let n = model.namespace(ns)?;
    Some(NsView {
        id: n.id,
        name: n.name.as_str().into(),
        level: n.level,
        parent: n.parent,
        family: model.family_of(ns)?,
        loopback: n.loopback,
        ifaddrs: model.owned_by(ns).cloned().collect(),
        bindings: model.bindings_of(ns).map(|s| s.binding).collect(),
        hot: Default::default(),
    })
}

/// Every ifaddr with local address `local` on a device of family `l2`.
fn entries_at(model: &Model, l2: NsId, local: Ipv4Addr) -> Vec<AddrEntry> {
    model
        .ifaddrs_at(local)
        .filter(|i| model.device(i.dev).is_some_and(|d| d.owner == l2))
        .map(AddrEntry::of)
        .collect()
}

/// A snapshot of the whole model, built from scratch (start-up, and the reference the
/// incremental path is tested against). Socket queues are not part of the model: the caller
/// attaches them.
pub fn full_build(model: &Model, version: u64) -> OwnerTable {
    let mut t = OwnerTable::new();
    for d in model.devices() {
        t.set_device(d.clone());
    }
    let mut l2s: Vec<NsId> = model.devices().map(|d| d.owner).collect();
    l2s.extend(
        model
            .namespaces()
            .filter(|n| n.level == l2_level())
            .map(|n| n.id),
    );
    l2s.sort();
    l2s.dedup();
    for l2 in &l2s {
        t.set_routes(*l2, model.routes_for_family(*l2));
    }
    let mut seen = std::collections::BTreeSet::new();
    for i in model.ifaddrs() {
        let Some(l2) = model.device(i.dev).map(|d| d.owner) else {
            continue;
        };
        if seen.insert((l2, i.local)) {
            t.set_local(l2, i.local, &entries_at(model, l2, i.local));
        }
    }
    for n in model.namespaces() {
        if let Some(v) = ns_view(model, n.id) {
            t.set_namespace(v);
        }
    }
    t.set_version(version);
    t
}

fn l2_level() -> l3ns_dataplane::types::Level {
    l3ns_dataplane::types::Level::L2
}

impl Publisher {
    /// Publishes a full build of `model` into `swap` (version = previous + 1).
    pub fn new(model: &Model, swap: Arc<ArcSwap<OwnerTable>>) -> Self {
        let prev = swap.load().version();
        let current = Arc::new(full_build(model, prev + 1));
        swap.store(current.clone());
        Publisher {
            current,
            swap,
            last_publish: Duration::ZERO,
        }
    }

    pub fn swap(&self) -> &Arc<ArcSwap<OwnerTable>> {
        &self.swap
    }

    pub fn current(&self) -> &Arc<OwnerTable> {
        &self.current
    }

    pub fn version(&self) -> u64 {
        self.current.version()
    }

    /// Publishes what `changes` says changed in `model`, plus socket queues to attach.
    /// Returns the new version.
    pub fn publish(
        &mut self,
        model: &Model,
        changes: &Changes,
        attach: &[(SocketId, Arc<SocketQueue>)],
    ) -> u64 {
        let start = Instant::now();
        let mut t = (*self.current).clone();
        if changes.devices {
            for d in model.devices() {
                t.set_device(d.clone());
            }
        }
        for l2 in &changes.routes {
            t.set_routes(*l2, model.routes_for_family(*l2));
        }
        for (l2, local) in &changes.addrs {
            t.set_local(*l2, *local, &entries_at(model, *l2, *local));
        }
        for ns in &changes.removed_namespaces {
            t.remove_namespace(*ns);
        }
        for ns in &changes.namespaces {
            match ns_view(model, *ns) {
                Some(v) => t.set_namespace(v),
                None => t.remove_namespace(*ns),
            }
        }
        for id in &changes.closed_sockets {
            t.set_socket_queue(*id, None);
        }
        for (id, q) in attach {
            t.set_socket_queue(*id, Some(q.clone()));
        }
        let version = self.current.version() + 1;
        t.set_version(version);
        let t = Arc::new(t);
        self.swap.store(t.clone());
        self.current = t;
        self.last_publish = start.elapsed();
        version
    }
}

/// Checks that `table` says what `model` says, for every address, namespace and socket:
/// the property tests call it after every step.
pub fn check_agreement(model: &Model, table: &OwnerTable) -> Result<(), String> {
    let mut per_family: std::collections::BTreeMap<NsId, std::collections::BTreeSet<Ipv4Addr>> =
        Default::default();
    for i in model.ifaddrs() {
        let l2 = model.device(i.dev).ok_or("ifaddr on unknown device")?.owner;
        per_family.entry(l2).or_default().insert(i.local);
        match table.owner(i.dev, i.local) {
            Some(o) if o == i.owner => {}
            other => {
                return Err(format!(
                    "{} on dev {:?}: model owner {}, snapshot {:?}",
                    i.local, i.dev, i.owner, other
                ))
            }
        }
        if table.local_on_dev(i.dev, i.local) != Some(i.owner) {
            return Err(format!(
                "{} not local on its device {:?} in the snapshot",
                i.local, i.dev
            ));
        }
    }
    for (l2, locals) in &per_family {
        let n = table.family(*l2).map(|f| f.addr_count()).unwrap_or(0);
        if n != locals.len() {
            return Err(format!(
                "family {l2}: snapshot has {n} addresses, model {}",
                locals.len()
            ));
        }
    }
    let model_ns: Vec<NsId> = model.namespaces().map(|n| n.id).collect();
    let table_ns: Vec<NsId> = table.namespaces().map(|v| v.id).collect();
    if model_ns != table_ns {
        return Err(format!(
            "namespaces differ: model {model_ns:?}, snapshot {table_ns:?}"
        ));
    }
    for id in model_ns {
        let mut want = ns_view(model, id).ok_or("vanished")?;
        want.normalize();
        let got = table.namespace(id).ok_or("missing view")?;
        if *got != want {
            return Err(format!(
                "view of {id} differs:\nmodel    {want:?}\nsnapshot {got:?}"
            ));
        }
    }
    Ok(())
}
