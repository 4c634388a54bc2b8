//! The control thread's state: the model, the snapshot publisher, the socket queues and the
//! dataplane handles it shares with workers and applications. Every request goes through
//! `apply`: the model operation is all-or-nothing, and only a successful one publishes.

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
}

impl Runtime {
    /// Publishes `model` and returns the runtime around it. Sockets already in the model get
    /// fresh queues.
    pub fn new(model: Model, workers: usize, port_names: Vec<String>, queue_depth: usize) -> Self {
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

    pub fn snapshot(&self) -> Arc<OwnerTable> {
        self.publisher.current().clone()
    }

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

    /// Applies one model operation named `op` and publishes what it changed.
    pub fn apply<T>(
        &mut self,
        op: &str,
        f: impl FnOnce(&mut Model) -> Result<(T, Changes)>,
    ) -> Result<T> {
        match f(&mut self.model) {
            Ok((value, changes)) => {
                self.count(op, true);
                self.commit(&changes, &[]);
                Ok(value)
            }
            Err(e) => {
                self.count(op, false);
                Err(e)
            }
        }
    }

    fn commit(&mut self, changes: &Changes, attach: &[(SocketId, Arc<SocketQueue>)]) {
        if changes.is_empty() && attach.is_empty() {
            return;
        }
        self.publisher.publish(&self.model, changes, attach);
        self.metrics.published(self.publisher.last_publish);
        // Closed sockets: whatever was still queued is lost with them (R5 `ns_gone`).
        for id in &changes.closed_sockets {
            if let Some(q) = self.queues.remove(id) {
                // A queue shared with sockets still open stays open.
                if self.queues.values().any(|o| Arc::ptr_eq(o, &q)) {
                    continue;
                }
                for (ns, n) in q.close() {
                    self.control_ns.ns(ns).drop(NsDrop::NsGone, n);
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
    /// queue appear in the same snapshot.
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
                self.commit(&changes, &[(id, q.clone())]);
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
                self.commit(&changes, &[(id, queue)]);
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

    /// Binds a socket for an in-process application.
    pub fn udp_socket(&mut self, caller: NsId, addr: Ipv4Addr, port: u16) -> Result<UdpSocket> {
        let (id, q) = self.bind(caller, addr, port, "app")?;
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
