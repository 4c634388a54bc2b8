//! The snapshot publisher: turns the model into the `OwnerTable` workers read.
//!
//! A publish starts from the last snapshot (cheap clone: shards and chunks are shared),
//! rebuilds only what the operation's `Changes` name — each changed local address, each
//! changed namespace view, each changed family's routes — bumps the version and stores it
//! with one `ArcSwap::store`. Workers are never stopped: a burst in flight keeps the
//! snapshot it loaded, the next burst sees the new one.
//!
//! **Old snapshots die on the control thread.** A worker takes an `Arc` of the snapshot
//! (`load_full`) for each poll and drops it afterwards; if that were the last reference, the
//! worker would free the snapshot's unshared parts (views, shards, chunks) on the packet
//! path — `free`, and the allocator's arena lock. So the publisher keeps each replaced
//! snapshot in a short `retired` list and drops it itself once `Arc::strong_count` says it
//! is the only owner left. `store` has by then turned every reader's borrowed guard into a
//! counted reference and no reader can load the old snapshot any more, so a count of one is
//! final, and a worker's drop can only ever be a decrement. The list is checked at each
//! publish and by [`Publisher::reclaim`], which the control thread calls when it is idle;
//! it holds what workers still use, typically one snapshot.

use crate::model::{Changes, Model};
use arc_swap::ArcSwap;
use l3ns_dataplane::owner_table::{AddrEntry, NsView, OwnerTable};
use l3ns_dataplane::socket::SocketQueue;
use l3ns_dataplane::types::{LocalAddr, NsId, SocketId};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Owns the publication side of the snapshot.
#[derive(Debug)]
pub struct Publisher {
    current: Arc<OwnerTable>,
    swap: Arc<ArcSwap<OwnerTable>>,
    /// Replaced snapshots that readers may still hold (see the module doc).
    retired: Vec<Arc<OwnerTable>>,
    /// How long the last publish took (clone, rebuild, store).
    pub last_publish: Duration,
}

/// The view of namespace `ns` as the packet path needs it, read from the model: its ifaddrs
/// are one range of the model's address table, already in the view's order (device, local).
pub fn ns_view(model: &Model, ns: NsId) -> Option<NsView> {
    ns_view_after(model, ns, None, None)
}

/// The local addresses a publish changes, and the ifaddrs now at them sorted by owner: what
/// `ns_view_after` needs to update views without reading every ifaddr they hold.
struct ChangedAddrs {
    /// Sorted, each once.
    locals: Vec<Ipv4Addr>,
    /// Every ifaddr of the model at one of `locals` with its owner, by (owner, device, local).
    now: Vec<(NsId, LocalAddr)>,
}

impl ChangedAddrs {
    /// Most changed addresses for which a publish lists them (16 bytes each) to update views
    /// by merging; past it, as in a bulk set-up, a changed view is read from the model again
    /// and the publish, the set-up's memory peak, holds no such list.
    /// (Small in unit tests, so that the property tests' batches take both ways.)
    const MAX: usize = if cfg!(test) { 16 } else { 1 << 16 };

    fn new(model: &Model, changes: &Changes) -> Option<Self> {
        if changes.addrs.len() > Self::MAX {
            return None;
        }
        let mut locals: Vec<Ipv4Addr> = changes.addrs.iter().map(|(_, a)| *a).collect();
        locals.sort_unstable();
        locals.dedup();
        let mut now: Vec<(NsId, LocalAddr)> = Vec::with_capacity(locals.len());
        for l in &locals {
            now.extend(model.ifaddrs_at(*l).map(|i| (i.owner, LocalAddr::of(&i))));
        }
        now.sort_unstable_by_key(|(owner, i)| (*owner, i.dev, i.local));
        Some(ChangedAddrs { locals, now })
    }

    /// The ifaddrs at changed addresses that `ns` owns now, by (device, local).
    fn owned_by(&self, ns: NsId) -> &[(NsId, LocalAddr)] {
        let from = self.now.partition_point(|(o, _)| *o < ns);
        let to = self.now.partition_point(|(o, _)| *o <= ns);
        &self.now[from..to]
    }
}

/// `ns_view`, reusing what cannot have changed from `prev`, the namespace's view in the last
/// snapshot: its name (a namespace is never renamed) and its ifaddrs at addresses `changed`
/// does not name. By the contract of `Changes` (`addrs` names every local address whose
/// ifaddrs or owners changed), those kept their owner and their fields, so the old list
/// minus the changed addresses plus what the namespace owns at them now is the new list.
/// A pass over the old list is several times faster than reading the namespace's range of
/// the model again (3.4 against 19 ms for a namespace of a million addresses). Without
/// `changed` (a bulk change), the view is read from the model.
fn ns_view_after(
    model: &Model,
    ns: NsId,
    prev: Option<&NsView>,
    changed: Option<&ChangedAddrs>,
) -> Option<NsView> {
    let n = model.namespace(ns)?;
    let family = model.family_of(ns)?;
    let prev = prev.filter(|p| p.id == ns && *p.name == *n.name && p.family == family);
    let name = n.name.clone();
    let ifaddrs = match (prev, changed) {
        (Some(p), Some(changed)) => {
            // Both parts are in the model's order, (device, local): merge them.
            let mut kept = p
                .ifaddrs
                .iter()
                .filter(|i| changed.locals.binary_search(&i.local).is_err())
                .peekable();
            let mut added = changed.owned_by(ns).iter().map(|(_, i)| *i).peekable();
            let mut v = Vec::with_capacity(p.ifaddrs.len() + added.len());
            loop {
                let next = match (kept.peek(), added.peek()) {
                    (Some(k), Some(a)) if (k.dev, k.local) > (a.dev, a.local) => added.next(),
                    (Some(_), _) => kept.next().copied(),
                    (None, _) => added.next(),
                };
                match next {
                    Some(i) => v.push(i),
                    None => break,
                }
            }
            v
        }
        _ => {
            let mut v = Vec::with_capacity(model.owned_count(ns));
            v.extend(model.owned_local_addrs(ns));
            v
        }
    };
    let mut bindings = Vec::with_capacity(model.bindings_count(ns));
    bindings.extend(model.bindings_of(ns).map(|s| s.binding));
    Some(NsView {
        id: n.id,
        name,
        level: n.level,
        parent: n.parent,
        family,
        loopback: n.loopback,
        ifaddrs,
        bindings,
    })
}

/// Every ifaddr with local address `local` on a device of family `l2`.
fn entries_at(model: &Model, l2: NsId, local: Ipv4Addr) -> Vec<AddrEntry> {
    model
        .ifaddrs_at(local)
        .filter(|i| model.device(i.dev).is_some_and(|d| d.owner == l2))
        .map(|i| AddrEntry::of(&i))
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
    let ids: Vec<NsId> = model.namespaces().map(|n| n.id).collect();
    for slice in ids.chunks(1024) {
        t.update_namespaces(slice.iter().map(|id| (*id, ns_view(model, *id))));
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
        let old = swap.swap(current.clone());
        let mut p = Publisher {
            current,
            swap,
            retired: Vec::new(),
            last_publish: Duration::ZERO,
        };
        p.retire(old);
        p
    }

    /// Keeps `old` until no reader holds it; drops what no reader holds any more.
    fn retire(&mut self, old: Arc<OwnerTable>) {
        self.retired.push(old);
        self.reclaim();
    }

    /// Drops, on this thread, every replaced snapshot that no reader holds any more; returns
    /// how many are still held. Cheap (one load per retired snapshot): call it when idle,
    /// so that the snapshots workers held during the last publish do not wait for the next.
    pub fn reclaim(&mut self) -> usize {
        self.retired.retain(|t| Arc::strong_count(t) > 1);
        self.retired.len()
    }

    /// Replaced snapshots still held by a reader.
    pub fn retired(&self) -> usize {
        self.retired.len()
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
        self.publish_owned(model, changes.clone(), attach)
    }

    /// `publish`, taking the changes: a bulk publish (past `ChangedAddrs::MAX` addresses)
    /// frees its list of addresses once the address tables are updated, before it builds
    /// the views, so that the list and the new views are never held together (the peak of
    /// a bulk set-up).
    pub fn publish_owned(
        &mut self,
        model: &Model,
        mut changes: Changes,
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
        t.update_namespaces(changes.removed_namespaces.iter().map(|ns| (*ns, None)));
        let changed = ChangedAddrs::new(model, &changes);
        if changed.is_none() {
            changes.addrs = Vec::new();
        }
        // In slices, so that a batch that changes every namespace holds a bounded number of
        // new views at a time; each slice rebuilds a touched port's listener list once.
        for slice in changes.namespaces.chunks(1024) {
            let views: Vec<(NsId, Option<NsView>)> = slice
                .iter()
                .map(|ns| {
                    let prev = t.namespace(*ns);
                    (*ns, ns_view_after(model, *ns, prev, changed.as_ref()))
                })
                .collect();
            t.update_namespaces(views);
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
        // `swap` hands back the swap's own reference to the old snapshot (the same one as
        // `current`): both go to the retired list as one.
        drop(self.swap.swap(t.clone()));
        let old = std::mem::replace(&mut self.current, t);
        self.retire(old);
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

#[cfg(test)]
mod tests {
    use super::*;
    use l3ns_dataplane::types::{LoopbackMode, Scope};

    #[test]
    fn old_snapshots_are_freed_by_the_publisher_not_by_readers() {
        let mut m = Model::new();
        m.add_device("eth0", [2, 0, 0, 0, 0, 1]).unwrap();
        let swap = Arc::new(ArcSwap::from_pointee(OwnerTable::new()));
        let mut p = Publisher::new(&m, swap.clone());
        assert_eq!(p.reclaim(), 0, "nobody holds the empty table any more");
        // A worker holds the current snapshot across a publish.
        let held = swap.load_full();
        let gone = Arc::downgrade(&held);
        let (_, ch) = m
            .ns_add(NsId::ROOT, "web1", None, LoopbackMode::Isolated)
            .unwrap();
        p.publish(&m, &ch, &[]);
        assert_eq!(p.retired(), 1);
        // A guard (not a counted reference) taken before the store is counted by it.
        let guard = swap.load();
        let ch = m
            .addr_add(
                NsId::ROOT,
                "eth0",
                Ipv4Addr::new(10, 0, 0, 1),
                24,
                None,
                None,
                Scope::Global,
            )
            .unwrap();
        p.publish(&m, &ch, &[]);
        assert_eq!(p.retired(), 2);
        // The worker lets go: its drop is not the last one, the snapshot is still alive.
        drop(held);
        assert!(gone.upgrade().is_some());
        assert_eq!(p.reclaim(), 1, "the guard still holds the second snapshot");
        assert!(gone.upgrade().is_none(), "freed by reclaim, on this thread");
        drop(guard);
        assert_eq!(p.reclaim(), 0);
        check_agreement(&m, &swap.load()).unwrap();
    }
}
