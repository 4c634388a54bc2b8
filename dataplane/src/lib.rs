//! l3ns dataplane: the packet path of DESIGN.md.
//!
//! Read in the order a received packet travels: `port` (I/O backends) → `wire` (checked views
//! over frames) → `owner_table` (the immutable snapshot the workers read, R7–R10, R13) →
//! `rules` (the pure rule functions). `unsafe` code is denied everywhere except in the port
//! backends that talk to the kernel or DPDK, in `prefetch` (one cache hint, see there), in
//! `ring` (the value cells of a lock-free ring, see there), and in
//! `worker`'s `unicast_remembered` (one reference count taken on a socket queue that the
//! snapshot the worker holds keeps alive, see `OwnerTable::sockets_gen`).
#![deny(unsafe_code)]

pub mod api;
pub mod counters;
pub mod errno;
pub mod owner_table;
pub mod port;
#[allow(unsafe_code)]
pub mod prefetch;
#[allow(unsafe_code)]
pub mod ring;
pub mod rules;
pub mod socket;
pub mod types;
pub mod wire;
pub mod worker;

pub use errno::Errno;
pub use owner_table::OwnerTable;
pub use types::*;
