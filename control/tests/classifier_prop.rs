//! Property: for random address ownership, sockets and packets, exactly the sockets a
//! reference reading of R8–R10 names receive each packet, once each. The reference below is
//! written from SEMANTICS.md against the model, independently of the snapshot code.

mod common;

use common::*;
use l3ns_dataplane::types::{LoopbackMode, NsId, Scope, SocketId};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Clone, Debug)]
struct Case {
    /// (third octet, fourth octet, prefix, owner index 0..=3)
    addrs: Vec<(u8, u8, u8, usize)>,
    /// (namespace index, address choice, port)
    binds: Vec<(usize, usize, u16)>,
    /// (destination choice, port)
    packets: Vec<(usize, u16)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(
            (
                0u8..3,
                1u8..250,
                prop_oneof![Just(24u8), Just(16), Just(30)],
                0usize..4,
            ),
            1..8,
        ),
        proptest::collection::vec((0usize..4, 0usize..20, 1u16..4), 0..12),
        proptest::collection::vec((0usize..24, 1u16..4), 1..40),
    )
        .prop_map(|(addrs, binds, packets)| Case {
            addrs,
            binds,
            packets,
        })
}

/// Candidate addresses: 0.0.0.0, 255.255.255.255, then every ifaddr's local and broadcast.
fn candidates(model: &l3ns_control::model::Model) -> Vec<Ipv4Addr> {
    let mut v = vec![Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST];
    for i in model.ifaddrs() {
        v.push(i.local);
        v.push(i.broadcast);
    }
    v.push(Ipv4Addr::new(10, 9, 9, 9));
    v
}

/// R8–R10 read straight from SEMANTICS.md over the model.
fn expected(
    model: &l3ns_control::model::Model,
    dev: l3ns_dataplane::types::DevId,
    dst: Ipv4Addr,
    port: u16,
) -> Vec<SocketId> {
    let socks: Vec<_> = model
        .sockets()
        .map(|s| s.binding)
        .filter(|b| b.port == port)
        .collect();
    let is_bcast = dst.is_broadcast()
        || model
            .ifaddrs()
            .any(|i| i.dev == dev && i.broadcast == dst && i.local != dst);
    let owner = model.ifaddrs().find(|i| i.local == dst).map(|i| i.owner);
    if let Some(ns) = owner {
        // R9: the socket bound to dst, else the one on 0.0.0.0.
        let exact = socks.iter().find(|b| b.ns == ns && b.addr == dst);
        let wild = socks.iter().find(|b| b.ns == ns && b.addr.is_unspecified());
        return exact.or(wild).map(|b| vec![b.id]).unwrap_or_default();
    }
    if !is_bcast {
        return vec![];
    }
    let mut out: Vec<SocketId> = socks
        .iter()
        .filter(|b| {
            b.addr == dst
                || (b.addr.is_unspecified()
                    && (dst.is_broadcast()
                        || b.ns == NsId::ROOT
                        || model.owned_by(b.ns).any(|i| i.broadcast == dst)))
        })
        .map(|b| b.id)
        .collect();
    out.sort();
    out
}

/// The frames for `packets` (destination choice, port) and how many datagrams each socket
/// should get from them by the reference reading of the rules.
fn frames_and_want(
    n: &Net,
    cands: &[Ipv4Addr],
    packets: &[(usize, u16)],
) -> (Vec<Vec<u8>>, BTreeMap<SocketId, usize>) {
    let mut want: BTreeMap<SocketId, usize> = BTreeMap::new();
    let mut frames = Vec::new();
    for (i, (d, port)) in packets.iter().enumerate() {
        let dst = cands[d % cands.len()];
        if dst.is_unspecified() {
            continue;
        }
        for s in expected(n.rt.model(), n.dev, dst, *port) {
            *want.entry(s).or_default() += 1;
        }
        let bcast = dst.is_broadcast() || n.rt.model().ifaddrs().any(|i| i.broadcast == dst);
        let mac = if bcast { [0xff; 6] } else { OUR_MAC };
        frames.push(udp_frame(
            mac,
            PEER,
            dst,
            1000 + i as u16,
            *port,
            &[i as u8],
        ));
    }
    (frames, want)
}

/// Counts what socket `id` received into `got`; each datagram must name the socket.
fn drain(
    id: SocketId,
    s: &mut l3ns_dataplane::api::UdpSocket,
    got: &mut BTreeMap<SocketId, usize>,
) -> Result<(), TestCaseError> {
    while let Some(d) = s.try_recv() {
        prop_assert_eq!(d.meta.socket, id);
        *got.entry(id).or_default() += 1;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn deliveries_match_the_rules(c in case()) {
        let mut n = net();
        let root = NsId::ROOT;
        let web3 = n.rt.apply("ns_add", |m| m.ns_add(root, "web3", None, LoopbackMode::Isolated)).unwrap();
        let nss = [root, n.web1, n.web2, web3];
        let names = ["root", "web1", "web2", "web3"];
        for (o3, o4, prefix, owner) in &c.addrs {
            let ip = Ipv4Addr::new(10, 20 + o3, 0, *o4);
            if n.rt.apply("addr_add", |m| m.addr_add(root, "eth0", ip, *prefix, None, None, Scope::Global).map(|c| ((), c))).is_ok() && *owner > 0 {
                n.rt.apply("addr_push", |m| m.addr_push(root, "eth0", ip, None, names[*owner]).map(|c| ((), c))).unwrap();
            }
        }
        let cands = candidates(n.rt.model());
        let mut sockets = BTreeMap::new();
        for (ns, a, port) in &c.binds {
            let addr = cands[a % cands.len()];
            if let Ok(s) = n.rt.udp_socket(nss[*ns], addr, *port) {
                sockets.insert(s.id(), s);
            }
        }
        let (frames, want) = frames_and_want(&n, &cands, &c.packets);
        n.inject(frames);
        let mut got: BTreeMap<SocketId, usize> = BTreeMap::new();
        for (id, s) in sockets.iter_mut() {
            drain(*id, s, &mut got)?;
        }
        prop_assert_eq!(got, want);
    }
}

/// One round of `rounds_match_the_rules`: changes, then packets.
#[derive(Clone, Debug)]
struct Round {
    /// Sockets to close (index into the open ones).
    closes: Vec<usize>,
    /// (namespace index, address choice, port)
    binds: Vec<(usize, usize, u16)>,
    /// (address index, new owner index 0..=3): pull back to the root, then push.
    moves: Vec<(usize, usize)>,
    /// (destination choice, port)
    packets: Vec<(usize, u16)>,
}

/// (third octet, fourth octet, prefix, owner index 0..=3) of each address.
type Addrs = Vec<(u8, u8, u8, usize)>;

fn rounds() -> impl Strategy<Value = (Addrs, Vec<Round>)> {
    let round = (
        proptest::collection::vec(0usize..8, 0..3),
        proptest::collection::vec((0usize..4, 0usize..20, 1u16..3), 0..4),
        proptest::collection::vec((0usize..8, 0usize..4), 0..3),
        proptest::collection::vec((0usize..24, 1u16..3), 1..24),
    )
        .prop_map(|(closes, binds, moves, packets)| Round {
            closes,
            binds,
            moves,
            packets,
        });
    (
        proptest::collection::vec((0u8..2, 1u8..250, Just(24u8), 0usize..4), 1..6),
        proptest::collection::vec(round, 1..6),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The worker remembers each namespace's last socket lookup per snapshot (its memo,
    /// `NsCounters::memo`): across rounds of socket, ownership and queue changes, every
    /// packet still reaches exactly the sockets the rules name at the time it arrives.
    #[test]
    fn rounds_match_the_rules(c in rounds()) {
        let (addrs, rounds) = c;
        let mut n = net();
        let root = NsId::ROOT;
        let web3 = n.rt.apply("ns_add", |m| m.ns_add(root, "web3", None, LoopbackMode::Isolated)).unwrap();
        let nss = [root, n.web1, n.web2, web3];
        let names = ["root", "web1", "web2", "web3"];
        let mut owned: Vec<(Ipv4Addr, usize)> = Vec::new();
        for (o3, o4, prefix, owner) in &addrs {
            let ip = Ipv4Addr::new(10, 20 + o3, 0, *o4);
            if n.rt.apply("addr_add", |m| m.addr_add(root, "eth0", ip, *prefix, None, None, Scope::Global).map(|c| ((), c))).is_ok() {
                if *owner > 0 {
                    n.rt.apply("addr_push", |m| m.addr_push(root, "eth0", ip, None, names[*owner]).map(|c| ((), c))).unwrap();
                }
                owned.push((ip, *owner));
            }
        }
        let mut sockets: BTreeMap<SocketId, (NsId, _)> = BTreeMap::new();
        for r in &rounds {
            for &i in &r.closes {
                if let Some(&id) = sockets.keys().nth(i % sockets.len().max(1)) {
                    let (ns, _) = sockets.remove(&id).unwrap();
                    n.rt.close(ns, id).unwrap();
                }
            }
            for &(a, to) in &r.moves {
                if owned.is_empty() {
                    break;
                }
                let k = a % owned.len();
                let (ip, from) = owned[k];
                if from == to {
                    continue;
                }
                if from > 0 {
                    n.rt.apply("addr_pull", |m| m.addr_pull(root, "eth0", ip, None, names[from]).map(|c| ((), c))).unwrap();
                }
                if to > 0 {
                    n.rt.apply("addr_push", |m| m.addr_push(root, "eth0", ip, None, names[to]).map(|c| ((), c))).unwrap();
                }
                owned[k].1 = to;
            }
            let cands = candidates(n.rt.model());
            for (ns, a, port) in &r.binds {
                let addr = cands[a % cands.len()];
                if let Ok(s) = n.rt.udp_socket(nss[*ns], addr, *port) {
                    sockets.insert(s.id(), (nss[*ns], s));
                }
            }
            let (frames, want) = frames_and_want(&n, &cands, &r.packets);
            n.inject(frames);
            let mut got: BTreeMap<SocketId, usize> = BTreeMap::new();
            for (id, (_, s)) in sockets.iter_mut() {
                drain(*id, s, &mut got)?;
            }
            prop_assert_eq!(got, want);
        }
    }
}
