//! Traffic profiles: the TOML files of `pktgen-scripts/`, command-line overrides, validation.
//!
//! A profile is read as a TOML table, overrides (`--set section.field=VALUE` and the dedicated
//! flags, which become the same overrides) are merged into it, and the result is deserialized
//! into [`Profile`] (unknown fields are errors). Every field has a default, so an empty file
//! (or no file) is a valid profile: 64-byte unicast UDP frames to `10.1.0.1:7`.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A traffic profile. See `pktgen-scripts/README.md` for the meaning of each field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// A name for reports.
    pub name: String,
    pub description: String,
    pub frame: FrameSection,
    pub unicast: UnicastSection,
    pub broadcast: BroadcastSection,
    pub unowned: UnownedSection,
    pub mix: Mix,
    pub run: RunSection,
}

/// Addresses and sizes common to every generated frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrameSection {
    /// MAC of the l3ns port (or the peer) unicast frames go to; `"auto"`: resolve the first
    /// unicast address with ARP before sending.
    pub dst_mac: String,
    /// The generator's MAC; `"auto"`: the port's own address.
    pub src_mac: String,
    /// The generator's IPv4 address: source of every frame, destination of the echo replies,
    /// answered in ARP.
    pub src_ip: Ipv4Addr,
    /// First UDP source port; replies must come back to one of the `src_ports` ports from here.
    pub src_port: u16,
    /// How many source ports to spread flows over (for RSS / fanout hashing on the receiver).
    pub src_ports: u16,
    /// UDP destination port of unicast, unowned and malformed frames.
    pub dst_port: u16,
    /// Ethernet frame size with its 4-byte FCS, as in RFC 2544 and testpmd's flowgen: the
    /// port is handed `frame_size - 4` bytes (64 gives 60-byte frames with 18 payload bytes;
    /// minimum 56, maximum 1518).
    pub frame_size: usize,
    pub ttl: u8,
    /// Whether `dst_port` is an echo service: the unicast sent are then expected back, and
    /// loss is reported.
    pub echo: bool,
}

/// The owned addresses unicast frames are spread over: `namespaces` × `addresses_per_namespace`,
/// address `j` of namespace `i` (both from 0) being `base + first + i * stride + j`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnicastSection {
    pub namespaces: u32,
    pub addresses_per_namespace: u32,
    pub base: Ipv4Addr,
    pub first: u32,
    /// Distance between two namespaces' first addresses; 0 means `addresses_per_namespace`
    /// (namespaces own consecutive blocks, as `bench`'s synthetic tables and the test configs
    /// assign them).
    pub stride: u32,
    /// Destination MAC of each namespace's unicast frames (namespace `i` gets `dst_macs[i]`),
    /// for receivers with one MAC per namespace (Linux macvlans); empty: `frame.dst_mac` for
    /// every namespace.
    pub dst_macs: Vec<String>,
}

/// Broadcast destinations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BroadcastSection {
    /// The directed broadcast address (the `broadcast` of the ifaddrs of the receiver).
    pub address: Ipv4Addr,
    /// UDP destination port of both kinds of broadcast; 0 means `frame.dst_port`.
    pub port: u16,
}

/// Destinations nobody owns: `base + first + k` for `k` in `0..count`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnownedSection {
    pub base: Ipv4Addr,
    pub first: u32,
    pub count: u32,
}

/// Relative shares of each kind of frame (any scale; 0 turns a kind off).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mix {
    pub unicast: u32,
    pub limited_broadcast: u32,
    pub directed_broadcast: u32,
    pub unowned: u32,
    /// Valid frame, then the IPv4 header checksum corrupted.
    pub bad_checksum: u32,
    /// Valid frame cut inside the IPv4 header (33 bytes).
    pub truncated: u32,
    /// Valid frame with More Fragments set (checksum fixed).
    pub fragment: u32,
    /// Valid frame with IHL 4 (checksum fixed).
    pub bad_ihl: u32,
}

/// How long and how fast to send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Frames per second (token bucket, sent in bursts of `burst`); 0: full speed.
    pub rate: f64,
    /// Frames to send; 0: no limit (then `duration`).
    pub count: u64,
    /// Seconds to send; 0: no limit (then `count`). With neither, 5 seconds.
    pub duration: f64,
    /// Frames per transmit burst.
    pub burst: usize,
    /// Prepared frames in the ring; 0: enough for every unicast address (at least 1024).
    pub ring: usize,
    /// Shuffle the ring (seeded) instead of interleaving kinds and addresses in order.
    pub shuffle: bool,
    pub seed: u64,
    /// Send a gratuitous ARP for `src_ip` before the first frame.
    pub gratuitous_arp: bool,
    /// Seconds to keep receiving after the last frame was sent.
    pub drain: f64,
    /// Seconds to wait for the ARP reply when `dst_mac = "auto"`.
    pub resolve_timeout: f64,
    /// Busy-poll while waiting for tokens instead of sleeping.
    pub spin: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            name: "default".into(),
            description: String::new(),
            frame: FrameSection::default(),
            unicast: UnicastSection::default(),
            broadcast: BroadcastSection::default(),
            unowned: UnownedSection::default(),
            mix: Mix::default(),
            run: RunSection::default(),
        }
    }
}

impl Default for FrameSection {
    fn default() -> Self {
        FrameSection {
            dst_mac: "02:00:00:00:00:01".into(),
            src_mac: "auto".into(),
            src_ip: Ipv4Addr::new(10, 1, 255, 254),
            src_port: 40000,
            src_ports: 1,
            dst_port: 7,
            frame_size: 64,
            ttl: 64,
            echo: true,
        }
    }
}

impl Default for UnicastSection {
    fn default() -> Self {
        UnicastSection {
            namespaces: 1,
            addresses_per_namespace: 1,
            base: Ipv4Addr::new(10, 1, 0, 0),
            first: 1,
            stride: 0,
            dst_macs: Vec::new(),
        }
    }
}

impl Default for BroadcastSection {
    fn default() -> Self {
        BroadcastSection {
            address: Ipv4Addr::new(10, 1, 255, 255),
            port: 0,
        }
    }
}

impl Default for UnownedSection {
    fn default() -> Self {
        UnownedSection {
            base: Ipv4Addr::new(10, 2, 0, 0),
            first: 1,
            count: 256,
        }
    }
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            unicast: 100,
            limited_broadcast: 0,
            directed_broadcast: 0,
            unowned: 0,
            bad_checksum: 0,
            truncated: 0,
            fragment: 0,
            bad_ihl: 0,
        }
    }
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            rate: 0.0,
            count: 0,
            duration: 0.0,
            burst: 32,
            ring: 0,
            shuffle: false,
            seed: 1,
            gratuitous_arp: false,
            drain: 0.5,
            resolve_timeout: 2.0,
            spin: false,
        }
    }
}

/// Bytes of `frame.frame_size` the port does not see: the Ethernet FCS.
pub const FCS_LEN: usize = 4;
/// Smallest `frame.frame_size`: headers (42 bytes), the 10-byte payload tag and the FCS.
pub const MIN_FRAME_SIZE: usize = 56;
/// Largest `frame.frame_size` (a 1500-byte MTU, FCS included).
pub const MAX_FRAME_SIZE: usize = 1518;

/// A MAC address field: a fixed address or resolved at run time.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MacSpec {
    Auto,
    Fixed([u8; 6]),
}

/// Parses `aa:bb:cc:dd:ee:ff` (or `-` separators).
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(format!(
            "invalid MAC address {s:?} (want aa:bb:cc:dd:ee:ff)"
        ));
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(format!(
                "invalid MAC address {s:?} (want aa:bb:cc:dd:ee:ff)"
            ));
        }
        *m = u8::from_str_radix(p, 16)
            .map_err(|_| format!("invalid MAC address {s:?} (want aa:bb:cc:dd:ee:ff)"))?;
    }
    Ok(mac)
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac_spec(field: &str, s: &str) -> Result<MacSpec, String> {
    if s.eq_ignore_ascii_case("auto") {
        Ok(MacSpec::Auto)
    } else {
        parse_mac(s)
            .map(MacSpec::Fixed)
            .map_err(|e| format!("frame.{field}: {e}"))
    }
}

impl Profile {
    /// Reads `path` (if any), applies `overrides` (`("section.field", value)`) in order, and
    /// deserializes the result.
    pub fn load(
        path: Option<&std::path::Path>,
        overrides: &[(String, toml::Value)],
    ) -> Result<Profile, String> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read profile {}: {e}", p.display()))?;
                text.parse::<toml::Table>()
                    .map_err(|e| format!("profile {}: {e}", p.display()))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in overrides {
            set_path(&mut table, key, value.clone())?;
        }
        let profile: Profile = toml::Value::Table(table).try_into().map_err(|e| {
            let what = path.map_or("profile".to_string(), |p| {
                format!("profile {}", p.display())
            });
            format!("{what}: {e}")
        })?;
        profile.validate()?;
        Ok(profile)
    }

    /// The profile as TOML (what `--print-profile` shows).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialize: {e}\n"))
    }

    pub fn dst_mac(&self) -> Result<MacSpec, String> {
        parse_mac_spec("dst_mac", &self.frame.dst_mac)
    }

    pub fn src_mac(&self) -> Result<MacSpec, String> {
        parse_mac_spec("src_mac", &self.frame.src_mac)
    }

    /// Bytes of each frame handed to the port (`frame_size` without the FCS).
    pub fn port_frame_len(&self) -> usize {
        self.frame.frame_size - FCS_LEN
    }

    /// Distance between namespaces' first addresses.
    pub fn stride(&self) -> u32 {
        if self.unicast.stride == 0 {
            self.unicast.addresses_per_namespace
        } else {
            self.unicast.stride
        }
    }

    /// Number of owned (unicast) addresses.
    pub fn unicast_addresses(&self) -> u64 {
        u64::from(self.unicast.namespaces) * u64::from(self.unicast.addresses_per_namespace)
    }

    /// Unicast address `k` (0-based, `k < unicast_addresses()`), spread so that consecutive
    /// `k` go to different namespaces: namespace `k % namespaces`, its address
    /// `(k / namespaces) % addresses_per_namespace`.
    pub fn unicast_address(&self, k: u64) -> Ipv4Addr {
        let n = u64::from(self.unicast.namespaces);
        let m = u64::from(self.unicast.addresses_per_namespace);
        let k = k % (n * m);
        let (ns, j) = (k % n, (k / n) % m);
        self.address_of(ns as u32, j as u32)
    }

    /// The namespace (0-based) unicast address `k` belongs to (see [`Self::unicast_address`]).
    pub fn unicast_namespace(&self, k: u64) -> u32 {
        (k % u64::from(self.unicast.namespaces.max(1))) as u32
    }

    /// `unicast.dst_macs`, parsed; empty when every namespace uses `frame.dst_mac`.
    pub fn namespace_macs(&self) -> Result<Vec<[u8; 6]>, String> {
        self.unicast
            .dst_macs
            .iter()
            .enumerate()
            .map(|(i, m)| parse_mac(m).map_err(|e| format!("unicast.dst_macs[{i}]: {e}")))
            .collect()
    }

    /// Address `j` of namespace `ns` (both 0-based).
    pub fn address_of(&self, ns: u32, j: u32) -> Ipv4Addr {
        let off =
            u64::from(self.unicast.first) + u64::from(ns) * u64::from(self.stride()) + u64::from(j);
        Ipv4Addr::from((u64::from(u32::from(self.unicast.base)) + off) as u32)
    }

    /// Unowned address `k` (cycles over `count`).
    pub fn unowned_address(&self, k: u64) -> Ipv4Addr {
        let off = u64::from(self.unowned.first) + k % u64::from(self.unowned.count.max(1));
        Ipv4Addr::from((u64::from(u32::from(self.unowned.base)) + off) as u32)
    }

    /// UDP destination port of broadcasts.
    pub fn broadcast_port(&self) -> u16 {
        if self.broadcast.port == 0 {
            self.frame.dst_port
        } else {
            self.broadcast.port
        }
    }

    /// Sum of the shares.
    pub fn total_share(&self) -> u64 {
        self.shares().iter().map(|&s| u64::from(s)).sum()
    }

    /// Shares in [`super::ring::Kind::ALL`] order.
    pub fn shares(&self) -> [u32; super::ring::Kind::COUNT] {
        let m = &self.mix;
        [
            m.unicast,
            m.limited_broadcast,
            m.directed_broadcast,
            m.unowned,
            m.bad_checksum,
            m.truncated,
            m.fragment,
            m.bad_ihl,
        ]
    }

    /// Checks everything that can be checked without a port.
    pub fn validate(&self) -> Result<(), String> {
        self.dst_mac()?;
        self.src_mac()?;
        let f = &self.frame;
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&f.frame_size) {
            return Err(format!(
                "frame.frame_size is {}; must be {MIN_FRAME_SIZE} to {MAX_FRAME_SIZE}",
                f.frame_size
            ));
        }
        if f.src_ports == 0 || u32::from(f.src_port) + u32::from(f.src_ports) > 65536 {
            return Err(format!(
                "frame.src_ports is {}; must be at least 1 and src_port + src_ports - 1 at most 65535",
                f.src_ports
            ));
        }
        if f.src_port == 0 || f.dst_port == 0 {
            return Err("frame.src_port and frame.dst_port must not be 0".into());
        }
        let u = &self.unicast;
        if self.mix.unicast > 0
            || self.mix.bad_checksum + self.mix.truncated + self.mix.fragment + self.mix.bad_ihl > 0
        {
            if u.namespaces == 0 || u.addresses_per_namespace == 0 {
                return Err(
                    "unicast.namespaces and unicast.addresses_per_namespace must be at least 1"
                        .into(),
                );
            }
            if self.stride() < u.addresses_per_namespace {
                return Err(format!(
                    "unicast.stride {} is smaller than addresses_per_namespace {}: namespaces would share addresses",
                    self.stride(),
                    u.addresses_per_namespace
                ));
            }
            let last = u64::from(u32::from(u.base))
                + u64::from(u.first)
                + u64::from(u.namespaces - 1) * u64::from(self.stride())
                + u64::from(u.addresses_per_namespace - 1);
            if last > u64::from(u32::MAX) {
                return Err("unicast addresses run past 255.255.255.255".into());
            }
            if u.namespaces as u64 * u.addresses_per_namespace as u64 > 1 << 24 {
                return Err("more than 16,777,216 unicast addresses".into());
            }
            if !u.dst_macs.is_empty() && u.dst_macs.len() != u.namespaces as usize {
                return Err(format!(
                    "unicast.dst_macs has {} MACs for {} namespaces: give one per namespace (or none)",
                    u.dst_macs.len(),
                    u.namespaces
                ));
            }
            self.namespace_macs()?;
        }
        if self.mix.unowned > 0 {
            if self.unowned.count == 0 {
                return Err("unowned.count must be at least 1".into());
            }
            let last = u64::from(u32::from(self.unowned.base))
                + u64::from(self.unowned.first)
                + u64::from(self.unowned.count - 1);
            if last > u64::from(u32::MAX) {
                return Err("unowned addresses run past 255.255.255.255".into());
            }
        }
        if self.total_share() == 0 {
            return Err("every share of [mix] is 0: nothing to send".into());
        }
        let r = &self.run;
        if !non_negative(r.rate) {
            return Err(format!(
                "run.rate is {}; must be 0 (full speed) or positive",
                r.rate
            ));
        }
        if !non_negative(r.duration) {
            return Err(format!(
                "run.duration is {}; must be 0 or positive",
                r.duration
            ));
        }
        if !non_negative(r.drain) || !non_negative(r.resolve_timeout) {
            return Err("run.drain and run.resolve_timeout must be 0 or positive".into());
        }
        if r.burst == 0 || r.burst > 1024 {
            return Err(format!("run.burst is {}; must be 1 to 1024", r.burst));
        }
        if r.ring > super::ring::MAX_RING {
            return Err(format!(
                "run.ring is {}; at most {}",
                r.ring,
                super::ring::MAX_RING
            ));
        }
        Ok(())
    }
}

/// A finite number, 0 or more (NaN is not).
fn non_negative(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

/// Parses `KEY=VALUE` (`--set`): the value is read as a TOML value (`10`, `true`, `"x"`,
/// `1.5`), or taken as a string when it is not one (so `--set frame.src_ip=10.1.0.9` works).
pub fn parse_override(s: &str) -> Result<(String, toml::Value), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("--set {s:?}: want SECTION.FIELD=VALUE"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("--set {s:?}: empty key"));
    }
    Ok((key.to_string(), toml_value(value.trim())))
}

/// A command-line value as TOML: a TOML literal if it parses as one, else a string.
pub fn toml_value(s: &str) -> toml::Value {
    format!("v = {s}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(s.to_string()))
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("split yields at least one part");
    let mut t = table;
    for p in parts {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("cannot set {key}: {p} is not a table"))?;
    }
    // Integers given for float fields (rate = 1000) are fine for serde's f64; strings given for
    // numbers are left to deserialization to report.
    t.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_address_formula() {
        let p = Profile::load(None, &[]).unwrap();
        assert_eq!(p.unicast_address(0), Ipv4Addr::new(10, 1, 0, 1));
        let p = Profile::load(
            None,
            &[
                ("unicast.namespaces".into(), toml_value("3")),
                ("unicast.addresses_per_namespace".into(), toml_value("2")),
            ],
        )
        .unwrap();
        // ns 0: .1 .2, ns 1: .3 .4, ns 2: .5 .6; consecutive k alternate namespaces.
        let got: Vec<_> = (0..6).map(|k| p.unicast_address(k).octets()[3]).collect();
        assert_eq!(got, vec![1, 3, 5, 2, 4, 6]);
        assert_eq!(p.unicast_address(6), p.unicast_address(0));
    }

    #[test]
    fn overrides_and_unknown_fields() {
        let (k, v) = parse_override("frame.src_ip=10.98.0.99").unwrap();
        assert_eq!(k, "frame.src_ip");
        assert_eq!(v, toml::Value::String("10.98.0.99".into()));
        assert_eq!(
            parse_override("run.rate=1000").unwrap().1,
            toml::Value::Integer(1000)
        );
        let p = Profile::load(None, &[parse_override("frame.src_ip=10.98.0.99").unwrap()]).unwrap();
        assert_eq!(p.frame.src_ip, Ipv4Addr::new(10, 98, 0, 99));
        let e = Profile::load(None, &[parse_override("frame.nope=1").unwrap()]).unwrap_err();
        assert!(e.contains("nope"), "{e}");
        let e = Profile::load(None, &[parse_override("frame.frame_size=20").unwrap()]).unwrap_err();
        assert!(e.contains("frame_size"), "{e}");
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:00:00:00:0a:FF").unwrap(),
            [2, 0, 0, 0, 10, 255]
        );
        assert!(parse_mac("02:00:00:00:0a").is_err());
        assert!(parse_mac("02:00:00:00:0a:fff").is_err());
        assert_eq!(format_mac([2, 0, 0, 0, 10, 255]), "02:00:00:00:0a:ff");
    }
}
