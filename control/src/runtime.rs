//! The control thread's state: the model, the snapshot publisher, the socket queues and the
//! dataplane handles it shares with workers and applications. Every request goes through
//! `apply`: the model operation is all-or-nothing, and only a successful one publishes.
//!
//! **Batches.** Between [`Runtime::begin_batch`] and [`Runtime::end_batch`] (or inside
//! [`Runtime::batch`]) successful operations change the model at once but publish nothing:
//! their `Changes` are merged, and the batch's end publishes them all in one snapshot — one
//! clone of the snapshot, each changed view rebuilt once, one store. What depends on the
//! published snapshot follows it:
//! - a queue bound in the batch is attached by that publish, unless its socket was closed
//!   again in the batch, in which case it is never attached;
//! - the queue of a socket closed in the batch stays in `queue()` until that publish, and is
//!   closed (its datagrams counted as `ns_gone`) only after it, when no new snapshot sends
//!   to it any more;
//! - `snapshot()` and `version()` are the last *published* snapshot; [`Runtime::flush`]
//!   publishes what is pending without ending the batch, for a caller that needs the
//!   workers to see it now (a service about to use a socket, an answer that reports the
//!   snapshot version).

use crate::error::{ControlError, Result};
use crate::metrics::ControlMetrics;
use crate::model::{Changes, Model};
use crate::publish::Publisher;
use arc_swap::ArcSwap;
use l3ns_dataplane::api::UdpSocket;
use l3ns_dataplane::counters::{NsDrop, NsWriter, Stats};
use l3ns_dataplane::owner_table::OwnerTable;
use l3ns_dataplane::socket::SocketQueue;
use l3ns_dataplane::types::{DevId, NsId, Proto, SocketId};
use l3ns_dataplane::worker::Shared;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Operations applied, by kind and result: what `l3ns_control_operations_total` reports.
pub type OpCounts = BTreeMap<(String, &'static str), u64>;

pub struct Runtime {
    model: Model,
    publisher: Publisher,
    pub shared: Arc<Shared>,
    pub stats: Arc<Stats>,
    queues: BTreeMap<SocketId, Arc<SocketQueue>>,
    queue_depth: usize,
    control_ns: NsWriter,
    pub ops: OpCounts,
    /// The same operation counts and each publish's duration, for Prometheus scrapes from
    /// another thread (recording never waits for a scrape).
    pub metrics: Arc<ControlMetrics>,
    /// Open `begin_batch` calls; while non-zero, commits accumulate in `pending`.
    batch_depth: u32,
    /// What the batch changed so far, and the queues its binds attach.
    pending: Changes,
    pending_attach: Vec<(SocketId, Arc<SocketQueue>)>,
    /// `pending.repeated_len()` after its last `dedup_repeated`.
    pending_repeated: usize,
    /// `model.records()` when the model was last compacted.
    compacted_at: usize,
}

impl Runtime {
    /// Publishes `model` and returns the runtime around it. Sockets already in the model get
    /// fresh queues.
    pub fn new(
        mut model: Model,
        workers: usize,
        port_names: Vec<String>,
        queue_depth: usize,
    ) -> Self {
        model.compact();
        let compacted_at = model.records();
        let swap = Arc::new(ArcSwap::from_pointee(OwnerTable::new()));
        let shared = Shared::new(swap.clone(), workers, 65_536);
        let stats = Stats::new(workers, port_names);
        let start = std::time::Instant::now();
        let publisher = Publisher::new(&model, swap);
        let first_publish = start.elapsed();
        let control_ns = stats.control.writer();
        let mut rt = Runtime {
            model,
            publisher,
            shared,
            stats,
            queues: BTreeMap::new(),
            queue_depth,
            control_ns,
            ops: BTreeMap::new(),
            metrics: ControlMetrics::new(),
            batch_depth: 0,
            pending: Changes::default(),
            pending_attach: Vec::new(),
            pending_repeated: 0,
            compacted_at,
        };
        rt.metrics.published(first_publish);
        let ids: Vec<SocketId> = rt.model.sockets().map(|s| s.binding.id).collect();
        let attach: Vec<_> = ids.into_iter().map(|id| (id, rt.new_queue(id))).collect();
        if !attach.is_empty() {
            rt.publisher
                .publish(&rt.model, &Changes::default(), &attach);
            rt.metrics.published(rt.publisher.last_publish);
        }
        rt
    }

    fn new_queue(&mut self, id: SocketId) -> Arc<SocketQueue> {
        let q = SocketQueue::new(self.queue_depth, self.shared.pools.clone());
        self.queues.insert(id, q.clone());
        q
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The last published snapshot (inside a batch, without its pending changes).
    pub fn snapshot(&self) -> Arc<OwnerTable> {
        self.publisher.current().clone()
    }

    /// The version of the last published snapshot.
    pub fn version(&self) -> u64 {
        self.publisher.version()
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub fn queue(&self, id: SocketId) -> Option<&Arc<SocketQueue>> {
        self.queues.get(&id)
    }

    fn count(&mut self, op: &str, ok: bool) {
        *self
            .ops
            .entry((op.to_string(), if ok { "ok" } else { "error" }))
            .or_default() += 1;
        self.metrics.op(op, ok);
    }

    /// Starts a batch (batches nest: only the outermost end publishes). See the module doc.
    pub fn begin_batch(&mut self) {
        self.batch_depth += 1;
    }

    /// Ends a batch; the outermost end publishes everything the batch changed, once.
    pub fn end_batch(&mut self) {
        assert!(self.batch_depth > 0, "end_batch without begin_batch");
        self.batch_depth -= 1;
        if self.batch_depth == 0 {
            self.flush();
        }
    }

    /// Runs `f` as one batch: the operations it applies are published together when it
    /// returns. (If `f` panics the batch stays open and nothing it changed is published.)
    pub fn batch<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        self.begin_batch();
        let r = f(self);
        self.end_batch();
        r
    }

    pub fn in_batch(&self) -> bool {
        self.batch_depth > 0
    }

    /// Publishes what the open batch changed so far, now (nothing if nothing is pending);
    /// the batch stays open.
    pub fn flush(&mut self) {
        let mut changes = std::mem::take(&mut self.pending);
        self.pending_repeated = 0;
        // Sorted rather than in first-seen order: the publisher's result does not depend on
        // the order, and sorting in place needs no hash set of a bulk batch's addresses.
        changes.sort_dedup();
        let attach = std::mem::take(&mut self.pending_attach);
        let large = changes.addrs.len() + changes.namespaces.len() >= Self::COMPACT_AFTER;
        self.publish_now(changes, &attach);
        // Repacked after the publish, not before: before saves ~4 B per address of set-up
        // peak, but the snapshot then lands in the heap differently and the worker ran ~10%
        // slower at a million addresses (l3ns-throughput unicast, alternating runs; the
        // snapshot's contents are the same either way). Not again when the batch's last
        // commit just did (`commit` repacks as it grows).
        if large && self.model.records() != self.compacted_at {
            self.compact();
        }
    }

    fn compact(&mut self) {
        self.model.compact();
        self.compacted_at = self.model.records();
    }

    /// Changed records in one batch after which the model's indexes are repacked
    /// (`Model::compact`: a bulk load otherwise leaves them ~1.9 times their contents).
    const COMPACT_AFTER: usize = 4096;

    /// Frees, on this thread, the replaced snapshots no worker holds any more (see
    /// `publish`); the control thread calls it when idle. Returns how many are still held.
    pub fn reclaim(&mut self) -> usize {
        self.publisher.reclaim()
    }

    /// Replaced snapshots not freed yet (see [`Runtime::reclaim`]).
    pub fn retired(&self) -> usize {
        self.publisher.retired()
    }

    /// Applies one model operation named `op` and publishes what it changed (at the end of
    /// the batch, inside one).
    pub fn apply<T>(
        &mut self,
        op: &str,
        f: impl FnOnce(&mut Model) -> Result<(T, Changes)>,
    ) -> Result<T> {
        match f(&mut self.model) {
            Ok((value, changes)) => {
                self.count(op, true);
                self.commit(changes, Vec::new());
                Ok(value)
            }
            Err(e) => {
                self.count(op, false);
                Err(e)
            }
        }
    }

    /// Publishes `changes` and attaches `attach`, or, inside a batch, adds them to what the
    /// batch will publish.
    fn commit(&mut self, changes: Changes, attach: Vec<(SocketId, Arc<SocketQueue>)>) {
        if self.batch_depth == 0 {
            self.publish_now(changes, &attach);
            return;
        }
        if !changes.closed_sockets.is_empty() {
            // Bound and closed in the same batch: never attached.
            self.pending_attach
                .retain(|(id, _)| !changes.closed_sockets.contains(id));
        }
        self.pending.append(changes);
        self.pending_attach.extend(attach);
        // The namespace and route lists repeat a few entries (every `addr add` names root
        // twice): shrink them each time they have doubled (linear overall).
        if self.pending.repeated_len() > 2 * self.pending_repeated + 1024 {
            self.pending.dedup_repeated();
            self.pending_repeated = self.pending.repeated_len();
        }
        // A bulk set-up in one batch: repack the model each time it has grown by a quarter
        // since it was last packed (linear overall: about five repacks' worth of records),
        // so that it never holds much more than its records meanwhile (inserted in order,
        // B-tree nodes stay just over half full until repacked).
        let n = self.model.records();
        if n >= Self::COMPACT_AFTER && n >= self.compacted_at + self.compacted_at / 4 {
            self.compact();
        }
    }

    fn publish_now(&mut self, changes: Changes, attach: &[(SocketId, Arc<SocketQueue>)]) {
        if changes.is_empty() && attach.is_empty() {
            return;
        }
        let closed = changes.closed_sockets.clone();
        // The workers' counters for new namespaces are made here, before a worker can see
        // them (see `WorkerCounters::reserve`).
        self.stats
            .reserve_workers(self.model.ns_id_bound() as usize);
        self.publisher.publish_owned(&self.model, changes, attach);
        self.metrics.published(self.publisher.last_publish);
        // Closed sockets: whatever was still queued is lost with them (R5 `ns_gone`).
        for id in &closed {
            if let Some(q) = self.queues.remove(id) {
                // A queue shared with sockets still open stays open.
                if self.queues.values().any(|o| Arc::ptr_eq(o, &q)) {
                    continue;
                }
                for (ns, n) in q.close() {
                    self.control_ns.tx(ns).drop(NsDrop::NsGone, n);
                }
            }
        }
    }

    /// Adds a device for a configured port.
    pub fn add_device(&mut self, name: &str, mac: [u8; 6]) -> Result<DevId> {
        self.apply("dev_add", |m| {
            m.add_device(name, mac).map(|d| {
                (
                    d,
                    Changes {
                        devices: true,
                        ..Default::default()
                    },
                )
            })
        })
    }

    /// R7: binds a socket for `service` and returns its id and queue; the binding and its
    /// queue appear in the same snapshot (inside a batch: the one published at its end or
    /// at the next `flush`).
    pub fn bind(
        &mut self,
        caller: NsId,
        addr: Ipv4Addr,
        port: u16,
        service: &str,
    ) -> Result<(SocketId, Arc<SocketQueue>)> {
        match self
            .model
            .sock_bind(caller, Proto::Udp, addr, port, service)
        {
            Ok((id, changes)) => {
                self.count("sock_bind", true);
                let q = self.new_queue(id);
                self.commit(changes, vec![(id, q.clone())]);
                Ok((id, q))
            }
            Err(e) => {
                self.count("sock_bind", false);
                Err(e)
            }
        }
    }

    /// R7: binds a socket that delivers into an existing queue shared with other sockets —
    /// how one service thread serves many sockets and drains them with one hand-off per
    /// burst. The queue's bound then applies to the group.
    pub fn bind_shared(
        &mut self,
        caller: NsId,
        addr: Ipv4Addr,
        port: u16,
        service: &str,
        queue: Arc<SocketQueue>,
    ) -> Result<SocketId> {
        match self
            .model
            .sock_bind(caller, Proto::Udp, addr, port, service)
        {
            Ok((id, changes)) => {
                self.count("sock_bind", true);
                self.queues.insert(id, queue.clone());
                self.commit(changes, vec![(id, queue)]);
                Ok(id)
            }
            Err(e) => {
                self.count("sock_bind", false);
                Err(e)
            }
        }
    }

    /// A new, unattached queue for `bind_shared`.
    pub fn new_shared_queue(&self, depth: usize) -> Arc<SocketQueue> {
        SocketQueue::new(depth, self.shared.pools.clone())
    }

    /// Binds a socket for an in-process application. The socket is live when this returns,
    /// inside a batch too (what the batch changed so far is published with it): the
    /// application may use it from another thread at once.
    pub fn udp_socket(&mut self, caller: NsId, addr: Ipv4Addr, port: u16) -> Result<UdpSocket> {
        let (id, q) = self.bind(caller, addr, port, "app")?;
        self.flush();
        Ok(UdpSocket::new(
            id,
            caller,
            addr,
            port,
            q,
            self.shared.clone(),
        ))
    }

    /// A handle for an existing socket (for a service thread).
    pub fn socket_handle(&self, id: SocketId) -> Result<UdpSocket> {
        let s = self
            .model
            .socket(id)
            .ok_or_else(|| ControlError::enoent(format!("there is no socket {}", id.0)))?;
        let q = self
            .queues
            .get(&id)
            .ok_or_else(|| ControlError::enoent(format!("socket {} has no queue", id.0)))?;
        Ok(UdpSocket::new(
            id,
            s.binding.ns,
            s.binding.addr,
            s.binding.port,
            q.clone(),
            self.shared.clone(),
        ))
    }

    pub fn close(&mut self, caller: NsId, id: SocketId) -> Result<()> {
        self.apply("sock_close", |m| m.sock_close(caller, id).map(|c| ((), c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::check_agreement;
    use l3ns_dataplane::types::{LoopbackMode, Scope};

    const ROOT: NsId = NsId::ROOT;

    fn ip(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, d)
    }

    /// A runtime with eth0, 10.0.0.1–4/24 on it owned by root, and L3 children web1, web2.
    fn runtime() -> (Runtime, NsId, NsId) {
        let mut rt = Runtime::new(Model::new(), 1, vec!["eth0".into()], 64);
        rt.add_device("eth0", [2, 0, 0, 0, 0, 1]).unwrap();
        for d in 1..=4 {
            rt.apply("addr_add", |m| {
                m.addr_add(ROOT, "eth0", ip(d), 24, None, None, Scope::Global)
                    .map(|c| ((), c))
            })
            .unwrap();
        }
        let mut ns = |name: &str| {
            rt.apply("ns_add", |m| {
                m.ns_add(ROOT, name, None, LoopbackMode::Isolated)
            })
            .unwrap()
        };
        let (a, b) = (ns("web1"), ns("web2"));
        (rt, a, b)
    }

    fn push(rt: &mut Runtime, d: u8, to: &str) {
        rt.apply("addr_push", |m| {
            m.addr_push(ROOT, "eth0", ip(d), None, to).map(|c| ((), c))
        })
        .unwrap();
    }

    #[test]
    fn a_batch_publishes_once_at_its_end() {
        let (mut rt, web1, _) = runtime();
        let before = rt.snapshot();
        let v = rt.version();
        let n = rt.batch(|rt| {
            push(rt, 1, "web1");
            push(rt, 2, "web2");
            rt.apply("addr_pull", |m| {
                m.addr_pull(ROOT, "eth0", ip(1), None, "web1")
                    .map(|c| ((), c))
            })
            .unwrap();
            push(rt, 1, "web2");
            // A failed operation inside the batch changes and publishes nothing.
            assert!(rt
                .apply("addr_push", |m| {
                    m.addr_push(ROOT, "eth0", ip(9), None, "web1")
                        .map(|c| ((), c))
                })
                .is_err());
            assert_eq!(rt.version(), v, "nothing is published inside the batch");
            assert!(Arc::ptr_eq(&rt.snapshot(), &before));
            assert_eq!(rt.shared.table.load().owner(DevId(1), ip(1)), Some(ROOT));
            7
        });
        assert_eq!(n, 7);
        assert_eq!(rt.version(), v + 1);
        check_agreement(rt.model(), &rt.snapshot()).unwrap();
        let t = rt.shared.table.load();
        assert_eq!(t.owner(DevId(1), ip(1)), Some(NsId(2)));
        assert_eq!(t.owner(DevId(1), ip(2)), Some(NsId(2)));
        assert!(t.namespace(web1).unwrap().ifaddrs.is_empty());
        // Nested batches publish at the outermost end only; an empty batch publishes nothing.
        rt.begin_batch();
        rt.batch(|rt| push(rt, 3, "web1"));
        assert_eq!(rt.version(), v + 1);
        rt.end_batch();
        assert_eq!(rt.version(), v + 2);
        rt.batch(|_| ());
        assert_eq!(rt.version(), v + 2);
    }

    #[test]
    fn a_socket_bound_and_closed_in_one_batch_is_never_attached() {
        let (mut rt, web1, _) = runtime();
        push(&mut rt, 1, "web1");
        let v = rt.version();
        rt.begin_batch();
        let (id, q) = rt.bind(web1, ip(1), 53, "echo").unwrap();
        assert!(
            rt.snapshot().socket_queue(id).is_none(),
            "attached before the batch ends"
        );
        assert!(rt.queue(id).is_some());
        rt.close(web1, id).unwrap();
        assert!(!q.is_closed(), "closed before the publish");
        rt.end_batch();
        assert_eq!(rt.version(), v + 1);
        let t = rt.snapshot();
        assert!(t.socket_queue(id).is_none());
        assert_eq!(t.unicast_socket(web1, Proto::Udp, ip(1), 53), None);
        assert!(q.is_closed() && rt.queue(id).is_none());
        check_agreement(rt.model(), &t).unwrap();
    }

    #[test]
    fn a_socket_closed_in_a_batch_keeps_its_queue_until_the_publish() {
        let (mut rt, web1, _) = runtime();
        push(&mut rt, 1, "web1");
        let (id, q) = rt.bind(web1, ip(1), 53, "echo").unwrap();
        let (id2, q2) = rt.bind(web1, ip(1), 54, "echo").unwrap();
        assert!(rt
            .snapshot()
            .socket_queue(id)
            .is_some_and(|a| Arc::ptr_eq(a, &q)));
        rt.batch(|rt| {
            rt.close(web1, id).unwrap();
            // Workers still see the socket: its queue stays open and attached.
            assert!(!q.is_closed());
            assert!(rt.snapshot().socket_queue(id).is_some());
            assert!(rt.queue(id).is_some());
            // A bind in the same batch is attached by the same publish.
            let (id3, q3) = rt.bind(web1, ip(1), 55, "echo").unwrap();
            assert!(rt.snapshot().socket_queue(id3).is_none());
            (id3, q3)
        });
        let t = rt.snapshot();
        assert!(q.is_closed() && t.socket_queue(id).is_none() && rt.queue(id).is_none());
        assert!(!q2.is_closed() && t.socket_queue(id2).is_some());
        assert_eq!(
            t.unicast_socket(web1, Proto::Udp, ip(1), 55),
            Some(SocketId(id2.0 + 1))
        );
        check_agreement(rt.model(), &t).unwrap();
    }

    #[test]
    fn flush_and_udp_socket_publish_inside_a_batch() {
        let (mut rt, web1, _) = runtime();
        let v = rt.version();
        rt.begin_batch();
        push(&mut rt, 1, "web1");
        rt.flush();
        assert!(rt.in_batch());
        assert_eq!(rt.version(), v + 1);
        assert_eq!(rt.snapshot().owner(DevId(1), ip(1)), Some(web1));
        rt.flush();
        assert_eq!(rt.version(), v + 1, "nothing pending, nothing published");
        // An application's socket is live at once, with what the batch changed before it.
        push(&mut rt, 2, "web1");
        let s = rt.udp_socket(web1, ip(2), 7).unwrap();
        let t = rt.snapshot();
        assert_eq!(t.owner(DevId(1), ip(2)), Some(web1));
        assert!(t.socket_queue(s.id()).is_some());
        rt.end_batch();
        assert_eq!(rt.version(), v + 2);
    }

    #[test]
    fn a_bulk_batch_is_compacted_along_the_way_and_changes_nothing_but_layout() {
        // 6,000 namespaces with two addresses and a socket each, in one batch: the model is
        // repacked while it grows (records past 4,096, then by each quarter) and after the publish.
        // The model must equal one built without any compaction, keep its invariants, and
        // agree with the snapshot.
        let mut rt = Runtime::new(Model::new(), 1, vec!["eth0".into()], 64);
        rt.add_device("eth0", [2, 0, 0, 0, 0, 1]).unwrap();
        let mut plain = rt.model().clone();
        // One namespace, its two addresses and its socket, with every change they made.
        let bulk = |m: &mut Model, i: u32| -> Result<Changes> {
            let mut all = Changes::default();
            let name = format!("n{i}");
            let (id, c) = m.ns_add(ROOT, &name, None, LoopbackMode::Isolated)?;
            all.append(c);
            for k in 0..2 {
                let a = Ipv4Addr::from(0x0a00_0000 | (i * 2 + k + 1));
                all.append(m.addr_add(ROOT, "eth0", a, 8, None, None, Scope::Global)?);
                all.append(m.addr_push(ROOT, "eth0", a, None, &name)?);
            }
            all.append(
                m.sock_bind(id, Proto::Udp, Ipv4Addr::UNSPECIFIED, 9, "app")?
                    .1,
            );
            Ok(all)
        };
        rt.batch(|rt| {
            for i in 0..6_000 {
                rt.apply("bulk", |m| bulk(m, i).map(|c| ((), c))).unwrap();
            }
            assert!(rt.compacted_at >= 4_096, "compacted while the batch grew");
        });
        for i in 0..6_000 {
            bulk(&mut plain, i).unwrap();
        }
        assert_eq!(*rt.model(), plain);
        rt.model().check_invariants().unwrap();
        check_agreement(rt.model(), &rt.snapshot()).unwrap();
        assert_eq!(rt.compacted_at, rt.model().records());
    }
}
