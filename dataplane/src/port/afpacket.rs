//! AF_PACKET TPACKET_V3 port backend: any Linux interface (veth, a real NIC) without DPDK.
//!
//! One [`AfPacketPort`] is one `AF_PACKET` socket bound to one interface, owned by one worker.
//! [`open`] makes `queues` of them and joins them in one `PACKET_FANOUT` group
//! (`PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG`), so the kernel spreads the interface's
//! flows over the workers and IPv4 fragments of one datagram reach the same worker (reassembled).
//!
//! Each socket maps two rings into one `mmap`:
//! - **receive**: a `PACKET_RX_RING` in TPACKET_V3 layout: `rx_block_count` blocks of
//!   `rx_block_size` bytes; the kernel packs frames (`tpacket3_hdr` + `sockaddr_ll` + frame)
//!   tightly into the current block and hands the block over (`TP_STATUS_USER`) when it is full
//!   or after `rx_retire_timeout_ms`. [`Port::rx_burst`] only reads the status word of the next
//!   block (no system call while idle), walks its frames (keeping its place when a burst ends in
//!   the middle of a block) and gives each fully read block back (`TP_STATUS_KERNEL`) right after
//!   its last frame's callback. When every block is still ours the kernel drops frames; it counts
//!   them, and [`AfPacketPort::stats`] reads the count (`PACKET_STATISTICS`).
//! - **transmit**: a `PACKET_TX_RING` of fixed-size slots, also TPACKET_V3 (the kernel supports
//!   V3 transmit since Linux 4.11; it uses `tpacket3_hdr` slots like V2, with `tp_next_offset`
//!   0, and frame data `TPACKET_ALIGN(sizeof(tpacket3_hdr))` = 48 bytes into the slot).
//!   [`Port::tx_frame`] fills the next slot and marks it `TP_STATUS_SEND_REQUEST`;
//!   [`Port::tx_flush`] kicks the kernel once with `sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0)`,
//!   which sends every requested slot without waiting for completion. The kernel marks a slot
//!   `TP_STATUS_AVAILABLE` again when the device is done with it. `PACKET_LOSS` is set, so a
//!   malformed frame is skipped instead of stalling the ring.
//!
//! Frames this host transmits on the interface (ours or the kernel's) are not received:
//! `PACKET_FANOUT_FLAG_IGNORE_OUTGOING` (the fanout group's hook replaces the socket's own, so
//! the per-socket `PACKET_IGNORE_OUTGOING` alone would not do it), and, for kernels without it,
//! frames whose `sll_pkttype` is `PACKET_OUTGOING` are skipped. Frames the kernel received with an
//! 802.1Q tag (it strips the tag and reports it aside) and frames cut short because they exceed a
//! block are dropped and counted ([`AfPacketCounters`]): the dataplane speaks untagged Ethernet.

use std::ffi::c_void;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Port, PortInfo};

// ---- Kernel ABI (uapi/linux/if_packet.h), spelled out so the layout is checked right here. ----

const TPACKET_V3: libc::c_int = 2;
const TPACKET_ALIGNMENT: usize = 16;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// The L4 checksum is partial (`CHECKSUM_PARTIAL`, e.g. from a local socket over veth).
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 1 << 2;

const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_LOSS: libc::c_int = 14;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_OUTGOING: u8 = 4;

const PACKET_FANOUT_HASH: u32 = 0;
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;
const PACKET_FANOUT_FLAG_DEFRAG: u32 = 0x8000;

const ETH_P_ALL: u16 = 0x0003;
const ETH_HLEN: usize = 14;
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;

/// `struct tpacket_req3`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketReq3 {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
    tp_retire_blk_tov: u32,
    tp_sizeof_priv: u32,
    tp_feature_req_word: u32,
}

/// `struct tpacket3_hdr` (the `hv1` variant inlined).
#[repr(C)]
struct Tpacket3Hdr {
    tp_next_offset: u32,
    tp_sec: u32,
    tp_nsec: u32,
    tp_snaplen: u32,
    tp_len: u32,
    tp_status: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_rxhash: u32,
    tp_vlan_tci: u32,
    tp_vlan_tpid: u16,
    tp_padding1: u16,
    tp_padding: [u8; 8],
}

/// `struct tpacket_stats_v3`.
#[repr(C)]
#[derive(Default)]
struct TpacketStatsV3 {
    tp_packets: u32,
    tp_drops: u32,
    tp_freeze_q_cnt: u32,
}

/// `struct packet_mreq`.
#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [u8; 8],
}

const TPACKET3_HDR_SIZE: usize = size_of::<Tpacket3Hdr>();
/// Where a V3 transmit slot's frame starts: `TPACKET3_HDRLEN - sizeof(struct sockaddr_ll)`.
const TX_DATA_OFFSET: usize =
    (TPACKET3_HDR_SIZE + TPACKET_ALIGNMENT - 1) & !(TPACKET_ALIGNMENT - 1);
/// `TPACKET3_HDRLEN`: the smallest legal slot.
const TPACKET3_HDRLEN: usize = TX_DATA_OFFSET + size_of::<libc::sockaddr_ll>();
/// Offset of `sll_pkttype` in a received frame: the `sockaddr_ll` follows the aligned header.
const RX_PKTTYPE_OFFSET: usize = TX_DATA_OFFSET + 10;

// `struct tpacket_block_desc`: u32 version, u32 offset_to_priv, then `tpacket_hdr_v1`
// (8-byte aligned) whose first words are block_status, num_pkts, offset_to_first_pkt.
const BLOCK_STATUS_OFFSET: usize = 8;
const BLOCK_NUM_PKTS_OFFSET: usize = 12;
const BLOCK_FIRST_PKT_OFFSET: usize = 16;
/// Size of `struct tpacket_block_desc` (48): no frame starts before it.
const BLOCK_DESC_SIZE: usize = 48;

const _: () = assert!(TPACKET3_HDR_SIZE == 48);
const _: () = assert!(TX_DATA_OFFSET == 48);
const _: () = assert!(TPACKET3_HDRLEN == 68);
const _: () = assert!(size_of::<TpacketReq3>() == 28);
const _: () = assert!(size_of::<TpacketStatsV3>() == 12);
const _: () = assert!(size_of::<PacketMreq>() == 16);

/// Nominal receive frame size. TPACKET_V3 packs receive frames by their real length, so this
/// only has to satisfy the kernel's checks (block size multiple, >= TPACKET3_HDRLEN).
const RX_FRAME_SIZE: u32 = 2048;
/// Transmit ring block size (frames never span blocks; slots are `tx_frame_size`).
const TX_BLOCK_SIZE: usize = 128 * 1024;

// ---- Errors ----

/// Why an AF_PACKET port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A system call failed; `call` names it (and its object), `errno` is the OS error.
    #[error("{call} failed: {}{hint}", os_message(*.errno))]
    Os {
        call: String,
        errno: i32,
        /// What usually causes this error here, with a leading space, or empty.
        hint: &'static str,
    },
    #[error("invalid interface name {0:?} (1 to 15 bytes, no NUL or '/')")]
    BadName(String),
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    #[error("interface {0} is down (bring it up first: ip link set {0} up)")]
    InterfaceDown(String),
    #[error("interface {iface} is not an Ethernet device (ARPHRD type {hwtype})")]
    NotEthernet { iface: String, hwtype: u16 },
    #[error("invalid AF_PACKET port options: {0}")]
    BadOptions(String),
}

impl PortError {
    /// The OS error number, for `Os` errors.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            PortError::Os { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    fn os(call: impl Into<String>, errno: i32) -> PortError {
        let call = call.into();
        let hint = match errno {
            libc::EPERM | libc::EACCES => " (needs root or CAP_NET_RAW)",
            libc::ENOMEM if call.contains("RING") || call.starts_with("mmap") => {
                " (ring too large: lower rx_block_size, rx_block_count or tx_frames)"
            }
            _ => "",
        };
        PortError::Os { call, errno, hint }
    }

    fn last_os(call: impl Into<String>) -> PortError {
        PortError::os(call, last_errno())
    }
}

/// "Operation not permitted", without std's " (os error 1)" suffix.
fn os_message(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

// ---- Options ----

/// How [`open`] sets up the sockets and rings. `Default` gives the documented values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfPacketOptions {
    /// `PortInfo::name` of the ports; `None`: the interface name.
    pub name: Option<String>,
    /// `PortInfo::mac` of the ports; `None`: the interface's own address (SIOCGIFHWADDR).
    /// Another address usually needs `promiscuous` to receive frames sent to it.
    pub mac: Option<[u8; 6]>,
    /// Sockets (worker queues) sharing the interface through one fanout group. Default 1.
    pub queues: usize,
    /// Keep the interface promiscuous while any of the ports is open (a per-socket membership,
    /// undone by the kernel when the socket closes). Default false.
    pub promiscuous: bool,
    /// Receive ring block size in bytes: a power of two, at least the page size, and larger than
    /// the largest frame (reassembled IPv4 datagrams included, up to 64 KiB). Default 128 KiB.
    pub rx_block_size: u32,
    /// Receive ring blocks (at least 2). Default 64: 8 MiB per queue, which holds about 58,000
    /// 64-byte frames, or 64 retire timeouts' worth of a trickle.
    pub rx_block_count: u32,
    /// Milliseconds after which the kernel hands over a block that is not full: the longest a
    /// received frame waits at a low rate. Default 1.
    pub rx_retire_timeout_ms: u32,
    /// Transmit ring slots (rounded up to whole blocks). Default 1024.
    pub tx_frames: u32,
    /// Send straight to the driver, skipping the interface's qdisc (PACKET_QDISC_BYPASS).
    /// Faster, but no queueing discipline or shaping applies to our frames. Default false.
    pub qdisc_bypass: bool,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            name: None,
            mac: None,
            queues: 1,
            promiscuous: false,
            rx_block_size: 128 * 1024,
            rx_block_count: 64,
            rx_retire_timeout_ms: 1,
            tx_frames: 1024,
            qdisc_bypass: false,
        }
    }
}

impl AfPacketOptions {
    fn check(&self) -> Result<(), PortError> {
        let page = page_size();
        let bad = |what: String| Err(PortError::BadOptions(what));
        if self.queues == 0 || self.queues > 256 {
            return bad(format!("queues is {}; must be 1 to 256", self.queues));
        }
        let bs = self.rx_block_size as usize;
        if !bs.is_power_of_two() || bs < page || bs < RX_FRAME_SIZE as usize {
            return bad(format!(
                "rx_block_size is {bs}; must be a power of two and at least the page size ({page})"
            ));
        }
        if self.rx_block_count < 2 {
            return bad(format!(
                "rx_block_count is {}; must be at least 2",
                self.rx_block_count
            ));
        }
        if (bs as u64) * (self.rx_block_count as u64) > u32::MAX as u64 {
            return bad("the receive ring must be smaller than 4 GiB".to_string());
        }
        if self.tx_frames == 0 || self.tx_frames > 1 << 20 {
            return bad(format!(
                "tx_frames is {}; must be 1 to 1048576",
                self.tx_frames
            ));
        }
        Ok(())
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        page as usize
    } else {
        4096
    }
}

// ---- Counters ----

/// Frames this port dropped or could not send, counted without system calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfPacketCounters {
    /// Received UDP frames whose checksum the sender left partial (`TP_STATUS_CSUMNOTREADY`,
    /// local traffic over veth): completed in place before parsing.
    pub rx_csum_completed: u64,
    /// Received frames longer than what the kernel could put in a block (cut short): dropped.
    pub rx_truncated: u64,
    /// Received frames that carried an 802.1Q tag (stripped by the kernel): dropped.
    pub rx_vlan: u64,
    /// Frames this host transmitted on the interface, seen on kernels without
    /// `PACKET_FANOUT_FLAG_IGNORE_OUTGOING`: skipped.
    pub rx_outgoing: u64,
    /// Blocks whose layout did not make sense (should never happen): given back unread.
    pub rx_bad_blocks: u64,
    /// `tx_frame` calls refused because `len` exceeded the slot / `max_frame`.
    pub tx_too_long: u64,
    /// Slots the kernel rejected as malformed (only without `PACKET_LOSS`).
    pub tx_wrong_format: u64,
    /// Failed transmit kicks (`sendto`); the frames stay queued and the next flush retries.
    pub tx_kick_errors: u64,
    /// errno of the last failed transmit kick, 0 if none.
    pub tx_last_errno: i32,
}

// ---- The mapping ----

/// One `mmap` of a packet socket's rings; unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; no reference into the mapping outlives
        // the port that owns this Mapping (frame slices only live during a callback).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len);
        }
    }
}

/// Receive ring cursor.
struct RxRing {
    base: *mut u8,
    block_size: usize,
    block_count: usize,
    /// Block being read, or the next one to wait for.
    block: usize,
    /// Frames not yet read in `block` (0: `block` not opened yet).
    left: u32,
    /// Offset in `block` of the next frame's header.
    offset: usize,
}

impl RxRing {
    fn block_ptr(&self, index: usize) -> *mut u8 {
        debug_assert!(index < self.block_count);
        self.base.wrapping_add(index * self.block_size)
    }
}

/// Transmit ring cursor.
struct TxRing {
    base: *mut u8,
    frame_size: usize,
    frames_per_block: usize,
    block_size: usize,
    frames: usize,
    /// Next slot to fill; the kernel walks the slots in the same order.
    head: usize,
    /// Largest frame we accept (slot room and `max_frame`).
    capacity: usize,
    /// Slots marked SEND_REQUEST since the last successful kick.
    queued: usize,
}

impl TxRing {
    fn slot_ptr(&self, index: usize) -> *mut u8 {
        debug_assert!(index < self.frames);
        self.base.wrapping_add(
            (index / self.frames_per_block) * self.block_size
                + (index % self.frames_per_block) * self.frame_size,
        )
    }
}

/// # Safety
/// `word` must point to a 4-byte aligned `u32` inside a live ring mapping.
unsafe fn status_word<'a>(word: *mut u8) -> &'a AtomicU32 {
    // SAFETY: the caller guarantees alignment and validity; the kernel and we access the status
    // words of the ring as 32-bit words only, and AtomicU32 has the layout of u32.
    unsafe { &*word.cast::<AtomicU32>() }
}

// ---- The port ----

/// One queue of an interface over AF_PACKET: a socket, its mapped rings, and cursors into them.
pub struct AfPacketPort {
    info: PortInfo,
    rx: RxRing,
    tx: TxRing,
    counters: AfPacketCounters,
    /// Cumulative PACKET_STATISTICS (the kernel resets its counters at every read).
    stat_packets: u64,
    stat_drops: u64,
    ifindex: i32,
    queue: usize,
    fanout_id: u16,
    // Field order matters: the rings are unmapped before the socket is closed.
    map: Mapping,
    fd: OwnedFd,
}

// SAFETY: the raw pointers in `rx`/`tx` point into `map`, which this port owns exclusively and
// which lives as long as the port; nothing else in the process refers to the mapping, so moving
// the port to another thread moves sole access along with it.
unsafe impl Send for AfPacketPort {}

impl std::fmt::Debug for AfPacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketPort")
            .field("info", &self.info)
            .field("ifindex", &self.ifindex)
            .field("queue", &self.queue)
            .field("fanout_id", &self.fanout_id)
            .field("fd", &self.fd.as_raw_fd())
            .field("ring_bytes", &self.map.len)
            .finish_non_exhaustive()
    }
}

/// Opens `opts.queues` AF_PACKET ports on `iface`, joined in one fanout group.
///
/// Needs CAP_NET_RAW. The interface must exist, be up, and be Ethernet (or loopback).
pub fn open(iface: &str, opts: &AfPacketOptions) -> Result<Vec<AfPacketPort>, PortError> {
    opts.check()?;
    if iface.is_empty()
        || iface.len() >= libc::IFNAMSIZ
        || iface.bytes().any(|b| b == 0 || b == b'/')
    {
        return Err(PortError::BadName(iface.to_string()));
    }
    let mut ports: Vec<AfPacketPort> = Vec::with_capacity(opts.queues);
    let mut fanout: Option<(u16, u32)> = None;
    for queue in 0..opts.queues {
        let mut port = AfPacketPort::open_one(iface, opts, queue)?;
        fanout = Some(port.join_fanout(fanout)?);
        ports.push(port);
    }
    Ok(ports)
}

/// Distinguishes fanout groups of several `open` calls in one process (fallback ids only).
static OPEN_SEQ: AtomicU32 = AtomicU32::new(0);

impl AfPacketPort {
    fn open_one(iface: &str, opts: &AfPacketOptions, queue: usize) -> Result<Self, PortError> {
        // SAFETY: plain socket(2) call; the returned descriptor is checked and then owned.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                0, // no protocol yet: nothing is received before bind() picks the interface
            )
        };
        if raw < 0 {
            return Err(PortError::last_os("socket(AF_PACKET)"));
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let ifc = Interface::query(fd.as_raw_fd(), iface)?;

        set_int(
            &fd,
            PACKET_VERSION,
            TPACKET_V3,
            "setsockopt(PACKET_VERSION, TPACKET_V3)",
        )?;
        set_int(&fd, PACKET_LOSS, 1, "setsockopt(PACKET_LOSS)")?;
        if opts.qdisc_bypass {
            set_int(
                &fd,
                PACKET_QDISC_BYPASS,
                1,
                "setsockopt(PACKET_QDISC_BYPASS)",
            )?;
        }
        // Kernels before 4.20 lack it; the pkttype check in rx_burst covers them.
        let _ = set_int(
            &fd,
            PACKET_IGNORE_OUTGOING,
            1,
            "setsockopt(PACKET_IGNORE_OUTGOING)",
        );

        // Receive ring.
        let rx_block_size = opts.rx_block_size as usize;
        let rx_block_count = opts.rx_block_count as usize;
        let rx_req = TpacketReq3 {
            tp_block_size: opts.rx_block_size,
            tp_block_nr: opts.rx_block_count,
            tp_frame_size: RX_FRAME_SIZE,
            tp_frame_nr: (opts.rx_block_size / RX_FRAME_SIZE) * opts.rx_block_count,
            tp_retire_blk_tov: opts.rx_retire_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        set_struct(&fd, PACKET_RX_RING, &rx_req, "setsockopt(PACKET_RX_RING)")?;

        // Transmit ring: slots big enough for header + the largest frame, power of two.
        let max_frame = ifc.mtu + ETH_HLEN;
        let tx_frame_size = (TX_DATA_OFFSET + max_frame).next_power_of_two().max(2048);
        let tx_block_size = TX_BLOCK_SIZE.max(tx_frame_size).max(page_size());
        let frames_per_block = tx_block_size / tx_frame_size;
        let tx_block_count = (opts.tx_frames as usize).div_ceil(frames_per_block);
        let tx_frames = tx_block_count * frames_per_block;
        let tx_req = TpacketReq3 {
            tp_block_size: tx_block_size as u32,
            tp_block_nr: tx_block_count as u32,
            tp_frame_size: tx_frame_size as u32,
            tp_frame_nr: tx_frames as u32,
            // Block-level fields must be zero for a transmit ring.
            ..TpacketReq3::default()
        };
        set_struct(&fd, PACKET_TX_RING, &tx_req, "setsockopt(PACKET_TX_RING)")?;

        // One mapping: the receive ring, then the transmit ring.
        let rx_len = rx_block_size * rx_block_count;
        let tx_len = tx_block_size * tx_block_count;
        let len = rx_len + tx_len;
        // SAFETY: a fresh shared mapping of the socket's rings, at an address the kernel picks;
        // the result is checked before use and unmapped by `Mapping::drop`.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(PortError::last_os(format!(
                "mmap({len} bytes of packet rings)"
            )));
        }
        let map = Mapping {
            ptr: NonNull::new(addr.cast::<u8>()).expect("mmap returned a null mapping"),
            len,
        };
        let base = map.ptr.as_ptr();

        // Bind: from here on frames of `iface` arrive in the ring.
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifc.index;
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                ptr::addr_of!(sll).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(PortError::last_os(format!("bind(AF_PACKET, {iface})")));
        }

        if opts.promiscuous {
            let mreq = PacketMreq {
                mr_ifindex: ifc.index,
                mr_type: PACKET_MR_PROMISC,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            set_struct(
                &fd,
                PACKET_ADD_MEMBERSHIP,
                &mreq,
                format!("setsockopt(PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC, {iface})"),
            )?;
        }

        Ok(AfPacketPort {
            info: PortInfo {
                name: opts.name.clone().unwrap_or_else(|| iface.to_string()),
                mac: opts.mac.unwrap_or(ifc.mac),
                max_frame,
            },
            rx: RxRing {
                base,
                block_size: rx_block_size,
                block_count: rx_block_count,
                block: 0,
                left: 0,
                offset: 0,
            },
            tx: TxRing {
                base: base.wrapping_add(rx_len),
                frame_size: tx_frame_size,
                frames_per_block,
                block_size: tx_block_size,
                frames: tx_frames,
                head: 0,
                capacity: max_frame.min(tx_frame_size - TX_DATA_OFFSET),
                queued: 0,
            },
            counters: AfPacketCounters::default(),
            stat_packets: 0,
            stat_drops: 0,
            ifindex: ifc.index,
            queue,
            fanout_id: 0,
            map,
            fd,
        })
    }

    /// Joins the fanout group: creates it (`group` None) or joins `(id, type_flags)`.
    /// Returns the group's `(id, type_flags)` for the next sockets.
    fn join_fanout(&mut self, group: Option<(u16, u32)>) -> Result<(u16, u32), PortError> {
        let base_flags = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG;
        let (id, flags) = match group {
            Some((id, flags)) => {
                self.set_fanout(id, flags)?;
                (id, flags)
            }
            None => {
                // A kernel-chosen id that no other group in this network namespace uses (a
                // derived id could silently join another process's group on the same device).
                let flags = base_flags | PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
                match self.set_fanout(0, flags | PACKET_FANOUT_FLAG_UNIQUEID) {
                    Ok(()) => (self.read_fanout_id()?, flags),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        // Kernels before 4.20: no UNIQUEID/IGNORE_OUTGOING combination. Derive
                        // an id from the process, the interface and a per-process sequence.
                        self.derived_fanout(base_flags)?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        self.fanout_id = id;
        Ok((id, flags))
    }

    fn derived_fanout(&self, flags: u32) -> Result<(u16, u32), PortError> {
        let pid = std::process::id();
        let mut last = None;
        for _ in 0..8 {
            let seq = OPEN_SEQ.fetch_add(1, Ordering::Relaxed);
            let mixed = pid.wrapping_mul(0x9E37_79B9) ^ (self.ifindex as u32).rotate_left(16) ^ seq;
            let id = (mixed ^ (mixed >> 16)) as u16;
            match self.set_fanout(id, flags) {
                Ok(()) => return Ok((id, flags)),
                // Taken by a group of another kind or device: try the next id.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn set_fanout(&self, id: u16, type_flags: u32) -> Result<(), PortError> {
        let val = (id as u32 | (type_flags << 16)) as libc::c_int;
        set_int(
            &self.fd,
            PACKET_FANOUT,
            val,
            format!(
                "setsockopt(PACKET_FANOUT, id {id}, HASH|DEFRAG, {})",
                self.info.name
            ),
        )
    }

    fn read_fanout_id(&self) -> Result<u16, PortError> {
        let mut val: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `val`/`len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_FANOUT,
                ptr::addr_of_mut!(val).cast::<c_void>(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(PortError::last_os("getsockopt(PACKET_FANOUT)"));
        }
        Ok((val as u32 & 0xffff) as u16)
    }

    /// Kernel counters of this queue since `open`: `(received, dropped)` = frames the kernel put
    /// in the receive ring, and frames it dropped because the ring was full (PACKET_STATISTICS;
    /// one system call). Returns the last totals if the call fails.
    pub fn stats(&mut self) -> (u64, u64) {
        let mut st = TpacketStatsV3::default();
        let mut len = size_of::<TpacketStatsV3>() as libc::socklen_t;
        // SAFETY: `st`/`len` are valid for writes of the sizes given; the kernel writes at most
        // `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                ptr::addr_of_mut!(st).cast::<c_void>(),
                &mut len,
            )
        };
        if rc == 0 {
            // tp_packets counts dropped frames too.
            self.stat_packets += u64::from(st.tp_packets);
            self.stat_drops += u64::from(st.tp_drops);
        }
        (
            self.stat_packets.saturating_sub(self.stat_drops),
            self.stat_drops,
        )
    }

    /// Drops and transmit failures this port counted (no system call).
    pub fn counters(&self) -> AfPacketCounters {
        self.counters
    }

    /// The interface's index.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Which of the `open` call's queues this is (0-based).
    pub fn queue(&self) -> usize {
        self.queue
    }

    /// The PACKET_FANOUT group id shared by the ports of one `open` call.
    pub fn fanout_id(&self) -> u16 {
        self.fanout_id
    }

    /// Transmit slots in the ring (the most frames `tx_frame` queues between completions).
    pub fn tx_capacity(&self) -> usize {
        self.tx.frames
    }

    /// Gives the current receive block back to the kernel and moves to the next one.
    fn release_rx_block(&mut self) {
        let block = self.rx.block_ptr(self.rx.block);
        // SAFETY: the status word is at an aligned offset of a block inside the mapping. Release
        // orders our reads of the block's frames before the kernel may reuse it.
        unsafe { status_word(block.wrapping_add(BLOCK_STATUS_OFFSET)) }
            .store(TP_STATUS_KERNEL, Ordering::Release);
        self.rx.block = (self.rx.block + 1) % self.rx.block_count;
        self.rx.left = 0;
        self.rx.offset = 0;
    }
}

impl AsRawFd for AfPacketPort {
    /// The socket, e.g. to `poll` for POLLIN while idle instead of spinning.
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Port for AfPacketPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    fn rx_groups<F: FnMut(&[&[u8]])>(&mut self, max: usize, mut on_group: F) -> usize {
        let mut received = 0;
        // Frames of the current block waiting to be handed over; always handed over before
        // their block goes back to the kernel.
        let mut group: [&[u8]; super::MAX_GROUP] = [&[]; super::MAX_GROUP];
        let mut k = 0;
        // Bounds the walk even if the kernel refills blocks as fast as we give them back.
        let mut blocks_opened = 0;
        while received < max {
            let block = self.rx.block_ptr(self.rx.block);
            let block_size = self.rx.block_size;
            if self.rx.left == 0 {
                if blocks_opened == self.rx.block_count {
                    break;
                }
                // SAFETY: the status word is at an aligned offset of a block inside the mapping.
                // Acquire pairs with the kernel's barrier before it hands the block over.
                let status = unsafe { status_word(block.wrapping_add(BLOCK_STATUS_OFFSET)) }
                    .load(Ordering::Acquire);
                if status & TP_STATUS_USER == 0 {
                    break;
                }
                blocks_opened += 1;
                // SAFETY: the block is ours (TP_STATUS_USER seen with Acquire); both words are
                // 4-byte aligned inside its descriptor.
                let (count, first) = unsafe {
                    (
                        ptr::read(block.add(BLOCK_NUM_PKTS_OFFSET).cast::<u32>()),
                        ptr::read(block.add(BLOCK_FIRST_PKT_OFFSET).cast::<u32>()) as usize,
                    )
                };
                if count == 0 {
                    self.release_rx_block();
                    continue;
                }
                if first < BLOCK_DESC_SIZE || first + TPACKET3_HDR_SIZE > block_size {
                    self.counters.rx_bad_blocks += 1;
                    self.release_rx_block();
                    continue;
                }
                self.rx.left = count;
                self.rx.offset = first;
            }

            let offset = self.rx.offset;
            // SAFETY: `offset + TPACKET3_HDR_SIZE <= block_size` (checked when the block was
            // opened or the offset advanced), frames are 16-byte aligned, the block is ours.
            let hdr = unsafe { ptr::read(block.add(offset).cast::<Tpacket3Hdr>()) };
            let mac = offset + hdr.tp_mac as usize;
            let snaplen = hdr.tp_snaplen as usize;
            if mac < offset + TPACKET3_HDRLEN || mac + snaplen > block_size {
                self.counters.rx_bad_blocks += 1;
                if k > 0 {
                    on_group(&group[..k]);
                    k = 0;
                }
                self.release_rx_block();
                continue;
            }
            // SAFETY: inside the frame's sockaddr_ll, which lies before `mac` (checked above).
            let pkttype = unsafe { ptr::read(block.add(offset + RX_PKTTYPE_OFFSET)) };
            if hdr.tp_status & TP_STATUS_VLAN_VALID != 0 {
                self.counters.rx_vlan += 1;
            } else if pkttype == PACKET_OUTGOING {
                self.counters.rx_outgoing += 1;
            } else if snaplen < hdr.tp_len as usize {
                self.counters.rx_truncated += 1;
            } else {
                // SAFETY: `mac..mac + snaplen` lies inside the block (checked above), which the
                // kernel does not touch until we give it back — always after the group holding
                // this frame was handed over (every `release_rx_block` below is preceded by
                // that); the ring is mapped read-write; no other reference to these bytes
                // exists, and `group` is a local, so no slice outlives this call.
                let frame = unsafe { std::slice::from_raw_parts_mut(block.add(mac), snaplen) };
                if hdr.tp_status & TP_STATUS_CSUMNOTREADY != 0
                    && crate::wire::complete_partial_udp_checksum(frame)
                {
                    self.counters.rx_csum_completed += 1;
                }
                group[k] = frame;
                k += 1;
                received += 1;
            }

            self.rx.left -= 1;
            let next = offset + hdr.tp_next_offset as usize;
            let bad_next =
                self.rx.left > 0 && (next <= offset || next + TPACKET3_HDR_SIZE > block_size);
            if (self.rx.left == 0 || bad_next || k == super::MAX_GROUP) && k > 0 {
                on_group(&group[..k]);
                k = 0;
            }
            if self.rx.left == 0 {
                self.release_rx_block();
            } else if bad_next {
                self.counters.rx_bad_blocks += 1;
                self.release_rx_block();
            } else {
                self.rx.offset = next;
            }
        }
        if k > 0 {
            on_group(&group[..k]);
        }
        received
    }

    /// A `len` larger than `info().max_frame` is refused (returns false, counted as
    /// `tx_too_long`). If `build` returns 0 nothing is sent (and true is returned).
    fn tx_frame<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, build: F) -> bool {
        if len > self.tx.capacity {
            self.counters.tx_too_long += 1;
            return false;
        }
        let slot = self.tx.slot_ptr(self.tx.head);
        // SAFETY: tp_status (offset 20, 4-byte aligned) of a 16-byte aligned slot in the mapping.
        let status =
            unsafe { status_word(slot.wrapping_add(std::mem::offset_of!(Tpacket3Hdr, tp_status))) };
        let now = status.load(Ordering::Acquire);
        if now & TP_STATUS_WRONG_FORMAT != 0 {
            // The kernel stopped at this slot; refilling it lets it go on.
            self.counters.tx_wrong_format += 1;
        } else if now != TP_STATUS_AVAILABLE {
            return false; // ring full: still queued or being sent
        }
        // SAFETY: the slot is ours (AVAILABLE/WRONG_FORMAT: the kernel does not read it until
        // we set SEND_REQUEST), and `TX_DATA_OFFSET + len <= frame_size` (capacity check).
        let buf = unsafe { std::slice::from_raw_parts_mut(slot.add(TX_DATA_OFFSET), len) };
        let built = build(buf);
        debug_assert!(built <= len, "tx_frame: build returned {built} > len {len}");
        let built = built.min(len);
        if built == 0 {
            return true;
        }
        let hdr = slot.cast::<Tpacket3Hdr>();
        // SAFETY: the header lies inside the slot we own; the kernel reads it only after the
        // Release store of SEND_REQUEST below.
        unsafe {
            ptr::addr_of_mut!((*hdr).tp_next_offset).write(0);
            ptr::addr_of_mut!((*hdr).tp_len).write(built as u32);
            ptr::addr_of_mut!((*hdr).tp_snaplen).write(built as u32);
            ptr::addr_of_mut!((*hdr).tp_mac).write(0);
            ptr::addr_of_mut!((*hdr).tp_net).write(0);
        }
        status.store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx.head = (self.tx.head + 1) % self.tx.frames;
        self.tx.queued += 1;
        true
    }

    fn tx_flush(&mut self) {
        if self.tx.queued == 0 {
            return;
        }
        // SAFETY: sendto on our socket with no buffer and no address: the TX ring kick.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null(),
                0,
            )
        };
        if rc >= 0 {
            self.tx.queued = 0;
        } else {
            // EAGAIN/ENOBUFS (device queue full), ENETDOWN, …: the slots that were not sent keep
            // SEND_REQUEST and the next flush tries again.
            self.counters.tx_kick_errors += 1;
            self.counters.tx_last_errno = last_errno();
        }
    }

    /// The kernel's count of frames this queue's ring had no room for (`stats`).
    fn rx_ring_drops(&mut self) -> Option<u64> {
        Some(self.stats().1)
    }
}

// ---- Interface queries ----

struct Interface {
    index: i32,
    mac: [u8; 6],
    mtu: usize,
}

impl Interface {
    fn query(fd: RawFd, iface: &str) -> Result<Interface, PortError> {
        let index =
            ioctl_ifreq(fd, iface, libc::SIOCGIFINDEX as _, "SIOCGIFINDEX").map_err(|e| match e
                .raw_os_error()
            {
                Some(libc::ENODEV) => PortError::NoSuchInterface(iface.to_string()),
                _ => e,
            })?;
        // SAFETY: SIOCGIFINDEX filled the ifindex member.
        let index = unsafe { index.ifr_ifru.ifru_ifindex };

        let flags = ioctl_ifreq(fd, iface, libc::SIOCGIFFLAGS as _, "SIOCGIFFLAGS")?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        let flags = unsafe { flags.ifr_ifru.ifru_flags } as libc::c_int;
        if flags & libc::IFF_UP == 0 {
            return Err(PortError::InterfaceDown(iface.to_string()));
        }

        let hw = ioctl_ifreq(fd, iface, libc::SIOCGIFHWADDR as _, "SIOCGIFHWADDR")?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member (a sockaddr).
        let hw = unsafe { hw.ifr_ifru.ifru_hwaddr };
        if hw.sa_family != ARPHRD_ETHER && hw.sa_family != ARPHRD_LOOPBACK {
            return Err(PortError::NotEthernet {
                iface: iface.to_string(),
                hwtype: hw.sa_family,
            });
        }
        let mut mac = [0u8; 6];
        for (m, b) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *m = *b as u8;
        }

        let mtu = ioctl_ifreq(fd, iface, libc::SIOCGIFMTU as _, "SIOCGIFMTU")?;
        // SAFETY: SIOCGIFMTU filled the mtu member.
        let mtu = unsafe { mtu.ifr_ifru.ifru_mtu };
        let mtu = usize::try_from(mtu).unwrap_or(0);
        if !(68..=65535).contains(&mtu) {
            return Err(PortError::os(
                format!("ioctl(SIOCGIFMTU, {iface}) = {mtu}"),
                libc::EINVAL,
            ));
        }
        Ok(Interface { index, mac, mtu })
    }
}

fn ioctl_ifreq(
    fd: RawFd,
    iface: &str,
    request: libc::Ioctl,
    what: &str,
) -> Result<libc::ifreq, PortError> {
    // SAFETY: ifreq is plain data (a name and a union of plain data); all-zero is valid.
    let mut req: libc::ifreq = unsafe { MaybeUninit::zeroed().assume_init() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq whose name is NUL-terminated (length < IFNAMSIZ checked by
    // `open`); the kernel writes at most sizeof(ifreq) bytes into it.
    let rc = unsafe { libc::ioctl(fd, request, ptr::addr_of_mut!(req)) };
    if rc < 0 {
        return Err(PortError::last_os(format!("ioctl({what}, {iface})")));
    }
    Ok(req)
}

fn set_int(
    fd: &OwnedFd,
    option: libc::c_int,
    value: libc::c_int,
    what: impl Into<String>,
) -> Result<(), PortError> {
    set_struct(fd, option, &value, what)
}

fn set_struct<T>(
    fd: &OwnedFd,
    option: libc::c_int,
    value: &T,
    what: impl Into<String>,
) -> Result<(), PortError> {
    // SAFETY: `value` points to a live T and the length passed is its size; the kernel only
    // reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            option,
            (value as *const T).cast::<c_void>(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(PortError::last_os(what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_message_names_call_errno_and_hint() {
        let e = PortError::os("socket(AF_PACKET)", libc::EPERM);
        assert_eq!(
            e.to_string(),
            "socket(AF_PACKET) failed: Operation not permitted (needs root or CAP_NET_RAW)"
        );
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let e = PortError::os("setsockopt(PACKET_RX_RING)", libc::ENOMEM);
        assert!(e.to_string().contains("ring too large"), "{e}");
        let e = PortError::os("bind(AF_PACKET, x)", libc::ENETDOWN);
        assert_eq!(e.to_string(), "bind(AF_PACKET, x) failed: Network is down");
    }

    #[test]
    fn options_are_checked() {
        assert!(AfPacketOptions::default().check().is_ok());
        for bad in [
            AfPacketOptions {
                queues: 0,
                ..Default::default()
            },
            AfPacketOptions {
                rx_block_size: 3000,
                ..Default::default()
            },
            AfPacketOptions {
                rx_block_size: 1024,
                ..Default::default()
            },
            AfPacketOptions {
                rx_block_count: 1,
                ..Default::default()
            },
            AfPacketOptions {
                tx_frames: 0,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.check(), Err(PortError::BadOptions(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for name in ["", "sixteen-chars-xx", "a/b", "a\0b"] {
            assert!(matches!(
                open(name, &AfPacketOptions::default()),
                Err(PortError::BadName(_))
            ));
        }
    }
}
