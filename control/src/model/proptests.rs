//! Property tests: random sequences of operations by random identities (bad names, unknown
//! devices and L3 callers included) keep the model's invariants and R4–R6 semantics.

use super::*;
use proptest::prelude::*;

const NAMES: [&str; 8] = ["root", "a", "b", "c", "lab", "t", "Bad!", ""];
const DEVS: [&str; 4] = ["eth0", "eth1", "lo", "nodev"];

#[derive(Clone, Debug)]
enum Op {
    NsAdd {
        caller: u32,
        name: usize,
        parent: Option<usize>,
        shared: bool,
    },
    NsAddL2 {
        caller: u32,
        name: usize,
    },
    NsDel {
        caller: u32,
        name: usize,
    },
    AddrAdd {
        caller: u32,
        dev: usize,
        local: u8,
        prefix: u8,
        alias: bool,
    },
    AddrDel {
        caller: u32,
        dev: usize,
        local: u8,
    },
    Push {
        caller: u32,
        dev: usize,
        local: u8,
        label: Option<bool>,
        to: usize,
    },
    Pull {
        caller: u32,
        dev: usize,
        local: u8,
        label: Option<bool>,
        from: usize,
    },
    RouteAdd {
        caller: u32,
        net: u8,
        dev: usize,
    },
    RouteDel {
        caller: u32,
        net: u8,
    },
    Bind {
        caller: u32,
        addr: usize,
        port: u16,
    },
    Close {
        caller: u32,
        sock: u32,
    },
}

/// 10.0.0.0–10.0.0.7 plus two addresses that are never valid ifaddrs.
fn local(i: u8) -> Ipv4Addr {
    match i {
        8 => Ipv4Addr::UNSPECIFIED,
        9 => Ipv4Addr::LOCALHOST,
        i => Ipv4Addr::new(10, 0, 0, i),
    }
}

fn label(dev: usize, l: Option<bool>) -> Option<String> {
    l.map(|alias| {
        if alias {
            format!("{}:1", DEVS[dev])
        } else {
            DEVS[dev].to_string()
        }
    })
}

fn op() -> impl Strategy<Value = Op> {
    // Weighted towards calls that can succeed, so that long sequences build real state.
    let caller = prop_oneof![3 => Just(0u32), 2 => 1u32..7];
    let name = prop_oneof![4 => 1..6usize, 1 => 0..NAMES.len()];
    let dev = prop_oneof![4 => Just(0usize), 1 => 1..DEVS.len()];
    let local = prop_oneof![3 => 1u8..4, 1 => 0u8..10];
    let child = prop_oneof![3 => Just(1usize), 1 => name.clone()];
    let label = prop_oneof![2 => Just(None), 1 => any::<bool>().prop_map(Some)];
    prop_oneof![
        3 => (caller.clone(), name.clone(), proptest::option::of(name.clone()), any::<bool>())
            .prop_map(|(caller, name, parent, shared)| Op::NsAdd { caller, name, parent, shared }),
        1 => (caller.clone(), name.clone()).prop_map(|(caller, name)| Op::NsAddL2 { caller, name }),
        2 => (caller.clone(), name.clone()).prop_map(|(caller, name)| Op::NsDel { caller, name }),
        3 => (caller.clone(), dev.clone(), local.clone(), prop_oneof![Just(24u8), Just(30), Just(33)], any::<bool>())
            .prop_map(|(caller, dev, local, prefix, alias)| Op::AddrAdd { caller, dev, local, prefix, alias }),
        1 => (caller.clone(), dev.clone(), local.clone())
            .prop_map(|(caller, dev, local)| Op::AddrDel { caller, dev, local }),
        4 => (caller.clone(), dev.clone(), local.clone(), label.clone(), child.clone())
            .prop_map(|(caller, dev, local, label, to)| Op::Push { caller, dev, local, label, to }),
        3 => (caller.clone(), dev.clone(), local.clone(), label.clone(), child.clone())
            .prop_map(|(caller, dev, local, label, from)| Op::Pull { caller, dev, local, label, from }),
        1 => (caller.clone(), 0u8..3, dev.clone()).prop_map(|(caller, net, dev)| Op::RouteAdd { caller, net, dev }),
        1 => (caller.clone(), 0u8..3).prop_map(|(caller, net)| Op::RouteDel { caller, net }),
        3 => (caller.clone(), 0usize..6, 0u16..3).prop_map(|(caller, addr, port)| Op::Bind { caller, addr, port }),
        1 => (caller, 0u32..12).prop_map(|(caller, sock)| Op::Close { caller, sock }),
    ]
}

fn apply(m: &mut Model, op: &Op) -> Result<Changes> {
    let net = |n: u8| Ipv4Prefix::new(Ipv4Addr::new(192, 168, n, 0), 24);
    match *op {
        Op::NsAdd {
            caller,
            name,
            parent,
            shared,
        } => {
            let lb = if shared {
                LoopbackMode::Shared
            } else {
                LoopbackMode::Isolated
            };
            m.ns_add(NsId(caller), NAMES[name], parent.map(|p| NAMES[p]), lb)
                .map(|r| r.1)
        }
        Op::NsAddL2 { caller, name } => m
            .ns_add_l2(NsId(caller), NAMES[name], LoopbackMode::Isolated)
            .map(|r| r.1),
        Op::NsDel { caller, name } => m.ns_del(NsId(caller), NAMES[name]),
        Op::AddrAdd {
            caller,
            dev,
            local: l,
            prefix,
            alias,
        } => {
            let lab = alias.then(|| format!("{}:1", DEVS[dev]));
            m.addr_add(
                NsId(caller),
                DEVS[dev],
                local(l),
                prefix,
                lab.as_deref(),
                None,
                Scope::Global,
            )
        }
        Op::AddrDel {
            caller,
            dev,
            local: l,
        } => m.addr_del(NsId(caller), DEVS[dev], local(l)),
        Op::Push {
            caller,
            dev,
            local: l,
            label: lb,
            to,
        } => m.addr_push(
            NsId(caller),
            DEVS[dev],
            local(l),
            label(dev, lb).as_deref(),
            NAMES[to],
        ),
        Op::Pull {
            caller,
            dev,
            local: l,
            label: lb,
            from,
        } => m.addr_pull(
            NsId(caller),
            DEVS[dev],
            local(l),
            label(dev, lb).as_deref(),
            NAMES[from],
        ),
        Op::RouteAdd {
            caller,
            net: n,
            dev,
        } => m.route_add(
            NsId(caller),
            net(n),
            Some(Ipv4Addr::new(10, 0, 0, 254)),
            DEVS[dev],
            Scope::Global,
        ),
        Op::RouteDel { caller, net: n } => m.route_del(NsId(caller), net(n)),
        Op::Bind { caller, addr, port } => m
            .sock_bind(NsId(caller), Proto::Udp, bind_addr(addr), port, "echo")
            .map(|r| r.1),
        Op::Close { caller, sock } => m.sock_close(NsId(caller), SocketId(sock)),
    }
}

fn bind_addr(i: usize) -> Ipv4Addr {
    [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 0, 0, 255),
        Ipv4Addr::new(192, 0, 2, 1),
        Ipv4Addr::LOCALHOST,
    ][i]
}

/// Every ifaddr has exactly one existing owner, and every namespace sees exactly what it owns
/// plus loopback (R6), computed without the model's indexes.
fn check_views(m: &Model) -> std::result::Result<(), TestCaseError> {
    let mut counted = 0;
    for ns in m.namespaces() {
        let owned: Vec<IfAddr> = m.ifaddrs().filter(|i| i.owner == ns.id).collect();
        counted += owned.len();
        let mut expect = vec![loopback_ifaddr(ns.id)];
        expect.extend(owned);
        prop_assert_eq!(m.addr_show(ns.id, false).unwrap(), expect);
    }
    prop_assert_eq!(
        counted,
        m.ifaddrs().count(),
        "an ifaddr without exactly one owner"
    );
    Ok(())
}

/// The reported changes cover every address whose ifaddrs or owners changed and every
/// namespace whose owned set changed.
fn check_changes(
    before: &Model,
    after: &Model,
    ch: &Changes,
) -> std::result::Result<(), TestCaseError> {
    let b: BTreeMap<_, _> = before
        .ifaddrs()
        .map(|i| ((i.dev, i.local), i.owner))
        .collect();
    let a: BTreeMap<_, _> = after
        .ifaddrs()
        .map(|i| ((i.dev, i.local), i.owner))
        .collect();
    let keys: BTreeSet<_> = b.keys().chain(a.keys()).copied().collect();
    for k in keys {
        let (ob, oa) = (b.get(&k), a.get(&k));
        if ob != oa {
            let fam = after.device(k.0).unwrap().owner;
            prop_assert!(
                ch.addrs.contains(&(fam, k.1)),
                "{:?} changed but not reported",
                k
            );
            for o in [ob, oa].into_iter().flatten() {
                prop_assert!(ch.namespaces.contains(o) || ch.removed_namespaces.contains(o));
            }
            if ob.is_none() || oa.is_none() {
                prop_assert!(ch.routes.contains(&fam));
            }
        }
    }
    for ns in before.namespaces() {
        if after.namespace(ns.id).is_none() {
            prop_assert!(ch.removed_namespaces.contains(&ns.id));
        }
    }
    for s in before.sockets() {
        if after.socket(s.binding.id).is_none() {
            prop_assert!(ch.closed_sockets.contains(&s.binding.id));
        }
    }
    Ok(())
}

fn start() -> Model {
    let mut m = Model::new();
    m.add_device("eth0", [2, 0, 0, 0, 0, 1]).unwrap();
    m.add_device("eth1", [2, 0, 0, 0, 0, 2]).unwrap();
    for i in 1..4 {
        m.addr_add(NsId::ROOT, "eth0", local(i), 24, None, None, Scope::Global)
            .unwrap();
    }
    m.ns_add(NsId::ROOT, "a", None, LoopbackMode::Isolated)
        .unwrap();
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_keep_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut m = start();
        let swap = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(
            l3ns_dataplane::owner_table::OwnerTable::new(),
        ));
        let mut publisher = crate::publish::Publisher::new(&m, swap.clone());
        for op in &ops {
            let before = m.clone();
            let version = swap.load().version();
            let deleted = match op {
                Op::NsDel { name, .. } => m.ns_by_name(NAMES[*name]).map(|n| {
                    (n.id, n.parent, m.owned_by(n.id).map(|i| (i.dev, i.local)).collect::<Vec<_>>())
                }),
                _ => None,
            };
            match apply(&mut m, op) {
                Err(e) => {
                    prop_assert!(!e.message.is_empty());
                    prop_assert!(m == before, "failed {:?} ({}) changed the model", op, e);
                    prop_assert_eq!(swap.load().version(), version, "a failed operation published");
                }
                Ok(ch) => {
                    check_changes(&before, &m, &ch)?;
                    // The incremental publish agrees with the model, as a full build does.
                    publisher.publish(&m, &ch, &[]);
                    if let Err(e) = crate::publish::check_agreement(&m, &swap.load()) {
                        return Err(TestCaseError::fail(format!("snapshot after {op:?}: {e}")));
                    }
                    if let Some((id, parent, owned)) = deleted {
                        // R5: every address of the deleted namespace is now its parent's.
                        prop_assert!(m.namespace(id).is_none());
                        let parent = parent.unwrap();
                        for (dev, l) in owned {
                            prop_assert_eq!(m.ifaddr(dev, l).unwrap().owner, parent);
                        }
                        prop_assert_eq!(m.bindings_of(id).count(), 0);
                    }
                }
            }
            if let Err(e) = m.check_invariants() {
                return Err(TestCaseError::fail(format!("after {op:?}: {e}")));
            }
            check_views(&m)?;
        }
        prop_assert!(crate::publish::check_agreement(&m, &crate::publish::full_build(&m, 1)).is_ok());
        let json = serde_json::to_string(&m).unwrap();
        let back: Model = serde_json::from_str(&json).unwrap();
        prop_assert!(back == m, "serde round trip changed the model");
    }
}

/// Every query of the ifaddr indexes (by device and local, at a local address, on a device,
/// by owner) answers what a filter over the plain list of ifaddrs answers, in the documented
/// order; and compaction changes nothing.
fn check_queries(m: &Model) -> std::result::Result<(), TestCaseError> {
    let all: Vec<IfAddr> = m.ifaddrs().collect();
    prop_assert_eq!(all.len(), m.ifaddr_count());
    let mut keys: Vec<_> = all.iter().map(|i| (i.owner, i.dev, i.local)).collect();
    keys.dedup();
    prop_assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "ifaddrs() by (owner, dev, local)"
    );
    let sorted = |mut v: Vec<IfAddr>, key: fn(&IfAddr) -> (u32, u32)| {
        v.sort_by_key(key);
        v
    };
    for d in 0..3u16 {
        let dev = DevId(d);
        for l in 0..10u8 {
            let a = local(l);
            prop_assert_eq!(
                m.ifaddr(dev, a),
                all.iter().find(|i| i.dev == dev && i.local == a).cloned()
            );
        }
        let on: Vec<IfAddr> = all.iter().filter(|i| i.dev == dev).cloned().collect();
        prop_assert_eq!(
            m.ifaddrs_on(dev).collect::<Vec<_>>(),
            sorted(on, |i| (u32::from(i.local), 0))
        );
    }
    for l in 0..10u8 {
        let a = local(l);
        let at: Vec<IfAddr> = all.iter().filter(|i| i.local == a).cloned().collect();
        prop_assert_eq!(
            m.ifaddrs_at(a).collect::<Vec<_>>(),
            sorted(at, |i| (u32::from(i.dev.0), 0))
        );
    }
    for ns in m.namespaces() {
        let own: Vec<IfAddr> = all.iter().filter(|i| i.owner == ns.id).cloned().collect();
        let own = sorted(own, |i| (u32::from(i.dev.0), u32::from(i.local)));
        prop_assert_eq!(m.owned_count(ns.id), own.len());
        prop_assert_eq!(
            m.owned_local_addrs(ns.id).collect::<Vec<_>>(),
            own.iter().map(LocalAddr::of).collect::<Vec<_>>()
        );
        prop_assert_eq!(m.owned_by(ns.id).collect::<Vec<_>>(), own);
    }
    let mut c = m.clone();
    c.compact();
    prop_assert!(c == *m, "compaction changed the model");
    prop_assert!(c.check_invariants().is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn index_queries_agree_with_a_plain_list(ops in proptest::collection::vec(op(), 1..60)) {
        let mut m = start();
        for op in &ops {
            let _ = apply(&mut m, op);
            check_queries(&m)?;
        }
    }
}

/// `op` through a runtime, as the control thread runs requests: binds get a queue.
fn apply_rt(
    rt: &mut crate::runtime::Runtime,
    op: &Op,
    queues: &mut BTreeMap<SocketId, std::sync::Arc<l3ns_dataplane::socket::SocketQueue>>,
) -> Result<()> {
    match *op {
        Op::Bind { caller, addr, port } => {
            let (id, q) = rt.bind(NsId(caller), bind_addr(addr), port, "echo")?;
            queues.insert(id, q);
            Ok(())
        }
        _ => rt.apply("op", |m| apply(m, op).map(|c| ((), c))),
    }
}

/// What the runtime publishes about sockets agrees with its model: every open socket's
/// queue is attached and open, every closed one's is detached and closed.
fn check_sockets(
    rt: &crate::runtime::Runtime,
    queues: &BTreeMap<SocketId, std::sync::Arc<l3ns_dataplane::socket::SocketQueue>>,
) -> std::result::Result<(), TestCaseError> {
    let t = rt.snapshot();
    for (id, q) in queues {
        let attached = t.socket_queue(*id);
        if rt.model().socket(*id).is_some() {
            prop_assert!(attached.is_some_and(|a| std::sync::Arc::ptr_eq(a, q)));
            prop_assert!(rt.queue(*id).is_some_and(|r| std::sync::Arc::ptr_eq(r, q)));
            prop_assert!(!q.is_closed(), "open socket {:?} has a closed queue", id);
        } else {
            prop_assert!(attached.is_none(), "closed socket {:?} still attached", id);
            prop_assert!(rt.queue(*id).is_none());
            prop_assert!(q.is_closed(), "closed socket {:?} has an open queue", id);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The same operations applied in batches (cut at random; binds and closes of the same
    /// socket in one batch included) and published once per batch give, at each batch's
    /// end, the snapshot per-operation publishing gives, and it agrees with the model.
    #[test]
    fn batched_publish_equals_per_operation_publish(
        ops in proptest::collection::vec(op(), 1..60),
        cuts in proptest::collection::vec(proptest::bool::weighted(0.2), 60),
        close_again in proptest::collection::vec(proptest::bool::weighted(0.3), 60),
    ) {
        use crate::runtime::Runtime;
        let ports = || vec!["eth0".to_string(), "eth1".to_string()];
        let mut seq = Runtime::new(start(), 1, ports(), 64);
        let mut bat = Runtime::new(start(), 1, ports(), 64);
        let (mut seq_q, mut bat_q) = (BTreeMap::new(), BTreeMap::new());
        prop_assert!(seq.snapshot().content_diff(&bat.snapshot()).is_none());
        bat.begin_batch();
        let mut published = bat.version();
        for (i, op) in ops.iter().enumerate() {
            let a = apply_rt(&mut seq, op, &mut seq_q);
            let b = apply_rt(&mut bat, op, &mut bat_q);
            prop_assert_eq!(a.is_ok(), b.is_ok(), "{:?}: {:?} / {:?}", op, a, b);
            if let (Op::Bind { caller, .. }, Ok(()), true) = (op, &b, close_again[i]) {
                // Bound and closed in the same batch (when no cut falls in between).
                let id = *bat_q.keys().next_back().unwrap();
                seq.close(NsId(*caller), id).unwrap();
                bat.close(NsId(*caller), id).unwrap();
            }
            prop_assert!(seq.model() == bat.model());
            prop_assert_eq!(bat.version(), published, "published inside the batch");
            if cuts[i] || i + 1 == ops.len() {
                bat.end_batch();
                prop_assert!(!bat.in_batch());
                if let Err(e) = crate::publish::check_agreement(bat.model(), &bat.snapshot()) {
                    return Err(TestCaseError::fail(format!("batch ending with {op:?}: {e}")));
                }
                if let Some(d) = seq.snapshot().content_diff(&bat.snapshot()) {
                    return Err(TestCaseError::fail(format!("batch ending with {op:?}: {d}")));
                }
                check_sockets(&seq, &seq_q)?;
                check_sockets(&bat, &bat_q)?;
                published = bat.version();
                bat.begin_batch();
            }
        }
        bat.end_batch();
    }
}
