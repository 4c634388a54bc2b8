//! Packet I/O backends. A `Port` is one queue of one device, owned by one worker: it hands out
//! bursts of received frames and takes frames to transmit. Workers are generic over it, so the
//! per-frame calls below are monomorphised, not virtual.
//!
//! Backends: `memory` (tests, benchmarks, the demo), `afpacket` (any Linux interface),
//! `dpdk` (cargo feature `dpdk`). Only backend modules may contain `unsafe` code.

#[allow(unsafe_code)]
pub mod afpacket;
#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod dpdk;
pub mod memory;

/// The most frames a port hands over in one group (see [`Port::rx_groups`]).
pub const MAX_GROUP: usize = 64;

/// What a worker needs to know about the device behind a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// The port (device) name, as configured; becomes the device name in the model.
    pub name: String,
    pub mac: [u8; 6],
    /// Largest frame (Ethernet header included, FCS excluded) the port can send.
    pub max_frame: usize,
}

/// One receive and transmit queue of a device.
pub trait Port: Send {
    fn info(&self) -> &PortInfo;

    /// Receives up to `max` frames and hands them to `on_group` in arrival order, in one or
    /// more groups of at most [`MAX_GROUP`] frames. A group's frames are valid only during its
    /// call (the backend may reuse the buffers right after). Returns how many frames were
    /// received (0 when idle; never blocks). Workers take groups so that they can prefetch
    /// what a whole group needs before reading any of it.
    fn rx_groups<F: FnMut(&[&[u8]])>(&mut self, max: usize, on_group: F) -> usize;

    /// Like [`Port::rx_groups`], one frame at a time.
    #[inline]
    fn rx_burst<F: FnMut(&[u8])>(&mut self, max: usize, mut on_frame: F) -> usize {
        self.rx_groups(max, |group| {
            for frame in group {
                on_frame(frame);
            }
        })
    }

    /// Queues one frame for transmission: `build` gets a zeroed-or-stale buffer of at least
    /// `len` bytes and returns the frame's final length (<= `len`). Returns false, without
    /// calling `build`, when the transmit ring has no room; the caller counts the drop.
    fn tx_frame<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, build: F) -> bool;

    /// Hands every queued frame to the device. Called once per poll, after the burst.
    fn tx_flush(&mut self);

    /// Frames the port's receive ring had no room for since it was opened, dropped by the
    /// device or the kernel before the worker could take them (DPDK `imissed` + `rx_nombuf`,
    /// AF_PACKET's `tp_drops`, a memory wire's `deliver` into a full ring): cumulative, or
    /// `None` where the port cannot tell (or another queue of the device reports them). May
    /// cost a system call: the worker reads it about every 100 ms.
    fn rx_ring_drops(&mut self) -> Option<u64> {
        None
    }

    /// Frames `tx_frame` accepted that the device then refused at `tx_flush` (its transmit
    /// ring full): cumulative, or `None` where the port never drops an accepted frame (it
    /// retries, or refuses in `tx_frame`). Read with [`Port::rx_ring_drops`].
    fn tx_ring_drops(&mut self) -> Option<u64> {
        None
    }

    /// Housekeeping the worker runs between polls, about every 100 ms (with the ring-drop
    /// reads): e.g. a DPDK memif client restarting its device when its server went away.
    fn maintain(&mut self, _now: std::time::Instant) {}
}
