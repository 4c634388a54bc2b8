//! The ring of prepared frames: every frame the generator sends is built (and, for the
//! malformed kinds, corrupted) before the first one leaves, so the sending loop only copies
//! bytes and bumps a counter.
//!
//! Kinds are interleaved by smooth weighted round robin over the profile's shares (every
//! window of `total share` consecutive slots holds each kind exactly its share of times), or
//! shuffled with a seed. Unicast frames walk the owned addresses so that consecutive ones go
//! to different namespaces.
//!
//! Each UDP payload starts with a 10-byte tag: `L3PG`, the kind, a version byte (1), and the
//! slot index (u32, big endian); an echo service returns it, which tells replies apart.

use super::profile::Profile;
use l3ns_dataplane::wire::{self, DropReason, FrameAddrs, BROADCAST_MAC};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::net::Ipv4Addr;

/// The four bytes every generated payload starts with.
pub const MAGIC: [u8; 4] = *b"L3PG";
/// Payload tag length: magic, kind, version, slot index.
pub const TAG_LEN: usize = 10;
const TAG_VERSION: u8 = 1;
/// Most frames a ring holds.
pub const MAX_RING: usize = 1 << 21;
/// Smallest automatic ring.
const MIN_AUTO_RING: usize = 1024;
/// Ethernet + IPv4 + UDP headers.
const HEADERS: usize = 42;
/// Length of a `truncated` frame: cut inside the IPv4 header (14 + 19 bytes).
pub const TRUNCATED_LEN: usize = 33;

/// What a generated frame is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    Unicast = 0,
    LimitedBroadcast = 1,
    DirectedBroadcast = 2,
    Unowned = 3,
    BadChecksum = 4,
    Truncated = 5,
    Fragment = 6,
    BadIhl = 7,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Unicast,
        Kind::LimitedBroadcast,
        Kind::DirectedBroadcast,
        Kind::Unowned,
        Kind::BadChecksum,
        Kind::Truncated,
        Kind::Fragment,
        Kind::BadIhl,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The name used in profiles (`[mix]`) and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Unicast => "unicast",
            Kind::LimitedBroadcast => "limited_broadcast",
            Kind::DirectedBroadcast => "directed_broadcast",
            Kind::Unowned => "unowned",
            Kind::BadChecksum => "bad_checksum",
            Kind::Truncated => "truncated",
            Kind::Fragment => "fragment",
            Kind::BadIhl => "bad_ihl",
        }
    }

    pub fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.get(usize::from(v)).copied()
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// The reason l3ns's parser gives for a frame of this kind, for the malformed kinds.
    pub const fn drop_reason(self) -> Option<DropReason> {
        match self {
            Kind::BadChecksum => Some(DropReason::BadChecksum),
            Kind::Truncated => Some(DropReason::Truncated),
            Kind::Fragment => Some(DropReason::Fragment),
            Kind::BadIhl => Some(DropReason::BadIhl),
            _ => None,
        }
    }
}

/// Prepared frames, stored back to back in one buffer.
pub struct Ring {
    data: Vec<u8>,
    lens: Vec<u16>,
    kinds: Vec<u8>,
    stride: usize,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("frames", &self.len())
            .field("stride", &self.stride)
            .finish()
    }
}

impl Ring {
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Frame `i` and its kind.
    #[inline(always)]
    pub fn frame(&self, i: usize) -> (&[u8], Kind) {
        let start = i * self.stride;
        let f = &self.data[start..start + usize::from(self.lens[i])];
        (f, Kind::ALL[usize::from(self.kinds[i])])
    }

    /// Bytes of frame storage.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// How many slots of each kind.
    pub fn kind_counts(&self) -> [u64; Kind::COUNT] {
        let mut c = [0u64; Kind::COUNT];
        for &k in &self.kinds {
            c[usize::from(k)] += 1;
        }
        c
    }
}

/// Number of slots: `profile.run.ring`, or enough unicast slots for every owned address.
pub fn ring_len(p: &Profile) -> usize {
    if p.run.ring > 0 {
        return p.run.ring;
    }
    let total = p.total_share().max(1);
    let uni = u64::from(p.mix.unicast);
    let mut want = MIN_AUTO_RING as u64;
    if uni > 0 {
        want = want.max((p.unicast_addresses() * total).div_ceil(uni));
    }
    // Whole periods of the round robin keep the shares exact.
    let want = want.div_ceil(total) * total;
    (want as usize).min(MAX_RING)
}

/// Slot kinds by smooth weighted round robin: every `total share` slots hold each kind its
/// share of times, spread evenly.
fn schedule(shares: &[u32; Kind::COUNT], n: usize) -> Vec<u8> {
    let total: i64 = shares.iter().map(|&s| i64::from(s)).sum();
    let mut current = [0i64; Kind::COUNT];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut best = 0;
        for k in 0..Kind::COUNT {
            current[k] += i64::from(shares[k]);
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total;
        out.push(best as u8);
    }
    out
}

/// Builds the ring for `p`, from `src_mac` to `dst_mac` (resolved already).
pub fn build(p: &Profile, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Result<Ring, String> {
    let n = ring_len(p);
    let mut kinds = schedule(&p.shares(), n);
    if p.run.shuffle {
        kinds.shuffle(&mut SmallRng::seed_from_u64(p.run.seed));
    }
    let size = p.port_frame_len();
    let stride = size.next_multiple_of(64);
    let mut data = vec![0u8; n * stride];
    let mut lens = Vec::with_capacity(n);
    let mut payload = vec![0u8; size - HEADERS];
    payload[..4].copy_from_slice(&MAGIC);
    payload[5] = TAG_VERSION;
    let ns_macs = p.namespace_macs()?;
    // Separate walks, so every kind covers its addresses evenly whatever the mix.
    let (mut uni, mut bad, mut unowned) = (0u64, 0u64, 0u64);
    for (i, &k) in kinds.iter().enumerate() {
        let kind = Kind::ALL[usize::from(k)];
        let (dst_ip, dmac, dport) = match kind {
            Kind::Unicast => {
                uni += 1;
                let mac = match ns_macs.as_slice() {
                    [] => dst_mac,
                    macs => macs[p.unicast_namespace(uni - 1) as usize],
                };
                (p.unicast_address(uni - 1), mac, p.frame.dst_port)
            }
            Kind::LimitedBroadcast => (Ipv4Addr::BROADCAST, BROADCAST_MAC, p.broadcast_port()),
            Kind::DirectedBroadcast => (p.broadcast.address, BROADCAST_MAC, p.broadcast_port()),
            Kind::Unowned => {
                unowned += 1;
                (p.unowned_address(unowned - 1), dst_mac, p.frame.dst_port)
            }
            _ => {
                bad += 1;
                (p.unicast_address(bad - 1), dst_mac, p.frame.dst_port)
            }
        };
        payload[4] = k;
        payload[6..10].copy_from_slice(&(i as u32).to_be_bytes());
        let addrs = FrameAddrs {
            src_mac,
            dst_mac: dmac,
            src_ip: p.frame.src_ip,
            dst_ip,
        };
        let sport = p.frame.src_port + (i % usize::from(p.frame.src_ports)) as u16;
        let buf = &mut data[i * stride..i * stride + size];
        let len = wire::build_udp(buf, &addrs, sport, dport, p.frame.ttl, &payload)
            .map_err(|e| format!("building frame {i}: {e}"))?;
        debug_assert_eq!(len, size);
        let len = corrupt(buf, kind);
        lens.push(len as u16);
    }
    Ok(Ring {
        data,
        lens,
        kinds,
        stride,
    })
}

/// Turns a valid Ethernet/IPv4/UDP frame into a malformed one of `kind`; returns its length.
pub fn corrupt(frame: &mut [u8], kind: Kind) -> usize {
    const IP: usize = 14;
    let refill = |f: &mut [u8]| {
        f[IP + 10] = 0;
        f[IP + 11] = 0;
        let c = wire::checksum::checksum(&f[IP..IP + 20]);
        f[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
    };
    match kind {
        Kind::BadChecksum => {
            frame[IP + 10] ^= 0x5a;
            frame[IP + 11] ^= 0xa5;
            frame.len()
        }
        Kind::Truncated => TRUNCATED_LEN,
        Kind::Fragment => {
            // More Fragments, offset 0 (DF cleared), a valid header checksum.
            frame[IP + 6] = 0x20;
            frame[IP + 7] = 0;
            refill(frame);
            frame.len()
        }
        Kind::BadIhl => {
            frame[IP] = 0x44;
            refill(frame);
            frame.len()
        }
        _ => frame.len(),
    }
}

/// The kind and slot of a returned payload carrying our tag.
#[inline]
pub fn parse_tag(payload: &[u8]) -> Option<(Kind, u32)> {
    if payload.len() < TAG_LEN || payload[..4] != MAGIC || payload[5] != TAG_VERSION {
        return None;
    }
    let kind = Kind::from_u8(payload[4])?;
    Some((
        kind,
        u32::from_be_bytes([payload[6], payload[7], payload[8], payload[9]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktgen::profile::{parse_override, Profile};
    use l3ns_dataplane::wire::{parse_frame, Parsed};

    fn profile(sets: &[&str]) -> Profile {
        let o: Vec<_> = sets.iter().map(|s| parse_override(s).unwrap()).collect();
        Profile::load(None, &o).unwrap()
    }

    #[test]
    fn every_kind_parses_as_intended() {
        let p = profile(&[
            "mix.unicast=1",
            "mix.limited_broadcast=1",
            "mix.directed_broadcast=1",
            "mix.unowned=1",
            "mix.bad_checksum=1",
            "mix.truncated=1",
            "mix.fragment=1",
            "mix.bad_ihl=1",
        ]);
        let ring = build(&p, [2, 0, 0, 0, 0, 0x99], [2, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(ring.len() % 8, 0);
        assert_eq!(ring.kind_counts(), [ring.len() as u64 / 8; 8]);
        for i in 0..ring.len() {
            let (f, kind) = ring.frame(i);
            match (kind.drop_reason(), parse_frame(f)) {
                (Some(r), Err(got)) => assert_eq!(got, r, "slot {i}"),
                (None, Ok(Parsed::Udp(u))) => {
                    assert_eq!(parse_tag(u.payload), Some((kind, i as u32)));
                    assert_eq!(f.len(), 60);
                    let dst = u.ip.dst;
                    match kind {
                        Kind::Unicast => assert_eq!(dst.octets()[..2], [10, 1]),
                        Kind::LimitedBroadcast => assert_eq!(dst, Ipv4Addr::BROADCAST),
                        Kind::DirectedBroadcast => assert_eq!(dst, Ipv4Addr::new(10, 1, 255, 255)),
                        Kind::Unowned => assert_eq!(dst.octets()[..2], [10, 2]),
                        _ => unreachable!(),
                    }
                }
                (want, got) => panic!("slot {i} {kind:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn auto_ring_covers_every_address_and_shares_are_exact() {
        let p = profile(&[
            "unicast.namespaces=100",
            "unicast.addresses_per_namespace=30",
            "mix.unicast=90",
            "mix.unowned=10",
        ]);
        let ring = build(&p, [2; 6], [4; 6]).unwrap();
        let c = ring.kind_counts();
        assert!(c[0] >= 3000, "{c:?}");
        assert_eq!(c[0] * 10, c[3] * 90);
        let mut seen = std::collections::HashSet::new();
        for i in 0..ring.len() {
            if let (f, Kind::Unicast) = ring.frame(i) {
                seen.insert([f[30], f[31], f[32], f[33]]);
            }
        }
        assert_eq!(seen.len(), 3000);
    }

    #[test]
    fn per_namespace_destination_macs() {
        let p = profile(&[
            "unicast.namespaces=3",
            "unicast.addresses_per_namespace=2",
            "unicast.dst_macs=[\"02:00:00:00:00:0a\", \"02:00:00:00:00:0b\", \"02:00:00:00:00:0c\"]",
        ]);
        let ring = build(&p, [2; 6], [4; 6]).unwrap();
        for i in 0..ring.len() {
            let (f, _) = ring.frame(i);
            // 10.1.0.(1 + 2 * ns + j): the namespace is (last octet - 1) / 2.
            let ns = (f[33] - 1) / 2;
            assert_eq!(f[..6], [2, 0, 0, 0, 0, 0x0a + ns], "slot {i}");
        }
        let bad = |sets: &[&str]| {
            let o: Vec<_> = sets.iter().map(|s| parse_override(s).unwrap()).collect();
            Profile::load(None, &o).unwrap_err()
        };
        assert!(bad(&[
            "unicast.namespaces=2",
            "unicast.dst_macs=[\"02:00:00:00:00:0a\"]"
        ])
        .contains("one per namespace"));
        assert!(bad(&["unicast.dst_macs=[\"nope\"]"]).contains("dst_macs[0]"));
    }

    #[test]
    fn shuffle_keeps_the_counts() {
        let p = profile(&[
            "mix.unicast=3",
            "mix.truncated=1",
            "run.shuffle=true",
            "run.ring=400",
        ]);
        let ring = build(&p, [2; 6], [4; 6]).unwrap();
        assert_eq!(ring.kind_counts()[0], 300);
        assert_eq!(ring.kind_counts()[5], 100);
        assert_eq!(
            ring.frame(0).0.len() == TRUNCATED_LEN,
            ring.frame(0).1 == Kind::Truncated
        );
    }
}
