//! l3ns control plane: the namespace model and its rules (R1–R6), the snapshot publisher.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod daemon;
pub mod error;
pub mod heap;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod publish;
pub mod runtime;
pub mod service;
pub mod state;
pub mod stop;
