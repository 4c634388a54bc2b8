//! What a run reports: JSON (`--json`) or text.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub profile: String,
    pub backend: String,
    pub port: String,
    pub src_mac: String,
    pub dst_mac: String,
    pub src_ip: String,
    /// Frame size with FCS (the port is handed 4 bytes less).
    pub frame_size: usize,
    /// `None`: full speed.
    pub rate_limit_pps: Option<f64>,
    pub ring_frames: usize,
    /// Sending time (first to last burst).
    pub duration_s: f64,
    /// Receiving time after the last burst.
    pub drain_s: f64,
    /// Stopped early by SIGINT/SIGTERM.
    pub interrupted: bool,
    pub sent: Sent,
    pub received: Received,
    /// Unicast frames sent to the echo port vs. their replies; `None` when `frame.echo` is off.
    pub loss: Option<Loss>,
    pub arp: Arp,
    /// The memory backend's in-process receiver: what it saw, by kind and parser verdict.
    pub sink: Option<BTreeMap<String, u64>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sent {
    pub packets: u64,
    pub bytes: u64,
    pub pps: f64,
    /// Megabits per second of the bytes handed to the port (FCS, preamble and gap not counted).
    pub mbps: f64,
    pub by_kind: BTreeMap<String, u64>,
    /// Times the port's transmit ring had no room (the frame was retried later).
    pub tx_ring_full: u64,
    /// Frames counted in `packets` that the device then refused at flush and freed (DPDK
    /// backend: e.g. the memif link not up yet, or its ring full); `None` for the other
    /// backends.
    pub device_dropped: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Received {
    /// Every frame received on the port.
    pub packets: u64,
    pub bytes: u64,
    /// Over sending and draining time.
    pub pps: f64,
    /// UDP to our address and ports carrying our tag: echo replies.
    pub replies: u64,
    pub replies_pps: f64,
    /// Replies by the kind of frame they answer.
    pub replies_by_kind: BTreeMap<String, u64>,
    pub udp_other: u64,
    pub icmp: u64,
    pub other: u64,
    pub unparsed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Loss {
    pub unicast_sent: u64,
    pub unicast_replies: u64,
    /// `unicast_sent - unicast_replies` (negative if the receiver duplicated replies).
    pub lost: i64,
    pub ratio: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Arp {
    pub gratuitous_sent: u64,
    /// Requests sent to resolve `dst_mac = "auto"`.
    pub requests_sent: u64,
    /// `"A.B.C.D is at MAC"` when `dst_mac` was resolved.
    pub resolved: Option<String>,
    pub requests_seen: u64,
    pub requests_for_us: u64,
    pub replies_sent: u64,
    pub replies_dropped: u64,
    pub replies_seen: u64,
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.3} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.3} k", v / 1e3)
    } else {
        format!("{v:.1} ")
    }
}

fn kinds(m: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = m
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let rate = self
            .rate_limit_pps
            .map_or("full speed".to_string(), |r| format!("{}pps", si(r)));
        let _ = writeln!(
            s,
            "profile {} on {} ({}), {} -> {}, {}-byte frames, {}, ring of {} frames{}",
            self.profile,
            self.port,
            self.backend,
            self.src_mac,
            self.dst_mac,
            self.frame_size,
            rate,
            self.ring_frames,
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            }
        );
        let t = &self.sent;
        let _ = writeln!(
            s,
            "sent      {:>12} packets in {:.3}s: {}pps, {}bit/s (tx ring full {} times)",
            t.packets,
            self.duration_s,
            si(t.pps),
            si(t.mbps * 1e6),
            t.tx_ring_full
        );
        if let Some(d) = t.device_dropped {
            let _ = writeln!(s, "  refused by the device at flush (freed): {d}");
        }
        let _ = writeln!(s, "  by kind  {}", kinds(&t.by_kind));
        let r = &self.received;
        let _ = writeln!(
            s,
            "received  {:>12} packets ({}pps over {:.3}s incl. {:.3}s drain), {} echo replies",
            r.packets,
            si(r.pps),
            self.duration_s + self.drain_s,
            self.drain_s,
            r.replies
        );
        let _ = writeln!(s, "  replies  {}", kinds(&r.replies_by_kind));
        let _ = writeln!(
            s,
            "  other    udp {} icmp {} other {} unparsed {}",
            r.udp_other, r.icmp, r.other, r.unparsed
        );
        match &self.loss {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "loss      {} of {} unicast ({:.4}%)",
                    l.lost,
                    l.unicast_sent,
                    l.ratio * 100.0
                );
            }
            None => {
                let _ = writeln!(s, "loss      - (frame.echo is off)");
            }
        }
        let a = &self.arp;
        let _ = writeln!(
            s,
            "arp       requests for us {} answered {} (dropped {}), gratuitous {}{}",
            a.requests_for_us,
            a.replies_sent,
            a.replies_dropped,
            a.gratuitous_sent,
            a.resolved
                .as_ref()
                .map_or(String::new(), |r| format!(", resolved {r}"))
        );
        if let Some(sink) = &self.sink {
            let _ = writeln!(s, "sink      {}", kinds(sink));
        }
        s
    }
}
