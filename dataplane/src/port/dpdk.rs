//! DPDK port backend (cargo feature `dpdk`): our own thin binding to the system DPDK 22.11.
//!
//! - [`DpdkEal`] initialises DPDK's Environment Abstraction Layer once per process (DPDK cannot
//!   be initialised twice, not even after `rte_eal_cleanup`) and cleans it up when the last
//!   handle (including those held by open ports) is dropped.
//! - [`open`] configures one ethdev with `queues` rx/tx queue pairs, an mbuf pool and, for more
//!   than one queue, RSS over IPv4 addresses; it returns one [`DpdkPort`] per queue pair, each
//!   `Send` and meant to be owned by one worker thread.
//! - Received frames are handed to the worker straight from the mbufs (no copy), then the whole
//!   burst is freed at once (one put back into the pool's cache when, as usual, every mbuf is
//!   a lone single-segment one; `rte_pktmbuf_free_bulk` otherwise); frames to send are built
//!   in place in mbufs taken from a small per-queue stash, and go out with one
//!   `rte_eth_tx_burst` per flush.
//!
//! DPDK's burst and mbuf functions are `static inline`; `csrc/l3ns_dpdk_shim.c` exports
//! wrappers, declared in the private `ffi` module below (no bindgen). The shim returns data
//! pointers and lengths for a whole burst so that the Rust loop makes no call per packet.
//!
//! Threads: `rte_eal_init` pins the calling thread to the first lcore of `-l`. Worker threads
//! that are not EAL lcores work as they are (mempool operations then bypass the per-lcore
//! cache); [`DpdkEal::register_thread`] gives such a thread an lcore id so the cache is used.

use super::{Port, PortInfo};
use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most frames one `rx_burst` call receives, and the size of the transmit batch.
pub const MAX_BURST: usize = 64;
/// How many packets ahead of the one being handed out the receive loop prefetches.
const PREFETCH_AHEAD: usize = 2;
/// Fresh mbufs taken from the pool at once for transmission.
const TX_STASH: usize = 32;
/// Ethernet header (no VLAN tag): `max_frame` = MTU + this.
const ETHER_HDR_LEN: usize = 14;
/// DPDK's `RTE_MBUF_DEFAULT_BUF_SIZE` (2048 bytes of data + 128 of headroom).
pub const DEFAULT_MBUF_DATA_ROOM: u16 = 2048 + 128;
/// DPDK's `RTE_MEMPOOL_CACHE_MAX_SIZE`.
const MEMPOOL_CACHE_MAX: u32 = 512;

/// The private FFI: DPDK's exported functions we call directly, and the shim's wrappers.
mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_void};

    /// `struct rte_mbuf`, only ever behind a pointer.
    #[repr(C)]
    pub struct RteMbuf {
        _opaque: [u8; 0],
    }

    /// `struct rte_mempool`, only ever behind a pointer.
    #[repr(C)]
    pub struct RteMempool {
        _opaque: [u8; 0],
    }

    /// `struct rte_ether_addr` (6 bytes, 2-byte aligned).
    #[repr(C, align(2))]
    #[derive(Default)]
    pub struct RteEtherAddr {
        pub addr_bytes: [u8; 6],
    }

    /// `struct l3ns_dev_caps` of the shim.
    #[repr(C)]
    pub struct DevCaps {
        pub flow_type_rss_offloads: u64,
        pub max_rx_pktlen: u32,
        pub max_rx_queues: u16,
        pub max_tx_queues: u16,
        pub min_mtu: u16,
        pub max_mtu: u16,
        pub socket_id: i32,
        pub driver_name: [c_char; 64],
    }

    /// `struct l3ns_port_stats` of the shim.
    #[repr(C)]
    #[derive(Default)]
    pub struct PortStats {
        pub ipackets: u64,
        pub opackets: u64,
        pub ibytes: u64,
        pub obytes: u64,
        pub imissed: u64,
        pub ierrors: u64,
        pub oerrors: u64,
        pub rx_nombuf: u64,
    }

    pub const RTE_ETH_DEV_NO_OWNER: u64 = 0;
    pub const LCORE_ID_ANY: c_uint = u32::MAX;
    /// `RTE_ETH_NAME_MAX_LEN`.
    pub const ETH_NAME_MAX_LEN: usize = 64;

    extern "C" {
        // EAL.
        pub fn rte_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
        pub fn rte_eal_cleanup() -> c_int;
        pub fn rte_eal_get_runtime_dir() -> *const c_char;
        pub fn rte_eal_process_type() -> c_int;
        pub fn rte_thread_register() -> c_int;
        pub fn rte_thread_unregister();
        pub fn rte_dev_probe(devargs: *const c_char) -> c_int;

        // ethdev.
        pub fn rte_eth_dev_get_port_by_name(name: *const c_char, port_id: *mut u16) -> c_int;
        pub fn rte_eth_dev_get_name_by_port(port_id: u16, name: *mut c_char) -> c_int;
        pub fn rte_eth_find_next_owned_by(port_id: u16, owner_id: u64) -> u64;
        pub fn rte_eth_dev_adjust_nb_rx_tx_desc(
            port_id: u16,
            nb_rx: *mut u16,
            nb_tx: *mut u16,
        ) -> c_int;
        pub fn rte_eth_rx_queue_setup(
            port_id: u16,
            rx_queue_id: u16,
            nb_rx_desc: u16,
            socket_id: c_uint,
            rx_conf: *const c_void,
            mb_pool: *mut RteMempool,
        ) -> c_int;
        pub fn rte_eth_tx_queue_setup(
            port_id: u16,
            tx_queue_id: u16,
            nb_tx_desc: u16,
            socket_id: c_uint,
            tx_conf: *const c_void,
        ) -> c_int;
        pub fn rte_eth_dev_set_mtu(port_id: u16, mtu: u16) -> c_int;
        pub fn rte_eth_dev_get_mtu(port_id: u16, mtu: *mut u16) -> c_int;
        pub fn rte_eth_promiscuous_enable(port_id: u16) -> c_int;
        pub fn rte_eth_macaddr_get(port_id: u16, mac: *mut RteEtherAddr) -> c_int;
        pub fn rte_eth_dev_start(port_id: u16) -> c_int;
        pub fn rte_eth_dev_stop(port_id: u16) -> c_int;
        pub fn rte_eth_dev_close(port_id: u16) -> c_int;

        // mempool.
        pub fn rte_pktmbuf_pool_create(
            name: *const c_char,
            n: c_uint,
            cache_size: c_uint,
            priv_size: u16,
            data_room_size: u16,
            socket_id: c_int,
        ) -> *mut RteMempool;
        pub fn rte_mempool_free(mp: *mut RteMempool);
        pub fn rte_mempool_avail_count(mp: *const RteMempool) -> c_uint;

        // Shim (csrc/l3ns_dpdk_shim.c).
        pub fn l3ns_rte_errno() -> c_int;
        pub fn l3ns_rte_strerror(errnum: c_int) -> *const c_char;
        pub fn l3ns_lcore_id() -> c_uint;
        pub fn l3ns_max_ethports() -> u16;
        pub fn l3ns_dev_caps(port_id: u16, out: *mut DevCaps) -> c_int;
        pub fn l3ns_rss_ipv4_mask() -> u64;
        pub fn l3ns_dev_configure(port_id: u16, nb_queues: u16, rss_hf: u64) -> c_int;
        pub fn l3ns_stats_get(port_id: u16, out: *mut PortStats) -> c_int;
        pub fn l3ns_pool_data_room(pool: *mut RteMempool) -> u16;
        pub fn l3ns_burst_guard_enable();
        pub fn l3ns_gate_on_link(port_id: u16, on: c_int);
        pub fn l3ns_link_up(port_id: u16) -> c_int;
        pub fn l3ns_rx_burst(
            port_id: u16,
            queue_id: u16,
            mbufs: *mut *mut RteMbuf,
            datas: *mut *mut u8,
            lens: *mut u16,
            segs_ok: *mut u8,
            nb: u16,
        ) -> u16;
        pub fn l3ns_pktmbuf_free_bulk(mbufs: *mut *mut RteMbuf, n: c_uint);
        pub fn l3ns_alloc_bulk(
            pool: *mut RteMempool,
            mbufs: *mut *mut RteMbuf,
            datas: *mut *mut u8,
            n: c_uint,
        ) -> c_int;
        pub fn l3ns_tx_burst(
            port_id: u16,
            queue_id: u16,
            mbufs: *mut *mut RteMbuf,
            lens: *const u16,
            nb: u16,
        ) -> u16;
    }
}

/// Errors of the DPDK backend. DPDK failures name the call that failed and carry
/// `rte_strerror` of its error number.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("{call} failed: {message} (errno {errno})")]
    Call {
        call: &'static str,
        errno: i32,
        message: String,
    },
    #[error("the DPDK EAL is already initialized in this process")]
    EalAlreadyInitialized,
    #[error("the DPDK EAL was cleaned up; DPDK cannot be initialized twice in one process")]
    EalCleanedUp,
    #[error("argument {0:?} contains a NUL byte")]
    NulInArgument(String),
    #[error("no DPDK port named {device:?} (available: {available:?})")]
    NoSuchDevice {
        device: String,
        available: Vec<String>,
    },
    #[error("DPDK port {port_id} ({device}) is already open in this process")]
    DeviceInUse { port_id: u16, device: String },
    #[error(
        "{device} (driver {driver}): {queues} queue pairs requested, the driver supports at most \
         {max_rx} rx and {max_tx} tx queues"
    )]
    TooManyQueues {
        device: String,
        driver: String,
        queues: u16,
        max_rx: u16,
        max_tx: u16,
    },
    #[error(
        "{device} (driver {driver}) cannot spread {queues} queues by RSS on IPv4 addresses \
         (its RSS hash types: {supported:#x}); use one queue, or RxDistribution::Device when \
         the driver spreads frames over queues itself (e.g. net_af_packet with qpairs=N)"
    )]
    RssUnsupported {
        device: String,
        driver: String,
        queues: u16,
        supported: u64,
    },
    #[error("invalid DPDK port options: {0}")]
    InvalidOptions(String),
}

/// The current `rte_errno` and its text.
fn rte_error(call: &'static str) -> DpdkError {
    // SAFETY: reads the calling thread's `rte_errno` (a thread-local int); no preconditions.
    let errno = unsafe { ffi::l3ns_rte_errno() };
    errno_error(call, errno)
}

fn errno_error(call: &'static str, errno: i32) -> DpdkError {
    // SAFETY: rte_strerror accepts any number and returns a NUL-terminated string that lives
    // in static storage or a thread-local buffer; it is copied before any other DPDK call.
    let message = unsafe { CStr::from_ptr(ffi::l3ns_rte_strerror(errno)) }
        .to_string_lossy()
        .into_owned();
    DpdkError::Call {
        call,
        errno,
        message,
    }
}

/// Turns a DPDK "0 or negative errno" return into a result.
fn check(call: &'static str, ret: c_int) -> Result<c_int, DpdkError> {
    if ret < 0 {
        Err(errno_error(call, -ret))
    } else {
        Ok(ret)
    }
}

// ---- EAL --------------------------------------------------------------------------------------

const EAL_UNINIT: u8 = 0;
const EAL_BUSY: u8 = 1;
const EAL_LIVE: u8 = 2;
const EAL_DOWN: u8 = 3;
static EAL_STATE: AtomicU8 = AtomicU8::new(EAL_UNINIT);

/// The initialised DPDK EAL of this process. Cheap to clone; `rte_eal_cleanup` runs when the
/// last clone and the last port opened with it are dropped.
#[derive(Clone)]
pub struct DpdkEal {
    inner: Arc<EalInner>,
}

struct EalInner {
    args: Vec<String>,
    /// The argument strings given to `rte_eal_init`, kept alive for the life of the EAL.
    _argv: Vec<CString>,
    /// Port ids currently configured through [`open`].
    open_ports: Mutex<Vec<u16>>,
}

impl fmt::Debug for DpdkEal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpdkEal")
            .field("args", &self.inner.args)
            .finish()
    }
}

impl DpdkEal {
    /// Initialises the EAL with `args` exactly as `rte_eal_init` takes them, `args[0]` being
    /// the program name, e.g. `["l3nsd", "--no-pci", "--in-memory", "--file-prefix",
    /// "l3ns-1234", "-l", "0-1", "--vdev", "net_af_packet0,iface=veth0"]`.
    /// Succeeds once per process; later calls fail with `EalAlreadyInitialized` (while a
    /// handle lives) or `EalCleanedUp`. Pins the calling thread to the main lcore.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<DpdkEal, DpdkError> {
        match EAL_STATE.compare_exchange(EAL_UNINIT, EAL_BUSY, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(EAL_DOWN) => return Err(DpdkError::EalCleanedUp),
            Err(_) => return Err(DpdkError::EalAlreadyInitialized),
        }
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let argv: Result<Vec<CString>, DpdkError> = args
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| DpdkError::NulInArgument(a.clone())))
            .collect();
        let argv = match argv {
            Ok(v) => v,
            Err(e) => {
                EAL_STATE.store(EAL_UNINIT, Ordering::Release);
                return Err(e);
            }
        };
        // rte_eal_init may permute the pointer array (getopt); the strings stay ours.
        let mut ptrs: Vec<*mut c_char> = argv.iter().map(|a| a.as_ptr() as *mut c_char).collect();
        ptrs.push(std::ptr::null_mut());
        // SAFETY: `ptrs` holds argc valid NUL-terminated strings followed by NULL, all alive
        // (kept in `EalInner`) for the life of the EAL; getopt only reorders the pointers and
        // never writes through them. EAL_STATE guarantees a single concurrent caller.
        let ret = unsafe { ffi::rte_eal_init((ptrs.len() - 1) as c_int, ptrs.as_mut_ptr()) };
        if ret < 0 {
            let e = rte_error("rte_eal_init");
            EAL_STATE.store(EAL_UNINIT, Ordering::Release);
            return Err(e);
        }
        // Drivers may now unmap memory from the interrupt thread while a worker bursts (a
        // memif peer leaving): `munmap` waits for bursts in progress (see the shim).
        // SAFETY: no arguments; sets a flag the shim reads.
        unsafe { ffi::l3ns_burst_guard_enable() };
        EAL_STATE.store(EAL_LIVE, Ordering::Release);
        Ok(DpdkEal {
            inner: Arc::new(EalInner {
                args,
                _argv: argv,
                open_ports: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The arguments the EAL was initialised with.
    pub fn args(&self) -> &[String] {
        &self.inner.args
    }

    /// DPDK's driver plugin directory found at build time (`-d` takes it), if any. With a
    /// shared DPDK the EAL loads it by default.
    pub fn pmd_dir() -> Option<&'static str> {
        option_env!("L3NS_DPDK_PMD_DIR")
    }

    /// Creates a device after initialisation (`rte_dev_probe`), e.g.
    /// `"net_ring7"` or `"net_af_packet1,iface=veth1"`.
    pub fn probe_vdev(&self, devargs: &str) -> Result<(), DpdkError> {
        let c = CString::new(devargs).map_err(|_| DpdkError::NulInArgument(devargs.into()))?;
        // SAFETY: the EAL is initialised (self exists); `c` is a valid C string for the call.
        check("rte_dev_probe", unsafe { ffi::rte_dev_probe(c.as_ptr()) })?;
        Ok(())
    }

    /// Every ethdev port: (port id, name).
    pub fn ports(&self) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        // SAFETY: returns a constant of the DPDK build.
        let max = u64::from(unsafe { ffi::l3ns_max_ethports() });
        let mut next = 0u64;
        // rte_eth_find_next_owned_by returns RTE_MAX_ETHPORTS after the last port.
        while next < max {
            // SAFETY: the EAL is initialised; `next` is a valid port id (< RTE_MAX_ETHPORTS).
            let p =
                unsafe { ffi::rte_eth_find_next_owned_by(next as u16, ffi::RTE_ETH_DEV_NO_OWNER) };
            if p >= max {
                break;
            }
            let id = p as u16;
            if let Some(name) = port_name(id) {
                out.push((id, name));
            }
            next = p + 1;
        }
        out
    }

    /// Registers the calling (non-EAL) thread as an lcore so mempool operations use a
    /// per-lcore cache; returns its lcore id. Call once in each worker thread.
    pub fn register_thread(&self) -> Result<u32, DpdkError> {
        // SAFETY: the EAL is initialised; registering the current thread has no other
        // precondition (an already registered thread keeps its lcore).
        if unsafe { ffi::rte_thread_register() } != 0 {
            return Err(rte_error("rte_thread_register"));
        }
        Self::lcore_id().ok_or_else(|| errno_error("rte_thread_register", libc::ENOSPC))
    }

    /// Releases the calling thread's lcore taken by [`DpdkEal::register_thread`].
    pub fn unregister_thread(&self) {
        // SAFETY: the EAL is initialised; a no-op for a thread without an lcore.
        unsafe { ffi::rte_thread_unregister() }
    }

    /// The calling thread's lcore id (`None` for a thread that is not an lcore).
    pub fn lcore_id() -> Option<u32> {
        // SAFETY: reads a thread-local variable; valid in any thread.
        let id = unsafe { ffi::l3ns_lcore_id() };
        (id != ffi::LCORE_ID_ANY).then_some(id)
    }
}

impl Drop for EalInner {
    fn drop(&mut self) {
        // DPDK leaves its runtime directory (/var/run/dpdk/PREFIX: config, fbarray files,
        // sockets; some 3 MB of tmpfs a process) behind at cleanup. A primary process owns
        // it, and nothing uses it once the primary is gone: remove it after cleanup. (Two
        // `--in-memory` primaries may share a prefix; the one still running then loses its
        // telemetry and multi-process sockets: give each process its own `--file-prefix`.)
        // SAFETY: both calls only read the EAL's configuration, initialised and still live.
        let own_dir = (unsafe { ffi::rte_eal_process_type() } == RTE_PROC_PRIMARY)
            .then(|| unsafe { CStr::from_ptr(ffi::rte_eal_get_runtime_dir()) })
            .map(|d| std::path::PathBuf::from(d.to_string_lossy().into_owned()))
            .filter(|d| d.parent().is_some_and(|p| p.ends_with("dpdk")));
        // SAFETY: the last handle is gone and every port (each holding a handle) is closed,
        // so no DPDK object is in use; cleanup runs once (EAL_STATE goes LIVE -> DOWN).
        unsafe { ffi::rte_eal_cleanup() };
        EAL_STATE.store(EAL_DOWN, Ordering::Release);
        if let Some(dir) = own_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `rte_eal_process_type()` of a primary process (`enum rte_proc_type_t`).
const RTE_PROC_PRIMARY: c_int = 0;

fn port_name(port_id: u16) -> Option<String> {
    let mut buf = [0 as c_char; ffi::ETH_NAME_MAX_LEN];
    // SAFETY: `buf` has RTE_ETH_NAME_MAX_LEN bytes, as the call requires; it NUL-terminates.
    if unsafe { ffi::rte_eth_dev_get_name_by_port(port_id, buf.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: the call succeeded, so `buf` holds a NUL-terminated string.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

// ---- device -----------------------------------------------------------------------------------

/// How frames are spread over several receive queues.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum RxDistribution {
    /// RSS hashing on the IPv4 source and destination addresses (fragments and all protocols
    /// of a host pair stay on one queue). Opening fails when the device cannot do it.
    #[default]
    RssIpv4,
    /// The device spreads frames itself (net_af_packet `qpairs=N` uses a kernel fanout);
    /// no RSS is configured.
    Device,
}

/// How a device is opened. `Default` suits a test or a small host.
#[derive(Clone, Debug)]
pub struct DpdkPortOptions {
    /// `PortInfo::name`; the device name when `None`.
    pub name: Option<String>,
    /// Mbufs in the device's pool, shared by all its queues; must cover every queue's rx and
    /// tx descriptors plus bursts in flight (2^q - 1 is the most memory-efficient).
    pub nb_mbufs: u32,
    /// Per-lcore mempool cache (at most 512 and at most `nb_mbufs / 1.5`; 0 disables).
    pub mbuf_cache: u32,
    /// Data room of each mbuf, headroom included.
    pub mbuf_data_room: u16,
    /// Descriptors per rx and per tx queue (adjusted to the device's limits).
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub distribution: RxDistribution,
    pub promiscuous: bool,
    /// MTU to set; the device's current MTU when `None`.
    pub mtu: Option<u16>,
    /// Restart the device (stop, start) while its link stays down, after 1 s and then at
    /// growing intervals up to 8 s: a memif client whose server went away connects again only
    /// on a start in DPDK 22.11. Only for a device opened with one queue pair (its only queue
    /// handle restarts it between its own bursts); ignored otherwise.
    pub restart_when_down: bool,
}

impl Default for DpdkPortOptions {
    fn default() -> Self {
        DpdkPortOptions {
            name: None,
            nb_mbufs: 8191,
            mbuf_cache: 256,
            mbuf_data_room: DEFAULT_MBUF_DATA_ROOM,
            rx_desc: 1024,
            tx_desc: 1024,
            distribution: RxDistribution::RssIpv4,
            promiscuous: false,
            mtu: None,
            restart_when_down: false,
        }
    }
}

/// Device counters (`rte_eth_stats_get`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DpdkPortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Dropped by the device because the rx queue was full.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// Receive mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// One configured, started ethdev with its pool; closed when the last queue handle (and
/// stats handle) is dropped.
struct Device {
    eal: DpdkEal,
    port_id: u16,
    name: String,
    driver: String,
    pool: *mut ffi::RteMempool,
}

// SAFETY: `pool` is only used for thread-safe DPDK calls (mempool counts; the pool's ring is
// multi-producer/multi-consumer) and freed once in Drop; the port id is plain data.
unsafe impl Send for Device {}
// SAFETY: as above: shared access only reaches thread-safe DPDK calls (rte_eth_stats_get,
// rte_mempool_avail_count).
unsafe impl Sync for Device {}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every queue handle is gone (each holds an Arc to this device) and has freed
        // its own mbufs, so no thread polls the device; stopping and closing it returns the
        // mbufs held in its rings, after which nothing references the pool.
        unsafe {
            ffi::rte_eth_dev_stop(self.port_id);
            ffi::rte_eth_dev_close(self.port_id);
            ffi::rte_mempool_free(self.pool);
            ffi::l3ns_gate_on_link(self.port_id, 0);
        }
        if let Ok(mut open) = self.eal.inner.open_ports.lock() {
            open.retain(|p| *p != self.port_id);
        }
    }
}

impl Device {
    fn stats(&self) -> Result<DpdkPortStats, DpdkError> {
        let mut s = ffi::PortStats::default();
        // SAFETY: `s` is a valid, writable l3ns_port_stats; the port id is a configured port.
        check("rte_eth_stats_get", unsafe {
            ffi::l3ns_stats_get(self.port_id, &mut s)
        })?;
        Ok(DpdkPortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }
}

/// A clonable, `Send + Sync` handle reading one device's counters (for the metrics thread).
/// Keeps the device open while it lives.
#[derive(Clone)]
pub struct DpdkStatsHandle {
    dev: Arc<Device>,
}

impl DpdkStatsHandle {
    pub fn stats(&self) -> Result<DpdkPortStats, DpdkError> {
        self.dev.stats()
    }
    pub fn port_id(&self) -> u16 {
        self.dev.port_id
    }
    pub fn device(&self) -> &str {
        &self.dev.name
    }
    /// Free mbufs in the device's pool.
    pub fn pool_available(&self) -> u32 {
        // SAFETY: the pool lives as long as the device; counting is thread-safe.
        unsafe { ffi::rte_mempool_avail_count(self.dev.pool) }
    }
}

/// Opens the DPDK port named `device` (e.g. `"net_ring0"`, `"net_af_packet0"`, or a PCI
/// address) with `queues` rx/tx queue pairs, one per worker. See [`open_port_id`].
pub fn open(
    eal: &DpdkEal,
    device: &str,
    queues: u16,
    opts: &DpdkPortOptions,
) -> Result<Vec<DpdkPort>, DpdkError> {
    let c = CString::new(device).map_err(|_| DpdkError::NulInArgument(device.into()))?;
    let mut port_id = 0u16;
    // SAFETY: the EAL is initialised; `c` is a C string and `port_id` writable for the call.
    if unsafe { ffi::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut port_id) } != 0 {
        let available = eal.ports().into_iter().map(|(_, n)| n).collect();
        return Err(DpdkError::NoSuchDevice {
            device: device.into(),
            available,
        });
    }
    open_port_id(eal, port_id, queues, opts)
}

static POOL_SEQ: AtomicU32 = AtomicU32::new(0);

/// Configures and starts port `port_id`: one mbuf pool (`opts.nb_mbufs`, `opts.mbuf_cache`)
/// on the device's NUMA socket, `queues` rx and tx queues sharing it, RSS over IPv4
/// addresses when `queues > 1` (see [`RxDistribution`]). Returns the queue pairs in order;
/// the device is stopped and closed when all of them (and any stats handle) are dropped.
/// Validation errors (options, queue count, RSS support, port in use) leave the device
/// untouched; a DPDK failure from `rte_eth_dev_configure` on closes it (the pool is freed).
pub fn open_port_id(
    eal: &DpdkEal,
    port_id: u16,
    queues: u16,
    opts: &DpdkPortOptions,
) -> Result<Vec<DpdkPort>, DpdkError> {
    let device = port_name(port_id).ok_or_else(|| DpdkError::NoSuchDevice {
        device: format!("port {port_id}"),
        available: port_names(eal),
    })?;
    if queues == 0 {
        return Err(DpdkError::InvalidOptions(
            "at least one queue pair is needed".into(),
        ));
    }
    if opts.mbuf_cache > MEMPOOL_CACHE_MAX || opts.mbuf_cache as u64 * 3 / 2 > opts.nb_mbufs as u64
    {
        return Err(DpdkError::InvalidOptions(format!(
            "mbuf_cache {} must be at most {MEMPOOL_CACHE_MAX} and at most nb_mbufs / 1.5 (nb_mbufs {})",
            opts.mbuf_cache, opts.nb_mbufs
        )));
    }
    if (opts.mbuf_data_room as usize) < 128 + 64 {
        return Err(DpdkError::InvalidOptions(format!(
            "mbuf_data_room {} leaves no room after the 128-byte headroom",
            opts.mbuf_data_room
        )));
    }

    // Claim the port for this process's lifetime of the device.
    {
        let mut open = eal
            .inner
            .open_ports
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if open.contains(&port_id) {
            return Err(DpdkError::DeviceInUse { port_id, device });
        }
        open.push(port_id);
    }
    let release_claim = |eal: &DpdkEal| {
        if let Ok(mut open) = eal.inner.open_ports.lock() {
            open.retain(|p| *p != port_id);
        }
    };

    let mut caps = ffi::DevCaps {
        flow_type_rss_offloads: 0,
        max_rx_pktlen: 0,
        max_rx_queues: 0,
        max_tx_queues: 0,
        min_mtu: 0,
        max_mtu: 0,
        socket_id: -1,
        driver_name: [0; 64],
    };
    // SAFETY: `caps` is a valid, writable l3ns_dev_caps; the shim NUL-terminates driver_name.
    if let Err(e) = check("rte_eth_dev_info_get", unsafe {
        ffi::l3ns_dev_caps(port_id, &mut caps)
    }) {
        release_claim(eal);
        return Err(e);
    }
    // SAFETY: driver_name is NUL-terminated within its 64 bytes (zeroed, strncpy'd n-1).
    let driver = unsafe { CStr::from_ptr(caps.driver_name.as_ptr()) }
        .to_string_lossy()
        .into_owned();

    let rss_hf = if queues > 1 && opts.distribution == RxDistribution::RssIpv4 {
        // SAFETY: returns a constant.
        let hf = unsafe { ffi::l3ns_rss_ipv4_mask() } & caps.flow_type_rss_offloads;
        if hf == 0 {
            release_claim(eal);
            return Err(DpdkError::RssUnsupported {
                device,
                driver,
                queues,
                supported: caps.flow_type_rss_offloads,
            });
        }
        hf
    } else {
        0
    };
    if queues > caps.max_rx_queues || queues > caps.max_tx_queues {
        release_claim(eal);
        return Err(DpdkError::TooManyQueues {
            device,
            driver,
            queues,
            max_rx: caps.max_rx_queues,
            max_tx: caps.max_tx_queues,
        });
    }

    // The pool (name unique in the process, under RTE_MEMPOOL_NAMESIZE).
    let pool_name = CString::new(format!(
        "l3ns{}_{}",
        port_id,
        POOL_SEQ.fetch_add(1, Ordering::Relaxed)
    ))
    .expect("no NUL in a formatted name");
    // SAFETY: the EAL is initialised; the name is a C string; sizes were checked above.
    let pool = unsafe {
        ffi::rte_pktmbuf_pool_create(
            pool_name.as_ptr(),
            opts.nb_mbufs,
            opts.mbuf_cache,
            0,
            opts.mbuf_data_room,
            caps.socket_id,
        )
    };
    if pool.is_null() {
        let e = rte_error("rte_pktmbuf_pool_create");
        release_claim(eal);
        return Err(e);
    }
    // From here on, `Device`'s Drop stops and closes the port, frees the pool and releases
    // the claim, on failure as well as at the end.
    let dev = Arc::new(Device {
        eal: eal.clone(),
        port_id,
        name: device.clone(),
        driver,
        pool,
    });

    // Below, `port_id` names an existing port claimed by this function (no other thread
    // configures or polls it) and `pool` is the live pool created above.
    // SAFETY: plain values only; the shim builds the rte_eth_conf on its stack.
    check("rte_eth_dev_configure", unsafe {
        ffi::l3ns_dev_configure(port_id, queues, rss_hf)
    })?;
    if let Some(mtu) = opts.mtu {
        // SAFETY: plain values only, on a configured, unstarted port.
        check("rte_eth_dev_set_mtu", unsafe {
            ffi::rte_eth_dev_set_mtu(port_id, mtu)
        })?;
    }
    let (mut nb_rx, mut nb_tx) = (opts.rx_desc, opts.tx_desc);
    // SAFETY: both out-pointers are valid, writable locals for the call.
    check("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
        ffi::rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &mut nb_rx, &mut nb_tx)
    })?;
    // SOCKET_ID_ANY (-1) passes through as the unsigned value DPDK expects.
    let socket = caps.socket_id as c_uint;
    for q in 0..queues {
        // SAFETY: q < queues as configured; a NULL rx_conf means the driver's defaults; the
        // pool outlives the queue (Device frees it only after closing the port).
        check("rte_eth_rx_queue_setup", unsafe {
            ffi::rte_eth_rx_queue_setup(port_id, q, nb_rx, socket, std::ptr::null(), pool)
        })?;
        // SAFETY: q < queues as configured; a NULL tx_conf means the driver's defaults.
        check("rte_eth_tx_queue_setup", unsafe {
            ffi::rte_eth_tx_queue_setup(port_id, q, nb_tx, socket, std::ptr::null())
        })?;
    }
    if opts.promiscuous {
        // SAFETY: plain value only, on a configured port.
        check("rte_eth_promiscuous_enable", unsafe {
            ffi::rte_eth_promiscuous_enable(port_id)
        })?;
    }
    // A memif burst must not go into the driver while its peer connects or leaves (see
    // "bursts against a driver's disconnect" in the shim).
    // SAFETY: plain values only.
    unsafe { ffi::l3ns_gate_on_link(port_id, c_int::from(dev.driver == "net_memif")) };
    // SAFETY: every queue was set up above.
    check("rte_eth_dev_start", unsafe {
        ffi::rte_eth_dev_start(port_id)
    })?;

    let mut mac = ffi::RteEtherAddr::default();
    // SAFETY: `mac` is a valid, writable rte_ether_addr (6 bytes, 2-aligned).
    check("rte_eth_macaddr_get", unsafe {
        ffi::rte_eth_macaddr_get(port_id, &mut mac)
    })?;
    let mut mtu = 0u16;
    // SAFETY: `mtu` is a valid, writable u16.
    check("rte_eth_dev_get_mtu", unsafe {
        ffi::rte_eth_dev_get_mtu(port_id, &mut mtu)
    })?;
    // SAFETY: `pool` is the live pktmbuf pool created above.
    let room = unsafe { ffi::l3ns_pool_data_room(pool) } as usize;
    let max_frame = (mtu as usize + ETHER_HDR_LEN).min(room);
    let info = PortInfo {
        name: opts.name.clone().unwrap_or_else(|| device.clone()),
        mac: mac.addr_bytes,
        max_frame,
    };

    Ok((0..queues)
        .map(|q| {
            let mut p = DpdkPort::new(dev.clone(), info.clone(), q);
            p.restart = opts.restart_when_down && queues == 1;
            p
        })
        .collect())
}

fn port_names(eal: &DpdkEal) -> Vec<String> {
    eal.ports().into_iter().map(|(_, n)| n).collect()
}

// ---- queue pair -------------------------------------------------------------------------------

/// Per-queue counters kept by the queue's worker (plain fields, read with
/// [`DpdkPort::counters`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DpdkQueueCounters {
    /// Frames handed to `rx_burst` callbacks.
    pub rx_frames: u64,
    /// Frames dropped on receive because they spanned several mbufs.
    pub rx_multi_segment: u64,
    /// Frames the device accepted for transmission.
    pub tx_frames: u64,
    /// Frames the device did not take at `tx_flush` (freed).
    pub tx_dropped: u64,
    /// `tx_frame` refusals because the pool had no free mbuf.
    pub tx_no_mbuf: u64,
    /// `tx_frame` refusals because `len` exceeded `max_frame`.
    pub tx_oversize: u64,
    /// Restarts of the device while its link was down (`restart_when_down`).
    pub restarts: u64,
}

/// One rx/tx queue pair of an open DPDK device. Owned by one worker thread.
pub struct DpdkPort {
    dev: Arc<Device>,
    info: PortInfo,
    port_id: u16,
    queue: u16,
    pool: *mut ffi::RteMempool,
    rx_mbufs: [*mut ffi::RteMbuf; MAX_BURST],
    rx_data: [*mut u8; MAX_BURST],
    rx_lens: [u16; MAX_BURST],
    rx_seg_ok: [u8; MAX_BURST],
    tx_mbufs: [*mut ffi::RteMbuf; MAX_BURST],
    tx_lens: [u16; MAX_BURST],
    tx_len: usize,
    stash: [*mut ffi::RteMbuf; TX_STASH],
    stash_data: [*mut u8; TX_STASH],
    stash_len: usize,
    counters: DpdkQueueCounters,
    /// `restart_when_down` and this is the device's only queue.
    restart: bool,
    /// Since when the link has been seen down, and when to try a restart next.
    down: Option<(Instant, Instant)>,
    /// A restart's start failed: the device is stopped and not polled until one succeeds.
    stopped: bool,
}

// SAFETY: a DpdkPort is the only user of its (port, queue) pair, and the mbufs it holds (stash,
// pending tx) are exclusively its own; DPDK allows a queue to be polled from any thread as
// long as one thread at a time does, which `&mut self` on every I/O method guarantees. The
// shared pool is multi-producer/multi-consumer.
unsafe impl Send for DpdkPort {}

impl DpdkPort {
    fn new(dev: Arc<Device>, info: PortInfo, queue: u16) -> Self {
        DpdkPort {
            port_id: dev.port_id,
            pool: dev.pool,
            dev,
            info,
            queue,
            rx_mbufs: [std::ptr::null_mut(); MAX_BURST],
            rx_data: [std::ptr::null_mut(); MAX_BURST],
            rx_lens: [0; MAX_BURST],
            rx_seg_ok: [0; MAX_BURST],
            tx_mbufs: [std::ptr::null_mut(); MAX_BURST],
            tx_lens: [0; MAX_BURST],
            tx_len: 0,
            stash: [std::ptr::null_mut(); TX_STASH],
            stash_data: [std::ptr::null_mut(); TX_STASH],
            stash_len: 0,
            counters: DpdkQueueCounters::default(),
            restart: false,
            down: None,
            stopped: false,
        }
    }

    pub fn port_id(&self) -> u16 {
        self.port_id
    }
    pub fn queue_id(&self) -> u16 {
        self.queue
    }
    /// The device name (as DPDK knows it) and its driver.
    pub fn device(&self) -> (&str, &str) {
        (&self.dev.name, &self.dev.driver)
    }
    pub fn counters(&self) -> DpdkQueueCounters {
        self.counters
    }
    /// The whole device's counters (all queues).
    pub fn port_stats(&self) -> Result<DpdkPortStats, DpdkError> {
        self.dev.stats()
    }
    /// A handle for reading the device's counters from another thread.
    pub fn stats_handle(&self) -> DpdkStatsHandle {
        DpdkStatsHandle {
            dev: self.dev.clone(),
        }
    }

    /// Refills the transmit stash; false when the pool cannot give even one mbuf.
    #[cold]
    fn refill_stash(&mut self) -> bool {
        for n in [TX_STASH, 1] {
            // SAFETY: `stash`/`stash_data` have room for TX_STASH entries (n <= TX_STASH) and
            // are empty (stash_len == 0); `pool` is live while `dev` is held.
            let ret = unsafe {
                ffi::l3ns_alloc_bulk(
                    self.pool,
                    self.stash.as_mut_ptr(),
                    self.stash_data.as_mut_ptr(),
                    n as c_uint,
                )
            };
            if ret == 0 {
                self.stash_len = n;
                return true;
            }
        }
        false
    }
}

#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address; SSE is part of the
    // x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Port for DpdkPort {
    fn info(&self) -> &PortInfo {
        &self.info
    }

    #[inline]
    fn rx_groups<F: FnMut(&[&[u8]])>(&mut self, max: usize, mut on_group: F) -> usize {
        let want = max.min(MAX_BURST).min(super::MAX_GROUP) as u16;
        if want == 0 || self.stopped {
            return 0;
        }
        // SAFETY: the four arrays have MAX_BURST >= want entries; this handle owns the queue.
        let n = unsafe {
            ffi::l3ns_rx_burst(
                self.port_id,
                self.queue,
                self.rx_mbufs.as_mut_ptr(),
                self.rx_data.as_mut_ptr(),
                self.rx_lens.as_mut_ptr(),
                self.rx_seg_ok.as_mut_ptr(),
                want,
            )
        } as usize;
        if n == 0 {
            return 0;
        }
        let mut group: [&[u8]; super::MAX_GROUP] = [&[]; super::MAX_GROUP];
        let mut handed = 0;
        for i in 0..n {
            if i + PREFETCH_AHEAD < n {
                prefetch(self.rx_data[i + PREFETCH_AHEAD]);
            }
            if self.rx_seg_ok[i] == 0 {
                self.counters.rx_multi_segment += 1;
                continue;
            }
            // SAFETY: rx_data[i] points at the first (and only) segment of mbuf i, whose
            // rx_lens[i] bytes the driver wrote; the mbuf is ours until the free below, and
            // the slices cannot escape the callback (higher-ranked lifetime) or this function
            // (`group` is a local).
            group[handed] =
                unsafe { std::slice::from_raw_parts(self.rx_data[i], self.rx_lens[i] as usize) };
            handed += 1;
        }
        if handed > 0 {
            on_group(&group[..handed]);
        }
        // SAFETY: the first n entries are the mbufs just received, each freed exactly once;
        // no slice into them outlives the call above. (If a callback panics they leak, which
        // is safe.)
        unsafe { ffi::l3ns_pktmbuf_free_bulk(self.rx_mbufs.as_mut_ptr(), n as c_uint) };
        self.counters.rx_frames += handed as u64;
        handed
    }

    /// Builds the frame in place in a fresh mbuf. Refuses (false) when `len` exceeds
    /// `max_frame` or the pool is empty. A full transmit batch is flushed first. A builder
    /// returning 0 sends nothing (the mbuf is kept for the next frame).
    #[inline]
    fn tx_frame<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, build: F) -> bool {
        if len > self.info.max_frame {
            self.counters.tx_oversize += 1;
            return false;
        }
        if self.tx_len == MAX_BURST {
            self.tx_flush();
        }
        if self.stash_len == 0 && !self.refill_stash() {
            self.counters.tx_no_mbuf += 1;
            return false;
        }
        let top = self.stash_len - 1;
        // SAFETY: stash_data[top] is the data start of a fresh mbuf owned by this handle with
        // at least max_frame >= len bytes of room (max_frame <= data room - headroom); the
        // bytes are initialised (zero-filled pool memory or an earlier frame's bytes); the
        // slice ends with `build`. The mbuf stays in the stash until `build` returns, so a
        // panicking builder leaks nothing.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.stash_data[top], len) };
        let n = build(buf).min(len);
        if n == 0 {
            return true;
        }
        self.stash_len = top;
        self.tx_mbufs[self.tx_len] = self.stash[top];
        self.tx_lens[self.tx_len] = n as u16;
        self.tx_len += 1;
        true
    }

    fn tx_flush(&mut self) {
        let n = self.tx_len;
        if n == 0 {
            return;
        }
        if self.stopped {
            // A stopped device takes nothing (DPDK's stopped-port burst only logs an error).
            // SAFETY: the first n entries are fresh mbufs owned by this handle, freed once.
            unsafe { ffi::l3ns_pktmbuf_free_bulk(self.tx_mbufs.as_mut_ptr(), n as c_uint) };
            self.counters.tx_dropped += n as u64;
            self.tx_len = 0;
            return;
        }
        // SAFETY: the first n entries are fresh single-segment mbufs owned by this handle with
        // lengths within their data room; this handle owns the tx queue. The device takes
        // ownership of the first `sent`.
        let sent = unsafe {
            ffi::l3ns_tx_burst(
                self.port_id,
                self.queue,
                self.tx_mbufs.as_mut_ptr(),
                self.tx_lens.as_ptr(),
                n as u16,
            )
        } as usize;
        if sent < n {
            // SAFETY: entries sent..n were not taken by the device and are still ours; each is
            // freed once.
            unsafe {
                ffi::l3ns_pktmbuf_free_bulk(
                    self.tx_mbufs.as_mut_ptr().add(sent),
                    (n - sent) as c_uint,
                )
            };
            self.counters.tx_dropped += (n - sent) as u64;
        }
        self.counters.tx_frames += sent as u64;
        self.tx_len = 0;
    }

    /// The device's `imissed` + `rx_nombuf`, reported by queue 0 only (they are per device).
    fn rx_ring_drops(&mut self) -> Option<u64> {
        if self.queue != 0 {
            return None;
        }
        self.port_stats().ok().map(|s| s.imissed + s.rx_nombuf)
    }

    fn tx_ring_drops(&mut self) -> Option<u64> {
        Some(self.counters.tx_dropped)
    }

    /// `restart_when_down`: restarts the device while its link stays down (see the option).
    fn maintain(&mut self, now: Instant) {
        if !self.restart {
            return;
        }
        // SAFETY: plain value; a link query that does not wait.
        if !self.stopped && unsafe { ffi::l3ns_link_up(self.port_id) } == 1 {
            self.down = None;
            return;
        }
        let (since, next) = *self.down.get_or_insert((now, now + RESTART_FIRST));
        if now < next {
            return;
        }
        self.tx_flush();
        // SAFETY: this handle is the device's only queue (`restart`), so no other thread
        // polls it; stop and start are control calls between this thread's own bursts. A
        // start that fails leaves the device stopped, and `stopped` keeps it unpolled.
        let started = unsafe {
            if !self.stopped {
                ffi::rte_eth_dev_stop(self.port_id);
            }
            ffi::rte_eth_dev_start(self.port_id)
        } == 0;
        self.stopped = !started;
        self.counters.restarts += 1;
        let wait = (now - since).clamp(RESTART_FIRST, RESTART_MAX);
        self.down = Some((since, now + wait));
    }
}

/// `restart_when_down`: the first restart after the link is seen down, and the longest wait
/// between two (the wait doubles: it is the time the link has been down, within these bounds).
const RESTART_FIRST: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(8);

impl Drop for DpdkPort {
    fn drop(&mut self) {
        self.tx_flush();
        // SAFETY: the first stash_len stash entries are fresh mbufs owned by this handle,
        // freed once; the pool is alive (`dev` is dropped after this).
        unsafe { ffi::l3ns_pktmbuf_free_bulk(self.stash.as_mut_ptr(), self.stash_len as c_uint) };
        self.stash_len = 0;
    }
}

impl fmt::Debug for DpdkPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpdkPort")
            .field("device", &self.dev.name)
            .field("port_id", &self.port_id)
            .field("queue", &self.queue)
            .field("info", &self.info)
            .finish()
    }
}
