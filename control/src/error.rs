//! Control errors: an errno name of SEMANTICS.md plus one sentence that says what was wrong
//! and what to do. Displayed as `ERRNO: sentence`, which the CLI prefixes with `l3nsctl: `.

use l3ns_dataplane::errno::Errno;
use serde::{Deserialize, Serialize};

/// A rejected control request. The model is unchanged when one is returned (all or nothing).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[error("{errno}: {message}")]
pub struct ControlError {
    /// The errno name the CLI and the API report.
    pub errno: Errno,
    /// One sentence: what was wrong and what to do about it.
    pub message: String,
}

/// Results of control operations.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;

impl ControlError {
    pub fn new(errno: Errno, message: impl Into<String>) -> Self {
        ControlError {
            errno,
            message: message.into(),
        }
    }
    /// Wrong level, missing NET_ADMIN, not the caller's child.
    pub fn eperm(message: impl Into<String>) -> Self {
        Self::new(Errno::EPERM, message)
    }
    /// No such namespace or other named object.
    pub fn enoent(message: impl Into<String>) -> Self {
        Self::new(Errno::ENOENT, message)
    }
    /// Name or address already exists.
    pub fn eexist(message: impl Into<String>) -> Self {
        Self::new(Errno::EEXIST, message)
    }
    /// Malformed request.
    pub fn einval(message: impl Into<String>) -> Self {
        Self::new(Errno::EINVAL, message)
    }
    /// No such device.
    pub fn enodev(message: impl Into<String>) -> Self {
        Self::new(Errno::ENODEV, message)
    }
    /// Namespace still has children (or devices).
    pub fn ebusy(message: impl Into<String>) -> Self {
        Self::new(Errno::EBUSY, message)
    }
    /// Address not available to this namespace.
    pub fn eaddrnotavail(message: impl Into<String>) -> Self {
        Self::new(Errno::EADDRNOTAVAIL, message)
    }
    /// Address and port already bound in this namespace.
    pub fn eaddrinuse(message: impl Into<String>) -> Self {
        Self::new(Errno::EADDRINUSE, message)
    }
    /// A table is full.
    pub fn enobufs(message: impl Into<String>) -> Self {
        Self::new(Errno::ENOBUFS, message)
    }
    /// An I/O failure (state file, socket).
    pub fn eio(message: impl Into<String>) -> Self {
        Self::new(Errno::EIO, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_errno_then_sentence() {
        let e = ControlError::eperm(
            "namespace web1 is an L3 namespace and cannot create namespaces (R1); run this as its L2 parent",
        );
        assert_eq!(e.errno, Errno::EPERM);
        assert_eq!(
            e.to_string(),
            "EPERM: namespace web1 is an L3 namespace and cannot create namespaces (R1); run this as its L2 parent"
        );
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<ControlError>(&json).unwrap(), e);
    }
}
