//! The control API: the protocol (`protocol`), what each request does (`handle`), the control
//! thread and its unix sockets (`server`), and the client (`client`) that `l3nsctl` uses.
//!
//! Identities, in short: the root socket (mode 0600) acts as `root` or, with `"as"`, as any
//! namespace; each namespace other than `root` has a tenant socket
//! `<control>.tenants/<ns>.sock` (mode 0660) that can only act as that namespace (`EPERM`
//! otherwise). An L3 identity never runs an L2-only operation (the model says `EPERM`) and
//! never sees another namespace's addresses, sockets or counters (`ENOENT`, as if it did not
//! exist).

pub mod client;
pub mod handle;
pub mod protocol;
pub mod server;

pub use client::{call, ClientError};
pub use protocol::{Envelope, Reply, Request};
pub use server::{serve, tenant_socket_path, Persist, ServeConfig};

use crate::error::ControlError;
use crate::runtime::Runtime;
use l3ns_dataplane::types::SocketId;

/// Where `l3nsctl` and `l3nsd` look for the root control socket unless told otherwise
/// (`--control`, or the `L3NS_CONTROL` environment variable for `l3nsctl`).
pub const DEFAULT_CONTROL: &str = "/run/l3ns/control.sock";

/// Runs the services behind sockets (`echo`, `sink`, `attach:PATH`); the daemon implements
/// it. The control thread calls it right after a bind succeeded and after sockets closed.
pub trait ServiceHost: Send {
    /// Starts `service` on the freshly bound socket `id` (take its handle with
    /// `rt.socket_handle(id)`). An error undoes the bind and is returned to the client.
    fn start(&mut self, rt: &Runtime, id: SocketId, service: &str) -> Result<(), ControlError>;
    /// Stops the service of socket `id`, which is already closed (by `sock close` or with
    /// its namespace, R5).
    fn stop(&mut self, id: SocketId);
}

/// A host that runs nothing: sockets just queue (tests, tools).
#[derive(Debug, Default)]
pub struct NoServices;

impl ServiceHost for NoServices {
    fn start(&mut self, _: &Runtime, _: SocketId, _: &str) -> Result<(), ControlError> {
        Ok(())
    }
    fn stop(&mut self, _: SocketId) {}
}
