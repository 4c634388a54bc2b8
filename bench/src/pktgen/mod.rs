//! `l3ns-pktgen`: a traffic generator for l3ns over any port backend (issue 7).
//!
//! - [`profile`]: the TOML profiles of `pktgen-scripts/` and their command-line overrides;
//! - [`ring`]: the ring of prepared frames (unicast over namespaces × addresses, limited and
//!   directed broadcasts, unowned destinations, malformed frames), built before sending;
//! - [`engine`]: the loop, generic over [`l3ns_dataplane::port::Port`]: token-bucket pacing in
//!   bursts, matching of echo replies, ARP answers for the generator's address;
//! - [`sink`]: the `memory` backend's in-process receiver (self-test);
//! - [`report`]: sent / received / loss / per-kind counts, as text or JSON.

pub mod engine;
pub mod profile;
pub mod report;
pub mod ring;
pub mod sink;

pub use engine::{run, RunContext};
pub use profile::Profile;
pub use report::Report;
pub use ring::Kind;
