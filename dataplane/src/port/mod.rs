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

    /// Receives up to `max` frames and calls `on_frame` for each, in arrival order. A frame's
    /// bytes are valid only during its call (the backend may reuse the buffer right after).
    /// Returns how many frames were received (0 when idle; never blocks).
    fn rx_burst<F: FnMut(&[u8])>(&mut self, max: usize, on_frame: F) -> usize;

    /// Queues one frame for transmission: `build` gets a zeroed-or-stale buffer of at least
    /// `len` bytes and returns the frame's final length (<= `len`). Returns false, without
    /// calling `build`, when the transmit ring has no room; the caller counts the drop.
    fn tx_frame<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, build: F) -> bool;

    /// Hands every queued frame to the device. Called once per poll, after the burst.
    fn tx_flush(&mut self);
}
