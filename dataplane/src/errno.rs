//! Errno names of SEMANTICS.md. Every rule violation is reported with one of these and a
//! sentence; the CLI prints `l3nsctl: ERRNO: sentence`.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum Errno {
    /// Operation not permitted: wrong level, missing NET_ADMIN, not the caller's child.
    EPERM,
    /// No such namespace (or other named object).
    ENOENT,
    /// Name or address already exists.
    EEXIST,
    /// Malformed request.
    EINVAL,
    /// No such device.
    ENODEV,
    /// Namespace still has children.
    EBUSY,
    /// Address not available to this namespace.
    EADDRNOTAVAIL,
    /// Address and port already bound in this namespace.
    EADDRINUSE,
    /// No route to the destination.
    ENETUNREACH,
    /// A queue or table is full.
    ENOBUFS,
    /// An I/O failure (state file, socket).
    EIO,
}

impl Errno {
    pub fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::EEXIST => "EEXIST",
            Errno::EINVAL => "EINVAL",
            Errno::ENODEV => "ENODEV",
            Errno::EBUSY => "EBUSY",
            Errno::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            Errno::EADDRINUSE => "EADDRINUSE",
            Errno::ENETUNREACH => "ENETUNREACH",
            Errno::ENOBUFS => "ENOBUFS",
            Errno::EIO => "EIO",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
