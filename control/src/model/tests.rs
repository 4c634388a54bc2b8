//! One test per rule (R1–R7) of SEMANTICS.md, every errno case of the control model.

use super::*;
use l3ns_dataplane::errno::Errno;

const ROOT: NsId = NsId::ROOT;

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn errno<T: std::fmt::Debug>(r: Result<T>) -> Errno {
    r.expect_err("the operation should have failed").errno
}

/// Applies `op` to a clone, asserts it fails with `e` and leaves the model unchanged.
fn fails<T: std::fmt::Debug>(m: &mut Model, e: Errno, op: impl FnOnce(&mut Model) -> Result<T>) {
    let before = m.clone();
    let err = op(m).expect_err("the operation should have failed");
    assert_eq!(err.errno, e, "{err}");
    assert!(!err.message.is_empty() && !err.message.contains('\n'));
    assert_eq!(*m, before, "a failed operation changed the model");
}

/// root with eth0 (10.0.0.1-3/24, root-owned), eth1, and L3 children web1 and web2.
fn setup() -> (Model, NsId, NsId) {
    let mut m = Model::new();
    m.add_device("eth0", [2, 0, 0, 0, 0, 1]).unwrap();
    m.add_device("eth1", [2, 0, 0, 0, 0, 2]).unwrap();
    for i in 1..=3 {
        m.addr_add(ROOT, "eth0", ip(10, 0, 0, i), 24, None, None, Scope::Global)
            .unwrap();
    }
    let (w1, _) = m
        .ns_add(ROOT, "web1", None, LoopbackMode::Isolated)
        .unwrap();
    let (w2, _) = m
        .ns_add(ROOT, "web2", Some("root"), LoopbackMode::Shared)
        .unwrap();
    m.check_invariants().unwrap();
    (m, w1, w2)
}

fn locals(v: &[IfAddr]) -> Vec<Ipv4Addr> {
    v.iter().map(|i| i.local).collect()
}

#[test]
fn r01_levels_and_names() {
    let mut m = Model::new();
    let root = m.namespace(ROOT).unwrap();
    assert_eq!(
        (&*root.name, root.level, root.parent, root.net_admin),
        ("root", Level::L2, None, true)
    );
    let (web1, ch) = m
        .ns_add(ROOT, "web1", None, LoopbackMode::Isolated)
        .unwrap();
    assert_eq!(ch.namespaces, vec![web1]);
    let w = m.namespace(web1).unwrap();
    assert_eq!(
        (w.level, w.parent, w.net_admin),
        (Level::L3, Some(ROOT), false)
    );
    assert_eq!(m.ns_id("web1").unwrap(), web1);
    // An L3 namespace never creates a namespace, with or without a parent given.
    fails(&mut m, Errno::EPERM, |m| {
        m.ns_add(web1, "x", None, LoopbackMode::Isolated)
    });
    fails(&mut m, Errno::EPERM, |m| {
        m.ns_add(web1, "x", Some("root"), LoopbackMode::Isolated)
    });
    // An L3 parent is refused even for root.
    fails(&mut m, Errno::EPERM, |m| {
        m.ns_add(ROOT, "x", Some("web1"), LoopbackMode::Isolated)
    });
    let err = m
        .ns_add(web1, "x", None, LoopbackMode::Isolated)
        .unwrap_err();
    assert!(
        err.message.contains("web1") && err.message.contains("(R1)"),
        "{err}"
    );
    assert!(err.to_string().starts_with("EPERM: "));
    // Names.
    fails(&mut m, Errno::EEXIST, |m| {
        m.ns_add(ROOT, "web1", None, LoopbackMode::Isolated)
    });
    fails(&mut m, Errno::EEXIST, |m| {
        m.ns_add(ROOT, "root", None, LoopbackMode::Isolated)
    });
    let long = "a".repeat(33);
    for bad in ["", "Web", "-x", "_x", "a b", "a.b", "é", long.as_str()] {
        fails(&mut m, Errno::EINVAL, |m| {
            m.ns_add(ROOT, bad, None, LoopbackMode::Isolated)
        });
    }
    for good in ["a", "0day", "a_b-c", &"z".repeat(32)] {
        m.ns_add(ROOT, good, None, LoopbackMode::Isolated).unwrap();
    }
    fails(&mut m, Errno::ENOENT, |m| {
        m.ns_add(ROOT, "y", Some("nope"), LoopbackMode::Isolated)
    });
    fails(&mut m, Errno::ENOENT, |m| {
        m.ns_add(NsId(999), "y", None, LoopbackMode::Isolated)
    });
    assert_eq!(errno(m.ns_id("nope")), Errno::ENOENT);
    // Nested L2 (the forward-compatible path): only root creates it; it may create L3
    // children, and so may root under it (an ancestor), but not a sibling L2.
    let (lab, ch) = m.ns_add_l2(ROOT, "lab", LoopbackMode::Isolated).unwrap();
    assert_eq!(ch.routes, vec![lab]);
    let l = m.namespace(lab).unwrap();
    assert_eq!(
        (l.level, l.parent, l.net_admin),
        (Level::L2, Some(ROOT), true)
    );
    fails(&mut m, Errno::EPERM, |m| {
        m.ns_add_l2(lab, "lab2", LoopbackMode::Isolated)
    });
    fails(&mut m, Errno::EPERM, |m| {
        m.ns_add_l2(web1, "lab2", LoopbackMode::Isolated)
    });
    let (t1, _) = m.ns_add(lab, "t1", None, LoopbackMode::Isolated).unwrap();
    let (t2, _) = m
        .ns_add(ROOT, "t2", Some("lab"), LoopbackMode::Isolated)
        .unwrap();
    assert_eq!(m.family_of(t1), Some(lab));
    assert_eq!(m.family_of(t2), Some(lab));
    fails(&mut m, Errno::EPERM, |m| {
        m.ns_add(lab, "t3", Some("root"), LoopbackMode::Isolated)
    });
    // Listing: an L3 identity sees only itself; an L2 itself and its descendants.
    let names = |v: Vec<&Namespace>| {
        v.into_iter()
            .map(|n| n.name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(m.ns_list(web1).unwrap()), vec!["web1"]);
    assert_eq!(names(m.ns_list(lab).unwrap()), vec!["lab", "t1", "t2"]);
    assert_eq!(m.ns_list(ROOT).unwrap().len(), m.namespaces().count());
    // Info follows the same visibility.
    let info = m.ns_info(ROOT, "lab").unwrap();
    assert_eq!(info.children, vec!["t1", "t2"]);
    assert_eq!(info.parent.as_deref(), Some("root"));
    assert_eq!(errno(m.ns_info(web1, "root")), Errno::ENOENT);
    assert_eq!(errno(m.ns_info(lab, "web1")), Errno::ENOENT);
    assert_eq!(m.ns_info(web1, "web1").unwrap().level, Level::L3);
    m.check_invariants().unwrap();
}

#[test]
fn r02_shared_devices_and_routes() {
    let (mut m, web1, _) = setup();
    // Devices: EEXIST on duplicates, lo always there, names validated.
    assert_eq!(errno(m.add_device("eth0", [0; 6])), Errno::EEXIST);
    assert_eq!(errno(m.add_device("lo", [0; 6])), Errno::EEXIST);
    assert_eq!(errno(m.add_device("a/b", [0; 6])), Errno::EINVAL);
    assert_eq!(errno(m.add_device("", [0; 6])), Errno::EINVAL);
    let devs = |m: &Model, ns| {
        m.dev_list(ns)
            .unwrap()
            .iter()
            .map(|d| d.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(devs(&m, ROOT), vec!["lo", "eth0", "eth1"]);
    // An L3 child sees and resolves its parent's devices (net_ns_l2()).
    assert_eq!(devs(&m, web1), devs(&m, ROOT));
    assert_eq!(
        m.resolve_dev(web1, "eth1").unwrap(),
        m.resolve_dev(ROOT, "eth1").unwrap()
    );
    assert_eq!(m.resolve_dev(web1, "lo").unwrap(), DevId::LO);
    assert_eq!(errno(m.resolve_dev(web1, "eth9")), Errno::ENODEV);
    // A nested L2 has its own (empty) device set and routes.
    let (lab, _) = m.ns_add_l2(ROOT, "lab", LoopbackMode::Isolated).unwrap();
    assert_eq!(devs(&m, lab), vec!["lo"]);
    assert_eq!(errno(m.resolve_dev(lab, "eth0")), Errno::ENODEV);

    // Routes: only an L2 with NET_ADMIN.
    let default = Ipv4Prefix::new(ip(0, 0, 0, 0), 0);
    let ch = m
        .route_add(
            ROOT,
            default,
            Some(ip(10, 0, 0, 254)),
            "eth0",
            Scope::Global,
        )
        .unwrap();
    assert_eq!(ch.routes, vec![ROOT]);
    fails(&mut m, Errno::EPERM, |m| {
        m.route_add(
            web1,
            Ipv4Prefix::new(ip(192, 168, 0, 0), 16),
            None,
            "eth0",
            Scope::Global,
        )
    });
    fails(&mut m, Errno::EPERM, |m| m.route_del(web1, default));
    fails(&mut m, Errno::EEXIST, |m| {
        m.route_add(ROOT, default, None, "eth1", Scope::Global)
    });
    fails(&mut m, Errno::ENODEV, |m| {
        m.route_add(
            ROOT,
            Ipv4Prefix::new(ip(192, 168, 0, 0), 16),
            None,
            "eth9",
            Scope::Global,
        )
    });
    fails(&mut m, Errno::EINVAL, |m| {
        m.route_add(
            ROOT,
            Ipv4Prefix::new(ip(192, 168, 0, 1), 16),
            None,
            "eth0",
            Scope::Global,
        )
    });
    fails(&mut m, Errno::EINVAL, |m| {
        m.route_add(
            ROOT,
            Ipv4Prefix {
                addr: ip(0, 0, 0, 0),
                len: 33,
            },
            None,
            "eth0",
            Scope::Global,
        )
    });
    fails(&mut m, Errno::EINVAL, |m| {
        m.route_add(
            ROOT,
            Ipv4Prefix::new(ip(192, 168, 0, 0), 16),
            Some(ip(224, 0, 0, 1)),
            "eth0",
            Scope::Global,
        )
    });
    fails(&mut m, Errno::ENOENT, |m| {
        m.route_del(ROOT, Ipv4Prefix::new(ip(192, 168, 0, 0), 16))
    });
    // An L3 caller lists its parent's routes; the nested L2 has its own (none).
    assert_eq!(m.route_list(web1).unwrap(), m.route_list(ROOT).unwrap());
    assert_eq!(m.route_list(ROOT).unwrap().len(), 1);
    assert!(m.route_list(lab).unwrap().is_empty());
    // Family routes: explicit first, then the connected route of every ifaddr (deduplicated),
    // whoever owns it.
    m.addr_push(ROOT, "eth0", ip(10, 0, 0, 2), None, "web1")
        .unwrap();
    let fam = m.routes_for_family(ROOT);
    assert_eq!(fam.len(), 2);
    assert_eq!(fam[0].dst, default);
    assert_eq!(
        fam[1],
        Route {
            dst: Ipv4Prefix::new(ip(10, 0, 0, 0), 24),
            gateway: None,
            dev: m.resolve_dev(ROOT, "eth0").unwrap(),
            scope: Scope::Link
        }
    );
    let owned: Vec<IfAddr> = m.owned_by(web1).collect();
    let choice = rules::select_source(&owned, &fam, ip(8, 8, 8, 8)).unwrap();
    assert_eq!(choice.src, ip(10, 0, 0, 2));
    let ch = m.route_del(ROOT, default).unwrap();
    assert_eq!(ch.routes, vec![ROOT]);
    assert!(m.route_list(ROOT).unwrap().is_empty());
    m.check_invariants().unwrap();
}

#[test]
fn r03_address_creation() {
    let (mut m, web1, _) = setup();
    let eth0 = m.resolve_dev(ROOT, "eth0").unwrap();
    let ch = m
        .addr_add(
            ROOT,
            "eth0",
            ip(192, 168, 5, 9),
            22,
            Some("eth0:web"),
            None,
            Scope::Global,
        )
        .unwrap();
    assert_eq!(ch.addrs, vec![(ROOT, ip(192, 168, 5, 9))]);
    assert_eq!(ch.namespaces, vec![ROOT]);
    assert_eq!(ch.routes, vec![ROOT]);
    let ifa = m.ifaddr(eth0, ip(192, 168, 5, 9)).unwrap().clone();
    assert_eq!(&*ifa.label, "eth0:web");
    assert_eq!(ifa.broadcast, ip(192, 168, 7, 255));
    assert_eq!(ifa.owner, ROOT);
    // Label defaults to the device name; an explicit broadcast is kept.
    m.addr_add(
        ROOT,
        "eth1",
        ip(172, 16, 0, 1),
        16,
        None,
        Some(ip(172, 16, 0, 255)),
        Scope::Link,
    )
    .unwrap();
    let ifa = m.addr_by_local(ROOT, ip(172, 16, 0, 1)).unwrap();
    assert_eq!(
        (&*ifa.label, ifa.broadcast, ifa.scope),
        ("eth1", ip(172, 16, 0, 255), Scope::Link)
    );
    // The same local on another device is a different ifaddr.
    m.addr_add(ROOT, "eth1", ip(10, 0, 0, 1), 24, None, None, Scope::Global)
        .unwrap();
    assert_eq!(m.ifaddrs_at(ip(10, 0, 0, 1)).count(), 2);
    // Errors.
    let add = |m: &mut Model, who, dev: &str, a, p, label: Option<&str>| {
        m.addr_add(who, dev, a, p, label, None, Scope::Global)
    };
    fails(&mut m, Errno::EPERM, |m| {
        add(m, web1, "eth0", ip(10, 9, 9, 9), 24, None)
    });
    fails(&mut m, Errno::EEXIST, |m| {
        add(m, ROOT, "eth0", ip(10, 0, 0, 1), 24, None)
    });
    fails(&mut m, Errno::ENODEV, |m| {
        add(m, ROOT, "eth7", ip(10, 9, 9, 9), 24, None)
    });
    fails(&mut m, Errno::EINVAL, |m| {
        add(m, ROOT, "lo", ip(10, 9, 9, 9), 24, None)
    });
    fails(&mut m, Errno::EINVAL, |m| {
        add(m, ROOT, "eth0", ip(10, 9, 9, 9), 33, None)
    });
    for bad in [
        ip(0, 0, 0, 0),
        ip(255, 255, 255, 255),
        ip(127, 0, 0, 2),
        ip(224, 0, 0, 1),
    ] {
        fails(&mut m, Errno::EINVAL, |m| {
            add(m, ROOT, "eth0", bad, 24, None)
        });
    }
    for bad in ["eth1", "eth0:", "eth0x", "eth0:a b", "eth0:a:b", "other:1"] {
        fails(&mut m, Errno::EINVAL, |m| {
            add(m, ROOT, "eth0", ip(10, 9, 9, 9), 24, Some(bad))
        });
    }
    // A nested L2 has no devices of its own: its device names do not resolve.
    let (lab, _) = m.ns_add_l2(ROOT, "lab", LoopbackMode::Isolated).unwrap();
    fails(&mut m, Errno::ENODEV, |m| {
        add(m, lab, "eth0", ip(10, 9, 9, 9), 24, None)
    });
    // Deleting: only what the caller owns.
    fails(&mut m, Errno::EPERM, |m| {
        m.addr_del(web1, "eth0", ip(10, 0, 0, 1))
    });
    fails(&mut m, Errno::EADDRNOTAVAIL, |m| {
        m.addr_del(ROOT, "eth0", ip(10, 9, 9, 9))
    });
    fails(&mut m, Errno::ENODEV, |m| {
        m.addr_del(ROOT, "eth7", ip(10, 0, 0, 1))
    });
    m.addr_push(ROOT, "eth0", ip(10, 0, 0, 1), None, "web1")
        .unwrap();
    let err = m.addr_del(ROOT, "eth0", ip(10, 0, 0, 1)).unwrap_err();
    assert_eq!(err.errno, Errno::EADDRNOTAVAIL);
    assert!(err.message.contains("pull it back first"), "{err}");
    m.addr_pull(ROOT, "eth0", ip(10, 0, 0, 1), None, "web1")
        .unwrap();
    let ch = m.addr_del(ROOT, "eth0", ip(10, 0, 0, 1)).unwrap();
    assert_eq!(
        (ch.addrs, ch.routes),
        (vec![(ROOT, ip(10, 0, 0, 1))], vec![ROOT])
    );
    assert!(m.ifaddr(eth0, ip(10, 0, 0, 1)).is_none());
    m.check_invariants().unwrap();
}

#[test]
fn r04_push_pull_errors() {
    let (mut m, web1, web2) = setup();
    let a = ip(10, 0, 0, 2);
    // The address moves: the parent no longer owns it.
    let ch = m.addr_push(ROOT, "eth0", a, Some("eth0"), "web1").unwrap();
    assert_eq!(ch.addrs, vec![(ROOT, a)]);
    assert_eq!(ch.namespaces, vec![ROOT, web1]);
    assert!(ch.routes.is_empty());
    assert_eq!(locals(&m.owned_by(web1).collect::<Vec<_>>()), vec![a]);
    assert!(m.owned_by(ROOT).all(|i| i.local != a));
    // An L3 namespace may own several addresses.
    m.addr_push(ROOT, "eth0", ip(10, 0, 0, 3), None, "web1")
        .unwrap();
    assert_eq!(m.owned_by(web1).count(), 2);

    // EPERM: L3 caller, target not the caller's child (itself, a sibling's, a nested L2).
    fails(&mut m, Errno::EPERM, |m| {
        m.addr_push(web1, "eth0", a, None, "web2")
    });
    fails(&mut m, Errno::EPERM, |m| {
        m.addr_pull(web1, "eth0", a, None, "web1")
    });
    fails(&mut m, Errno::EPERM, |m| {
        m.addr_push(ROOT, "eth0", ip(10, 0, 0, 1), None, "root")
    });
    let (lab, _) = m.ns_add_l2(ROOT, "lab", LoopbackMode::Isolated).unwrap();
    let (_t1, _) = m.ns_add(lab, "t1", None, LoopbackMode::Isolated).unwrap();
    fails(&mut m, Errno::EPERM, |m| {
        m.addr_push(ROOT, "eth0", ip(10, 0, 0, 1), None, "lab")
    });
    fails(&mut m, Errno::EPERM, |m| {
        m.addr_push(ROOT, "eth0", ip(10, 0, 0, 1), None, "t1")
    });
    fails(&mut m, Errno::EPERM, |m| {
        m.addr_pull(lab, "eth0", a, None, "web1")
    });
    // ENOENT: unknown namespace.
    fails(&mut m, Errno::ENOENT, |m| {
        m.addr_push(ROOT, "eth0", ip(10, 0, 0, 1), None, "ghost")
    });
    fails(&mut m, Errno::ENOENT, |m| {
        m.addr_pull(ROOT, "eth0", a, None, "ghost")
    });
    // ENODEV: unknown device.
    fails(&mut m, Errno::ENODEV, |m| {
        m.addr_push(ROOT, "eth9", ip(10, 0, 0, 1), None, "web2")
    });
    fails(&mut m, Errno::ENODEV, |m| {
        m.addr_pull(ROOT, "eth9", a, None, "web1")
    });
    // EADDRNOTAVAIL: not owned by the caller (push) / the child (pull), or wrong label.
    fails(&mut m, Errno::EADDRNOTAVAIL, |m| {
        m.addr_push(ROOT, "eth0", a, None, "web2")
    });
    fails(&mut m, Errno::EADDRNOTAVAIL, |m| {
        m.addr_push(ROOT, "eth0", ip(10, 0, 0, 99), None, "web2")
    });
    fails(&mut m, Errno::EADDRNOTAVAIL, |m| {
        m.addr_push(ROOT, "eth1", ip(10, 0, 0, 1), None, "web2")
    });
    fails(&mut m, Errno::EADDRNOTAVAIL, |m| {
        m.addr_pull(ROOT, "eth0", a, None, "web2")
    });
    fails(&mut m, Errno::EADDRNOTAVAIL, |m| {
        m.addr_pull(ROOT, "eth0", ip(10, 0, 0, 1), None, "web2")
    });
    fails(&mut m, Errno::EADDRNOTAVAIL, |m| {
        m.addr_pull(ROOT, "eth0", a, Some("eth0:x"), "web1")
    });
    // EINVAL: malformed label, or the implicit loopback address.
    fails(&mut m, Errno::EINVAL, |m| {
        m.addr_pull(ROOT, "eth0", a, Some("eth1:x"), "web1")
    });
    fails(&mut m, Errno::EINVAL, |m| {
        m.addr_push(ROOT, "lo", Ipv4Addr::LOCALHOST, None, "web2")
    });
    // An L2 without NET_ADMIN cannot exist in this version; an unknown caller is ENOENT.
    fails(&mut m, Errno::ENOENT, |m| {
        m.addr_push(NsId(999), "eth0", a, None, "web1")
    });
    // Pull it back, then push to the other child.
    let ch = m.addr_pull(ROOT, "eth0", a, Some("eth0"), "web1").unwrap();
    assert_eq!(ch.namespaces, vec![web1, ROOT]);
    m.addr_push(ROOT, "eth0", a, None, "web2").unwrap();
    assert_eq!(m.ifaddrs_at(a).next().unwrap().owner, web2);
    m.check_invariants().unwrap();
}

#[test]
fn r05_death() {
    let (mut m, web1, web2) = setup();
    m.addr_push(ROOT, "eth0", ip(10, 0, 0, 2), None, "web1")
        .unwrap();
    m.addr_push(ROOT, "eth0", ip(10, 0, 0, 3), None, "web1")
        .unwrap();
    let (s1, _) = m
        .sock_bind(web1, Proto::Udp, ip(0, 0, 0, 0), 53, "echo")
        .unwrap();
    let (s2, _) = m
        .sock_bind(web1, Proto::Udp, ip(10, 0, 0, 2), 54, "sink")
        .unwrap();
    let (s3, _) = m
        .sock_bind(web2, Proto::Udp, ip(0, 0, 0, 0), 53, "echo")
        .unwrap();
    // Errors first.
    fails(&mut m, Errno::EPERM, |m| m.ns_del(ROOT, "root"));
    fails(&mut m, Errno::ENOENT, |m| m.ns_del(ROOT, "ghost"));
    fails(&mut m, Errno::EPERM, |m| m.ns_del(web2, "web1"));
    fails(&mut m, Errno::EPERM, |m| m.ns_del(web1, "web1"));
    let (lab, _) = m.ns_add_l2(ROOT, "lab", LoopbackMode::Isolated).unwrap();
    let (t1, _) = m.ns_add(lab, "t1", None, LoopbackMode::Isolated).unwrap();
    fails(&mut m, Errno::EBUSY, |m| m.ns_del(ROOT, "lab"));
    fails(&mut m, Errno::EPERM, |m| m.ns_del(lab, "web1"));
    // Delete: addresses return to the parent, sockets close.
    let ch = m.ns_del(ROOT, "web1").unwrap();
    assert_eq!(ch.removed_namespaces, vec![web1]);
    assert_eq!(ch.namespaces, vec![ROOT]);
    assert_eq!(
        ch.addrs,
        vec![(ROOT, ip(10, 0, 0, 2)), (ROOT, ip(10, 0, 0, 3))]
    );
    let mut closed = ch.closed_sockets.clone();
    closed.sort();
    assert_eq!(closed, vec![s1, s2]);
    assert!(m.namespace(web1).is_none() && m.ns_by_name("web1").is_none());
    assert_eq!(m.owned_by(ROOT).count(), 3);
    assert!(m.socket(s1).is_none() && m.socket(s2).is_none() && m.socket(s3).is_some());
    // The name is free again.
    m.ns_add(ROOT, "web1", None, LoopbackMode::Isolated)
        .unwrap();
    // Children first, then the nested L2 (an ancestor may delete a grandchild).
    m.ns_del(ROOT, "t1").unwrap();
    assert!(m.namespace(t1).is_none());
    let ch = m.ns_del(ROOT, "lab").unwrap();
    assert_eq!((ch.removed_namespaces, ch.routes), (vec![lab], vec![lab]));
    m.check_invariants().unwrap();
}

#[test]
fn r06_visibility() {
    let (mut m, web1, web2) = setup();
    m.addr_add(
        ROOT,
        "eth0",
        ip(10, 0, 0, 7),
        24,
        Some("eth0:web"),
        None,
        Scope::Global,
    )
    .unwrap();
    m.addr_push(ROOT, "eth0", ip(10, 0, 0, 7), Some("eth0:web"), "web1")
        .unwrap();
    m.addr_push(ROOT, "eth0", ip(10, 0, 0, 2), None, "web2")
        .unwrap();
    let lo = loopback_ifaddr(web1);
    assert_eq!(
        m.addr_show(web1, false).unwrap(),
        vec![lo.clone(), m.addr_by_local(web1, ip(10, 0, 0, 7)).unwrap()]
    );
    assert_eq!(
        locals(&m.addr_show(web2, false).unwrap()),
        vec![Ipv4Addr::LOCALHOST, ip(10, 0, 0, 2)]
    );
    assert_eq!(
        locals(&m.addr_show(ROOT, false).unwrap()),
        vec![Ipv4Addr::LOCALHOST, ip(10, 0, 0, 1), ip(10, 0, 0, 3)]
    );
    // An empty namespace still sees loopback.
    let (e, _) = m
        .ns_add(ROOT, "empty", None, LoopbackMode::Isolated)
        .unwrap();
    assert_eq!(m.addr_show(e, false).unwrap(), vec![loopback_ifaddr(e)]);
    // --all: L2 only, shows descendants' ifaddrs with their owners.
    assert_eq!(errno(m.addr_show(web1, true)), Errno::EPERM);
    let all = m.addr_show(ROOT, true).unwrap();
    assert_eq!(all.len(), 1 + 4);
    assert!(all
        .iter()
        .any(|i| i.local == ip(10, 0, 0, 7) && i.owner == web1));
    assert!(all
        .iter()
        .any(|i| i.local == ip(10, 0, 0, 2) && i.owner == web2));
    // Lookups find only what the caller sees.
    assert_eq!(
        m.addr_by_label(web1, "eth0:web").unwrap().local,
        ip(10, 0, 0, 7)
    );
    assert_eq!(m.addr_by_label(web1, "lo").unwrap(), lo);
    assert_eq!(
        errno(m.addr_by_label(ROOT, "eth0:web")),
        Errno::EADDRNOTAVAIL
    );
    assert_eq!(
        errno(m.addr_by_label(web2, "eth0:web")),
        Errno::EADDRNOTAVAIL
    );
    assert_eq!(errno(m.addr_by_label(web2, "eth5:x")), Errno::ENODEV);
    assert_eq!(
        m.addr_by_label(web2, "eth0").unwrap().local,
        ip(10, 0, 0, 2)
    );
    assert_eq!(
        errno(m.addr_by_local(web2, ip(10, 0, 0, 7))),
        Errno::EADDRNOTAVAIL
    );
    assert_eq!(
        errno(m.addr_by_local(ROOT, ip(10, 0, 0, 7))),
        Errno::EADDRNOTAVAIL
    );
    assert_eq!(
        m.addr_by_local(web2, Ipv4Addr::LOCALHOST).unwrap(),
        loopback_ifaddr(web2)
    );
    assert_eq!(errno(m.addr_show(NsId(999), false)), Errno::ENOENT);
}

#[test]
fn r07_bind_rules() {
    let (mut m, web1, web2) = setup();
    m.addr_push(ROOT, "eth0", ip(10, 0, 0, 2), None, "web1")
        .unwrap();
    let any = ip(0, 0, 0, 0);
    // Two namespaces binding 0.0.0.0:53 both succeed; the same one twice is EADDRINUSE.
    let (s1, ch) = m.sock_bind(web1, Proto::Udp, any, 53, "echo").unwrap();
    assert_eq!(ch.namespaces, vec![web1]);
    let (s2, _) = m.sock_bind(web2, Proto::Udp, any, 53, "echo").unwrap();
    m.sock_bind(ROOT, Proto::Udp, any, 53, "sink").unwrap();
    assert_ne!(s1, s2);
    fails(&mut m, Errno::EADDRINUSE, |m| {
        m.sock_bind(web1, Proto::Udp, any, 53, "echo")
    });
    // Wildcard + specific on the same port, either order: EADDRINUSE.
    fails(&mut m, Errno::EADDRINUSE, |m| {
        m.sock_bind(web1, Proto::Udp, ip(10, 0, 0, 2), 53, "echo")
    });
    m.sock_bind(web1, Proto::Udp, ip(10, 0, 0, 2), 80, "echo")
        .unwrap();
    fails(&mut m, Errno::EADDRINUSE, |m| {
        m.sock_bind(web1, Proto::Udp, ip(10, 0, 0, 2), 80, "echo")
    });
    fails(&mut m, Errno::EADDRINUSE, |m| {
        m.sock_bind(web1, Proto::Udp, any, 80, "echo")
    });
    // Two specific addresses on one port are fine (loopback and the owned address).
    m.sock_bind(web1, Proto::Udp, Ipv4Addr::LOCALHOST, 80, "sink")
        .unwrap();
    // Both namespaces can bind 127.0.0.1:port (R11).
    m.sock_bind(web2, Proto::Udp, Ipv4Addr::LOCALHOST, 80, "sink")
        .unwrap();
    // Another namespace's address: EADDRNOTAVAIL, even for the parent after a push.
    fails(&mut m, Errno::EADDRNOTAVAIL, |m| {
        m.sock_bind(web2, Proto::Udp, ip(10, 0, 0, 2), 9, "echo")
    });
    fails(&mut m, Errno::EADDRNOTAVAIL, |m| {
        m.sock_bind(ROOT, Proto::Udp, ip(10, 0, 0, 2), 9, "echo")
    });
    fails(&mut m, Errno::EADDRNOTAVAIL, |m| {
        m.sock_bind(web1, Proto::Udp, ip(192, 0, 2, 1), 9, "echo")
    });
    // Subnet network and directed broadcast of an owned ifaddr, multicast, limited broadcast.
    for a in [
        ip(10, 0, 0, 0),
        ip(10, 0, 0, 255),
        ip(224, 0, 0, 251),
        ip(255, 255, 255, 255),
    ] {
        m.sock_bind(web1, Proto::Udp, a, 67, "sink").unwrap();
    }
    // Port 0 and unknown services: EINVAL; unknown caller: ENOENT.
    fails(&mut m, Errno::EINVAL, |m| {
        m.sock_bind(web1, Proto::Udp, any, 0, "echo")
    });
    fails(&mut m, Errno::EINVAL, |m| {
        m.sock_bind(web1, Proto::Udp, any, 7, "telnet")
    });
    fails(&mut m, Errno::EINVAL, |m| {
        m.sock_bind(web1, Proto::Udp, any, 7, "attach:")
    });
    m.sock_bind(web1, Proto::Udp, any, 7, "attach:/run/app.sock")
        .unwrap();
    fails(&mut m, Errno::ENOENT, |m| {
        m.sock_bind(NsId(999), Proto::Udp, any, 7, "echo")
    });
    // Listing and closing.
    assert!(m
        .sock_list(web2)
        .unwrap()
        .iter()
        .all(|s| s.binding.ns == web2));
    assert_eq!(m.sock_list(ROOT).unwrap().len(), m.sockets().count());
    fails(&mut m, Errno::ENOENT, |m| m.sock_close(web2, s1));
    fails(&mut m, Errno::ENOENT, |m| {
        m.sock_close(web1, SocketId(9999))
    });
    let ch = m.sock_close(web1, s1).unwrap();
    assert_eq!((ch.closed_sockets, ch.namespaces), (vec![s1], vec![web1]));
    m.sock_bind(web1, Proto::Udp, any, 53, "echo").unwrap();
    m.sock_close(ROOT, s2).unwrap(); // an L2 closes its descendants' sockets
    assert!(m.socket(s2).is_none());
    m.check_invariants().unwrap();
}

#[test]
fn changes_merge_and_serde_round_trip() {
    let (mut m, _, _) = setup();
    let mut all = Changes::default();
    assert!(all.is_empty());
    all.merge(
        m.addr_push(ROOT, "eth0", ip(10, 0, 0, 2), None, "web1")
            .unwrap(),
    );
    all.merge(
        m.addr_push(ROOT, "eth0", ip(10, 0, 0, 3), None, "web1")
            .unwrap(),
    );
    m.route_add(
        ROOT,
        Ipv4Prefix::new(ip(0, 0, 0, 0), 0),
        Some(ip(10, 0, 0, 254)),
        "eth0",
        Scope::Global,
    )
    .unwrap();
    m.sock_bind(NsId(1), Proto::Udp, ip(0, 0, 0, 0), 53, "echo")
        .unwrap();
    assert_eq!(all.namespaces.len(), 2);
    assert_eq!(all.addrs.len(), 2);
    let json = serde_json::to_string(&m).unwrap();
    let back: Model = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    // A corrupted state is refused on load.
    let bad = json.replace("\"owner\":1", "\"owner\":77");
    assert!(serde_json::from_str::<Model>(&bad).is_err());
}

#[test]
fn push_pull_at_100k_addresses() {
    let mut m = Model::new();
    m.add_device("eth0", [2, 0, 0, 0, 0, 1]).unwrap();
    let (web1, _) = m
        .ns_add(ROOT, "web1", None, LoopbackMode::Isolated)
        .unwrap();
    for i in 0..100_000u32 {
        let a = Ipv4Addr::from(0x0a00_0000 + 1 + i);
        m.addr_add(ROOT, "eth0", a, 8, None, None, Scope::Global)
            .unwrap();
    }
    for i in (0..100_000u32).step_by(2) {
        let a = Ipv4Addr::from(0x0a00_0000 + 1 + i);
        m.addr_push(ROOT, "eth0", a, None, "web1").unwrap();
    }
    assert_eq!(m.owned_by(web1).count(), 50_000);
    assert_eq!(m.ns_info(ROOT, "web1").unwrap().addresses, 50_000);
    m.ns_del(ROOT, "web1").unwrap();
    assert_eq!(m.owned_by(ROOT).count(), 100_000);
}

#[test]
fn changes_append_then_dedup_equals_merge() {
    let (mut m, _, _) = setup();
    let ops: Vec<Changes> = vec![
        m.addr_push(ROOT, "eth0", ip(10, 0, 0, 2), None, "web1")
            .unwrap(),
        m.addr_pull(ROOT, "eth0", ip(10, 0, 0, 2), None, "web1")
            .unwrap(),
        m.addr_push(ROOT, "eth0", ip(10, 0, 0, 3), None, "web1")
            .unwrap(),
        m.addr_push(ROOT, "eth0", ip(10, 0, 0, 2), None, "web1")
            .unwrap(),
    ];
    let (mut merged, mut appended) = (Changes::default(), Changes::default());
    for c in ops {
        merged.merge(c.clone());
        appended.append(c);
    }
    assert!(
        appended.addrs.len() > merged.addrs.len(),
        "repeats before dedup"
    );
    appended.dedup();
    assert_eq!(appended, merged);
}

#[test]
fn sort_dedup_and_dedup_repeated_keep_the_entries_of_dedup() {
    let (mut m, _, _) = setup();
    let mut ops: Vec<Changes> = Vec::new();
    for i in 2..40u8 {
        let a = ip(10, 0, 1, i);
        ops.push(
            m.addr_add(ROOT, "eth0", a, 24, None, None, Scope::Global)
                .unwrap(),
        );
        ops.push(m.addr_push(ROOT, "eth0", a, None, "web1").unwrap());
        if i % 3 == 0 {
            ops.push(m.addr_pull(ROOT, "eth0", a, None, "web1").unwrap());
        }
    }
    ops.push(m.ns_del(ROOT, "web1").unwrap());
    let (mut plain, mut along) = (Changes::default(), Changes::default());
    for c in ops {
        plain.append(c.clone());
        along.append(c);
        // As the runtime does while a batch grows.
        along.dedup_repeated();
    }
    let mut sorted = plain.clone();
    plain.dedup();
    along.dedup();
    assert_eq!(along, plain, "dedup_repeated along the way changes nothing");
    sorted.sort_dedup();
    let sort = |mut v: Changes| {
        v.addrs.sort();
        v.namespaces.sort();
        v.routes.sort();
        v.removed_namespaces.sort();
        v.closed_sockets.sort();
        v
    };
    assert_eq!(sorted, sort(plain));
}

#[test]
fn compact_keeps_every_entry() {
    let (mut m, _, _) = setup();
    for i in 0..5_000u32 {
        let a = Ipv4Addr::from(0x0b00_0000 + 1 + i);
        m.addr_add(ROOT, "eth0", a, 8, None, None, Scope::Global)
            .unwrap();
        if i % 2 == 0 {
            m.addr_push(ROOT, "eth0", a, None, "web1").unwrap();
        }
    }
    let before = m.clone();
    m.compact();
    assert_eq!(m, before);
    m.check_invariants().unwrap();
    m.compact();
    assert_eq!(m, before);
    assert_eq!(m.owned_by(ROOT).count(), before.owned_by(ROOT).count());
}

#[test]
fn label_numbers_are_shared_freed_and_reused() {
    let (mut m, _, _) = setup();
    let a = |i: u8| ip(10, 0, 9, i);
    for i in 1..6 {
        let label = (i % 2 == 0).then_some("eth0:x");
        m.addr_add(ROOT, "eth0", a(i), 24, label, None, Scope::Global)
            .unwrap();
    }
    m.check_invariants().unwrap();
    assert_eq!(
        &*m.ifaddr(m.resolve_dev(ROOT, "eth0").unwrap(), a(2))
            .unwrap()
            .label,
        "eth0:x"
    );
    // The last user of the alias goes: its number is freed, then reused by another label.
    m.addr_del(ROOT, "eth0", a(2)).unwrap();
    m.addr_del(ROOT, "eth0", a(4)).unwrap();
    m.check_invariants().unwrap();
    m.addr_add(ROOT, "eth0", a(7), 24, Some("eth0:y"), None, Scope::Global)
        .unwrap();
    m.addr_add(ROOT, "eth0", a(8), 24, Some("eth0:x"), None, Scope::Global)
        .unwrap();
    m.check_invariants().unwrap();
    let eth0 = m.resolve_dev(ROOT, "eth0").unwrap();
    assert_eq!(&*m.ifaddr(eth0, a(7)).unwrap().label, "eth0:y");
    assert_eq!(&*m.ifaddr(eth0, a(8)).unwrap().label, "eth0:x");
    assert_eq!(&*m.ifaddr(eth0, a(1)).unwrap().label, "eth0");
    // Equal models whatever numbers their labels got.
    let back: Model = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
    back.check_invariants().unwrap();
}
