//! `OwnerTable`: the immutable snapshot that workers read, once per burst, through an
//! `ArcSwap`. It answers, without locks: who owns a destination address (R8), which sockets
//! a broadcast reaches (R10), which socket a unicast or loopback datagram goes to (R9, R11),
//! may a namespace bind an address (R7), and which source a send uses (R13).
//!
//! Only the control thread builds snapshots: it clones the current one (cheap: shards and
//! chunks are `Arc`s), applies what changed with the `set_*` methods, bumps the version and
//! publishes. Unchanged parts stay shared between versions.

pub mod sharded;

use crate::errno::Errno;
use crate::rules::{self, SourceChoice};
use crate::socket::SocketQueue;
use crate::types::{
    Binding, DevId, Device, IfAddr, Level, LocalAddr, LoopbackMode, NsId, Proto, Route, SocketId,
};
use hashbrown::HashMap;
use sharded::ShardedMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// One ifaddr as the unicast table stores it (12 bytes; the key is the local address).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct AddrEntry {
    pub owner: u32,
    pub dev: u16,
    pub prefix: u8,
    /// Several ifaddrs in the family share this local address (on different devices): the
    /// full list is in the family's `dups`.
    pub multi: bool,
    /// The ifaddr's broadcast, 0 for none.
    pub broadcast: u32,
}

impl AddrEntry {
    pub fn of(ifa: &IfAddr) -> Self {
        AddrEntry::owned(&LocalAddr::of(ifa), ifa.owner)
    }
    /// The entry of `a` owned by `owner`.
    pub fn owned(a: &LocalAddr, owner: NsId) -> Self {
        AddrEntry {
            owner: owner.0,
            dev: a.dev.0,
            prefix: a.prefix,
            multi: false,
            broadcast: u32::from(a.broadcast),
        }
    }
    pub fn owner(&self) -> NsId {
        NsId(self.owner)
    }
}

/// What the namespace looks like to the packet path. The snapshot keeps it behind an
/// [`NsSlot`], which also holds the part a unicast receive reads (up to `HOT` bindings), so
/// that a receive reads one line per namespace, not this allocation as well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsView {
    pub id: NsId,
    /// The L2 namespace whose devices and routes this namespace uses (itself for an L2).
    pub family: NsId,
    pub parent: Option<NsId>,
    pub level: Level,
    pub loopback: LoopbackMode,
    pub name: Arc<str>,
    /// The ifaddrs it owns (R6, without the implicit loopback), without their labels.
    pub ifaddrs: Vec<LocalAddr>,
    /// Its sockets, sorted by (proto, port, addr): `0.0.0.0` first within a port.
    pub bindings: Vec<Binding>,
}

/// Bindings kept inline in a namespace's slot (see [`NsSlot`]).
pub const HOT: usize = 3;

/// Up to `HOT` UDP bindings as parallel arrays (32 bytes); `len == u8::MAX` (also the
/// default) when lookups must use the view's sorted `bindings`: more than `HOT` sockets, or
/// one of another protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotBindings {
    len: u8,
    ports: [u16; HOT],
    addrs: [u32; HOT],
    ids: [u32; HOT],
}

impl Default for HotBindings {
    fn default() -> Self {
        HotBindings {
            len: u8::MAX,
            ports: [0; HOT],
            addrs: [0; HOT],
            ids: [0; HOT],
        }
    }
}

impl HotBindings {
    fn of(bindings: &[Binding]) -> Self {
        let mut h = HotBindings::default();
        if bindings.len() > HOT || bindings.iter().any(|b| b.proto != Proto::Udp) {
            return h;
        }
        for (i, b) in bindings.iter().enumerate() {
            h.ports[i] = b.port;
            h.addrs[i] = u32::from(b.addr);
            h.ids[i] = b.id.0;
        }
        h.len = bindings.len() as u8;
        h
    }

    /// R9 over the copy: the index of the socket bound to `dst:port`, else of the one on
    /// `0.0.0.0:port`; `Err` when the copy cannot answer (the view's bindings must).
    #[inline(always)]
    fn find(&self, proto: Proto, dst: Ipv4Addr, port: u16) -> Result<Option<usize>, ()> {
        if usize::from(self.len) > HOT || proto != Proto::Udp {
            return Err(());
        }
        let dst = u32::from(dst);
        let mut wildcard = None;
        for i in 0..usize::from(self.len).min(HOT) {
            if self.ports[i] == port {
                if self.addrs[i] == dst {
                    return Ok(Some(i));
                }
                if self.addrs[i] == 0 {
                    wildcard = Some(i);
                }
            }
        }
        Ok(wildcard)
    }
}

impl NsView {
    /// A view in the root family: an L2 namespace when `parent` is `None`, else an L3 child;
    /// isolated loopback. For tests and benchmarks that build snapshots by hand.
    pub fn in_root_family(
        id: NsId,
        name: &str,
        parent: Option<NsId>,
        ifaddrs: Vec<IfAddr>,
        bindings: &[(u32, Ipv4Addr, u16)],
    ) -> NsView {
        NsView {
            id,
            name: name.into(),
            level: if parent.is_some() {
                Level::L3
            } else {
                Level::L2
            },
            parent,
            family: NsId::ROOT,
            loopback: LoopbackMode::Isolated,
            ifaddrs: ifaddrs.iter().map(LocalAddr::of).collect(),
            bindings: bindings
                .iter()
                .map(|&(sid, addr, port)| Binding {
                    id: SocketId(sid),
                    ns: id,
                    proto: Proto::Udp,
                    addr,
                    port,
                })
                .collect(),
        }
    }

    /// Sorts bindings into the order lookups rely on.
    pub fn normalize(&mut self) {
        self.bindings
            .sort_by_key(|b| (b.proto, b.port, u32::from(b.addr), b.id));
    }

    /// R9 within this namespace: the socket bound to `dst:port`, else the one on
    /// `0.0.0.0:port` (over the sorted `bindings`; the packet path asks the namespace's
    /// [`NsSlot`], which answers the same from its inline copy).
    pub fn socket_for(&self, proto: Proto, dst: Ipv4Addr, port: u16) -> Option<SocketId> {
        let start = self
            .bindings
            .partition_point(|b| (b.proto, b.port) < (proto, port));
        let mut wildcard = None;
        for b in self.bindings[start..]
            .iter()
            .take_while(|b| b.proto == proto && b.port == port)
        {
            if b.addr == dst {
                return Some(b.id);
            }
            if b.addr.is_unspecified() {
                wildcard = Some(b.id);
            }
        }
        wildcard
    }
}

/// A namespace's place in the snapshot: its view, and a copy of up to `HOT` of its bindings
/// with their sockets' queues beside the pointer, on one 64-byte line of its own
/// (`align(64)`). A unicast receive finds its socket and queue here without reading the view
/// or the socket table: with many namespaces and sockets each of those is a cache miss (and
/// often a TLB miss) of its own, behind the slot's.
///
/// `queues[i]` is the queue `OwnerTable::socket_queue` gives for `hot.ids[i]`, or `None`
/// while the socket has none: the snapshot keeps the two in step (`update_namespaces` fills
/// a new slot from the socket table; `set_socket_queue` refreshes the slot that lists the
/// socket).
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub struct NsSlot {
    hot: HotBindings,
    queues: [Option<Arc<SocketQueue>>; HOT],
    view: Arc<NsView>,
}

impl NsSlot {
    #[inline(always)]
    pub fn view(&self) -> &NsView {
        &self.view
    }

    /// Whether `socket_for` reads the view's bindings (more than `HOT` sockets): the packet
    /// path then prefetches the view too.
    #[inline(always)]
    pub fn spills(&self) -> bool {
        usize::from(self.hot.len) > HOT
    }

    /// Prefetches the view (for a slot that `spills`).
    #[inline(always)]
    pub fn prefetch_view(&self) {
        crate::prefetch::read(&*self.view);
    }

    /// [`NsView::socket_for`], from the inline copy when the namespace has at most `HOT`
    /// sockets.
    #[inline]
    pub fn socket_for(&self, proto: Proto, dst: Ipv4Addr, port: u16) -> Option<SocketId> {
        self.socket_and_queue(proto, dst, port).map(|(s, _)| s)
    }

    /// Whether R9 gives every address of the namespace the same UDP socket on `port`: the
    /// inline copy holds every binding and none on `port` names an address.
    #[inline]
    pub fn any_dst(&self, port: u16) -> bool {
        let h = &self.hot;
        usize::from(h.len) <= HOT
            && (0..usize::from(h.len)).all(|i| h.ports[i] != port || h.addrs[i] == 0)
    }

    /// The socket R9 picks and, when the slot holds it, its queue (else ask
    /// `OwnerTable::socket_queue`).
    #[inline]
    pub fn socket_and_queue(
        &self,
        proto: Proto,
        dst: Ipv4Addr,
        port: u16,
    ) -> Option<(SocketId, Option<&Arc<SocketQueue>>)> {
        match self.hot.find(proto, dst, port) {
            Ok(i) => {
                let i = i?;
                Some((SocketId(self.hot.ids[i]), self.queues[i].as_ref()))
            }
            Err(()) => self.view.socket_for(proto, dst, port).map(|s| (s, None)),
        }
    }
}

/// The L2 family of one L2 namespace: its address tables, routes and listeners.
#[derive(Clone, Debug, Default)]
pub struct Family {
    pub l2: NsId,
    unicast: ShardedMap<u32, AddrEntry>,
    dups: Arc<HashMap<u32, Arc<[AddrEntry]>>>,
    /// `(dev << 32) | broadcast` → how many ifaddrs on `dev` have that broadcast.
    bcast: ShardedMap<u64, u32>,
    routes: Arc<[Route]>,
    /// Every binding in the family by port, for broadcast fan-out.
    listeners: Arc<HashMap<u16, Arc<[Binding]>>>,
}

impl Family {
    fn new(l2: NsId) -> Self {
        Family {
            l2,
            ..Default::default()
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Number of distinct local addresses in the family.
    pub fn addr_count(&self) -> usize {
        self.unicast.len()
    }

    /// All ifaddrs with local address `local` in this family.
    pub fn entries(&self, local: Ipv4Addr) -> Vec<AddrEntry> {
        let key = u32::from(local);
        match self.unicast.get(key) {
            None => Vec::new(),
            Some(e) if !e.multi => vec![e],
            Some(_) => self.dups.get(&key).map(|d| d.to_vec()).unwrap_or_default(),
        }
    }

    /// The hot path stays small enough to inline into the worker; the same address on
    /// several devices is the cold case.
    #[inline(always)]
    fn lookup(&self, dev: DevId, dst: u32) -> Option<AddrEntry> {
        let e = self.unicast.get(dst)?;
        if !e.multi {
            return Some(e);
        }
        self.lookup_dup(dev, dst)
    }

    /// Prefetches the owner-table slot of `dst` (the first pass over a burst).
    #[inline(always)]
    pub fn prefetch(&self, dst: u32) {
        self.unicast.prefetch(dst);
    }

    /// The owner of `dst` on `dev`, when it is a local address of the family: the unicast
    /// case of [`OwnerTable::classify`] alone, for the prefetch pass over a burst.
    #[inline(always)]
    pub fn owner_of(&self, dev: DevId, dst: u32) -> Option<NsId> {
        self.lookup(dev, dst).map(|e| e.owner())
    }

    #[cold]
    #[inline(never)]
    fn lookup_dup(&self, dev: DevId, dst: u32) -> Option<AddrEntry> {
        let all = self.dups.get(&dst)?;
        all.iter().find(|x| x.dev == dev.0).or(all.first()).copied()
    }

    fn bcast_add(&mut self, dev: u16, b: u32, delta: i32) {
        if b == 0 {
            return;
        }
        let key = (u64::from(dev) << 32) | u64::from(b);
        let n = self.bcast.get(key).unwrap_or(0) as i64 + i64::from(delta);
        if n <= 0 {
            self.bcast.remove(key);
        } else {
            self.bcast.insert(key, n as u32);
        }
    }
}

/// Where a received IPv4 packet is headed (R8, R10).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    Unicast(NsId),
    /// `255.255.255.255`.
    LimitedBroadcast,
    /// The broadcast address of an ifaddr on the receiving device.
    DirectedBroadcast,
    /// `224.0.0.0/4`: not delivered by this version.
    Multicast,
    /// Not for this host (l3ns is not a router).
    Unclaimed,
}

/// A vector in two levels of shared slices: cloning it (every publish clones the snapshot)
/// is one `Arc` increment; updating one slot copies the list of chunks once per snapshot
/// (`len / CHUNK` pointers) and the one chunk the slot is in (`CHUNK` slots), and every
/// other chunk stays shared with the previous snapshot. Each copied slot is a reference
/// count to bump now and to drop with the old snapshot, on a line of its own: small chunks
/// keep a publish from touching hundreds of them. A lookup is two dependent loads, as with
/// a plain `Vec` of `Arc`s.
#[derive(Clone, Debug)]
struct Chunked<T> {
    chunks: Arc<[Arc<[Option<T>]>]>,
}

const CHUNK: usize = 32;

impl<T: Clone> Chunked<T> {
    fn new() -> Self {
        Chunked {
            chunks: Arc::new([]),
        }
    }
    #[inline(always)]
    fn prefetch(&self, i: usize) {
        if let Some(slot) = self.chunks.get(i / CHUNK).and_then(|c| c.get(i % CHUNK)) {
            crate::prefetch::read(slot);
        }
    }
    #[inline]
    fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)?.as_ref()
    }
    fn set(&mut self, i: usize, v: Option<T>) {
        if v.is_none() && self.get(i).is_none() {
            // Nothing to clear: copy nothing.
            return;
        }
        let c = i / CHUNK;
        if self.chunks.len() <= c {
            let empty: Arc<[Option<T>]> = (0..CHUNK).map(|_| None).collect();
            let mut grown: Vec<_> = self.chunks.iter().cloned().collect();
            grown.resize(c + 1, empty);
            self.chunks = grown.into();
        }
        let chunk = &mut Arc::make_mut(&mut self.chunks)[c];
        Arc::make_mut(chunk)[i % CHUNK] = v;
    }
    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter().flatten())
    }
}

#[derive(Clone, Debug)]
struct DeviceEntry {
    device: Device,
    family: usize,
}

/// The snapshot.
#[derive(Clone, Debug)]
pub struct OwnerTable {
    version: u64,
    devices: Arc<Vec<Option<DeviceEntry>>>,
    families: Vec<Family>,
    namespaces: Chunked<NsSlot>,
    /// Socket id → the queue its datagrams go to.
    sockets: Chunked<Arc<SocketQueue>>,
    /// Socket id → the namespace whose view lists it (so that attaching a queue can refresh
    /// that namespace's slot).
    socket_ns: Chunked<NsId>,
    /// Changes whenever a namespace's bindings or a socket's queue change (see
    /// [`OwnerTable::sockets_gen`]).
    sockets_gen: u64,
}

/// A value no snapshot has had as its `sockets_gen` (process-wide, never 0).
fn fresh_sockets_gen() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Default for OwnerTable {
    fn default() -> Self {
        Self::new()
    }
}

impl OwnerTable {
    /// An empty snapshot, version 0: no devices, no namespaces.
    pub fn new() -> Self {
        OwnerTable {
            version: 0,
            devices: Arc::new(Vec::new()),
            families: Vec::new(),
            namespaces: Chunked::new(),
            sockets: Chunked::new(),
            socket_ns: Chunked::new(),
            sockets_gen: fresh_sockets_gen(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The generation of the sockets: a snapshot derived from another (cloned, then changed)
    /// keeps its generation unless a namespace's bindings or a socket's queue changed, and a
    /// new generation is one no snapshot had before. So two snapshots with the same
    /// generation answer every R9 lookup (socket and queue) alike, with the same queue
    /// `Arc`s — what the worker's socket memos (`NsCounters::memo`) rely on. Address moves
    /// keep it.
    #[inline(always)]
    pub fn sockets_gen(&self) -> u64 {
        self.sockets_gen
    }

    // ---- reads used by the packet path -------------------------------------------------

    pub fn device(&self, dev: DevId) -> Option<&Device> {
        self.devices
            .get(usize::from(dev.0))?
            .as_ref()
            .map(|d| &d.device)
    }

    pub fn device_by_name(&self, name: &str) -> Option<&Device> {
        self.devices
            .iter()
            .flatten()
            .map(|d| &d.device)
            .find(|d| d.name == name)
    }

    /// The L2 family a device belongs to.
    #[inline]
    pub fn family_of_dev(&self, dev: DevId) -> Option<&Family> {
        let e = self.devices.get(usize::from(dev.0))?.as_ref()?;
        self.families.get(e.family)
    }

    pub fn family(&self, l2: NsId) -> Option<&Family> {
        self.families.iter().find(|f| f.l2 == l2)
    }

    #[inline]
    pub fn namespace(&self, ns: NsId) -> Option<&NsView> {
        self.namespaces.get(ns.0 as usize).map(|s| s.view())
    }

    /// `ns`'s slot: its view and the bindings a unicast receive reads.
    #[inline]
    pub fn ns_slot(&self, ns: NsId) -> Option<&NsSlot> {
        self.namespaces.get(ns.0 as usize)
    }

    /// Prefetches `ns`'s slot (one line): with many namespaces the slots outgrow the L2 cache.
    #[inline(always)]
    pub fn prefetch_namespace_slot(&self, ns: NsId) {
        self.namespaces.prefetch(ns.0 as usize);
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &NsView> {
        self.namespaces.iter().map(|s| s.view())
    }

    /// R8: the namespace that owns `dst` for a packet received on `dev` (the ifaddr on `dev`
    /// when several devices carry the same address).
    #[inline]
    pub fn owner(&self, dev: DevId, dst: Ipv4Addr) -> Option<NsId> {
        self.family_of_dev(dev)?
            .lookup(dev, u32::from(dst))
            .map(|e| e.owner())
    }

    /// R8 with a family already resolved once per burst: the hot-path form.
    #[inline(always)]
    pub fn owner_in(family: &Family, dev: DevId, dst: Ipv4Addr) -> Option<NsId> {
        family.lookup(dev, u32::from(dst)).map(|e| e.owner())
    }

    /// R15: the owner of `addr` if it is a local address on `dev` itself (ARP is answered
    /// only for addresses on the receiving device).
    pub fn local_on_dev(&self, dev: DevId, addr: Ipv4Addr) -> Option<NsId> {
        let f = self.family_of_dev(dev)?;
        f.entries(addr)
            .iter()
            .find(|e| e.dev == dev.0)
            .map(|e| e.owner())
    }

    /// R8/R10 classification of a destination received on `dev`.
    #[inline(always)]
    pub fn classify(family: &Family, dev: DevId, dst: Ipv4Addr) -> Dest {
        let d = u32::from(dst);
        if d == u32::MAX {
            return Dest::LimitedBroadcast;
        }
        if let Some(e) = family.lookup(dev, d) {
            return Dest::Unicast(e.owner());
        }
        if family
            .bcast
            .get((u64::from(dev.0) << 32) | u64::from(d))
            .is_some()
        {
            return Dest::DirectedBroadcast;
        }
        if dst.is_multicast() {
            return Dest::Multicast;
        }
        Dest::Unclaimed
    }

    /// R10: calls `f` once for every socket a broadcast to `dst:port` received on `dev`
    /// reaches: sockets in the family (the L2 and its L3 children) bound to `0.0.0.0` or to
    /// `dst`. A directed broadcast reaches a child's `0.0.0.0` socket only if that child
    /// owns an ifaddr whose broadcast is `dst`; the limited broadcast reaches every child.
    pub fn broadcast_recipients(
        &self,
        dev: DevId,
        dst: Ipv4Addr,
        proto: Proto,
        port: u16,
        mut f: impl FnMut(&Binding),
    ) {
        let Some(family) = self.family_of_dev(dev) else {
            return;
        };
        let Some(list) = family.listeners.get(&port) else {
            return;
        };
        let limited = dst.is_broadcast();
        for b in list.iter().filter(|b| b.proto == proto) {
            let reaches = if b.addr == dst {
                true
            } else if b.addr.is_unspecified() {
                limited
                    || b.ns == family.l2
                    || self
                        .namespace(b.ns)
                        .is_some_and(|v| v.ifaddrs.iter().any(|i| i.broadcast == dst))
            } else {
                false
            };
            if reaches {
                f(b);
            }
        }
    }

    /// Whether the socket slots are many enough (more than 16,384: 128 KB) to miss the cache,
    /// so that the receive path should prefetch a packet's socket slot in a pass of its own.
    /// Below that, the extra pass costs more than the misses it hides.
    #[inline(always)]
    pub fn many_sockets(&self) -> bool {
        self.sockets.chunks.len() * CHUNK > 16_384
    }

    /// Prefetches the slot that points to socket `id`'s queue.
    #[inline(always)]
    pub fn prefetch_socket(&self, id: SocketId) {
        self.sockets.prefetch(id.0 as usize);
    }

    /// The queue a socket delivers into.
    #[inline]
    pub fn socket_queue(&self, id: SocketId) -> Option<&Arc<SocketQueue>> {
        self.sockets.get(id.0 as usize)
    }

    /// R9: the socket in `ns` for a unicast datagram to `dst:port`.
    #[inline]
    pub fn unicast_socket(
        &self,
        ns: NsId,
        proto: Proto,
        dst: Ipv4Addr,
        port: u16,
    ) -> Option<SocketId> {
        self.ns_slot(ns)?.socket_for(proto, dst, port)
    }

    /// R11: where a datagram that `ns` sends to `127.0.0.0/8` lands: a socket of `ns` itself,
    /// or, for a `shared` namespace without a listener, its L2 parent's.
    pub fn loopback_socket(
        &self,
        ns: NsId,
        proto: Proto,
        dst: Ipv4Addr,
        port: u16,
    ) -> Option<(NsId, SocketId)> {
        let slot = self.ns_slot(ns)?;
        if let Some(s) = slot.socket_for(proto, dst, port) {
            return Some((ns, s));
        }
        let v = slot.view();
        if v.loopback == LoopbackMode::Shared {
            let p = v.parent?;
            return self
                .ns_slot(p)?
                .socket_for(proto, dst, port)
                .map(|s| (p, s));
        }
        None
    }

    /// R7 for namespace `ns` (address part; port conflicts are the socket layer's).
    pub fn bind_allowed(&self, ns: NsId, addr: Ipv4Addr) -> Result<(), Errno> {
        let v = self.namespace(ns).ok_or(Errno::ENOENT)?;
        rules::bind_allowed(addr, &v.ifaddrs)
    }

    /// R13 for namespace `ns` sending to `dst`.
    pub fn select_source(&self, ns: NsId, dst: Ipv4Addr) -> Result<SourceChoice, Errno> {
        let v = self.namespace(ns).ok_or(Errno::ENOENT)?;
        let routes = self.family(v.family).map(|f| &*f.routes).unwrap_or(&[]);
        rules::select_source(&v.ifaddrs, routes, dst)
    }

    /// R14: may `ns` send with source `src`?
    pub fn may_send_from(&self, ns: NsId, src: Ipv4Addr) -> bool {
        src.is_loopback()
            || self
                .namespace(ns)
                .is_some_and(|v| v.ifaddrs.iter().any(|i| i.local == src))
    }

    /// Approximate heap bytes: (address tables, namespace views).
    pub fn memory_usage(&self) -> (usize, usize) {
        let addr: usize = self
            .families
            .iter()
            .map(|f| {
                f.unicast.heap_bytes()
                    + f.bcast.heap_bytes()
                    + f.routes.len() * std::mem::size_of::<Route>()
            })
            .sum();
        let ns: usize = self
            .namespaces
            .chunks
            .iter()
            .map(|c| 64 + c.len() * std::mem::size_of::<Option<NsSlot>>())
            .sum::<usize>()
            + self
                .namespaces()
                .map(|v| {
                    std::mem::size_of::<NsView>()
                        + 16
                        + v.name.len()
                        + v.ifaddrs.capacity() * std::mem::size_of::<LocalAddr>()
                        + v.bindings.capacity() * std::mem::size_of::<Binding>()
                })
                .sum::<usize>();
        (addr, ns)
    }

    /// The first difference between two snapshots' contents, ignoring the version and which
    /// queue object a socket delivers into (only whether it has one): how tests check that
    /// two ways of publishing the same changes give the same snapshot.
    pub fn content_diff(&self, other: &OwnerTable) -> Option<String> {
        // Families are compared by their L2, not by their place in the list (which depends
        // on the order changes were applied in).
        let devices = |t: &OwnerTable| -> Vec<Option<(Device, NsId)>> {
            let mut v: Vec<_> = t
                .devices
                .iter()
                .map(|d| {
                    d.as_ref()
                        .map(|d| (d.device.clone(), t.families[d.family].l2))
                })
                .collect();
            while v.last() == Some(&None) {
                v.pop();
            }
            v
        };
        if devices(self) != devices(other) {
            return Some(format!(
                "devices differ: {:?} / {:?}",
                devices(self),
                devices(other)
            ));
        }
        fn by_l2(t: &OwnerTable) -> Vec<&Family> {
            let mut v: Vec<&Family> = t.families.iter().collect();
            v.sort_by_key(|f| f.l2);
            v
        }
        let (fa, fb) = (by_l2(self), by_l2(other));
        if fa.len() != fb.len() {
            return Some("not the same number of families".into());
        }
        for (a, b) in fa.into_iter().zip(fb) {
            let sorted = |m: &ShardedMap<u32, AddrEntry>| {
                let mut v: Vec<_> = m.iter().collect();
                v.sort_unstable_by_key(|(k, _)| *k);
                v
            };
            let sorted_b = |m: &ShardedMap<u64, u32>| {
                let mut v: Vec<_> = m.iter().collect();
                v.sort_unstable();
                v
            };
            if a.l2 != b.l2 {
                return Some(format!("families differ: {} / {}", a.l2, b.l2));
            }
            if sorted(&a.unicast) != sorted(&b.unicast) || a.unicast.len() != b.unicast.len() {
                return Some(format!("family {}: unicast tables differ", a.l2));
            }
            if a.dups != b.dups {
                return Some(format!("family {}: duplicate lists differ", a.l2));
            }
            if sorted_b(&a.bcast) != sorted_b(&b.bcast) {
                return Some(format!("family {}: broadcast counts differ", a.l2));
            }
            if a.routes != b.routes {
                return Some(format!("family {}: routes differ", a.l2));
            }
            if a.listeners != b.listeners {
                return Some(format!(
                    "family {}: listeners differ: {:?} / {:?}",
                    a.l2, a.listeners, b.listeners
                ));
            }
        }
        let views = |t: &OwnerTable| -> Vec<NsView> { t.namespaces().cloned().collect() };
        if views(self) != views(other) {
            return Some(format!(
                "namespace views differ:\n{:?}\n{:?}",
                views(self),
                views(other)
            ));
        }
        let attached = |t: &OwnerTable| -> Vec<usize> {
            (0..t.sockets.chunks.len() * CHUNK)
                .filter(|i| t.sockets.get(*i).is_some())
                .collect()
        };
        if attached(self) != attached(other) {
            return Some(format!(
                "attached sockets differ: {:?} / {:?}",
                attached(self),
                attached(other)
            ));
        }
        None
    }

    // ---- writes used by the control thread's publisher ----------------------------------

    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    fn family_index(&mut self, l2: NsId) -> usize {
        if let Some(i) = self.families.iter().position(|f| f.l2 == l2) {
            return i;
        }
        self.families.push(Family::new(l2));
        self.families.len() - 1
    }

    /// Adds or replaces a device; its family is created if needed.
    pub fn set_device(&mut self, device: Device) {
        let family = self.family_index(device.owner);
        let devices = Arc::make_mut(&mut self.devices);
        let i = usize::from(device.id.0);
        if devices.len() <= i {
            devices.resize(i + 1, None);
        }
        devices[i] = Some(DeviceEntry { device, family });
    }

    /// Replaces every ifaddr with local address `local` in family `l2` by `entries` (empty:
    /// the address is gone).
    pub fn set_local(&mut self, l2: NsId, local: Ipv4Addr, entries: &[AddrEntry]) {
        let key = u32::from(local);
        let fi = self.family_index(l2);
        let f = &mut self.families[fi];
        let old = f.entries(local);
        let same_bcast = old.len() == entries.len()
            && old
                .iter()
                .zip(entries)
                .all(|(o, n)| (o.dev, o.broadcast) == (n.dev, n.broadcast));
        // A move (push, pull) changes owners only: the broadcast counts stay, and their
        // shard is not copied.
        if !same_bcast {
            for old in &old {
                f.bcast_add(old.dev, old.broadcast, -1);
            }
            for new in entries {
                f.bcast_add(new.dev, new.broadcast, 1);
            }
        }
        let had_dups = f.dups.contains_key(&key);
        match entries {
            [] => {
                f.unicast.remove(key);
            }
            [one] => {
                f.unicast.insert(
                    key,
                    AddrEntry {
                        multi: false,
                        ..*one
                    },
                );
            }
            [first, ..] => {
                f.unicast.insert(
                    key,
                    AddrEntry {
                        multi: true,
                        ..*first
                    },
                );
                Arc::make_mut(&mut f.dups).insert(
                    key,
                    entries
                        .iter()
                        .map(|e| AddrEntry { multi: true, ..*e })
                        .collect(),
                );
            }
        }
        if had_dups && entries.len() < 2 {
            Arc::make_mut(&mut f.dups).remove(&key);
        }
    }

    /// Replaces family `l2`'s routes (explicit and connected).
    pub fn set_routes(&mut self, l2: NsId, routes: Vec<Route>) {
        let fi = self.family_index(l2);
        self.families[fi].routes = routes.into();
    }

    /// Attaches (or, with `None`, detaches) a socket's queue.
    pub fn set_socket_queue(&mut self, id: SocketId, queue: Option<Arc<SocketQueue>>) {
        let same = |a: Option<&Arc<SocketQueue>>| match (a, &queue) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same(self.sockets.get(id.0 as usize)) {
            self.sockets_gen = fresh_sockets_gen();
        }
        self.sockets.set(id.0 as usize, queue.clone());
        // The slot of the namespace that lists the socket keeps a copy.
        let Some(&ns) = self.socket_ns.get(id.0 as usize) else {
            return;
        };
        let Some(slot) = self.namespaces.get(ns.0 as usize) else {
            return;
        };
        let h = &slot.hot;
        let Some(i) = (0..usize::from(h.len).min(HOT)).find(|&i| h.ids[i] == id.0) else {
            return;
        };
        if !same(slot.queues[i].as_ref()) {
            let mut slot = slot.clone();
            slot.queues[i] = queue;
            self.namespaces.set(ns.0 as usize, Some(slot));
        }
    }

    /// Forgets that `ns` lists `bindings`' sockets (unless another namespace lists one now).
    fn forget_sockets(&mut self, ns: NsId, bindings: &[Binding]) {
        for b in bindings {
            if self.socket_ns.get(b.id.0 as usize) == Some(&ns) {
                self.socket_ns.set(b.id.0 as usize, None);
            }
        }
    }

    /// The slot of `view` (bindings sorted), with the queues the socket table has now.
    fn slot_of(&self, view: NsView) -> NsSlot {
        let hot = HotBindings::of(&view.bindings);
        let queues = std::array::from_fn(|i| {
            if i < usize::from(hot.len).min(HOT) {
                self.sockets.get(hot.ids[i] as usize).cloned()
            } else {
                None
            }
        });
        NsSlot {
            hot,
            queues,
            view: Arc::new(view),
        }
    }

    /// Adds or replaces a namespace's view (bindings are sorted here).
    pub fn set_namespace(&mut self, view: NsView) {
        let id = view.id;
        self.update_namespaces([(id, Some(view))]);
    }

    pub fn remove_namespace(&mut self, ns: NsId) {
        self.update_namespaces([(ns, None)]);
    }

    /// Sets (`Some(view)`) or removes (`None`) several namespaces, then rebuilds the listener
    /// list of each port whose bindings changed once. (Rebuilding it per namespace costs the
    /// number of sockets on the port each time: a configuration that binds one port in
    /// 100,000 namespaces took 20 s to publish.)
    pub fn update_namespaces(&mut self, updates: impl IntoIterator<Item = (NsId, Option<NsView>)>) {
        // (family index, port) -> the namespaces whose bindings on that port changed.
        let mut touched: HashMap<(usize, u16), Vec<NsId>> = HashMap::new();
        let mut touch = |fi: usize, ns: NsId, bindings: &[Binding]| {
            for b in bindings {
                let v = touched.entry((fi, b.port)).or_default();
                if v.last() != Some(&ns) {
                    v.push(ns);
                }
            }
        };
        for (ns, view) in updates {
            // The old view's `Arc`, not a deep copy of it.
            let old = self.namespaces.get(ns.0 as usize).map(|s| s.view.clone());
            let old_b = old.as_deref().map_or(&[][..], |v| &v.bindings[..]);
            match view {
                Some(mut view) => {
                    debug_assert_eq!(view.id, ns);
                    view.normalize();
                    if old_b != &view.bindings[..] {
                        self.sockets_gen = fresh_sockets_gen();
                        if let Some(o) = old.as_deref() {
                            touch(self.family_index(o.family), ns, old_b);
                        }
                        touch(self.family_index(view.family), ns, &view.bindings);
                        self.forget_sockets(ns, old_b);
                        for b in &view.bindings {
                            self.socket_ns.set(b.id.0 as usize, Some(ns));
                        }
                    }
                    let slot = self.slot_of(view);
                    self.namespaces.set(ns.0 as usize, Some(slot));
                }
                None => {
                    if let Some(o) = old.as_deref() {
                        self.sockets_gen = fresh_sockets_gen();
                        touch(self.family_index(o.family), ns, old_b);
                        self.forget_sockets(ns, old_b);
                        self.namespaces.set(ns.0 as usize, None);
                    }
                }
            }
        }
        for ((fi, port), mut changed) in touched {
            changed.sort_unstable();
            changed.dedup();
            let mut list: Vec<Binding> = self.families[fi]
                .listeners
                .get(&port)
                .map(|l| {
                    l.iter()
                        .filter(|b| changed.binary_search(&b.ns).is_err())
                        .copied()
                        .collect()
                })
                .unwrap_or_default();
            let l2 = self.families[fi].l2;
            for ns in &changed {
                if let Some(v) = self.namespace(*ns).filter(|v| v.family == l2) {
                    list.extend(v.bindings.iter().filter(|b| b.port == port));
                }
            }
            list.sort_by_key(|b| (b.ns, b.id));
            let listeners = Arc::make_mut(&mut self.families[fi].listeners);
            if list.is_empty() {
                listeners.remove(&port);
            } else {
                listeners.insert(port, list.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Scope;

    const ROOT: NsId = NsId::ROOT;
    const WEB1: NsId = NsId(1);
    const WEB2: NsId = NsId(2);
    const ETH0: DevId = DevId(1);
    const ETH1: DevId = DevId(2);

    fn ip(a: [u8; 4]) -> Ipv4Addr {
        Ipv4Addr::from(a)
    }

    fn ifa(dev: DevId, local: [u8; 4], prefix: u8, owner: NsId) -> IfAddr {
        let local = ip(local);
        IfAddr {
            dev,
            label: format!("eth{}", dev.0 - 1).into(),
            local,
            prefix,
            broadcast: Ipv4Addr::from(u32::from(local) | !crate::types::prefix_mask(prefix)),
            scope: Scope::Global,
            owner,
        }
    }

    fn view(
        id: NsId,
        name: &str,
        parent: Option<NsId>,
        ifaddrs: Vec<IfAddr>,
        bindings: Vec<(u32, [u8; 4], u16)>,
    ) -> NsView {
        let b: Vec<_> = bindings
            .into_iter()
            .map(|(sid, a, port)| (sid, ip(a), port))
            .collect();
        NsView::in_root_family(id, name, parent, ifaddrs, &b)
    }

    /// root owns 10.0.0.1/24, web1 owns 10.0.0.2/24 and 10.1.0.1/16, web2 owns 10.0.0.3/24.
    fn table() -> OwnerTable {
        let mut t = OwnerTable::new();
        for (id, name) in [(ETH0, "eth0"), (ETH1, "eth1")] {
            t.set_device(Device {
                id,
                name: name.into(),
                owner: ROOT,
                mac: [2, 0, 0, 0, 0, id.0 as u8],
            });
        }
        let r = vec![ifa(ETH0, [10, 0, 0, 1], 24, ROOT)];
        let w1 = vec![
            ifa(ETH0, [10, 0, 0, 2], 24, WEB1),
            ifa(ETH1, [10, 1, 0, 1], 16, WEB1),
        ];
        let w2 = vec![ifa(ETH0, [10, 0, 0, 3], 24, WEB2)];
        for i in r.iter().chain(&w1).chain(&w2) {
            t.set_local(ROOT, i.local, &[AddrEntry::of(i)]);
        }
        t.set_namespace(view(
            ROOT,
            "root",
            None,
            r,
            vec![(1, [0, 0, 0, 0], 67), (2, [0, 0, 0, 0], 7)],
        ));
        t.set_namespace(view(
            WEB1,
            "web1",
            Some(ROOT),
            w1,
            vec![
                (3, [0, 0, 0, 0], 7),
                (4, [10, 0, 0, 2], 7),
                (5, [0, 0, 0, 0], 67),
            ],
        ));
        t.set_namespace(view(
            WEB2,
            "web2",
            Some(ROOT),
            w2,
            vec![
                (6, [0, 0, 0, 0], 7),
                (7, [0, 0, 0, 0], 67),
                (8, [10, 1, 255, 255], 67),
            ],
        ));
        t
    }

    #[test]
    fn r08_unicast_owner_lookup() {
        let t = table();
        assert_eq!(t.owner(ETH0, ip([10, 0, 0, 1])), Some(ROOT));
        assert_eq!(t.owner(ETH0, ip([10, 0, 0, 2])), Some(WEB1));
        assert_eq!(
            t.owner(ETH1, ip([10, 0, 0, 3])),
            Some(WEB2),
            "any device of the family"
        );
        assert_eq!(t.owner(ETH0, ip([10, 0, 0, 9])), None);
        let f = t.family_of_dev(ETH0).unwrap();
        assert_eq!(
            OwnerTable::classify(f, ETH0, ip([10, 0, 0, 9])),
            Dest::Unclaimed
        );
        assert_eq!(
            OwnerTable::classify(f, ETH0, ip([10, 0, 0, 255])),
            Dest::DirectedBroadcast
        );
        assert_eq!(
            OwnerTable::classify(f, ETH1, ip([10, 0, 0, 255])),
            Dest::Unclaimed,
            "not a broadcast of eth1"
        );
        assert_eq!(
            OwnerTable::classify(f, ETH1, ip([10, 1, 255, 255])),
            Dest::DirectedBroadcast
        );
        assert_eq!(
            OwnerTable::classify(f, ETH0, Ipv4Addr::BROADCAST),
            Dest::LimitedBroadcast
        );
        assert_eq!(
            OwnerTable::classify(f, ETH0, ip([224, 0, 0, 1])),
            Dest::Multicast
        );
        // Moving an address (a push) changes its owner in the next snapshot only.
        let before = t.clone();
        let mut t2 = t.clone();
        t2.set_local(
            ROOT,
            ip([10, 0, 0, 1]),
            &[AddrEntry {
                owner: WEB2.0,
                ..AddrEntry::of(&ifa(ETH0, [10, 0, 0, 1], 24, ROOT))
            }],
        );
        assert_eq!(t2.owner(ETH0, ip([10, 0, 0, 1])), Some(WEB2));
        assert_eq!(before.owner(ETH0, ip([10, 0, 0, 1])), Some(ROOT));
        // Removal.
        t2.set_local(ROOT, ip([10, 0, 0, 1]), &[]);
        assert_eq!(t2.owner(ETH0, ip([10, 0, 0, 1])), None);
        assert_eq!(
            OwnerTable::classify(t2.family_of_dev(ETH0).unwrap(), ETH0, ip([10, 0, 0, 255])),
            Dest::DirectedBroadcast,
            "web1 and web2 still have 10.0.0.255"
        );
    }

    #[test]
    fn r08_same_address_on_two_devices_prefers_receiving_device() {
        let mut t = table();
        let a = ifa(ETH0, [10, 9, 0, 1], 24, WEB1);
        let b = ifa(ETH1, [10, 9, 0, 1], 24, WEB2);
        t.set_local(ROOT, a.local, &[AddrEntry::of(&a), AddrEntry::of(&b)]);
        assert_eq!(t.owner(ETH0, a.local), Some(WEB1));
        assert_eq!(t.owner(ETH1, a.local), Some(WEB2));
        assert_eq!(t.local_on_dev(ETH1, a.local), Some(WEB2));
        t.set_local(ROOT, a.local, &[AddrEntry::of(&b)]);
        assert_eq!(t.owner(ETH0, a.local), Some(WEB2));
        assert_eq!(
            t.local_on_dev(ETH0, a.local),
            None,
            "R15: ARP only for addresses on the receiving device"
        );
    }

    #[test]
    fn r09_most_specific_socket_wins() {
        let t = table();
        assert_eq!(
            t.unicast_socket(WEB1, Proto::Udp, ip([10, 0, 0, 2]), 7),
            Some(SocketId(4))
        );
        assert_eq!(
            t.unicast_socket(WEB1, Proto::Udp, ip([10, 1, 0, 1]), 7),
            Some(SocketId(3))
        );
        assert_eq!(
            t.unicast_socket(WEB2, Proto::Udp, ip([10, 0, 0, 3]), 7),
            Some(SocketId(6))
        );
        assert_eq!(
            t.unicast_socket(WEB2, Proto::Udp, ip([10, 0, 0, 3]), 8),
            None
        );
    }

    fn recipients(t: &OwnerTable, dev: DevId, dst: [u8; 4], port: u16) -> Vec<u32> {
        let mut out = Vec::new();
        t.broadcast_recipients(dev, ip(dst), Proto::Udp, port, |b| out.push(b.id.0));
        out.sort();
        out
    }

    #[test]
    fn r10_broadcast_recipients() {
        let t = table();
        // Limited broadcast: every 0.0.0.0 listener in the family.
        assert_eq!(
            recipients(&t, ETH0, [255, 255, 255, 255], 67),
            vec![1, 5, 7]
        );
        assert_eq!(recipients(&t, ETH0, [255, 255, 255, 255], 7), vec![2, 3, 6]);
        // Directed 10.0.0.255: root, and children owning an ifaddr with that broadcast.
        assert_eq!(recipients(&t, ETH0, [10, 0, 0, 255], 67), vec![1, 5, 7]);
        // Directed 10.1.255.255 (web1's /16 on eth1): root, web1's wildcard, and web2's socket
        // bound to that address; not web2's wildcard (web2 owns no such ifaddr).
        assert_eq!(recipients(&t, ETH1, [10, 1, 255, 255], 67), vec![1, 5, 8]);
        // Nobody on that port.
        assert_eq!(
            recipients(&t, ETH0, [255, 255, 255, 255], 99),
            Vec::<u32>::new()
        );
        // A closed socket disappears from the fan-out.
        let mut t2 = t.clone();
        let mut w2 = t2.namespace(WEB2).unwrap().clone();
        w2.bindings.retain(|b| b.id != SocketId(7));
        t2.set_namespace(w2);
        assert_eq!(recipients(&t2, ETH0, [255, 255, 255, 255], 67), vec![1, 5]);
        t2.remove_namespace(WEB1);
        assert_eq!(recipients(&t2, ETH0, [255, 255, 255, 255], 67), vec![1]);
        assert_eq!(
            recipients(&t, ETH0, [255, 255, 255, 255], 67),
            vec![1, 5, 7],
            "older snapshot unchanged"
        );
    }

    #[test]
    fn r11_loopback_isolated_and_shared() {
        let mut t = table();
        let mut w1 = t.namespace(WEB1).unwrap().clone();
        w1.bindings.push(Binding {
            id: SocketId(20),
            ns: WEB1,
            proto: Proto::Udp,
            addr: ip([127, 0, 0, 1]),
            port: 53,
        });
        t.set_namespace(w1);
        let mut r = t.namespace(ROOT).unwrap().clone();
        r.bindings.push(Binding {
            id: SocketId(21),
            ns: ROOT,
            proto: Proto::Udp,
            addr: ip([127, 0, 0, 1]),
            port: 111,
        });
        t.set_namespace(r);
        let lo = ip([127, 0, 0, 1]);
        assert_eq!(
            t.loopback_socket(WEB1, Proto::Udp, lo, 53),
            Some((WEB1, SocketId(20)))
        );
        assert_eq!(
            t.loopback_socket(WEB2, Proto::Udp, lo, 53),
            None,
            "isolated: web1's listener is invisible"
        );
        assert_eq!(
            t.loopback_socket(WEB2, Proto::Udp, lo, 111),
            None,
            "isolated: no fallback to the parent"
        );
        let mut w2 = t.namespace(WEB2).unwrap().clone();
        w2.loopback = LoopbackMode::Shared;
        t.set_namespace(w2);
        assert_eq!(
            t.loopback_socket(WEB2, Proto::Udp, lo, 111),
            Some((ROOT, SocketId(21))),
            "shared: the parent's portmap"
        );
        assert_eq!(
            t.loopback_socket(WEB2, Proto::Udp, lo, 53),
            None,
            "shared reaches the parent, not a sibling"
        );
    }

    #[test]
    fn r07_bind_and_r13_source_through_the_snapshot() {
        let mut t = table();
        t.set_routes(
            ROOT,
            vec![
                rules::connected_route(&ifa(ETH0, [10, 0, 0, 1], 24, ROOT)),
                rules::connected_route(&ifa(ETH1, [10, 1, 0, 1], 16, ROOT)),
            ],
        );
        assert_eq!(t.bind_allowed(WEB1, ip([10, 0, 0, 2])), Ok(()));
        assert_eq!(
            t.bind_allowed(WEB1, ip([10, 0, 0, 3])),
            Err(Errno::EADDRNOTAVAIL),
            "web2's address"
        );
        assert_eq!(
            t.bind_allowed(NsId(77), ip([0, 0, 0, 0])),
            Err(Errno::ENOENT)
        );
        let c = t.select_source(WEB1, ip([10, 0, 0, 77])).unwrap();
        assert_eq!((c.src, c.dev), (ip([10, 0, 0, 2]), ETH0));
        let c = t.select_source(WEB2, ip([10, 1, 2, 3])).unwrap();
        assert_eq!(
            (c.src, c.dev),
            (ip([10, 0, 0, 3]), ETH1),
            "nothing of web2's on eth1: any other"
        );
        assert!(t.may_send_from(WEB2, ip([10, 0, 0, 3])));
        assert!(!t.may_send_from(WEB2, ip([10, 0, 0, 2])), "R14");
    }

    #[test]
    fn updating_many_namespaces_at_once_equals_one_at_a_time() {
        // Views of 40 namespaces with sockets on shared ports (9 everywhere, 67 in some, a
        // specific address on 9 in others), then a second round that rebinds, unbinds and
        // removes some: `update_namespaces` in one call must leave the same listener lists
        // (and everything else) as `set_namespace`/`remove_namespace` one by one.
        let view = |n: u32, round: u32| -> Option<NsView> {
            if round == 1 && n % 7 == 3 {
                return None;
            }
            let id = NsId(n);
            let mut b = vec![(100 + n, ip([0, 0, 0, 0]), 9)];
            if (n + round).is_multiple_of(3) {
                b.push((300 + n, ip([0, 0, 0, 0]), 67));
            }
            if n % 5 == 1 && round == 0 {
                b.push((500 + n, ip([10, 0, 0, n as u8]), 9));
            }
            let a = vec![ifa(ETH0, [10, 0, 0, n as u8], 24, id)];
            Some(NsView::in_root_family(
                id,
                &format!("n{n}"),
                Some(ROOT),
                a,
                &b,
            ))
        };
        let mut one = OwnerTable::new();
        let mut many = OwnerTable::new();
        for t in [&mut one, &mut many] {
            t.set_device(Device {
                id: ETH0,
                name: "eth0".into(),
                owner: ROOT,
                mac: [2, 0, 0, 0, 0, 1],
            });
        }
        for round in 0..2 {
            for n in 1..=40 {
                match view(n, round) {
                    Some(v) => one.set_namespace(v),
                    None => one.remove_namespace(NsId(n)),
                }
            }
            many.update_namespaces((1..=40).map(|n| (NsId(n), view(n, round))));
            assert_eq!(one.content_diff(&many), None, "round {round}");
        }
        let on = |t: &OwnerTable, port| {
            let mut n = 0;
            t.broadcast_recipients(ETH0, ip([255, 255, 255, 255]), Proto::Udp, port, |_| n += 1);
            n
        };
        // Round 1: namespaces 3, 10, 17, 24, 31, 38 are gone; every other one listens on 9.
        assert_eq!(on(&many, 9), 34);
    }

    #[test]
    fn a_namespace_slot_is_one_line() {
        assert_eq!(std::mem::size_of::<Option<NsSlot>>(), 64);
        assert_eq!(std::mem::align_of::<NsSlot>(), 64);
        let t = table();
        let slot = t.ns_slot(WEB1).unwrap();
        assert_eq!((slot as *const NsSlot as usize) % 64, 0);
        assert_eq!(slot.view().name.as_ref(), "web1");
    }

    proptest::proptest! {
        /// R9 from the slot's inline copy (up to `HOT` sockets) or, beyond, from the view's
        /// sorted bindings, is R9 as written: the socket bound to the destination, else the
        /// one on 0.0.0.0 (at most one of each per port, as the socket layer ensures).
        #[test]
        fn the_slot_answers_r9_like_the_rule(
            socks in proptest::collection::btree_map((0u16..4, 0usize..3), 1u32..1000, 0..7),
            port in 0u16..5,
            dst in 0usize..3,
        ) {
            let addrs = [[0, 0, 0, 0], [10, 0, 0, 2], [10, 0, 0, 3]];
            let bindings: Vec<_> = socks.iter().map(|(&(p, a), &id)| (id, addrs[a], p)).collect();
            let mut t = table();
            t.set_namespace(view(WEB1, "web1", Some(ROOT), vec![], bindings));
            let d = ip(addrs[dst]);
            let want = socks
                .get(&(port, dst))
                .or(socks.get(&(port, 0)))
                .map(|&id| SocketId(id));
            let slot = t.ns_slot(WEB1).unwrap();
            proptest::prop_assert_eq!(slot.spills(), socks.len() > HOT);
            proptest::prop_assert_eq!(slot.socket_for(Proto::Udp, d, port), want);
            proptest::prop_assert_eq!(slot.view().socket_for(Proto::Udp, d, port), want);
            proptest::prop_assert_eq!(t.unicast_socket(WEB1, Proto::Udp, d, port), want);
        }
    }

    /// Every slot's copy of its sockets' queues is what the socket table says.
    fn slots_agree(t: &OwnerTable) -> Result<(), String> {
        for ns in 0..8u32 {
            let Some(slot) = t.ns_slot(NsId(ns)) else {
                continue;
            };
            let h = &slot.hot;
            for i in 0..usize::from(h.len).min(HOT) {
                let want = t.socket_queue(SocketId(h.ids[i]));
                let same = match (slot.queues[i].as_ref(), want) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    return Err(format!("ns {ns}: socket {} has a stale queue", h.ids[i]));
                }
            }
        }
        Ok(())
    }

    proptest::proptest! {
        /// Views set and removed, queues attached, replaced and detached, in any order and
        /// in one `update_namespaces` or several: a slot never delivers into a queue the
        /// socket table no longer gives its socket.
        #[test]
        fn slot_queues_follow_the_socket_table(
            ops in proptest::collection::vec((0u8..4, 1u32..4, 1u32..7, 0usize..3), 1..40),
        ) {
            let pools = crate::socket::BatchPools::new(1, 4);
            let queues = [
                crate::socket::SocketQueue::new(8, pools.clone()),
                crate::socket::SocketQueue::new(8, pools.clone()),
            ];
            let mut t = table();
            for (op, ns, sock, k) in ops {
                let id = NsId(ns);
                match op {
                    // A view listing sockets `sock`.. (`k` + 1 of them; ids are unique per
                    // namespace as the socket layer keeps them: ns * 10 + i).
                    0 => {
                        let b = (0..=k as u32)
                            .map(|i| (ns * 10 + (sock + i) % 7, [0, 0, 0, 0], 9 + i as u16))
                            .collect();
                        t.update_namespaces([(id, Some(view(id, "n", Some(ROOT), vec![], b)))]);
                    }
                    1 => t.remove_namespace(id),
                    2 => t.set_socket_queue(SocketId(ns * 10 + sock), Some(queues[k % 2].clone())),
                    _ => t.set_socket_queue(SocketId(ns * 10 + sock), None),
                }
                if let Err(e) = slots_agree(&t) {
                    return Err(proptest::test_runner::TestCaseError::fail(e));
                }
            }
        }
    }
}
