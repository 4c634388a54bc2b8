//! l3ns control plane: the namespace model and its rules (R1–R6), the snapshot publisher.
#![forbid(unsafe_code)]

pub mod error;
pub mod model;
pub mod publish;
pub mod runtime;
